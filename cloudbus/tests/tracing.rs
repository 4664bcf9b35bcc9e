//! Every handled message has a `tracing` span (type, service, node, id,
//! outcome, duration), and the W3C `traceparent` of the API call follows
//! it through every hop, so one call can be followed across services.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cloudbus::transport::memory::MemoryBroker;
use cloudbus::{Bus, Context, ErrorCode, ReplyPort, Service};
use common::*;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context as LayerContext, Layer, SubscriberExt};
use tracing_subscriber::registry::Registry;

type Fields = HashMap<String, String>;

/// Collects the fields of every closed `handle` span.
#[derive(Clone, Default)]
struct Spans {
    open: Arc<Mutex<HashMap<u64, Fields>>>,
    closed: Arc<Mutex<Vec<Fields>>>,
}

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            format!("{value:?}").trim_matches('"').to_string(),
        );
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }
}

impl<S: tracing::Subscriber> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: LayerContext<'_, S>) {
        if attrs.metadata().name() == "handle" {
            let mut fields = Fields::new();
            attrs.record(&mut Collect(&mut fields));
            self.open.lock().unwrap().insert(id.into_u64(), fields);
        }
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: LayerContext<'_, S>) {
        if let Some(fields) = self.open.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Collect(fields));
        }
    }
    fn on_close(&self, id: Id, _ctx: LayerContext<'_, S>) {
        if let Some(fields) = self.open.lock().unwrap().remove(&id.into_u64()) {
            self.closed.lock().unwrap().push(fields);
        }
    }
}

/// Calls `echo` on the other node while handling.
struct Front;

#[cloudbus::handlers]
impl Front {
    async fn echo(&self, req: Echo, ctx: Context, port: ReplyPort<EchoReply>) {
        let me = ctx.bus().node_id();
        let other = ctx.bus().cluster().nodes_with("echo").find(|n| *n != me);
        let outcome = match other {
            Some(node) => ctx.bus().call(req).node(node).await,
            None => Err(ErrorCode::new("test.NO_PEER", "no other node")),
        };
        port.send(outcome).await;
    }
}

#[tokio::test]
async fn each_handled_message_has_a_span_and_the_trace_follows_the_call_across_nodes() {
    let spans = Spans::default();
    let _guard = tracing::subscriber::set_default(Registry::default().with(spans.clone()));
    let broker = MemoryBroker::new();
    let (a, b) = (
        Bus::builder()
            .transport(broker.transport())
            .build()
            .await
            .unwrap(),
        Bus::builder()
            .transport(broker.transport())
            .build()
            .await
            .unwrap(),
    );
    a.register(Service::new("front", Front)).await.unwrap();
    b.register(echo_failing_on_request()).await.unwrap();
    a.wait_for_cluster(std::time::Duration::from_secs(10), |v| {
        v.nodes_with("echo").count() == 1
    })
    .await
    .unwrap();
    let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    a.call(Echo { text: "hi".into() })
        .service("front")
        .node(a.node_id())
        .header("traceparent", trace)
        .await
        .unwrap();
    let err = b
        .call(Echo {
            text: "fail".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), "echo.FAILED");
    a.shutdown().await;
    b.shutdown().await;

    let closed = spans.closed.lock().unwrap().clone();
    let find = |service: &str, outcome: &str| {
        closed
            .iter()
            .find(|s| {
                s["service"] == service && s.get("outcome").map(String::as_str) == Some(outcome)
            })
            .unwrap_or_else(|| panic!("no {service} span with outcome {outcome}: {closed:#?}"))
            .clone()
    };
    let front = find("front", "ok");
    assert_eq!(front["type"], "echo.Echo");
    assert_eq!(front["node"], a.node_id().to_string());
    assert!(front["duration_us"].parse::<u64>().is_ok());
    let echo = find("echo", "ok");
    assert_eq!(echo["node"], b.node_id().to_string());
    assert_eq!(front["traceparent"], trace);
    assert_eq!(
        echo["traceparent"], trace,
        "the trace crossed to the other node"
    );
    let failed = find("echo", "echo.FAILED");
    assert_eq!(failed["traceparent"], "");
}

/// Echoes, and fails a request whose text is "fail".
fn echo_failing_on_request() -> Service {
    Service::builder("echo", ())
        .on_request(|req: Echo, _| async move {
            if req.text == "fail" {
                return Err(ErrorCode::new("echo.FAILED", "asked to"));
            }
            Ok(EchoReply {
                text: req.text,
                node: String::new(),
            })
        })
        .build()
}

#[tokio::test]
async fn an_in_process_call_is_traced_where_it_is_handled_even_when_sends_are_not() {
    // Listening to handling spans only: the sends are untraced, so the
    // calls take the typed path on the caller's task, and their handling
    // must be traced there all the same.
    use tracing_subscriber::Layer as _;
    let spans = Spans::default();
    let only_handling = tracing_subscriber::filter::filter_fn(|m| m.name() == "handle");
    let layer = spans.clone().with_filter(only_handling);
    let _guard = tracing::subscriber::set_default(Registry::default().with(layer));
    let bus = Bus::embedded();
    bus.register(echo_failing_on_request()).await.unwrap();
    bus.call(Echo { text: "hi".into() }).await.unwrap();
    let err = bus
        .call(Echo {
            text: "fail".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), "echo.FAILED");
    bus.shutdown().await;

    let closed = spans.closed.lock().unwrap().clone();
    let mut outcomes: Vec<_> = closed
        .iter()
        .filter(|s| s["service"] == "echo")
        .map(|s| {
            assert!(s["duration_us"].parse::<u64>().is_ok(), "{s:?}");
            s["outcome"].clone()
        })
        .collect();
    outcomes.sort();
    assert_eq!(outcomes, ["echo.FAILED", "ok"], "{closed:#?}");
}
