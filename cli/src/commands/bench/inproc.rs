//! `inproc-rpc`: request/reply on the embedded bus against a tokio task
//! serving an mpsc channel and answering on oneshots.

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
    let calls = {
        let bus = bus.clone();
        move |i: usize| {
            let bus = bus.clone();
            async move {
                bus.call(Echo::unkeyed(i as u64)).await?;
                Ok(())
            }
        }
    };
    let raw = move |i: usize| {
        let tx = tx.clone();
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
