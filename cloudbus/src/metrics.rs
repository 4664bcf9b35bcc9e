//! A node's metrics for Prometheus, in any program built on cloudbus:
//! register [`BusMetrics`] in a `prometheus_client` registry and serve it
//! where your program serves `/metrics` (the `cloudbus node` command does
//! exactly that). Values are read from the bus when scraped — statistics,
//! counters, cluster — so the message path pays nothing for them.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use prometheus_client::registry::Registry;
//! let bus = cloudbus::Bus::embedded();
//! let mut registry = Registry::default();
//! registry.register_collector(Box::new(cloudbus::metrics::BusMetrics::new(&bus)));
//!
//! let mut text = String::new();
//! prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
//! assert!(text.contains("cloudbus_pending_calls 0"));
//! # }
//! ```
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `cloudbus_messages_handled_total` | type, service, outcome (`ok`/`error`) | messages handled |
//! | `cloudbus_handling_seconds` (histogram) | type, service | time to handle a message |
//! | `cloudbus_handling_seconds_avg`, `_max` | type, service | average and longest handling time |
//! | `cloudbus_late_replies_total`, `_expired_total`, `_malformed_total`, `_rejected_total`, `_message_errors_total`, `_events_dropped_total`, `_timeouts_total`, `_reconnects_total`, `cloudbus_broker_failovers_total`, `cloudbus_members_declared_dead_total` | | the node's [`BusCounters`](crate::BusCounters) |
//! | `cloudbus_pending_calls` | | callers waiting for a reply |
//! | `cloudbus_cluster_nodes` | | nodes this node knows alive |
//! | `cloudbus_broker_connected` | | 1 while connected to the broker |

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::{Bus, TypeStatistics};

/// The content type of the text that `prometheus_client`'s encoder writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics of one node, collected from its bus on each scrape.
pub struct BusMetrics {
    bus: Bus,
}

impl BusMetrics {
    /// Metrics of `bus`'s node.
    pub fn new(bus: &Bus) -> Self {
        Self { bus: bus.clone() }
    }
}

impl fmt::Debug for BusMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusMetrics")
            .field("node", &self.bus.node_id())
            .finish()
    }
}

/// A registry holding only `bus`'s metrics, encoded as text: for programs
/// that have no registry of their own.
pub fn render(bus: &Bus) -> String {
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(BusMetrics::new(bus)));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// Writes one counter without labels: for collectors of other counters
/// (an agent client's, say) to read the same way as the bus's.
pub fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: u64,
) -> fmt::Result {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

/// Writes one gauge without labels.
pub fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: i64,
) -> fmt::Result {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// Writes one labelled gauge per statistics row.
fn per_type(
    encoder: &mut DescriptorEncoder<'_>,
    stats: &[TypeStatistics],
    name: &str,
    help: &str,
    metric_type: MetricType,
    value: impl Fn(&TypeStatistics) -> f64,
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
    for t in stats {
        let labels = [
            ("type", t.type_name.as_str()),
            ("service", t.service.as_str()),
        ];
        ConstGauge::new(value(t)).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for BusMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let stats = self.bus.statistics();

        let mut handled = encoder.encode_descriptor(
            "cloudbus_messages_handled",
            "Messages handled, by type and outcome.",
            None,
            MetricType::Counter,
        )?;
        for t in &stats {
            for (outcome, n) in [("ok", t.count - t.errors), ("error", t.errors)] {
                let labels = [
                    ("type", t.type_name.as_str()),
                    ("service", t.service.as_str()),
                    ("outcome", outcome),
                ];
                ConstCounter::new(n).encode(handled.encode_family(&labels)?)?;
            }
        }

        let mut handling = encoder.encode_descriptor(
            "cloudbus_handling_seconds",
            "Time to handle a message, by type.",
            None,
            MetricType::Histogram,
        )?;
        for t in &stats {
            let labels = [
                ("type", t.type_name.as_str()),
                ("service", t.service.as_str()),
            ];
            let buckets: Vec<(f64, u64)> = t
                .histogram
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let bound = TypeStatistics::HISTOGRAM_BOUNDS_US
                        .get(i)
                        .map_or(f64::MAX, |us| *us as f64 / 1e6);
                    (bound, *n)
                })
                .collect();
            handling
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(t.total_us as f64 / 1e6, t.count, &buckets, None)?;
        }
        per_type(
            &mut encoder,
            &stats,
            "cloudbus_handling_seconds_avg",
            "Average time to handle a message, by type.",
            MetricType::Gauge,
            |t| t.avg_us as f64 / 1e6,
        )?;
        per_type(
            &mut encoder,
            &stats,
            "cloudbus_handling_seconds_max",
            "Longest time to handle a message, by type.",
            MetricType::Gauge,
            |t| t.max_us as f64 / 1e6,
        )?;

        let counters = self.bus.counters();
        for (name, help, value) in [
            (
                "cloudbus_late_replies",
                "Replies that came after their caller stopped waiting.",
                &counters.late_replies,
            ),
            (
                "cloudbus_expired",
                "Requests that expired before a handler could start.",
                &counters.expired,
            ),
            (
                "cloudbus_malformed",
                "Messages that could not be decoded.",
                &counters.malformed,
            ),
            (
                "cloudbus_rejected",
                "Messages an interceptor refused.",
                &counters.rejected,
            ),
            (
                "cloudbus_message_errors",
                "Plain messages whose handler failed.",
                &counters.message_errors,
            ),
            (
                "cloudbus_events_dropped",
                "Events not delivered to a subscriber that did not keep up.",
                &counters.events_dropped,
            ),
            (
                "cloudbus_timeouts",
                "Requests that timed out at their caller.",
                &counters.timeouts,
            ),
            (
                "cloudbus_reconnects",
                "Reconnects to the broker.",
                &counters.reconnects,
            ),
            (
                "cloudbus_broker_failovers",
                "Reconnects that moved to another broker of the cluster.",
                &counters.failovers,
            ),
            (
                "cloudbus_members_declared_dead",
                "Members declared dead after missing their heartbeats.",
                &counters.members_dead,
            ),
        ] {
            counter(&mut encoder, name, help, value.get())?;
        }

        for (name, help, value) in [
            (
                "cloudbus_pending_calls",
                "Callers waiting for a reply.",
                self.bus.pending_calls() as i64,
            ),
            (
                "cloudbus_cluster_nodes",
                "Nodes this node knows alive.",
                self.bus.cluster().len() as i64,
            ),
            (
                "cloudbus_broker_connected",
                "1 while connected to the broker.",
                i64::from(self.bus.broker_connected()),
            ),
        ] {
            gauge(&mut encoder, name, help, value)?;
        }
        Ok(())
    }
}
