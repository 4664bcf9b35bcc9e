//! The demo's messages: the contract between its services. Each service
//! owns the types whose names start with its own name.

use cloudbus::Message;
use serde::{Deserialize, Serialize};

/// What the control plane knows of one VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "vm.VmInventory")]
pub struct VmInventory {
    /// The VM's id.
    pub uuid: String,
    /// Its name, unique in the demo.
    pub name: String,
    /// `Stopped` or `Running`.
    pub state: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in GiB.
    pub memory_gb: u32,
    /// The host it runs on, while running.
    pub host: Option<String>,
}

/// Blocking API: creates a VM (stopped) and answers with its inventory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "vm.CreateVm", reply = VmInventory)]
pub struct CreateVm {
    pub name: String,
    pub cpus: u32,
    pub memory_gb: u32,
    pub disk_gb: u32,
}

/// Blocking API: creates a VM (stopped) from an image, which the `image`
/// service prepares (in the demo, a Python service: `clients/python/examples`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "vm.CreateVmFromImage", reply = VmInventory)]
pub struct CreateVmFromImage {
    pub name: String,
    pub cpus: u32,
    pub memory_gb: u32,
    pub image: String,
}

/// Request to the `image` service: make an image ready for a VM's disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "image.PrepareImage", reply = ImagePrepared)]
pub struct PrepareImage {
    pub image: String,
    pub vm_uuid: String,
}

/// The answer to [`PrepareImage`]: the disk the VM needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "image.ImagePrepared")]
pub struct ImagePrepared {
    pub image: String,
    pub size_gb: u32,
}

/// Blocking (read) API, answered straight to the caller.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "vm.QueryVms", reply = VmList)]
pub struct QueryVms {
    pub state: Option<String>,
}

/// The answer to [`QueryVms`], sorted by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "vm.VmList")]
pub struct VmList {
    pub vms: Vec<VmInventory>,
}

/// Non-blocking API: answered by publishing [`VmStarted`], which the
/// caller and every subscriber (the auditor) receive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "vm.StartVm", reply = VmStarted, api_event)]
pub struct StartVm {
    pub uuid: String,
}

/// The API event answering [`StartVm`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "vm.VmStarted", event)]
pub struct VmStarted {
    pub uuid: String,
    pub name: String,
    pub host: String,
    /// Where the VM's console is, as its hypervisor reported.
    pub console: String,
}

/// Non-blocking API: answered by publishing [`VmStopped`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "vm.StopVm", reply = VmStopped, api_event)]
pub struct StopVm {
    pub uuid: String,
}

/// The API event answering [`StopVm`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "vm.VmStopped", event)]
pub struct VmStopped {
    pub uuid: String,
    pub name: String,
}

/// Blocking API: deletes a VM and gives its disk back to storage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "vm.DestroyVm", reply = VmDestroyed)]
pub struct DestroyVm {
    pub uuid: String,
}

/// The answer to [`DestroyVm`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "vm.VmDestroyed")]
pub struct VmDestroyed {
    pub uuid: String,
}

/// Internal (canonical) event: a VM changed state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "vm.StateChanged", event)]
pub struct VmStateChanged {
    pub uuid: String,
    pub name: String,
    pub from: String,
    pub to: String,
}

/// Internal request from the vm service: pick a host with room.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "host.AllocateHost", reply = HostAllocated)]
pub struct AllocateHost {
    pub vm_uuid: String,
    pub cpus: u32,
    pub memory_gb: u32,
}

/// The host chosen for a VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "host.HostAllocated")]
pub struct HostAllocated {
    pub host: String,
}

/// Internal request between host services: reserve room on one of the
/// hosts the receiving node tracks (the node that took `AllocateHost`
/// asks itself first, then the others).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "host.AllocateOwnedHost", reply = HostAllocated)]
pub struct AllocateOwnedHost {
    pub vm_uuid: String,
    pub cpus: u32,
    pub memory_gb: u32,
}

/// Event: a host's agent answered again (`Connected`) or stopped answering
/// (`Disconnected`), as seen by `node`, the management node that tracks
/// the host now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "host.StatusChanged", event)]
pub struct HostStatusChanged {
    pub host: String,
    pub status: String,
    pub node: String,
}

/// Asks one node which hosts it tracks now (send it with `.node(id)`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "host.GetTrackedHosts", reply = TrackedHosts)]
pub struct GetTrackedHosts {}

/// The hosts a node tracks, sorted, with their status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "host.TrackedHosts")]
pub struct TrackedHosts {
    pub node: String,
    pub hosts: Vec<TrackedHost>,
}

/// One tracked host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackedHost {
    pub host: String,
    /// `Connected`, `Disconnected`, or `Unknown` before its first ping.
    pub status: String,
}

/// Internal request from the vm service: boot a VM on the host it was
/// given. The host service asks the host's agent over HTTP, which
/// accepts at once and calls back when the VM runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "host.StartVmOnHost", reply = VmStartedOnHost)]
pub struct StartVmOnHost {
    pub vm_uuid: String,
    pub name: String,
    pub host: String,
    pub cpus: u32,
    pub memory_gb: u32,
}

/// A VM running on its host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "host.VmStartedOnHost")]
pub struct VmStartedOnHost {
    pub host: String,
    pub console: String,
}

/// Internal request from the vm service: power a VM off on its host,
/// which the host's agent answers in its HTTP response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "host.StopVmOnHost", reply = VmStoppedOnHost)]
pub struct StopVmOnHost {
    pub vm_uuid: String,
    pub host: String,
}

/// A VM no longer running on its host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "host.VmStoppedOnHost")]
pub struct VmStoppedOnHost {
    pub host: String,
}

/// Plain message (no reply): a VM left its host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "host.ReleaseHost")]
pub struct ReleaseHost {
    pub host: String,
    pub cpus: u32,
    pub memory_gb: u32,
}

/// Internal request: reserve disk space for a VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "storage.AllocateVolume", reply = VolumeAllocated)]
pub struct AllocateVolume {
    pub vm_uuid: String,
    pub size_gb: u32,
}

/// The storage that holds the VM's volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "storage.VolumeAllocated")]
pub struct VolumeAllocated {
    pub primary_storage: String,
}

/// Plain message, like ZStack's `ReturnPrimaryStorageCapacityMsg`: the
/// sender does not care about the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "storage.ReturnCapacity")]
pub struct ReturnCapacity {
    pub primary_storage: String,
    pub size_gb: u32,
}

/// Blocking request: free capacity of a primary storage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "storage.GetCapacity", reply = Capacity)]
pub struct GetCapacity {
    pub primary_storage: String,
}

/// The answer to [`GetCapacity`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "storage.Capacity")]
pub struct Capacity {
    pub primary_storage: String,
    pub total_gb: u32,
    pub available_gb: u32,
}

/// Blocking request: what the auditor has recorded so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "audit.GetAuditLog", reply = AuditLog)]
pub struct GetAuditLog {}

/// The answer to [`GetAuditLog`], oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Message)]
#[message(type = "audit.AuditLog")]
pub struct AuditLog {
    pub entries: Vec<String>,
}
