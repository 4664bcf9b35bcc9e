//! The consumer loops: one per service queue and one for the event queue.
//! Each hands messages to the bus and acknowledges them once the bus has
//! accepted them, so the broker's prefetch bounds what a node holds.

use std::sync::Arc;

use futures::StreamExt;
use lapin::Consumer;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;

use super::codec::{self, Rejected};
use crate::transport::Inbound;

/// Feeds a service queue to the bus until the consumer is cancelled or its
/// channel closes.
pub(crate) async fn service_loop(
    mut consumer: Consumer,
    service: Arc<str>,
    inbound: Arc<dyn Inbound>,
    max_body: usize,
) {
    while let Some(delivery) = consumer.next().await {
        let Some(delivery) = usable(delivery, &service) else {
            break;
        };
        let (props, data, acker) = split(delivery);
        match codec::decode(&props, data, max_body) {
            Ok(message) => inbound.service_message(service.clone(), message).await,
            Err(rejected) => {
                tracing::warn!(%service, error = %rejected.error, "malformed message");
                let Rejected { error, reply } = *rejected;
                inbound.malformed(reply, error).await;
            }
        }
        ack(&acker, &service).await;
    }
    tracing::debug!(%service, "consumer ended");
}

/// Feeds the node's event queue to the bus's subscribers.
pub(crate) async fn event_loop(mut consumer: Consumer, inbound: Arc<dyn Inbound>, max_body: usize) {
    while let Some(delivery) = consumer.next().await {
        let Some(delivery) = usable(delivery, "events") else {
            break;
        };
        let (props, data, acker) = split(delivery);
        match codec::decode(&props, data, max_body) {
            Ok(message) => inbound.event(message),
            Err(rejected) => {
                tracing::warn!(error = %rejected.error, "malformed event");
                // Events are never answered.
                inbound.malformed(None, rejected.error).await;
            }
        }
        ack(&acker, "events").await;
    }
    tracing::debug!("event consumer ended");
}

fn usable(delivery: lapin::Result<Delivery>, queue: &str) -> Option<Delivery> {
    match delivery {
        Ok(delivery) => Some(delivery),
        Err(error) => {
            tracing::warn!(queue, %error, "consumer stopped");
            None
        }
    }
}

fn split(delivery: Delivery) -> (lapin::BasicProperties, Vec<u8>, lapin::Acker) {
    (delivery.properties, delivery.data, delivery.acker)
}

async fn ack(acker: &lapin::Acker, queue: &str) {
    if let Err(error) = acker.ack(BasicAckOptions::default()).await {
        tracing::warn!(queue, %error, "could not acknowledge a message");
    }
}
