//! `sync-key`: per-resource serialized handling on the embedded bus with
//! 1, 100 and 10,000 distinct keys, against the same service without keys.

use std::time::Duration;

use cloudbus::{Bus, Context, ErrorCode, Service};

use super::measure::{Sample, closed_loop};
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
    let bus = Bus::embedded();
    bus.register(
        Service::builder("bench", Keyed)
            .concurrency(level.max(64))
            .build(),
    )
    .await?;
    let keyed = load(&bus, level, keys, duration).await?;
    bus.shutdown().await;
    let bus = Bus::embedded();
    bus.register(echo_service(level)).await?;
    let free = load(&bus, level, keys, duration).await?;
    bus.shutdown().await;
    Ok((keyed, free))
}

async fn load(bus: &Bus, level: usize, keys: u64, duration: Duration) -> anyhow::Result<Sample> {
    let bus = bus.clone();
    closed_loop(level, duration, move |i| {
        let bus = bus.clone();
        async move {
            bus.call(Echo::new(i as u64, keys)).await?;
            Ok(())
        }
    })
    .await
}
