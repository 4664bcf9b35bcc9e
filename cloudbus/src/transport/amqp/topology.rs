//! Names and declarations of the wire protocol's topology. Everything here
//! is declared once per node (and again after a reconnect), never per
//! message.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use crate::NodeId;
use crate::address::{BusNames, ServiceAddress};

/// The names of one node's objects on one bus.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    pub(crate) bus: String,
    pub(crate) node: NodeId,
    pub(crate) p2p: String,
    pub(crate) broadcast: String,
}

impl Names {
    pub(crate) fn new(bus: &str, node: NodeId) -> Self {
        let names = BusNames::new(bus);
        Self {
            bus: bus.to_string(),
            node,
            p2p: names.p2p(),
            broadcast: names.broadcast(),
        }
    }

    /// This node's queue of `service`.
    pub(crate) fn service_queue(&self, service: &str) -> String {
        BusNames::new(&self.bus).service_queue(service, self.node)
    }

    /// The P2P routing key of that queue.
    pub(crate) fn service_key(&self, service: &str) -> String {
        ServiceAddress::new(service, self.node).routing_key()
    }

    /// This node's event queue.
    pub(crate) fn event_queue(&self) -> String {
        BusNames::new(&self.bus).event_queue(self.node)
    }
}

/// Declares both exchanges (durable, idempotent).
pub(crate) async fn declare_exchanges(channel: &Channel, names: &Names) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            names.p2p.as_str().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            names.broadcast.as_str().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
}

/// Declares a node queue that the broker deletes after `expires_ms` without
/// a consumer, so a dead node's queues do not pile up. `max_length` caps a
/// queue that may fill while nobody reads it (the event queue of a node
/// that is gone): the oldest messages are dropped first.
pub(crate) async fn declare_queue(
    channel: &Channel,
    name: &str,
    expires_ms: u32,
    max_length: Option<u32>,
) -> lapin::Result<()> {
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongUInt(expires_ms));
    if let Some(max) = max_length {
        args.insert("x-max-length".into(), AMQPValue::LongUInt(max));
    }
    channel
        .queue_declare(name.into(), QueueDeclareOptions::default(), args)
        .await
        .map(|_| ())
}

/// At most this many events wait in a node's event queue.
pub(crate) const EVENT_QUEUE_MAX: u32 = 10_000;

/// Binds a queue to an exchange.
pub(crate) async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> lapin::Result<()> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}
