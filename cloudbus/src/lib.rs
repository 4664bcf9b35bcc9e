//! cloudbus: a typed message bus for Rust control planes, after ZStack's
//! CloudBus. Services never call each other; they exchange messages over
//! one bus, embedded in one process or spread over many nodes.
//!
//! ```
//! use cloudbus::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! // A request names its reply type.
//! #[derive(Clone, Debug, Serialize, Deserialize, Message)]
//! #[message(type = "vm.GetVm", reply = VmInfo)]
//! struct GetVm { uuid: String }
//!
//! #[derive(Clone, Debug, Serialize, Deserialize, Message)]
//! #[message(type = "vm.VmInfo")]
//! struct VmInfo { uuid: String, state: String }
//!
//! // Every `async fn` of a `#[handlers]` block is a handler of the service.
//! struct VmService;
//!
//! #[handlers]
//! impl VmService {
//!     async fn get_vm(&self, req: GetVm, _ctx: Context) -> Result<VmInfo, ErrorCode> {
//!         if req.uuid.is_empty() {
//!             return Err(ErrorCode::new("vm.NOT_FOUND", "no VM without a uuid"));
//!         }
//!         Ok(VmInfo { uuid: req.uuid, state: "Running".into() })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ErrorCode> {
//! let bus = Bus::embedded();
//! bus.register(Service::new("vm", VmService)).await?;
//!
//! let vm = bus.call(GetVm { uuid: "v1".into() }).await?;
//! assert_eq!(vm.state, "Running");
//!
//! let err = bus.call(GetVm { uuid: "".into() }).await.unwrap_err();
//! assert_eq!(err.code(), "vm.NOT_FOUND");
//! bus.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! The layout follows the architecture:
//! - [`message`]: the message model (kinds as traits, envelope, body).
//! - [`Bus`]: calling, sending, publishing, subscribing, interceptors.
//! - [`Service`] and the handler traits: the service runtime, with
//!   concurrency limits and per-resource serialization ([`SyncKey`]).
//! - [`transport`]: how nodes reach each other; [`transport::memory`] is an
//!   in-process broker with the semantics of the RabbitMQ topology.

#![warn(missing_docs)]

// The macros name this crate `::cloudbus`, also from inside it.
extern crate self as cloudbus;

pub mod address;
mod bus;
pub mod cluster;
#[cfg(doctest)]
mod compile_fail;
/// The README's tour, compiled and run as a test.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeTour;
mod error;
pub mod message;
#[cfg(feature = "prometheus")]
pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod prelude;
pub mod ring;
mod service;
mod trace_context;
pub mod transport;

/// Makes every `async fn` of an `impl` block a handler of the service whose
/// state is that type (see [`Service::new`]).
///
/// The shape of each method says what it handles:
/// - `async fn x(&self, req: R, ctx: Context) -> Result<R::Reply, ErrorCode>`:
///   requests `R`;
/// - `... -> Result<(), ErrorCode>`: plain messages;
/// - `#[event] async fn x(&self, ev: E, ctx: Context) -> Result<(), ErrorCode>`:
///   events `E`, which the service subscribes to when registered and
///   handles within its concurrency limit, panic catching, statistics and
///   graceful stop;
/// - `async fn x(&self, req: R, ctx: Context, reply: ReplyPort<R::Reply>)`:
///   requests answered later through the [`ReplyPort`].
///
/// `#[sync_key(expr)]` on a handler serializes the messages for which
/// `expr` (anything that converts into a [`SyncKey`], reading the message
/// parameter by its name) is equal. Methods that are not `async` are left
/// alone; an `async fn` of another shape is a compile error, so async
/// helpers go in a separate `impl` block.
///
/// ```
/// use cloudbus::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Clone, Serialize, Deserialize, Message)] #[message(type = "vm.StartVm", reply = VmStarted)]
/// # struct StartVm { uuid: String }
/// # #[derive(Clone, Serialize, Deserialize, Message)] #[message(type = "vm.VmStarted", event)]
/// # struct VmStarted { uuid: String }
/// # #[derive(Clone, Serialize, Deserialize, Message)] #[message(type = "host.HostDown", event)]
/// # struct HostDown { host: String }
/// struct Vms;
///
/// #[handlers]
/// impl Vms {
///     // Operations on one VM run one at a time, in arrival order.
///     #[sync_key(format!("vm-{}", req.uuid))]
///     async fn start(&self, req: StartVm, _ctx: Context) -> Result<VmStarted, ErrorCode> {
///         Ok(VmStarted { uuid: req.uuid })
///     }
///
///     #[event]
///     async fn host_down(&self, ev: HostDown, _ctx: Context) -> Result<(), ErrorCode> {
///         tracing::warn!(host = %ev.host, "VMs of this host need attention");
///         Ok(())
///     }
/// }
///
/// let service = Service::new("vm", Vms);
/// let mut types: Vec<_> = service.handled_types().collect();
/// types.sort();
/// assert_eq!(types, ["host.HostDown", "vm.StartVm"]);
/// ```
pub use address::Pattern;
pub use bus::{
    Bus, BusBuilder, BusCounters, Call, CancelHandle, Counter, DEFAULT_BUS_NAME, DEFAULT_TIMEOUT,
    Forward, GetStatistics, Interceptor, Overflow, Ping, Pong, RawCall, RawEvent, RawSend,
    RawSubscription, Received, RecentError, SendMessage, Statistics, Subscription,
};
/// `#[derive(Message)]`: the message traits from one attribute (see [`Message`]).
pub use cloudbus_macros::Message;
pub use cloudbus_macros::handlers;
pub use error::{ErrorCode, codes};
pub use message::{
    Body, Envelope, Event, Headers, Kind, Message, MessageId, NodeId, ReplyStyle, Request,
};
pub use ring::HashRing;
pub use service::{
    Context, Handlers, IntoSyncKey, ReplyPort, Service, ServiceBuilder, SourceCount, SyncKey,
    TypeStatistics, task_context,
};

pub(crate) use message::{decode_reply, encode_reply};
pub(crate) use service::CONTEXT_PREFIX;
