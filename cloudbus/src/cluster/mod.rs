//! Membership and placement: which nodes are alive, what they run, and
//! which of them owns a resource (DESIGN §4 membership events, §5 ring).
//!
//! Every member publishes a heartbeat each interval; a node that misses
//! [`heartbeat_misses`](crate::BusBuilder::heartbeat_misses) of its intervals is dead. Callers waiting
//! on a node that died or left fail at once with `cloudbus.NODE_UNAVAILABLE`.

mod echo;
mod events;
mod members;
mod view;

pub use events::{Announcement, DiscoverNodes, NodeHeartbeat, NodeJoined, NodeLeft};
pub use view::{ClusterView, NodeStatus};

pub(crate) use events::{PATTERN, is_membership};
pub(crate) use members::{Change, Members};

use std::time::Duration;

/// How a node takes part in membership.
#[derive(Clone, Debug)]
pub(crate) struct MembershipConfig {
    /// How often a member sends its heartbeat (default 1 s).
    pub(crate) interval: Duration,
    /// How many intervals a member may miss before it is dead (default 3).
    pub(crate) misses: u32,
    /// Whether this node is a member: members announce themselves and own
    /// a share of the ring; an observer (a command-line tool, a gateway)
    /// only listens, so it never owns resources. Default: member.
    pub(crate) member: bool,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            misses: 3,
            member: true,
        }
    }
}
