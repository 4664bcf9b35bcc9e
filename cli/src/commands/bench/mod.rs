//! `cloudbus bench`: throughput and latency of the bus against raw
//! baselines measured in the same run, so ratios hold on any machine.

mod agent_fleet;
mod agent_http;
mod amqp_events;
mod amqp_rpc;
mod chart;
mod inproc;
mod measure;
mod messages;
mod raw_amqp;
mod report;
mod sync_key;
mod wire;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use cloudbus::transport::amqp;
use serde_json::json;

use report::Row;

const SCENARIOS: [&str; 5] = [
    "inproc-rpc",
    "amqp-rpc",
    "amqp-events",
    "sync-key",
    "agent-http",
];

/// Flags of `cloudbus bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Which scenario: inproc-rpc, amqp-rpc, amqp-events, sync-key,
    /// agent-http, or all; or agent-fleet (not part of all), one node
    /// tracking --hosts simulated hosts.
    #[arg(long, default_value = "all")]
    scenario: String,
    /// agent-fleet: how many hosts (their agents run in a child process).
    #[arg(long, default_value_t = 10_000)]
    hosts: usize,
    /// agent-fleet: how many full ping sweeps.
    #[arg(long, default_value_t = 20)]
    sweeps: usize,
    /// agent-fleet: connections the node may hold open to agents at most.
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// Seconds to measure each level of each side (fractions allowed).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Requests in flight (publishers for amqp-events), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,64,256")]
    in_flight: Vec<usize>,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    json: bool,
    /// Where to write the SVG chart.
    #[arg(long, default_value = "target/bench/bench.svg")]
    chart: PathBuf,
    /// The RabbitMQ URL for the amqp scenarios.
    #[arg(long, env = "CLOUDBUS_AMQP_URL", default_value = amqp::DEFAULT_URL, hide_env_values = true)]
    amqp_url: String,
}

/// Runs the chosen scenarios at every level and reports them.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // lapin reports connections closed under its feet at error level.
    super::logging::init("warn,lapin=off");
    if args.scenario == "agent-fleet" {
        let report = agent_fleet::run(args.hosts, args.sweeps, args.connections).await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", agent_fleet::table(&report));
        }
        return Ok(());
    }
    let chosen: Vec<&str> = match args.scenario.as_str() {
        "all" => SCENARIOS.to_vec(),
        one if SCENARIOS.contains(&one) => vec![one],
        other => bail!(
            "no scenario {other:?}; choose from all, {}",
            SCENARIOS.join(", ")
        ),
    };
    if !(args.duration > 0.0 && args.duration.is_finite()) || args.in_flight.contains(&0) {
        bail!("--duration must be above 0 and every --in-flight level at least 1");
    }
    let duration = Duration::from_secs_f64(args.duration);
    let name = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut progress = Progress::new(chosen.len() * args.in_flight.len());
    let mut rows = Vec::new();
    for scenario in chosen {
        for &level in &args.in_flight {
            progress.step(scenario, level);
            let url = args.amqp_url.as_str();
            match scenario {
                "inproc-rpc" => {
                    let (bus, base) = inproc::run(level, duration).await?;
                    rows.push(Row::new(scenario, level, String::new(), bus, base));
                }
                "amqp-rpc" => {
                    let run = amqp_rpc::run(url, &name, level, duration)
                        .await
                        .with_context(|| format!("amqp-rpc against {}", amqp::redact(url)))?;
                    rows.push(
                        Row::new(scenario, level, String::new(), run.bus, run.baseline)
                            .with_limit(run.limit)
                            .with_wire(run.wire),
                    );
                }
                "amqp-events" => {
                    for subscribers in [1, 3] {
                        let (bus, base, wire) =
                            amqp_events::run(url, &name, level, subscribers, duration)
                                .await
                                .with_context(|| {
                                    format!("amqp-events against {}", amqp::redact(url))
                                })?;
                        let variant = format!("{subscribers} sub");
                        rows.push(Row::new(scenario, level, variant, bus, base).with_wire(wire));
                    }
                }
                "agent-http" => {
                    for callback in [false, true] {
                        let (bus, base) = agent_http::run(level, callback, duration).await?;
                        let variant = if callback { "callback" } else { "sync" };
                        rows.push(Row::new(scenario, level, variant.into(), bus, base));
                    }
                }
                _ => {
                    for keys in [1, 100, 10_000] {
                        let (bus, base) = sync_key::run(level, keys, duration).await?;
                        rows.push(Row::new(scenario, level, format!("{keys} keys"), bus, base));
                    }
                }
            }
        }
    }
    progress.done();
    remove_exchanges(&args.amqp_url, &name).await;

    if let Some(dir) = args.chart.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.chart, chart::svg(&rows))
        .with_context(|| format!("writing {}", args.chart.display()))?;
    let peak_rss_mib = measure::peak_rss_mib();
    if args.json {
        let doc = json!({
            "machine": { "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()) },
            "duration_s": args.duration,
            "peak_rss_mib": peak_rss_mib,
            "chart": args.chart,
            "rows": rows,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", report::tables(&rows));
        println!(
            "\npeak RSS {peak_rss_mib:.1} MiB; chart: {}",
            args.chart.display()
        );
    }
    Ok(())
}

/// The bus's durable exchanges of this run (queues go with the nodes).
async fn remove_exchanges(url: &str, name: &str) {
    let Ok(conn) = lapin::Connection::connect(url, Default::default()).await else {
        return;
    };
    if let Ok(channel) = conn.create_channel().await {
        for ex in ["P2P", "BROADCAST"] {
            let _ = channel
                .exchange_delete(format!("{name}.{ex}").into(), Default::default())
                .await;
        }
    }
    let _ = conn.close(200, "done".into()).await;
}

/// One line per step on stderr; rewritten in place on a terminal.
struct Progress {
    total: usize,
    done: usize,
    tty: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self {
            total,
            done: 0,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn step(&mut self, scenario: &str, level: usize) {
        self.done += 1;
        let line = format!(
            "[{}/{}] {scenario} at {level} in flight",
            self.done, self.total
        );
        if self.tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }

    fn done(&self) {
        if self.tty {
            eprintln!();
        }
    }
}
