//! Membership and routing by resource over the real broker: nodes see
//! each other join, agree on owners, and a node whose broker connection
//! is cut is declared dead with its callers failed at once.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cloudbus::{Bus, Context, NodeId, Service, codes};
use common::*;
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(20);

fn url() -> String {
    std::env::var("CLOUDBUS_AMQP_URL")
        .unwrap_or_else(|_| cloudbus::transport::amqp::DEFAULT_URL.to_string())
}

fn unique_bus(test: &str) -> String {
    format!(
        "t-{test}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

async fn member(bus: &str, beat: Duration) -> Bus {
    let bus = Bus::builder()
        .name(bus)
        .amqp(url())
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

fn rabbitmqctl(args: &[&str]) -> String {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .args(["-q", "--no-table-headers"])
        .output()
        .expect("rabbitmqctl must be installed next to the broker");
    assert!(out.status.success(), "rabbitmqctl {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Cuts a node's broker connection as a crash or a network failure would.
fn close_connection_of(bus: &str, node: NodeId) {
    let name = format!("cloudbus {bus} {node}");
    // The name a client gives its connection is among its client properties.
    let listing = rabbitmqctl(&["list_connections", "pid", "client_properties"]);
    let pid = listing
        .lines()
        .find(|line| line.contains(&format!("\"{name}\"")))
        .and_then(|line| line.split('\t').next())
        .unwrap_or_else(|| panic!("no connection named {name:?} in {listing}"));
    let closed = std::process::Command::new("rabbitmqctl")
        .args(["close_connection", pid, "test: the node crashes"])
        .output()
        .unwrap();
    assert!(closed.status.success(), "{closed:?}");
}

async fn cleanup(bus: &str) {
    let conn = lapin::Connection::connect(&url(), Default::default())
        .await
        .unwrap();
    let channel = conn.create_channel().await.unwrap();
    let queues = rabbitmqctl(&["list_queues", "name"]);
    for queue in queues.lines().filter(|q| q.starts_with(&format!("{bus}."))) {
        channel
            .queue_delete(queue.into(), Default::default())
            .await
            .unwrap();
    }
    for ex in ["P2P", "BROADCAST"] {
        channel
            .exchange_delete(format!("{bus}.{ex}").into(), Default::default())
            .await
            .unwrap();
    }
    conn.close(200, "done".into()).await.unwrap();
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
    cleanup(&name).await;
}

#[tokio::test]
async fn a_node_cut_from_the_broker_is_declared_dead_and_its_callers_fail_fast() {
    let name = unique_bus("dead");
    let beat = Duration::from_millis(100);
    let caller = member(&name, beat).await;
    let victim = member(&name, beat).await;
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
    close_connection_of(&name, target);
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
    cleanup(&name).await;
}
