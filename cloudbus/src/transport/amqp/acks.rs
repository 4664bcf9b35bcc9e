//! Batched acknowledgements for one consumer.
//!
//! Acking each delivery and waiting for it before taking the next one
//! serializes a consumer on the hand-off to the connection's writer (with
//! lapin, whose I/O thread this was, it halved the bus's throughput at 64
//! in flight), and one ack per delivery costs the broker more than one
//! per burst. Instead, a consumer records
//! what it has handed over, and one `basic.ack` with `multiple` covers every
//! delivery handed over since the last one. At most one ack is on its way
//! at a time, so under load each ack covers a burst, and at low load each
//! delivery is still acked as soon as it is handed over.
//!
//! This is exact because a consumer has its channel to itself and hands
//! deliveries over in order: `multiple` up to tag N acknowledges precisely
//! the deliveries this loop has finished with.
//!
//! A consumer without acks (the node queue, see `Session::consume`) uses
//! [`Acks::none`]: the same loop, nothing to send.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use amqprs::channel::{BasicAckArguments, Channel, ConsumerMessage};
use futures::task::noop_waker_ref;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::mpsc::error::TryRecvError;

/// What a consumer receives.
pub(crate) type Deliveries = UnboundedReceiver<ConsumerMessage>;

type Sending = Pin<Box<dyn Future<Output = Result<(), amqprs::error::Error>> + Send>>;

/// The acknowledgements of one consumer's channel.
pub(crate) struct Acks {
    channel: Channel,
    queue: Arc<str>,
    /// The newest delivery handed over and not yet covered by an ack.
    due: Option<u64>,
    /// How many deliveries that ack would cover, and how many force it.
    due_count: u32,
    force_at: u32,
    /// The ack on its way to the broker, if any.
    sending: Option<Sending>,
    /// `false` for a consumer that takes deliveries without acks.
    acking: bool,
}

impl Acks {
    /// Acks for a consumer with this prefetch.
    pub(crate) fn new(channel: Channel, queue: Arc<str>, prefetch: u16) -> Self {
        Self {
            channel,
            queue,
            due: None,
            due_count: 0,
            force_at: u32::from(prefetch / 2).max(1),
            sending: None,
            acking: true,
        }
    }

    /// For a consumer whose deliveries need no ack (`no_ack`).
    pub(crate) fn none(channel: Channel, queue: Arc<str>) -> Self {
        Self {
            acking: false,
            ..Self::new(channel, queue, 1)
        }
    }

    /// The consumer is done with this delivery: the next ack covers it.
    pub(crate) fn handed_over(&mut self, tag: u64) {
        if !self.acking {
            return;
        }
        self.due = Some(tag);
        self.due_count += 1;
    }

    /// The next delivery, sending acks for what was handed over meanwhile.
    /// `None` once the consumer is cancelled or its channel is gone.
    pub(crate) async fn next(&mut self, consumer: &mut Deliveries) -> Option<ConsumerMessage> {
        loop {
            if self.due_count >= self.force_at {
                self.start();
            }
            match consumer.try_recv() {
                Ok(delivery) => return Some(delivery),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            self.start();
            tokio::select! {
                biased;
                () = Self::sent(&mut self.sending, &self.queue) => {}
                delivery = consumer.recv() => return delivery,
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
        let Some(tag) = self.due.take() else {
            return;
        };
        self.due_count = 0;
        let channel = self.channel.clone();
        let mut ack: Sending =
            Box::pin(async move { channel.basic_ack(BasicAckArguments::new(tag, true)).await });
        // The first poll puts the ack on the wire; later ones only learn
        // that it was written.
        match ack
            .as_mut()
            .poll(&mut Context::from_waker(noop_waker_ref()))
        {
            Poll::Ready(Err(error)) => {
                tracing::warn!(queue = %self.queue, %error, "could not acknowledge messages")
            }
            Poll::Ready(Ok(())) => {}
            Poll::Pending => self.sending = Some(ack),
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
