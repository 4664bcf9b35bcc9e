//! Several nodes in one process over the in-memory broker: the P2P and
//! BROADCAST semantics of the wire protocol, with bodies crossing as JSON.

mod common;

use cloudbus::address::{Destination, ServiceAddress};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cloudbus::transport::memory::MemoryBroker;
use cloudbus::transport::{Inbound, Transport, WireMessage};
use cloudbus::{
    Body, Bus, Context, Envelope, ErrorCode, Interceptor, Kind, NodeId, Ping, Service, codes,
};
use common::*;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::time::Instant;

const BUS: &str = "memtest";

async fn node(broker: &MemoryBroker) -> Bus {
    Bus::builder()
        .name(BUS)
        .transport(broker.transport())
        .build()
        .await
        .unwrap()
}

fn echo_service() -> Service {
    Service::builder("echo", ())
        .on_request(|req: Echo, ctx: Context| async move {
            match req.text.as_str() {
                "fail" => Err(ErrorCode::new("echo.FAILED", "asked to fail")
                    .with_details(serde_json::json!({"n": 1}))
                    .with_cause(ErrorCode::new("disk.FULL", "no space"))),
                "hang" => std::future::pending().await,
                _ => Ok(EchoReply {
                    text: req.text,
                    node: ctx.bus().node_id().to_string(),
                }),
            }
        })
        .build()
}

fn echo(text: &str) -> Echo {
    Echo { text: text.into() }
}

#[tokio::test]
async fn a_call_reaches_the_service_on_another_node_and_the_reply_comes_back() {
    let broker = MemoryBroker::new();
    let (a, b) = (node(&broker).await, node(&broker).await);
    b.register(echo_service()).await.unwrap();
    let reply = a
        .call(echo("over the wire"))
        .node(b.node_id())
        .await
        .unwrap();
    assert_eq!(reply.text, "over the wire");
    assert_eq!(reply.node, b.node_id().to_string());
    assert_eq!(a.pending_calls(), 0);
    let pong = a.call(Ping {}).node(b.node_id()).await.unwrap();
    assert_eq!(pong.node, b.node_id());
    assert_eq!(pong.services, ["cloudbus", "echo"]);
}

#[tokio::test]
async fn every_node_has_exactly_the_static_queues_of_the_wire_protocol() {
    let broker = MemoryBroker::new();
    let (a, b) = (node(&broker).await, node(&broker).await);
    b.register(echo_service()).await.unwrap();
    let mut expected = vec![
        format!("{BUS}.event.{}", a.node_id()),
        format!("{BUS}.event.{}", b.node_id()),
        format!("{BUS}.message.cloudbus.{}", a.node_id()),
        format!("{BUS}.message.cloudbus.{}", b.node_id()),
        format!("{BUS}.message.echo.{}", b.node_id()),
    ];
    expected.sort();
    assert_eq!(broker.queue_names(BUS), expected);
    // Many calls create no queue.
    let calls = (0..200).map(|i| {
        let a = a.clone();
        let to = b.node_id();
        async move { a.call(echo(&i.to_string())).node(to).await }
    });
    let replies = futures::future::join_all(calls).await;
    assert!(replies.iter().all(Result::is_ok));
    assert_eq!(broker.queue_names(BUS), expected);
    b.shutdown().await;
    assert_eq!(
        broker.queue_names(BUS),
        [
            format!("{BUS}.event.{}", a.node_id()),
            format!("{BUS}.message.cloudbus.{}", a.node_id())
        ],
        "a stopped node leaves no queues behind"
    );
}

#[tokio::test(start_paused = true)]
async fn unknown_service_or_node_fails_at_once_through_the_mandatory_publish() {
    let broker = MemoryBroker::new();
    let (a, b) = (node(&broker).await, node(&broker).await);
    let started = Instant::now();
    let err = a
        .call(echo("x"))
        .node(b.node_id())
        .timeout(Duration::from_secs(60))
        .await
        .unwrap_err();
    assert!(err.is(codes::NO_SUCH_SERVICE), "{err}");
    let err = a.call(Ping {}).node(NodeId::random()).await.unwrap_err();
    assert!(err.is(codes::NO_SUCH_SERVICE), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60));
    assert_eq!(a.pending_calls(), 0);
}

#[tokio::test]
async fn errors_cross_the_wire_with_code_details_and_cause() {
    let broker = MemoryBroker::new();
    let (a, b) = (node(&broker).await, node(&broker).await);
    b.register(echo_service()).await.unwrap();
    let err = a.call(echo("fail")).node(b.node_id()).await.unwrap_err();
    assert_eq!(err.code(), "echo.FAILED");
    assert_eq!(err.details()["n"], 1);
    assert_eq!(err.cause().unwrap().code(), "disk.FULL");
    let err = a
        .call(Work {
            key: "k".into(),
            n: 1,
        })
        .service("echo")
        .node(b.node_id())
        .await
        .unwrap_err();
    assert!(err.is(codes::UNKNOWN_MESSAGE), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_remote_call_times_out_and_leaves_no_pending_entry() {
    let broker = MemoryBroker::new();
    let (a, b) = (node(&broker).await, node(&broker).await);
    b.register(echo_service()).await.unwrap();
    let err = a
        .call(echo("hang"))
        .node(b.node_id())
        .timeout(Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(err.is(codes::TIMEOUT), "{err}");
    assert_eq!(a.pending_calls(), 0);
}

#[tokio::test]
async fn plain_messages_cross_nodes() {
    let broker = MemoryBroker::new();
    let (a, b) = (node(&broker).await, node(&broker).await);
    let (tx, mut rx) = mpsc::unbounded_channel();
    b.register(
        Service::builder("work", ())
            .on_message(move |note: Note, ctx: Context| {
                let tx = tx.clone();
                async move {
                    tx.send((note.n, ctx.source())).unwrap();
                    Ok(())
                }
            })
            .build(),
    )
    .await
    .unwrap();
    for n in 0..3 {
        a.send(Note { key: "k".into(), n })
            .node(b.node_id())
            .await
            .unwrap();
    }
    for n in 0..3 {
        assert_eq!(rx.recv().await.unwrap(), (n, a.node_id()));
    }
}

#[tokio::test]
async fn events_reach_subscribers_on_every_node_once() {
    let broker = MemoryBroker::new();
    let (a, b, c) = (
        node(&broker).await,
        node(&broker).await,
        node(&broker).await,
    );
    let mut on_a = a.subscribe::<VmStateChanged>().await.unwrap();
    let mut on_b = b.subscribe::<VmStateChanged>().await.unwrap();
    let mut on_b_all = b.subscribe_pattern("vm.#").await.unwrap();
    let mut on_c_hosts = c.subscribe::<HostDown>().await.unwrap();

    for i in 0..3 {
        a.publish(VmStateChanged {
            uuid: format!("v{i}"),
            state: "Running".into(),
        })
        .await
        .unwrap();
    }
    a.publish(HostDown { host: "h1".into() }).await.unwrap();

    for i in 0..3 {
        assert_eq!(on_a.recv().await.unwrap().uuid, format!("v{i}"));
        let remote = on_b.recv_with_envelope().await.unwrap();
        assert_eq!(remote.event.uuid, format!("v{i}"));
        assert_eq!(remote.envelope.source, a.node_id());
        assert!(matches!(on_b_all.recv().await.unwrap().body, Body::Json(_)));
    }
    assert_eq!(on_c_hosts.recv().await.unwrap().host, "h1");
    // The publisher's own subscriber got each event once: the next thing it
    // sees is a marker published after them.
    a.publish(VmStateChanged {
        uuid: "marker".into(),
        state: String::new(),
    })
    .await
    .unwrap();
    assert_eq!(on_a.recv().await.unwrap().uuid, "marker");
}

#[tokio::test]
async fn bindings_follow_subscriptions() {
    let broker = MemoryBroker::new();
    let a = node(&broker).await;
    // Membership events are always bound; subscriptions add their own.
    let membership = "cloudbus.node.*";
    assert_eq!(broker.event_bindings(BUS, a.node_id()), [membership]);
    let first = a.subscribe_pattern("vm.*").await.unwrap();
    let second = a.subscribe_pattern("vm.*").await.unwrap();
    assert_eq!(
        broker.event_bindings(BUS, a.node_id()),
        [membership, "vm.*"]
    );
    first.unsubscribe().await;
    assert_eq!(
        broker.event_bindings(BUS, a.node_id()),
        [membership, "vm.*"]
    );
    second.unsubscribe().await;
    assert_eq!(broker.event_bindings(BUS, a.node_id()), [membership]);
}

struct VmApi;

#[cloudbus::handlers]
impl VmApi {
    async fn start_vm(&self, req: StartVm, ctx: Context) -> Result<VmStarted, ErrorCode> {
        if req.uuid == "missing" {
            return Err(ErrorCode::new("vm.NOT_FOUND", "no such VM"));
        }
        Ok(VmStarted {
            uuid: req.uuid,
            host: ctx.bus().node_id().to_string(),
        })
    }
}

#[tokio::test]
async fn a_non_blocking_api_on_another_node_answers_caller_and_auditors() {
    let broker = MemoryBroker::new();
    let (api, vm, audit) = (
        node(&broker).await,
        node(&broker).await,
        node(&broker).await,
    );
    vm.register(Service::new("vm", VmApi)).await.unwrap();
    let mut auditor = audit.subscribe::<VmStarted>().await.unwrap();
    let started = api
        .call(StartVm { uuid: "v1".into() })
        .node(vm.node_id())
        .await
        .unwrap();
    assert_eq!(started.host, vm.node_id().to_string());
    let audited = auditor.recv_with_envelope().await.unwrap();
    assert_eq!(audited.event, started);
    assert!(audited.envelope.api_id.is_some());
    assert_eq!(audited.envelope.source, vm.node_id());

    let err = api
        .call(StartVm {
            uuid: "missing".into(),
        })
        .node(vm.node_id())
        .await
        .unwrap_err();
    assert_eq!(err.code(), "vm.NOT_FOUND");
    assert_eq!(api.pending_calls(), 0);
}

/// Records whether bodies reached handlers serialized.
struct SeesJson(mpsc::UnboundedSender<bool>);

impl Interceptor for SeesJson {
    fn before_deliver(&self, envelope: &Envelope, body: &Body) -> Result<(), ErrorCode> {
        if envelope.type_name == "echo.Echo" {
            self.0.send(matches!(body, Body::Json(_))).unwrap();
        }
        Ok(())
    }
}

#[tokio::test]
async fn the_local_shortcut_skips_the_broker_unless_turned_off() {
    let broker = MemoryBroker::new();
    for shortcut in [true, false] {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let bus = Bus::builder()
            .name(BUS)
            .transport(broker.transport())
            .local_shortcut(shortcut)
            .interceptor(SeesJson(tx))
            .build()
            .await
            .unwrap();
        bus.register(echo_service()).await.unwrap();
        assert_eq!(bus.call(echo("me")).await.unwrap().text, "me");
        assert_eq!(rx.recv().await.unwrap(), !shortcut, "shortcut {shortcut}");
        bus.shutdown().await;
    }
}

/// A bare node on the broker that speaks only the wire protocol.
struct Raw {
    transport: cloudbus::transport::memory::MemoryTransport,
    node: NodeId,
    replies: mpsc::UnboundedReceiver<WireMessage>,
}

struct Capture(mpsc::UnboundedSender<WireMessage>);

impl Inbound for Capture {
    fn service_message(&self, _service: Arc<str>, message: WireMessage) -> BoxFuture<'static, ()> {
        self.0.send(message).unwrap();
        Box::pin(async {})
    }
    fn event(&self, _message: WireMessage) {}
    fn undeliverable(&self, _request: cloudbus::MessageId, _error: ErrorCode) {}
    fn malformed(
        &self,
        _reply: Option<(String, cloudbus::MessageId)>,
        _error: ErrorCode,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

async fn raw_node(broker: &MemoryBroker) -> Raw {
    let transport = broker.transport();
    let node = NodeId::random();
    let (tx, replies) = mpsc::unbounded_channel();
    transport
        .start(BUS, node, Arc::new(Capture(tx)))
        .await
        .unwrap();
    transport.add_service("cloudbus", 1).await.unwrap();
    Raw {
        transport,
        node,
        replies,
    }
}

impl Raw {
    async fn request(
        &mut self,
        to: &Bus,
        type_name: &'static str,
        body: &'static [u8],
    ) -> WireMessage {
        let mut envelope = Envelope::new(Kind::Request, type_name, self.node);
        envelope.reply_to = Some(format!("cloudbus.{}", self.node));
        envelope.timeout = Some(Duration::from_secs(5));
        let to = ServiceAddress::new(cloudbus::message::service_of(type_name), to.node_id());
        self.transport
            .send(
                Destination::Service(to),
                &envelope,
                Bytes::from_static(body),
            )
            .await
            .unwrap();
        let reply = self.replies.recv().await.unwrap();
        assert_eq!(reply.envelope.kind, Kind::Reply);
        assert_eq!(reply.envelope.correlation_id, Some(envelope.id));
        reply
    }
}

fn error_code(reply: &WireMessage) -> String {
    let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(json["success"], false, "{json}");
    json["error"]["code"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn bad_input_from_the_wire_gets_an_error_reply_and_the_service_keeps_going() {
    let broker = MemoryBroker::new();
    let bus = node(&broker).await;
    bus.register(echo_service()).await.unwrap();
    let mut raw = raw_node(&broker).await;

    let reply = raw.request(&bus, "echo.Echo", b"{not json").await;
    assert_eq!(error_code(&reply), codes::MALFORMED);
    let reply = raw.request(&bus, "echo.Echo", br#"{"wrong": 1}"#).await;
    assert_eq!(error_code(&reply), codes::MALFORMED);
    let reply = raw.request(&bus, "echo.Nope", b"{}").await;
    assert_eq!(error_code(&reply), codes::UNKNOWN_MESSAGE);
    assert_eq!(bus.counters().malformed.get(), 2);

    let reply = raw
        .request(&bus, "echo.Echo", br#"{"text": "still here"}"#)
        .await;
    let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(json["success"], true);
    assert_eq!(json["reply"]["text"], "still here");
    assert_eq!(reply.envelope.type_name, "echo.EchoReply");
}

#[tokio::test]
async fn replies_nobody_waits_for_are_counted_and_dropped() {
    let broker = MemoryBroker::new();
    let bus = node(&broker).await;
    let raw = raw_node(&broker).await;
    let mut stray = Envelope::new(Kind::Reply, "echo.EchoReply", raw.node);
    stray.correlation_id = Some(cloudbus::MessageId::random());
    let to = Destination::Service(ServiceAddress::of_node(bus.node_id()));
    let body = Bytes::from_static(br#"{"success":true,"reply":{}}"#);
    raw.transport.send(to, &stray, body.clone()).await.unwrap();
    raw.transport.send(to, &stray, body).await.unwrap();
    // A ping from another node is queued behind the stray replies on the
    // same node queue, so once it is answered they have been handled.
    let pong = Bus::builder()
        .name(BUS)
        .transport(broker.transport())
        .build()
        .await
        .unwrap()
        .call(Ping {})
        .node(bus.node_id())
        .await
        .unwrap();
    assert_eq!(pong.node, bus.node_id());
    assert_eq!(bus.counters().late_replies.get(), 2);
}
