//! Traces leave the process: with `--otlp-endpoint`, every `cloudbus`
//! process sends its spans over OTLP/HTTP, and one API call across nodes
//! arrives at the collector as one trace whose parent links cross the
//! processes. The collector here is a small OTLP/HTTP receiver in the test.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;

/// One span as the collector received it.
#[derive(Clone, Debug)]
struct Seen {
    /// `service.name` of the process that sent it.
    process: String,
    name: String,
    trace: String,
    id: String,
    /// Empty for a root span.
    parent: String,
    attributes: HashMap<String, String>,
}

impl Seen {
    fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

/// An OTLP/HTTP receiver (protobuf) on 127.0.0.1, keeping every span.
struct Collector {
    url: String,
    spans: Arc<Mutex<Vec<Seen>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Collector {
    fn start() -> Collector {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let kept = kept.clone();
                async move { receive(&kept, &body) }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        Collector {
            url,
            spans,
            _runtime: runtime,
        }
    }

    fn spans(&self) -> Vec<Seen> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until the spans received satisfy `ready`.
    fn wait_until(&self, what: &str, ready: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let deadline = Instant::now() + WAIT;
        loop {
            let spans = self.spans();
            if ready(&spans) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "the collector never got {what}; it got: {:#?}",
                spans
                    .iter()
                    .map(|s| (&s.process, &s.name))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

/// Decodes one export request and keeps its spans; a body that is not
/// one is refused as a collector would.
fn receive(kept: &Mutex<Vec<Seen>>, body: &[u8]) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) => request,
        Err(e) => return (axum::http::StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let mut kept = kept.lock().unwrap();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.unwrap_or_default();
        let process = attributes(&resource.attributes)
            .remove("service.name")
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                kept.push(Seen {
                    process: process.clone(),
                    name: span.name,
                    trace: hex(&span.trace_id),
                    id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

fn argv(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Prints `span` and its descendants, one line each, indented by depth.
fn print_tree(spans: &[Seen], span: &Seen, depth: usize) {
    let node = span.attr("node");
    println!(
        "{:indent$}{} [{} node={}] span={} parent={}",
        "",
        span.name,
        span.process,
        &node[..8.min(node.len())],
        span.id,
        span.parent,
        indent = depth * 2
    );
    for child in spans.iter().filter(|s| s.parent == span.id) {
        print_tree(spans, child, depth + 1);
    }
}

/// The spans from `span` up to its root, following parent links.
fn ancestry<'a>(spans: &'a [Seen], span: &'a Seen) -> Vec<&'a Seen> {
    let mut chain = vec![span];
    let mut at = span;
    while !at.parent.is_empty() {
        let parent = spans
            .iter()
            .find(|s| s.id == at.parent && s.trace == at.trace)
            .unwrap_or_else(|| panic!("the parent of {at:?} never arrived"));
        chain.push(parent);
        at = parent;
    }
    chain
}

#[test]
fn one_api_call_across_two_nodes_is_one_trace_at_the_collector() {
    let collector = Collector::start();
    let bus = unique_bus("otlp");
    let _exchanges = Exchanges(bus.clone());
    let with_traces = |args: &[&str]| {
        let mut all = vec!["--otlp-endpoint", collector.url.as_str()];
        all.extend_from_slice(args);
        all.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let api_args = with_traces(&["node", "--services", "vm,audit"]);
    let infra_args = with_traces(&["node", "--services", "host,storage"]);
    let mut api = Running::start(&bus, &argv(&api_args));
    let mut infra = Running::start(&bus, &argv(&infra_args));
    let (a, b) = (api.node_id(), infra.node_id());

    let create = with_traces(&[
        "call",
        "vm",
        "vm.CreateVm",
        r#"{"name":"traced","cpus":1,"memory_gb":1,"disk_gb":1}"#,
    ]);
    let created = stdout_json(&run(&bus, &argv(&create)));
    let uuid = created["uuid"].as_str().unwrap().to_string();
    let body = format!(r#"{{"uuid":"{uuid}"}}"#);
    let start = with_traces(&[
        "call",
        "vm",
        "vm.StartVm",
        &body,
        "--api-event",
        "vm.VmStarted",
    ]);
    let started = stdout_json(&run(&bus, &argv(&start)));
    assert_eq!(started["uuid"], uuid.as_str());
    // The nodes send what they still hold as they stop.
    assert!(api.stop() && infra.stop(), "the nodes stop cleanly");

    let spans = collector.wait_until("the host's handling of the start", |spans| {
        spans
            .iter()
            .any(|s| s.name == "call vm.StartVm" && s.process == "cloudbus-call")
            && spans
                .iter()
                .any(|s| s.name == "handle host.StartVmOnHost" && s.attr("node") == b)
            && spans.iter().any(|s| s.name == "publish vm.VmStarted")
    });
    let call = spans.iter().find(|s| s.name == "call vm.StartVm").unwrap();
    assert!(call.parent.is_empty(), "the API call is the root: {call:?}");
    assert_eq!(call.attr("service"), "vm");
    let trace: Vec<Seen> = spans
        .iter()
        .filter(|s| s.trace == call.trace)
        .cloned()
        .collect();

    // Shown when the test fails (or with --nocapture): the trace as a tree.
    print_tree(&trace, call, 0);

    // Node A handled the call, as a child of the caller's span.
    let handle = trace
        .iter()
        .find(|s| s.name == "handle vm.StartVm")
        .expect("node A's handling is in the caller's trace");
    assert_eq!(handle.parent, call.id);
    assert_eq!(handle.attr("node"), a);
    assert_eq!(handle.process, "cloudbus-node");
    assert_eq!(handle.attr("outcome"), "ok");

    // Node B handled what node A asked while handling it: its span's
    // parent is node A's calling span, whose parent is A's handling span.
    let on_b = trace
        .iter()
        .find(|s| s.name == "handle host.StartVmOnHost")
        .expect("node B's handling is in the same trace");
    assert_eq!(on_b.attr("node"), b);
    let asked = trace
        .iter()
        .find(|s| s.id == on_b.parent)
        .expect("B's parent arrived");
    assert_eq!(asked.name, "call host.StartVmOnHost");
    assert_eq!(asked.attr("node"), a, "the calling span is node A's");
    assert_eq!(asked.attr("to"), b);
    assert_eq!(asked.parent, handle.id);

    // The API event that answered the call is part of it too.
    let event = trace
        .iter()
        .find(|s| s.name == "publish vm.VmStarted")
        .expect("the API event is in the trace");
    assert!(ancestry(&trace, event).iter().any(|s| s.id == handle.id));
    // Every span of the trace reaches the caller's span by parent links.
    for span in &trace {
        assert_eq!(ancestry(&trace, span).last().unwrap().id, call.id);
    }
    // The create was a trace of its own.
    let create = spans.iter().find(|s| s.name == "call vm.CreateVm").unwrap();
    assert_ne!(create.trace, call.trace);
    // Housekeeping (heartbeats) is not traced.
    assert!(!spans.iter().any(|s| s.name.contains("cloudbus.node.")));
}

#[test]
fn a_bad_collector_url_is_refused_before_anything_runs() {
    for (endpoint, says) in [
        (
            "collector:4318",
            "is not a URL such as http://127.0.0.1:4318",
        ),
        ("https://collector:4318", "only http:// is supported"),
    ] {
        let out = run("unused", &["--otlp-endpoint", endpoint, "status"]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{endpoint}: {stderr}");
    }
    let out = cloudbus("unused")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "nonsense")
        .args(["status"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonsense"));
}
