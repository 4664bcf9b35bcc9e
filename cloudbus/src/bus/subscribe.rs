//! Event subscriptions: every subscriber whose pattern matches gets its own
//! copy of each event.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use arc_swap::ArcSwap;
use futures::Stream;

use super::event_queue::{Offered, Overflow, QueueReceiver, QueueSender, event_queue};

use super::BusCounters;
use crate::address::Pattern;
use crate::{Body, Bus, Envelope, ErrorCode, Message};

/// One event as a subscriber receives it.
pub(crate) struct EventDelivery {
    pub(crate) envelope: Arc<Envelope>,
    pub(crate) body: Body,
}

pub(crate) struct Subscriber {
    info: Arc<SubscriberInfo>,
    tx: QueueSender,
}

/// What a subscription keeps of its entry: not the sender, so that the
/// subscription ends when the bus drops the entry at shutdown.
pub(crate) struct SubscriberInfo {
    pub(crate) id: u64,
    pub(crate) pattern: Pattern,
    lagged: AtomicU64,
}

/// Subscribers by exact type (one hash lookup per event) and by wildcard
/// pattern. Readers see an immutable snapshot; writers copy it.
#[derive(Default, Clone)]
struct Table {
    exact: HashMap<String, Vec<Arc<Subscriber>>>,
    patterns: Vec<Arc<Subscriber>>,
}

#[derive(Default)]
pub(crate) struct Subscribers {
    table: ArcSwap<Table>,
    write: Mutex<()>,
    next_id: AtomicU64,
}

impl Subscribers {
    pub(crate) fn add(
        &self,
        pattern: Pattern,
        capacity: usize,
        overflow: Overflow,
    ) -> (Arc<SubscriberInfo>, QueueReceiver) {
        let (tx, rx) = event_queue(capacity, overflow);
        (self.add_sender(pattern, tx), rx)
    }

    /// Adds a subscriber whose events go to `tx`, which several subscribers
    /// may share so that their events arrive in one stream, in order.
    pub(crate) fn add_sender(&self, pattern: Pattern, tx: QueueSender) -> Arc<SubscriberInfo> {
        let info = Arc::new(SubscriberInfo {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            pattern,
            lagged: AtomicU64::new(0),
        });
        let sub = Arc::new(Subscriber {
            info: info.clone(),
            tx,
        });
        let _write = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut table = Table::clone(&self.table.load());
        if info.pattern.is_exact() {
            table
                .exact
                .entry(info.pattern.as_str().to_string())
                .or_default()
                .push(sub.clone());
        } else {
            table.patterns.push(sub.clone());
        }
        self.table.store(Arc::new(table));
        info
    }

    /// Removes a subscriber; returns how many subscribers still use its pattern.
    pub(crate) fn remove(&self, id: u64, pattern: &Pattern) -> usize {
        let _write = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let mut table = Table::clone(&self.table.load());
        let list = if pattern.is_exact() {
            table.exact.entry(pattern.as_str().to_string()).or_default()
        } else {
            &mut table.patterns
        };
        list.retain(|s| s.info.id != id);
        let left = list.iter().filter(|s| &s.info.pattern == pattern).count();
        table.exact.retain(|_, subs| !subs.is_empty());
        self.table.store(Arc::new(table));
        left
    }

    /// Drops every subscriber's sender, so their receivers end.
    pub(crate) fn clear(&self) {
        let _write = self.write.lock().unwrap_or_else(|e| e.into_inner());
        self.table.store(Arc::new(Table::default()));
    }

    /// Gives every matching subscriber its copy, each as its overflow
    /// policy says. Never waits: the copies for backpressured subscribers
    /// that are full come back, for the caller to [`deliver_blocked`].
    pub(crate) fn dispatch(
        &self,
        envelope: &Arc<Envelope>,
        body: &Body,
        stats: &BusCounters,
    ) -> Blocked {
        let table = self.table.load();
        let exact = table.exact.get(&*envelope.type_name).into_iter().flatten();
        let wild = table
            .patterns
            .iter()
            .filter(|s| s.info.pattern.matches(&envelope.type_name));
        let mut blocked = Vec::new();
        for sub in exact.chain(wild) {
            let Some(body) = body.share() else {
                continue;
            };
            let delivery = EventDelivery {
                envelope: envelope.clone(),
                body,
            };
            match sub.tx.offer(delivery) {
                Offered::Queued => {}
                Offered::Dropped => {
                    sub.info.lagged.fetch_add(1, Ordering::Relaxed);
                    stats.events_dropped.inc();
                    tracing::warn!(pattern = %sub.info.pattern, type_name = %envelope.type_name, "subscriber is not keeping up; an event was dropped for it");
                }
                Offered::Full(delivery) => blocked.push((sub.tx.clone(), delivery)),
            }
        }
        blocked
    }
}

/// Copies of an event for backpressured subscribers that were full.
pub(crate) type Blocked = Vec<(QueueSender, EventDelivery)>;

/// Waits until every blocked copy is queued.
pub(crate) async fn deliver_blocked(blocked: Blocked) {
    for (tx, delivery) in blocked {
        tx.push(delivery).await;
    }
}

/// Unsubscribes when the subscription is dropped.
struct Guard {
    bus: Bus,
    sub: Arc<SubscriberInfo>,
    done: bool,
}

impl Guard {
    fn new(bus: Bus, sub: Arc<SubscriberInfo>) -> Self {
        Self {
            bus,
            sub,
            done: false,
        }
    }

    async fn unsubscribe(mut self) {
        self.done = true;
        self.bus.unsubscribe(self.sub.id, &self.sub.pattern).await;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            self.bus.unsubscribe_later(self.sub.id, &self.sub.pattern);
        }
    }
}

/// An event received through a [`RawSubscription`]: envelope plus body,
/// decoded only if and as the subscriber wants.
#[derive(Debug)]
pub struct RawEvent {
    /// The event's envelope (type, source node, API id, headers…).
    pub envelope: Arc<Envelope>,
    /// The event's body.
    pub body: Body,
}

impl RawEvent {
    /// Whether this is an event of type `E`. A pattern subscription brings
    /// every type that matches, so check before [`decode`](Self::decode).
    pub fn is<E: Message>(&self) -> bool {
        self.envelope.type_name == E::TYPE
    }

    /// Decodes the body as event type `E`; an event of another type is
    /// `cloudbus.MALFORMED` (see [`is`](Self::is)).
    pub fn decode<E: Message>(self) -> Result<E, ErrorCode> {
        self.body.decode()
    }
}

/// A typed event with the envelope it came in.
#[derive(Debug, Clone)]
pub struct Received<E> {
    /// The envelope (type, source node, API id, headers…).
    pub envelope: Arc<Envelope>,
    /// The event.
    pub event: E,
}

/// Events of one type `E`, in the order they were published by each
/// publisher. Dropping it unsubscribes. Also a [`Stream`].
pub struct Subscription<E> {
    rx: QueueReceiver,
    guard: Guard,
    _event: PhantomData<fn() -> E>,
}

impl<E: Message> Subscription<E> {
    pub(crate) fn new(bus: Bus, sub: Arc<SubscriberInfo>, rx: QueueReceiver) -> Self {
        Self {
            rx,
            guard: Guard::new(bus, sub),
            _event: PhantomData,
        }
    }

    /// The next event; `None` once the bus has shut down.
    pub async fn recv(&mut self) -> Option<E> {
        self.recv_with_envelope().await.map(|r| r.event)
    }

    /// The next event with its envelope.
    pub async fn recv_with_envelope(&mut self) -> Option<Received<E>> {
        std::future::poll_fn(|cx| self.poll_received(cx)).await
    }

    /// How many events this subscriber missed because it did not keep up.
    pub fn lagged(&self) -> u64 {
        self.guard.sub.lagged.load(Ordering::Relaxed)
    }

    /// Unsubscribes, and returns once this node no longer receives the
    /// events for this subscription. Dropping it does the same in the
    /// background.
    pub async fn unsubscribe(self) {
        self.guard.unsubscribe().await
    }

    fn poll_received(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<Received<E>>> {
        loop {
            let Some(d) = std::task::ready!(self.rx.poll_recv(cx)) else {
                return Poll::Ready(None);
            };
            match d.body.decode::<E>() {
                Ok(event) => {
                    return Poll::Ready(Some(Received {
                        envelope: d.envelope,
                        event,
                    }));
                }
                Err(error) => {
                    self.guard.bus.counters().malformed.inc();
                    tracing::warn!(type_name = %d.envelope.type_name, %error, "skipping undecodable event");
                }
            }
        }
    }
}

impl<E: Message> Stream for Subscription<E> {
    type Item = Received<E>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_received(cx)
    }
}

/// Events matching a pattern, of any type. Dropping it unsubscribes.
pub struct RawSubscription {
    rx: QueueReceiver,
    guard: Guard,
}

impl RawSubscription {
    pub(crate) fn new(bus: Bus, sub: Arc<SubscriberInfo>, rx: QueueReceiver) -> Self {
        Self {
            rx,
            guard: Guard::new(bus, sub),
        }
    }

    /// The pattern subscribed to.
    pub fn pattern(&self) -> &Pattern {
        &self.guard.sub.pattern
    }

    /// The next event; `None` once the bus has shut down.
    pub async fn recv(&mut self) -> Option<RawEvent> {
        self.rx.recv().await.map(|d| RawEvent {
            envelope: d.envelope,
            body: d.body,
        })
    }

    /// How many events this subscriber missed because it did not keep up.
    pub fn lagged(&self) -> u64 {
        self.guard.sub.lagged.load(Ordering::Relaxed)
    }

    /// Unsubscribes, and returns once this node no longer receives the
    /// events for this subscription. Dropping it does the same in the
    /// background.
    pub async fn unsubscribe(self) {
        self.guard.unsubscribe().await
    }
}

impl Stream for RawSubscription {
    type Item = RawEvent;
    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<RawEvent>> {
        self.get_mut().rx.poll_recv(cx).map(|d| {
            d.map(|d| RawEvent {
                envelope: d.envelope,
                body: d.body,
            })
        })
    }
}
