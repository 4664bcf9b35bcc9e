use std::future::Future;

use super::{Context, ReplyPort, SyncKey};
use crate::{ErrorCode, Message, Request};

/// Handles requests of type `R` and answers each with `R::Reply` or an error.
///
/// One impl per message type, like actix's `Handler<M>`: a service that
/// handles five requests reads as five small impls.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Clone, Serialize, Deserialize)] struct GetVm { uuid: String }
/// # #[derive(Clone, Serialize, Deserialize)] struct VmInfo { uuid: String, state: String }
/// # impl cloudbus::Message for GetVm { const TYPE: &'static str = "vm.GetVm"; }
/// # impl cloudbus::Message for VmInfo { const TYPE: &'static str = "vm.VmInfo"; }
/// # impl cloudbus::Request for GetVm { type Reply = VmInfo; }
/// use cloudbus::{Context, ErrorCode, Handler, SyncKey};
///
/// struct VmService;
///
/// impl Handler<GetVm> for VmService {
///     async fn handle(&self, req: GetVm, _ctx: Context) -> Result<VmInfo, ErrorCode> {
///         Ok(VmInfo { uuid: req.uuid, state: "Running".into() })
///     }
///     // Operations on one VM run one at a time, in arrival order.
///     fn sync_key(&self, req: &GetVm) -> Option<SyncKey> {
///         Some(SyncKey::new(format!("vm-{}", req.uuid)))
///     }
/// }
/// ```
pub trait Handler<R: Request>: Send + Sync + 'static {
    /// Handles one request. An `Err` becomes an error reply; a panic becomes
    /// a `cloudbus.INTERNAL` error reply and the service keeps running.
    fn handle(
        &self,
        req: R,
        ctx: Context,
    ) -> impl Future<Output = Result<R::Reply, ErrorCode>> + Send;

    /// The key that serializes this request with others on the same
    /// resource (ZStack's sync signature); `None` runs it freely.
    fn sync_key(&self, _req: &R) -> Option<SyncKey> {
        None
    }
}

/// Handles plain messages of type `M`, which need no reply. An error is
/// logged and counted; the sender does not hear of it.
pub trait MessageHandler<M: Message>: Send + Sync + 'static {
    /// Handles one message.
    fn receive(&self, msg: M, ctx: Context) -> impl Future<Output = Result<(), ErrorCode>> + Send;

    /// See [`Handler::sync_key`].
    fn sync_key(&self, _msg: &M) -> Option<SyncKey> {
        None
    }
}

/// Handles requests of type `R` and answers through a [`ReplyPort`] that can
/// be moved elsewhere and answered later, like ractor's `RpcReplyPort`.
/// A port dropped without an answer replies `cloudbus.NO_REPLY`, so a caller
/// never waits for a reply that cannot come.
pub trait DeferredHandler<R: Request>: Send + Sync + 'static {
    /// Handles one request; the per-resource lock (if any) is held until
    /// this future finishes, not until the port is answered.
    fn handle(
        &self,
        req: R,
        ctx: Context,
        reply: ReplyPort<R::Reply>,
    ) -> impl Future<Output = ()> + Send;

    /// See [`Handler::sync_key`].
    fn sync_key(&self, _req: &R) -> Option<SyncKey> {
        None
    }
}
