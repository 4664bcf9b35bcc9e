//! The storage service: one primary storage whose capacity VMs' volumes use.

use std::sync::Mutex;

use cloudbus::{Context, ErrorCode, Service, SyncKey};

use crate::messages::{AllocateVolume, Capacity, GetCapacity, ReturnCapacity, VolumeAllocated};

/// The demo's only primary storage.
pub const PRIMARY_STORAGE: &str = "ps-1";

/// The storage service's state.
pub struct StorageService {
    total_gb: u32,
    available_gb: Mutex<u32>,
}

impl StorageService {
    /// A primary storage of `total_gb`.
    pub fn new(total_gb: u32) -> Self {
        Self {
            total_gb,
            available_gb: Mutex::new(total_gb),
        }
    }

    /// The service, ready to register.
    pub fn service(self) -> Service {
        Service::new("storage", self)
    }

    fn check(name: &str) -> Result<(), ErrorCode> {
        if name == PRIMARY_STORAGE {
            Ok(())
        } else {
            Err(ErrorCode::new(
                "storage.NOT_FOUND",
                format!("no primary storage {name}"),
            ))
        }
    }
}

/// Every operation on a primary storage's capacity runs in arrival order,
/// so a query sent after a returned capacity sees it.
fn capacity_key(primary_storage: &str) -> Option<SyncKey> {
    Some(SyncKey::new(format!("ps-{primary_storage}")))
}

#[cloudbus::handlers]
impl StorageService {
    #[sync_key(capacity_key(PRIMARY_STORAGE))]
    async fn allocate_volume(
        &self,
        _req: AllocateVolume,
        _ctx: Context,
    ) -> Result<VolumeAllocated, ErrorCode> {
        let mut available = self.available_gb.lock().expect("capacity");
        if *available < _req.size_gb {
            return Err(ErrorCode::new(
                "storage.NO_CAPACITY",
                format!(
                    "{PRIMARY_STORAGE} has {} GiB free, VM {} needs {}",
                    *available, _req.vm_uuid, _req.size_gb
                ),
            ));
        }
        *available -= _req.size_gb;
        Ok(VolumeAllocated {
            primary_storage: PRIMARY_STORAGE.into(),
        })
    }

    #[sync_key(capacity_key(&req.primary_storage))]
    async fn get_capacity(&self, req: GetCapacity, _ctx: Context) -> Result<Capacity, ErrorCode> {
        Self::check(&req.primary_storage)?;
        Ok(Capacity {
            primary_storage: req.primary_storage,
            total_gb: self.total_gb,
            available_gb: *self.available_gb.lock().expect("capacity"),
        })
    }

    #[sync_key(capacity_key(&msg.primary_storage))]
    async fn return_capacity(&self, msg: ReturnCapacity, _ctx: Context) -> Result<(), ErrorCode> {
        Self::check(&msg.primary_storage)?;
        let mut available = self.available_gb.lock().expect("capacity");
        *available = (*available + msg.size_gb).min(self.total_gb);
        Ok(())
    }
}
