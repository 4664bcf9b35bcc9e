//! The handler traits the handlers run. Users never implement them: their
//! handlers come from `#[handlers]` methods or closures, adapted here by
//! the service builder, so every handler is registered where it is written.

use std::future::Future;

use super::{Context, ReplyPort, SyncKey};
use crate::{ErrorCode, Message, Request};

/// Handles requests of type `R` and answers each with `R::Reply` or an error.
pub(crate) trait Handler<R: Request>: Send + Sync + 'static {
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

    /// Whether this handler can have a sync key at all; those that cannot
    /// take their concurrency permit before being prepared.
    fn keyed(&self) -> bool {
        false
    }
}

/// Handles plain messages of type `M`, which need no reply. An error is
/// logged and counted; the sender does not hear of it.
pub(crate) trait MessageHandler<M: Message>: Send + Sync + 'static {
    /// Handles one message.
    fn receive(&self, msg: M, ctx: Context) -> impl Future<Output = Result<(), ErrorCode>> + Send;

    /// See `Handler::sync_key`.
    fn sync_key(&self, _msg: &M) -> Option<SyncKey> {
        None
    }

    /// Whether this handler can have a sync key at all; those that cannot
    /// take their concurrency permit before being prepared.
    fn keyed(&self) -> bool {
        false
    }
}

/// Handles requests of type `R` and answers through a [`ReplyPort`].
pub(crate) trait DeferredHandler<R: Request>: Send + Sync + 'static {
    /// Handles one request; the per-resource lock (if any) is held until
    /// this future finishes, not until the port is answered.
    fn handle(
        &self,
        req: R,
        ctx: Context,
        reply: ReplyPort<R::Reply>,
    ) -> impl Future<Output = ()> + Send;

    /// See `Handler::sync_key`.
    fn sync_key(&self, _req: &R) -> Option<SyncKey> {
        None
    }

    /// Whether this handler can have a sync key at all; those that cannot
    /// take their concurrency permit before being prepared.
    fn keyed(&self) -> bool {
        false
    }
}
