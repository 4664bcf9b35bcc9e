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
    assert!(stderr.contains("/vm/boot for web-1"), "{stderr}");
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

/// The demo driving agents served by another process, as in production:
/// `cloudbus agent` prints one `NAME=URL` line per host, what `--agents`
/// takes.
#[test]
fn the_demo_drives_agents_served_by_cloudbus_agent() {
    use std::io::{BufRead, BufReader};
    let mut agent = Command::new(env!("CARGO_BIN_EXE_cloudbus"))
        .args(["agent", "--hosts", "2", "--listen", "127.0.0.1:0"])
        .args(["--boot-time", "10ms", "--token", "t0ken"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cloudbus agent starts");
    let mut lines = BufReader::new(agent.stdout.take().expect("stdout")).lines();
    let mut urls = Vec::new();
    for name in ["host-1", "host-2"] {
        let line = lines.next().expect("a line per host").expect("utf-8");
        let (printed, url) = line.split_once('=').expect("NAME=URL");
        assert_eq!(printed, name);
        assert!(url.starts_with("http://127.0.0.1:"), "{line}");
        urls.push(line.clone());
    }
    let agents = urls.join(",");
    // The agents serve only nodes with their token.
    let refused = cloudbus(&["demo", "--agents", &agents]);
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("agent.UNAUTHORIZED"), "{stderr}");
    let out = cloudbus(&["demo", "--agents", &agents, "--agent-token", "t0ken"]);
    let _ = agent.kill();
    let _ = agent.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("hypervisor agents at {}, {}", urls[0], urls[1])),
        "{stdout}"
    );
    assert!(
        stdout.contains("web-1 started on host-1, console vnc://host-1:5900"),
        "{stdout}"
    );
    assert!(
        stdout.contains("host agents: 6 commands over HTTP, 3 completed by callback, 0 failed"),
        "{stdout}"
    );
}

#[test]
fn the_demo_fails_clearly_when_its_agents_are_down() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let out = cloudbus(&["demo", "--agents", &url]);
    assert_eq!(out.status.code(), Some(1));
    // No host to place a VM on, and why: its agent does not answer.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("host.NO_CAPACITY"), "{stderr}");
    assert!(stderr.contains("1 of 1 hosts disconnected"), "{stderr}");
    assert!(stderr.contains("agent.UNREACHABLE"), "{stderr}");
    assert!(stderr.contains(&url), "{stderr}");
}
