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
}

impl Row {
    pub fn new(
        scenario: &str,
        level: usize,
        variant: String,
        bus: Sample,
        baseline: Sample,
    ) -> Self {
        let ratio = if baseline.ops_per_sec > 0.0 {
            bus.ops_per_sec / baseline.ops_per_sec
        } else {
            0.0
        };
        Self {
            scenario: scenario.to_string(),
            level,
            variant,
            bus,
            baseline,
            ratio,
        }
    }
}

/// What the baseline of each scenario is.
pub fn baseline_of(scenario: &str) -> &'static str {
    match scenario {
        "inproc-rpc" => "tokio mpsc + oneshot server",
        "amqp-rpc" => "raw lapin client/server",
        "amqp-events" => "raw lapin topic publish/consume",
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
        let mut table = vec![
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
            ]
            .map(String::from)
            .to_vec(),
        ];
        for r in rows.iter().filter(|r| r.scenario == scenario) {
            table.push(vec![
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
            ]);
        }
        out.push_str(&crate::commands::table::render(
            &table,
            &[0, 2, 3, 4, 5, 6, 7, 8, 9, 10],
        ));
    }
    out
}
