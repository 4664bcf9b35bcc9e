//! `cloudbus stats`: per message type, how many each node handled and how
//! long they took (ZStack's message statistics).

use std::time::Duration;

use anyhow::bail;
use cloudbus::{GetStatistics, NodeId, Statistics};
use serde_json::json;

use super::broker::BrokerArgs;

/// Flags of `cloudbus stats`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Only this node (default: every live node).
    #[arg(long)]
    node: Option<NodeId>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Asks every node (or one) for its statistics and prints them.
pub async fn run(args: Args) -> anyhow::Result<()> {
    super::logging::init("warn");
    let bus = args.broker.observer().await?;
    let nodes = super::broker::target_nodes(&bus, args.node).await;
    let mut all: Vec<Statistics> = Vec::new();
    let mut failure = None;
    for node in nodes {
        match bus
            .call(GetStatistics {})
            .node(node)
            .timeout(Duration::from_secs(5))
            .await
        {
            Ok(stats) => all.push(stats),
            Err(error) => failure = Some(format!("node {node}: {error}")),
        }
    }
    bus.shutdown().await;
    if all.is_empty() {
        bail!(failure.unwrap_or_else(|| "no live node answered".to_string()));
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&json!(all))?);
    } else {
        print!("{}", table(&all));
    }
    if let Some(failure) = failure {
        eprintln!("warning: {failure}");
    }
    Ok(())
}

/// One row per node and message type that saw traffic.
fn table(all: &[Statistics]) -> String {
    let mut rows = vec![
        ["NODE", "TYPE", "COUNT", "MIN µs", "AVG µs", "MAX µs"]
            .map(String::from)
            .to_vec(),
    ];
    for stats in all {
        for t in stats.types.iter().filter(|t| t.count > 0) {
            rows.push(vec![
                stats.node.to_string()[..8].to_string(),
                t.type_name.clone(),
                t.count.to_string(),
                t.min_us.to_string(),
                t.avg_us.to_string(),
                t.max_us.to_string(),
            ]);
        }
    }
    super::table::render(&rows, &[2, 3, 4, 5])
}
