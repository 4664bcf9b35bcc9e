//! ZStack CloudBus parity between nodes: cancel, forward, task context
//! propagation and unregistering at run time: `parity.rs` (which also runs
//! the `*_between` helpers on the embedded bus) and `amqp_parity.rs`.

use std::collections::HashSet;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use cloudbus::{Bus, Context, ErrorCode, ReplyPort, Service, codes};
use tokio::sync::Notify;

use super::Nodes;
use crate::common::*;

/// The tests of this group, on the nodes of `$nodes`.
#[allow(unused_macros)] // each test file expands one group
macro_rules! tests {
    ($nodes:expr) => {
        $crate::scenarios::tests!(parity, $nodes;
            a_cancelled_call_ends_at_once_and_its_late_reply_is_dropped,
            a_forwarded_request_is_answered_by_the_final_handler_straight_to_the_caller,
            a_context_value_set_by_the_caller_is_seen_two_hops_away_on_another_node,
            work_accepted_before_its_service_is_unregistered_finishes_and_the_service_can_come_back,
            a_service_unregistered_while_busy_finishes_its_work_and_can_come_back,
        );
    };
}
#[allow(unused_imports)]
pub(crate) use tests;

pub async fn a_cancelled_call_ends_at_once_and_its_late_reply_is_dropped(nodes: &impl Nodes) {
    let (caller, server) = (nodes.node().await, nodes.node().await);
    cancel_between(&caller, &server).await;
}

/// Cancelling by handle and by id, and dropping the call future, from
/// `caller` to a service on `server` (which may be the same bus).
pub async fn cancel_between(caller: &Bus, server: &Bus) {
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    server
        .register(gated("gate", started.clone(), release.clone()))
        .await
        .unwrap();
    let work = |n| Work { key: "k".into(), n };
    let call = caller
        .call(work(1))
        .service("gate")
        .node(server.node_id())
        .timeout(Duration::from_secs(600));
    let (call, cancel) = call.cancellable();
    let (outcome, ()) = tokio::join!(call, async {
        within("the handler to start", started.notified()).await;
        assert!(cancel.cancel());
    });
    let err = outcome.unwrap_err();
    assert!(err.is(codes::CANCELLED), "{err}");
    assert!(!cancel.cancel(), "nobody waits any more");
    assert_eq!(caller.pending_calls(), 0);

    // The handler answers anyway: the caller counts the reply and drops it.
    let late_before = caller.counters().late_replies.get();
    release.notify_one();
    wait_until("the late reply to be counted", || {
        caller.counters().late_replies.get() == late_before + 1
    })
    .await;

    // By id, as ZStack cancels, with an error of the canceller's choice.
    let call = caller
        .call(work(2))
        .service("gate")
        .node(server.node_id())
        .cancellable()
        .0;
    let id = call.id();
    let (outcome, ()) = tokio::join!(call, async {
        within("the handler to start", started.notified()).await;
        assert!(caller.cancel(id, Some(ErrorCode::new("ops.ABORTED", "operator said so"))));
    });
    assert_eq!(outcome.unwrap_err().code(), "ops.ABORTED");

    // A dropped caller future leaves nothing behind.
    let dropped = caller
        .call(work(3))
        .service("gate")
        .node(server.node_id())
        .into_future();
    tokio::select! {
        _ = dropped => panic!("the gate never opened"),
        () = within("the handler to start", started.notified()) => {} // the call future is dropped here
    }
    assert_eq!(caller.pending_calls(), 0, "a dropped call leaks no entry");
    release.notify_waiters();
    release.notify_one();
}

/// The API entry: hands every `Echo` to the `echo` service of the node
/// that owns the resource named by its text.
pub struct Entry;

#[cloudbus::handlers]
impl Entry {
    async fn echo(&self, req: Echo, ctx: Context, port: ReplyPort<EchoReply>) {
        let owner = req.text.clone();
        let forwarded = ctx.forward(req, port).service("echo").owner_of(owner).await;
        if let Err(error) = forwarded {
            tracing::warn!(%error, "forward failed");
        }
    }
}

/// Forwards to a service that does not exist.
struct Nowhere;

#[cloudbus::handlers]
impl Nowhere {
    async fn echo(&self, req: Echo, ctx: Context, port: ReplyPort<EchoReply>) {
        let _ = ctx.forward(req, port).service("missing").await;
    }
}

pub async fn a_forwarded_request_is_answered_by_the_final_handler_straight_to_the_caller(
    nodes: &impl Nodes,
) {
    let nodes = [nodes.node().await, nodes.node().await, nodes.node().await];
    for bus in &nodes {
        bus.register(echo_service()).await.unwrap();
    }
    nodes[1].register(Service::new("api", Entry)).await.unwrap();
    for bus in &nodes {
        bus.wait_for_cluster(WAIT, |v| {
            v.nodes_with("echo").count() == 3 && v.nodes_with("api").count() == 1
        })
        .await
        .unwrap();
    }
    let mut owners = HashSet::new();
    for i in 0..30 {
        let key = format!("vm-{i}");
        let owner = nodes[0].owner(&key).unwrap();
        // Caller on node 0, entry on node 1, final handler on the owner.
        let reply = nodes[0]
            .call(Echo { text: key.clone() })
            .service("api")
            .context("request-id", format!("r{i}"))
            .await
            .unwrap();
        assert_eq!(reply.node, owner.to_string());
        assert_eq!(reply.text, format!("{key}|r{i}"), "headers travel with it");
        owners.insert(owner);
    }
    assert_eq!(owners.len(), 3);
    assert_eq!(nodes[0].pending_calls(), 0);
    let late: u64 = nodes.iter().map(|b| b.counters().late_replies.get()).sum();
    assert_eq!(late, 0, "each reply reached the caller exactly once");

    // Forwarding to a service that does not exist fails the caller at once.
    nodes[2]
        .register(Service::new("lost", Nowhere))
        .await
        .unwrap();
    let err = within(
        "the failed forward",
        nodes[0]
            .call(echo("x"))
            .service("lost")
            .node(nodes[2].node_id())
            .timeout(Duration::from_secs(600)),
    )
    .await
    .unwrap_err();
    assert!(err.is(codes::NO_SUCH_SERVICE), "{err}");
}

/// Calls `echo` on another node while handling, without passing anything on.
struct Middle;

#[cloudbus::handlers]
impl Middle {
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

pub async fn a_context_value_set_by_the_caller_is_seen_two_hops_away_on_another_node(
    nodes: &impl Nodes,
) {
    let nodes = [nodes.node().await, nodes.node().await, nodes.node().await];
    nodes[1]
        .register(Service::new("middle", Middle))
        .await
        .unwrap();
    nodes[2].register(echo_service()).await.unwrap();
    nodes[1]
        .wait_for_cluster(WAIT, |v| v.nodes_with("echo").count() == 1)
        .await
        .unwrap();
    let reply = nodes[0]
        .call(echo("hop"))
        .service("middle")
        .node(nodes[1].node_id())
        .context("request-id", "abc-123")
        .await
        .unwrap();
    assert_eq!(reply.node, nodes[2].node_id().to_string());
    assert_eq!(reply.text, "hop|abc-123");
    // Without a context, nothing leaks in from an earlier call.
    let reply = nodes[0]
        .call(echo("bare"))
        .service("middle")
        .node(nodes[1].node_id())
        .await
        .unwrap();
    assert_eq!(reply.text, "bare");
}

/// Requests for a service that is being unregistered are refused at once
/// as soon as the cluster view says it is gone, while the one it accepted
/// before finishes.
pub async fn a_service_unregistered_while_busy_finishes_its_work_and_can_come_back(
    nodes: &impl Nodes,
) {
    let (caller, server) = (nodes.node().await, nodes.node().await);
    unregister_in_flight_between(&caller, &server).await;
}

/// Unregisters `server`'s service while `caller` has a request in it.
pub async fn unregister_in_flight_between(caller: &Bus, server: &Bus) {
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    server
        .register(gated("temp", started.clone(), release.clone()))
        .await
        .unwrap();
    let work = |n| Work { key: "k".into(), n };
    let in_flight = tokio::spawn({
        let (caller, to) = (caller.clone(), server.node_id());
        async move { caller.call(work(7)).service("temp").node(to).await }
    });
    within("the handler to start", started.notified()).await;
    let unregistering = tokio::spawn({
        let server = server.clone();
        async move { server.unregister("temp").await }
    });
    // Once it is gone from the node (the cluster view says so), new
    // requests are refused while the accepted one finishes.
    let (server_id, caller_id) = (server.node_id(), caller.node_id());
    let gone = |v: &cloudbus::cluster::ClusterView| {
        v.node(server_id)
            .is_some_and(|n| !n.services.iter().any(|s| s == "temp"))
    };
    server.wait_for_cluster(WAIT, gone).await.unwrap();
    if caller_id != server_id {
        caller.wait_for_cluster(WAIT, gone).await.unwrap();
    }
    let refused = within(
        "the refusal",
        caller
            .call(work(8))
            .service("temp")
            .node(server_id)
            .timeout(WAIT),
    )
    .await
    .unwrap_err();
    assert!(refused.is(codes::NO_SUCH_SERVICE), "{refused}");
    release.notify_waiters();
    release.notify_one();
    let finished = within("the accepted work", in_flight).await;
    assert_eq!(finished.unwrap().unwrap().n, 7, "accepted work finishes");
    within("the unregistering", unregistering)
        .await
        .unwrap()
        .unwrap();
    // Registering again later works.
    server
        .register(gated("temp", started.clone(), release.clone()))
        .await
        .unwrap();
    let again = caller
        .call(work(9))
        .service("temp")
        .node(server.node_id())
        .into_future();
    let (outcome, ()) = tokio::join!(again, async {
        within("the handler to start", started.notified()).await;
        release.notify_one();
    });
    assert_eq!(outcome.unwrap().n, 9);
}

/// What both transports do today when a busy service is unregistered: the
/// request it accepted finishes, then the service is unknown at once, and
/// it can be registered again. (Whether requests sent while it drains are
/// refused is `a_service_unregistered_while_busy_finishes_its_work_and_can_come_back`.)
pub async fn work_accepted_before_its_service_is_unregistered_finishes_and_the_service_can_come_back(
    nodes: &impl Nodes,
) {
    let (caller, server) = (nodes.node().await, nodes.node().await);
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    server
        .register(gated("temp", started.clone(), release.clone()))
        .await
        .unwrap();
    let work = |n| Work { key: "k".into(), n };
    let in_flight = caller
        .call(work(7))
        .service("temp")
        .node(server.node_id())
        .into_future();
    let unregistering = async {
        within("the handler to start", started.notified()).await;
        let unregistering = server.unregister("temp");
        let ((), outcome) = tokio::join!(
            async {
                // The view says it is gone before the work is done.
                let gone = |v: &cloudbus::cluster::ClusterView| {
                    v.node(server.node_id())
                        .is_some_and(|n| !n.services.iter().any(|s| s == "temp"))
                };
                server.wait_for_cluster(WAIT, gone).await.unwrap();
                release.notify_one();
            },
            within("the unregistering", unregistering),
        );
        outcome.unwrap();
    };
    let (finished, ()) = tokio::join!(within("the accepted work", in_flight), unregistering);
    assert_eq!(finished.unwrap().n, 7, "accepted work finishes");
    let refused = within(
        "the refusal",
        caller
            .call(work(8))
            .service("temp")
            .node(server.node_id())
            .timeout(Duration::from_secs(600)),
    )
    .await
    .unwrap_err();
    assert!(refused.is(codes::NO_SUCH_SERVICE), "{refused}");
    server
        .register(gated("temp", started.clone(), release.clone()))
        .await
        .unwrap();
    let again = caller
        .call(work(9))
        .service("temp")
        .node(server.node_id())
        .into_future();
    let (outcome, ()) = tokio::join!(again, async {
        within("the handler to start", started.notified()).await;
        release.notify_one();
    });
    assert_eq!(outcome.unwrap().n, 9);
    assert_eq!(caller.pending_calls(), 0);
}
