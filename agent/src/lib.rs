//! Host agents over HTTP for cloudbus control planes.
//!
//! Services talk to each other over the bus; they talk to the agents on
//! their hosts over HTTP, because 100,000 hosts must not mean 100,000
//! queues, and HTTP connects on demand. An agent serves typed
//! [`Command`]s; a management node sends them with one [`AgentClient`],
//! which reuses connections, bounds concurrency per host and overall, and
//! receives the callbacks of long commands on one listener.
//!
//! ```
//! use cloudbus::ErrorCode;
//! use cloudbus_agent::{Agent, AgentClient, Command, CommandHandler, Mode};
//! use serde::{Deserialize, Serialize};
//!
//! // A command names its path, its response and how it is answered.
//! #[derive(Serialize, Deserialize)]
//! struct BootVm { uuid: String }
//! #[derive(Serialize, Deserialize)]
//! struct Booted { uuid: String, console: String }
//! impl Command for BootVm {
//!     const PATH: &'static str = "/vm/boot";
//!     const MODE: Mode = Mode::Callback; // accepted now, completed later
//!     type Response = Booted;
//! }
//!
//! // The host side.
//! struct Hypervisor;
//! impl CommandHandler<BootVm> for Hypervisor {
//!     async fn handle(&self, cmd: BootVm) -> Result<Booted, ErrorCode> {
//!         Ok(Booted { console: format!("vnc://host-1/{}", cmd.uuid), uuid: cmd.uuid })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let agent = Agent::builder(Hypervisor).command::<BootVm>().build()?;
//! let agent = agent.bind("127.0.0.1:0").await?;
//!
//! // The management-node side.
//! let client = AgentClient::builder().start().await?;
//! let booted = client.call(&agent.url(), BootVm { uuid: "v1".into() }).await?;
//! assert_eq!(booted.console, "vnc://host-1/v1");
//!
//! client.shutdown();
//! agent.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! The protocol is in `docs/agents.md`, so agents can be written in any
//! language.

#![warn(missing_docs)]

mod client;
mod command;
mod context;
mod server;
mod stats;
mod tls;
pub mod wire;

pub use client::{AgentCall, AgentClient, AgentClientBuilder};
pub use command::{Command, Mode};
pub use context::{CommandContext, command_context};
pub use server::{Agent, AgentBuilder, CommandHandler, RunningAgent};
pub use stats::{AgentStats, ClientStats, Count};

/// Error codes of agent commands, beside `cloudbus.TIMEOUT` (the command's
/// time ran out), `cloudbus.INVALID_ARGUMENT` (a bad agent URL) and
/// `cloudbus.INTERNAL` (the agent's handler panicked).
pub mod codes {
    /// The agent could not be connected to, or the connection broke.
    pub const UNREACHABLE: &str = "agent.UNREACHABLE";
    /// The agent answered something that is not a valid outcome.
    pub const BAD_RESPONSE: &str = "agent.BAD_RESPONSE";
    /// The agent serves no command at that path.
    pub const NO_SUCH_COMMAND: &str = "agent.NO_SUCH_COMMAND";
    /// The agent could not read the command or its headers.
    pub const BAD_COMMAND: &str = "agent.BAD_COMMAND";
    /// The agent wants a bearer token the command did not carry.
    pub const UNAUTHORIZED: &str = "agent.UNAUTHORIZED";
}
