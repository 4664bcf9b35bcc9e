//! The hypervisor agent on each host, reached over HTTP, not the bus: the
//! commands the host service sends it, and a simulated agent to run them.

mod simulated;

use cloudbus_agent::{Command, Mode};
use serde::{Deserialize, Serialize};

pub use simulated::{AgentTls, CallbackTls, SimulatedHost, Simulation};

/// Asks an agent what host it runs on and how much room is left: the
/// host service's ping, sent by the node that tracks the host.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConnectHost {}

/// What an agent reports about its host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostFacts {
    /// The host's name.
    pub name: String,
    /// CPUs the host offers to VMs.
    pub cpus: u32,
    /// Memory the host offers to VMs, in GiB.
    pub memory_gb: u32,
    /// CPUs not taken by running VMs (all of them when not said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_cpus: Option<u32>,
    /// Memory not taken by running VMs, in GiB (all when not said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free_memory_gb: Option<u32>,
}

impl HostFacts {
    /// CPUs left for new VMs.
    pub fn free_cpus(&self) -> u32 {
        self.free_cpus.unwrap_or(self.cpus)
    }

    /// Memory left for new VMs, in GiB.
    pub fn free_memory_gb(&self) -> u32 {
        self.free_memory_gb.unwrap_or(self.memory_gb)
    }
}

impl Command for ConnectHost {
    const PATH: &'static str = "/host/connect";
    type Response = HostFacts;
}

/// Boots a VM: long work, so the agent accepts it at once and calls back.
#[derive(Debug, Serialize, Deserialize)]
pub struct BootVm {
    /// The VM's id.
    pub vm_uuid: String,
    /// The VM's name, for the hypervisor's own records.
    pub name: String,
    /// CPUs to give it.
    pub cpus: u32,
    /// Memory to give it, in GiB.
    pub memory_gb: u32,
}

/// A VM running on a hypervisor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmBooted {
    /// The VM's id.
    pub vm_uuid: String,
    /// Where its console is.
    pub console: String,
}

impl Command for BootVm {
    const PATH: &'static str = "/vm/boot";
    const MODE: Mode = Mode::Callback;
    type Response = VmBooted;
}

/// Powers a VM off: quick, answered in the response.
#[derive(Debug, Serialize, Deserialize)]
pub struct HaltVm {
    /// The VM's id.
    pub vm_uuid: String,
}

/// The answer to [`HaltVm`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmHalted {
    /// The VM's id.
    pub vm_uuid: String,
}

impl Command for HaltVm {
    const PATH: &'static str = "/vm/halt";
    type Response = VmHalted;
}
