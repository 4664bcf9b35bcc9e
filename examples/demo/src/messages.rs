//! The demo's messages: the contract between its services. Each service
//! owns the types whose names start with its own name.

use cloudbus::{Event, Message, ReplyStyle, Request};
use serde::{Deserialize, Serialize};

macro_rules! message {
    ($(#[$doc:meta])* $name:ident = $ty:literal { $($(#[$fdoc:meta])* $field:ident : $t:ty),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
        pub struct $name { $($(#[$fdoc])* pub $field: $t),* }
        impl Message for $name { const TYPE: &'static str = $ty; }
    };
}

/// What the control plane knows of one VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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

message!(
    /// Blocking API: creates a VM (stopped) and answers with its inventory.
    CreateVm = "vm.CreateVm" { name: String, cpus: u32, memory_gb: u32, disk_gb: u32 }
);
impl Request for CreateVm {
    type Reply = VmInventory;
}
impl Message for VmInventory {
    const TYPE: &'static str = "vm.VmInventory";
}

message!(
    /// Blocking (read) API, answered straight to the caller.
    QueryVms = "vm.QueryVms" { state: Option<String> }
);
message!(
    /// The answer to [`QueryVms`], sorted by name.
    VmList = "vm.VmList" { vms: Vec<VmInventory> }
);
impl Request for QueryVms {
    type Reply = VmList;
}

message!(
    /// Non-blocking API: answered by publishing [`VmStarted`], which the
    /// caller and every subscriber (the auditor) receive.
    StartVm = "vm.StartVm" { uuid: String }
);
message!(
    /// The API event answering [`StartVm`].
    VmStarted = "vm.VmStarted" {
        uuid: String,
        name: String,
        host: String,
        /// Where the VM's console is, as its hypervisor reported.
        console: String,
    }
);
impl Request for StartVm {
    type Reply = VmStarted;
    const STYLE: ReplyStyle = ReplyStyle::ApiEvent;
}
impl Event for VmStarted {}

message!(
    /// Non-blocking API: answered by publishing [`VmStopped`].
    StopVm = "vm.StopVm" { uuid: String }
);
message!(
    /// The API event answering [`StopVm`].
    VmStopped = "vm.VmStopped" { uuid: String, name: String }
);
impl Request for StopVm {
    type Reply = VmStopped;
    const STYLE: ReplyStyle = ReplyStyle::ApiEvent;
}
impl Event for VmStopped {}

message!(
    /// Blocking API: deletes a VM and gives its disk back to storage.
    DestroyVm = "vm.DestroyVm" { uuid: String }
);
message!(
    /// The answer to [`DestroyVm`].
    VmDestroyed = "vm.VmDestroyed" { uuid: String }
);
impl Request for DestroyVm {
    type Reply = VmDestroyed;
}

message!(
    /// Internal (canonical) event: a VM changed state.
    VmStateChanged = "vm.StateChanged" { uuid: String, name: String, from: String, to: String }
);
impl Event for VmStateChanged {}

message!(
    /// Internal request from the vm service: pick a host with room.
    AllocateHost = "host.AllocateHost" { vm_uuid: String, cpus: u32, memory_gb: u32 }
);
message!(
    /// The host chosen for a VM.
    HostAllocated = "host.HostAllocated" { host: String }
);
impl Request for AllocateHost {
    type Reply = HostAllocated;
}

message!(
    /// Internal request from the vm service: boot a VM on the host it was
    /// given. The host service asks the host's agent over HTTP, which
    /// accepts at once and calls back when the VM runs.
    StartVmOnHost = "host.StartVmOnHost" {
        vm_uuid: String,
        name: String,
        host: String,
        cpus: u32,
        memory_gb: u32,
    }
);
message!(
    /// A VM running on its host.
    VmStartedOnHost = "host.VmStartedOnHost" { host: String, console: String }
);
impl Request for StartVmOnHost {
    type Reply = VmStartedOnHost;
}

message!(
    /// Internal request from the vm service: power a VM off on its host,
    /// which the host's agent answers in its HTTP response.
    StopVmOnHost = "host.StopVmOnHost" { vm_uuid: String, host: String }
);
message!(
    /// A VM no longer running on its host.
    VmStoppedOnHost = "host.VmStoppedOnHost" { host: String }
);
impl Request for StopVmOnHost {
    type Reply = VmStoppedOnHost;
}

message!(
    /// Plain message (no reply): a VM left its host.
    ReleaseHost = "host.ReleaseHost" { host: String, cpus: u32, memory_gb: u32 }
);

message!(
    /// Internal request: reserve disk space for a VM.
    AllocateVolume = "storage.AllocateVolume" { vm_uuid: String, size_gb: u32 }
);
message!(
    /// The storage that holds the VM's volume.
    VolumeAllocated = "storage.VolumeAllocated" { primary_storage: String }
);
impl Request for AllocateVolume {
    type Reply = VolumeAllocated;
}

message!(
    /// Plain message, like ZStack's `ReturnPrimaryStorageCapacityMsg`: the
    /// sender does not care about the result.
    ReturnCapacity = "storage.ReturnCapacity" { primary_storage: String, size_gb: u32 }
);

message!(
    /// Blocking request: free capacity of a primary storage.
    GetCapacity = "storage.GetCapacity" { primary_storage: String }
);
message!(
    /// The answer to [`GetCapacity`].
    Capacity = "storage.Capacity" { primary_storage: String, total_gb: u32, available_gb: u32 }
);
impl Request for GetCapacity {
    type Reply = Capacity;
}

message!(
    /// Blocking request: what the auditor has recorded so far.
    GetAuditLog = "audit.GetAuditLog" {}
);
message!(
    /// The answer to [`GetAuditLog`], oldest first.
    AuditLog = "audit.AuditLog" { entries: Vec<String> }
);
impl Request for GetAuditLog {
    type Reply = AuditLog;
}
