//! Services: named sets of handlers, and the runtime that runs them with a
//! concurrency limit and per-resource serialization.

mod builder;
mod context;
mod entry;
mod handler;
mod in_flight;
mod inline;
mod permits;
mod reply;
mod runtime;
mod statistics;
mod sync;
mod sync_key;

pub use builder::{Handlers, Service, ServiceBuilder};
pub(crate) use context::CONTEXT_PREFIX;
pub(crate) use context::inherit_task_context;
pub use context::{Context, task_context};
pub(crate) use entry::Delivery;
pub(crate) use handler::{DeferredHandler, Handler, MessageHandler};
pub(crate) use inline::Inline;
pub use reply::ReplyPort;
pub(crate) use reply::{ReplyMeta, ReplyTarget, Responder};
pub(crate) use runtime::ServiceRuntime;
pub(crate) use statistics::TypeStats;
pub use statistics::{SourceCount, TypeStatistics};
pub use sync_key::{IntoSyncKey, SyncKey};
