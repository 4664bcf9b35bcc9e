//! Where messages go: every name of the wire protocol's topology, and the
//! topic patterns events are matched by, in one place (`docs/wire-protocol.md`), so that the bus, its transports and the
//! tools that inspect a broker cannot spell them differently.
//!
//! ```
//! use cloudbus::address::{BusNames, ServiceAddress};
//! use cloudbus::NodeId;
//! let node: NodeId = "0123456789abcdef0123456789abcdef".parse().unwrap();
//! let names = BusNames::new("prod");
//! assert_eq!(names.p2p(), "prod.P2P");
//! assert_eq!(names.service_queue("vm", node), "prod.message.vm.0123456789abcdef0123456789abcdef");
//! assert_eq!(ServiceAddress::new("vm", node).routing_key(), "vm.0123456789abcdef0123456789abcdef");
//! assert_eq!(ServiceAddress::of_node(node).routing_key(), "cloudbus.0123456789abcdef0123456789abcdef");
//! ```

mod pattern;

use std::borrow::Cow;
use std::fmt;

pub use pattern::Pattern;

use crate::NodeId;

/// The service every node runs for the bus itself: built-in requests
/// (`cloudbus.Ping`, `cloudbus.GetStatistics`) and the replies to the
/// node's own calls arrive on its queue.
pub const NODE_SERVICE: &str = "cloudbus";

/// One service on one node: where a request or plain message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceAddress<'a> {
    /// The service.
    pub service: &'a str,
    /// The node that runs it.
    pub node: NodeId,
}

impl<'a> ServiceAddress<'a> {
    /// `service` on `node`.
    pub fn new(service: &'a str, node: NodeId) -> Self {
        Self { service, node }
    }

    /// The node's own service, whose queue takes the replies to its calls:
    /// what a caller puts in `reply_to`.
    pub fn of_node(node: NodeId) -> ServiceAddress<'static> {
        ServiceAddress {
            service: NODE_SERVICE,
            node,
        }
    }

    /// `<service>.<node>`: the routing key on the P2P exchange, and the
    /// `reply_to` of a caller.
    pub fn routing_key(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for ServiceAddress<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.service, self.node)
    }
}

/// Where a transport sends a message on the P2P exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination<'a> {
    /// A service's queue on a node: requests and plain messages. Published
    /// mandatory, so a message no queue takes fails at once.
    Service(ServiceAddress<'a>),
    /// The `reply_to` a caller gave, as it gave it (a client in another
    /// language may name any queue bound on P2P): replies, which are not
    /// mandatory — a reply whose caller is gone has nobody to tell.
    ReplyTo(&'a str),
}

impl Destination<'_> {
    /// The routing key on the P2P exchange.
    pub fn routing_key(&self) -> Cow<'_, str> {
        match self {
            Destination::Service(address) => Cow::Owned(address.routing_key()),
            Destination::ReplyTo(reply_to) => Cow::Borrowed(reply_to),
        }
    }
}

impl fmt::Display for Destination<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Service(address) => address.fmt(f),
            Destination::ReplyTo(reply_to) => f.write_str(reply_to),
        }
    }
}

/// The names of one bus's exchanges and queues on the broker.
#[derive(Clone, Copy, Debug)]
pub struct BusNames<'a> {
    bus: &'a str,
}

impl<'a> BusNames<'a> {
    /// The names of bus `bus`.
    pub fn new(bus: &'a str) -> Self {
        Self { bus }
    }

    /// The bus name.
    pub fn bus(&self) -> &'a str {
        self.bus
    }

    /// `<bus>.P2P`: the direct exchange of requests, messages and replies.
    pub fn p2p(&self) -> String {
        format!("{}.P2P", self.bus)
    }

    /// `<bus>.BROADCAST`: the topic exchange of events.
    pub fn broadcast(&self) -> String {
        format!("{}.BROADCAST", self.bus)
    }

    /// `<bus>.message.<service>.<node>`: a service's static queue on a node,
    /// bound to P2P with that address's routing key.
    pub fn service_queue(&self, service: &str, node: NodeId) -> String {
        format!("{}.message.{service}.{node}", self.bus)
    }

    /// `<bus>.event.<node>`: a node's event queue, bound to BROADCAST with
    /// the patterns its subscribers use.
    pub fn event_queue(&self, node: NodeId) -> String {
        format!("{}.event.{node}", self.bus)
    }
}
