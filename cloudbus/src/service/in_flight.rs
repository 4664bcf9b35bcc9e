//! Counts the messages a service has accepted and not finished, so shutdown
//! and unregister can wait for exactly those, without ever blocking new
//! arrivals the way waiting on the permits would (a handler calling its own
//! service would deadlock).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct InFlight {
    count: AtomicUsize,
    idle: Notify,
    /// Whether anyone ever waited for idle (a drain): until then, the last
    /// message out has nobody to wake, and skips the `Notify`'s lock.
    watched: AtomicBool,
}

/// One accepted message; finishing it (dropping the guard) may wake a waiter.
pub(crate) struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    pub(crate) fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    /// Waits until no message is in flight.
    pub(crate) async fn idle(&self) {
        // Set before the count is read: a guard dropped after that read
        // sees it, so the last one out always wakes this waiter.
        self.watched.store(true, Ordering::SeqCst);
        loop {
            let notified = self.idle.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 && self.0.watched.load(Ordering::SeqCst)
        {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_returns_once_the_last_guard_is_dropped() {
        let in_flight = Arc::new(InFlight::default());
        in_flight.idle().await; // nothing in flight: at once
        let first = in_flight.enter();
        let second = in_flight.enter();
        let waiter = tokio::spawn({
            let in_flight = in_flight.clone();
            async move { in_flight.idle().await }
        });
        drop(first);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(second);
        waiter.await.unwrap();
    }
}
