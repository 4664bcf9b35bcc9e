//! `cloudbus bench` runs every scenario and reports well-formed JSON. Not
//! a speed test: the durations are tiny and nothing is timed here.

use std::process::Command;

use serde_json::Value;

#[test]
fn every_scenario_runs_and_reports_json_and_a_chart() {
    let chart = std::env::temp_dir().join(format!("cloudbus-bench-{}.svg", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_cloudbus"))
        .args([
            "bench",
            "--scenario",
            "all",
            "--duration",
            "0.2",
            "--in-flight",
            "1,4",
            "--json",
            "--chart",
        ])
        .arg(&chart)
        .env_remove("RUST_LOG")
        .output()
        .expect("cloudbus runs");
    assert!(
        out.status.success(),
        "bench needs RabbitMQ at CLOUDBUS_AMQP_URL (default: local): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let rows = doc["rows"].as_array().unwrap();
    let count = |scenario: &str| rows.iter().filter(|r| r["scenario"] == scenario).count();
    assert_eq!(count("inproc-rpc"), 2);
    assert_eq!(count("amqp-rpc"), 2);
    assert_eq!(count("amqp-events"), 4, "1 and 3 subscribers at each level");
    assert_eq!(count("sync-key"), 6, "1, 100 and 10,000 keys at each level");
    assert_eq!(count("agent-http"), 4, "sync and callback at each level");
    for row in rows {
        for side in ["bus", "baseline"] {
            let ops = row[side]["ops_per_sec"].as_f64().unwrap();
            assert!(ops > 0.0, "{row}");
            let (p50, p99) = (
                row[side]["p50_us"].as_u64().unwrap(),
                row[side]["p99_us"].as_u64().unwrap(),
            );
            assert!(p50 <= p99, "{row}");
        }
        assert!(row["ratio"].as_f64().unwrap() > 0.0, "{row}");
        // The RPC scenario also reports the raw limit (no acks, no
        // confirms); both AMQP scenarios the raw program with the wire
        // protocol's properties.
        for (extra, ratio) in [("limit", "limit_ratio"), ("wire", "wire_ratio")] {
            let ops = &row[extra]["ops_per_sec"];
            let has = match extra {
                "limit" => row["scenario"] == "amqp-rpc",
                _ => row["scenario"] == "amqp-rpc" || row["scenario"] == "amqp-events",
            };
            if has {
                assert!(ops.as_f64().unwrap() > 0.0, "{row}");
                assert!(row[ratio].as_f64().unwrap() > 0.0, "{row}");
            } else {
                assert!(ops.is_null(), "{row}");
            }
        }
    }
    let svg = std::fs::read_to_string(&chart).expect("the chart is written");
    assert!(svg.starts_with("<svg") && svg.contains("amqp-rpc"), "{svg}");
    let _ = std::fs::remove_file(chart);
    let bad = Command::new(env!("CARGO_BIN_EXE_cloudbus"))
        .args(["bench", "--scenario", "nope"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("no scenario"));
}

/// One node pinging a fleet served by a `cloudbus agent` child process,
/// then one callback command to each host: every host answers, no
/// command fails, memory and sockets are reported.
#[test]
fn the_agent_fleet_scenario_drives_every_host() {
    let out = Command::new(env!("CARGO_BIN_EXE_cloudbus"))
        .args(["bench", "--scenario", "agent-fleet", "--hosts", "40"])
        .args(["--sweeps", "3", "--connections", "8", "--json"])
        .env_remove("RUST_LOG")
        .output()
        .expect("cloudbus runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(report["hosts"], 40);
    assert_eq!(report["answered"], 40);
    assert_eq!(report["command_failures"], 0);
    assert_eq!(report["sweeps_s"].as_array().unwrap().len(), 3);
    assert_eq!(report["rss_per_sweep_mib"].as_array().unwrap().len(), 3);
    assert!(report["commands_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["peak_sockets"].as_u64().unwrap() >= 1);
    let bad = Command::new(env!("CARGO_BIN_EXE_cloudbus"))
        .args(["bench", "--scenario", "agent-fleet", "--hosts", "0"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("at least 1"));
}
