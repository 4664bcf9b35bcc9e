//! ZStack CloudBus parity: cancel, forward, unregister at run time, task
//! context propagation and stepping replies, on the embedded bus and on
//! several nodes of the in-memory broker.

mod common;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use cloudbus::transport::memory::MemoryBroker;
use cloudbus::{Bus, Context, ErrorCode, ReplyPort, Service, codes};
use common::*;
use futures::StreamExt;
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(10);

async fn cluster(n: usize) -> Vec<Bus> {
    let broker = MemoryBroker::new();
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(
            Bus::builder()
                .name("parity")
                .transport(broker.transport())
                .heartbeat_interval(Duration::from_secs(30))
                .build()
                .await
                .unwrap(),
        );
    }
    nodes
}

/// Answers with where it ran and what task context it saw.
fn echo_service() -> Service {
    Service::builder("echo", ())
        .on_request(|req: Echo, ctx: Context| async move {
            Ok(EchoReply {
                text: format!("{}|{}", req.text, ctx.context("request-id").unwrap_or("-")),
                node: ctx.bus().node_id().to_string(),
            })
        })
        .build()
}

async fn cancel_then_late_reply(caller: &Bus, server: &Bus) {
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    server
        .register(gated("gate", started.clone(), release.clone()))
        .await
        .unwrap();
    let call = caller
        .call(Work {
            key: "k".into(),
            n: 1,
        })
        .service("gate")
        .node(server.node_id())
        .timeout(Duration::from_secs(600));
    let (call, cancel) = call.cancellable();
    let (outcome, ()) = tokio::join!(call, async {
        started.notified().await;
        assert!(cancel.cancel());
    });
    let err = outcome.unwrap_err();
    assert!(err.is(codes::CANCELLED), "{err}");
    assert!(!cancel.cancel(), "nobody waits any more");
    assert_eq!(caller.pending_calls(), 0);

    // The handler answers anyway: the reply is counted and dropped.
    let late_before = caller.counters().late_replies.get() + server.counters().late_replies.get();
    release.notify_one();
    let mut waited = 0;
    while caller.counters().late_replies.get() + server.counters().late_replies.get() == late_before
    {
        // The late reply crosses a task boundary; wait for the counter
        // with a bounded number of scheduler turns, not a sleep.
        tokio::task::yield_now().await;
        waited += 1;
        assert!(waited < 1_000_000, "the late reply was never counted");
    }
    // A custom error, and a dropped caller future leaves nothing behind.
    let call = caller
        .call(Work {
            key: "k".into(),
            n: 2,
        })
        .service("gate")
        .node(server.node_id())
        .cancellable()
        .0;
    // By id, as ZStack cancels.
    let id = call.id();
    let (outcome, ()) = tokio::join!(call, async {
        started.notified().await;
        assert!(caller.cancel(id, Some(ErrorCode::new("ops.ABORTED", "operator said so"))));
    });
    assert_eq!(outcome.unwrap_err().code(), "ops.ABORTED");
    let dropped = caller
        .call(Work {
            key: "k".into(),
            n: 3,
        })
        .service("gate")
        .node(server.node_id())
        .into_future();
    tokio::select! {
        _ = dropped => panic!("the gate never opened"),
        () = started.notified() => {} // the call future is dropped here
    }
    assert_eq!(caller.pending_calls(), 0, "a dropped call leaks no entry");
    release.notify_waiters();
    release.notify_one();
}

#[tokio::test]
async fn a_cancelled_call_ends_at_once_and_its_late_reply_is_dropped() {
    let bus = Bus::embedded();
    cancel_then_late_reply(&bus, &bus).await;
    let nodes = cluster(2).await;
    cancel_then_late_reply(&nodes[0], &nodes[1]).await;
}

/// The API entry: hands every `StartVm` to the owner node's `vm` service.
struct Entry;

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

#[tokio::test]
async fn a_forwarded_request_is_answered_by_the_final_handler_straight_to_the_caller() {
    let nodes = cluster(3).await;
    for bus in &nodes {
        bus.register(echo_service()).await.unwrap();
    }
    nodes[1].register(Service::new("api", Entry)).await.unwrap();
    for bus in &nodes {
        bus.wait_for_cluster(WAIT, |v| v.nodes_with("echo").count() == 3)
            .await
            .unwrap();
    }
    let mut owners = std::collections::HashSet::new();
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
    struct Nowhere;
    #[cloudbus::handlers]
    impl Nowhere {
        async fn echo(&self, req: Echo, ctx: Context, port: ReplyPort<EchoReply>) {
            let _ = ctx.forward(req, port).service("missing").await;
        }
    }
    nodes[2]
        .register(Service::new("lost", Nowhere))
        .await
        .unwrap();
    let err = nodes[0]
        .call(Echo { text: "x".into() })
        .service("lost")
        .node(nodes[2].node_id())
        .timeout(Duration::from_secs(600))
        .await
        .unwrap_err();
    assert!(err.is(codes::NO_SUCH_SERVICE), "{err}");

    // And on the embedded bus, forwarding stays in process.
    let bus = Bus::embedded();
    bus.register(echo_service()).await.unwrap();
    bus.register(Service::new("api", Entry)).await.unwrap();
    let reply = bus
        .call(Echo { text: "v1".into() })
        .service("api")
        .context("request-id", "local")
        .await
        .unwrap();
    assert_eq!(reply.text, "v1|local");
}

/// Calls `echo` on another node while handling, without passing anything on.
struct Middle;

#[cloudbus::handlers]
impl Middle {
    async fn echo(&self, req: Echo, ctx: Context, port: ReplyPort<EchoReply>) {
        let target = ctx
            .bus()
            .cluster()
            .nodes_with("echo")
            .find(|n| *n != ctx.bus().node_id())
            .unwrap();
        let outcome = ctx.bus().call(req).node(target).await;
        port.send(outcome).await;
    }
}

#[tokio::test]
async fn a_context_value_set_by_the_caller_is_seen_two_hops_away_on_another_node() {
    let nodes = cluster(3).await;
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
        .call(Echo { text: "hop".into() })
        .service("middle")
        .node(nodes[1].node_id())
        .context("request-id", "abc-123")
        .await
        .unwrap();
    assert_eq!(reply.node, nodes[2].node_id().to_string());
    assert_eq!(reply.text, "hop|abc-123");
    // Without a context, nothing leaks in from an earlier call.
    let reply = nodes[0]
        .call(Echo {
            text: "bare".into(),
        })
        .service("middle")
        .node(nodes[1].node_id())
        .await
        .unwrap();
    assert_eq!(reply.text, "bare|-");
}

async fn unregister_in_flight(caller: &Bus, server: &Bus) {
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    server
        .register(gated("temp", started.clone(), release.clone()))
        .await
        .unwrap();
    let in_flight = tokio::spawn({
        let (caller, to) = (caller.clone(), server.node_id());
        async move {
            caller
                .call(Work {
                    key: "k".into(),
                    n: 7,
                })
                .service("temp")
                .node(to)
                .await
        }
    });
    started.notified().await;
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
    let refused = caller
        .call(Work {
            key: "k".into(),
            n: 8,
        })
        .service("temp")
        .node(server_id)
        .timeout(WAIT)
        .await
        .unwrap_err();
    assert!(refused.is(codes::NO_SUCH_SERVICE));
    release.notify_waiters();
    release.notify_one();
    assert_eq!(
        in_flight.await.unwrap().unwrap().n,
        7,
        "accepted work finishes"
    );
    unregistering.await.unwrap().unwrap();
    // Registering again later works.
    server
        .register(gated("temp", started.clone(), release.clone()))
        .await
        .unwrap();
    let again = caller
        .call(Work {
            key: "k".into(),
            n: 9,
        })
        .service("temp")
        .node(server.node_id())
        .into_future();
    let (outcome, ()) = tokio::join!(again, async {
        started.notified().await;
        release.notify_one();
    });
    assert_eq!(outcome.unwrap().n, 9);
}

#[tokio::test]
async fn a_service_unregistered_while_busy_finishes_its_work_and_can_come_back() {
    let bus = Bus::embedded();
    unregister_in_flight(&bus, &bus).await;
    let nodes = cluster(2).await;
    unregister_in_flight(&nodes[0], &nodes[1]).await;
}

#[tokio::test]
async fn replies_can_be_taken_one_by_one_as_they_arrive() {
    let bus = Bus::embedded();
    let release = Arc::new(Notify::new());
    bus.register(
        Service::builder("work", ())
            .on_request({
                let release = release.clone();
                move |w: Work, _| {
                    let release = release.clone();
                    async move {
                        // Request 0 waits; the others answer at once.
                        if w.n == 0 {
                            release.notified().await;
                        }
                        if w.n == 3 {
                            return Err(ErrorCode::new("steps.BAD", "three"));
                        }
                        Ok(Done { n: w.n })
                    }
                }
            })
            .build(),
    )
    .await
    .unwrap();
    let requests = (0..5).map(|n| Work {
        key: n.to_string(),
        n,
    });
    let mut stream = Box::pin(bus.call_each(requests, 5));
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (i, outcome) = stream.next().await.unwrap();
        seen.push(i);
        match i {
            3 => assert_eq!(outcome.unwrap_err().code(), "steps.BAD"),
            _ => assert_eq!(outcome.unwrap().n, i as u32),
        }
    }
    assert!(!seen.contains(&0), "the slow one comes last: {seen:?}");
    release.notify_one();
    let (i, outcome) = stream.next().await.unwrap();
    assert_eq!((i, outcome.unwrap().n), (0, 0));
    assert!(stream.next().await.is_none());
}
