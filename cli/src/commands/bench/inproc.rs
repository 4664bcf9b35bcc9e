//! `inproc-rpc`: request/reply on the embedded bus against a tokio task
//! serving an mpsc channel and answering on oneshots.

use std::sync::Arc;
use std::time::Duration;

use cloudbus::Bus;
use tokio::sync::{mpsc, oneshot};

use super::measure::{Sample, interleaved};
use super::messages::{Echo, EchoReply, answer, echo_service};

pub async fn run(level: usize, duration: Duration) -> anyhow::Result<(Sample, Sample)> {
    let bus = Bus::embedded();
    bus.register(echo_service(level)).await?;
    let (tx, mut rx) = mpsc::channel::<(Echo, oneshot::Sender<EchoReply>)>(1024);
    let server = tokio::spawn(async move {
        while let Some((req, reply)) = rx.recv().await {
            let _ = reply.send(answer(req));
        }
    });
    let buses = per_worker(&bus, level);
    let calls = move |i: usize| {
        let bus = buses[i % buses.len()].clone();
        async move {
            bus.call(Echo::unkeyed(i as u64)).await?;
            Ok(())
        }
    };
    let senders = per_worker(&tx, level);
    drop(tx);
    let raw = move |i: usize| {
        let tx = senders[i % senders.len()].clone();
        async move {
            let (reply, answered) = oneshot::channel();
            tx.send((Echo::unkeyed(i as u64), reply)).await?;
            answered.await?;
            Ok(())
        }
    };
    let measured = interleaved(level, duration, calls, raw).await;
    bus.shutdown().await;
    server.abort();
    measured
}

/// A handle for each of `workers` workers (worker `w` makes calls `i` with
/// `i % workers == w`), each behind an `Arc` of its own, as a careful raw
/// program gives each task its own sender: cloning the one sender (or bus)
/// for every call puts all workers on its counter's cache line, which
/// alone made the channel baseline a quarter slower than the reference
/// `tokio-rpc`.
fn per_worker<T: Clone>(handle: &T, workers: usize) -> Arc<[Arc<T>]> {
    (0..workers.max(1))
        .map(|_| Arc::new(handle.clone()))
        .collect()
}
