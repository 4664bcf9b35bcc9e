//! Counters an operator reads to see what agents and clients are doing.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonic count.
#[derive(Default, Debug)]
pub struct Count(AtomicU64);

impl Count {
    pub(crate) fn increment(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What an agent has served.
#[derive(Default, Debug)]
pub struct AgentStats {
    /// Command requests received, valid or not.
    pub commands: Count,
    /// TCP connections accepted: with connection reuse this stays near the
    /// number of management nodes times their per-host limit.
    pub connections: Count,
    /// Callbacks delivered.
    pub callbacks_sent: Count,
    /// Callbacks given up on (node unreachable after retries, or refused).
    pub callbacks_failed: Count,
    running: AtomicU64,
    peak_running: AtomicU64,
}

impl AgentStats {
    /// Commands running now.
    pub fn running_now(&self) -> u64 {
        self.running.load(Ordering::Relaxed)
    }

    /// The most commands that ever ran at once.
    pub fn peak_running(&self) -> u64 {
        self.peak_running.load(Ordering::Relaxed)
    }

    /// Marks one command as running until the guard drops.
    pub(crate) fn running(&self) -> Running<'_> {
        let now = self.running.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_running.fetch_max(now, Ordering::Relaxed);
        Running(self)
    }
}

pub(crate) struct Running<'a>(&'a AgentStats);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a management node's agent client has sent and how it ended.
#[derive(Default, Debug)]
pub struct ClientStats {
    /// Commands sent.
    pub sent: Count,
    /// Callbacks received for commands waiting for them.
    pub callbacks: Count,
    /// Commands that failed for any reason, the agent's own errors included.
    pub failed: Count,
    /// Commands whose time ran out.
    pub timeouts: Count,
    /// Agents that could not be reached.
    pub unreachable: Count,
    /// Callbacks for tasks nobody waits for any more (timed out, or
    /// unknown); refused with 404 and dropped.
    pub late_callbacks: Count,
}
