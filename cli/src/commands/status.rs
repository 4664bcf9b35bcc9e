//! `cloudbus status`: the cluster as its members announce it.

use cloudbus::address::BusNames;
use std::time::{Duration, SystemTime};

use cloudbus::cluster::{ClusterView, NodeStatus};
use serde_json::json;

use super::broker::{BrokerArgs, DISCOVERY_LIMIT, DISCOVERY_QUIET};

/// Flags of `cloudbus status`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Prints every live node: its broker, services, heartbeat age, queues.
pub async fn run(args: Args) -> anyhow::Result<()> {
    super::logging::init("warn");
    let bus = args.broker.observer().await?;
    let view = bus.settled_cluster(DISCOVERY_QUIET, DISCOVERY_LIMIT).await;
    bus.shutdown().await;
    let bus_name = &args.broker.bus;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(bus_name, &view))?
        );
        return Ok(());
    }
    if view.is_empty() {
        println!("bus {bus_name:?}: no live node answered");
        return Ok(());
    }
    println!("bus {bus_name:?}: {} live node(s)\n", view.len());
    let mut rows = vec![
        ["NODE", "BROKER", "SERVICES", "HEARTBEAT", "LAST SEEN", "UP"]
            .map(String::from)
            .to_vec(),
    ];
    for node in view.nodes() {
        rows.push(vec![
            node.node.to_string(),
            node.broker.clone().unwrap_or_else(|| "-".into()),
            node.services.join(","),
            format!("every {}", short(node.interval)),
            format!("{} ago", short(node.last_seen)),
            short(uptime(node)),
        ]);
    }
    print!("{}", super::table::render(&rows, &[4, 5]));
    println!("\nqueues:");
    for node in view.nodes() {
        for queue in queues(bus_name, node) {
            println!("  {queue}");
        }
    }
    Ok(())
}

/// The queues a node holds, by the wire protocol's names.
fn queues(bus: &str, node: &NodeStatus) -> Vec<String> {
    node.services
        .iter()
        .map(|s| BusNames::new(bus).service_queue(s, node.node))
        .chain([BusNames::new(bus).event_queue(node.node)])
        .collect()
}

fn to_json(bus: &str, view: &ClusterView) -> serde_json::Value {
    let nodes: Vec<_> = view
        .nodes()
        .iter()
        .map(|n| {
            json!({
                "node": n.node.to_string(),
                "broker": n.broker,
                "services": n.services,
                "interval_ms": n.interval.as_millis() as u64,
                "last_seen_ms": n.last_seen.as_millis() as u64,
                "uptime_s": uptime(n).as_secs(),
                "queues": queues(bus, n),
            })
        })
        .collect();
    json!({ "bus": bus, "nodes": nodes })
}

fn uptime(node: &NodeStatus) -> Duration {
    SystemTime::now()
        .duration_since(node.started_at)
        .unwrap_or_default()
}

/// A duration as people read it: `850ms`, `12s`, `3m20s`.
fn short(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => format!("{}ms", d.as_millis()),
        1..60 => format!("{secs}s"),
        60..3600 => format!("{}m{}s", secs / 60, secs % 60),
        _ => format!("{}h{}m", secs / 3600, secs % 3600 / 60),
    }
}
