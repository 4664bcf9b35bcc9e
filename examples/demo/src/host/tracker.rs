//! Which management node tracks which host: the consistent hash ring over
//! the nodes that run the host service decides, as ZStack's ring decides
//! which management node handles which resource. Each node connects and
//! pings only the hosts it owns, marks them Connected or Disconnected,
//! and announces each change as a `host.StatusChanged` event. When a node
//! joins, dies or leaves, the ring changes on every node at once and the
//! hosts move with it: the new owner starts tracking them at once, the
//! old one stops.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use cloudbus::{Bus, HashRing, NodeId};
use cloudbus_agent::AgentClient;
use futures::StreamExt;

use crate::hypervisor::{ConnectHost, HostFacts};
use crate::messages::{HostStatusChanged, TrackedHost};

/// The service whose nodes share the hosts.
pub(crate) const SERVICE: &str = "host";

/// A host of the control plane's inventory, known to every node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRecord {
    /// The host's id: the key on the ring, and the name messages use.
    pub uuid: String,
    /// Its agent's base URL.
    pub agent: String,
}

impl HostRecord {
    /// `name=url`, or a bare URL, which is then also the host's id.
    pub fn parse(entry: &str) -> Self {
        match entry.split_once('=') {
            Some((uuid, agent)) if !uuid.contains("://") => Self {
                uuid: uuid.trim().to_string(),
                agent: agent.trim().to_string(),
            },
            _ => Self {
                uuid: entry.trim().to_string(),
                agent: entry.trim().to_string(),
            },
        }
    }
}

/// What a node knows of a host it tracks.
#[derive(Debug)]
pub(crate) struct Tracked {
    pub(crate) agent: String,
    pub(crate) status: Status,
    /// Room left for VMs, known after the first answer of the agent.
    pub(crate) free: Option<(u32, u32)>,
    /// Why the last ping failed, while disconnected.
    pub(crate) error: Option<cloudbus::ErrorCode>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Unknown,
    Connected,
    Disconnected,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Unknown => "Unknown",
            Status::Connected => "Connected",
            Status::Disconnected => "Disconnected",
        }
    }
}

/// How a tracker pings.
#[derive(Clone, Debug)]
pub struct TrackerConfig {
    /// Time between two pings of a host (default 5 s).
    pub interval: Duration,
    /// How long a ping may take before the host counts as disconnected
    /// (default 3 s).
    pub ping_timeout: Duration,
    /// Pings in flight at once over all hosts (default 256).
    pub concurrency: usize,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            ping_timeout: Duration::from_secs(3),
            concurrency: 256,
        }
    }
}

/// The hosts one node tracks, kept current with the ring.
pub struct HostTracker {
    inventory: Vec<HostRecord>,
    pub(crate) table: Mutex<BTreeMap<String, Tracked>>,
    agents: AgentClient,
    config: TrackerConfig,
}

/// The node that tracks `host`: its owner among the nodes of `view` that
/// run the host service, by the consistent hash ring (the same on every
/// node that sees the same members). Where every node runs every service,
/// as in ZStack, it is the bus's own `.owner_of(host)`; here nodes may
/// run some services only, and a host belongs to a node that runs `host`.
pub fn owner(view: &cloudbus::cluster::ClusterView, host: &str) -> Option<NodeId> {
    host_ring(view).owner(host)
}

fn host_ring(view: &cloudbus::cluster::ClusterView) -> HashRing {
    let mut ring = HashRing::new();
    for node in view.nodes_with(SERVICE) {
        ring.insert(node);
    }
    ring
}

impl HostTracker {
    /// A tracker for `inventory`, pinging through `agents`.
    pub fn new(inventory: Vec<HostRecord>, agents: AgentClient, config: TrackerConfig) -> Self {
        Self {
            inventory,
            table: Mutex::new(BTreeMap::new()),
            agents,
            config,
        }
    }

    /// The hosts this node tracks now, sorted, with their status.
    pub fn tracked(&self) -> Vec<TrackedHost> {
        self.lock()
            .iter()
            .map(|(host, t)| TrackedHost {
                host: host.clone(),
                status: t.status.name().to_string(),
            })
            .collect()
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Tracked>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the hosts this node owns by the ring and lets go of the
    /// others. Returns how many it took and let go of.
    pub fn rebalance(&self, bus: &Bus) -> (usize, usize) {
        let me = bus.node_id();
        let mut ring = host_ring(&bus.cluster());
        // Before this node's own service shows in its view, it owns all.
        ring.insert(me);
        let mut table = self.lock();
        let before = table.len();
        table.retain(|host, _| ring.owner(host) == Some(me));
        let released = before - table.len();
        let mut taken = 0;
        for record in &self.inventory {
            if ring.owner(&record.uuid) == Some(me) && !table.contains_key(&record.uuid) {
                table.insert(
                    record.uuid.clone(),
                    Tracked {
                        agent: record.agent.clone(),
                        status: Status::Unknown,
                        free: None,
                        error: None,
                    },
                );
                taken += 1;
            }
        }
        (taken, released)
    }

    /// Pings every tracked host once, at most `concurrency` at a time, and
    /// publishes each change of status. Returns how many answered.
    pub async fn sweep(&self, bus: &Bus) -> usize {
        let targets: Vec<(String, String)> = self
            .lock()
            .iter()
            .map(|(host, t)| (host.clone(), t.agent.clone()))
            .collect();
        let pings = futures::stream::iter(targets)
            .map(|(host, agent)| async move {
                let answer = self
                    .agents
                    .call(&agent, ConnectHost {})
                    .timeout(self.config.ping_timeout)
                    .await;
                (host, answer)
            })
            .buffer_unordered(self.config.concurrency.max(1));
        futures::pin_mut!(pings);
        let mut answered = 0;
        while let Some((host, answer)) = pings.next().await {
            answered += usize::from(answer.is_ok());
            if let Some(status) = self.record(&host, answer) {
                let event = HostStatusChanged {
                    host,
                    status: status.name().to_string(),
                    node: bus.node_id().to_string(),
                };
                if let Err(error) = bus.publish(event).await {
                    tracing::warn!(%error, "cannot announce a host's status");
                }
            }
        }
        answered
    }

    /// Notes a ping's outcome; returns the new status if it changed. A
    /// host let go of meanwhile is left alone.
    fn record(&self, host: &str, answer: Result<HostFacts, cloudbus::ErrorCode>) -> Option<Status> {
        let mut table = self.lock();
        let tracked = table.get_mut(host)?;
        let status = match answer {
            Ok(facts) => {
                // The agent knows what runs on it: a new owner learns the
                // room left from it, not from the host's previous tracker.
                tracked
                    .free
                    .get_or_insert((facts.free_cpus(), facts.free_memory_gb()));
                tracked.error = None;
                Status::Connected
            }
            Err(error) => {
                if tracked.status != Status::Disconnected {
                    tracing::warn!(target: "cloudbus_demo::host", host, %error, "host disconnected");
                }
                tracked.error = Some(error);
                Status::Disconnected
            }
        };
        let changed = tracked.status != status;
        tracked.status = status;
        changed.then_some(status)
    }

    /// Runs until the bus shuts down: rebalances at once when the cluster
    /// changes, and sweeps every interval.
    pub(crate) fn spawn(self: &Arc<Self>, bus: &Bus) -> tokio::task::JoinHandle<()> {
        let tracker: Weak<Self> = Arc::downgrade(self);
        let mut changes = bus.cluster_changes();
        let bus = bus.clone();
        let interval = self.config.interval;
        tokio::spawn(async move {
            // The first sweep was made before the service started.
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let changed = tokio::select! {
                    _ = ticks.tick() => false,
                    changed = changes.changed() => {
                        if changed.is_err() { return; }
                        true
                    }
                };
                if bus.is_shut_down() {
                    return;
                }
                let Some(tracker) = tracker.upgrade() else {
                    return;
                };
                let (taken, released) = tracker.rebalance(&bus);
                if taken + released > 0 {
                    tracing::info!(target: "cloudbus_demo::host", taken, released, "hosts moved with the ring");
                }
                // A change sweeps only when it brought new hosts: they are
                // pinged now, not an interval later.
                if !changed || taken > 0 {
                    tracker.sweep(&bus).await;
                }
            }
        })
    }
}
