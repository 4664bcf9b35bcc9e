//! Request/reply, plain messages, events and the non-blocking API between
//! nodes: `memory_broker.rs` and `amqp.rs`.

use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudbus::{
    Body, Context, Envelope, ErrorCode, Interceptor, Message, NodeId, Ping, Request, Service, codes,
};
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;

use super::Nodes;
use crate::common::*;

/// The tests of this group, on the nodes of `$nodes`.
#[allow(unused_macros)] // each test file expands one group
macro_rules! tests {
    ($nodes:expr) => {
        $crate::scenarios::tests!(messaging, $nodes;
            a_call_reaches_the_service_on_another_node_and_the_reply_comes_back,
            every_node_has_exactly_the_static_queues_of_the_wire_protocol,
            unknown_services_nodes_and_types_fail_at_once,
            errors_and_panics_cross_the_wire_with_code_details_and_cause,
            a_call_times_out_leaving_no_pending_entry_and_its_late_reply_is_dropped,
            plain_messages_arrive_in_order_with_their_sender,
            events_reach_every_subscriber_on_every_node_once,
            bindings_follow_subscriptions,
            a_non_blocking_api_on_another_node_answers_caller_and_auditors,
            the_local_shortcut_skips_the_broker_unless_turned_off,
        );
    };
}
#[allow(unused_imports)]
pub(crate) use tests;

pub async fn a_call_reaches_the_service_on_another_node_and_the_reply_comes_back(
    nodes: &impl Nodes,
) {
    let (a, b) = (nodes.node().await, nodes.node().await);
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

pub async fn every_node_has_exactly_the_static_queues_of_the_wire_protocol(nodes: &impl Nodes) {
    let (a, b) = (nodes.node().await, nodes.node().await);
    b.register(echo_service()).await.unwrap();
    let bus = nodes.bus();
    let mut expected = vec![
        format!("{bus}.event.{}", a.node_id()),
        format!("{bus}.event.{}", b.node_id()),
        format!("{bus}.message.cloudbus.{}", a.node_id()),
        format!("{bus}.message.cloudbus.{}", b.node_id()),
        format!("{bus}.message.echo.{}", b.node_id()),
    ];
    expected.sort();
    assert_eq!(nodes.queue_names().await, expected);
    // Many calls create no queue.
    let calls = (0..200).map(|i| a.call(echo(&i.to_string())).node(b.node_id()).into_future());
    let replies = futures::future::join_all(calls).await;
    assert!(replies.iter().all(Result::is_ok));
    assert_eq!(nodes.queue_names().await, expected);
    // Unregistering removes the service's queue…
    b.unregister("echo").await.unwrap();
    expected.retain(|q| !q.contains(".message.echo."));
    assert_eq!(nodes.queue_names().await, expected);
    // …and stopping removes the rest of the node's.
    b.shutdown().await;
    assert_eq!(
        nodes.queue_names().await,
        [
            format!("{bus}.event.{}", a.node_id()),
            format!("{bus}.message.cloudbus.{}", a.node_id())
        ],
        "a stopped node leaves no queues behind"
    );
}

/// A type the echo service does not handle.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Shout {
    text: String,
}
impl Message for Shout {
    const TYPE: &'static str = "echo.Shout";
}
impl Request for Shout {
    type Reply = EchoReply;
}

/// No queue takes these requests: the broker returns them and the caller
/// hears at once, long before the timeout.
pub async fn unknown_services_nodes_and_types_fail_at_once(nodes: &impl Nodes) {
    let (a, b) = (nodes.node().await, nodes.node().await);
    let slow = Duration::from_secs(600);
    let started = Instant::now();
    let err = within(
        "a service the node does not have",
        a.call(echo("x")).node(b.node_id()).timeout(slow),
    )
    .await
    .unwrap_err();
    assert!(err.is(codes::NO_SUCH_SERVICE), "{err}");
    b.register(echo_service()).await.unwrap();
    let err = within(
        "a service nobody has",
        a.call(echo("x"))
            .service("nobody")
            .node(b.node_id())
            .timeout(slow),
    )
    .await
    .unwrap_err();
    assert!(err.is(codes::NO_SUCH_SERVICE), "{err}");
    let gone = NodeId::random();
    let err = within(
        "an unknown node",
        a.call(echo("x")).node(gone).timeout(slow),
    )
    .await
    .unwrap_err();
    assert!(err.is(codes::NO_SUCH_SERVICE), "{err}");
    let err = within("a ping to an unknown node", a.call(Ping {}).node(gone))
        .await
        .unwrap_err();
    assert!(err.is(codes::NO_SUCH_SERVICE), "{err}");
    let note = Note {
        key: "k".into(),
        n: 1,
    };
    let err = within("a plain message", a.send(note).node(gone))
        .await
        .unwrap_err();
    assert!(err.is(codes::NO_SUCH_SERVICE), "{err}");
    // The service is there but does not know the type.
    let err = within(
        "UNKNOWN_MESSAGE",
        a.call(Shout { text: "x".into() }).node(b.node_id()),
    )
    .await
    .unwrap_err();
    assert!(err.is(codes::UNKNOWN_MESSAGE), "{err}");
    let work = Work {
        key: "k".into(),
        n: 1,
    };
    let err = within(
        "UNKNOWN_MESSAGE",
        a.call(work).service("echo").node(b.node_id()),
    )
    .await
    .unwrap_err();
    assert!(err.is(codes::UNKNOWN_MESSAGE), "{err}");
    assert!(err.description().contains("work.Work"), "{err}");
    assert!(started.elapsed() < slow);
    assert_eq!(a.pending_calls(), 0);
}

pub async fn errors_and_panics_cross_the_wire_with_code_details_and_cause(nodes: &impl Nodes) {
    let (a, b) = (nodes.node().await, nodes.node().await);
    b.register(echo_service()).await.unwrap();
    b.register(Service::new("forgetful", Forgetful))
        .await
        .unwrap();
    let err = a.call(echo("fail")).node(b.node_id()).await.unwrap_err();
    assert_eq!(err.code(), "echo.FAILED");
    assert_eq!(err.description(), "asked to fail");
    assert_eq!(err.details()["n"], 1);
    assert_eq!(err.details()["why"], "test");
    assert_eq!(err.cause().unwrap().code(), "disk.FULL");
    let err = a.call(echo("panic")).node(b.node_id()).await.unwrap_err();
    assert!(err.is(codes::INTERNAL), "{err}");
    assert!(err.description().contains("asked to panic"), "{err}");
    // A handler that drops its reply port: NO_REPLY, not a timeout.
    let err = within(
        "NO_REPLY",
        a.call(echo("x"))
            .service("forgetful")
            .node(b.node_id())
            .timeout(Duration::from_secs(600)),
    )
    .await
    .unwrap_err();
    assert!(err.is(codes::NO_REPLY), "{err}");
    // After an error, a panic and a lost reply, the service still serves.
    let reply = a.call(echo("after")).node(b.node_id()).await.unwrap();
    assert_eq!(reply.text, "after");
    assert_eq!(a.pending_calls(), 0);
}

pub async fn a_call_times_out_leaving_no_pending_entry_and_its_late_reply_is_dropped(
    nodes: &impl Nodes,
) {
    let (a, b) = (nodes.node().await, nodes.node().await);
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    b.register(gated("gate", started.clone(), release.clone()))
        .await
        .unwrap();
    // Long enough for the request to reach the handler even on a busy
    // machine (an expired one would never run, and never answer late).
    let timeout = Duration::from_secs(1);
    let begun = Instant::now();
    let call = a
        .call(Work {
            key: "k".into(),
            n: 1,
        })
        .service("gate")
        .node(b.node_id())
        .timeout(timeout);
    let (outcome, ()) = tokio::join!(call.into_future(), async {
        within("the handler to start", started.notified()).await;
    });
    let err = outcome.unwrap_err();
    assert!(err.is(codes::TIMEOUT), "{err}");
    assert!(begun.elapsed() >= timeout);
    assert_eq!(a.pending_calls(), 0);
    assert_eq!(a.counters().timeouts.get(), 1);
    assert_eq!(a.counters().late_replies.get(), 0);
    // The handler answers after its caller gave up: counted, dropped.
    release.notify_one();
    wait_until("the late reply to be counted", || {
        a.counters().late_replies.get() == 1
    })
    .await;
    assert_eq!(a.pending_calls(), 0);
}

pub async fn plain_messages_arrive_in_order_with_their_sender(nodes: &impl Nodes) {
    let (a, b) = (nodes.node().await, nodes.node().await);
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
            .concurrency(1)
            .build(),
    )
    .await
    .unwrap();
    for n in 0..50 {
        a.send(Note { key: "k".into(), n })
            .node(b.node_id())
            .await
            .unwrap();
    }
    for n in 0..50 {
        let got = within("a plain message", rx.recv()).await;
        assert_eq!(got, Some((n, a.node_id())));
    }
}

pub async fn events_reach_every_subscriber_on_every_node_once(nodes: &impl Nodes) {
    let (a, b, c) = (nodes.node().await, nodes.node().await, nodes.node().await);
    let mut on_a = a.subscribe::<VmStateChanged>().await.unwrap();
    let mut host_on_a = a.subscribe::<HostDown>().await.unwrap();
    let mut on_b = b.subscribe::<VmStateChanged>().await.unwrap();
    let mut on_b_all = b.subscribe_pattern("vm.#").await.unwrap();
    let mut on_c = c.subscribe::<VmStateChanged>().await.unwrap();
    let mut host_on_c = c.subscribe::<HostDown>().await.unwrap();

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
        let uuid = format!("v{i}");
        assert_eq!(within("a", on_a.recv()).await.unwrap().uuid, uuid);
        let remote = within("b", on_b.recv_with_envelope()).await.unwrap();
        assert_eq!(remote.event.uuid, uuid);
        assert_eq!(remote.envelope.source, a.node_id());
        let raw = within("b by pattern", on_b_all.recv()).await.unwrap();
        assert_eq!(raw.envelope.source, a.node_id());
        assert!(raw.is::<VmStateChanged>());
        assert!(matches!(raw.body, Body::Json(_)), "it crossed the wire");
        assert_eq!(raw.decode::<VmStateChanged>().unwrap().uuid, uuid);
        assert_eq!(within("c", on_c.recv()).await.unwrap().uuid, uuid);
    }
    assert_eq!(within("c host", host_on_c.recv()).await.unwrap().host, "h1");
    // The publisher's own subscribers get exactly one copy, not a second
    // one back from the broker: the broker's copies of the first events
    // reach a's queue before those of the next, and are dropped there.
    assert_eq!(within("a host", host_on_a.recv()).await.unwrap().host, "h1");
    a.publish(HostDown { host: "h2".into() }).await.unwrap();
    assert_eq!(within("a host", host_on_a.recv()).await.unwrap().host, "h2");
    a.publish(VmStateChanged {
        uuid: "marker".into(),
        state: String::new(),
    })
    .await
    .unwrap();
    assert_eq!(
        within("a marker", on_a.recv()).await.unwrap().uuid,
        "marker"
    );
    assert!(on_a.recv().now_or_never().is_none());
    assert!(host_on_a.recv().now_or_never().is_none());
}

pub async fn bindings_follow_subscriptions(nodes: &impl Nodes) {
    let a = nodes.node().await;
    // Membership events are always bound; subscriptions add their own.
    let membership = "cloudbus.node.*";
    assert_eq!(nodes.event_bindings(a.node_id()).await, [membership]);
    let first = a.subscribe_pattern("vm.*").await.unwrap();
    let second = a.subscribe_pattern("vm.*").await.unwrap();
    assert_eq!(
        nodes.event_bindings(a.node_id()).await,
        [membership, "vm.*"]
    );
    first.unsubscribe().await;
    assert_eq!(
        nodes.event_bindings(a.node_id()).await,
        [membership, "vm.*"]
    );
    second.unsubscribe().await;
    assert_eq!(nodes.event_bindings(a.node_id()).await, [membership]);
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

pub async fn a_non_blocking_api_on_another_node_answers_caller_and_auditors(nodes: &impl Nodes) {
    let (api, vm, audit) = (nodes.node().await, nodes.node().await, nodes.node().await);
    vm.register(Service::new("vm", VmApi)).await.unwrap();
    let mut auditor = audit.subscribe::<VmStarted>().await.unwrap();
    let started = api
        .call(StartVm { uuid: "v1".into() })
        .node(vm.node_id())
        .await
        .unwrap();
    assert_eq!(started.host, vm.node_id().to_string());
    let audited = within("the auditor's copy", auditor.recv_with_envelope())
        .await
        .unwrap();
    assert_eq!(audited.event, started);
    assert!(
        audited.envelope.api_id.is_some(),
        "an API event names its API"
    );
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

/// Records how each `Echo` reached its handler: its `reply_to` (only
/// deliveries through the broker carry one) and whether its body came
/// serialized.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Delivery>>>);

/// A delivery's `reply_to`, and whether its body was JSON.
type Delivery = (Option<String>, bool);

impl Interceptor for Seen {
    fn before_deliver(&self, envelope: &Envelope, body: &Body) -> Result<(), ErrorCode> {
        if envelope.type_name == Echo::TYPE {
            let json = matches!(body, Body::Json(_));
            self.0
                .lock()
                .unwrap()
                .push((envelope.reply_to.clone(), json));
        }
        Ok(())
    }
}

pub async fn the_local_shortcut_skips_the_broker_unless_turned_off(nodes: &impl Nodes) {
    for shortcut in [true, false] {
        let seen = Seen::default();
        let bus = nodes
            .start(
                nodes
                    .builder()
                    .local_shortcut(shortcut)
                    .interceptor(seen.clone()),
            )
            .await;
        bus.register(echo_service()).await.unwrap();
        let reply = bus.call(echo("me")).await.unwrap();
        assert_eq!(reply.text, "me");
        assert_eq!(reply.node, bus.node_id().to_string());
        let through_broker = (Some(format!("cloudbus.{}", bus.node_id())), true);
        let expected = if shortcut {
            (None, false)
        } else {
            through_broker
        };
        assert_eq!(*seen.0.lock().unwrap(), [expected], "shortcut {shortcut}");
        bus.shutdown().await;
    }
}
