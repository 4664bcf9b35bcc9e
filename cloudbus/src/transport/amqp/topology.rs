//! Names and declarations of the wire protocol's topology. Everything here
//! is declared once per node (and again after a reconnect), never per
//! message.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use super::QueueType;
use crate::NodeId;
use crate::address::{BusNames, ServiceAddress};

/// The names of one node's objects on one bus, and the type of its queues.
#[derive(Clone, Debug)]
pub(crate) struct Names {
    pub(crate) bus: String,
    pub(crate) node: NodeId,
    pub(crate) p2p: String,
    pub(crate) broadcast: String,
    pub(crate) queue_type: QueueType,
}

impl Names {
    pub(crate) fn new(bus: &str, node: NodeId, queue_type: QueueType) -> Self {
        let names = BusNames::new(bus);
        Self {
            bus: bus.to_string(),
            node,
            p2p: names.p2p(),
            broadcast: names.broadcast(),
            queue_type,
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
    queue_type: QueueType,
    expires_ms: u32,
    max_length: Option<u32>,
) -> lapin::Result<()> {
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongUInt(expires_ms));
    if let Some(max) = max_length {
        args.insert("x-max-length".into(), AMQPValue::LongUInt(max));
    }
    let options = match queue_type {
        QueueType::Classic => QueueDeclareOptions::default(),
        QueueType::Quorum => {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            // Quorum queues are always durable: replicated, on disk.
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            }
        }
    };
    channel
        .queue_declare(name.into(), options, args)
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

/// Whether declaring a queue failed because it exists with the other
/// queue type. RabbitMQ names the first argument that differs: the type,
/// or durability (quorum queues are durable, ours classic ones are not).
pub(crate) fn is_queue_type_mismatch(error: &lapin::Error) -> bool {
    let text = error.to_string();
    text.contains("PRECONDITION")
        && (text.contains("'x-queue-type'") || text.contains("inequivalent arg 'durable'"))
}
