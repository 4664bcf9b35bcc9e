//! Per-resource serialization (ZStack's sync signature): messages with the
//! same key run at most `level` at a time, in the order they arrived.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::in_flight::InFlightGuard;

/// The resource a message works on, and how many messages on it may run at
/// once (`level`, default 1: strictly one after the other).
///
/// ```
/// use cloudbus::SyncKey;
/// let key = SyncKey::new("vm-42");
/// assert_eq!(key.level(), 1);
/// assert_eq!(SyncKey::new("host-7").with_level(4).level(), 4);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncKey {
    key: String,
    level: usize,
}

impl SyncKey {
    /// A key with level 1.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            level: 1,
        }
    }

    /// Allows up to `level` messages of this key at once (at least 1).
    pub fn with_level(mut self, level: usize) -> Self {
        self.level = level.max(1);
        self
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// How many messages of this key may run at once.
    pub fn level(&self) -> usize {
        self.level
    }
}

/// What `#[sync_key(...)]` accepts: a key, anything that converts into
/// one, or an `Option` of a key for messages that only sometimes need one.
pub trait IntoSyncKey {
    /// The key, or `None` to run the message freely.
    fn into_sync_key(self) -> Option<SyncKey>;
}

impl<T: Into<SyncKey>> IntoSyncKey for T {
    fn into_sync_key(self) -> Option<SyncKey> {
        Some(self.into())
    }
}

impl IntoSyncKey for Option<SyncKey> {
    fn into_sync_key(self) -> Option<SyncKey> {
        self
    }
}

impl From<String> for SyncKey {
    fn from(key: String) -> Self {
        Self::new(key)
    }
}

impl From<&str> for SyncKey {
    fn from(key: &str) -> Self {
        Self::new(key)
    }
}

impl From<&String> for SyncKey {
    fn from(key: &String) -> Self {
        Self::new(key.as_str())
    }
}

/// What an accepted message holds until its handler ends: its admission
/// (a keyed handler's), its place among the service's in-flight messages,
/// and once it runs, a concurrency permit.
pub(crate) struct Ticket {
    _admitted: Option<OwnedSemaphorePermit>,
    _in_flight: InFlightGuard,
    _running: Option<OwnedSemaphorePermit>,
}

impl Ticket {
    pub(crate) fn new(admitted: Option<OwnedSemaphorePermit>, in_flight: InFlightGuard) -> Self {
        Self {
            _admitted: admitted,
            _in_flight: in_flight,
            _running: None,
        }
    }

    /// The ticket of a message that now holds a concurrency permit.
    pub(crate) fn running(mut self, permit: OwnedSemaphorePermit) -> Self {
        self._running = Some(permit);
        self
    }
}

type Job = (BoxFuture<'static, ()>, Ticket);

#[derive(Default)]
struct KeyQueue {
    running: usize,
    waiting: VecDeque<Job>,
}

type Keys = Arc<Mutex<HashMap<String, KeyQueue>>>;

/// The queues of one service. The lock is per service and held only to
/// push or pop, never across a handler.
#[derive(Default)]
pub(crate) struct SyncQueues {
    keys: Keys,
}

impl SyncQueues {
    /// Runs `job` now if its key has room, else queues it behind the
    /// others. A job takes one of `permits` only when it is about to run,
    /// so a waiter holds none. With `inline`, a job that can start at once
    /// is first polled on the calling task (see `runtime::start`).
    pub(crate) fn submit(
        &self,
        key: SyncKey,
        run: BoxFuture<'static, ()>,
        ticket: Ticket,
        permits: &Arc<Semaphore>,
        inline: bool,
    ) {
        let job = (run, ticket);
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        // A busy key (the case that queues) is found without copying it.
        match keys.get_mut(&key.key) {
            Some(queue) if queue.running >= key.level => {
                queue.waiting.push_back(job);
                return;
            }
            Some(queue) => queue.running += 1,
            None => {
                let queue = KeyQueue {
                    running: 1,
                    waiting: VecDeque::new(),
                };
                keys.insert(key.key.clone(), queue);
            }
        }
        drop(keys);
        let permit = inline
            .then(|| permits.clone().try_acquire_owned().ok())
            .flatten();
        let Some(permit) = permit else {
            tokio::spawn(run_chain(self.keys.clone(), permits.clone(), key.key, job));
            return;
        };
        let (mut run, ticket) = job;
        let ticket = ticket.running(permit);
        if (&mut run).now_or_never().is_some() {
            drop(ticket);
            if let Some(next) = next_of(&self.keys, &key.key) {
                tokio::spawn(run_chain(self.keys.clone(), permits.clone(), key.key, next));
            }
            return;
        }
        // It waits: it goes on in a task of its own, then its key's next.
        let (keys, permits) = (self.keys.clone(), permits.clone());
        tokio::spawn(async move {
            run.await;
            drop(ticket);
            if let Some(next) = next_of(&keys, &key.key) {
                run_chain(keys, permits, key.key, next).await;
            }
        });
    }

    /// How many keys have messages running or waiting.
    #[cfg(test)]
    pub(crate) fn active_keys(&self) -> usize {
        self.keys.lock().unwrap().len()
    }
}

/// Runs a job, then the next waiting job of the same key, until none wait;
/// each takes a concurrency permit for as long as it runs.
async fn run_chain(keys: Keys, permits: Arc<Semaphore>, key: String, first: Job) {
    let mut job = first;
    loop {
        let (run, ticket) = job;
        // The semaphore is never closed while jobs exist.
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(permit),
            Err(_) => permits.clone().acquire_owned().await,
        };
        if let Ok(permit) = permit {
            let ticket = ticket.running(permit);
            run.await;
            drop(ticket);
        }
        match next_of(&keys, &key) {
            Some(next) => job = next,
            None => return,
        }
    }
}

/// The next job waiting on `key` after one of its jobs ended, or `None`
/// (and the key's running count goes down, the key forgotten when idle).
fn next_of(keys: &Keys, key: &str) -> Option<Job> {
    let mut map = keys.lock().unwrap_or_else(|e| e.into_inner());
    let queue = map.get_mut(key)?;
    if let Some(next) = queue.waiting.pop_front() {
        return Some(next);
    }
    queue.running -= 1;
    if queue.running == 0 {
        map.remove(key);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::in_flight::InFlight;
    use super::*;
    use tokio::sync::{Semaphore, mpsc};

    #[tokio::test]
    async fn same_key_runs_in_order_and_the_key_is_forgotten_after() {
        let queues = SyncQueues::default();
        let sem = Arc::new(Semaphore::new(100));
        let permits = Arc::new(Semaphore::new(2));
        let in_flight = Arc::new(InFlight::default());
        let ticket = || async {
            Ticket::new(
                Some(sem.clone().acquire_owned().await.unwrap()),
                in_flight.enter(),
            )
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
        // The first job blocks until the gate opens; the rest must wait behind it.
        let first_tx = tx.clone();
        let first: BoxFuture<'static, ()> = Box::pin(async move {
            gate_rx.await.unwrap();
            first_tx.send(0).unwrap();
        });
        queues.submit(SyncKey::new("k"), first, ticket().await, &permits, true);
        for i in 1..5 {
            let tx = tx.clone();
            let run: BoxFuture<'static, ()> = Box::pin(async move { tx.send(i).unwrap() });
            queues.submit(SyncKey::new("k"), run, ticket().await, &permits, true);
        }
        assert_eq!(queues.active_keys(), 1);
        // Four wait behind the first, and hold no concurrency permit.
        while permits.available_permits() != 1 {
            tokio::task::yield_now().await;
        }
        gate_tx.send(()).unwrap();
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(rx.recv().await.unwrap());
        }
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        in_flight.idle().await;
        assert_eq!(queues.active_keys(), 0);
        assert_eq!(sem.available_permits(), 100);
        assert_eq!(permits.available_permits(), 2);
    }
}
