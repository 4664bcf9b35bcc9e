//! Membership and routing by resource over the real broker: nodes see
//! each other join, agree on owners, and a node cut off from the broker
//! is declared dead with its callers failed at once.

mod broker;
mod common;
mod proxy;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use broker::*;
use cloudbus::{Bus, Context, NodeId, Service, codes};
use common::*;
use proxy::Proxy;
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(20);

async fn member(bus: &str, beat: Duration) -> Bus {
    member_at(bus, beat, url()).await
}

async fn member_at(bus: &str, beat: Duration, broker: String) -> Bus {
    let bus = Bus::builder()
        .name(bus)
        .amqp(broker)
        .heartbeat_interval(beat)
        .build()
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ must be reachable at {}: {e}", url()));
    bus.register(
        Service::builder("echo", ())
            .on_request(|req: Echo, ctx: Context| async move {
                Ok(EchoReply {
                    text: req.text,
                    node: ctx.bus().node_id().to_string(),
                })
            })
            .build(),
    )
    .await
    .unwrap();
    bus
}

#[tokio::test]
async fn three_nodes_form_a_cluster_and_route_each_resource_to_its_owner() {
    let name = unique_bus("ring");
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(member(&name, Duration::from_secs(30)).await);
    }
    let mut ids: Vec<NodeId> = nodes.iter().map(Bus::node_id).collect();
    ids.sort();
    for bus in &nodes {
        let view = bus
            .wait_for_cluster(WAIT, |v| v.nodes_with("echo").count() == 3)
            .await
            .unwrap();
        assert_eq!(view.nodes().iter().map(|n| n.node).collect::<Vec<_>>(), ids);
    }
    let mut owners = HashSet::new();
    for i in 0..30 {
        let key = format!("6d3a0c1e-{i:04}-4000-8000-00000000abcd");
        let owner = nodes[0].owner(&key).unwrap();
        assert!(nodes.iter().all(|b| b.owner(&key).unwrap() == owner));
        let reply = nodes[1]
            .call(Echo { text: key.clone() })
            .owner_of(key)
            .await
            .unwrap();
        assert_eq!(reply.node, owner.to_string());
        owners.insert(owner);
    }
    assert_eq!(owners.len(), 3);
    let leaving = nodes.pop().unwrap();
    let gone = leaving.node_id();
    leaving.shutdown().await;
    for bus in &nodes {
        bus.wait_for_cluster(WAIT, |v| v.node(gone).is_none())
            .await
            .unwrap();
    }
    for bus in &nodes {
        bus.shutdown().await;
    }
    delete_bus(&name).await;
}

#[tokio::test]
async fn a_node_cut_off_from_the_broker_is_declared_dead_and_its_callers_fail_fast() {
    let name = unique_bus("dead");
    let beat = Duration::from_millis(100);
    let caller = member(&name, beat).await;
    // The victim reaches the broker through a proxy that the test cuts for
    // good, as a crash or a partition would.
    let proxy = Proxy::start(broker_addr()).await;
    let victim_url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port());
    let victim = member_at(&name, beat, victim_url).await;
    let started = Arc::new(Notify::new());
    victim
        .register(
            Service::builder("stuck", ())
                .on_request({
                    let started = started.clone();
                    move |_: Work, _| {
                        let started = started.clone();
                        async move {
                            started.notify_one();
                            std::future::pending::<()>().await;
                            Ok(Done { n: 0 })
                        }
                    }
                })
                .build(),
        )
        .await
        .unwrap();
    let target = victim.node_id();
    caller
        .wait_for_cluster(WAIT, |v| v.nodes_with("stuck").eq([target]))
        .await
        .unwrap();
    let call = {
        let caller = caller.clone();
        tokio::spawn(async move {
            caller
                .call(Work {
                    key: "k".into(),
                    n: 1,
                })
                .service("stuck")
                .timeout(Duration::from_secs(600))
                .await
        })
    };
    started.notified().await;
    proxy.cut();
    let err = tokio::time::timeout(WAIT, call)
        .await
        .expect("the caller fails long before its 600 s timeout")
        .unwrap()
        .unwrap_err();
    assert!(err.is(codes::NODE_UNAVAILABLE), "{err}");
    let view = caller
        .wait_for_cluster(WAIT, |v| v.node(target).is_none())
        .await
        .unwrap();
    assert_eq!(view.len(), 1);
    // Its resources now belong to the survivor.
    assert_eq!(caller.owner("vm-1").unwrap(), caller.node_id());
    caller.shutdown().await;
    delete_bus(&name).await;
}
