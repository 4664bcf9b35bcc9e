//! The shipped binary runs the demo with no setup.

use std::process::Command;

fn cloudbus(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cloudbus"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("the cloudbus binary runs")
}

#[test]
fn demo_runs_and_exits_zero() {
    let out = cloudbus(&["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("web-1 started on host-1"), "{stdout}");
    assert!(stdout.contains("bus shut down cleanly"), "{stdout}");
    assert!(out.stderr.is_empty(), "no logs without --trace");
}

#[test]
fn demo_trace_shows_the_flow_on_stderr() {
    let out = cloudbus(&["demo", "--trace"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("deliver request  host.AllocateHost"),
        "{stderr}"
    );
    assert!(stderr.contains("publish event    vm.VmStarted"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "no colours when not on a terminal"
    );
}

#[test]
fn unknown_flags_are_refused_with_usage() {
    let out = cloudbus(&["demo", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bogus"));
}

#[test]
fn logs_can_be_json_lines_for_log_pipelines() {
    let out = cloudbus(&["--log-format", "json", "demo", "--trace"]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut lines = 0;
    for line in stderr.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(value["level"].is_string() && value["fields"]["message"].is_string());
        lines += 1;
    }
    assert!(lines > 10, "{stderr}");
}
