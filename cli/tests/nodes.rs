//! `cloudbus node`, `call`, `publish`, `tail`, `status` and `route` as an
//! operator runs them: separate processes on the real broker
//! (CLOUDBUS_AMQP_URL, default the local one), each test on a bus of its
//! own. A broker that cannot be reached fails these tests.

use std::process::Command;

use serde_json::Value;

mod common;

use common::*;

#[test]
fn two_nodes_serve_each_other_and_the_broker_holds_exactly_the_documented_topology() {
    let bus = unique_bus("two");
    // The hosts' hypervisor agents run in a process of their own, reached
    // over HTTP by the host service, never through the broker.
    let mut agents = Running::start(
        &bus,
        &[
            "agent",
            "--hosts",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--boot-time",
            "50ms",
        ],
    );
    let agent_url = |line: String| line.trim().to_string();
    let urls = [
        agent_url(agents.wait_for("host-1=http://")),
        agent_url(agents.wait_for("host-2=http://")),
    ]
    .join(",");
    let mut api = Running::start(&bus, &["node", "--services", "vm,audit"]);
    let mut infra = Running::start(
        &bus,
        &["node", "--services", "host,storage", "--agents", &urls],
    );
    let (a, b) = (api.node_id(), infra.node_id());
    assert!(api.wait_for("node started").contains(&format!("bus={bus}")));
    // It names the broker it is connected to, never the credentials.
    let started = api.wait_for("node started");
    assert!(started.contains("broker=127.0.0.1:"), "{started}");
    assert!(!started.contains("guest"), "{started}");

    // vm (on one node) needs storage and host (on the other) to create and
    // start a VM: the two processes call each other through the broker.
    let created = stdout_json(&run(
        &bus,
        &[
            "call",
            "vm",
            "vm.CreateVm",
            r#"{"name":"web-1","cpus":2,"memory_gb":4,"disk_gb":20}"#,
        ],
    ));
    assert_eq!(created["name"], "web-1");
    assert_eq!(created["state"], "Stopped");
    let uuid = created["uuid"].as_str().unwrap().to_string();
    let started = stdout_json(&run(
        &bus,
        &[
            "call",
            "vm",
            "vm.StartVm",
            &format!(r#"{{"uuid":"{uuid}"}}"#),
            "--api-event",
            "vm.VmStarted",
        ],
    ));
    assert_eq!(started["uuid"], uuid.as_str());
    assert_eq!(started["host"], "host-1");
    // Booted by the agent process, which called the host node back.
    assert_eq!(started["console"], "vnc://host-1:5900");

    // Exactly the queues of DESIGN §4: one per service per node, the node
    // queue, the event queue; nothing per request, nothing left by the tools.
    let mut expected = vec![
        format!("{bus}.event.{a}"),
        format!("{bus}.event.{b}"),
        format!("{bus}.message.audit.{a}"),
        format!("{bus}.message.cloudbus.{a}"),
        format!("{bus}.message.cloudbus.{b}"),
        format!("{bus}.message.host.{b}"),
        format!("{bus}.message.storage.{b}"),
        format!("{bus}.message.vm.{a}"),
    ];
    expected.sort();
    assert_eq!(rabbitmqctl(&["list_queues", "name"], &bus), expected);
    assert_eq!(
        rabbitmqctl(&["list_exchanges", "name", "type", "durable"], &bus),
        [
            format!("{bus}.BROADCAST\ttopic\ttrue"),
            format!("{bus}.P2P\tdirect\ttrue")
        ]
    );

    let status = stdout_json(&run(&bus, &["status", "--json"]));
    let nodes = status["nodes"].as_array().unwrap();
    let mut seen: Vec<&str> = nodes.iter().map(|n| n["node"].as_str().unwrap()).collect();
    seen.sort();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort();
    assert_eq!(seen, want);
    let api_node = nodes.iter().find(|n| n["node"] == a.as_str()).unwrap();
    // Where each node is connected, without credentials.
    for node in nodes {
        let broker = node["broker"].as_str().unwrap_or_default();
        assert!(broker.ends_with(":5672/%2f"), "{node}");
        assert!(!broker.contains("guest"), "{node}");
    }
    assert_eq!(
        api_node["services"],
        serde_json::json!(["audit", "cloudbus", "vm"])
    );
    assert!(
        api_node["queues"]
            .as_array()
            .unwrap()
            .contains(&Value::from(format!("{bus}.message.vm.{a}")))
    );
    let text = run(&bus, &["status"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("2 live node(s)"));

    let route = stdout_json(&run(&bus, &["owner", &uuid, "--json"]));
    let owner = route["owner"].as_str().unwrap();
    assert!(owner == a || owner == b, "{route}");
    assert_eq!(route["nodes"], 2);
    let plain = run(&bus, &["owner", &uuid]);
    assert_eq!(String::from_utf8_lossy(&plain.stdout).trim(), owner);

    // Error replies and unknown services end in a non-zero exit with the code.
    let missing = run(
        &bus,
        &[
            "call",
            "vm",
            "vm.StartVm",
            r#"{"uuid":"nope"}"#,
            "--api-event",
            "vm.VmStarted",
        ],
    );
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("vm.NOT_FOUND"));
    let nobody = run(&bus, &["call", "billing", "billing.Charge", "{}"]);
    assert!(!nobody.status.success());
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("cloudbus.NO_SUCH_SERVICE"));
    let bad = run(&bus, &["call", "vm", "vm.CreateVm", "not json"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("must be a JSON object"));

    // SIGTERM: each node drains, leaves and removes its queues.
    for node in [&mut api, &mut infra] {
        node.signal("-TERM");
        assert!(node.wait(), "a node stopped by SIGTERM exits 0");
        node.wait_for("node stopped");
    }
    agents.signal("-TERM");
    assert!(agents.wait(), "the agents stopped by SIGTERM exit 0");
    assert_eq!(
        rabbitmqctl(&["list_queues", "name"], &bus),
        Vec::<String>::new()
    );
    remove_exchanges(&bus);
}

#[test]
fn tail_prints_published_events_as_json_lines() {
    let bus = unique_bus("tail");
    let mut tail = Running::start(&bus, &["tail", "demo.*", "--count", "2", "--json"]);
    let mut people = Running::start(&bus, &["tail", "demo.*", "--count", "1"]);
    people.wait_for("listening");
    tail.wait_for("listening");
    for n in 1..=3 {
        let out = run(
            &bus,
            &[
                "publish",
                &format!("demo.Event{n}"),
                &format!(r#"{{"n":{n}}}"#),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run(&bus, &["publish", "other.Event", "{}"]);
    assert!(out.status.success());
    assert!(tail.wait(), "tail exits 0 after --count events");
    let events: Vec<Value> = tail
        .seen
        .iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{:#?}", tail.seen);
    assert_eq!(events[0]["type"], "demo.Event1");
    assert_eq!(events[0]["body"], serde_json::json!({"n": 1}));
    assert_eq!(events[1]["type"], "demo.Event2");
    assert!(people.wait());
    let line = people.wait_for("demo.Event1");
    assert!(
        line.contains(r#"{"n":1}"#) && !line.contains('\u{1b}'),
        "{line}"
    );
    let bad = run(&bus, &["publish", "demo.*", "{}"]);
    assert!(!bad.status.success());
    remove_exchanges(&bus);
}

#[test]
fn a_killed_node_is_declared_dead_and_status_shows_the_survivor() {
    let bus = unique_bus("kill");
    let mut survivor = Running::start(&bus, &["node", "--services", "vm", "--heartbeat", "200ms"]);
    let mut victim = Running::start(
        &bus,
        &["node", "--services", "host", "--heartbeat", "200ms"],
    );
    let (s, v) = (survivor.node_id(), victim.node_id());
    survivor.wait_for(&format!("node joined node={v}"));
    victim.signal("-KILL");
    assert!(!victim.wait());
    let dead = survivor.wait_for("is dead");
    assert!(dead.contains(&v), "{dead}");
    let status = stdout_json(&run(&bus, &["status", "--json"]));
    let nodes: Vec<&str> = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, [s.as_str()]);
    survivor.signal("-TERM");
    assert!(survivor.wait());
    // The killed node's queues are left to expire: this removes them too.
    remove_exchanges(&bus);
}

fn scrape(url: &str) -> String {
    use std::io::{Read, Write};
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

#[test]
fn stats_and_metrics_count_the_messages_actually_sent() {
    let bus = unique_bus("stats");
    let mut node = Running::start(
        &bus,
        &[
            "node",
            "--services",
            "vm,host,storage",
            "--metrics-addr",
            "127.0.0.1:0",
            // One ping per host, at start: the counts below stay exact.
            "--host-ping-interval",
            "1h",
        ],
    );
    let id = node.node_id();
    let line = node.wait_for("serving metrics");
    let at = line.find("http://").expect("the metrics URL is logged");
    let url = line[at..].split_whitespace().next().unwrap().to_string();

    for _ in 0..3 {
        stdout_json(&run(
            &bus,
            &["call", "vm", "vm.QueryVms", r#"{"state":null}"#],
        ));
    }
    let mut uuids = Vec::new();
    for name in ["a", "b"] {
        let body = format!(r#"{{"name":"{name}","cpus":1,"memory_gb":1,"disk_gb":1}}"#);
        let vm = stdout_json(&run(&bus, &["call", "vm", "vm.CreateVm", &body]));
        uuids.push(vm["uuid"].as_str().unwrap().to_string());
    }
    // Booting goes to a host's agent over HTTP and comes back by callback.
    let start = format!(r#"{{"uuid":"{}"}}"#, uuids[0]);
    let started = stdout_json(&run(
        &bus,
        &[
            "call",
            "vm",
            "vm.StartVm",
            &start,
            "--api-event",
            "vm.VmStarted",
        ],
    ));
    assert_eq!(started["host"], "host-1");

    let stats = stdout_json(&run(&bus, &["stats", "--json"]));
    let types = stats[0]["types"].as_array().unwrap();
    assert_eq!(stats[0]["node"], id.as_str());
    let count = |t: &str| {
        types
            .iter()
            .find(|s| s["type"] == t)
            .map(|s| s["count"].as_u64().unwrap())
    };
    assert_eq!(count("vm.QueryVms"), Some(3));
    assert_eq!(count("vm.CreateVm"), Some(2));
    assert_eq!(
        count("storage.AllocateVolume"),
        Some(2),
        "calls between services count too"
    );
    let table = run(&bus, &["stats"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.lines().next().unwrap().starts_with("NODE"), "{table}");
    assert!(table.contains("vm.QueryVms"), "{table}");

    let metrics = scrape(&url);
    assert!(
        metrics.contains(
            r#"cloudbus_messages_handled_total{type="vm.QueryVms",service="vm",outcome="ok"} 3"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"cloudbus_messages_handled_total{type="vm.CreateVm",service="vm",outcome="ok"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"cloudbus_handling_seconds_bucket{le="+Inf",type="vm.CreateVm",service="vm"} 2"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"cloudbus_handling_seconds_count{type="vm.QueryVms",service="vm"} 3"#),
        "{metrics}"
    );
    assert!(metrics.contains("cloudbus_cluster_nodes 1"), "{metrics}");
    assert!(metrics.contains("cloudbus_broker_connected 1"), "{metrics}");
    // Two hosts pinged once, one VM booted.
    for line in [
        "cloudbus_agent_commands_total 3",
        "cloudbus_agent_callbacks_total 1",
        "cloudbus_agent_failures_total 0",
        "cloudbus_agent_awaiting_callbacks 0",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }

    node.signal("-TERM");
    assert!(node.wait());
    remove_exchanges(&bus);
}

/// The page as headless Chromium sees it after its scripts ran.
fn rendered_page(url: &str) -> String {
    let chromium = std::env::var("CLOUDBUS_CHROMIUM").unwrap_or_else(|_| "chromium".into());
    let out = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--timeout=5000",
            "--dump-dom",
            url,
        ])
        .output()
        .unwrap_or_else(|e| {
            panic!("headless Chromium ({chromium}) must be installed (scripts/test.sh installs it): {e}")
        });
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The count the dashboard shows for a message type.
fn shown_count(page: &str, type_name: &str) -> u64 {
    let row = page
        .split(&format!(r#"data-type="{type_name}""#))
        .nth(1)
        .unwrap_or_else(|| panic!("no row for {type_name} in {page}"));
    let count = row.split(r#"class="num count">"#).nth(1).unwrap();
    count[..count.find('<').unwrap()].parse().unwrap()
}

#[test]
fn the_dashboard_shows_the_cluster_and_rising_counters_in_a_real_browser() {
    let bus = unique_bus("dash");
    let mut api = Running::start(&bus, &["node", "--services", "vm", "--http", "127.0.0.1:0"]);
    let mut infra = Running::start(&bus, &["node", "--services", "host,storage"]);
    let (a, b) = (api.node_id(), infra.node_id());
    api.wait_for(&format!("node joined node={b}"));
    let line = api.wait_for("serving the dashboard");
    let at = line.find("http://").unwrap();
    let url = line[at..].split_whitespace().next().unwrap().to_string();

    let body = |name: &str| format!(r#"{{"name":"{name}","cpus":1,"memory_gb":1,"disk_gb":1}}"#);
    stdout_json(&run(&bus, &["call", "vm", "vm.CreateVm", &body("one")]));
    let before = rendered_page(&url);
    assert!(
        before.contains(&a) && before.contains(&b),
        "both nodes are shown: {before}"
    );
    assert!(before.contains(r#"class="ok">connected"#), "{before}");
    assert_eq!(shown_count(&before, "vm.CreateVm"), 1);

    for name in ["two", "three"] {
        stdout_json(&run(&bus, &["call", "vm", "vm.CreateVm", &body(name)]));
    }
    let missing = run(
        &bus,
        &[
            "call",
            "vm",
            "vm.StartVm",
            r#"{"uuid":"nope"}"#,
            "--api-event",
            "vm.VmStarted",
        ],
    );
    assert!(!missing.status.success());
    let after = rendered_page(&url);
    assert_eq!(shown_count(&after, "vm.CreateVm"), 3, "the counter rose");
    assert!(
        after.contains("vm.NOT_FOUND"),
        "the recent error is shown: {after}"
    );

    for node in [&mut api, &mut infra] {
        node.signal("-TERM");
        assert!(node.wait());
    }
    remove_exchanges(&bus);
}

#[test]
fn a_wrong_password_is_one_clear_error_without_the_password() {
    let bus = unique_bus("password");
    let wrong = url().replacen("guest:guest@", "guest:not-the-password@", 1);
    assert_ne!(wrong, url(), "the test URL carries guest:guest");
    let out = cloudbus(&bus)
        .env("CLOUDBUS_AMQP_URL", &wrong)
        .arg("status")
        .output()
        .expect("cloudbus runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("ACCESS_REFUSED"), "{stderr}");
    assert!(stderr.contains("guest:***@"), "{stderr}");
    assert!(!stderr.contains("not-the-password"), "{stderr}");
    // Only the CLI's own error, not the AMQP client's view of it too.
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// The hosts a node tracks, asked with `cloudbus call --node`.
fn tracked_by(bus: &str, node: &str) -> std::collections::BTreeSet<String> {
    let reply = stdout_json(&run(
        bus,
        &["call", "host", "host.GetTrackedHosts", "{}", "--node", node],
    ));
    reply["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until `hosts` hosts are split over `nodes`, each tracked by
/// exactly one of them; returns each node's share.
fn split(bus: &str, nodes: &[&str], hosts: usize) -> Vec<std::collections::BTreeSet<String>> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let shares: Vec<_> = nodes.iter().map(|n| tracked_by(bus, n)).collect();
        let total: usize = shares.iter().map(|s| s.len()).sum();
        let union: std::collections::BTreeSet<&String> = shares.iter().flatten().collect();
        if total == hosts && union.len() == hosts {
            return shares;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{hosts} hosts never split exactly once over {nodes:?}: {:?}",
            shares.iter().map(|s| s.len()).collect::<Vec<_>>()
        );
    }
}

/// Three `cloudbus node` processes share 300 hosts by the ring; one is
/// killed with SIGKILL and its hosts, and only its hosts, move to the two
/// others; commands for a host go to the node that tracks it.
#[test]
fn management_nodes_share_the_hosts_by_the_ring_and_take_over_a_dead_ones() {
    const HOSTS: usize = 300;
    let bus = unique_bus("fleet");
    let mut agents = Running::start(
        &bus,
        &["agent", "--hosts", "300", "--listen", "127.0.0.1:0"],
    );
    agents.wait_for("host-300=http://");
    let list: Vec<String> = agents
        .seen
        .iter()
        .filter(|l| l.starts_with("host-") && l.contains("=http://"))
        .map(|l| l.trim().to_string())
        .collect();
    assert_eq!(list.len(), HOSTS);
    let list = list.join(",");
    let node = || {
        Running::start(
            &bus,
            &[
                "node",
                "--services",
                "host",
                "--agents",
                &list,
                "--host-ping-interval",
                "500ms",
                "--heartbeat",
                "300ms",
            ],
        )
    };
    let (mut a, mut b, mut c) = (node(), node(), node());
    let ids = [a.node_id(), b.node_id(), c.node_id()];
    let all: Vec<&str> = ids.iter().map(String::as_str).collect();
    let before = split(&bus, &all, HOSTS);
    for share in &before {
        assert!(
            !share.is_empty(),
            "{:?}",
            before.iter().map(|s| s.len()).collect::<Vec<_>>()
        );
    }

    c.signal("-KILL");
    assert!(!c.wait());
    let after = split(&bus, &all[..2], HOSTS);
    assert!(
        after[0].is_superset(&before[0]),
        "only the dead node's hosts move"
    );
    assert!(
        after[1].is_superset(&before[1]),
        "only the dead node's hosts move"
    );

    // A command about a host reaches the node that tracks it, wherever the
    // caller is: host.StopVmOnHost for a VM that does not run fails on the
    // host's agent, which only its tracker can reach.
    let host = after[1].iter().next().unwrap().clone();
    let out = run(
        &bus,
        &[
            "call",
            "host",
            "host.StopVmOnHost",
            &format!(r#"{{"vm_uuid":"none","host":"{host}"}}"#),
            "--owner-of",
            &host,
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hypervisor.NO_SUCH_VM"), "{stderr}");

    for running in [&a, &b] {
        running.signal("-TERM");
    }
    assert!(a.wait() && b.wait());
    agents.signal("-TERM");
    agents.wait();
    remove_exchanges(&bus);
}
