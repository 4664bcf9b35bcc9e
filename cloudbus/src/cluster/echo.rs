//! How far this node has read its own event queue, told by its own
//! heartbeats coming back through it.
//!
//! A node's heartbeats reach the others through their event queues, behind
//! whatever events were published before them. Under an event flood a
//! queue falls seconds behind, and judging silence by the wall clock would
//! declare live nodes dead. Each member's event queue also receives the
//! member's own heartbeat, in order with everything else. Once the beat
//! sent at time T has come back, every heartbeat sent before T has been
//! read too, so only silence up to T is evidence of death.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::MessageId;

/// How many own heartbeats may be on their way at once. Older ones are
/// forgotten; the horizon then advances with the next one that comes back.
const IN_FLIGHT_MAX: usize = 64;

#[derive(Default)]
pub(crate) struct Echo {
    /// Own heartbeats sent and not yet back, oldest first.
    sent: VecDeque<(MessageId, Instant)>,
    /// When the latest own heartbeat that came back was sent.
    horizon: Option<Instant>,
}

impl Echo {
    pub(crate) fn sent(&mut self, id: MessageId, at: Instant) {
        if self.sent.len() == IN_FLIGHT_MAX {
            self.sent.pop_front();
        }
        self.sent.push_back((id, at));
    }

    /// An own heartbeat came back; `false` if it was not one of ours in
    /// flight (a duplicate, or forgotten).
    pub(crate) fn came_back(&mut self, id: MessageId) -> bool {
        let Some(at) = self.sent.iter().position(|(sent, _)| *sent == id) else {
            return false;
        };
        let (_, sent_at) = self.sent[at];
        // Beats sent before it and still missing were lost: drop them too.
        self.sent.drain(..=at);
        self.horizon = Some(self.horizon.map_or(sent_at, |h| h.max(sent_at)));
        true
    }

    /// The time up to which silence counts: the horizon, but never more
    /// than `max_lag` behind `now`, so that a node whose own beats stop
    /// coming back (it cannot publish) still declares the dead dead in the
    /// end. Before any beat has come back, `now`.
    pub(crate) fn reference(&self, now: Instant, max_lag: Duration) -> Instant {
        match self.horizon {
            None => now,
            Some(horizon) => match now.checked_sub(max_lag) {
                Some(floor) => horizon.max(floor),
                None => horizon,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_horizon_is_the_send_time_of_the_latest_beat_back() {
        let start = Instant::now();
        let mut echo = Echo::default();
        let max_lag = Duration::from_secs(30);
        let later = start + Duration::from_secs(60);
        assert_eq!(echo.reference(later, max_lag), later, "none back yet");
        let (a, b, c) = (
            MessageId::random(),
            MessageId::random(),
            MessageId::random(),
        );
        echo.sent(a, start);
        echo.sent(b, start + Duration::from_secs(1));
        echo.sent(c, start + Duration::from_secs(2));
        let now = start + Duration::from_secs(5);
        assert!(echo.came_back(b));
        assert_eq!(echo.reference(now, max_lag), start + Duration::from_secs(1));
        assert!(!echo.came_back(a), "a was overtaken: forgotten");
        assert!(!echo.came_back(b), "a duplicate does not count");
        assert!(echo.came_back(c));
        assert_eq!(echo.reference(now, max_lag), start + Duration::from_secs(2));
        // Far behind: the lag is capped.
        assert_eq!(echo.reference(later, max_lag), later - max_lag);
    }

    #[test]
    fn only_the_latest_beats_are_remembered() {
        let start = Instant::now();
        let mut echo = Echo::default();
        let first = MessageId::random();
        echo.sent(first, start);
        for i in 1..=IN_FLIGHT_MAX as u64 {
            echo.sent(MessageId::random(), start + Duration::from_secs(i));
        }
        assert!(!echo.came_back(first));
        assert_eq!(echo.sent.len(), IN_FLIGHT_MAX);
    }
}
