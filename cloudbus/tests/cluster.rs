//! Membership, the hash ring and routing by resource, on several nodes of
//! the in-memory broker (the same code runs over RabbitMQ).

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cloudbus::transport::memory::MemoryBroker;
use cloudbus::{Bus, BusBuilder, Context, NodeId, Service, codes};
use common::*;
use tokio::sync::Notify;

const BUS: &str = "clustertest";
/// Long enough that a test about `left` cannot pass by death detection.
const SLOW_BEAT: Duration = Duration::from_secs(30);
const WAIT: Duration = Duration::from_secs(10);

fn builder(broker: &MemoryBroker, beat: Duration) -> BusBuilder {
    Bus::builder()
        .name(BUS)
        .transport(broker.transport())
        .heartbeat_interval(beat)
        .heartbeat_misses(3)
}

/// A service that answers with the id of the node it runs on.
fn echo_service() -> Service {
    Service::builder("echo", ())
        .on_request(|req: Echo, ctx: Context| async move {
            Ok(EchoReply {
                text: req.text,
                node: ctx.bus().node_id().to_string(),
            })
        })
        .build()
}

fn echo(text: &str) -> Echo {
    Echo { text: text.into() }
}

async fn cluster(broker: &MemoryBroker, n: usize, beat: Duration) -> Vec<Bus> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        let bus = builder(broker, beat).build().await.unwrap();
        bus.register(echo_service()).await.unwrap();
        nodes.push(bus);
    }
    for bus in &nodes {
        bus.wait_for_cluster(WAIT, |v| v.len() == n && v.nodes_with("echo").count() == n)
            .await
            .unwrap();
    }
    nodes
}

fn ids(nodes: &[Bus]) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = nodes.iter().map(Bus::node_id).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn nodes_that_join_are_seen_by_all_with_their_services_and_agree_on_owners() {
    let broker = MemoryBroker::new();
    // Heartbeats far apart: the nodes learn of each other from `joined`
    // and the answers to it, not from periodic beats.
    let nodes = cluster(&broker, 3, SLOW_BEAT).await;
    for bus in &nodes {
        let view = bus.cluster();
        let seen: Vec<NodeId> = view.nodes().iter().map(|n| n.node).collect();
        assert_eq!(seen, ids(&nodes));
        for node in view.nodes() {
            assert_eq!(node.services, ["cloudbus", "echo"]);
            assert_eq!(node.interval, SLOW_BEAT);
            assert_eq!(node.this_node, node.node == bus.node_id());
        }
    }
    for i in 0..1000 {
        let key = format!("vm-{i}");
        let owners: HashSet<NodeId> = nodes.iter().map(|b| b.owner(&key).unwrap()).collect();
        assert_eq!(owners.len(), 1, "nodes disagree on the owner of {key}");
    }
    // A service registered later is announced at once.
    nodes[2]
        .register(
            Service::builder("late", ())
                .on_request(|_: Work, _| async { Ok(Done { n: 0 }) })
                .build(),
        )
        .await
        .unwrap();
    let late = nodes[2].node_id();
    nodes[0]
        .wait_for_cluster(WAIT, |v| v.nodes_with("late").eq([late]))
        .await
        .unwrap();
    let done = nodes[0]
        .call(Work {
            key: "k".into(),
            n: 1,
        })
        .service("late")
        .await
        .unwrap();
    assert_eq!(done.n, 0);
    nodes[2].unregister("late").await.unwrap();
    nodes[0]
        .wait_for_cluster(WAIT, |v| v.nodes_with("late").count() == 0)
        .await
        .unwrap();
    let err = nodes[0]
        .call(Work {
            key: "k".into(),
            n: 1,
        })
        .service("late")
        .await
        .unwrap_err();
    assert!(err.is(codes::NO_SUCH_SERVICE), "{err}");
    for bus in &nodes {
        bus.shutdown().await;
    }
}

#[tokio::test]
async fn a_request_for_a_resource_goes_to_its_owner() {
    let broker = MemoryBroker::new();
    let nodes = cluster(&broker, 3, SLOW_BEAT).await;
    let mut served_by = HashSet::new();
    for i in 0..60 {
        let key = format!("0f1e2d3c-{i:04}-4000-8000-000000000000");
        let owner = nodes[0].owner(&key).unwrap();
        let reply = nodes[0]
            .call(echo(&key))
            .owner_of(key.clone())
            .await
            .unwrap();
        assert_eq!(reply.node, owner.to_string(), "{key}");
        served_by.insert(owner);
    }
    assert_eq!(served_by.len(), 3, "60 keys spread over all 3 nodes");
    for bus in &nodes {
        bus.shutdown().await;
    }
}

#[tokio::test]
async fn a_service_elsewhere_is_called_on_its_nodes_in_turn() {
    let broker = MemoryBroker::new();
    let caller = builder(&broker, SLOW_BEAT).build().await.unwrap();
    let mut servers = Vec::new();
    for _ in 0..2 {
        let bus = builder(&broker, SLOW_BEAT).build().await.unwrap();
        bus.register(echo_service()).await.unwrap();
        servers.push(bus);
    }
    caller
        .wait_for_cluster(WAIT, |v| v.nodes_with("echo").count() == 2)
        .await
        .unwrap();
    let mut served_by = Vec::new();
    for i in 0..4 {
        served_by.push(caller.call(echo(&format!("{i}"))).await.unwrap().node);
    }
    assert_ne!(served_by[0], served_by[1], "round-robin: {served_by:?}");
    assert_eq!(served_by[0], served_by[2]);
    assert_eq!(served_by[1], served_by[3]);
    for bus in servers.iter().chain([&caller]) {
        bus.shutdown().await;
    }
}

#[tokio::test]
async fn a_node_that_stops_gracefully_is_gone_at_once_and_its_keys_move() {
    let broker = MemoryBroker::new();
    let mut nodes = cluster(&broker, 3, SLOW_BEAT).await;
    let leaving = nodes.pop().unwrap();
    let gone = leaving.node_id();
    let keys: Vec<String> = (0..300).map(|i| format!("volume-{i}")).collect();
    let before: Vec<NodeId> = keys.iter().map(|k| nodes[0].owner(k).unwrap()).collect();
    leaving.shutdown().await;
    for bus in &nodes {
        // With 30 s heartbeats only `left` can explain this.
        bus.wait_for_cluster(WAIT, |v| v.node(gone).is_none())
            .await
            .unwrap();
    }
    for (key, old) in keys.iter().zip(&before) {
        let new = nodes[1].owner(key).unwrap();
        assert_eq!(nodes[0].owner(key).unwrap(), new);
        if *old == gone {
            assert_ne!(new, gone);
        } else {
            assert_eq!(new, *old, "only the leaving node's keys move");
        }
        let reply = nodes[0]
            .call(echo(key))
            .owner_of(key.clone())
            .await
            .unwrap();
        assert_eq!(reply.node, new.to_string());
    }
    for bus in &nodes {
        bus.shutdown().await;
    }
}

#[tokio::test]
async fn a_silent_node_is_declared_dead_and_its_callers_fail_at_once() {
    let broker = MemoryBroker::new();
    let beat = Duration::from_millis(50);
    let nodes = cluster(&broker, 3, beat).await;
    let victim = &nodes[2];
    let release = Arc::new(Notify::new());
    let started = Arc::new(Notify::new());
    victim
        .register(gated("stuck", started.clone(), release.clone()))
        .await
        .unwrap();
    let caller = nodes[0].clone();
    let target = victim.node_id();
    let call = tokio::spawn(async move {
        caller
            .call(Work {
                key: "k".into(),
                n: 1,
            })
            .service("stuck")
            .node(target)
            .timeout(Duration::from_secs(600))
            .await
    });
    started.notified().await;
    assert_eq!(nodes[0].pending_calls(), 1);
    // The node crashes: its queues vanish and nothing it sends arrives.
    broker.disconnect(BUS, target);
    let err = tokio::time::timeout(WAIT, call)
        .await
        .expect("fails before its timeout")
        .unwrap()
        .unwrap_err();
    assert!(err.is(codes::NODE_UNAVAILABLE), "{err}");
    assert!(err.description().contains(&target.to_string()), "{err}");
    for bus in &nodes[..2] {
        let view = bus
            .wait_for_cluster(WAIT, |v| v.node(target).is_none())
            .await
            .unwrap();
        assert_eq!(view.len(), 2);
    }
    // A call addressed to it fails at once, though its queue may remain.
    let err = nodes[0]
        .call(echo("x"))
        .node(target)
        .timeout(Duration::from_secs(600))
        .await
        .unwrap_err();
    assert!(err.is(codes::NODE_UNAVAILABLE), "{err}");
    // New requests for its resources go to the survivors.
    let survivors: HashSet<String> = nodes[..2].iter().map(|b| b.node_id().to_string()).collect();
    for i in 0..30 {
        let key = format!("vm-{i}");
        let reply = nodes[0].call(echo(&key)).owner_of(key).await.unwrap();
        assert!(survivors.contains(&reply.node));
    }
    release.notify_one();
    for bus in &nodes[..2] {
        bus.shutdown().await;
    }
}

#[tokio::test]
async fn an_observer_sees_the_members_but_owns_nothing_and_is_not_seen() {
    let broker = MemoryBroker::new();
    let nodes = cluster(&broker, 2, SLOW_BEAT).await;
    let observer = builder(&broker, SLOW_BEAT)
        .observer()
        .build()
        .await
        .unwrap();
    // It asked the members to introduce themselves: no 30 s wait.
    let view = observer
        .wait_for_cluster(WAIT, |v| v.len() == 2)
        .await
        .unwrap();
    assert!(view.node(observer.node_id()).is_none());
    assert_eq!(
        view.nodes().iter().map(|n| n.node).collect::<Vec<_>>(),
        ids(&nodes)
    );
    for i in 0..200 {
        let key = format!("vm-{i}");
        assert_eq!(observer.owner(&key).unwrap(), nodes[0].owner(&key).unwrap());
    }
    let reply = observer.call(echo("hi")).await.unwrap();
    assert!(nodes.iter().any(|n| n.node_id().to_string() == reply.node));
    for bus in &nodes {
        assert_eq!(bus.cluster().len(), 2, "members never see the observer");
    }
    let settled = observer
        .settled_cluster(Duration::from_millis(50), WAIT)
        .await;
    assert_eq!(settled.len(), 2);
    observer.shutdown().await;
    for bus in &nodes {
        bus.shutdown().await;
    }
}

#[tokio::test]
async fn the_embedded_bus_owns_every_resource_itself() {
    let bus = Bus::embedded();
    bus.register(echo_service()).await.unwrap();
    assert_eq!(bus.cluster().len(), 1);
    assert_eq!(bus.owner("vm-1").unwrap(), bus.node_id());
    let reply = bus.call(echo("x")).owner_of("vm-1").await.unwrap();
    assert_eq!(reply.node, bus.node_id().to_string());
    assert_eq!(bus.cluster().nodes()[0].services, ["cloudbus", "echo"]);
}

#[tokio::test]
async fn bad_membership_settings_are_refused() {
    let broker = MemoryBroker::new();
    for builder in [
        builder(&broker, Duration::ZERO),
        builder(&broker, SLOW_BEAT).heartbeat_misses(0),
    ] {
        let err = builder.build().await.unwrap_err();
        assert!(err.is(codes::INVALID_ARGUMENT), "{err}");
    }
}
