//! The HTTP protocol between management nodes and agents, as constants and
//! bodies; `docs/agents.md` describes it for agents written in other
//! languages.

use cloudbus::ErrorCode;
use serde::{Deserialize, Serialize};

/// Request header naming the task a callback must carry back.
pub const TASK_ID_HEADER: &str = "x-cloudbus-task-id";
/// Request header with the URL the agent must POST the outcome to. Its
/// presence is what asks the agent for [`Mode::Callback`](crate::Mode).
pub const CALLBACK_URL_HEADER: &str = "x-cloudbus-callback-url";
/// Where a management node serves callbacks.
pub const CALLBACK_PATH: &str = "/cloudbus/agent/callback";
/// The largest body either side accepts: 16 MiB.
pub const MAX_BODY: usize = 16 << 20;
/// The longest task id an agent accepts.
pub const MAX_TASK_ID: usize = 128;

/// The body of a synchronous answer and of a callback: the command's
/// response or an error with a stable code.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome<T> {
    /// The command succeeded.
    Reply(T),
    /// The command failed.
    Error(ErrorCode),
}

/// The body of a `202 Accepted`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Accepted {
    /// The task id the callback will carry.
    pub accepted: String,
}
