//! A snapshot of the cluster as one node sees it, for routing decisions,
//! operators (`cloudbus status`) and tests.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::NodeId;
use crate::ring::HashRing;

/// One node of the cluster as seen from here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node id.
    pub node: NodeId,
    /// Its services, sorted.
    pub services: Vec<String>,
    /// When it started.
    pub started_at: SystemTime,
    /// Its heartbeat interval.
    pub interval: Duration,
    /// How long ago its last heartbeat arrived (zero for this node).
    pub last_seen: Duration,
    /// Whether it is the node that took this snapshot.
    pub this_node: bool,
    /// The broker it is connected to, as its last heartbeat said
    /// (`host:port/vhost`); `None` on the embedded bus or from members
    /// that do not say.
    pub broker: Option<String>,
}

/// The live members of the cluster and the hash ring over them, as one
/// node sees them at one moment.
#[derive(Clone, Debug)]
pub struct ClusterView {
    pub(crate) nodes: Vec<NodeStatus>,
    pub(crate) ring: Arc<HashRing>,
}

impl ClusterView {
    /// The live members, sorted by node id.
    pub fn nodes(&self) -> &[NodeStatus] {
        &self.nodes
    }

    /// One member, if it is live.
    pub fn node(&self, node: NodeId) -> Option<&NodeStatus> {
        self.nodes.iter().find(|n| n.node == node)
    }

    /// How many members are live.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no member is known (an observer that found nobody).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The members that run `service`.
    pub fn nodes_with<'a>(&'a self, service: &'a str) -> impl Iterator<Item = NodeId> + 'a {
        self.nodes
            .iter()
            .filter(move |n| n.services.iter().any(|s| s == service))
            .map(|n| n.node)
    }

    /// The node that owns a resource, by the consistent hash ring.
    pub fn owner(&self, resource: &str) -> Option<NodeId> {
        self.ring.owner(resource)
    }

    /// The ring itself.
    pub fn ring(&self) -> &HashRing {
        &self.ring
    }
}
