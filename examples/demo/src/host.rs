//! The host service: keeps the capacity of the hypervisors, places VMs on
//! them, and drives each host's agent over HTTP (never over the bus: a
//! hundred thousand hosts must not mean a hundred thousand queues).

use std::sync::Mutex;
use std::time::Duration;

use cloudbus::{Context, ErrorCode, Service};
use cloudbus_agent::{AgentClient, RunningAgent};

use crate::hypervisor::{BootVm, ConnectHost, HaltVm};
use crate::messages::{
    AllocateHost, HostAllocated, ReleaseHost, StartVmOnHost, StopVmOnHost, VmStartedOnHost,
    VmStoppedOnHost,
};

/// Allocation and release touch the same capacity table, so they share one
/// sync key: a release sent (as a plain message) before an allocation is
/// applied before it.
const CAPACITY_KEY: &str = "host-capacity";

/// How long connecting to a host's agent may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

struct Host {
    name: String,
    /// The base URL of the host's agent.
    agent: String,
    free_cpus: u32,
    free_memory_gb: u32,
}

/// The host service's state.
pub struct HostService {
    hosts: Mutex<Vec<Host>>,
    agents: AgentClient,
    /// Agents simulated in this process, served as long as the service
    /// lives.
    _simulated: Vec<RunningAgent>,
}

impl HostService {
    /// Connects the hosts whose agents listen at `urls`: each agent reports
    /// its host's name and capacity. `simulated` are agents this process
    /// serves itself, kept running while the service lives.
    pub async fn connect(
        agents: AgentClient,
        urls: &[String],
        simulated: Vec<RunningAgent>,
    ) -> Result<Self, ErrorCode> {
        let mut hosts: Vec<Host> = Vec::with_capacity(urls.len());
        for url in urls {
            let facts = agents
                .call(url, ConnectHost {})
                .timeout(CONNECT_TIMEOUT)
                .await
                .map_err(|e| {
                    ErrorCode::new(
                        "host.CONNECT_FAILED",
                        format!("cannot connect the host whose agent is at {url}"),
                    )
                    .with_cause(e)
                })?;
            if let Some(twin) = hosts.iter().find(|h| h.name == facts.name) {
                return Err(ErrorCode::new(
                    "host.DUPLICATE_HOST",
                    format!(
                        "the agents at {} and {url} both say they run {}",
                        twin.agent, facts.name
                    ),
                ));
            }
            tracing::info!(
                target: "cloudbus_demo::host",
                "connected {} ({} CPUs, {} GiB) whose agent is at {url}",
                facts.name,
                facts.cpus,
                facts.memory_gb
            );
            hosts.push(Host {
                name: facts.name,
                agent: url.clone(),
                free_cpus: facts.cpus,
                free_memory_gb: facts.memory_gb,
            });
        }
        Ok(Self {
            hosts: Mutex::new(hosts),
            agents,
            _simulated: simulated,
        })
    }

    /// The service, ready to register.
    pub fn service(self) -> Service {
        Service::new("host", self)
    }

    fn agent_of(&self, host: &str) -> Result<String, ErrorCode> {
        self.hosts
            .lock()
            .expect("host table")
            .iter()
            .find(|h| h.name == host)
            .map(|h| h.agent.clone())
            .ok_or_else(|| not_found(host))
    }
}

fn not_found(host: &str) -> ErrorCode {
    ErrorCode::new("host.NOT_FOUND", format!("no host {host}"))
}

#[cloudbus::handlers]
impl HostService {
    #[sync_key(CAPACITY_KEY)]
    async fn allocate_host(
        &self,
        _req: AllocateHost,
        _ctx: Context,
    ) -> Result<HostAllocated, ErrorCode> {
        let mut hosts = self.hosts.lock().expect("host table");
        // The host with the most free memory; the first of equals.
        let best = hosts
            .iter_mut()
            .filter(|h| h.free_cpus >= _req.cpus && h.free_memory_gb >= _req.memory_gb)
            .max_by(|a, b| {
                a.free_memory_gb
                    .cmp(&b.free_memory_gb)
                    .then_with(|| b.name.cmp(&a.name))
            });
        match best {
            Some(host) => {
                host.free_cpus -= _req.cpus;
                host.free_memory_gb -= _req.memory_gb;
                Ok(HostAllocated {
                    host: host.name.clone(),
                })
            }
            None => Err(ErrorCode::new(
                "host.NO_CAPACITY",
                format!(
                    "no host has {} CPUs and {} GiB free for VM {}",
                    _req.cpus, _req.memory_gb, _req.vm_uuid
                ),
            )),
        }
    }

    async fn start_vm_on_host(
        &self,
        req: StartVmOnHost,
        _ctx: Context,
    ) -> Result<VmStartedOnHost, ErrorCode> {
        let agent = self.agent_of(&req.host)?;
        tracing::info!(
            target: "cloudbus_demo::host",
            "POST {agent}/vm/boot for {} (the agent calls back when it runs)",
            req.name
        );
        let booted = self
            .agents
            .call(
                &agent,
                BootVm {
                    vm_uuid: req.vm_uuid,
                    name: req.name,
                    cpus: req.cpus,
                    memory_gb: req.memory_gb,
                },
            )
            .await?;
        Ok(VmStartedOnHost {
            host: req.host,
            console: booted.console,
        })
    }

    async fn stop_vm_on_host(
        &self,
        req: StopVmOnHost,
        _ctx: Context,
    ) -> Result<VmStoppedOnHost, ErrorCode> {
        let agent = self.agent_of(&req.host)?;
        tracing::info!(target: "cloudbus_demo::host", "POST {agent}/vm/halt");
        self.agents
            .call(
                &agent,
                HaltVm {
                    vm_uuid: req.vm_uuid,
                },
            )
            .await?;
        Ok(VmStoppedOnHost { host: req.host })
    }

    #[sync_key(CAPACITY_KEY)]
    async fn release_host(&self, _msg: ReleaseHost, _ctx: Context) -> Result<(), ErrorCode> {
        let mut hosts = self.hosts.lock().expect("host table");
        let host = hosts
            .iter_mut()
            .find(|h| h.name == _msg.host)
            .ok_or_else(|| not_found(&_msg.host))?;
        host.free_cpus += _msg.cpus;
        host.free_memory_gb += _msg.memory_gb;
        Ok(())
    }
}
