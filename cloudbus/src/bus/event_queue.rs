//! A subscriber's buffer of events, with its policy for when it is full.
//! Several subscriber entries may feed one buffer (a service's event types
//! arrive in one stream, in order); it ends once all of them are gone and
//! what it holds has been read.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

use tokio::sync::{Notify, mpsc};

use super::subscribe::EventDelivery;

/// What a subscription does with a new event when its buffer is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overflow {
    /// Drops the new event (counted in the subscription's `lagged` and the
    /// node's `events_dropped`). The default: one slow subscriber never
    /// slows the node's other subscribers, services or membership.
    #[default]
    DropNewest,
    /// Drops the oldest waiting event to make room (counted the same way):
    /// for subscribers that care about the latest state, not every step.
    DropOldest,
    /// Waits for room: while this subscriber is full, the node takes no
    /// more events — from its event queue over a broker, which then holds
    /// them (up to the queue's cap), or from local publishers, which wait.
    /// Nothing is lost, but every subscriber of the node waits for the
    /// slowest backpressured one.
    Backpressure,
}

struct Shared {
    items: Mutex<VecDeque<EventDelivery>>,
    capacity: usize,
    overflow: Overflow,
    /// Room was made (an event was read, or the reader went away).
    space: Notify,
    reader_gone: AtomicBool,
}

/// What [`QueueSender::offer`] did with an event.
pub(crate) enum Offered {
    Queued,
    /// An event was dropped by the policy (the new one or the oldest).
    Dropped,
    /// Full, and the policy is to wait: here is the event back.
    Full(EventDelivery),
}

/// The writing side; cloned for every subscriber entry of one buffer.
#[derive(Clone)]
pub(crate) struct QueueSender {
    shared: Arc<Shared>,
    /// Wakes the reader; the reader's end closes when every sender is gone.
    wake: mpsc::Sender<()>,
}

/// The reading side.
pub(crate) struct QueueReceiver {
    shared: Arc<Shared>,
    wake: mpsc::Receiver<()>,
}

/// A buffer of `capacity` events with `overflow` as its policy.
pub(crate) fn event_queue(capacity: usize, overflow: Overflow) -> (QueueSender, QueueReceiver) {
    let shared = Arc::new(Shared {
        items: Mutex::new(VecDeque::new()),
        capacity: capacity.max(1),
        overflow,
        space: Notify::new(),
        reader_gone: AtomicBool::new(false),
    });
    let (tx, rx) = mpsc::channel(1);
    (
        QueueSender {
            shared: shared.clone(),
            wake: tx,
        },
        QueueReceiver { shared, wake: rx },
    )
}

impl QueueSender {
    /// Queues `event` if there is room, or applies the policy. Never waits.
    pub(crate) fn offer(&self, event: EventDelivery) -> Offered {
        let shared = &self.shared;
        if shared.reader_gone.load(Ordering::Acquire) {
            return Offered::Queued;
        }
        let mut items = shared.items.lock().unwrap_or_else(|e| e.into_inner());
        let offered = if items.len() < shared.capacity {
            items.push_back(event);
            Offered::Queued
        } else {
            match shared.overflow {
                Overflow::DropNewest => Offered::Dropped,
                Overflow::DropOldest => {
                    items.pop_front();
                    items.push_back(event);
                    Offered::Dropped
                }
                Overflow::Backpressure => return Offered::Full(event),
            }
        };
        drop(items);
        // A full wake channel already holds a wake-up the reader will see.
        let _ = self.wake.try_send(());
        offered
    }

    /// Queues `event`, waiting for room however long it takes (or until
    /// the reader is gone).
    pub(crate) async fn push(&self, mut event: EventDelivery) {
        loop {
            let space = self.shared.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            match self.offer(event) {
                Offered::Full(back) => event = back,
                Offered::Queued | Offered::Dropped => return,
            }
            space.await;
        }
    }
}

impl QueueReceiver {
    /// The next event; `None` once every sender is gone and the buffer is
    /// empty.
    pub(crate) fn poll_recv(&mut self, cx: &mut TaskContext<'_>) -> Poll<Option<EventDelivery>> {
        loop {
            if let Some(event) = self.pop() {
                return Poll::Ready(Some(event));
            }
            if std::task::ready!(self.wake.poll_recv(cx)).is_none() {
                // Senders gone: what they queued last is still read.
                return Poll::Ready(self.pop());
            }
        }
    }

    /// The next event, waiting for one.
    pub(crate) async fn recv(&mut self) -> Option<EventDelivery> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn pop(&self) -> Option<EventDelivery> {
        let event = self
            .shared
            .items
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front();
        if event.is_some() {
            self.shared.space.notify_one();
        }
        event
    }
}

impl Drop for QueueReceiver {
    fn drop(&mut self) {
        // A sender waiting for room would wait forever.
        self.shared.reader_gone.store(true, Ordering::Release);
        self.shared.space.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Body, Envelope, Kind, NodeId};
    use futures::FutureExt;

    fn event(n: usize) -> EventDelivery {
        let mut envelope = Envelope::new(Kind::Event, "t.Tick", NodeId::random());
        envelope.headers.insert("n", n.to_string());
        EventDelivery {
            envelope: Arc::new(envelope),
            body: Body::Json(bytes::Bytes::from_static(b"{}")),
        }
    }

    fn n(event: Option<EventDelivery>) -> usize {
        event
            .expect("an event")
            .envelope
            .headers
            .get("n")
            .unwrap()
            .parse()
            .unwrap()
    }

    #[tokio::test]
    async fn drop_newest_keeps_the_first_events() {
        let (tx, mut rx) = event_queue(2, Overflow::DropNewest);
        assert!(matches!(tx.offer(event(1)), Offered::Queued));
        assert!(matches!(tx.offer(event(2)), Offered::Queued));
        assert!(matches!(tx.offer(event(3)), Offered::Dropped));
        assert_eq!((n(rx.recv().await), n(rx.recv().await)), (1, 2));
        drop(tx);
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn drop_oldest_keeps_the_latest_events() {
        let (tx, mut rx) = event_queue(2, Overflow::DropOldest);
        for i in 1..=5 {
            tx.offer(event(i));
        }
        assert_eq!((n(rx.recv().await), n(rx.recv().await)), (4, 5));
    }

    #[tokio::test]
    async fn backpressure_waits_for_room_and_loses_nothing() {
        let (tx, mut rx) = event_queue(1, Overflow::Backpressure);
        tx.push(event(1)).await;
        let mut second = Box::pin(tx.push(event(2)));
        assert!((&mut second).now_or_never().is_none(), "full: it waits");
        assert_eq!(n(rx.recv().await), 1);
        second.await;
        assert_eq!(n(rx.recv().await), 2);
        // A reader that goes away releases a waiting sender.
        tx.push(event(3)).await;
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.push(event(4)).await }
        });
        drop(rx);
        waiting.await.unwrap();
    }

    #[tokio::test]
    async fn several_senders_share_one_ordered_stream_that_ends_with_the_last() {
        let (a, mut rx) = event_queue(8, Overflow::DropNewest);
        let b = a.clone();
        a.offer(event(1));
        b.offer(event(2));
        a.offer(event(3));
        drop(a);
        assert_eq!(n(rx.recv().await), 1);
        drop(b);
        assert_eq!((n(rx.recv().await), n(rx.recv().await)), (2, 3));
        assert!(rx.recv().await.is_none());
    }
}
