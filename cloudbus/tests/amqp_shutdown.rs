//! A graceful stop on the real broker: in-flight work finishes, the node
//! says `left`, and not one accepted plain message is lost: what the node
//! did not take stays queued, and a node restarted with the same id takes
//! it up.

mod broker;
mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use broker::*;
use cloudbus::{Bus, NodeId, Service};
use common::*;
use tokio::sync::{Notify, Semaphore};

const WAIT: Duration = Duration::from_secs(30);
const NOTES: u32 = 300;
/// Notes after this many wait for the test to let them finish, so the node
/// is surely stopped mid-way.
const HOLD_AFTER: usize = 20;

async fn node(bus: &str, id: NodeId) -> Bus {
    Bus::builder()
        .name(bus)
        .node_id(id)
        .amqp(url())
        .heartbeat_interval(Duration::from_secs(30))
        .build()
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ must be reachable at {}: {e}", url()))
}

/// Records every note it handles; takes a moment per note, like real work.
/// Past [`HOLD_AFTER`] notes, each waits for a permit from `gate`.
#[derive(Clone)]
struct Ledger {
    seen: Arc<Mutex<Vec<u32>>>,
    progress: Arc<Notify>,
    gate: Arc<Semaphore>,
}

impl Default for Ledger {
    fn default() -> Self {
        Self {
            seen: Arc::default(),
            progress: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        }
    }
}

impl Ledger {
    fn service(&self) -> Service {
        let ledger = self.clone();
        Service::builder("work", ())
            .concurrency(4)
            .on_message(move |note: Note, _| {
                let ledger = ledger.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    if ledger.count() >= HOLD_AFTER {
                        ledger.gate.acquire().await.unwrap().forget();
                    }
                    ledger.seen.lock().unwrap().push(note.n);
                    ledger.progress.notify_waiters();
                    Ok(())
                }
            })
            .build()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    async fn until(&self, n: usize) {
        tokio::time::timeout(WAIT, async {
            loop {
                let progress = self.progress.notified();
                if self.count() >= n {
                    return;
                }
                progress.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{n} notes were not handled in time; got {}", self.count()));
    }
}

/// How many consumers one queue has, if it exists.
fn consumers(queue: &str) -> Option<usize> {
    queue_columns(queue, &["consumers"]).and_then(|n| n.parse().ok())
}

/// `<ready>\t<unacknowledged>` of one queue, if it exists.
fn queue_counts(queue: &str) -> Option<String> {
    queue_columns(queue, &["messages_ready", "messages_unacknowledged"])
}

#[tokio::test]
async fn a_graceful_stop_finishes_in_flight_work_and_loses_no_accepted_message() {
    let name = unique_bus("stop");
    let _cleanup = delete_bus_on_panic(&name);
    let server_id = NodeId::random();
    let client = node(&name, NodeId::random()).await;
    let server = node(&name, server_id).await;
    let ledger = Ledger::default();
    server.register(ledger.service()).await.unwrap();
    let (release, started) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    server
        .register(gated("slow", started.clone(), release.clone()))
        .await
        .unwrap();
    client
        .wait_for_cluster(WAIT, |v| v.node(server_id).is_some())
        .await
        .unwrap();

    for n in 0..NOTES {
        let note = Note { key: "k".into(), n };
        client
            .send(note)
            .service("work")
            .node(server_id)
            .await
            .unwrap();
    }
    let in_flight = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .call(Work {
                    key: "w".into(),
                    n: 42,
                })
                .service("slow")
                .node(server_id)
                .timeout(WAIT)
                .await
        }
    });
    started.notified().await;
    ledger.until(HOLD_AFTER).await;

    // Stop while notes are still queued and a request is being handled.
    let stopping = tokio::spawn({
        let server = server.clone();
        async move { server.shutdown().await }
    });
    // Once the node has stopped taking notes, let the held ones finish.
    let queue = format!("{name}.message.work.{server_id}");
    tokio::time::timeout(WAIT, async {
        loop {
            // rabbitmqctl blocks: run it aside, so the node keeps stopping.
            let q = queue.clone();
            let now = tokio::task::spawn_blocking(move || consumers(&q));
            if now.await.unwrap() == Some(0) {
                break;
            }
        }
    })
    .await
    .expect("the stopping node cancels its consumers");
    ledger.gate.add_permits(NOTES as usize);
    release.notify_one();
    tokio::time::timeout(WAIT, stopping).await.unwrap().unwrap();
    let done = tokio::time::timeout(WAIT, in_flight)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.unwrap().n, 42, "the in-flight request was answered");
    client
        .wait_for_cluster(WAIT, |v| v.node(server_id).is_none())
        .await
        .expect("`left` reaches the others (heartbeats are 30 s apart)");

    let handled = ledger.count();
    assert!(
        handled < NOTES as usize,
        "the test must stop the node mid-way"
    );
    assert_eq!(
        queue_counts(&queue),
        Some(format!("{}\t0", NOTES as usize - handled)),
        "every note not handled is still queued, none is held or lost"
    );

    // The node comes back under the same id and finishes the work.
    let again = node(&name, server_id).await;
    again.register(ledger.service()).await.unwrap();
    ledger.until(NOTES as usize).await;
    let mut seen = ledger.seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(
        seen,
        (0..NOTES).collect::<Vec<_>>(),
        "each note exactly once"
    );

    again.shutdown().await;
    client.shutdown().await;
    assert_eq!(
        queue_counts(&queue),
        None,
        "an empty queue is removed on stop"
    );
    delete_bus(&name).await;
}
