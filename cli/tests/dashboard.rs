//! The dashboard's message-flow map in a real browser: two nodes on the
//! broker under a known load, the page loaded in headless Chromium, the
//! map's edges read from the DOM, and a screenshot saved under `target/`.

mod common;

use std::process::Command;
use std::time::Instant;

use common::{Exchanges, Running, WAIT, run, stdout_json, unique_bus};

fn chromium() -> String {
    std::env::var("CLOUDBUS_CHROMIUM").unwrap_or_else(|_| "chromium".into())
}

/// The page as headless Chromium sees it after its scripts ran.
fn rendered_page(url: &str) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--timeout=5000",
            "--dump-dom",
            url,
        ])
        .output()
        .unwrap_or_else(|e| panic!("headless Chromium ({}) must be installed: {e}", chromium()));
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `attribute` on the element with `data-edge="{edge}"`.
fn edge_attribute(page: &str, edge: &str, attribute: &str) -> Option<String> {
    // The DOM serializer writes `>` in attributes as `&gt;`.
    let edge = edge.replace(">", "&gt;");
    let element = page.split(&format!(r#"data-edge="{edge}""#)).nth(1)?;
    let element = &element[..element.find('>')?];
    let value = element.split(&format!(r#"{attribute}=""#)).nth(1)?;
    Some(value[..value.find('"')?].to_string())
}

/// The rate the map shows on an edge, if it is drawn.
fn edge_rate(page: &str, edge: &str) -> Option<f64> {
    edge_attribute(page, edge, "data-rate")?.parse().ok()
}

/// The load: three VMs created at once, then one of them started.
fn load(bus: &str) {
    static ROUND: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let round = ROUND.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let creating: Vec<_> = ["one", "two", "three"]
        .iter()
        .map(|name| {
            let body = format!(r#"{{"name":"{name}-{round}","cpus":1,"memory_gb":1,"disk_gb":1}}"#);
            common::cloudbus(bus)
                .args(["call", "vm", "vm.CreateVm", &body])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("cloudbus runs")
        })
        .collect();
    let mut uuid = String::new();
    for child in creating {
        let vm = stdout_json(&child.wait_with_output().unwrap());
        uuid = vm["uuid"].as_str().unwrap().to_string();
    }
    let start = format!(r#"{{"uuid":"{uuid}"}}"#);
    let started = stdout_json(&run(
        bus,
        &[
            "call",
            "vm",
            "vm.StartVm",
            &start,
            "--api-event",
            "vm.VmStarted",
        ],
    ));
    assert!(started["host"].is_string(), "{started}");
}

#[test]
fn the_map_shows_who_calls_whom_across_nodes_in_a_real_browser() {
    let bus = unique_bus("map");
    let _exchanges = Exchanges(bus.clone());
    let mut api = Running::start(
        &bus,
        &["node", "--services", "vm,audit", "--http", "127.0.0.1:0"],
    );
    let mut infra = Running::start(&bus, &["node", "--services", "host,storage"]);
    let infra_id = infra.node_id();
    let api_id = api.node_id();
    api.wait_for(&format!("node joined node={infra_id}"));
    let line = api.wait_for("serving the dashboard");
    let at = line.find("http://").unwrap();
    let url = line[at..].split_whitespace().next().unwrap().to_string();

    load(&bus);
    // The edges the demo's flow makes: API calls into vm, vm calling
    // storage and host on the other node, vm's events to the auditor.
    let expected = [
        "client->vm:vm.CreateVm",
        "client->vm:vm.StartVm",
        "vm->storage:storage.AllocateVolume",
        "vm->host:host.AllocateHost",
        "vm->host:host.StartVmOnHost",
        "vm->audit:vm.StateChanged",
    ];
    let deadline = Instant::now() + WAIT;
    let page = loop {
        let page = rendered_page(&url);
        let missing: Vec<&str> = expected
            .iter()
            .copied()
            .filter(|e| !edge_rate(&page, e).is_some_and(|r| r > 0.0))
            .collect();
        if missing.is_empty() {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "edges missing or idle on the map: {missing:?}\n{page}"
        );
        // Rates are over the last 10 s: a slow machine may have taken
        // longer than that over the calls. Once more, then.
        load(&bus);
    };
    for edge in expected {
        assert!(edge_rate(&page, edge).unwrap() > 0.0, "{edge}");
        let count: u64 = edge_attribute(&page, edge, "data-count")
            .unwrap()
            .parse()
            .unwrap();
        assert!(count >= 1, "{edge}");
        assert_eq!(
            edge_attribute(&page, edge, "data-error-rate").as_deref(),
            Some("0.000"),
            "{edge}"
        );
    }
    let created: u64 = edge_attribute(&page, "client->vm:vm.CreateVm", "data-count")
        .unwrap()
        .parse()
        .unwrap();
    assert!(created >= 3 && created % 3 == 0, "{created}");
    // Services are drawn with the nodes that run them.
    for service in ["vm", "audit", "host", "storage", "client"] {
        assert!(
            page.contains(&format!(r#"data-service="{service}""#)),
            "{service}: {page}"
        );
    }
    assert!(page.contains(&api_id) && page.contains(&infra_id), "{page}");
    // The dashboard's own queries are not drawn.
    assert!(!page.contains(":cloudbus.GetStatistics\""), "{page}");
    // The table is the bus's: the other node's handlers are in it.
    assert!(page.contains(r#"data-type="host.AllocateHost""#), "{page}");
    // The host fleet chart shows the other node's hosts.
    assert!(page.contains("Connected"), "{page}");

    let shot = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/dashboard.png");
    let _ = std::fs::remove_file(shot);
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--timeout=5000",
            "--window-size=1400,1000",
            &format!("--screenshot={shot}"),
            &url,
        ])
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "{out:?}");
    assert!(std::fs::metadata(shot).unwrap().len() > 10_000, "{shot}");

    for node in [&mut api, &mut infra] {
        assert!(node.stop(), "the node stops cleanly");
    }
}
