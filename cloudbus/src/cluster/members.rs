//! The live members as this node knows them, and the routes derived from
//! them. Written about once per heartbeat; read on every routed message,
//! lock-free.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::echo::Echo;
use super::{Announcement, ClusterView, MembershipConfig, NodeStatus};
use crate::ring::HashRing;
use crate::{MessageId, NodeId};

struct Member {
    services: Vec<String>,
    interval: Duration,
    started_at: u64,
    last_seen: Instant,
    broker: Option<String>,
}

/// What routing needs, rebuilt only when membership or services change.
#[derive(Default)]
struct Routes {
    ring: Arc<HashRing>,
    by_service: HashMap<String, Vec<NodeId>>,
    /// Nodes seen to die or leave (the most recent ones), so a call
    /// addressed to one fails at once instead of waiting in its queue.
    departed: Arc<HashSet<NodeId>>,
}

/// How many departed nodes are remembered.
const DEPARTED_MAX: usize = 1024;

/// What a heartbeat or announcement changed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Change {
    /// A node not known before.
    Joined,
    /// A known node with other services.
    Updated,
    /// Nothing but its last-seen time.
    Unchanged,
}

#[derive(Default)]
struct Table {
    live: BTreeMap<NodeId, Member>,
    /// Departed nodes, oldest first.
    departed: VecDeque<NodeId>,
}

pub(crate) struct Members {
    me: NodeId,
    pub(crate) config: MembershipConfig,
    started_at: u64,
    table: Mutex<Table>,
    echo: Mutex<Echo>,
    routes: ArcSwap<Routes>,
    /// The turn of [`pick`](Self::pick); starts at random (see there).
    next: AtomicUsize,
    version: watch::Sender<u64>,
}

impl Members {
    pub(crate) fn new(me: NodeId, config: MembershipConfig, started_at: SystemTime) -> Self {
        let started_at = started_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let members = Self {
            me,
            config,
            started_at,
            table: Mutex::new(Table::default()),
            echo: Mutex::new(Echo::default()),
            routes: ArcSwap::default(),
            next: AtomicUsize::new(uuid::Uuid::new_v4().as_u128() as usize),
            version: watch::Sender::new(0),
        };
        if members.config.member {
            members.observe(&members.announcement(Vec::new(), None));
        }
        members
    }

    /// This node's heartbeat, with its current services.
    pub(crate) fn announcement(
        &self,
        services: Vec<String>,
        broker: Option<String>,
    ) -> Announcement {
        Announcement {
            node: self.me,
            services,
            interval_ms: self
                .config
                .interval
                .as_millis()
                .try_into()
                .unwrap_or(u64::MAX),
            started_at: self.started_at,
            broker,
        }
    }

    /// Records a heartbeat (or this node's own services).
    pub(crate) fn observe(&self, announcement: &Announcement) -> Change {
        let mut table = self.lock();
        let interval = Duration::from_millis(announcement.interval_ms.max(1));
        let change = match table.live.get_mut(&announcement.node) {
            Some(member) => {
                member.last_seen = Instant::now();
                member.interval = interval;
                member.broker.clone_from(&announcement.broker);
                if member.services == announcement.services {
                    Change::Unchanged
                } else {
                    member.services.clone_from(&announcement.services);
                    Change::Updated
                }
            }
            None => {
                table.departed.retain(|n| *n != announcement.node);
                table.live.insert(
                    announcement.node,
                    Member {
                        services: announcement.services.clone(),
                        interval,
                        started_at: announcement.started_at,
                        last_seen: Instant::now(),
                        broker: announcement.broker.clone(),
                    },
                );
                Change::Joined
            }
        };
        if change != Change::Unchanged {
            self.rebuild(&table);
        }
        change
    }

    /// Forgets a node that left; `false` if it was not known.
    pub(crate) fn remove(&self, node: NodeId) -> bool {
        if node == self.me {
            return false;
        }
        let mut table = self.lock();
        let removed = table.live.remove(&node).is_some();
        if removed {
            if table.departed.len() == DEPARTED_MAX {
                table.departed.pop_front();
            }
            table.departed.push_back(node);
            self.rebuild(&table);
        }
        removed
    }

    /// The nodes whose heartbeats stopped: each missed
    /// [`misses`](MembershipConfig::misses) of its own intervals.
    pub(crate) fn silent(&self) -> Vec<NodeId> {
        let misses = self.config.misses.max(1);
        // Silence counts only as far as this node has read its event
        // queue (see `echo`), and never more than ten death windows behind.
        let max_lag = self.config.interval * misses * 10;
        let reference = self
            .echo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reference(Instant::now(), max_lag);
        self.lock()
            .live
            .iter()
            .filter(|(node, m)| {
                **node != self.me
                    && reference.saturating_duration_since(m.last_seen) > m.interval * misses
            })
            .map(|(node, _)| *node)
            .collect()
    }

    /// This node is sending heartbeat `id` now.
    pub(crate) fn beat_sent(&self, id: MessageId) {
        self.echo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .sent(id, Instant::now());
    }

    /// This node's own heartbeat `id` came back through its event queue.
    pub(crate) fn beat_came_back(&self, id: MessageId) {
        self.echo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .came_back(id);
    }

    /// The owner of a resource by the ring.
    pub(crate) fn owner(&self, resource: &str) -> Option<NodeId> {
        self.routes.load().ring.owner(resource)
    }

    /// Whether `node` was seen to die or leave (and has not come back).
    pub(crate) fn departed(&self, node: NodeId) -> bool {
        self.routes.load().departed.contains(&node)
    }

    /// A member running `service`, taking turns among them. Each node
    /// starts its turns at a random member: a caller that makes one call
    /// and exits (a command-line tool, a script, a short-lived job) would
    /// otherwise always start at the first and pile onto one node.
    pub(crate) fn pick(&self, service: &str) -> Option<NodeId> {
        let routes = self.routes.load();
        let nodes = routes.by_service.get(service)?;
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        nodes.get(turn % nodes.len()).copied()
    }

    pub(crate) fn view(&self) -> ClusterView {
        let table = self.lock();
        let nodes = table
            .live
            .iter()
            .map(|(node, m)| NodeStatus {
                node: *node,
                services: m.services.clone(),
                started_at: UNIX_EPOCH + Duration::from_secs(m.started_at),
                interval: m.interval,
                last_seen: if *node == self.me {
                    Duration::ZERO
                } else {
                    m.last_seen.elapsed()
                },
                this_node: *node == self.me,
                broker: m.broker.clone(),
            })
            .collect();
        ClusterView {
            nodes,
            ring: self.routes.load().ring.clone(),
        }
    }

    /// Wakes up on every change of members or their services.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn rebuild(&self, table: &Table) {
        let mut ring = HashRing::new();
        let mut by_service: HashMap<String, Vec<NodeId>> = HashMap::new();
        for (node, member) in &table.live {
            ring.insert(*node);
            for service in &member.services {
                by_service.entry(service.clone()).or_default().push(*node);
            }
        }
        self.routes.store(Arc::new(Routes {
            ring: Arc::new(ring),
            by_service,
            departed: Arc::new(table.departed.iter().copied().collect()),
        }));
        self.version.send_modify(|v| *v += 1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        // The table holds plain data; a panic elsewhere cannot leave it torn.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(member: bool) -> MembershipConfig {
        MembershipConfig {
            interval: Duration::from_millis(10),
            misses: 3,
            member,
        }
    }

    fn hello(node: NodeId, services: &[&str]) -> Announcement {
        Announcement {
            node,
            services: services.iter().map(|s| s.to_string()).collect(),
            interval_ms: 10,
            started_at: 0,
            broker: None,
        }
    }

    #[test]
    fn members_are_tracked_and_services_routed_in_turn() {
        let me = NodeId::random();
        let members = Members::new(me, config(true), SystemTime::now());
        assert_eq!(members.view().len(), 1);
        let (a, b) = (NodeId::random(), NodeId::random());
        assert_eq!(members.observe(&hello(a, &["vm"])), Change::Joined);
        assert_eq!(members.observe(&hello(a, &["vm"])), Change::Unchanged);
        assert_eq!(members.observe(&hello(b, &["vm", "host"])), Change::Joined);
        assert_eq!(members.observe(&hello(a, &["vm", "host"])), Change::Updated);
        let picks: Vec<_> = (0..4).map(|_| members.pick("vm").unwrap()).collect();
        assert!(picks.contains(&a) && picks.contains(&b), "{picks:?}");
        assert_eq!(picks[0], picks[2]);
        assert_eq!(members.pick("storage"), None);
        assert!(members.remove(a));
        assert!(!members.remove(a));
        assert!(members.departed(a));
        members.observe(&hello(a, &["vm"]));
        assert!(!members.departed(a), "a node that comes back is live again");
        members.remove(a);
        assert!(!members.remove(me), "a node never removes itself");
        assert_eq!(members.pick("vm"), Some(b));
        assert_eq!(members.view().ring().len(), 2);
    }

    #[test]
    fn each_caller_starts_its_turns_at_a_random_member() {
        let (a, b) = (NodeId::random(), NodeId::random());
        let first_picks: HashSet<NodeId> = (0..64)
            .map(|_| {
                let caller = Members::new(NodeId::random(), config(false), SystemTime::now());
                caller.observe(&hello(a, &["vm"]));
                caller.observe(&hello(b, &["vm"]));
                caller.pick("vm").unwrap()
            })
            .collect();
        // 64 one-shot callers all starting at one node: 1 in 2^63 by chance.
        assert_eq!(first_picks.len(), 2, "one-shot callers pile onto one node");
    }

    #[test]
    fn an_observer_owns_nothing() {
        let members = Members::new(NodeId::random(), config(false), SystemTime::now());
        assert!(members.view().is_empty());
        assert_eq!(members.owner("some-vm"), None);
        let a = NodeId::random();
        members.observe(&hello(a, &[]));
        assert_eq!(members.owner("some-vm"), Some(a));
    }

    #[test]
    fn silent_nodes_are_found_and_self_never_is() {
        let me = NodeId::random();
        let members = Members::new(me, config(true), SystemTime::now());
        let a = NodeId::random();
        members.observe(&hello(a, &["vm"]));
        // Age the heartbeat instead of waiting for it to age.
        members.lock().live.get_mut(&a).unwrap().last_seen -= Duration::from_millis(31);
        members.lock().live.get_mut(&me).unwrap().last_seen -= Duration::from_secs(60);
        assert_eq!(members.silent(), vec![a]);
        members.remove(a);
        assert_eq!(members.silent(), Vec::<NodeId>::new());
        assert_eq!(members.view().len(), 1);
    }
}
