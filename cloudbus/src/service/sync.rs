//! Per-resource serialization (ZStack's sync signature): messages with the
//! same key run at most `level` at a time, in the order they arrived.

use std::cell::Cell;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use futures::future::BoxFuture;
use hashbrown::{DefaultHashBuilder, HashTable};
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
/// and once it runs, a concurrency permit. A ticket goes after its job's
/// key is let go, and its place in flight goes last of all: a drain that
/// sees nothing in flight sees every key and permit back.
pub(crate) struct Ticket {
    // Dropped in this order.
    _running: Option<OwnedSemaphorePermit>,
    _admitted: Option<OwnedSemaphorePermit>,
    _in_flight: InFlightGuard,
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

/// The jobs of one key.
struct KeyQueue {
    /// The key: the table's only copy of it, for as long as the key has
    /// jobs (its text does not move meanwhile; see [`Slot`]).
    key: String,
    running: usize,
    /// Of the running jobs, those being polled on a caller's task at this
    /// moment: each ends, or moves to a task of its own, within that one
    /// poll.
    polling: usize,
    waiting: VecDeque<Job>,
}

/// The keys with jobs. Each key is hashed once per message: a running
/// job finds its key again by [`Slot`], without a copy of the key's text.
#[derive(Default)]
struct Table {
    hasher: DefaultHashBuilder,
    queues: HashTable<KeyQueue>,
}

/// Where a running job's key sits in the [`Table`]: its hash, and the
/// address of the table's copy of its text. A key stays in the table
/// while any of its jobs runs, and its text stays put, so no two keys
/// there share an address (an empty key has none, but is the only one).
#[derive(Clone, Copy)]
struct Slot {
    hash: u64,
    text: usize,
    len: usize,
}

impl Slot {
    fn of(hash: u64, key: &str) -> Self {
        Self {
            hash,
            text: key.as_ptr() as usize,
            len: key.len(),
        }
    }

    fn holds(&self, queue: &KeyQueue) -> bool {
        queue.key.as_ptr() as usize == self.text && queue.key.len() == self.len
    }
}

type Keys = Arc<Mutex<Table>>;

/// How many times a newcomer looks again, backing off, before it queues
/// behind a key held by a job being polled on another thread: 2^7 - 1
/// spin hints in all, a few microseconds at most. Queueing costs the
/// newcomer a boxed future, a timer and a wake-up, and puts the key's next
/// jobs on a task of their own (every one after it then queues too), where
/// a handler polled inline usually ends within a microsecond.
const LOOKS: u32 = 7;

thread_local! {
    /// Whether this thread is polling a keyed job inline right now: a
    /// message sent from inside it must not wait for a key it may hold
    /// itself.
    static POLLING: Cell<bool> = const { Cell::new(false) };
}

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
    ///
    /// Order: jobs of one key start in the order their `submit` calls
    /// began, except that calls overlapping in time (from different
    /// threads) may start in either order, as there is no order between
    /// them to keep.
    pub(crate) fn submit(
        &self,
        key: SyncKey,
        run: BoxFuture<'static, ()>,
        ticket: Ticket,
        permits: &Arc<Semaphore>,
        inline: bool,
    ) {
        let job = (run, ticket);
        let SyncKey { key, level } = key;
        let mut keys = lock(&self.keys);
        let hash = keys.hasher.hash_one(key.as_str());
        let mut looks = 0;
        let slot = loop {
            let table = &mut *keys;
            match table.queues.find_mut(hash, |queue| queue.key == key) {
                Some(queue) if queue.running >= level => {
                    // Nobody queued yet and a holder about to finish on
                    // another thread: look again shortly rather than queue.
                    let brief = queue.waiting.is_empty() && queue.polling > 0;
                    if brief && looks < LOOKS && !POLLING.get() {
                        drop(keys);
                        for _ in 0..1u32 << looks {
                            std::hint::spin_loop();
                        }
                        looks += 1;
                        keys = lock(&self.keys);
                        continue;
                    }
                    queue.waiting.push_back(job);
                    return;
                }
                Some(queue) => {
                    queue.running += 1;
                    queue.polling += usize::from(inline);
                    break Slot::of(hash, &queue.key);
                }
                None => {
                    let queue = KeyQueue {
                        key,
                        running: 1,
                        polling: usize::from(inline),
                        waiting: VecDeque::new(),
                    };
                    let hasher = &table.hasher;
                    let entry = table
                        .queues
                        .insert_unique(hash, queue, |queue| hasher.hash_one(queue.key.as_str()));
                    break Slot::of(hash, &entry.get().key);
                }
            }
        };
        drop(keys);
        let permit = inline
            .then(|| permits.clone().try_acquire_owned().ok())
            .flatten();
        let Some(permit) = permit else {
            if inline {
                stopped_polling(&self.keys, slot);
            }
            tokio::spawn(run_chain(self.keys.clone(), permits.clone(), slot, job));
            return;
        };
        let (mut run, ticket) = job;
        let ticket = ticket.running(permit);
        let was_polling = POLLING.replace(true);
        let done = (&mut run).now_or_never().is_some();
        POLLING.set(was_polling);
        if done {
            let next = next_of(&self.keys, slot, true);
            drop(ticket);
            if let Some(next) = next {
                tokio::spawn(run_chain(self.keys.clone(), permits.clone(), slot, next));
            }
            return;
        }
        // It waits: it goes on in a task of its own, then its key's next.
        stopped_polling(&self.keys, slot);
        let (keys, permits) = (self.keys.clone(), permits.clone());
        tokio::spawn(async move {
            run.await;
            let next = next_of(&keys, slot, false);
            drop(ticket);
            if let Some(next) = next {
                run_chain(keys, permits, slot, next).await;
            }
        });
    }

    /// How many keys have messages running or waiting.
    #[cfg(test)]
    pub(crate) fn active_keys(&self) -> usize {
        lock(&self.keys).queues.len()
    }
}

fn lock(keys: &Keys) -> MutexGuard<'_, Table> {
    keys.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs a job, then the next waiting job of the same key, until none wait;
/// each takes a concurrency permit for as long as it runs.
async fn run_chain(keys: Keys, permits: Arc<Semaphore>, slot: Slot, first: Job) {
    let mut job = first;
    loop {
        let (run, ticket) = job;
        // The semaphore is never closed while jobs exist.
        let permit = match permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(permit),
            Err(_) => permits.clone().acquire_owned().await,
        };
        let ticket = match permit {
            Ok(permit) => {
                let ticket = ticket.running(permit);
                run.await;
                ticket
            }
            Err(_) => ticket,
        };
        let next = next_of(&keys, slot, false);
        drop(ticket);
        match next {
            Some(next) => job = next,
            None => return,
        }
    }
}

/// A job of the key at `slot` that was polled inline goes on elsewhere.
fn stopped_polling(keys: &Keys, slot: Slot) {
    let mut keys = lock(keys);
    if let Some(queue) = keys.queues.find_mut(slot.hash, |q| slot.holds(q)) {
        queue.polling -= 1;
    }
}

/// The next job waiting on the key at `slot` after one of its jobs ended
/// (`polled`: one polled inline), or `None` (and the key's running count
/// goes down, the key forgotten when idle).
fn next_of(keys: &Keys, slot: Slot, polled: bool) -> Option<Job> {
    let mut keys = lock(keys);
    let Ok(mut entry) = keys.queues.find_entry(slot.hash, |q| slot.holds(q)) else {
        return None;
    };
    let queue = entry.get_mut();
    queue.polling -= usize::from(polled);
    if let Some(next) = queue.waiting.pop_front() {
        return Some(next);
    }
    queue.running -= 1;
    if queue.running == 0 {
        entry.remove();
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

    /// A drain waits for nothing in flight; by then each key must be let
    /// go and each permit back, whichever thread the last job ended on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nothing_in_flight_means_every_key_let_go_and_every_permit_back() {
        let queues = SyncQueues::default();
        let permits = Arc::new(Semaphore::new(2));
        let admission = Arc::new(Semaphore::new(2));
        let in_flight = Arc::new(InFlight::default());
        for attempt in 0..500 {
            for _ in 0..2 {
                let run: BoxFuture<'static, ()> = Box::pin(tokio::task::yield_now());
                let admitted = admission.clone().try_acquire_owned().unwrap();
                let ticket = Ticket::new(Some(admitted), in_flight.enter());
                queues.submit(
                    SyncKey::new("vm-1"),
                    run,
                    ticket,
                    &permits,
                    attempt % 2 == 0,
                );
            }
            in_flight.idle().await;
            assert_eq!(queues.active_keys(), 0, "attempt {attempt}");
            assert_eq!(permits.available_permits(), 2, "attempt {attempt}");
            assert_eq!(admission.available_permits(), 2, "attempt {attempt}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_key_is_found_again_and_forgotten_the_empty_one_too() {
        let queues = SyncQueues::default();
        let permits = Arc::new(Semaphore::new(8));
        let in_flight = Arc::new(InFlight::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let keys: Vec<String> = [String::new()]
            .into_iter()
            .chain((0..50).map(|k| format!("vm-{k}")))
            .collect();
        for round in 0..20 {
            for (k, key) in keys.iter().enumerate() {
                let tx = tx.clone();
                let run: BoxFuture<'static, ()> = Box::pin(async move {
                    tokio::task::yield_now().await;
                    tx.send((k, round)).unwrap();
                });
                let ticket = Ticket::new(None, in_flight.enter());
                queues.submit(SyncKey::new(key), run, ticket, &permits, round % 2 == 0);
            }
        }
        let mut last = vec![None; keys.len()];
        for _ in 0..keys.len() * 20 {
            let (k, round) = rx.recv().await.unwrap();
            assert_eq!(last[k].map_or(0, |r: usize| r + 1), round, "key {k}");
            last[k] = Some(round);
        }
        in_flight.idle().await;
        assert_eq!(queues.active_keys(), 0);
        assert_eq!(permits.available_permits(), 8);
    }
}
