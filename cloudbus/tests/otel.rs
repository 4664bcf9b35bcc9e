//! With the `otel` feature and a `tracing-opentelemetry` layer, the spans
//! of sending and handling form one OpenTelemetry trace across nodes: the
//! handling span on the receiving node is a child of the calling span on
//! the sending node, tied by the message's `traceparent`.
#![cfg(feature = "otel")]

mod common;

use cloudbus::transport::memory::MemoryBroker;
use cloudbus::{Bus, Context, ErrorCode, ReplyPort, Service};
use common::*;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::Registry;

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

fn attr(span: &SpanData, key: &str) -> String {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_handling_span_on_another_node_is_a_child_of_the_calling_span() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
    let _guard = tracing::subscriber::set_default(Registry::default().with(layer));
    let broker = MemoryBroker::new();
    let a = Bus::builder()
        .transport(broker.transport())
        .build()
        .await
        .unwrap();
    let b = Bus::builder()
        .transport(broker.transport())
        .build()
        .await
        .unwrap();
    a.register(Service::new("front", Front)).await.unwrap();
    b.register(echo_service()).await.unwrap();
    a.wait_for_cluster(std::time::Duration::from_secs(10), |v| {
        v.nodes_with("echo").count() == 1
    })
    .await
    .unwrap();

    a.call(echo("hi"))
        .service("front")
        .node(a.node_id())
        .await
        .unwrap();
    // A sender outside any span that names its own trace (a gateway
    // passing on its HTTP caller's) continues that trace.
    let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    a.call(echo("given"))
        .header("traceparent", given)
        .await
        .unwrap();
    a.shutdown().await;
    b.shutdown().await;
    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let find = |name: &str, node: &Bus| {
        spans
            .iter()
            .filter(|s| s.name == name && attr(s, "node") == node.node_id().to_string())
            .collect::<Vec<_>>()
    };

    let api_call = find("call echo.Echo", &a)
        .into_iter()
        .find(|s| s.parent_span_id == SpanId::INVALID)
        .expect("the API call is a root span");
    let trace = api_call.span_context.trace_id();
    let front = find("handle echo.Echo", &a)[0];
    assert_eq!(front.span_context.trace_id(), trace);
    assert_eq!(front.parent_span_id, api_call.span_context.span_id());
    assert_eq!(attr(front, "service"), "front");
    let onward = find("call echo.Echo", &a)
        .into_iter()
        .find(|s| s.parent_span_id == front.span_context.span_id())
        .expect("front's call is a child of its handling span");
    assert_eq!(attr(onward, "to"), b.node_id().to_string());
    let remote = find("handle echo.Echo", &b)
        .into_iter()
        .find(|s| s.span_context.trace_id() == trace)
        .expect("node b's handling is in the same trace");
    assert_eq!(
        remote.parent_span_id,
        onward.span_context.span_id(),
        "node b's handling span is a child of node a's calling span"
    );
    assert!(remote.parent_span_is_remote);

    let given_trace = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    let continued = spans
        .iter()
        .filter(|s| s.span_context.trace_id() == given_trace)
        .collect::<Vec<_>>();
    let call = continued
        .iter()
        .find(|s| s.name == "call echo.Echo")
        .expect("the call continued the given trace");
    assert_eq!(
        call.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").unwrap()
    );
    assert!(
        continued.iter().any(
            |s| s.name == "handle echo.Echo" && s.parent_span_id == call.span_context.span_id()
        ),
        "{continued:#?}"
    );
}
