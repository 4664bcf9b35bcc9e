//! Membership, the hash ring and routing by resource: `cluster.rs` and
//! `amqp_cluster.rs`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cloudbus::{Bus, BusBuilder, NodeId, Service, codes};
use tokio::sync::Notify;

use super::Nodes;
use crate::common::*;

/// The tests of this group, on the nodes of `$nodes`.
#[allow(unused_macros)] // each test file expands one group
macro_rules! tests {
    ($nodes:expr) => {
        $crate::scenarios::tests!(cluster, $nodes;
            nodes_that_join_are_seen_by_all_with_their_services_and_agree_on_owners,
            a_request_for_a_resource_goes_to_its_owner,
            a_service_elsewhere_is_called_on_its_nodes_in_turn,
            a_node_that_stops_gracefully_is_gone_at_once_and_its_keys_move,
            a_silent_node_is_declared_dead_and_its_callers_fail_at_once,
            an_observer_sees_the_members_but_owns_nothing_and_is_not_seen,
            bad_membership_settings_are_refused,
        );
    };
}
#[allow(unused_imports)]
pub(crate) use tests;

/// Long enough that a test about `left` cannot pass by death detection.
pub const SLOW_BEAT: Duration = Duration::from_secs(30);
/// Short enough that a silent node is declared dead quickly.
const FAST_BEAT: Duration = Duration::from_millis(100);

fn with_beat(builder: BusBuilder, beat: Duration) -> BusBuilder {
    builder.heartbeat_interval(beat).heartbeat_misses(3)
}

/// `n` members with the `echo` service, once every one sees them all.
async fn cluster(nodes: &impl Nodes, n: usize, beat: Duration) -> Vec<Bus> {
    let mut members = Vec::new();
    for _ in 0..n {
        let bus = nodes.start(with_beat(nodes.builder(), beat)).await;
        bus.register(echo_service()).await.unwrap();
        members.push(bus);
    }
    for bus in &members {
        bus.wait_for_cluster(WAIT, |v| v.len() == n && v.nodes_with("echo").count() == n)
            .await
            .unwrap();
    }
    members
}

fn ids(nodes: &[Bus]) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = nodes.iter().map(Bus::node_id).collect();
    ids.sort();
    ids
}

pub async fn nodes_that_join_are_seen_by_all_with_their_services_and_agree_on_owners(
    nodes: &impl Nodes,
) {
    // Heartbeats far apart: the nodes learn of each other from `joined`
    // and the answers to it, not from periodic beats.
    let members = cluster(nodes, 3, SLOW_BEAT).await;
    for bus in &members {
        let view = bus.cluster();
        let seen: Vec<NodeId> = view.nodes().iter().map(|n| n.node).collect();
        assert_eq!(seen, ids(&members));
        for node in view.nodes() {
            assert_eq!(node.services, ["cloudbus", "echo"]);
            assert_eq!(node.interval, SLOW_BEAT);
            assert_eq!(node.this_node, node.node == bus.node_id());
        }
    }
    for i in 0..1000 {
        let key = format!("vm-{i}");
        let owners: HashSet<NodeId> = members.iter().map(|b| b.owner(&key).unwrap()).collect();
        assert_eq!(owners.len(), 1, "nodes disagree on the owner of {key}");
    }
    // A service registered later is announced at once.
    members[2]
        .register(
            Service::builder("late", ())
                .on_request(|_: Work, _| async { Ok(Done { n: 0 }) })
                .build(),
        )
        .await
        .unwrap();
    let late = members[2].node_id();
    members[0]
        .wait_for_cluster(WAIT, |v| v.nodes_with("late").eq([late]))
        .await
        .unwrap();
    let work = || Work {
        key: "k".into(),
        n: 1,
    };
    let done = members[0].call(work()).service("late").await.unwrap();
    assert_eq!(done.n, 0);
    members[2].unregister("late").await.unwrap();
    members[0]
        .wait_for_cluster(WAIT, |v| v.nodes_with("late").count() == 0)
        .await
        .unwrap();
    let err = within("the refusal", members[0].call(work()).service("late"))
        .await
        .unwrap_err();
    assert!(err.is(codes::NO_SUCH_SERVICE), "{err}");
}

pub async fn a_request_for_a_resource_goes_to_its_owner(nodes: &impl Nodes) {
    let members = cluster(nodes, 3, SLOW_BEAT).await;
    let mut served_by = HashSet::new();
    for i in 0..60 {
        let key = format!("0f1e2d3c-{i:04}-4000-8000-000000000000");
        let owner = members[0].owner(&key).unwrap();
        assert!(members.iter().all(|b| b.owner(&key).unwrap() == owner));
        let caller = &members[i % 3];
        let reply = caller.call(echo(&key)).owner_of(key.clone()).await.unwrap();
        assert_eq!(reply.node, owner.to_string(), "{key}");
        served_by.insert(owner);
    }
    assert_eq!(served_by.len(), 3, "60 keys spread over all 3 nodes");
}

pub async fn a_service_elsewhere_is_called_on_its_nodes_in_turn(nodes: &impl Nodes) {
    let caller = nodes.start(with_beat(nodes.builder(), SLOW_BEAT)).await;
    for _ in 0..2 {
        let bus = nodes.start(with_beat(nodes.builder(), SLOW_BEAT)).await;
        bus.register(echo_service()).await.unwrap();
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
}

pub async fn a_node_that_stops_gracefully_is_gone_at_once_and_its_keys_move(nodes: &impl Nodes) {
    let mut members = cluster(nodes, 3, SLOW_BEAT).await;
    let leaving = members.pop().unwrap();
    let gone = leaving.node_id();
    let keys: Vec<String> = (0..300).map(|i| format!("volume-{i}")).collect();
    let before: Vec<NodeId> = keys.iter().map(|k| members[0].owner(k).unwrap()).collect();
    assert!(before.contains(&gone), "the leaving node owned some keys");
    leaving.shutdown().await;
    for bus in &members {
        // With 30 s heartbeats only `left` can explain this.
        bus.wait_for_cluster(WAIT, |v| v.node(gone).is_none())
            .await
            .unwrap();
    }
    for (key, old) in keys.iter().zip(&before) {
        let new = members[1].owner(key).unwrap();
        assert_eq!(members[0].owner(key).unwrap(), new);
        if *old == gone {
            assert_ne!(new, gone);
        } else {
            assert_eq!(new, *old, "only the leaving node's keys move");
        }
        let reply = members[0]
            .call(echo(key))
            .owner_of(key.clone())
            .await
            .unwrap();
        assert_eq!(reply.node, new.to_string());
    }
}

pub async fn a_silent_node_is_declared_dead_and_its_callers_fail_at_once(nodes: &impl Nodes) {
    let members = cluster(nodes, 2, FAST_BEAT).await;
    let victim = nodes.mortal(|b| with_beat(b, FAST_BEAT)).await;
    let (release, started) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    victim.bus.register(echo_service()).await.unwrap();
    victim
        .bus
        .register(gated("stuck", started.clone(), release.clone()))
        .await
        .unwrap();
    let target = victim.bus.node_id();
    for bus in &members {
        bus.wait_for_cluster(WAIT, |v| v.len() == 3 && v.nodes_with("stuck").eq([target]))
            .await
            .unwrap();
    }
    let call = tokio::spawn({
        let caller = members[0].clone();
        async move {
            caller
                .call(Work {
                    key: "k".into(),
                    n: 1,
                })
                .service("stuck")
                .timeout(Duration::from_secs(600))
                .await
        }
    });
    within("the handler to start", started.notified()).await;
    assert_eq!(members[0].pending_calls(), 1);
    // The node crashes: nothing reaches it and nothing it sends arrives.
    victim.kill();
    let err = within("the caller to fail before its 600 s timeout", call)
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is(codes::NODE_UNAVAILABLE), "{err}");
    assert!(err.description().contains(&target.to_string()), "{err}");
    for bus in &members {
        let view = bus
            .wait_for_cluster(WAIT, |v| v.node(target).is_none())
            .await
            .unwrap();
        assert_eq!(view.len(), 2);
    }
    // A call addressed to it fails at once, though its queue may remain.
    let err = within(
        "a call to the dead node",
        members[0]
            .call(echo("x"))
            .node(target)
            .timeout(Duration::from_secs(600)),
    )
    .await
    .unwrap_err();
    assert!(err.is(codes::NODE_UNAVAILABLE), "{err}");
    // New requests for its resources go to the survivors.
    let survivors: HashSet<String> = members.iter().map(|b| b.node_id().to_string()).collect();
    for i in 0..30 {
        let key = format!("vm-{i}");
        let owner = members[0].owner(&key).unwrap();
        assert!(members.iter().any(|b| b.node_id() == owner));
        let reply = members[0].call(echo(&key)).owner_of(key).await.unwrap();
        assert!(survivors.contains(&reply.node));
        assert_eq!(reply.node, owner.to_string());
    }
    release.notify_one();
}

pub async fn an_observer_sees_the_members_but_owns_nothing_and_is_not_seen(nodes: &impl Nodes) {
    let members = cluster(nodes, 2, SLOW_BEAT).await;
    let observer = nodes
        .start(with_beat(nodes.builder(), SLOW_BEAT).observer())
        .await;
    // It asked the members to introduce themselves: no 30 s wait.
    let view = observer
        .wait_for_cluster(WAIT, |v| v.len() == 2)
        .await
        .unwrap();
    assert!(view.node(observer.node_id()).is_none());
    assert_eq!(
        view.nodes().iter().map(|n| n.node).collect::<Vec<_>>(),
        ids(&members)
    );
    for i in 0..200 {
        let key = format!("vm-{i}");
        assert_eq!(
            observer.owner(&key).unwrap(),
            members[0].owner(&key).unwrap()
        );
    }
    let reply = observer.call(echo("hi")).await.unwrap();
    assert!(
        members
            .iter()
            .any(|n| n.node_id().to_string() == reply.node)
    );
    for bus in &members {
        assert_eq!(bus.cluster().len(), 2, "members never see the observer");
    }
    let settled = observer
        .settled_cluster(Duration::from_millis(50), WAIT)
        .await;
    assert_eq!(settled.len(), 2);
}

pub async fn bad_membership_settings_are_refused(nodes: &impl Nodes) {
    for builder in [
        with_beat(nodes.builder(), Duration::ZERO),
        with_beat(nodes.builder(), SLOW_BEAT).heartbeat_misses(0),
    ] {
        let err = builder.build().await.unwrap_err();
        assert!(err.is(codes::INVALID_ARGUMENT), "{err}");
    }
}
