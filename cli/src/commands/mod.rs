//! One module per subcommand.

mod broker;
pub mod call;
pub mod demo;
mod logging;
pub mod node;
pub mod publish;
pub mod route;
mod signal;
pub mod status;
pub mod tail;
