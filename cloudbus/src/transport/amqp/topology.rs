//! Names and declarations of the wire protocol's topology. Everything here
//! is declared once per node (and again after a reconnect), never per
//! message.

use amqprs::FieldTable;
use amqprs::channel::{ExchangeDeclareArguments, QueueBindArguments, QueueDeclareArguments};

use super::QueueType;
use super::channel::{Channel, Failure};
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
pub(crate) async fn declare_exchanges(channel: &Channel, names: &Names) -> Result<(), Failure> {
    for (name, kind) in [(&names.p2p, "direct"), (&names.broadcast, "topic")] {
        channel
            .inner
            .exchange_declare(
                ExchangeDeclareArguments::new(name, kind)
                    .durable(true)
                    .finish(),
            )
            .await
            .map_err(|e| channel.failure(e))?;
    }
    Ok(())
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
) -> Result<(), Failure> {
    let mut args = FieldTable::new();
    let key = |k: &str| k.try_into().expect("a short name");
    args.insert(key("x-expires"), amqprs::FieldValue::i(expires_ms));
    if let Some(max) = max_length {
        args.insert(key("x-max-length"), amqprs::FieldValue::i(max));
    }
    let mut declare = QueueDeclareArguments::new(name);
    if queue_type == QueueType::Quorum {
        args.insert(key("x-queue-type"), "quorum".into());
        // Quorum queues are always durable: replicated, on disk.
        declare.durable(true);
    }
    channel
        .inner
        .queue_declare(declare.arguments(args).finish())
        .await
        .map(drop)
        .map_err(|e| channel.failure(e))
}

/// At most this many events wait in a node's event queue.
pub(crate) const EVENT_QUEUE_MAX: u32 = 10_000;

/// Binds a queue to an exchange.
pub(crate) async fn bind(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
) -> Result<(), Failure> {
    channel
        .inner
        .queue_bind(QueueBindArguments::new(queue, exchange, key))
        .await
        .map_err(|e| channel.failure(e))
}

/// Whether declaring a queue failed because it exists with the other
/// queue type. RabbitMQ names the first argument that differs: the type,
/// or durability (quorum queues are durable, ours classic ones are not).
pub(crate) fn is_queue_type_mismatch(error: &Failure) -> bool {
    let text = &error.0;
    text.contains("PRECONDITION")
        && (text.contains("'x-queue-type'") || text.contains("inequivalent arg 'durable'"))
}
