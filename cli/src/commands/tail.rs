//! `cloudbus tail`: print events as JSON lines as they are published.

use std::io::Write as _;

use anyhow::Context as _;
use cloudbus::RawEvent;
use serde_json::{Value, json};

use super::broker::BrokerArgs;

/// Flags of `cloudbus tail`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Which event types, as an AMQP topic pattern (`vm.*`, `#` for all).
    #[arg(default_value = "#")]
    pattern: String,
    /// Exit after this many events.
    #[arg(long)]
    count: Option<u64>,
}

/// Prints one JSON object per event on stdout until Ctrl-C/SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    super::logging::init("warn");
    let bus = args.broker.observer().await?;
    let mut events = bus.subscribe_pattern(&args.pattern).await?;
    // Tell whoever waits (people, scripts) that events now reach us.
    tracing::info!(pattern = %args.pattern, bus = %bus.name(), "listening");
    eprintln!("listening for {:?} on bus {:?}", args.pattern, bus.name());
    let mut printed = 0;
    let stop = super::signal::stop_requested();
    tokio::pin!(stop);
    let mut stdout = std::io::stdout().lock();
    while args.count.is_none_or(|n| printed < n) {
        let event = tokio::select! {
            event = events.recv() => event,
            () = &mut stop => None,
        };
        let Some(event) = event else { break };
        writeln!(stdout, "{}", line(event)).context("writing to stdout")?;
        stdout.flush().context("writing to stdout")?;
        printed += 1;
    }
    drop(stdout);
    if events.lagged() > 0 {
        eprintln!(
            "warning: {} events were dropped because output was too slow",
            events.lagged()
        );
    }
    bus.shutdown().await;
    Ok(())
}

fn line(event: RawEvent) -> Value {
    let envelope = &event.envelope;
    let body = event
        .body
        .to_json()
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .unwrap_or(Value::Null);
    let mut line = json!({
        "type": envelope.type_name,
        "source": envelope.source.to_string(),
        "id": envelope.id.to_string(),
        "body": body,
    });
    if let Some(api) = envelope.api_id {
        line["api_id"] = json!(api.to_string());
    }
    line
}
