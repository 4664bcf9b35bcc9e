//! `cloudbus ping`: ask every live node of the bus who it is, and time the
//! round trip through the broker.

use std::time::{Duration, Instant};

use anyhow::bail;
use cloudbus::{NodeId, Ping, Pong};
use serde_json::json;

use super::broker::BrokerArgs;

/// Flags of `cloudbus ping`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Only this node (default: every live node).
    #[arg(long)]
    node: Option<NodeId>,
    /// How long to wait for each node's answer, e.g. `5s` or `500ms`.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// One node's answer, or why there was none.
struct Answer {
    node: NodeId,
    rtt: Duration,
    outcome: Result<Pong, cloudbus::ErrorCode>,
}

/// Pings the nodes at once and prints one line each; fails (exit 1) if a
/// node did not answer, as `ping` does.
pub async fn run(args: Args) -> anyhow::Result<()> {
    super::logging::init("warn");
    let bus = args.broker.observer().await?;
    let nodes = super::broker::target_nodes(&bus, args.node).await;
    let answers = futures::future::join_all(nodes.into_iter().map(|node| {
        let call = bus.call(Ping {}).node(node).timeout(args.timeout);
        async move {
            let sent = Instant::now();
            let outcome = call.await;
            Answer {
                node,
                rtt: sent.elapsed(),
                outcome,
            }
        }
    }))
    .await;
    bus.shutdown().await;
    if answers.is_empty() {
        bail!("no live node on bus {:?}", args.broker.bus);
    }
    if args.json {
        let lines: Vec<_> = answers.iter().map(to_json).collect();
        println!("{}", serde_json::to_string_pretty(&lines)?);
    } else {
        print!("{}", table(&answers));
    }
    let failed = answers.iter().filter(|a| a.outcome.is_err()).count();
    if failed > 0 {
        bail!("{failed} of {} node(s) did not answer", answers.len());
    }
    Ok(())
}

fn to_json(answer: &Answer) -> serde_json::Value {
    match &answer.outcome {
        Ok(pong) => json!({
            "node": answer.node.to_string(),
            "rtt_ms": answer.rtt.as_secs_f64() * 1000.0,
            "version": pong.version,
            "broker": pong.broker,
            "services": pong.services,
        }),
        Err(error) => json!({
            "node": answer.node.to_string(),
            "error": error.to_string(),
        }),
    }
}

fn table(answers: &[Answer]) -> String {
    let mut rows = vec![
        ["NODE", "RTT", "VERSION", "BROKER", "SERVICES"]
            .map(String::from)
            .to_vec(),
    ];
    for answer in answers {
        rows.push(match &answer.outcome {
            Ok(pong) => vec![
                answer.node.to_string(),
                format!("{:.1}ms", answer.rtt.as_secs_f64() * 1000.0),
                pong.version.clone(),
                pong.broker.clone().unwrap_or_else(|| "-".into()),
                pong.services.join(","),
            ],
            Err(error) => vec![
                answer.node.to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                format!("no answer: {error}"),
            ],
        });
    }
    super::table::render(&rows, &[1])
}
