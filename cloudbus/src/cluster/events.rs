//! The membership events every node publishes on BROADCAST (DESIGN §4).

use serde::{Deserialize, Serialize};

use crate::{Event, Message, NodeId};

/// What a member says about itself in a heartbeat or when it joins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The node id.
    pub node: NodeId,
    /// The services registered on the node, sorted.
    pub services: Vec<String>,
    /// How often the node sends heartbeats, in ms: it counts as dead after
    /// missing a few of them.
    pub interval_ms: u64,
    /// When the node started, in seconds since the Unix epoch.
    pub started_at: u64,
    /// The broker the node is connected to (`host:port/vhost`, never
    /// credentials), so that operators see how a bus spreads over a
    /// RabbitMQ cluster. Optional on the wire: older members omit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
}

/// "I am alive", published by every member once per heartbeat interval,
/// and at once when its services change or another node joins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeHeartbeat(pub Announcement);

/// "I am new": published by a member when it starts. Every other member
/// answers with a heartbeat so the newcomer learns the cluster at once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeJoined(pub Announcement);

/// "I am gone": published by a member that stops gracefully, after it
/// finished its in-flight work.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLeft {
    /// The node id.
    pub node: NodeId,
}

/// "Who is there?": published by an observer (a bus that is not a member,
/// such as a command-line tool); every member answers with a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoverNodes {
    /// The asking node.
    pub node: NodeId,
}

impl Message for NodeHeartbeat {
    const TYPE: &'static str = "cloudbus.node.heartbeat";
}
impl Message for NodeJoined {
    const TYPE: &'static str = "cloudbus.node.joined";
}
impl Message for NodeLeft {
    const TYPE: &'static str = "cloudbus.node.left";
}
impl Message for DiscoverNodes {
    const TYPE: &'static str = "cloudbus.node.discover";
}
impl Event for NodeHeartbeat {}
impl Event for NodeJoined {}
impl Event for NodeLeft {}
impl Event for DiscoverNodes {}

/// The topic pattern that covers every membership event.
pub(crate) const PATTERN: &str = "cloudbus.node.*";

/// Whether a message type is a membership event.
pub(crate) fn is_membership(type_name: &str) -> bool {
    type_name.starts_with("cloudbus.node.")
}
