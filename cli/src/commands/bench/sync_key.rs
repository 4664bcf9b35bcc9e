//! `sync-key`: per-resource serialized handling on the embedded bus with
//! 1, 100 and 10,000 distinct keys, against the same service without keys.

use std::time::Duration;

use cloudbus::{Bus, Context, ErrorCode, Service};

use super::measure::{Sample, interleaved};
use super::messages::{Echo, EchoReply, answer, echo_service};

struct Keyed;

#[cloudbus::handlers]
impl Keyed {
    #[sync_key(req.sync_key())]
    async fn echo(&self, req: Echo, _ctx: Context) -> Result<EchoReply, ErrorCode> {
        Ok(answer(req))
    }
}

pub async fn run(level: usize, keys: u64, duration: Duration) -> anyhow::Result<(Sample, Sample)> {
    let keyed = Bus::embedded();
    keyed
        .register(
            Service::builder("bench", Keyed)
                .concurrency(level.max(64))
                .build(),
        )
        .await?;
    let free = Bus::embedded();
    free.register(echo_service(level)).await?;
    let (to_keyed, to_free) = (keyed.clone(), free.clone());
    let measured = interleaved(
        level,
        duration,
        move |i| call(to_keyed.clone(), i, keys),
        move |i| call(to_free.clone(), i, keys),
    )
    .await;
    keyed.shutdown().await;
    free.shutdown().await;
    measured
}

/// One worker's call on one of `keys` resources.
async fn call(bus: Bus, i: usize, keys: u64) -> anyhow::Result<()> {
    bus.call(Echo::new(i as u64, keys)).await?;
    Ok(())
}
