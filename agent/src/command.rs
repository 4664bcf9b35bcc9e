//! What a command to a host's agent is.

use serde::{Serialize, de::DeserializeOwned};

/// How an agent answers a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In the HTTP response: for work that takes milliseconds (reading a
    /// host's facts, stopping a process).
    Sync,
    /// With `202 Accepted` at once, then by a POST to the management node's
    /// callback endpoint when the work is done: for work that takes seconds
    /// or minutes (booting a VM, copying an image), so that no connection
    /// stays open while it runs. ZStack's "async HTTP call with callback".
    Callback,
}

/// A typed command a management node sends to a host's agent over HTTP.
///
/// Like a bus [`Request`](cloudbus::Request), a command names its response
/// type, so the client cannot await the wrong one, and its [`Mode`], so the
/// caller does not have to remember which commands are long.
pub trait Command: Serialize + DeserializeOwned + Send + 'static {
    /// Where the agent serves the command, e.g. `/vm/start`. Letters,
    /// digits and `/_.-` only.
    const PATH: &'static str;
    /// How the agent answers; [`Mode::Sync`] unless the work is long.
    const MODE: Mode = Mode::Sync;
    /// What the agent answers with.
    type Response: Serialize + DeserializeOwned + Send + 'static;
}
