//! The consumer loops: one per service queue and one for the event queue.
//! Each hands messages to the bus and acknowledges them once the bus has
//! accepted them, so the broker's prefetch bounds what a node holds.

use std::sync::Arc;

use amqprs::channel::{Channel, ConsumerMessage};

use super::acks::{Acks, Deliveries};
use super::codec::{self, Rejected};
use crate::transport::Inbound;

/// Feeds a service queue to the bus until the consumer is cancelled or its
/// channel closes; acks with this `prefetch`, or none when consumed without.
pub(crate) async fn service_loop(
    mut consumer: Deliveries,
    channel: Channel,
    prefetch: Option<u16>,
    service: Arc<str>,
    inbound: Arc<dyn Inbound>,
    max_body: usize,
) {
    let mut acks = match prefetch {
        Some(prefetch) => Acks::new(channel, service.clone(), prefetch),
        None => Acks::none(channel, service.clone()),
    };
    while let Some(delivery) = acks.next(&mut consumer).await {
        let Some((tag, props, data)) = usable(delivery) else {
            continue;
        };
        match codec::decode(&props, data, max_body) {
            Ok(message) => inbound.service_message(service.clone(), message).await,
            Err(rejected) => {
                tracing::warn!(%service, error = %rejected.error, "malformed message");
                let Rejected { error, reply } = *rejected;
                inbound.malformed(reply, error).await;
            }
        }
        acks.handed_over(tag);
    }
    acks.flush().await;
    tracing::debug!(%service, "consumer ended");
}

/// Feeds the node's event queue to the bus's subscribers.
pub(crate) async fn event_loop(
    mut consumer: Deliveries,
    channel: Channel,
    prefetch: u16,
    inbound: Arc<dyn Inbound>,
    max_body: usize,
) {
    let mut acks = Acks::new(channel, Arc::from("events"), prefetch);
    while let Some(delivery) = acks.next(&mut consumer).await {
        let Some((tag, props, data)) = usable(delivery) else {
            continue;
        };
        match codec::decode(&props, data, max_body) {
            Ok(message) => inbound.event(message).await,
            Err(rejected) => {
                tracing::warn!(error = %rejected.error, "malformed event");
                // Events are never answered.
                inbound.malformed(None, rejected.error).await;
            }
        }
        acks.handed_over(tag);
    }
    acks.flush().await;
    tracing::debug!("event consumer ended");
}

/// A delivery's tag, properties and body; `amqprs` always gives all three
/// for a delivery.
fn usable(message: ConsumerMessage) -> Option<(u64, amqprs::BasicProperties, Vec<u8>)> {
    let ConsumerMessage {
        deliver,
        basic_properties,
        content,
        ..
    } = message;
    Some((deliver?.delivery_tag(), basic_properties?, content?))
}
