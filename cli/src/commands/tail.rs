//! `cloudbus tail`: print events as they are published: aligned lines for
//! people (colours only on a terminal), JSON lines for scripts (`--json`).

use std::io::{IsTerminal, Write as _};
use std::time::UNIX_EPOCH;

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
    /// One JSON object per event instead of a line for people.
    #[arg(long)]
    json: bool,
}

/// Prints each event on stdout until Ctrl-C/SIGTERM (or `--count`).
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
    let colour = !args.json && std::io::stdout().is_terminal();
    let mut stdout = std::io::stdout().lock();
    while args.count.is_none_or(|n| printed < n) {
        let event = tokio::select! {
            event = events.recv() => event,
            () = &mut stop => None,
        };
        let Some(event) = event else { break };
        let value = line(event);
        let text = if args.json {
            value.to_string()
        } else {
            human(&value, colour)
        };
        writeln!(stdout, "{text}").context("writing to stdout")?;
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

/// `12:04:05.123  vm.VmStateChanged      from 1a2b3c4d  {"uuid":…}`
fn human(line: &Value, colour: bool) -> String {
    let (on, off) = if colour {
        ("\x1b[1;36m", "\x1b[0m")
    } else {
        ("", "")
    };
    let at = line["at_ms"].as_u64().unwrap_or(0);
    let (secs, ms) = (at / 1000 % 86_400, at % 1000);
    let source = line["source"].as_str().unwrap_or("");
    let api = line["api_id"]
        .as_str()
        .map(|id| format!("  api {}", &id[..8.min(id.len())]))
        .unwrap_or_default();
    format!(
        "{:02}:{:02}:{:02}.{ms:03}  {on}{:<28}{off}  from {}{api}  {}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        line["type"].as_str().unwrap_or(""),
        &source[..8.min(source.len())],
        line["body"]
    )
}

fn line(event: RawEvent) -> Value {
    let envelope = &event.envelope;
    let body = event
        .body
        .to_json()
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .unwrap_or(Value::Null);
    let at_ms = envelope
        .created_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut line = json!({
        "at_ms": at_ms,
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
