//! One module per subcommand.

pub mod agent;
pub mod bench;
mod broker;
pub mod call;
mod dashboard;
pub mod demo;
mod host_agents;
mod logging;
mod metrics;
pub mod node;
pub mod owner;
pub mod ping;
pub mod publish;
mod signal;
pub mod stats;
pub mod status;
mod table;
pub mod tail;

pub use logging::{LogFormat, finish_export, set_format as set_log_format, start_export};
