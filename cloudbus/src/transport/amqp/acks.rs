//! Batched acknowledgements for one consumer.
//!
//! Acking each delivery and waiting for it before taking the next one
//! serializes a consumer on the round trip to lapin's I/O thread: at 64 in
//! flight that halved the bus's throughput. Instead, a consumer records
//! what it has handed over, and one `basic.ack` with `multiple` covers every
//! delivery handed over since the last one. At most one ack is on its way
//! at a time, so under load each ack covers a burst, and at low load each
//! delivery is still acked as soon as it is handed over.
//!
//! This is exact because a consumer has its channel to itself and hands
//! deliveries over in order: `multiple` up to tag N acknowledges precisely
//! the deliveries this loop has finished with.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::{Channel, Consumer};

type Sending = Pin<Box<dyn Future<Output = lapin::Result<()>> + Send>>;

/// The acknowledgements of one consumer's channel.
pub(crate) struct Acks {
    channel: Channel,
    queue: Arc<str>,
    /// The newest delivery handed over and not yet covered by an ack.
    due: Option<u64>,
    /// The ack on its way to the broker, if any.
    sending: Option<Sending>,
}

impl Acks {
    pub(crate) fn new(channel: Channel, queue: Arc<str>) -> Self {
        Self {
            channel,
            queue,
            due: None,
            sending: None,
        }
    }

    /// The consumer is done with this delivery: the next ack covers it.
    pub(crate) fn handed_over(&mut self, tag: u64) {
        self.due = Some(tag);
    }

    /// The next delivery, sending acks for what was handed over meanwhile.
    pub(crate) async fn next(
        &mut self,
        consumer: &mut Consumer,
    ) -> Option<lapin::Result<Delivery>> {
        loop {
            self.start();
            tokio::select! {
                // The ack first: its first poll is what puts it on the wire.
                biased;
                () = Self::sent(&mut self.sending, &self.queue) => {}
                delivery = consumer.next() => return delivery,
            }
        }
    }

    /// Acknowledges everything handed over, waiting until it is sent: a
    /// consumer that ends must not leave handled deliveries unacked, or the
    /// broker would deliver them again.
    pub(crate) async fn flush(&mut self) {
        loop {
            self.start();
            if self.sending.is_none() {
                return;
            }
            Self::sent(&mut self.sending, &self.queue).await;
        }
    }

    /// Puts an ack for everything due on its way, unless one already is.
    fn start(&mut self) {
        if self.sending.is_some() {
            return;
        }
        if let Some(tag) = self.due.take() {
            let channel = self.channel.clone();
            self.sending = Some(Box::pin(async move {
                channel
                    .basic_ack(tag, BasicAckOptions { multiple: true })
                    .await
            }));
        }
    }

    /// Resolves when the ack on its way is sent; never when there is none.
    async fn sent(sending: &mut Option<Sending>, queue: &str) {
        let Some(ack) = sending.as_mut() else {
            return std::future::pending().await;
        };
        if let Err(error) = ack.await {
            tracing::warn!(queue, %error, "could not acknowledge messages");
        }
        *sending = None;
    }
}
