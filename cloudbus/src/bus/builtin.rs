//! The built-in `cloudbus` service every node runs.

use serde::{Deserialize, Serialize};

use crate::service::Service;
use crate::service::TypeStatistics;
use crate::{Message, NodeId, Request};

pub(crate) use crate::address::NODE_SERVICE as SERVICE;

/// Asks a node who it is: answered by the built-in `cloudbus` service of
/// every node with a [`Pong`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ping {}

impl Message for Ping {
    const TYPE: &'static str = "cloudbus.Ping";
}

impl Request for Ping {
    type Reply = Pong;
}

/// A node's answer to [`Ping`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pong {
    /// The node id.
    pub node: NodeId,
    /// The services registered on the node.
    pub services: Vec<String>,
    /// The cloudbus version the node runs.
    pub version: String,
    /// The broker the node is connected to (`host:port/vhost`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
}

impl Message for Pong {
    const TYPE: &'static str = "cloudbus.Pong";
}

/// Asks a node for its message statistics (ZStack's message statistics):
/// answered by the built-in `cloudbus` service with [`Statistics`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GetStatistics {}

impl Message for GetStatistics {
    const TYPE: &'static str = "cloudbus.GetStatistics";
}

impl Request for GetStatistics {
    type Reply = Statistics;
}

/// Per message type, how many a node handled and how long they took.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Statistics {
    /// The node id.
    pub node: NodeId,
    /// One entry per message type its services handle, sorted by type.
    pub types: Vec<TypeStatistics>,
}

impl Message for Statistics {
    const TYPE: &'static str = "cloudbus.Statistics";
}

/// The reply to a request that was handled by a plain-message handler.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ack {}

impl Message for Ack {
    const TYPE: &'static str = "cloudbus.Ack";
}

pub(crate) fn service() -> Service {
    Service::builder(SERVICE, ())
        .on_request(|_: Ping, ctx| async move {
            Ok(Pong {
                node: ctx.bus().node_id(),
                services: ctx.bus().services(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                broker: ctx.bus().broker(),
            })
        })
        .on_request(|_: GetStatistics, ctx| async move {
            Ok(Statistics {
                node: ctx.bus().node_id(),
                types: ctx.bus().statistics(),
            })
        })
        .build()
}
