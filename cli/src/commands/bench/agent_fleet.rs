//! `agent-fleet`: one management node tracking a fleet of simulated hosts
//! (served by a `cloudbus agent` child process, one HTTP listener per
//! host): the time of a full ping sweep, repeated to show that memory does
//! not grow, then one callback command to every host; with the node's
//! open sockets and file descriptors sampled throughout.

use std::collections::HashSet;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cloudbus::Bus;
use cloudbus_agent::AgentClient;
use cloudbus_demo::host::{HostRecord, HostTracker, TrackerConfig};
use cloudbus_demo::hypervisor::BootVm;
use futures::StreamExt;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

/// What one run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub hosts: usize,
    pub connection_cap: usize,
    /// Seconds per full ping sweep, in order.
    pub sweeps_s: Vec<f64>,
    /// Hosts that answered in the last sweep.
    pub answered: usize,
    pub rss_after_first_sweep_mib: f64,
    pub rss_after_last_sweep_mib: f64,
    /// Resident memory after each sweep.
    pub rss_per_sweep_mib: Vec<f64>,
    /// One callback command (a VM boot) to every host.
    pub commands_per_s: f64,
    pub command_p50_ms: f64,
    pub command_p99_ms: f64,
    pub command_failures: usize,
    /// The node's open TCP sockets at most during the sweeps (its
    /// listeners included).
    pub peak_sockets: usize,
    pub peak_fds: usize,
    /// The same while the callback commands ran: agents calling back hold
    /// connections to the node's callback listener too.
    pub peak_sockets_commands: usize,
}

/// Serves `hosts` simulated agents in a child process and measures one
/// node driving them with at most `cap` connections.
pub async fn run(hosts: usize, sweeps: usize, cap: usize) -> anyhow::Result<Report> {
    if hosts == 0 || sweeps == 0 || cap == 0 {
        bail!("--hosts, --sweeps and --connections must be at least 1");
    }
    // Each host's agent listens on a socket of the child, and the node
    // may hold `cap` connections: both need more than the usual 1024.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    if limit < (hosts + cap + 256) as u64 {
        bail!(
            "{hosts} hosts need about {} open files, and this process may open {limit}; \
             raise the hard limit (ulimit -Hn)",
            hosts + cap + 256
        );
    }
    let (mut child, inventory) = serve_agents(hosts).await?;
    let outcome = measure(inventory, sweeps, cap).await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    outcome
}

/// Starts `cloudbus agent --hosts N` and reads its `name=url` lines.
async fn serve_agents(hosts: usize) -> anyhow::Result<(tokio::process::Child, Vec<HostRecord>)> {
    let exe = std::env::current_exe().context("finding the cloudbus binary")?;
    let mut child = tokio::process::Command::new(exe)
        .args([
            "agent",
            "--hosts",
            &hosts.to_string(),
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--boot-time", "0ms", "--cpus", "64", "--memory-gb", "256"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting cloudbus agent")?;
    let mut lines = BufReader::new(child.stdout.take().context("the agent's stdout")?).lines();
    let mut inventory = Vec::with_capacity(hosts);
    while inventory.len() < hosts {
        let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .context("the agents did not all start within 120 s")??
            .context("cloudbus agent stopped before serving every host")?;
        inventory.push(HostRecord::parse(&line));
    }
    Ok((child, inventory))
}

async fn measure(inventory: Vec<HostRecord>, sweeps: usize, cap: usize) -> anyhow::Result<Report> {
    let hosts = inventory.len();
    let urls: Vec<String> = inventory.iter().map(|h| h.agent.clone()).collect();
    let bus = Bus::embedded();
    // A fleet larger than the socket budget: no idle connections, so open
    // connections never pass the cap.
    let client = AgentClient::builder()
        .per_host_limit(1)
        .max_connections(cap)
        .idle_per_host(0)
        .timeout(Duration::from_secs(60))
        .start()
        .await?;
    let tracker = HostTracker::new(
        inventory,
        client.clone(),
        TrackerConfig {
            interval: Duration::from_secs(3600),
            ping_timeout: Duration::from_secs(30),
            concurrency: cap,
        },
    );
    tracker.rebalance(&bus);

    let sampler = Sampler::start();
    let mut sweeps_s = Vec::with_capacity(sweeps);
    let mut answered = 0;
    let mut rss = Vec::with_capacity(sweeps);
    for _ in 0..sweeps {
        let started = Instant::now();
        answered = tracker.sweep(&bus).await;
        sweeps_s.push(started.elapsed().as_secs_f64());
        rss.push(rss_mib());
    }
    let (peak_sockets, peak_fds) = sampler.stop().await;
    let sampler = Sampler::start();

    let started = Instant::now();
    let latencies: Vec<Result<Duration, ()>> = futures::stream::iter(urls.iter().enumerate())
        .map(|(i, url)| {
            let client = &client;
            async move {
                let sent = Instant::now();
                let boot = BootVm {
                    vm_uuid: format!("bench-{i}"),
                    name: format!("bench-{i}"),
                    cpus: 1,
                    memory_gb: 1,
                };
                client
                    .call(url, boot)
                    .await
                    .map(|_| sent.elapsed())
                    .map_err(drop)
            }
        })
        .buffer_unordered(cap)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let (peak_sockets_commands, _) = sampler.stop().await;
    client.shutdown();
    bus.shutdown().await;

    let mut ok: Vec<Duration> = latencies.iter().filter_map(|l| l.ok()).collect();
    ok.sort();
    let quantile = |q: f64| {
        ok.get(((ok.len() as f64 * q) as usize).min(ok.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Ok(Report {
        hosts,
        connection_cap: cap,
        sweeps_s,
        answered,
        rss_after_first_sweep_mib: rss[0],
        rss_after_last_sweep_mib: rss[rss.len() - 1],
        rss_per_sweep_mib: rss,
        commands_per_s: ok.len() as f64 / elapsed,
        command_p50_ms: quantile(0.5),
        command_p99_ms: quantile(0.99),
        command_failures: latencies.len() - ok.len(),
        peak_sockets,
        peak_fds,
        peak_sockets_commands,
    })
}

/// The resident memory of this process now, in MiB.
fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Counts this process's open sockets and descriptors every few
/// milliseconds, on a thread of its own, keeping the peaks.
struct Sampler {
    stop: Arc<AtomicBool>,
    sockets: Arc<AtomicUsize>,
    fds: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (sockets, fds) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let thread = std::thread::spawn({
            let (stop, sockets, fds) = (stop.clone(), sockets.clone(), fds.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    let (s, f) = open_now();
                    sockets.fetch_max(s, Ordering::Relaxed);
                    fds.fetch_max(f, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        });
        Self {
            stop,
            sockets,
            fds,
            thread,
        }
    }

    async fn stop(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
        (
            self.sockets.load(Ordering::Relaxed),
            self.fds.load(Ordering::Relaxed),
        )
    }
}

/// This process's open TCP sockets and descriptors.
fn open_now() -> (usize, usize) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return (0, 0);
    };
    let mut inodes = HashSet::new();
    let mut fds = 0;
    for entry in entries.flatten() {
        fds += 1;
        if let Ok(target) = std::fs::read_link(entry.path())
            && let Some(inode) = target.to_str().and_then(|t| t.strip_prefix("socket:["))
        {
            inodes.insert(inode.trim_end_matches(']').to_string());
        }
    }
    (inodes.len(), fds)
}

/// The report as people read it.
pub fn table(report: &Report) -> String {
    let sweeps = &report.sweeps_s;
    let (min, max) = sweeps
        .iter()
        .fold((f64::MAX, 0.0_f64), |(lo, hi), s| (lo.min(*s), hi.max(*s)));
    let mean = sweeps.iter().sum::<f64>() / sweeps.len() as f64;
    format!(
        "agent-fleet: {} hosts, one node, at most {} connections\n\
         ping sweep ({} sweeps): first {:.2} s, mean {mean:.2} s, min {min:.2} s, max {max:.2} s; {} answered the last\n\
         RSS after sweep 1: {:.1} MiB; after sweep {}: {:.1} MiB\n\
         one callback command per host: {:.0} commands/s, p50 {:.1} ms, p99 {:.1} ms, {} failed\n\
         peak open sockets {} during the sweeps (listeners included), {} during the commands; peak file descriptors {}\n",
        report.hosts,
        report.connection_cap,
        sweeps.len(),
        sweeps[0],
        report.answered,
        report.rss_after_first_sweep_mib,
        sweeps.len(),
        report.rss_after_last_sweep_mib,
        report.commands_per_s,
        report.command_p50_ms,
        report.command_p99_ms,
        report.command_failures,
        report.peak_sockets,
        report.peak_sockets_commands,
        report.peak_fds,
    )
}
