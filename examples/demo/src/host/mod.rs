//! The host service: keeps the capacity of the hypervisors, places VMs on
//! them, and drives each host's agent over HTTP (never over the bus: a
//! hundred thousand hosts must not mean a hundred thousand queues).

mod tracker;

use std::sync::Arc;

use cloudbus::{Bus, Context, ErrorCode, Service};
use cloudbus_agent::{AgentClient, RunningAgent};

use crate::hypervisor::{BootVm, HaltVm};
use crate::messages::{
    AllocateHost, AllocateOwnedHost, GetTrackedHosts, HostAllocated, ReleaseHost, StartVmOnHost,
    StopVmOnHost, TrackedHosts, VmStartedOnHost, VmStoppedOnHost,
};
pub use tracker::{HostRecord, HostTracker, TrackerConfig, owner};

/// Reservations and releases on one node touch the same capacity table,
/// so they share one sync key: a release sent (as a plain message) before
/// an allocation is applied before it.
const CAPACITY_KEY: &str = "host-capacity";

/// The host service's state: the hosts this node tracks.
pub struct HostService {
    tracker: Arc<HostTracker>,
    agents: AgentClient,
    /// Agents simulated in this process, served as long as the service
    /// lives.
    _simulated: Vec<RunningAgent>,
}

impl HostService {
    /// Starts tracking, on `bus`, the hosts of `inventory` that this node
    /// owns by the ring (pinging them once before it returns, so that the
    /// service has hosts to offer at once), and keeps following the ring.
    /// `simulated` are agents this process serves itself, kept running
    /// while the service lives.
    pub async fn start(
        bus: &Bus,
        agents: AgentClient,
        inventory: Vec<HostRecord>,
        config: TrackerConfig,
        simulated: Vec<RunningAgent>,
    ) -> Self {
        let tracker = Arc::new(HostTracker::new(inventory, agents.clone(), config));
        tracker.rebalance(bus);
        tracker.sweep(bus).await;
        tracker.spawn(bus);
        Self {
            tracker,
            agents,
            _simulated: simulated,
        }
    }

    /// The tracker, to look at what this node tracks.
    pub fn tracker(&self) -> Arc<HostTracker> {
        self.tracker.clone()
    }

    /// The service, ready to register.
    pub fn service(self) -> Service {
        Service::new("host", self)
    }

    /// The agent of a host this node tracks.
    fn agent_of(&self, ctx: &Context, host: &str) -> Result<String, ErrorCode> {
        if let Some(tracked) = self.tracker.lock().get(host) {
            return Ok(tracked.agent.clone());
        }
        let owner =
            owner(&ctx.bus().cluster(), host).map_or_else(|| "none".to_string(), |n| n.to_string());
        Err(ErrorCode::new(
            "host.NOT_TRACKED",
            format!(
                "node {} does not track host {host}; its owner by the ring is {owner}",
                ctx.bus().node_id()
            ),
        ))
    }
}

fn no_capacity(req: &AllocateOwnedHost) -> ErrorCode {
    ErrorCode::new(
        "host.NO_CAPACITY",
        format!(
            "no host has {} CPUs and {} GiB free for VM {}",
            req.cpus, req.memory_gb, req.vm_uuid
        ),
    )
}

#[cloudbus::handlers]
impl HostService {
    /// Any node takes it: it reserves room on a host it tracks, or asks
    /// the other host nodes for one of theirs.
    async fn allocate_host(
        &self,
        req: AllocateHost,
        ctx: Context,
    ) -> Result<HostAllocated, ErrorCode> {
        let me = ctx.bus().node_id();
        let view = ctx.bus().cluster();
        let others = view.nodes_with("host").filter(|n| *n != me);
        let ask = AllocateOwnedHost {
            vm_uuid: req.vm_uuid,
            cpus: req.cpus,
            memory_gb: req.memory_gb,
        };
        let mut refusal = None;
        for node in std::iter::once(me).chain(others) {
            match ctx.bus().call(ask.clone()).node(node).await {
                Ok(placed) => return Ok(placed),
                Err(error) if error.is("host.NO_CAPACITY") => {
                    // The most telling refusal: one that says why.
                    if refusal.is_none() || error.cause().is_some() {
                        refusal = Some(error);
                    }
                }
                Err(error) => {
                    tracing::warn!(target: "cloudbus_demo::host", %node, %error, "cannot ask a host node for room");
                }
            }
        }
        Err(refusal.unwrap_or_else(|| no_capacity(&ask)))
    }

    #[sync_key(CAPACITY_KEY)]
    async fn allocate_owned_host(
        &self,
        req: AllocateOwnedHost,
        _ctx: Context,
    ) -> Result<HostAllocated, ErrorCode> {
        let mut hosts = self.tracker.lock();
        // The connected host with the most free memory; the first of equals.
        let best = hosts
            .iter_mut()
            .filter(|(_, h)| h.status == tracker::Status::Connected)
            .filter_map(|(name, h)| Some((name, h.free.as_mut()?)))
            .filter(|(_, (cpus, memory))| *cpus >= req.cpus && *memory >= req.memory_gb)
            .max_by(|(a_name, a), (b_name, b)| a.1.cmp(&b.1).then_with(|| b_name.cmp(a_name)));
        if let Some((name, free)) = best {
            free.0 -= req.cpus;
            free.1 -= req.memory_gb;
            return Ok(HostAllocated { host: name.clone() });
        }
        // Say why when hosts are out of reach: that is what to fix.
        let Some(why) = hosts.values().find_map(|h| h.error.clone()) else {
            return Err(no_capacity(&req));
        };
        let down = hosts
            .values()
            .filter(|h| h.status == tracker::Status::Disconnected)
            .count();
        let error = ErrorCode::new(
            "host.NO_CAPACITY",
            format!(
                "{}; {down} of {} hosts disconnected",
                no_capacity(&req).description(),
                hosts.len()
            ),
        )
        .with_cause(why);
        Err(error)
    }

    async fn start_vm_on_host(
        &self,
        req: StartVmOnHost,
        ctx: Context,
    ) -> Result<VmStartedOnHost, ErrorCode> {
        let agent = self.agent_of(&ctx, &req.host)?;
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
        ctx: Context,
    ) -> Result<VmStoppedOnHost, ErrorCode> {
        let agent = self.agent_of(&ctx, &req.host)?;
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

    /// Gives back room on a host this node tracks; a host that moved to
    /// another node meanwhile is left to its new owner, which learns the
    /// room left from the host's agent.
    #[sync_key(CAPACITY_KEY)]
    async fn release_host(&self, msg: ReleaseHost, _ctx: Context) -> Result<(), ErrorCode> {
        if let Some((cpus, memory)) = self
            .tracker
            .lock()
            .get_mut(&msg.host)
            .and_then(|h| h.free.as_mut())
        {
            *cpus += msg.cpus;
            *memory += msg.memory_gb;
        }
        Ok(())
    }

    async fn get_tracked_hosts(
        &self,
        _req: GetTrackedHosts,
        ctx: Context,
    ) -> Result<TrackedHosts, ErrorCode> {
        Ok(TrackedHosts {
            node: ctx.bus().node_id().to_string(),
            hosts: self.tracker.tracked(),
        })
    }
}
