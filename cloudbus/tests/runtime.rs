//! The service runtime's guarantees under its fast paths: a caller in the
//! same process runs the handler on its own task as far as the handler goes
//! without waiting, and a message waiting behind its sync key holds no
//! concurrency permit. Each test fails if a fast path skips a guarantee.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cloudbus::Call;
use cloudbus::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

#[derive(Clone, Debug, Serialize, Deserialize, Message)]
#[message(type = "work.Do", reply = Done)]
struct Do {
    key: Option<String>,
    panic: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, Message)]
#[message(type = "work.Done")]
struct Done {
    key: Option<String>,
}

/// Handlers that wait at a gate (when it has no permits) and count how
/// many run at once.
#[derive(Default)]
struct Work {
    gate: Option<Arc<Semaphore>>,
    running: AtomicUsize,
    most: AtomicUsize,
    finished: AtomicUsize,
}

#[handlers]
impl Work {
    #[sync_key(req.key.clone().map(SyncKey::new))]
    async fn run(&self, req: Do, _ctx: Context) -> Result<Done, ErrorCode> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        assert!(!req.panic, "asked to panic");
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate open").forget();
        }
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.finished.fetch_add(1, Ordering::SeqCst);
        Ok(Done { key: req.key })
    }
}

/// A `Work` state shared with the test.
struct Shared(Arc<Work>);

#[handlers]
impl Shared {
    #[sync_key(req.key.clone().map(SyncKey::new))]
    async fn run(&self, req: Do, ctx: Context) -> Result<Done, ErrorCode> {
        self.0.run(req, ctx).await
    }
}

/// The same work with no sync key at all.
struct Unkeyed(Arc<Work>);

#[handlers]
impl Unkeyed {
    async fn run(&self, req: Do, ctx: Context) -> Result<Done, ErrorCode> {
        self.0.run(req, ctx).await
    }
}

/// The service under test, with `concurrency`: its handler keyed or not.
/// Calls to either are handled on the caller's task when they can be,
/// each kind with its own checks on the way.
fn work_service(work: &Arc<Work>, keyed: bool, concurrency: usize) -> Service {
    if keyed {
        Service::builder("work", Shared(work.clone()))
            .concurrency(concurrency)
            .build()
    } else {
        Service::builder("work", Unkeyed(work.clone()))
            .concurrency(concurrency)
            .build()
    }
}

fn gated() -> (Arc<Work>, Arc<Semaphore>) {
    let gate = Arc::new(Semaphore::new(0));
    let work = Arc::new(Work {
        gate: Some(gate.clone()),
        ..Work::default()
    });
    (work, gate)
}

async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..1_000_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}

fn call(bus: &Bus, key: Option<&str>) -> Call<Do> {
    bus.call(Do {
        key: key.map(str::to_string),
        panic: false,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_on_one_key_hold_no_permit_so_another_key_runs_at_once() {
    let bus = Bus::embedded();
    let (work, gate) = gated();
    bus.register(
        Service::builder("work", Shared(work.clone()))
            .concurrency(4)
            .build(),
    )
    .await
    .unwrap();
    // 100 requests on key A: one runs (held at the gate), 99 wait behind it.
    let burst: Vec<_> = (0..100)
        .map(|_| tokio::spawn(call(&bus, Some("A"))))
        .collect();
    until("the first A runs", || {
        work.running.load(Ordering::SeqCst) == 1
    })
    .await;
    // B is handled while A's queue is still full: it does not wait for A.
    let b = tokio::spawn(call(&bus, Some("B")));
    until("B runs", || work.running.load(Ordering::SeqCst) == 2).await;
    assert_eq!(work.finished.load(Ordering::SeqCst), 0);
    gate.add_permits(1000);
    assert_eq!(b.await.unwrap().unwrap().key.as_deref(), Some("B"));
    for a in burst {
        assert_eq!(a.await.unwrap().unwrap().key.as_deref(), Some("A"));
    }
    // Key A never ran two at once, and the limit of 4 held throughout.
    assert!(work.most.load(Ordering::SeqCst) <= 4);
    bus.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_call_to_a_service_at_its_limit_waits() {
    for keyed in [false, true] {
        a_call_to_a_service_at_its_limit_waits(keyed).await;
    }
}

async fn a_call_to_a_service_at_its_limit_waits(keyed: bool) {
    let bus = Bus::embedded();
    let (work, gate) = gated();
    bus.register(work_service(&work, keyed, 2)).await.unwrap();
    let calls: Vec<_> = (0..10).map(|_| tokio::spawn(call(&bus, None))).collect();
    until("two run", || work.running.load(Ordering::SeqCst) == 2).await;
    for _ in 0..10_000 {
        tokio::task::yield_now().await;
    }
    assert_eq!(work.most.load(Ordering::SeqCst), 2, "the limit held");
    gate.add_permits(100);
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(work.most.load(Ordering::SeqCst), 2);
    bus.shutdown().await;
}

#[tokio::test]
async fn a_handler_panicking_on_the_callers_task_fails_only_that_call() {
    for keyed in [false, true] {
        a_panicking_handler_fails_only_its_call(keyed).await;
    }
}

async fn a_panicking_handler_fails_only_its_call(keyed: bool) {
    let bus = Bus::embedded();
    let work = Arc::new(Work::default());
    bus.register(work_service(&work, keyed, 4)).await.unwrap();
    let err = bus
        .call(Do {
            key: None,
            panic: true,
        })
        .await
        .unwrap_err();
    assert!(err.is(codes::INTERNAL), "{err}");
    // The caller's task lives on, and so does the service.
    call(&bus, None).await.unwrap();
    let stats = bus
        .statistics()
        .into_iter()
        .find(|s| s.type_name == "work.Do")
        .unwrap();
    assert_eq!((stats.count, stats.errors), (2, 1));
    // The failure is listed among the recent errors, as any other.
    let recent = bus.recent_errors();
    assert_eq!(recent.len(), 1, "{recent:?}");
    assert_eq!(recent[0].code, codes::INTERNAL);
    bus.shutdown().await;
}

#[tokio::test]
async fn a_caller_that_stops_waiting_does_not_cancel_a_handler_that_waits() {
    for keyed in [false, true] {
        a_handler_outlives_its_caller(keyed).await;
    }
}

async fn a_handler_outlives_its_caller(keyed: bool) {
    let bus = Bus::embedded();
    let (work, gate) = gated();
    bus.register(work_service(&work, keyed, 4)).await.unwrap();
    let err = call(&bus, None)
        .timeout(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(err.is(codes::TIMEOUT));
    assert_eq!(work.running.load(Ordering::SeqCst), 1, "still running");
    gate.add_permits(1);
    // Graceful stop waits for it, and it finishes.
    bus.shutdown().await;
    assert_eq!(work.finished.load(Ordering::SeqCst), 1);
    assert_eq!(bus.counters().late_replies.get(), 1);
}

#[derive(Clone, Debug, Serialize, Deserialize, Message)]
#[message(type = "work.Ticked", event)]
struct Ticked {}

/// Runs `op` in a loop until a task spawned beside it (on the same thread)
/// has run; fails if that never happens.
async fn yields_to_others<F, Fut>(what: &str, op: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tokio::spawn({
        let ran = ran.clone();
        async move { ran.store(true, Ordering::SeqCst) }
    });
    for _ in 0..100_000 {
        if ran.load(Ordering::SeqCst) {
            return;
        }
        op().await;
    }
    panic!("{what}: a task doing it in a loop never let another task run");
}

#[tokio::test(flavor = "current_thread")]
async fn a_task_whose_messages_never_wait_still_lets_other_tasks_run() {
    // Each of these finishes without waiting (the handler answers on the
    // caller's task; a send and a publish are handed over at once), so
    // only the task budget makes the loop yield.
    let bus = Bus::embedded();
    bus.register(Service::new("work", Work::default()))
        .await
        .unwrap();
    let _subscription = bus.subscribe::<Ticked>().await.unwrap();
    yields_to_others("call", || async {
        call(&bus, None).await.unwrap();
    })
    .await;
    yields_to_others("send", || async {
        bus.send(Do {
            key: None,
            panic: false,
        })
        .await
        .unwrap();
    })
    .await;
    yields_to_others("publish", || async {
        bus.publish(Ticked {}).await.unwrap();
    })
    .await;
}

#[derive(Clone, Debug, Serialize, Deserialize, Message)]
#[message(type = "seq.Step", reply = Done)]
struct Step {
    sender: usize,
    n: usize,
}

/// A keyed handler that ends without waiting, so callers on other threads
/// meet its key held for a moment: they look again, or queue behind it.
/// (`Step` is a request, so that it can be called as well as sent.)
struct Sequence(Arc<Steps>);

/// What the test reads back: how many steps ran at once, and in which order.
#[derive(Default)]
struct Steps {
    running: AtomicUsize,
    most: AtomicUsize,
    seen: std::sync::Mutex<Vec<(usize, usize)>>,
}

#[handlers]
impl Sequence {
    #[sync_key("vm-1")]
    async fn step(&self, req: Step, _ctx: Context) -> Result<Done, ErrorCode> {
        let steps = &self.0;
        let now = steps.running.fetch_add(1, Ordering::SeqCst) + 1;
        steps.most.fetch_max(now, Ordering::SeqCst);
        steps.seen.lock().unwrap().push((req.sender, req.n));
        steps.running.fetch_sub(1, Ordering::SeqCst);
        Ok(Done { key: None })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_on_several_threads_meeting_a_busy_key_run_one_at_a_time_each_in_order() {
    let bus = Bus::embedded();
    let sequence = Arc::new(Steps::default());
    bus.register(Service::new("seq", Sequence(sequence.clone())))
        .await
        .unwrap();
    const SENDERS: usize = 8;
    const STEPS: usize = 2_000;
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let bus = bus.clone();
            tokio::spawn(async move {
                // Sends, which queue behind the key, between calls,
                // which run on this task when the key is free.
                for n in 0..STEPS {
                    if n % 2 == 1 {
                        bus.call(Step { sender, n }).await.unwrap();
                    } else {
                        bus.send(Step { sender, n }).await.unwrap();
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    until("every step handled", || {
        sequence.seen.lock().unwrap().len() == SENDERS * STEPS
    })
    .await;
    bus.shutdown().await;
    assert_eq!(sequence.most.load(Ordering::SeqCst), 1);
    let seen = sequence.seen.lock().unwrap();
    assert_eq!(seen.len(), SENDERS * STEPS);
    for sender in 0..SENDERS {
        let order: Vec<usize> = seen
            .iter()
            .filter(|(s, _)| *s == sender)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(order, (0..STEPS).collect::<Vec<_>>(), "sender {sender}");
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, Message)]
#[message(type = "failing.Fail")]
struct Fail {
    n: u32,
}

/// A plain-message handler that always fails, counting its calls.
struct Failing(Arc<AtomicUsize>);

#[handlers]
impl Failing {
    async fn fail(&self, _msg: Fail, _ctx: Context) -> Result<(), ErrorCode> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Err(ErrorCode::new("failing.ASKED", "asked to fail"))
    }
}

/// Nobody waits for a plain message's outcome: its failure is counted
/// (and logged) where it happened, once per message.
#[tokio::test]
async fn a_plain_message_whose_handler_fails_is_counted_once() {
    let bus = Bus::embedded();
    let seen = Arc::new(AtomicUsize::new(0));
    bus.register(Service::new("failing", Failing(seen.clone())))
        .await
        .unwrap();
    for n in 0..3 {
        bus.send(Fail { n }).await.unwrap();
    }
    until("all three handled and counted", || {
        seen.load(Ordering::SeqCst) == 3 && bus.counters().message_errors.get() == 3
    })
    .await;
    bus.shutdown().await;
    assert_eq!(bus.counters().message_errors.get(), 3);
}
