//! The results: a table per scenario for people, JSON for machines.

use serde::Serialize;

use super::measure::Sample;

/// One scenario at one level, the bus beside its baseline.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub scenario: String,
    /// In-flight requests (or publishers) for this row.
    pub level: usize,
    /// What else varies (subscribers, distinct keys), if anything.
    pub variant: String,
    pub bus: Sample,
    pub baseline: Sample,
    /// Bus throughput / baseline throughput.
    pub ratio: f64,
    /// A second raw baseline without the bus's guarantees (no acks, no
    /// confirms), where the scenario has one: what the broker path alone
    /// allows, so every table shows how far the bus is from the limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<Sample>,
    /// Bus throughput / limit throughput.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_ratio: Option<f64>,
    /// A third raw baseline, where the scenario has one: the baseline's
    /// guarantees *and* every property the wire protocol puts on a message,
    /// so the bus's own cost shows apart from what its protocol costs the
    /// broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wire: Option<Sample>,
    /// Bus throughput / wire throughput.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wire_ratio: Option<f64>,
}

impl Row {
    pub fn new(
        scenario: &str,
        level: usize,
        variant: String,
        bus: Sample,
        baseline: Sample,
    ) -> Self {
        Self {
            scenario: scenario.to_string(),
            level,
            variant,
            ratio: ratio(&bus, &baseline),
            bus,
            baseline,
            limit: None,
            limit_ratio: None,
            wire: None,
            wire_ratio: None,
        }
    }

    /// Adds the no-guarantees limit beside the baseline.
    pub fn with_limit(mut self, limit: Sample) -> Self {
        self.limit_ratio = Some(ratio(&self.bus, &limit));
        self.limit = Some(limit);
        self
    }

    /// Adds the baseline that carries the wire protocol's properties.
    pub fn with_wire(mut self, wire: Sample) -> Self {
        self.wire_ratio = Some(ratio(&self.bus, &wire));
        self.wire = Some(wire);
        self
    }
}

fn ratio(bus: &Sample, base: &Sample) -> f64 {
    if base.ops_per_sec > 0.0 {
        bus.ops_per_sec / base.ops_per_sec
    } else {
        0.0
    }
}

/// What the baseline of each scenario is.
pub fn baseline_of(scenario: &str) -> &'static str {
    match scenario {
        "inproc-rpc" => "tokio mpsc + oneshot server",
        "amqp-rpc" => {
            "raw amqprs client/server with the bus's acks and confirms; limit: the same without; \
             wire: the baseline with the wire protocol's properties on every message"
        }
        "amqp-events" => {
            "raw amqprs topic publish/consume; wire: the same with the wire protocol's properties"
        }
        "sync-key" => "same service without sync keys",
        "agent-http" => "raw reqwest POST to a bare axum handler, answered in the response",
        _ => "",
    }
}

/// A table per scenario.
pub fn tables(rows: &[Row]) -> String {
    let mut out = String::new();
    let mut scenarios: Vec<&str> = rows.iter().map(|r| r.scenario.as_str()).collect();
    scenarios.dedup();
    for scenario in scenarios {
        out.push_str(&format!(
            "\n{scenario}  (baseline: {})\n",
            baseline_of(scenario)
        ));
        let rows: Vec<&Row> = rows.iter().filter(|r| r.scenario == scenario).collect();
        let limits = rows.iter().any(|r| r.limit.is_some());
        let wires = rows.iter().any(|r| r.wire.is_some());
        let mut header = vec![
            [
                "LEVEL",
                "VARIANT",
                "BUS OPS/S",
                "BASE OPS/S",
                "RATIO",
                "BUS P50",
                "BASE P50",
                "BUS P99",
                "BASE P99",
                "BUS MAX",
                "BUS CPU S",
                "BUS ALLOC/OP",
                "BASE ALLOC/OP",
            ]
            .map(String::from)
            .to_vec(),
        ];
        if limits {
            header[0].extend(["LIMIT OPS/S", "/LIMIT"].map(String::from));
        }
        if wires {
            header[0].extend(["WIRE OPS/S", "/WIRE"].map(String::from));
        }
        let mut table = header;
        for r in rows {
            let mut line = vec![
                r.level.to_string(),
                r.variant.clone(),
                format!("{:.0}", r.bus.ops_per_sec),
                format!("{:.0}", r.baseline.ops_per_sec),
                format!("{:.2}", r.ratio),
                format!("{}µs", r.bus.p50_us),
                format!("{}µs", r.baseline.p50_us),
                format!("{}µs", r.bus.p99_us),
                format!("{}µs", r.baseline.p99_us),
                format!("{}µs", r.bus.max_us),
                format!("{:.2}", r.bus.cpu_s),
                format!("{:.1}", r.bus.allocs_per_op),
                format!("{:.1}", r.baseline.allocs_per_op),
            ];
            if limits {
                extra_columns(&mut line, r.limit.as_ref(), r.limit_ratio);
            }
            if wires {
                extra_columns(&mut line, r.wire.as_ref(), r.wire_ratio);
            }
            table.push(line);
        }
        let right: Vec<usize> = (0..table[0].len()).filter(|&c| c != 1).collect();
        out.push_str(&crate::commands::table::render(&table, &right));
    }
    out
}

/// A further baseline's throughput and the bus's ratio to it.
fn extra_columns(line: &mut Vec<String>, sample: Option<&Sample>, ratio: Option<f64>) {
    line.push(sample.map_or(String::new(), |s| format!("{:.0}", s.ops_per_sec)));
    line.push(ratio.map_or(String::new(), |x| format!("{x:.2}")));
}
