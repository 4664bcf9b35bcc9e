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
/// lines are left out. `RUST_LOG=amqprs=debug` brings them back (`lapin`
/// is the client of the bench's raw programs and the tests' helpers).
const QUIET_CLIENT: &str = "amqprs=off,lapin=off";

/// Where spans go when they leave the process (`--otlp-endpoint` or the
/// standard `OTEL_EXPORTER_OTLP_*` variables); unset, nothing is exported.
static EXPORTER: OnceLock<cloudbus::otlp::OtlpExporter> = OnceLock::new();

/// Starts exporting spans over OTLP/HTTP to `endpoint`, else where the
/// standard variables say, as `service_name`. Called once from `main`,
/// before the async runtime: the exporter sends from a thread of its own.
pub fn start_export(endpoint: Option<&str>, service_name: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let exporter = match endpoint {
        Some(endpoint) => Some(cloudbus::otlp::OtlpExporter::new(endpoint, service_name)?),
        None => cloudbus::otlp::OtlpExporter::from_env(service_name)
            .context("reading OTEL_EXPORTER_OTLP_ENDPOINT")?,
    };
    if let Some(exporter) = exporter {
        let _ = EXPORTER.set(exporter);
    }
    Ok(())
}

/// Sends the spans still buffered (a node's last calls, a one-shot
/// command's only one) before the process exits.
pub fn finish_export() {
    if let Some(exporter) = EXPORTER.get() {
        if let Err(error) = exporter.shutdown() {
            eprintln!("warning: {error}");
        }
    }
}

/// Installs the log subscriber: `RUST_LOG` if set, else `default`; and
/// the span exporter if [`start_export`] started one. The log filter
/// applies to the log lines only, so the bus's `debug` spans reach the
/// exporter without filling the log.
pub fn init(default: &str) {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default},{QUIET_CLIENT}")));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let logs = match FORMAT.get().copied().unwrap_or_default() {
        LogFormat::Text => fmt
            .with_ansi(std::io::stderr().is_terminal())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => fmt
            .json()
            .with_current_span(true)
            .with_filter(filter)
            .boxed(),
    };
    // A second init (in tests) is harmless; keep the first. Without an
    // exporter no second layer at all: an absent `Option` layer counts as
    // interested in every callsite, which would make the bus's disabled
    // debug spans real (an allocation and more per message).
    let registry = tracing_subscriber::registry().with(logs);
    let _ = match EXPORTER.get() {
        Some(exporter) => registry.with(exporter.layer()).try_init(),
        None => registry.try_init(),
    };
}
