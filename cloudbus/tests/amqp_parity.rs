//! ZStack parity on the real broker: cancel then late reply, a forward
//! across nodes answered once straight to the caller, and a task context
//! value seen two hops away on another node.

mod broker;
mod common;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use broker::*;
use cloudbus::{Bus, Context, ReplyPort, Service, codes};
use common::*;
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(20);

async fn node(bus: &str) -> Bus {
    let bus = Bus::builder()
        .name(bus)
        .amqp(url())
        .heartbeat_interval(Duration::from_secs(30))
        .build()
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ must be reachable at {}: {e}", url()));
    bus.register(
        Service::builder("echo", ())
            .on_request(|req: Echo, ctx: Context| async move {
                Ok(EchoReply {
                    text: format!("{}|{}", req.text, ctx.context("session").unwrap_or("-")),
                    node: ctx.bus().node_id().to_string(),
                })
            })
            .build(),
    )
    .await
    .unwrap();
    bus
}

/// Hands the request to the `echo` service of the resource's owner.
struct Entry;

#[cloudbus::handlers]
impl Entry {
    async fn echo(&self, req: Echo, ctx: Context, port: ReplyPort<EchoReply>) {
        let owner = req.text.clone();
        let _ = ctx.forward(req, port).service("echo").owner_of(owner).await;
    }
}

/// Calls `echo` on another node while handling.
struct Middle;

#[cloudbus::handlers]
impl Middle {
    async fn echo(&self, req: Echo, ctx: Context, port: ReplyPort<EchoReply>) {
        let me = ctx.bus().node_id();
        let other = ctx.bus().cluster().nodes_with("echo").find(|n| *n != me);
        let outcome = match other {
            Some(node) => ctx.bus().call(req).node(node).await,
            None => Err(cloudbus::ErrorCode::new("test.NO_PEER", "no other node")),
        };
        port.send(outcome).await;
    }
}

#[tokio::test]
async fn cancel_forward_and_context_work_across_the_broker() {
    let name = unique_bus("parity");
    let nodes = vec![node(&name).await, node(&name).await, node(&name).await];
    nodes[1].register(Service::new("api", Entry)).await.unwrap();
    nodes[1]
        .register(Service::new("middle", Middle))
        .await
        .unwrap();
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    nodes[2]
        .register(gated("gate", started.clone(), release.clone()))
        .await
        .unwrap();
    for bus in &nodes {
        bus.wait_for_cluster(WAIT, |v| v.nodes_with("echo").count() == 3)
            .await
            .unwrap();
    }

    // Forward: caller on node 0, entry on node 1, owner anywhere.
    for i in 0..12 {
        let key = format!("3f2a-{i}");
        let owner = nodes[0].owner(&key).unwrap();
        let reply = nodes[0]
            .call(Echo { text: key.clone() })
            .service("api")
            .node(nodes[1].node_id())
            .context("session", format!("s{i}"))
            .await
            .unwrap();
        assert_eq!(reply.node, owner.to_string());
        assert_eq!(reply.text, format!("{key}|s{i}"));
    }

    // Context two hops away: node 0 → middle on node 1 → echo elsewhere.
    let reply = nodes[0]
        .call(Echo { text: "hop".into() })
        .service("middle")
        .node(nodes[1].node_id())
        .context("session", "op-7")
        .await
        .unwrap();
    assert_ne!(reply.node, nodes[1].node_id().to_string());
    assert_eq!(reply.text, "hop|op-7");

    // Cancel, then the late reply is counted and dropped.
    let call = nodes[0]
        .call(Work {
            key: "k".into(),
            n: 1,
        })
        .service("gate")
        .node(nodes[2].node_id())
        .timeout(Duration::from_secs(600));
    let id = call.id();
    let (outcome, ()) = tokio::join!(call.into_future(), async {
        started.notified().await;
        assert!(nodes[0].cancel(id, None));
    });
    assert!(outcome.unwrap_err().is(codes::CANCELLED));
    let mut late = nodes[0].counters().late_replies.get();
    assert_eq!(late, 0);
    release.notify_one();
    // The late reply crosses the broker; a Ping after it (same queue,
    // same order) proves it has been processed.
    for _ in 0..100 {
        nodes[0]
            .call(cloudbus::Ping {})
            .node(nodes[2].node_id())
            .await
            .unwrap();
        late = nodes[0].counters().late_replies.get();
        if late == 1 {
            break;
        }
    }
    assert_eq!(late, 1, "the reply after the cancel was counted as late");
    assert_eq!(nodes[0].pending_calls(), 0);

    for bus in &nodes {
        bus.shutdown().await;
    }
    delete_bus(&name).await;
}
