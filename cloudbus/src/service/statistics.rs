//! Message statistics like ZStack's: per message type, how many were
//! handled and how long handling took (min, average, max). One record per
//! handler entry, updated with a few relaxed atomics: no map lookup, no lock, no
//! allocation per message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// See [`TypeStatistics::HISTOGRAM_BOUNDS_US`].
const HISTOGRAM_BOUNDS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
const BUCKETS: usize = HISTOGRAM_BOUNDS_US.len() + 1;

/// The running totals of one message type on one node.
#[derive(Debug)]
pub(crate) struct TypeStats {
    count: AtomicU64,
    errors: AtomicU64,
    total_us: AtomicU64,
    min_us: AtomicU64,
    max_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    /// Messages received per sending service (`""`: not sent by a handler).
    from: Senders,
}

/// Senders a type keeps apart; more are counted together.
const SENDERS: usize = 16;

/// Counts per sending service without a lock: a fixed row of slots, each
/// named once by the first message from its sender (a handful per type),
/// then only counted.
#[derive(Default, Debug)]
struct Senders {
    /// Messages sent from outside any handler (an API caller, a tool): the
    /// usual sender, counted without looking through the slots.
    outside: AtomicU64,
    slots: [(std::sync::OnceLock<Box<str>>, AtomicU64); SENDERS],
    /// Messages from senders beyond the first [`SENDERS`].
    others: AtomicU64,
}

impl Senders {
    fn record(&self, service: &str) {
        if service.is_empty() {
            self.outside.fetch_add(1, Ordering::Relaxed);
            return;
        }
        for (name, count) in &self.slots {
            // An empty slot is taken for this sender, unless another
            // thread names it first: then it is checked like any other.
            let named = name.get_or_init(|| service.into());
            if **named == *service {
                count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        self.others.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Vec<SourceCount> {
        let outside = self.outside.load(Ordering::Relaxed);
        let outside = (outside > 0).then(|| SourceCount {
            service: String::new(),
            count: outside,
        });
        let named = self.slots.iter().filter_map(|(name, count)| {
            Some(SourceCount {
                service: name.get()?.to_string(),
                count: count.load(Ordering::Relaxed),
            })
        });
        let others = self.others.load(Ordering::Relaxed);
        let others = (others > 0).then(|| SourceCount {
            service: "(others)".to_string(),
            count: others,
        });
        outside.into_iter().chain(named).chain(others).collect()
    }
}

impl Default for TypeStats {
    fn default() -> Self {
        Self {
            count: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            total_us: AtomicU64::new(0),
            min_us: AtomicU64::new(u64::MAX),
            max_us: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            from: Senders::default(),
        }
    }
}

impl TypeStats {
    pub(crate) fn record(&self, took: Duration, failed: bool) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.count.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let bucket = HISTOGRAM_BOUNDS_US.partition_point(|bound| *bound < us);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.total_us.fetch_add(us, Ordering::Relaxed);
        self.min_us.fetch_min(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Counts a message received from `service`.
    pub(crate) fn record_from(&self, service: &str) {
        self.from.record(service);
    }

    pub(crate) fn snapshot(&self, service: &str, type_name: &str) -> TypeStatistics {
        let count = self.count.load(Ordering::Relaxed);
        let total = self.total_us.load(Ordering::Relaxed);
        TypeStatistics {
            type_name: type_name.to_string(),
            service: service.to_string(),
            count,
            min_us: if count == 0 {
                0
            } else {
                self.min_us.load(Ordering::Relaxed)
            },
            avg_us: total.checked_div(count).unwrap_or(0),
            max_us: self.max_us.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            total_us: total,
            histogram: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            from: self.from.snapshot(),
        }
    }
}

/// How one message type fared on one node since it started: the answer to
/// `cloudbus.GetStatistics`, and what `cloudbus stats` shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeStatistics {
    /// The message type.
    #[serde(rename = "type")]
    pub type_name: String,
    /// The service that handles it.
    pub service: String,
    /// Messages handled (whatever the outcome).
    pub count: u64,
    /// Of those, how many ended in an error.
    pub errors: u64,
    /// Total handling time, µs.
    pub total_us: u64,
    /// Shortest handling time, µs.
    pub min_us: u64,
    /// Average handling time, µs.
    pub avg_us: u64,
    /// Longest handling time, µs.
    pub max_us: u64,
    /// How many took at most each of [`HISTOGRAM_BOUNDS_US`](Self::HISTOGRAM_BOUNDS_US)
    /// (and more, last), not cumulative.
    pub histogram: Vec<u64>,
    /// Messages received per sending service: who calls this type. Counted
    /// when a message arrives (whatever happens to it next).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<SourceCount>,
}

/// How many messages of one type a service sent (see [`TypeStatistics::from`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCount {
    /// The sending service; empty for a message not sent by a handler (an
    /// API client, a CLI, a timer).
    pub service: String,
    /// Messages received from it.
    pub count: u64,
}

impl TypeStatistics {
    /// Upper bounds (µs) of the handling-time histogram's buckets; a last
    /// bucket takes everything slower.
    pub const HISTOGRAM_BOUNDS_US: [u64; 16] = HISTOGRAM_BOUNDS_US;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_are_counted_apart_up_to_a_limit_then_together() {
        let stats = TypeStats::default();
        for _ in 0..3 {
            stats.record_from("vm");
        }
        stats.record_from("");
        for n in 0..SENDERS + 2 {
            stats.record_from(&format!("svc-{n}"));
        }
        let from = stats.snapshot("host", "host.X").from;
        // Messages from outside any handler come first and take no slot.
        assert_eq!(
            from[0],
            SourceCount {
                service: "".into(),
                count: 1
            }
        );
        assert_eq!(
            from[1],
            SourceCount {
                service: "vm".into(),
                count: 3
            }
        );
        assert_eq!(from.len(), SENDERS + 2);
        assert_eq!(
            from.last().unwrap(),
            &SourceCount {
                service: "(others)".into(),
                count: 3
            }
        );
    }
}
