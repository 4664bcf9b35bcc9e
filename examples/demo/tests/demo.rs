//! The demo's services and scenario, on the embedded bus.

use std::time::Duration;

use cloudbus::Bus;
use cloudbus_demo::host::TrackerConfig;
use cloudbus_demo::hypervisor::Simulation;
use cloudbus_demo::messages::*;
use cloudbus_demo::{HostAgents, SERVICES, install, run};

async fn all_services() -> (Bus, cloudbus_demo::Auditor) {
    let bus = Bus::embedded();
    let installed = install(&bus, &SERVICES, &HostAgents::default())
        .await
        .unwrap();
    (bus, installed.auditor.unwrap())
}

fn create(name: &str, memory_gb: u32) -> CreateVm {
    CreateVm {
        name: name.into(),
        cpus: 2,
        memory_gb,
        disk_gb: 10,
    }
}

#[tokio::test]
async fn the_scenario_tells_the_same_story_every_time() {
    let mut lines = Vec::new();
    run(&Bus::embedded(), &HostAgents::default(), |line| {
        lines.push(line)
    })
    .await
    .unwrap();
    let text = lines.join("\n");
    for expected in [
        "web-1 started on host-1, console vnc://host-1:5900",
        "POST /vm/boot to host-1's agent over HTTP, which answered 202 Accepted",
        "(agent commands so far: 3 sent, 1 completed by callback)",
        "   start -> running on host-2\n   stop  -> db-1 stopped",
        "ps-1 free: 810 GiB before, 830 GiB after destroying web-2",
        "start an unknown VM          -> vm.NOT_FOUND",
        "start a running VM           -> vm.INVALID_STATE",
        "start a VM no host can hold  -> host.NO_CAPACITY",
        "call a service nobody runs   -> cloudbus.NO_SUCH_SERVICE",
        "vm.VmStopped     db-1 (api result)",
        "0 timeouts, 0 late replies, 0 events dropped",
        "host agents: 6 commands over HTTP, 3 completed by callback, 0 failed",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    let mut again = Vec::new();
    run(&Bus::embedded(), &HostAgents::default(), |line| {
        again.push(line)
    })
    .await
    .unwrap();
    assert_eq!(lines, again);
}

#[tokio::test]
async fn operations_on_one_vm_run_in_arrival_order() {
    let (bus, _auditor) = all_services().await;
    let vm = bus.call(create("a", 1)).await.unwrap();
    // Twenty alternating starts and stops sent at once: each is valid only
    // if the one before it has finished.
    let calls = (0..20).map(|i| {
        let bus = bus.clone();
        let uuid = vm.uuid.clone();
        async move {
            if i % 2 == 0 {
                bus.call(StartVm { uuid }).await.map(|_| ())
            } else {
                bus.call(StopVm { uuid }).await.map(|_| ())
            }
        }
    });
    for outcome in futures::future::join_all(calls).await {
        outcome.unwrap();
    }
    let list = bus.call(QueryVms { state: None }).await.unwrap();
    assert_eq!(list.vms[0].state, "Stopped");
}

#[tokio::test]
async fn the_auditor_sees_api_results_and_state_changes() {
    let (bus, auditor) = all_services().await;
    let vm = bus.call(create("a", 1)).await.unwrap();
    let started = bus
        .call(StartVm {
            uuid: vm.uuid.clone(),
        })
        .await
        .unwrap();
    assert_eq!(started.host, "host-1");
    bus.call(StopVm { uuid: vm.uuid }).await.unwrap();
    bus.shutdown().await;
    let log = auditor.finish().await;
    assert_eq!(log.len(), 4, "{log:?}");
    assert!(log[1].starts_with("vm.VmStarted") && log[1].ends_with("(api result)"));
    assert!(log[2].contains("a Running -> Stopped (event)"));
}

#[tokio::test]
async fn the_audit_log_can_be_queried_over_the_bus() {
    let (bus, _auditor) = all_services().await;
    let vm = bus.call(create("a", 1)).await.unwrap();
    let mut started = bus.subscribe::<VmStarted>().await.unwrap();
    bus.call(StartVm { uuid: vm.uuid }).await.unwrap();
    started.recv().await.unwrap();
    // The auditor's subscription was made first; poll its log until it
    // has caught up with the event this subscriber already has.
    let caught_up = async {
        loop {
            let log = bus.call(GetAuditLog {}).await.unwrap();
            if log.entries.iter().any(|e| e.starts_with("vm.VmStarted")) {
                break;
            }
            tokio::task::yield_now().await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), caught_up)
        .await
        .expect("the auditor records the event");
}

#[tokio::test]
async fn capacity_is_taken_and_given_back() {
    let (bus, _auditor) = all_services().await;
    let ps = || GetCapacity {
        primary_storage: "ps-1".into(),
    };
    let before = bus.call(ps()).await.unwrap().available_gb;
    let vm = bus.call(create("a", 1)).await.unwrap();
    assert_eq!(bus.call(ps()).await.unwrap().available_gb, before - 10);
    bus.call(DestroyVm { uuid: vm.uuid }).await.unwrap();
    assert_eq!(bus.call(ps()).await.unwrap().available_gb, before);

    // Hosts fill up and free again.
    let big = bus.call(create("big", 16)).await.unwrap();
    let big2 = bus.call(create("big2", 16)).await.unwrap();
    let big3 = bus.call(create("big3", 16)).await.unwrap();
    bus.call(StartVm {
        uuid: big.uuid.clone(),
    })
    .await
    .unwrap();
    bus.call(StartVm { uuid: big2.uuid }).await.unwrap();
    let full = bus
        .call(StartVm {
            uuid: big3.uuid.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(full.code(), "host.NO_CAPACITY");
    bus.call(StopVm { uuid: big.uuid }).await.unwrap();
    bus.call(StartVm { uuid: big3.uuid }).await.unwrap();
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let (bus, _auditor) = all_services().await;
    bus.call(create("a", 1)).await.unwrap();
    assert_eq!(
        bus.call(create("a", 1)).await.unwrap_err().code(),
        "vm.DUPLICATE_NAME"
    );
    assert_eq!(
        bus.call(create("", 1)).await.unwrap_err().code(),
        "vm.INVALID_ARGUMENT"
    );
    let unknown = GetCapacity {
        primary_storage: "ps-9".into(),
    };
    assert_eq!(
        bus.call(unknown).await.unwrap_err().code(),
        "storage.NOT_FOUND"
    );
}

#[tokio::test]
async fn install_refuses_unknown_services() {
    let bus = Bus::embedded();
    let err = install(&bus, &["vm", "billing"], &HostAgents::default())
        .await
        .err()
        .expect("billing is no demo service");
    assert_eq!(err.code(), cloudbus::codes::INVALID_ARGUMENT);
    assert!(err.description().contains("billing"));
}

/// The whole path of a VM start, with the hosts' agents served apart from
/// the node (as `cloudbus agent` does): API -> vm -> host -> HTTP agent ->
/// callback -> API event. A host whose agent goes down fails the start
/// with the agent's code and gives its capacity back.
#[tokio::test]
async fn a_vm_start_reaches_the_agent_and_a_dead_agent_fails_cleanly() {
    let mut hosts = Simulation::demo().serve().await.unwrap();
    let agents = HostAgents {
        urls: hosts
            .iter()
            .map(|(name, agent)| format!("{name}={}", agent.url()))
            .collect(),
        // No ping comes between the agent's death and the start: the start
        // itself meets the dead agent.
        tracking: TrackerConfig {
            interval: Duration::from_secs(3600),
            ..TrackerConfig::default()
        },
        ..HostAgents::default()
    };
    let bus = Bus::embedded();
    let installed = install(&bus, &SERVICES, &agents).await.unwrap();
    let a = bus.call(create("a", 16)).await.unwrap();
    let started = bus.call(StartVm { uuid: a.uuid }).await.unwrap();
    assert_eq!(started.host, "host-1");
    assert_eq!(started.console, "vnc://host-1:5900");
    let (_, host1) = hosts.remove(0);
    let host1_stats = std::sync::Arc::clone(host1.stats());

    // host-2 is the only one with room; its agent goes away.
    let (_, host2) = hosts.remove(0);
    host2.shutdown().await.unwrap();
    let b = bus.call(create("b", 16)).await.unwrap();
    let err = bus
        .call(StartVm {
            uuid: b.uuid.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), cloudbus_agent::codes::UNREACHABLE, "{err}");
    let vm = bus.call(QueryVms { state: None }).await.unwrap();
    assert!(vm.vms.iter().any(|v| v.name == "b" && v.state == "Stopped"));
    // Its capacity came back: the next failure is the agent again, not
    // host.NO_CAPACITY.
    let again = bus.call(StartVm { uuid: b.uuid }).await.unwrap_err();
    assert_eq!(again.code(), cloudbus_agent::codes::UNREACHABLE, "{again}");
    let client = installed.agents.unwrap();
    assert_eq!(client.stats().unreachable.get(), 2);
    bus.shutdown().await;
    host1.shutdown().await.unwrap();
    assert_eq!(host1_stats.callbacks_sent.get(), 1, "booted by callback");
}

/// A host whose agent does not answer is tracked as Disconnected (and
/// said so by a `host.StatusChanged` event): nothing is placed on it.
#[tokio::test]
async fn a_host_whose_agent_does_not_answer_is_disconnected_and_gets_no_vm() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let agents = HostAgents {
        urls: vec![format!("host-9={url}")],
        ..HostAgents::default()
    };
    let bus = Bus::embedded();
    let mut changes = bus.subscribe::<HostStatusChanged>().await.unwrap();
    install(&bus, &SERVICES, &agents).await.unwrap();
    let change = changes.recv().await.unwrap();
    assert_eq!(
        (change.host.as_str(), change.status.as_str()),
        ("host-9", "Disconnected")
    );
    assert_eq!(change.node, bus.node_id().to_string());
    let tracked = bus.call(GetTrackedHosts {}).await.unwrap();
    assert_eq!(tracked.hosts.len(), 1);
    assert_eq!(tracked.hosts[0].status, "Disconnected");
    let vm = bus.call(create("c", 1)).await.unwrap();
    let err = bus.call(StartVm { uuid: vm.uuid }).await.unwrap_err();
    assert_eq!(err.code(), "host.NO_CAPACITY", "{err}");
    bus.shutdown().await;
}
