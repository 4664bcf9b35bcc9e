use std::sync::atomic::{AtomicU64, Ordering};

/// A counter the bus bumps on the unusual paths an operator must see.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counts of what the bus dropped, refused or could not deliver. Nothing is
/// dropped without being counted here and logged.
#[derive(Default, Debug)]
pub struct BusCounters {
    /// Replies that arrived after their caller stopped waiting (timeout,
    /// cancel) or for an unknown correlation id; dropped.
    pub late_replies: Counter,
    /// Requests that expired before a handler could start; dropped.
    pub expired: Counter,
    /// Messages that could not be decoded.
    pub malformed: Counter,
    /// Messages an interceptor refused.
    pub rejected: Counter,
    /// Plain messages whose handler failed (nobody waits for their outcome).
    pub message_errors: Counter,
    /// Events not delivered to a subscriber whose buffer was full.
    pub events_dropped: Counter,
    /// Requests that timed out at the caller.
    pub timeouts: Counter,
    /// Times the transport reconnected to the broker after losing it.
    pub reconnects: Counter,
    /// Reconnects that landed on another broker than the one before (a
    /// failover within a RabbitMQ cluster); also counted in `reconnects`.
    pub failovers: Counter,
    /// Members this node declared dead because their heartbeats stopped
    /// (not those that left gracefully).
    pub members_dead: Counter,
}
