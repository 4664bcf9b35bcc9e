//! The command line asks the bus, never itself: built-in requests go to a
//! member and say which one answered, `ping` times every live node, and
//! one-shot callers spread over the members that run a service.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use serde_json::Value;

#[test]
fn ping_times_every_live_node_and_built_in_calls_go_to_a_member() {
    let bus = unique_bus("ping");
    let _exchanges = Exchanges(bus.clone());
    let mut a = Running::start(&bus, &["node", "--services", "vm"]);
    let mut b = Running::start(&bus, &["node", "--services", "storage"]);
    let members: HashSet<String> = [a.node_id(), b.node_id()].into();

    let pongs = stdout_json(&run(&bus, &["ping", "--json"]));
    let pongs = pongs.as_array().unwrap();
    let answered: HashSet<String> = pongs
        .iter()
        .map(|p| p["node"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        answered, members,
        "every live node, and only them: {pongs:?}"
    );
    for pong in pongs {
        let rtt = pong["rtt_ms"].as_f64().unwrap();
        assert!(rtt > 0.0 && rtt < 5_000.0, "{pong}");
        assert_eq!(pong["version"], env!("CARGO_PKG_VERSION"));
        assert!(pong["services"].as_array().unwrap().len() >= 2, "{pong}");
    }
    let table = run(&bus, &["ping"]);
    assert!(table.status.success());
    let table = String::from_utf8_lossy(&table.stdout);
    for node in &members {
        let line = table.lines().find(|l| l.starts_with(node.as_str()));
        let line = line.unwrap_or_else(|| panic!("no line for {node}: {table}"));
        assert!(line.contains("ms"), "a round-trip time: {line}");
    }

    // A node that is not there: said, and the exit status tells.
    let absent = "0123456789abcdef0123456789abcdef";
    let out = run(&bus, &["ping", "--node", absent, "--timeout", "2s"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("no answer"));
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 of 1 node(s) did not answer"));

    // The built-in service of a member answers, not the tool's own (whose
    // node id would be new on every run and match no member).
    for type_name in ["cloudbus.Ping", "cloudbus.GetStatistics"] {
        let out = run(&bus, &["call", "cloudbus", type_name]);
        let reply = stdout_json(&out);
        let node = reply["node"].as_str().unwrap().to_string();
        assert!(members.contains(&node), "{type_name} answered by {node}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("answered by node {node}")),
            "{stderr}"
        );
    }
    for node in &members {
        let reply = stdout_json(&run(
            &bus,
            &["call", "cloudbus", "cloudbus.Ping", "--node", node],
        ));
        assert_eq!(reply["node"], node.as_str());
    }
    assert!(a.stop() && b.stop());

    // No member: a clear error, not an answer from the tool itself.
    let out = run(&bus, &["call", "cloudbus", "cloudbus.Ping"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no node of bus"), "{stderr}");
    let out = run(&bus, &["ping"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no live node on bus"));
}

/// How many `type_name` each node handled, from `cloudbus stats --json`.
fn handled(bus: &str, type_name: &str) -> HashMap<String, u64> {
    let stats = stdout_json(&run(bus, &["stats", "--json"]));
    stats
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            let count = node["types"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["type"] == type_name)
                .map_or(0, |t| t["count"].as_u64().unwrap());
            (node["node"].as_str().unwrap().to_string(), count)
        })
        .collect()
}

#[test]
fn one_shot_calls_spread_over_the_members_that_run_the_service() {
    let bus = unique_bus("spread");
    let _exchanges = Exchanges(bus.clone());
    let mut a = Running::start(&bus, &["node", "--services", "vm,host,storage"]);
    let mut b = Running::start(&bus, &["node", "--services", "vm,host,storage"]);
    let (a_id, b_id) = (a.node_id(), b.node_id());
    // Each call is a process of its own, as when a person or a script
    // runs them. Always starting at the first member, all would land on
    // one node; starting at random, all 20 on one node is 1 in 2^19.
    const CALLS: u64 = 20;
    for i in 0..CALLS {
        let body = format!(r#"{{"name":"vm-{i}","cpus":1,"memory_gb":1,"disk_gb":1}}"#);
        let created: Value = stdout_json(&run(&bus, &["call", "vm", "vm.CreateVm", &body]));
        assert_eq!(created["name"], format!("vm-{i}"));
    }
    let counts = handled(&bus, "vm.CreateVm");
    assert_eq!(counts.values().sum::<u64>(), CALLS, "{counts:?}");
    assert!(
        counts.get(&a_id).copied().unwrap_or(0) > 0 && counts.get(&b_id).copied().unwrap_or(0) > 0,
        "one-shot callers piled onto one node: {counts:?}"
    );
    assert!(a.stop() && b.stop());
}
