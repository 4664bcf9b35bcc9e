//! Message statistics like ZStack's: per message type, how many were
//! handled and how long handling took (min, average, max). One record per
//! handler entry, updated with a few relaxed atomics in the calling
//! thread's stripe of it: no map lookup, no lock, no allocation, and no
//! cache line shared between cores per message.

use std::cell::Cell;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
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
    stripes: Box<[Stripe; STRIPES]>,
    /// The sending services counted apart, each named once by the first
    /// message from it (a handful per type), in the order they came.
    senders: [OnceLock<Box<str>>; SENDERS],
}

/// Stripes the counts are spread over. Each thread adds to one of its
/// own: two cores handling one message type would otherwise pass the same
/// cache lines back and forth on every message, which under load cost
/// more than the counting. A snapshot adds the stripes up.
const STRIPES: usize = 8;

/// Senders a type keeps apart; more are counted together.
const SENDERS: usize = 16;

/// One thread's share of a type's counts, on cache lines of its own.
#[derive(Debug)]
#[repr(align(128))]
struct Stripe {
    count: AtomicU64,
    errors: AtomicU64,
    total_us: AtomicU64,
    min_us: AtomicU64,
    max_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    /// Messages sent from outside any handler (an API caller, a tool): the
    /// usual sender, counted without looking through the names.
    outside: AtomicU64,
    /// Messages from each of [`TypeStats::senders`].
    from: [AtomicU64; SENDERS],
    /// Messages from senders beyond the first [`SENDERS`].
    others: AtomicU64,
}

impl Default for Stripe {
    fn default() -> Self {
        Self {
            count: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            total_us: AtomicU64::new(0),
            min_us: AtomicU64::new(u64::MAX),
            max_us: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            outside: AtomicU64::new(0),
            from: std::array::from_fn(|_| AtomicU64::new(0)),
            others: AtomicU64::new(0),
        }
    }
}

thread_local! {
    /// This thread's stripe, given out in turn as threads first count.
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    STRIPE.with(|stripe| {
        if stripe.get() == usize::MAX {
            stripe.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
        }
        stripe.get()
    })
}

impl Default for TypeStats {
    fn default() -> Self {
        Self {
            stripes: Box::new(std::array::from_fn(|_| Stripe::default())),
            senders: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

impl TypeStats {
    fn mine(&self) -> &Stripe {
        &self.stripes[stripe_index()]
    }

    pub(crate) fn record(&self, took: Duration, failed: bool) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let stripe = self.mine();
        stripe.count.fetch_add(1, Ordering::Relaxed);
        if failed {
            stripe.errors.fetch_add(1, Ordering::Relaxed);
        }
        let bucket = HISTOGRAM_BOUNDS_US.partition_point(|bound| *bound < us);
        stripe.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        stripe.total_us.fetch_add(us, Ordering::Relaxed);
        if us < stripe.min_us.load(Ordering::Relaxed) {
            stripe.min_us.fetch_min(us, Ordering::Relaxed);
        }
        if us > stripe.max_us.load(Ordering::Relaxed) {
            stripe.max_us.fetch_max(us, Ordering::Relaxed);
        }
    }

    /// Counts a message received from `service` (`""`: not sent by a
    /// handler).
    pub(crate) fn record_from(&self, service: &str) {
        let stripe = self.mine();
        if service.is_empty() {
            stripe.outside.fetch_add(1, Ordering::Relaxed);
            return;
        }
        for (name, count) in self.senders.iter().zip(&stripe.from) {
            // An empty slot is taken for this sender, unless another
            // thread names it first: then it is checked like any other.
            let named = name.get_or_init(|| service.into());
            if **named == *service {
                count.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        stripe.others.fetch_add(1, Ordering::Relaxed);
    }

    /// One counter as every stripe has it.
    fn each<'a>(
        &'a self,
        counter: impl Fn(&Stripe) -> &AtomicU64 + 'a,
    ) -> impl Iterator<Item = u64> + 'a {
        let stripes = self.stripes.iter();
        stripes.map(move |stripe| counter(stripe).load(Ordering::Relaxed))
    }

    pub(crate) fn snapshot(&self, service: &str, type_name: &str) -> TypeStatistics {
        let count: u64 = self.each(|s| &s.count).sum();
        let total: u64 = self.each(|s| &s.total_us).sum();
        TypeStatistics {
            type_name: type_name.to_string(),
            service: service.to_string(),
            count,
            min_us: if count == 0 {
                0
            } else {
                self.each(|s| &s.min_us).min().unwrap_or(0)
            },
            avg_us: total.checked_div(count).unwrap_or(0),
            max_us: self.each(|s| &s.max_us).max().unwrap_or(0),
            errors: self.each(|s| &s.errors).sum(),
            total_us: total,
            histogram: (0..BUCKETS)
                .map(|b| self.each(move |s| &s.buckets[b]).sum())
                .collect(),
            from: self.senders_snapshot(),
        }
    }

    fn senders_snapshot(&self) -> Vec<SourceCount> {
        let outside: u64 = self.each(|s| &s.outside).sum();
        let outside = (outside > 0).then(|| SourceCount {
            service: String::new(),
            count: outside,
        });
        let named = self.senders.iter().enumerate().filter_map(|(i, name)| {
            Some(SourceCount {
                service: name.get()?.to_string(),
                count: self.each(move |s| &s.from[i]).sum(),
            })
        });
        let others: u64 = self.each(|s| &s.others).sum();
        let others = (others > 0).then(|| SourceCount {
            service: "(others)".to_string(),
            count: others,
        });
        outside.into_iter().chain(named).chain(others).collect()
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

    /// Each thread counts in a stripe of its own; a snapshot must add up
    /// every stripe, whichever threads counted.
    #[test]
    fn counts_from_many_threads_add_up() {
        let stats = TypeStats::default();
        std::thread::scope(|scope| {
            for t in 0..12u64 {
                let stats = &stats;
                scope.spawn(move || {
                    for n in 0..100 {
                        stats.record(Duration::from_micros(t * 100 + n), n % 10 == 0);
                        stats.record_from(if n % 2 == 0 { "" } else { "vm" });
                    }
                });
            }
        });
        let snapshot = stats.snapshot("host", "host.X");
        assert_eq!(snapshot.count, 1_200);
        assert_eq!(snapshot.errors, 120);
        assert_eq!(snapshot.min_us, 0);
        assert_eq!(snapshot.max_us, 1_199);
        assert_eq!(snapshot.total_us, (0..1_200).sum::<u64>());
        assert_eq!(snapshot.histogram.iter().sum::<u64>(), 1_200);
        // 0..=100 µs, then 101..=250, 251..=500, 501..=1000, the rest.
        assert_eq!(snapshot.histogram[..5], [101, 150, 250, 500, 199]);
        let from: Vec<_> = snapshot
            .from
            .iter()
            .map(|s| (s.service.as_str(), s.count))
            .collect();
        assert_eq!(from, [("", 600), ("vm", 600)]);
    }
}
