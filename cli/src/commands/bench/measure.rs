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
    // Warm-up: connections, caches, JIT-free but allocator-warm.
    run(
        workers,
        duration.mul_f64(0.2).min(Duration::from_millis(500)),
        op.clone(),
    )
    .await?;
    let cpu = cpu_seconds();
    let allocations = crate::alloc::allocations();
    let started = Instant::now();
    let (histogram, done) = run(workers, duration, op).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let allocated = crate::alloc::allocations() - allocations;
    Ok(Sample {
        ops_per_sec: done as f64 / elapsed,
        p50_us: histogram.value_at_quantile(0.5),
        p99_us: histogram.value_at_quantile(0.99),
        max_us: histogram.max(),
        cpu_s: cpu_seconds() - cpu,
        allocs_per_op: allocated as f64 / done.max(1) as f64,
    })
}

async fn run<F, Fut>(
    workers: usize,
    duration: Duration,
    op: F,
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
                while Instant::now() < deadline {
                    let start = Instant::now();
                    op(i).await?;
                    histogram.saturating_record(start.elapsed().as_micros() as u64);
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
