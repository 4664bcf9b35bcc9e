//! The last errors this node answered with, for operators (the dashboard,
//! `cloudbus status`): what failed, when, and why. Written only on the
//! error path.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// How many errors are kept.
const KEEP: usize = 50;

/// One error this node answered a message with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentError {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The type of the message that failed.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The error's code.
    pub code: String,
    /// The error's description.
    pub description: String,
}

#[derive(Default)]
pub(crate) struct RecentErrors(Mutex<VecDeque<RecentError>>);

impl RecentErrors {
    pub(crate) fn push(&self, type_name: &str, error: &ErrorCode) {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut errors = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() == KEEP {
            errors.pop_front();
        }
        errors.push_back(RecentError {
            at_ms,
            type_name: type_name.to_string(),
            code: error.code().to_string(),
            description: error.description().to_string(),
        });
    }

    /// Newest first.
    pub(crate) fn list(&self) -> Vec<RecentError> {
        let errors = self.0.lock().unwrap_or_else(|e| e.into_inner());
        errors.iter().rev().cloned().collect()
    }
}
