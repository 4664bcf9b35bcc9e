//! Logs go to stderr so that stdout stays for results.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the log subscriber: `RUST_LOG` if set, else `default`.
pub fn init(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A second init (in tests) is harmless; keep the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}
