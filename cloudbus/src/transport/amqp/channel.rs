//! An AMQP channel with what `amqprs` leaves to its user: the reason the
//! broker gave for closing it, and publisher confirms matched to their
//! publishes.
//!
//! `amqprs` reports a channel's close, a publish's ack or nack, and a
//! returned message only through a callback, and its errors for a request
//! the broker refused do not say why. [`Channel`] keeps the broker's words
//! (so that, say, a queue declared with the other queue type is recognised)
//! and, in confirm mode, gives each publish its own outcome: the broker
//! numbers a channel's publishes 1, 2, … in the order they arrive, so a
//! publish takes the next number under a lock held until it is queued for
//! the wire, and the broker's `basic.ack`/`basic.nack` (possibly `multiple`)
//! resolves every publish up to its number. A publish returned as
//! unroutable (`basic.return` comes before its ack) is recognised by its
//! `message_id`. A channel in use raises its session's [`Alarm`] when the
//! broker closes it or cancels its consumer, so that the session is built
//! again instead of going on half dead.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{BasicPublishArguments, ConfirmSelectArguments};
use amqprs::connection::Connection;
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use async_trait::async_trait;
use tokio::sync::{Notify, oneshot};

use super::held::Held;
use crate::MessageId;

/// What went wrong on the broker link, in words fit for an error.
#[derive(Debug)]
pub(crate) struct Failure(pub(crate) String);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<amqprs::error::Error> for Failure {
    fn from(error: amqprs::error::Error) -> Self {
        Failure(error.to_string())
    }
}

/// The broker's answer to one confirmed publish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Confirm {
    /// Taken by at least one queue.
    Ack,
    /// No queue was bound to its routing key (`mandatory`).
    Returned,
    /// The broker could not take it.
    Nack,
}

/// Raised when the broker takes part of a session away while its
/// connection stays up: it closed one of the session's channels (a publish
/// to an exchange an operator deleted, say) or cancelled one of its
/// consumers (its queue was deleted, or its cluster node went down). Such
/// a session would go on without that part, silently; the supervisor
/// rebuilds it instead, as after a lost connection.
#[derive(Default)]
pub(crate) struct Alarm {
    /// The first reason given.
    reason: Mutex<Option<String>>,
    raised: Notify,
}

impl Alarm {
    fn raise(&self, reason: String) {
        lock(&self.reason).get_or_insert(reason);
        self.raised.notify_one();
    }

    /// Resolves once the alarm is raised, with the first reason.
    pub(crate) async fn raised(&self) -> String {
        loop {
            if let Some(reason) = lock(&self.reason).clone() {
                return reason;
            }
            self.raised.notified().await;
        }
    }
}

/// A channel, and what its callback learned.
#[derive(Clone)]
pub(crate) struct Channel {
    pub(crate) inner: Held<amqprs::channel::Channel>,
    watch: Arc<Watch>,
}

struct Watch {
    /// Why the broker closed the channel, once it has.
    closed: Mutex<Option<String>>,
    /// Publishes waiting for their confirm, in delivery-tag order; `None`
    /// outside confirm mode.
    confirms: Option<Confirms>,
    /// Raised when the broker closes the channel or cancels its consumer;
    /// set once the channel is set up and in use (a failure while setting
    /// it up is that step's own error).
    alarm: OnceLock<Arc<Alarm>>,
}

struct Confirms {
    /// Held from taking a delivery tag until the publish is queued, so the
    /// tags match the order the broker sees.
    order: tokio::sync::Mutex<()>,
    state: Mutex<Pending>,
}

struct Pending {
    next_tag: u64,
    waiting: VecDeque<(u64, MessageId, oneshot::Sender<Confirm>)>,
    /// Returned, their ack still to come.
    returned: Vec<MessageId>,
}

impl Channel {
    /// Opens a channel; with `confirm`, in publisher-confirm mode.
    pub(crate) async fn open(connection: &Connection, confirm: bool) -> Result<Self, Failure> {
        let inner = connection.open_channel(None).await?;
        let watch = Arc::new(Watch {
            closed: Mutex::new(None),
            alarm: OnceLock::new(),
            confirms: confirm.then(|| Confirms {
                order: tokio::sync::Mutex::new(()),
                state: Mutex::new(Pending {
                    next_tag: 1,
                    waiting: VecDeque::new(),
                    returned: Vec::new(),
                }),
            }),
        });
        inner
            .register_callback(Callback {
                watch: watch.clone(),
            })
            .await?;
        if confirm {
            inner
                .confirm_select(ConfirmSelectArguments::default())
                .await?;
        }
        Ok(Self {
            inner: Held::new(inner),
            watch,
        })
    }

    /// From now on, the broker closing this channel or cancelling its
    /// consumer raises `alarm`.
    pub(crate) fn in_use(&self, alarm: &Arc<Alarm>) {
        let _ = self.watch.alarm.set(alarm.clone());
    }

    /// The error of a request on this channel, with the broker's reason
    /// when it closed the channel over it.
    pub(crate) fn failure(&self, error: amqprs::error::Error) -> Failure {
        match lock(&self.watch.closed).as_deref() {
            Some(reason) => Failure(format!("{error}: the broker closed the channel: {reason}")),
            None => Failure::from(error),
        }
    }

    /// Publishes without waiting for the broker.
    pub(crate) async fn publish(
        &self,
        props: BasicProperties,
        body: Vec<u8>,
        args: BasicPublishArguments,
    ) -> Result<(), Failure> {
        self.inner
            .basic_publish(props, body, args)
            .await
            .map_err(|e| self.failure(e))
    }

    /// Publishes on a confirm-mode channel and waits for the broker's
    /// answer. `Err` when the channel or connection went down first: the
    /// broker may or may not have the message.
    pub(crate) async fn publish_confirmed(
        &self,
        id: MessageId,
        props: BasicProperties,
        body: Vec<u8>,
        args: BasicPublishArguments,
    ) -> Result<Confirm, Failure> {
        let Some(confirms) = &self.watch.confirms else {
            self.publish(props, body, args).await?;
            return Ok(Confirm::Ack);
        };
        let (tx, rx) = oneshot::channel();
        {
            let _order = confirms.order.lock().await;
            let tag = {
                let mut pending = lock(&confirms.state);
                let tag = pending.next_tag;
                pending.next_tag += 1;
                pending.waiting.push_back((tag, id, tx));
                tag
            };
            if let Err(error) = self.inner.basic_publish(props, body, args).await {
                // Not queued, so the broker never numbers it.
                let mut pending = lock(&confirms.state);
                pending.next_tag -= 1;
                pending.waiting.retain(|(t, ..)| *t != tag);
                return Err(self.failure(error));
            }
        }
        rx.await.map_err(|_| {
            let reason = lock(&self.watch.closed).clone();
            Failure(reason.map_or_else(
                || "the connection was lost before the broker confirmed".to_string(),
                |reason| format!("the broker closed the channel: {reason}"),
            ))
        })
    }

    /// Fails every publish still waiting for its confirm (the connection
    /// is gone; their callers learn that the outcome is unknown).
    pub(crate) fn abandon(&self) {
        self.watch.fail_waiting();
    }
}

impl Watch {
    fn raise(&self, reason: impl FnOnce() -> String) {
        if let Some(alarm) = self.alarm.get() {
            alarm.raise(reason());
        }
    }

    /// Drops every waiting publish's sender: its caller sees no answer.
    fn fail_waiting(&self) {
        if let Some(confirms) = &self.confirms {
            lock(&confirms.state).waiting.clear();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

struct Callback {
    watch: Arc<Watch>,
}

impl Callback {
    fn resolve(&self, tag: u64, multiple: bool, outcome: Confirm) {
        let Some(confirms) = &self.watch.confirms else {
            return;
        };
        let mut pending = lock(&confirms.state);
        let Pending {
            waiting, returned, ..
        } = &mut *pending;
        let mut answer = |id: MessageId, tx: oneshot::Sender<Confirm>| {
            let outcome = match returned.iter().position(|r| *r == id) {
                Some(at) if outcome == Confirm::Ack => {
                    returned.swap_remove(at);
                    Confirm::Returned
                }
                _ => outcome,
            };
            let _ = tx.send(outcome);
        };
        if multiple {
            while waiting.front().is_some_and(|(t, ..)| *t <= tag) {
                let (_, id, tx) = waiting.pop_front().expect("checked");
                answer(id, tx);
            }
        } else if let Some(at) = waiting.iter().position(|(t, ..)| *t == tag) {
            let (_, id, tx) = waiting.remove(at).expect("found");
            answer(id, tx);
        }
    }
}

#[async_trait]
impl ChannelCallback for Callback {
    async fn close(
        &mut self,
        _channel: &amqprs::channel::Channel,
        close: CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        tracing::debug!(%close, "the broker closed a channel");
        *lock(&self.watch.closed) = Some(close.to_string());
        self.watch.fail_waiting();
        self.watch
            .raise(|| format!("the broker closed a channel: {close}"));
        Ok(())
    }

    async fn cancel(
        &mut self,
        _channel: &amqprs::channel::Channel,
        cancel: Cancel,
    ) -> Result<(), amqprs::error::Error> {
        tracing::debug!(consumer = %cancel.consumer_tag(), "the broker cancelled a consumer");
        self.watch.raise(|| {
            format!(
                "the broker cancelled consumer `{}` (its queue was deleted or is unavailable)",
                cancel.consumer_tag()
            )
        });
        Ok(())
    }

    async fn flow(
        &mut self,
        _channel: &amqprs::channel::Channel,
        active: bool,
    ) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }

    async fn publish_ack(&mut self, _channel: &amqprs::channel::Channel, ack: Ack) {
        self.resolve(ack.delivery_tag(), ack.mutiple(), Confirm::Ack);
    }

    async fn publish_nack(&mut self, _channel: &amqprs::channel::Channel, nack: Nack) {
        self.resolve(nack.delivery_tag(), nack.multiple(), Confirm::Nack);
    }

    async fn publish_return(
        &mut self,
        _channel: &amqprs::channel::Channel,
        ret: Return,
        props: BasicProperties,
        _content: Vec<u8>,
    ) {
        let Some(confirms) = &self.watch.confirms else {
            return;
        };
        match props
            .message_id()
            .and_then(|id| id.parse::<MessageId>().ok())
        {
            Some(id) => lock(&confirms.state).returned.push(id),
            None => tracing::debug!(reply = %ret.reply_text(), "a returned message without our id"),
        }
    }
}
