//! The host service: keeps the capacity of the (simulated) hypervisors and
//! places VMs on them.

use std::sync::Mutex;

use cloudbus::{Context, ErrorCode, Handler, MessageHandler, Service, SyncKey};

use crate::messages::{AllocateHost, HostAllocated, ReleaseHost};

/// Allocation and release touch the same capacity table, so they share one
/// sync key: a release sent (as a plain message) before an allocation is
/// applied before it.
const CAPACITY_KEY: &str = "host-capacity";

struct Host {
    name: String,
    free_cpus: u32,
    free_memory_gb: u32,
}

/// The host service's state.
pub struct HostService {
    hosts: Mutex<Vec<Host>>,
}

impl HostService {
    /// Hosts named `host-1`… each with the given capacity.
    pub fn new(count: usize, cpus: u32, memory_gb: u32) -> Self {
        let hosts = (1..=count)
            .map(|i| Host {
                name: format!("host-{i}"),
                free_cpus: cpus,
                free_memory_gb: memory_gb,
            })
            .collect();
        Self {
            hosts: Mutex::new(hosts),
        }
    }

    /// The service, ready to register.
    pub fn service(self) -> Service {
        Service::builder("host", self)
            .handle::<AllocateHost>()
            .receive::<ReleaseHost>()
            .build()
    }
}

impl Handler<AllocateHost> for HostService {
    async fn handle(&self, req: AllocateHost, _ctx: Context) -> Result<HostAllocated, ErrorCode> {
        let mut hosts = self.hosts.lock().expect("host table");
        // The host with the most free memory; the first of equals.
        let best = hosts
            .iter_mut()
            .filter(|h| h.free_cpus >= req.cpus && h.free_memory_gb >= req.memory_gb)
            .max_by(|a, b| {
                a.free_memory_gb
                    .cmp(&b.free_memory_gb)
                    .then_with(|| b.name.cmp(&a.name))
            });
        match best {
            Some(host) => {
                host.free_cpus -= req.cpus;
                host.free_memory_gb -= req.memory_gb;
                Ok(HostAllocated {
                    host: host.name.clone(),
                })
            }
            None => Err(ErrorCode::new(
                "host.NO_CAPACITY",
                format!(
                    "no host has {} CPUs and {} GiB free for VM {}",
                    req.cpus, req.memory_gb, req.vm_uuid
                ),
            )),
        }
    }

    fn sync_key(&self, _req: &AllocateHost) -> Option<SyncKey> {
        Some(SyncKey::new(CAPACITY_KEY))
    }
}

impl MessageHandler<ReleaseHost> for HostService {
    async fn receive(&self, msg: ReleaseHost, _ctx: Context) -> Result<(), ErrorCode> {
        let mut hosts = self.hosts.lock().expect("host table");
        let host = hosts
            .iter_mut()
            .find(|h| h.name == msg.host)
            .ok_or_else(|| ErrorCode::new("host.NOT_FOUND", format!("no host {}", msg.host)))?;
        host.free_cpus += msg.cpus;
        host.free_memory_gb += msg.memory_gb;
        Ok(())
    }

    fn sync_key(&self, _msg: &ReleaseHost) -> Option<SyncKey> {
        Some(SyncKey::new(CAPACITY_KEY))
    }
}
