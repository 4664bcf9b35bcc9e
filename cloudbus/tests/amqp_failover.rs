//! A bus on a real 3-node RabbitMQ cluster (`scripts/rabbitmq-cluster.sh`)
//! while one of its broker nodes is killed with SIGKILL: calls in flight
//! end, nodes fail over to a survivor, nobody is declared dead, and with
//! quorum queues no confirmed message is lost. Each test prints what it
//! measured (failover time, messages sent, confirmed, handled, lost,
//! duplicated); `docs/deploying.md` reports those figures.

mod broker;
mod common;
mod rabbit_cluster;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::unique_bus;
use cloudbus::transport::amqp::{AmqpConfig, AmqpTransport, BrokerOrder, QueueType};
use cloudbus::{Bus, Service};
use common::*;
use futures::StreamExt;
use rabbit_cluster::{RabbitCluster, SERIAL};

/// A bus node on the given brokers, tried in the listed order so that
/// each test knows which broker node a bus node starts on.
async fn node(bus: &str, brokers: String, queue_type: QueueType) -> Bus {
    let config = AmqpConfig::new(brokers)
        .broker_order(BrokerOrder::Listed)
        .queue_type(queue_type)
        .connect_timeout(Duration::from_secs(5))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500));
    Bus::builder()
        .name(bus)
        .transport(AmqpTransport::with_config(config))
        .build()
        .await
        .unwrap()
}

/// Outcomes of calls made in a loop by a few workers until told to stop.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    errors: Mutex<HashMap<String, u64>>,
    /// Calls that did not end within their timeout plus a margin.
    hung: AtomicU64,
    stop: AtomicBool,
}

const CALL_TIMEOUT: Duration = Duration::from_secs(5);

impl Load {
    fn start(
        self: &Arc<Self>,
        from: &Bus,
        to: &Bus,
        workers: usize,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..workers)
            .map(|_| {
                let (load, from, target) = (self.clone(), from.clone(), to.node_id());
                tokio::spawn(async move {
                    while !load.stop.load(Ordering::Relaxed) {
                        let call = from.call(echo("load")).node(target).timeout(CALL_TIMEOUT);
                        match tokio::time::timeout(CALL_TIMEOUT + Duration::from_secs(5), call)
                            .await
                        {
                            Ok(Ok(_)) => {
                                load.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(Err(error)) => {
                                *load
                                    .errors
                                    .lock()
                                    .unwrap()
                                    .entry(error.code().to_string())
                                    .or_default() += 1;
                                // An error at once (broker unavailable) must
                                // not spin: try again a little later.
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(_) => {
                                load.hung.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                })
            })
            .collect()
    }
}

/// Whether a call and an event go through from `from` to `to` now.
async fn works(
    from: &Bus,
    to: &Bus,
    events: &mut cloudbus::Subscription<VmStateChanged>,
    n: u64,
) -> bool {
    let quick = Duration::from_secs(1);
    let called = from
        .call(echo("probe"))
        .node(to.node_id())
        .timeout(quick)
        .await
        .is_ok();
    let event = VmStateChanged {
        uuid: format!("probe-{n}"),
        state: from.node_id().to_string(),
    };
    if !called || from.publish(event.clone()).await.is_err() {
        return false;
    }
    // Older probes may arrive first; only this one counts.
    let deadline = tokio::time::Instant::now() + quick;
    while let Ok(Some(got)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if got == event {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_and_events_go_on_when_a_broker_node_dies() {
    let _serial = SERIAL.lock().await;
    let cluster = RabbitCluster::get().await;
    let name = unique_bus("failover");
    // A starts on broker 1, B on broker 2; both may move to broker 3.
    let a = node(&name, cluster.list(&[1, 3]), QueueType::Classic).await;
    let b = node(&name, cluster.list(&[2, 3]), QueueType::Classic).await;
    assert_eq!(a.broker(), Some(cluster.address(1)));
    assert_eq!(b.broker(), Some(cluster.address(2)));
    for bus in [&a, &b] {
        bus.register(echo_service()).await.unwrap();
    }
    let mut a_events = a.subscribe::<VmStateChanged>().await.unwrap();
    let mut b_events = b.subscribe::<VmStateChanged>().await.unwrap();
    for (bus, other) in [(&a, b.node_id()), (&b, a.node_id())] {
        bus.wait_for_cluster(WAIT, |v| {
            v.node(other).is_some_and(|n| !n.services.is_empty())
        })
        .await
        .unwrap();
    }

    // Calls both ways, 8 in flight each, before, during and after.
    let (a_to_b, b_to_a) = (Arc::new(Load::default()), Arc::new(Load::default()));
    let mut workers = a_to_b.start(&a, &b, 8);
    workers.extend(b_to_a.start(&b, &a, 8));
    wait_until("calls flow both ways", || {
        a_to_b.ok.load(Ordering::Relaxed) >= 200 && b_to_a.ok.load(Ordering::Relaxed) >= 200
    })
    .await;

    let killed = Instant::now();
    cluster.kill(1).await;
    // A moves to broker 3 and declares its queues there again.
    wait_until("A fails over", || a.counters().failovers.get() == 1).await;
    let mut probe = 0;
    within("calls and events work again both ways", async {
        loop {
            probe += 1;
            if works(&a, &b, &mut b_events, probe).await
                && works(&b, &a, &mut a_events, probe).await
            {
                break;
            }
        }
    })
    .await;
    let recovered = killed.elapsed();
    assert_eq!(a.broker(), Some(cluster.address(3)));
    assert_eq!(b.broker(), Some(cluster.address(2)), "B's broker lives on");

    // Some more calls after the recovery, then stop and count.
    let (a_ok, b_ok) = (
        a_to_b.ok.load(Ordering::Relaxed),
        b_to_a.ok.load(Ordering::Relaxed),
    );
    wait_until("calls flow again", || {
        a_to_b.ok.load(Ordering::Relaxed) >= a_ok + 100
            && b_to_a.ok.load(Ordering::Relaxed) >= b_ok + 100
    })
    .await;
    for load in [&a_to_b, &b_to_a] {
        load.stop.store(true, Ordering::Relaxed);
    }
    for worker in workers {
        worker.await.unwrap();
    }
    eprintln!(
        "failover: calls and events worked again {recovered:?} after the kill; \
         A→B ok {} errors {:?}; B→A ok {} errors {:?}",
        a_to_b.ok.load(Ordering::Relaxed),
        a_to_b.errors.lock().unwrap(),
        b_to_a.ok.load(Ordering::Relaxed),
        b_to_a.errors.lock().unwrap(),
    );
    // Every call ended with its reply or an error, within its timeout.
    assert_eq!(a_to_b.hung.load(Ordering::Relaxed), 0);
    assert_eq!(b_to_a.hung.load(Ordering::Relaxed), 0);
    // Nobody was taken for dead: A's heartbeats resumed in time.
    assert_eq!(a.counters().members_dead.get(), 0);
    assert_eq!(b.counters().members_dead.get(), 0);
    assert!(b.cluster().node(a.node_id()).is_some());
    assert_eq!(a.counters().failovers.get(), 1);
    assert_eq!(b.counters().failovers.get(), 0);
    // Operators see it in /metrics.
    let metrics = cloudbus::metrics::render(&a);
    for line in [
        "cloudbus_broker_failovers_total 1",
        "cloudbus_reconnects_total 1",
        "cloudbus_members_declared_dead_total 0",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    // B sees where A is now, from A's heartbeats.
    wait_until("B learns A's new broker", || {
        b.cluster().node(a.node_id()).and_then(|n| n.broker.clone()) == Some(cluster.address(3))
    })
    .await;

    a.shutdown().await;
    b.shutdown().await;
    cluster.start_node(1).await;
    cluster.delete_bus(&name).await;
}

/// What a run of plain messages through a broker node's death did.
#[derive(Debug, Default)]
struct Tally {
    sent: usize,
    confirmed: usize,
    failed: HashMap<String, usize>,
    handled: usize,
    duplicates: usize,
    /// Confirmed to the sender but never handled.
    lost: usize,
    /// Of the lost, those sent after the receiver was back on a broker.
    lost_after_recovery: usize,
}

const MESSAGES: u32 = 10_000;

/// Sends [`MESSAGES`] plain messages, 64 in flight, from a node on broker 1
/// to a node on broker 2; kills broker 2 after 2,000 are confirmed and
/// starts it again after 7,000; then waits for the receiver to catch up.
async fn through_a_broker_death(queue_type: QueueType) -> Tally {
    let cluster = RabbitCluster::get().await;
    let name = unique_bus(&format!("failover-{queue_type}"));
    let receiver = node(&name, cluster.list(&[2, 3]), queue_type).await;
    let sender = node(&name, cluster.list(&[1, 3]), queue_type).await;
    let handled: Arc<Mutex<HashMap<u32, usize>>> = Arc::default();
    receiver
        .register(
            Service::builder("work", ())
                .concurrency(64)
                .on_message({
                    let handled = handled.clone();
                    move |note: Note, _| {
                        *handled.lock().unwrap().entry(note.n).or_default() += 1;
                        async { Ok(()) }
                    }
                })
                .build(),
        )
        .await
        .unwrap();
    sender
        .wait_for_cluster(WAIT, |v| {
            v.node(receiver.node_id())
                .is_some_and(|n| n.services.contains(&"work".to_string()))
        })
        .await
        .unwrap();

    let confirmed = Arc::new(AtomicU64::new(0));
    // Set while the receiver is back on a broker after the kill.
    let recovered = Arc::new(AtomicBool::new(false));
    let chaos = tokio::spawn({
        let (confirmed, recovered, receiver) =
            (confirmed.clone(), recovered.clone(), receiver.clone());
        async move {
            wait_until("2,000 confirmed", || {
                confirmed.load(Ordering::Relaxed) >= 2_000
            })
            .await;
            cluster.kill(2).await;
            wait_until("the receiver fails over", || {
                receiver.counters().failovers.get() == 1
            })
            .await;
            recovered.store(true, Ordering::Relaxed);
            wait_until("7,000 confirmed", || {
                confirmed.load(Ordering::Relaxed) >= 7_000
            })
            .await;
            cluster.start_node(2).await;
            cluster
        }
    });
    let outcomes: Vec<(u32, bool, Result<(), cloudbus::ErrorCode>)> =
        futures::stream::iter(0..MESSAGES)
            .map(|n| {
                let (sender, confirmed, recovered) = (&sender, &confirmed, &recovered);
                let target = receiver.node_id();
                async move {
                    let after_recovery = recovered.load(Ordering::Relaxed);
                    let outcome = sender
                        .send(Note { key: "k".into(), n })
                        .service("work")
                        .node(target)
                        .await;
                    if outcome.is_ok() {
                        confirmed.fetch_add(1, Ordering::Relaxed);
                    }
                    (n, after_recovery, outcome)
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
    let cluster = within("broker 2 restarts", chaos).await.unwrap();

    let mut tally = Tally {
        sent: outcomes.len(),
        ..Tally::default()
    };
    let mut wanted = Vec::new();
    for (n, after_recovery, outcome) in &outcomes {
        match outcome {
            Ok(()) => wanted.push((*n, *after_recovery)),
            Err(error) => *tally.failed.entry(error.code().to_string()).or_default() += 1,
        }
    }
    tally.confirmed = wanted.len();
    // Whatever can still come arrives: with quorum queues every confirmed
    // message (redelivered after the failover if need be); with classic
    // queues those sent once the receiver was back, as what the dead
    // broker held went with it.
    wait_until("the receiver catches up", || {
        let handled = handled.lock().unwrap();
        wanted.iter().all(|(n, after_recovery)| {
            handled.contains_key(n) || (queue_type == QueueType::Classic && !after_recovery)
        })
    })
    .await;
    let handled = handled.lock().unwrap().clone();
    tally.handled = handled.len();
    tally.duplicates = handled.values().map(|times| times - 1).sum();
    for (n, after_recovery) in &wanted {
        if !handled.contains_key(n) {
            tally.lost += 1;
            tally.lost_after_recovery += usize::from(*after_recovery);
        }
    }
    assert!(
        handled.keys().all(|n| *n < MESSAGES),
        "only messages that were sent are handled"
    );
    assert_eq!(receiver.counters().members_dead.get(), 0);
    assert_eq!(sender.counters().members_dead.get(), 0);
    sender.shutdown().await;
    receiver.shutdown().await;
    cluster.delete_bus(&name).await;
    eprintln!("{queue_type} queues through a broker node's death: {tally:?}");
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_lose_no_confirmed_message_when_a_broker_node_dies() {
    let _serial = SERIAL.lock().await;
    let tally = through_a_broker_death(QueueType::Quorum).await;
    assert_eq!(tally.sent, MESSAGES as usize);
    assert_eq!(tally.lost, 0, "{tally:?}");
    assert!(
        tally.confirmed >= 9_000,
        "the sender's broker lived: {tally:?}"
    );
    assert!(tally.handled >= tally.confirmed, "{tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_queues_lose_what_the_dead_broker_held_and_nothing_after() {
    let _serial = SERIAL.lock().await;
    let tally = through_a_broker_death(QueueType::Classic).await;
    assert_eq!(tally.sent, MESSAGES as usize);
    // What a classic queue held went with its broker; once the receiver is
    // back (its queue declared again on a survivor), nothing more is lost.
    assert_eq!(tally.lost_after_recovery, 0, "{tally:?}");
    assert!(tally.confirmed >= 1_000, "{tally:?}");
}
