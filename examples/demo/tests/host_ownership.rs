//! Which node tracks which host, on the in-memory broker: 3 management
//! nodes share 300 hosts by the ring, each host tracked exactly once;
//! when a node dies its hosts move to the survivors (and only its hosts),
//! and a node that joins takes its share from the others. The same on
//! RabbitMQ with real processes is in `cli/tests/host_fleet.rs`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cloudbus::transport::memory::MemoryBroker;
use cloudbus::{Bus, NodeId};
use cloudbus_demo::host::TrackerConfig;
use cloudbus_demo::hypervisor::Simulation;
use cloudbus_demo::messages::{GetTrackedHosts, HostStatusChanged};
use cloudbus_demo::{HostAgents, install};

const HOSTS: usize = 300;
const INTERVAL: Duration = Duration::from_millis(200);
const HEARTBEAT: Duration = Duration::from_millis(100);
const WAIT: Duration = Duration::from_secs(30);

/// The hosts `node` tracks now, asked over the bus.
async fn tracked_by(asker: &Bus, node: NodeId) -> BTreeSet<String> {
    asker
        .call(GetTrackedHosts {})
        .node(node)
        .timeout(Duration::from_secs(5))
        .await
        .unwrap()
        .hosts
        .into_iter()
        .map(|h| h.host)
        .collect()
}

/// Waits until the hosts are split among `nodes` with every host tracked
/// by exactly one of them; returns each node's share.
async fn partition(asker: &Bus, nodes: &[NodeId]) -> Vec<BTreeSet<String>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut shares = Vec::new();
        for node in nodes {
            shares.push(tracked_by(asker, *node).await);
        }
        let total: usize = shares.iter().map(BTreeSet::len).sum();
        let union: BTreeSet<&String> = shares.iter().flatten().collect();
        if total == HOSTS && union.len() == HOSTS {
            return shares;
        }
        assert!(
            Instant::now() < deadline,
            "the hosts never split exactly once over {} nodes: {:?}",
            nodes.len(),
            shares.iter().map(BTreeSet::len).collect::<Vec<_>>()
        );
        // Ask again a little later: the nodes follow the ring by themselves.
        tokio::time::sleep(INTERVAL / 4).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_move_with_the_ring_when_a_node_dies_or_joins() {
    let hosts = Simulation {
        count: HOSTS,
        boot_time: Duration::from_millis(1),
        ..Simulation::demo()
    }
    .serve()
    .await
    .unwrap();
    let agents = HostAgents {
        urls: hosts
            .iter()
            .map(|(name, agent)| format!("{name}={}", agent.url()))
            .collect(),
        tracking: TrackerConfig {
            interval: INTERVAL,
            ..TrackerConfig::default()
        },
        ..HostAgents::default()
    };
    let broker = MemoryBroker::new();
    let start = || async {
        let bus = Bus::builder()
            .name("fleet")
            .transport(broker.transport())
            .heartbeat_interval(HEARTBEAT)
            .build()
            .await
            .unwrap();
        install(&bus, &["host"], &agents).await.unwrap();
        bus
    };
    // Listens from before the first node starts.
    let observer = Bus::builder()
        .name("fleet")
        .transport(broker.transport())
        .observer()
        .build()
        .await
        .unwrap();
    let mut status = observer.subscribe::<HostStatusChanged>().await.unwrap();
    let (a, b, c) = (start().await, start().await, start().await);
    let three = [a.node_id(), b.node_id(), c.node_id()];
    let before = partition(&a, &three).await;
    eprintln!(
        "3 nodes: {:?} hosts each",
        before.iter().map(BTreeSet::len).collect::<Vec<_>>()
    );
    for share in &before {
        assert!(!share.is_empty(), "every node owns some hosts");
    }

    // C dies: cut off the broker, as a crash, and gone.
    let killed = Instant::now();
    broker.disconnect("fleet", c.node_id());
    let gone = tokio::spawn(async move { c.shutdown().await });
    let after = partition(&a, &three[..2]).await;
    gone.await.unwrap();
    eprintln!(
        "C died: every host tracked again by A and B after {:?} (death window {:?} + interval {INTERVAL:?}): {:?}",
        killed.elapsed(),
        HEARTBEAT * 3,
        after.iter().map(BTreeSet::len).collect::<Vec<_>>()
    );
    // Only C's hosts moved.
    assert!(after[0].is_superset(&before[0]));
    assert!(after[1].is_superset(&before[1]));

    // D joins and takes its share from A and B, nothing else changes hands.
    let d = start().await;
    let joined = partition(&a, &[a.node_id(), b.node_id(), d.node_id()]).await;
    assert!(joined[0].is_subset(&after[0]));
    assert!(joined[1].is_subset(&after[1]));
    assert!(!joined[2].is_empty());

    // Every host was announced Connected by the node that took it.
    let mut connected = BTreeSet::new();
    while connected.len() < HOSTS {
        let change = tokio::time::timeout(WAIT, status.recv())
            .await
            .expect("status changes")
            .unwrap();
        assert_eq!(change.status, "Connected", "{change:?}");
        connected.insert(change.host);
    }

    for bus in [a, b, d, observer] {
        bus.shutdown().await;
    }
    for (_, agent) in hosts {
        agent.shutdown().await.unwrap();
    }
}
