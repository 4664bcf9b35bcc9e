//! A service's concurrency limit (and its admission limit for keyed
//! messages): permits taken and given back with one atomic operation each
//! while there is room. Tokio's semaphore, whose release takes a lock
//! every time, only queues those that must wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Semaphore;

/// A fixed number of permits.
///
/// Every permit is at any moment held, `free`, or in `queue` (on its way to
/// a waiter, or left there by one that gave up, for the next to take). A
/// waiter counts itself in `waiting` before it looks at `free` a last
/// time, and a release looks at `waiting` after it adds to `free`: one of
/// the two always sees the other, so no waiter sleeps while a permit is
/// free.
#[derive(Debug)]
pub(crate) struct Permits {
    free: AtomicUsize,
    waiting: AtomicUsize,
    queue: Semaphore,
}

/// One permit, given back when dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    permits: Arc<Permits>,
}

/// No permit is free now.
#[derive(Debug)]
pub(crate) struct NoPermit;

impl Permits {
    pub(crate) fn new(permits: usize) -> Self {
        Self {
            free: AtomicUsize::new(permits),
            waiting: AtomicUsize::new(0),
            queue: Semaphore::new(0),
        }
    }

    /// Permits nobody holds.
    #[cfg(test)]
    pub(crate) fn available_permits(&self) -> usize {
        self.free.load(Ordering::SeqCst) + self.queue.available_permits()
    }

    /// A permit if one is free now. (One left in the queue by a waiter
    /// that gave up is found by the next that waits.)
    pub(crate) fn try_acquire_owned(self: Arc<Self>) -> Result<Permit, NoPermit> {
        if self.take_free() {
            Ok(Permit { permits: self })
        } else {
            Err(NoPermit)
        }
    }

    /// A permit, once one is free; waiters are served in turn.
    pub(crate) async fn acquire_owned(self: Arc<Self>) -> Permit {
        if self.take_free() {
            return Permit { permits: self };
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let waiting = Waiting(&self);
        // The queue is never closed.
        if !self.take_free()
            && let Ok(permit) = self.queue.acquire().await
        {
            permit.forget();
        }
        drop(waiting);
        Permit { permits: self }
    }

    fn take_free(&self) -> bool {
        let mut free = self.free.load(Ordering::Relaxed);
        loop {
            if free == 0 {
                return false;
            }
            match self.free.compare_exchange_weak(
                free,
                free - 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => free = now,
            }
        }
    }

    fn release(&self) {
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.queue.add_permits(1);
            return;
        }
        self.free.fetch_add(1, Ordering::SeqCst);
        // A waiter that counted itself after the look above may have
        // looked at `free` before the addition: hand it a permit.
        if self.waiting.load(Ordering::SeqCst) > 0 && self.take_free() {
            self.queue.add_permits(1);
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.permits.release();
    }
}

/// A waiter's place in `waiting`, given up however the wait ends. One that
/// gives up after a permit was queued for it leaves that permit in the
/// queue: it goes back to whoever waits, or to `free`.
struct Waiting<'a>(&'a Permits);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        if let Ok(left) = self.0.queue.try_acquire() {
            left.forget();
            self.0.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiter_gets_the_next_permit_given_back() {
        let permits = Arc::new(Permits::new(1));
        let held = permits.clone().try_acquire_owned().unwrap();
        assert!(permits.clone().try_acquire_owned().is_err());
        let waiter = tokio::spawn(permits.clone().acquire_owned());
        while permits.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        drop(held);
        let got = waiter.await.unwrap();
        assert_eq!(permits.available_permits(), 0);
        drop(got);
        assert_eq!(permits.available_permits(), 1);
    }

    /// A waiter that gives up must not take a permit with it, even one
    /// already queued for it: the next caller finds it free.
    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_every_permit() {
        let permits = Arc::new(Permits::new(1));
        let held = permits.clone().try_acquire_owned().unwrap();
        let mut waiter = Box::pin(permits.clone().acquire_owned());
        assert!(futures::poll!(&mut waiter).is_pending());
        // The permit goes to the queue, for the waiter, which then gives up.
        drop(held);
        drop(waiter);
        assert_eq!(permits.waiting.load(Ordering::SeqCst), 0);
        assert_eq!(permits.available_permits(), 1);
        assert!(permits.clone().try_acquire_owned().is_ok());
    }

    /// Many tasks on two threads taking and giving back few permits: never
    /// more held at once than there are, and all back at the end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_held_than_there_are() {
        let permits = Arc::new(Permits::new(3));
        let held = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (permits, held) = (permits.clone(), held.clone());
                tokio::spawn(async move {
                    for round in 0..500 {
                        let permit = match permits.clone().try_acquire_owned() {
                            Ok(permit) if round % 3 != 0 => permit,
                            _ => permits.clone().acquire_owned().await,
                        };
                        assert!(held.fetch_add(1, Ordering::SeqCst) < 3);
                        tokio::task::yield_now().await;
                        held.fetch_sub(1, Ordering::SeqCst);
                        drop(permit);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(permits.available_permits(), 3);
    }
}
