//! Logs go to stderr so that stdout stays for results: readable text by
//! default (colours only on a terminal), or JSON lines for log pipelines.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the message's span fields.
    Json,
}

static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Chooses the format for [`init`]; called once from `main`.
pub fn set_format(format: LogFormat) {
    let _ = FORMAT.set(format);
}

/// The AMQP client logs its own view of every connection failure (and of
/// its recovery giving up) as errors; the bus reports the same failures
/// once, clearly and with the password hidden, so by default the client's
/// lines are left out. `RUST_LOG=lapin=debug` brings them back.
const QUIET_CLIENT: &str = "lapin=off";

/// Installs the log subscriber: `RUST_LOG` if set, else `default`.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},{QUIET_CLIENT}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second init (in tests) is harmless; keep the first.
    let _ = match FORMAT.get().copied().unwrap_or_default() {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}
