//! Per-resource serialization (ZStack's sync signature): messages with the
//! same key run at most `level` at a time, in the order they arrived.
//!
//! A key that nobody else holds is taken with one atomic swap in a small
//! array of slots, and given back with another: the common case (a free
//! key, a handler that ends without waiting) takes no lock. Only when a
//! key must be waited for, or has a level above 1, does its slot hand over
//! to a table of queues under the service's lock.

use std::cell::Cell;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::FutureExt;
use futures::future::BoxFuture;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::SyncKey;
use super::in_flight::InFlightGuard;
use super::permits::{Permit, Permits};

/// What an accepted message holds until its handler ends: its admission
/// (a keyed handler's), its place among the service's in-flight messages,
/// and once it runs, a concurrency permit. A ticket goes after its job's
/// key is let go, and its place in flight goes last of all: a drain that
/// sees nothing in flight sees every key and permit back.
pub(crate) struct Ticket {
    // Dropped in this order.
    _running: Option<Permit>,
    _admitted: Option<Permit>,
    _in_flight: InFlightGuard,
}

impl Ticket {
    pub(crate) fn new(admitted: Option<Permit>, in_flight: InFlightGuard) -> Self {
        Self {
            _admitted: admitted,
            _in_flight: in_flight,
            _running: None,
        }
    }

    /// The ticket of a message that now holds a concurrency permit.
    pub(crate) fn running(mut self, permit: Permit) -> Self {
        self._running = Some(permit);
        self
    }
}

type Job = (BoxFuture<'static, ()>, Ticket);

/// A key as the queues know it: 62 bits of a hash of its text, seeded per
/// service, with the lowest bit set (so never [`FREE`] or [`TABLE`]).
/// Two keys with the same id would be serialized together, as if they
/// were one (see [`SyncKey`]): rare enough, and its only cost a wait.
type KeyId = u64;

/// A slot word: no key of this slot is held.
const FREE: u64 = 0;
/// A slot word: the keys of this slot are in the [`Table`].
const TABLE: u64 = 2;
/// Added to a held key's id in its slot while its job is polled on a
/// caller's task.
const POLLED: u64 = 2;
/// Slots per service: a key whose slot another key holds goes to the
/// table, so enough of them that unrelated keys rarely meet.
const SLOTS: usize = 256;

fn slot_of(id: KeyId) -> usize {
    (id >> 56) as usize % SLOTS
}

/// The jobs of one key in the table.
struct KeyQueue {
    id: KeyId,
    running: usize,
    /// Of the running jobs, those being polled on a caller's task at this
    /// moment: each ends, or moves to a task of its own, within that one
    /// poll.
    polling: usize,
    waiting: VecDeque<Job>,
}

/// The keys that have a queue, and how many of them each slot has: a slot
/// goes back to [`FREE`] when its last key leaves the table.
struct Table {
    queues: HashTable<KeyQueue>,
    per_slot: Box<[u32; SLOTS]>,
}

/// What the queues of one service share with the tasks that run its jobs.
struct Shared {
    /// Each slot is [`FREE`], [`TABLE`], or the id of the one key of the
    /// slot that is held (plus [`POLLED`] while its job is polled on a
    /// caller's task), with nothing waiting for it. Only the holder turns
    /// its id back to [`FREE`]; only the table, under its lock, turns a
    /// slot into [`TABLE`] or back.
    slots: Box<[AtomicU64; SLOTS]>,
    /// Held only to push or pop, never across a handler.
    table: Mutex<Table>,
}

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

/// The queues of one service.
pub(crate) struct SyncQueues {
    hasher: DefaultHashBuilder,
    shared: Arc<Shared>,
}

impl Default for SyncQueues {
    fn default() -> Self {
        Self {
            hasher: DefaultHashBuilder::default(),
            shared: Arc::new(Shared {
                slots: Box::new([const { AtomicU64::new(FREE) }; SLOTS]),
                table: Mutex::new(Table {
                    queues: HashTable::new(),
                    per_slot: Box::new([0; SLOTS]),
                }),
            }),
        }
    }
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
        permits: &Arc<Permits>,
        inline: bool,
    ) {
        let id = self.id_of(key.key());
        let level = key.level();
        drop(key);
        // Whoever may run now needs a permit to be polled here: taken
        // first, and given back if the job must wait after all.
        let permit = if inline {
            permits.clone().try_acquire_owned().ok()
        } else {
            None
        };
        let mut newcomer = Newcomer {
            id,
            level,
            held: if permit.is_some() { id + POLLED } else { id },
            looks: 0,
            nested: POLLING.get(),
        };
        let slot = &self.shared.slots[slot_of(id)];
        if level == 1 && newcomer.take_slot(slot) {
            return self.run(id, (run, ticket), permit, permits);
        }
        let mut table = self.shared.lock();
        let mut job = (run, ticket);
        loop {
            match self.shared.enter(&mut table, &newcomer, job) {
                Entered::Runs(ready) => {
                    drop(table);
                    return self.run(id, ready, permit, permits);
                }
                Entered::Waits => return,
                Entered::LookAgain(back) => {
                    drop(table);
                    newcomer.look_again();
                    job = back;
                    table = self.shared.lock();
                }
            }
        }
    }

    /// A job's key with what it needs to be held or queued, for a job
    /// built before it knows which (see `inline`).
    pub(crate) fn keyed<'a>(&'a self, key: SyncKey, permits: &'a Arc<Permits>) -> KeyedJob<'a> {
        KeyedJob {
            queues: self,
            permits,
            key,
        }
    }

    fn id_of(&self, key: &str) -> KeyId {
        (self.hasher.hash_one(key) | 1) & !POLLED
    }

    /// Runs a job whose key it now holds: polled here first when it has a
    /// permit, else (or once it waits) in a task of its own, followed by
    /// its key's next jobs.
    fn run(&self, id: KeyId, job: Job, permit: Option<Permit>, permits: &Arc<Permits>) {
        let Some(permit) = permit else {
            tokio::spawn(run_chain(self.shared.clone(), permits.clone(), id, job));
            return;
        };
        let (mut run, ticket) = job;
        let ticket = ticket.running(permit);
        let held = Held {
            shared: &self.shared,
            permits,
            id,
        };
        if held.poll(|| (&mut run).now_or_never()).is_some() {
            held.finished(ticket);
        } else {
            held.go_on(run, ticket);
        }
    }

    /// How many keys have messages running or waiting.
    #[cfg(test)]
    pub(crate) fn active_keys(&self) -> usize {
        let table = self.shared.lock();
        let held = self.shared.slots.iter();
        let held = held.filter(|slot| slot.load(Ordering::Acquire) & 1 == 1);
        table.queues.len() + held.count()
    }
}

/// A job's sync key, on its way to being held or queued.
pub(crate) struct KeyedJob<'a> {
    queues: &'a SyncQueues,
    permits: &'a Arc<Permits>,
    key: SyncKey,
}

impl<'a> KeyedJob<'a> {
    /// Holds the key for the job, to be polled on the calling task with
    /// its permit taken already, if the key is free or about to be (like
    /// [`submit`](SyncQueues::submit), it looks again a few times at a
    /// key being polled on another thread); `None` if the job would have
    /// to queue.
    pub(crate) fn try_hold(&self) -> Option<Held<'a>> {
        if self.key.level() != 1 || POLLING.get() {
            return None;
        }
        let id = self.queues.id_of(self.key.key());
        let mut newcomer = Newcomer {
            id,
            level: 1,
            held: id + POLLED,
            looks: 0,
            nested: false,
        };
        if !newcomer.take_slot(&self.queues.shared.slots[slot_of(id)]) {
            return None;
        }
        Some(Held {
            shared: &self.queues.shared,
            permits: self.permits,
            id,
        })
    }

    /// Queues the job behind its key, or runs it if the key has room
    /// after all ([`submit`](SyncQueues::submit), polled here first).
    /// `ticket` holds no concurrency permit: the job takes one to run.
    pub(crate) fn submit(self, run: BoxFuture<'static, ()>, ticket: Ticket) {
        self.queues
            .submit(self.key, run, ticket, self.permits, true);
    }
}

/// A key held by a job polled on the calling task. It must end one way:
/// [`finished`](Self::finished) or [`go_on`](Self::go_on).
#[must_use = "a held key must be let go"]
pub(crate) struct Held<'a> {
    shared: &'a Arc<Shared>,
    permits: &'a Arc<Permits>,
    id: KeyId,
}

impl Held<'_> {
    /// Polls the job (with `poll`) as a keyed job polled inline: a
    /// message it sends must not wait for a key it may hold itself.
    pub(crate) fn poll<T>(&self, poll: impl FnOnce() -> T) -> T {
        let was_polling = POLLING.replace(true);
        let polled = poll();
        POLLING.set(was_polling);
        polled
    }

    /// The job ended within its poll: the key goes to its next job (in a
    /// task), or is let go; then `ticket`.
    pub(crate) fn finished(self, ticket: Ticket) {
        let next = self.shared.release(self.id, true);
        drop(ticket);
        if let Some(next) = next {
            let (shared, permits) = (self.shared.clone(), self.permits.clone());
            tokio::spawn(run_chain(shared, permits, self.id, next));
        }
    }

    /// The job waits: it goes on in a task of its own, then its key's
    /// next jobs.
    pub(crate) fn go_on(self, run: BoxFuture<'static, ()>, ticket: Ticket) {
        let id = self.id;
        self.shared.stopped_polling(id);
        let (shared, permits) = (self.shared.clone(), self.permits.clone());
        tokio::spawn(async move {
            run.await;
            let next = shared.release(id, false);
            drop(ticket);
            if let Some(next) = next {
                run_chain(shared, permits, id, next).await;
            }
        });
    }
}

/// A job arriving at its key, as the queues see it.
struct Newcomer {
    id: KeyId,
    level: usize,
    /// Its slot word while it holds the key: its id, plus [`POLLED`] if
    /// it is to be polled on the calling task.
    held: u64,
    /// How many times it has looked again.
    looks: u32,
    /// Whether it comes from inside a keyed job polled on this thread,
    /// which may hold the very key it would wait for.
    nested: bool,
}

impl Newcomer {
    /// Whether it may look again at a key about to be let go, rather
    /// than queue.
    fn may_look_again(&self) -> bool {
        self.looks < LOOKS && !self.nested
    }

    fn look_again(&mut self) {
        back_off(self.looks);
        self.looks += 1;
    }

    /// Takes its key's `slot` if it is free, looking again while its key
    /// is polled on another thread (it ends soon, most likely); `false`
    /// if the key must go through the table.
    fn take_slot(&mut self, slot: &AtomicU64) -> bool {
        loop {
            match slot.compare_exchange(FREE, self.held, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(word) if word == self.id + POLLED && self.may_look_again() => {
                    self.look_again();
                }
                Err(_) => return false,
            }
        }
    }
}

/// Where a newcomer stands once the table has its key.
enum Entered {
    /// It holds the key (in the table) and may run.
    Runs(Job),
    /// The key is full: it is queued.
    Waits,
    /// The key is full but about to be given back on another thread: let
    /// go of the lock and look again shortly.
    LookAgain(Job),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts the newcomer's key in the table (its slot first, with whichever
    /// key held it there), and takes a place in it for `job` if there is
    /// room, else queues it.
    fn enter(&self, table: &mut Table, newcomer: &Newcomer, job: Job) -> Entered {
        let &Newcomer {
            id, level, held, ..
        } = newcomer;
        let slot = &self.slots[slot_of(id)];
        // Without the lock, a slot's word changes only from a key's id to
        // FREE (its holder done), from FREE to an id, or from an id with
        // POLLED to the id alone.
        let mut word = slot.load(Ordering::Acquire);
        while word != TABLE {
            match slot.compare_exchange(word, TABLE, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) if word == FREE => break,
                Ok(_) => {
                    // Its holder now lets go through the table.
                    let holder = word & !POLLED;
                    table.insert(holder, usize::from(word != holder));
                    break;
                }
                Err(now) => word = now,
            }
        }
        let polls = usize::from(held != id);
        match table.queues.find_mut(id, |queue| queue.id == id) {
            Some(queue) if queue.running >= level => {
                let brief = queue.waiting.is_empty() && queue.polling > 0;
                if brief && newcomer.may_look_again() {
                    return Entered::LookAgain(job);
                }
                queue.waiting.push_back(job);
                Entered::Waits
            }
            Some(queue) => {
                queue.running += 1;
                queue.polling += polls;
                Entered::Runs(job)
            }
            None => {
                table.insert(id, polls);
                Entered::Runs(job)
            }
        }
    }

    /// A job of key `id` that was polled inline goes on elsewhere.
    fn stopped_polling(&self, id: KeyId) {
        let slot = &self.slots[slot_of(id)];
        let fast = slot.compare_exchange(id + POLLED, id, Ordering::AcqRel, Ordering::Acquire);
        if fast.is_err() {
            let mut table = self.lock();
            if let Some(queue) = table.queues.find_mut(id, |queue| queue.id == id) {
                queue.polling -= 1;
            }
        }
    }

    /// The next job waiting on key `id` after one of its jobs ended
    /// (`polled`: one polled inline), or `None` (and the key's running
    /// count goes down, the key forgotten when idle).
    fn release(&self, id: KeyId, polled: bool) -> Option<Job> {
        let index = slot_of(id);
        let word = if polled { id + POLLED } else { id };
        let slot = &self.slots[index];
        if slot
            .compare_exchange(word, FREE, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            return None;
        }
        let mut table = self.lock();
        let Table { queues, per_slot } = &mut *table;
        let Ok(mut entry) = queues.find_entry(id, |q| q.id == id) else {
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
            per_slot[index] -= 1;
            if per_slot[index] == 0 {
                slot.store(FREE, Ordering::Release);
            }
        }
        None
    }
}

impl Table {
    /// A key with one job running (`polling`: polled inline).
    fn insert(&mut self, id: KeyId, polling: usize) {
        let queue = KeyQueue {
            id,
            running: 1,
            polling,
            waiting: VecDeque::new(),
        };
        self.queues.insert_unique(id, queue, |queue| queue.id);
        self.per_slot[slot_of(id)] += 1;
    }
}

/// Waits 2^`looks` spin hints before a newcomer looks at a key again.
fn back_off(looks: u32) {
    for _ in 0..1u32 << looks {
        std::hint::spin_loop();
    }
}

/// Runs a job, then the next waiting job of the same key, until none wait;
/// each takes a concurrency permit for as long as it runs.
async fn run_chain(shared: Arc<Shared>, permits: Arc<Permits>, id: KeyId, first: Job) {
    let mut job = first;
    loop {
        let (run, ticket) = job;
        let ticket = ticket.running(permits.clone().acquire_owned().await);
        run.await;
        let next = shared.release(id, false);
        drop(ticket);
        match next {
            Some(next) => job = next,
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::in_flight::InFlight;
    use super::*;
    use tokio::sync::mpsc;

    #[tokio::test]
    async fn same_key_runs_in_order_and_the_key_is_forgotten_after() {
        let queues = SyncQueues::default();
        let sem = Arc::new(Permits::new(100));
        let permits = Arc::new(Permits::new(2));
        let in_flight = Arc::new(InFlight::default());
        let ticket =
            || async { Ticket::new(Some(sem.clone().acquire_owned().await), in_flight.enter()) };
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
        let permits = Arc::new(Permits::new(2));
        let admission = Arc::new(Permits::new(2));
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
        let permits = Arc::new(Permits::new(8));
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

    /// Two keys that share a slot: the second must not wait for the first,
    /// and the first's next job must wait for it even though the slot has
    /// moved to the table meanwhile; then the slot is free again.
    #[tokio::test]
    async fn keys_sharing_a_slot_run_side_by_side_and_each_in_order() {
        let queues = SyncQueues::default();
        let permits = Arc::new(Permits::new(4));
        let in_flight = Arc::new(InFlight::default());
        let names: Vec<String> = (0..10_000).map(|k| format!("vm-{k}")).collect();
        let slot = |name: &String| slot_of(queues.id_of(name));
        let (a, b) = names
            .iter()
            .enumerate()
            .find_map(|(i, a)| {
                names[i + 1..]
                    .iter()
                    .find(|b| slot(a) == slot(b))
                    .map(|b| (a, b))
            })
            .expect("10,000 keys share some of 256 slots");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
        let first_tx = tx.clone();
        let first: BoxFuture<'static, ()> = Box::pin(async move {
            gate_rx.await.unwrap();
            first_tx.send("a1").unwrap();
        });
        let ticket = || Ticket::new(None, in_flight.enter());
        queues.submit(SyncKey::new(a), first, ticket(), &permits, true);
        let send = |what: &'static str| -> BoxFuture<'static, ()> {
            let tx = tx.clone();
            Box::pin(async move { tx.send(what).unwrap() })
        };
        // Polled inline: it has run by the time submit returns.
        queues.submit(SyncKey::new(b), send("b"), ticket(), &permits, true);
        assert_eq!(rx.try_recv(), Ok("b"));
        queues.submit(SyncKey::new(a), send("a2"), ticket(), &permits, true);
        assert!(rx.try_recv().is_err(), "a2 ran while a1 held its key");
        gate_tx.send(()).unwrap();
        assert_eq!(rx.recv().await, Some("a1"));
        assert_eq!(rx.recv().await, Some("a2"));
        in_flight.idle().await;
        assert_eq!(queues.active_keys(), 0);
        let slots = &queues.shared.slots;
        assert!(
            slots
                .iter()
                .all(|slot| slot.load(Ordering::Acquire) == FREE)
        );
        assert_eq!(permits.available_permits(), 4);
    }
}
