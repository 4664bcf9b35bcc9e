//! A Rust peer for the Python package's tests and benchmark
//! (`clients/python`): what the `cloudbus` command line cannot do in one
//! process, many calls.
//!
//! ```text
//! interop_peer owners --bus B --members N [--amqp-url U]
//!     keys on stdin, one a line; for each, calls cloudbus.Ping on the
//!     owner of the key by the ring and prints {"key", "owner", "answered_by"}
//! interop_peer bench --bus B --node ID --service S --type T [--body JSON]
//!                    --in-flight N --secs S [--amqp-url U]
//!     calls S on node ID with N requests in flight for S seconds and
//!     prints {"in_flight", "secs", "round_trips", "rt_per_s", "p50_us", "p99_us"}
//! ```
//!
//! Both join as observers, so they take no share of the ring.

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudbus::{Bus, NodeId};
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

async fn run() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let mut flags = HashMap::new();
    while let Some(flag) = args.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| format!("expected a --flag, got {flag:?}"))?;
        let value = args
            .next()
            .ok_or_else(|| format!("--{name} needs a value"))?;
        flags.insert(name.to_string(), value);
    }
    let flag = |name: &str| {
        flags
            .get(name)
            .cloned()
            .ok_or_else(|| format!("--{name} is required"))
    };
    let url = flags
        .get("amqp-url")
        .cloned()
        .or_else(|| std::env::var("CLOUDBUS_AMQP_URL").ok())
        .unwrap_or_else(|| cloudbus::transport::amqp::DEFAULT_URL.to_string());
    let bus = Bus::builder()
        .name(flag("bus")?)
        .amqp(url)
        .observer()
        .build()
        .await?;
    let outcome = match command.as_str() {
        "owners" => owners(&bus, flag("members")?.parse()?).await,
        "bench" => {
            let node: NodeId = flag("node")?.parse()?;
            let in_flight: usize = flag("in-flight")?.parse()?;
            let secs: f64 = flag("secs")?.parse()?;
            let body = flags.get("body").cloned().unwrap_or_else(|| "{}".into());
            bench(
                &bus,
                Target {
                    node,
                    service: flag("service")?,
                    type_name: flag("type")?,
                    body,
                },
                in_flight.max(1),
                Duration::from_secs_f64(secs),
            )
            .await
        }
        other => Err(format!("no command {other:?}: owners or bench").into()),
    };
    bus.shutdown().await;
    outcome
}

/// Waits for `members` live nodes, then routes a ping by owner for each key.
async fn owners(bus: &Bus, members: usize) -> Result<(), Error> {
    let view = bus
        .wait_for_cluster(Duration::from_secs(20), |view| view.len() >= members)
        .await?;
    let keys: Vec<String> = std::io::stdin().lock().lines().collect::<Result<_, _>>()?;
    let answers = futures::future::try_join_all(keys.iter().map(|key| async move {
        let pong = bus
            .call_json("cloudbus.Ping", "{}")
            .service("cloudbus")
            .owner_of(key.clone())
            .timeout(Duration::from_secs(20))
            .await?;
        let pong: Value = serde_json::from_slice(&pong)?;
        Ok::<_, Error>(pong["node"].clone())
    }))
    .await?;
    for (key, answered_by) in keys.iter().zip(answers) {
        let owner = view.owner(key).map(|node| node.to_string());
        println!(
            "{}",
            json!({"key": key, "owner": owner, "answered_by": answered_by})
        );
    }
    Ok(())
}

struct Target {
    node: NodeId,
    service: String,
    type_name: String,
    body: String,
}

/// A closed loop of `in_flight` callers for `secs`, after a short warm-up.
async fn bench(bus: &Bus, target: Target, in_flight: usize, secs: Duration) -> Result<(), Error> {
    let target = Arc::new(target);
    let call = |target: Arc<Target>| {
        bus.call_json(target.type_name.clone(), target.body.clone())
            .service(target.service.clone())
            .node(target.node)
            .timeout(Duration::from_secs(30))
    };
    for _ in 0..in_flight.min(16) {
        call(target.clone()).await?;
    }
    let start = Instant::now();
    let deadline = start + secs;
    let workers = (0..in_flight).map(|_| {
        let target = target.clone();
        async move {
            let mut latencies = Vec::new();
            loop {
                let sent = Instant::now();
                if sent >= deadline {
                    return Ok::<_, Error>(latencies);
                }
                call(target.clone()).await?;
                let done = Instant::now();
                if done > deadline {
                    return Ok(latencies);
                }
                latencies.push((done - sent).as_micros() as u64);
            }
        }
    });
    let mut latencies: Vec<u64> = futures::future::try_join_all(workers)
        .await?
        .into_iter()
        .flatten()
        .collect();
    latencies.sort_unstable();
    let at = |p: f64| {
        latencies
            .get(((latencies.len().saturating_sub(1)) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{}",
        json!({
            "in_flight": in_flight,
            "secs": secs.as_secs_f64(),
            "round_trips": latencies.len(),
            "rt_per_s": latencies.len() as f64 / secs.as_secs_f64(),
            "p50_us": at(0.5),
            "p99_us": at(0.99),
        })
    );
    Ok(())
}
