//! The vm service: the API entry of the demo. It owns the VM table and
//! drives the host and storage services by messages; the host service
//! drives the hypervisors' agents over HTTP.

use std::collections::HashMap;
use std::sync::Mutex;

use cloudbus::{Context, ErrorCode, Service, SyncKey};
use uuid::Uuid;

use crate::messages::{
    AllocateHost, AllocateVolume, CreateVm, CreateVmFromImage, DestroyVm, PrepareImage, QueryVms,
    ReleaseHost, ReturnCapacity, StartVm, StartVmOnHost, StopVm, StopVmOnHost, VmDestroyed,
    VmInventory, VmList, VmStarted, VmStateChanged, VmStopped,
};

/// States a VM moves between.
pub const STOPPED: &str = "Stopped";
/// See [`STOPPED`].
pub const RUNNING: &str = "Running";

struct Vm {
    inventory: VmInventory,
    disk_gb: u32,
    primary_storage: String,
}

/// The vm service's state.
#[derive(Default)]
pub struct VmService {
    vms: Mutex<HashMap<String, Vm>>,
}

impl VmService {
    /// The service, ready to register.
    pub fn service(self) -> Service {
        Service::new("vm", self)
    }

    fn inventory(&self, uuid: &str) -> Result<VmInventory, ErrorCode> {
        self.vms
            .lock()
            .expect("vm table")
            .get(uuid)
            .map(|vm| vm.inventory.clone())
            .ok_or_else(|| not_found(uuid))
    }

    /// Sets the VM's state and host; returns the inventory before.
    fn set_state(
        &self,
        uuid: &str,
        state: &str,
        host: Option<String>,
    ) -> Result<VmInventory, ErrorCode> {
        let mut vms = self.vms.lock().expect("vm table");
        let vm = vms.get_mut(uuid).ok_or_else(|| not_found(uuid))?;
        let before = vm.inventory.clone();
        vm.inventory.state = state.into();
        vm.inventory.host = host;
        Ok(before)
    }
}

fn not_found(uuid: &str) -> ErrorCode {
    ErrorCode::new("vm.NOT_FOUND", format!("no VM with uuid {uuid}"))
}

fn invalid_state(vm: &VmInventory, wanted: &str) -> ErrorCode {
    ErrorCode::new(
        "vm.INVALID_STATE",
        format!("VM {} is {}, expected {wanted}", vm.name, vm.state),
    )
}

/// Every operation on one VM runs alone, in arrival order.
fn vm_key(uuid: &str) -> Option<SyncKey> {
    Some(SyncKey::new(format!("vm-{uuid}")))
}

async fn state_changed(ctx: &Context, vm: &VmInventory, to: &str) -> Result<(), ErrorCode> {
    ctx.bus()
        .publish(VmStateChanged {
            uuid: vm.uuid.clone(),
            name: vm.name.clone(),
            from: vm.state.clone(),
            to: to.into(),
        })
        .await
}

/// The node that tracks `host` now, to which commands for it go.
fn tracker_of(ctx: &Context, host: &str) -> Result<cloudbus::NodeId, ErrorCode> {
    crate::host::owner(&ctx.bus().cluster(), host).ok_or_else(|| {
        ErrorCode::new(
            cloudbus::codes::NO_SUCH_SERVICE,
            format!("no node runs the host service to drive host {host}"),
        )
    })
}

/// Gives a host the capacity of a VM that left it. A plain message:
/// nothing to wait for.
async fn release(ctx: &Context, host: String, vm: &VmInventory) -> Result<(), ErrorCode> {
    ctx.bus()
        .send(ReleaseHost {
            host: host.clone(),
            cpus: vm.cpus,
            memory_gb: vm.memory_gb,
        })
        .node(tracker_of(ctx, &host)?)
        .await
}

impl VmService {
    /// Creates VM `uuid` (stopped) with a volume from storage.
    async fn create(
        &self,
        req: CreateVm,
        uuid: String,
        ctx: &Context,
    ) -> Result<VmInventory, ErrorCode> {
        if req.name.is_empty() || req.cpus == 0 || req.memory_gb == 0 {
            return Err(ErrorCode::new(
                "vm.INVALID_ARGUMENT",
                "a VM needs a name, at least one CPU and some memory",
            ));
        }
        if self
            .vms
            .lock()
            .expect("vm table")
            .values()
            .any(|vm| vm.inventory.name == req.name)
        {
            return Err(ErrorCode::new(
                "vm.DUPLICATE_NAME",
                format!("a VM named {} exists", req.name),
            ));
        }
        let volume = ctx
            .bus()
            .call(AllocateVolume {
                vm_uuid: uuid.clone(),
                size_gb: req.disk_gb,
            })
            .await?;
        let inventory = VmInventory {
            uuid: uuid.clone(),
            name: req.name,
            state: STOPPED.into(),
            cpus: req.cpus,
            memory_gb: req.memory_gb,
            host: None,
        };
        let vm = Vm {
            inventory: inventory.clone(),
            disk_gb: req.disk_gb,
            primary_storage: volume.primary_storage,
        };
        self.vms.lock().expect("vm table").insert(uuid, vm);
        Ok(inventory)
    }
}

#[cloudbus::handlers]
impl VmService {
    async fn create_vm(&self, req: CreateVm, ctx: Context) -> Result<VmInventory, ErrorCode> {
        self.create(req, Uuid::new_v4().simple().to_string(), &ctx)
            .await
    }

    /// The disk comes from the `image` service, which may run on any node
    /// in any language (the demo's is in Python).
    async fn create_vm_from_image(
        &self,
        req: CreateVmFromImage,
        ctx: Context,
    ) -> Result<VmInventory, ErrorCode> {
        let uuid = Uuid::new_v4().simple().to_string();
        let image = ctx
            .bus()
            .call(PrepareImage {
                image: req.image,
                vm_uuid: uuid.clone(),
            })
            .await?;
        let create = CreateVm {
            name: req.name,
            cpus: req.cpus,
            memory_gb: req.memory_gb,
            disk_gb: image.size_gb,
        };
        self.create(create, uuid, &ctx).await
    }

    async fn query_vms(&self, req: QueryVms, _ctx: Context) -> Result<VmList, ErrorCode> {
        let mut vms: Vec<VmInventory> = self
            .vms
            .lock()
            .expect("vm table")
            .values()
            .map(|vm| vm.inventory.clone())
            .filter(|vm| req.state.as_ref().is_none_or(|s| *s == vm.state))
            .collect();
        vms.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(VmList { vms })
    }

    #[sync_key(vm_key(&req.uuid))]
    async fn start_vm(&self, req: StartVm, ctx: Context) -> Result<VmStarted, ErrorCode> {
        let vm = self.inventory(&req.uuid)?;
        if vm.state != STOPPED {
            return Err(invalid_state(&vm, STOPPED));
        }
        let placed = ctx
            .bus()
            .call(AllocateHost {
                vm_uuid: vm.uuid.clone(),
                cpus: vm.cpus,
                memory_gb: vm.memory_gb,
            })
            .await?;
        let booted = ctx
            .bus()
            .call(StartVmOnHost {
                vm_uuid: vm.uuid.clone(),
                name: vm.name.clone(),
                host: placed.host.clone(),
                cpus: vm.cpus,
                memory_gb: vm.memory_gb,
            })
            // The node that tracks the host drives its agent.
            .node(tracker_of(&ctx, &placed.host)?)
            .await;
        let booted = match booted {
            Ok(booted) => booted,
            Err(error) => {
                // The VM never ran: give the host its capacity back.
                release(&ctx, placed.host, &vm).await?;
                return Err(error);
            }
        };
        self.set_state(&vm.uuid, RUNNING, Some(booted.host.clone()))?;
        state_changed(&ctx, &vm, RUNNING).await?;
        Ok(VmStarted {
            uuid: vm.uuid,
            name: vm.name,
            host: booted.host,
            console: booted.console,
        })
    }

    #[sync_key(vm_key(&req.uuid))]
    async fn stop_vm(&self, req: StopVm, ctx: Context) -> Result<VmStopped, ErrorCode> {
        let vm = self.inventory(&req.uuid)?;
        let Some(host) = vm.host.clone().filter(|_| vm.state == RUNNING) else {
            return Err(invalid_state(&vm, RUNNING));
        };
        ctx.bus()
            .call(StopVmOnHost {
                vm_uuid: vm.uuid.clone(),
                host: host.clone(),
            })
            .node(tracker_of(&ctx, &host)?)
            .await?;
        release(&ctx, host, &vm).await?;
        self.set_state(&vm.uuid, STOPPED, None)?;
        state_changed(&ctx, &vm, STOPPED).await?;
        Ok(VmStopped {
            uuid: vm.uuid,
            name: vm.name,
        })
    }

    #[sync_key(vm_key(&req.uuid))]
    async fn destroy_vm(&self, req: DestroyVm, ctx: Context) -> Result<VmDestroyed, ErrorCode> {
        let vm = self.inventory(&req.uuid)?;
        if vm.state != STOPPED {
            return Err(invalid_state(&vm, STOPPED));
        }
        let Some(removed) = self.vms.lock().expect("vm table").remove(&req.uuid) else {
            return Err(not_found(&req.uuid));
        };
        // Like ZStack's ReturnPrimaryStorageCapacityMsg: fire and forget.
        ctx.bus()
            .send(ReturnCapacity {
                primary_storage: removed.primary_storage,
                size_gb: removed.disk_gb,
            })
            .await?;
        Ok(VmDestroyed { uuid: req.uuid })
    }
}
