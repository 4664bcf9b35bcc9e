//! Closed-loop load: N workers each send, wait for the answer, repeat,
//! until the time is up. Latencies go into an HDR histogram.

use std::future::Future;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// What one side (bus or baseline) achieved at one level.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Completed operations per second.
    pub ops_per_sec: f64,
    /// Median latency, µs.
    pub p50_us: u64,
    /// 99th percentile latency, µs.
    pub p99_us: u64,
    /// Worst latency, µs.
    pub max_us: u64,
    /// CPU time of the whole process during the run, seconds.
    pub cpu_s: f64,
    /// Heap allocations of the whole process per completed operation.
    pub allocs_per_op: f64,
}

/// Runs `workers` loops of `op` for `duration` (after a short warm-up).
pub async fn closed_loop<F, Fut>(
    workers: usize,
    duration: Duration,
    op: F,
) -> anyhow::Result<Sample>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    warm_up(workers, duration, op.clone()).await?;
    let mut tally = Tally::new()?;
    tally.measure(workers, duration, op, 1).await?;
    Ok(tally.sample())
}

/// Like [`closed_loop`] for two sides at once (the bus and its baseline),
/// measured in alternating slices of about a quarter of a second, the
/// order switching every round: on shared cores whose speed drifts by
/// 1.5–2× within seconds, each side then sees the same machine, so their
/// ratio stays honest where two runs one after the other would not.
/// Only for sides that can stand ready side by side (in process).
pub async fn interleaved<A, FutA, B, FutB>(
    workers: usize,
    duration: Duration,
    a: A,
    b: B,
) -> anyhow::Result<(Sample, Sample)>
where
    A: Fn(usize) -> FutA + Clone + Send + 'static,
    FutA: Future<Output = anyhow::Result<()>> + Send,
    B: Fn(usize) -> FutB + Clone + Send + 'static,
    FutB: Future<Output = anyhow::Result<()>> + Send,
{
    warm_up(workers, duration, a.clone()).await?;
    warm_up(workers, duration, b.clone()).await?;
    // Calls take about a microsecond here: reading the clock twice per
    // call would cost the faster side a tenth of its time. One call in 16
    // is timed, as in a careful raw program.
    const TIMED: u64 = 16;
    let rounds = (duration.as_secs_f64() / SLICE.as_secs_f64())
        .round()
        .max(1.0) as u32;
    let slice = duration / rounds;
    let (mut tally_a, mut tally_b) = (Tally::new()?, Tally::new()?);
    for round in 0..rounds {
        if round % 2 == 0 {
            tally_a.measure(workers, slice, a.clone(), TIMED).await?;
            tally_b.measure(workers, slice, b.clone(), TIMED).await?;
        } else {
            tally_b.measure(workers, slice, b.clone(), TIMED).await?;
            tally_a.measure(workers, slice, a.clone(), TIMED).await?;
        }
    }
    Ok((tally_a.sample(), tally_b.sample()))
}

/// How long one side runs before the other takes over in [`interleaved`].
const SLICE: Duration = Duration::from_millis(250);

/// Warm-up: connections, caches, JIT-free but allocator-warm.
async fn warm_up<F, Fut>(workers: usize, duration: Duration, op: F) -> anyhow::Result<()>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let warm_up = duration.mul_f64(0.2).min(Duration::from_millis(500));
    run(workers, warm_up, op, 1).await.map(drop)
}

/// What one side did over all its measured stretches.
struct Tally {
    histogram: Histogram<u64>,
    done: u64,
    elapsed: Duration,
    cpu_s: f64,
    allocations: u64,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            histogram: histogram()?,
            done: 0,
            elapsed: Duration::ZERO,
            cpu_s: 0.0,
            allocations: 0,
        })
    }

    /// Runs `op` for `duration` and adds what it did, timing one call in
    /// `timed`.
    async fn measure<F, Fut>(
        &mut self,
        workers: usize,
        duration: Duration,
        op: F,
        timed: u64,
    ) -> anyhow::Result<()>
    where
        F: Fn(usize) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send,
    {
        let cpu = cpu_seconds();
        let allocations = crate::alloc::allocations();
        let started = Instant::now();
        let (histogram, done) = run(workers, duration, op, timed).await?;
        self.elapsed += started.elapsed();
        self.allocations += crate::alloc::allocations() - allocations;
        self.cpu_s += cpu_seconds() - cpu;
        self.histogram.add(histogram)?;
        self.done += done;
        Ok(())
    }

    fn sample(&self) -> Sample {
        Sample {
            ops_per_sec: self.done as f64 / self.elapsed.as_secs_f64(),
            p50_us: self.histogram.value_at_quantile(0.5),
            p99_us: self.histogram.value_at_quantile(0.99),
            max_us: self.histogram.max(),
            cpu_s: self.cpu_s,
            allocs_per_op: self.allocations as f64 / self.done.max(1) as f64,
        }
    }
}

async fn run<F, Fut>(
    workers: usize,
    duration: Duration,
    op: F,
    timed: u64,
) -> anyhow::Result<(Histogram<u64>, u64)>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send,
{
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..workers.max(1))
        .map(|worker| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut histogram = histogram()?;
                let mut done = 0u64;
                let mut i = worker;
                // Which calls are timed is drawn at random: every n-th
                // would line up with tokio's task budget (a task yields
                // after 128 units), timing mostly or never the calls that
                // wait a round of the run queue, and skew the percentiles.
                let mut draw = (worker as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                loop {
                    // The clock is read for timed calls only, the deadline
                    // checked with them.
                    draw ^= draw << 13;
                    draw ^= draw >> 7;
                    draw ^= draw << 17;
                    if draw % timed == 0 {
                        let start = Instant::now();
                        if start >= deadline {
                            break;
                        }
                        op(i).await?;
                        histogram.saturating_record(start.elapsed().as_micros() as u64);
                    } else {
                        op(i).await?;
                    }
                    done += 1;
                    i += workers;
                }
                Ok::<_, anyhow::Error>((histogram, done))
            })
        })
        .collect();
    let mut total = histogram()?;
    let mut done = 0;
    for task in tasks {
        let (histogram, n) = task.await??;
        total.add(histogram)?;
        done += n;
    }
    Ok((total, done))
}

/// Latencies from 1 µs to 60 s at 3 significant digits: a fixed range, so
/// no value is clamped and histograms of all workers add up.
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// User + system CPU time of this process, from /proc (0 elsewhere).
pub fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 (1-based), 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory of this process in MiB, from /proc (0 elsewhere).
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
