//! An example control plane on cloudbus, after ZStack: a `vm` service
//! (the API), `host` and `storage` services it drives by messages, and an
//! `audit` service that records every VM event.
//!
//! [`run`] plays a short scenario on the embedded bus and narrates it; it
//! is what `cloudbus demo` shows. [`install`] registers the services on
//! any bus, which is how `cloudbus node` hosts them on a broker.

pub mod audit;
pub mod host;
pub mod hypervisor;
pub mod messages;
pub mod storage;
pub mod trace;
pub mod vm;

use std::time::Duration;

use cloudbus::{Bus, ErrorCode, codes};
use cloudbus_agent::{AgentClient, AgentClientBuilder};

pub use audit::Auditor;
use hypervisor::Simulation;
use messages::*;

/// The demo's services, by name.
pub const SERVICES: [&str; 4] = ["vm", "host", "storage", "audit"];

/// Where the host service finds its hosts' hypervisor agents.
#[derive(Debug, Clone)]
pub struct HostAgents {
    /// The hosts of the control plane, each `name=url` (or a bare agent
    /// URL, which then names the host), e.g.
    /// `host-7=http://10.0.0.7:7070`. Every node gets the same list; each
    /// tracks the hosts it owns by the ring. When empty, the node serves
    /// two simulated hosts, `host-1` and `host-2`, itself, over HTTP on
    /// loopback (every such node its own copies).
    pub urls: Vec<String>,
    /// The node's agent client: callback listener, limits, timeout.
    pub client: AgentClientBuilder,
    /// How the host service pings its hosts.
    pub tracking: host::TrackerConfig,
}

impl Default for HostAgents {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            // Inside the bus's default 30 s call timeout, so a stuck agent
            // surfaces as the agent's timeout, not the caller's.
            client: AgentClient::builder().timeout(Duration::from_secs(20)),
            tracking: host::TrackerConfig::default(),
        }
    }
}

/// What [`install`] started besides the services.
pub struct Installed {
    /// The auditor, when `audit` was installed.
    pub auditor: Option<Auditor>,
    /// The agent client of the host service, when `host` was installed.
    pub agents: Option<AgentClient>,
}

/// Registers the named demo services (any of [`SERVICES`]) on `bus`; the
/// host service connects the hosts of `agents` first.
pub async fn install(
    bus: &Bus,
    names: &[&str],
    agents: &HostAgents,
) -> Result<Installed, ErrorCode> {
    let mut installed = Installed {
        auditor: None,
        agents: None,
    };
    for name in names {
        match *name {
            "vm" => bus.register(vm::VmService::default().service()).await?,
            "host" => {
                let client = agents.client.clone().start().await?;
                let (inventory, simulated) = if agents.urls.is_empty() {
                    let simulated = Simulation::demo().serve().await.map_err(|e| {
                        ErrorCode::new(
                            codes::INTERNAL,
                            format!("cannot serve the simulated hosts: {e}"),
                        )
                    })?;
                    let inventory = simulated
                        .iter()
                        .map(|(name, agent)| host::HostRecord {
                            uuid: name.clone(),
                            agent: agent.url(),
                        })
                        .collect();
                    let agents = simulated.into_iter().map(|(_, agent)| agent).collect();
                    (inventory, agents)
                } else {
                    let inventory = agents.urls.iter().map(|u| host::HostRecord::parse(u));
                    (inventory.collect(), Vec::new())
                };
                let service = host::HostService::start(
                    bus,
                    client.clone(),
                    inventory,
                    agents.tracking.clone(),
                    simulated,
                )
                .await;
                bus.register(service.service()).await?;
                installed.agents = Some(client);
            }
            "storage" => {
                bus.register(storage::StorageService::new(1000).service())
                    .await?
            }
            "audit" => installed.auditor = Some(Auditor::start(bus).await?),
            other => {
                return Err(ErrorCode::new(
                    codes::INVALID_ARGUMENT,
                    format!(
                        "no demo service {other:?}; choose from {}",
                        SERVICES.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(installed)
}

/// Plays the demo on `bus` (which must have no services yet), telling what
/// happens through `say`, one line at a time, then shuts the bus down.
/// The lines are the same on every run.
pub async fn run(
    bus: &Bus,
    agents: &HostAgents,
    mut say: impl FnMut(String),
) -> Result<(), ErrorCode> {
    let installed = install(bus, &SERVICES, agents).await?;
    let auditor = installed
        .auditor
        .expect("audit is one of the demo services");
    let client = installed.agents.expect("host is one of the demo services");
    say(format!(
        "bus {:?} on the embedded transport: services {}",
        bus.name(),
        bus.services().join(", ")
    ));
    if agents.urls.is_empty() {
        say(
            "hosts host-1 and host-2: simulated hypervisor agents in this process, over HTTP"
                .into(),
        );
    } else {
        say(format!("hypervisor agents at {}", agents.urls.join(", ")));
    }

    say("\n1. Blocking API: vm.CreateVm is answered by a reply to the caller".into());
    let mut created = Vec::new();
    for (name, cpus, memory_gb, disk_gb) in [
        ("web-1", 2, 4, 20),
        ("web-2", 2, 4, 20),
        ("db-1", 4, 8, 100),
        ("huge", 8, 64, 50),
    ] {
        let vm = bus
            .call(CreateVm {
                name: name.into(),
                cpus,
                memory_gb,
                disk_gb,
            })
            .await?;
        say(format!(
            "   created {:<6} {} CPUs {:>2} GiB  {}",
            vm.name, vm.cpus, vm.memory_gb, vm.state
        ));
        created.push(vm);
    }
    let uuid = |name: &str| {
        created
            .iter()
            .find(|vm| vm.name == name)
            .map(|vm| vm.uuid.clone())
            .expect("created above")
    };

    say("\n2. Non-blocking API: vm.StartVm is answered by the API event vm.VmStarted,".into());
    say("   which the caller and every subscriber (the auditor) receive".into());
    let started = bus
        .call(StartVm {
            uuid: uuid("web-1"),
        })
        .await?;
    say(format!(
        "   {} started on {}, console {}",
        started.name, started.host, started.console
    ));
    say("   vm asked host.AllocateHost, then host.StartVmOnHost; the host service sent".into());
    say(format!(
        "   POST /vm/boot to {}'s agent over HTTP, which answered 202 Accepted and called",
        started.host
    ));
    say("   back when the VM ran; vm then published vm.StateChanged and the API event".into());
    say(format!(
        "   (agent commands so far: {} sent, {} completed by callback)",
        client.stats().sent.get(),
        client.stats().callbacks.get()
    ));

    say("\n3. Per-resource serialization: StartVm, StopVm, StartVm on db-1 sent at once".into());
    let db = uuid("db-1");
    let (first, second, third) = futures::join!(
        bus.call(StartVm { uuid: db.clone() }).into_future(),
        bus.call(StopVm { uuid: db.clone() }).into_future(),
        bus.call(StartVm { uuid: db.clone() }).into_future(),
    );
    say(format!("   start -> running on {}", first?.host));
    say(format!(
        "   stop  -> {} stopped (halted by the agent, capacity returned by a plain message)",
        second?.name
    ));
    say(format!("   start -> running on {}", third?.host));
    say("   (one at a time, in arrival order: the sync key is the VM's uuid)".into());

    say("\n4. Blocking read API: vm.QueryVms".into());
    let list = bus.call(QueryVms { state: None }).await?;
    for vm in &list.vms {
        say(format!(
            "   {:<6} {:<8} {}",
            vm.name,
            vm.state,
            vm.host.as_deref().unwrap_or("-")
        ));
    }

    say("\n5. Plain message: vm.DestroyVm sends storage.ReturnCapacity and does not wait".into());
    let ps = storage::PRIMARY_STORAGE.to_string();
    let before = bus
        .call(GetCapacity {
            primary_storage: ps.clone(),
        })
        .await?;
    bus.call(DestroyVm {
        uuid: uuid("web-2"),
    })
    .await?;
    let after = bus
        .call(GetCapacity {
            primary_storage: ps,
        })
        .await?;
    say(format!(
        "   {} free: {} GiB before, {} GiB after destroying web-2",
        after.primary_storage, before.available_gb, after.available_gb
    ));

    say("\n6. Errors are values with stable codes".into());
    let missing = "0123456789abcdef0123456789abcdef".to_string();
    let outcomes = [
        (
            "start an unknown VM",
            bus.call(StartVm { uuid: missing }).await.err(),
        ),
        (
            "start a running VM",
            bus.call(StartVm {
                uuid: uuid("web-1"),
            })
            .await
            .err(),
        ),
        (
            "start a VM no host can hold",
            bus.call(StartVm { uuid: uuid("huge") }).await.err(),
        ),
        (
            "call a service nobody runs",
            bus.call(StartVm {
                uuid: uuid("web-1"),
            })
            .service("billing")
            .await
            .err(),
        ),
    ];
    for (what, error) in outcomes {
        let error =
            error.ok_or_else(|| ErrorCode::new(codes::INTERNAL, format!("{what} did not fail")))?;
        say(format!("   {what:<28} -> {}", error.code()));
    }

    bus.shutdown().await;
    say("\n7. The auditor service handled every VM event and saw, in order:".into());
    for entry in auditor.finish().await {
        say(format!("   {entry}"));
    }
    let stats = bus.counters();
    say(format!(
        "\nbus shut down cleanly; {} timeouts, {} late replies, {} events dropped",
        stats.timeouts.get(),
        stats.late_replies.get(),
        stats.events_dropped.get()
    ));
    let agents = client.stats();
    say(format!(
        "host agents: {} commands over HTTP, {} completed by callback, {} failed",
        agents.sent.get(),
        agents.callbacks.get(),
        agents.failed.get()
    ));
    client.shutdown();
    Ok(())
}
