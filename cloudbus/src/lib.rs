//! cloudbus: a typed message bus for Rust control planes, after ZStack's
//! CloudBus. Services never call each other; they exchange messages over
//! one bus, embedded in one process or spread over many nodes.
//!
//! ```
//! use cloudbus::{Bus, Context, ErrorCode, Handler, Message, Request, Service};
//! use serde::{Deserialize, Serialize};
//!
//! // A request names its reply type.
//! #[derive(Clone, Debug, Serialize, Deserialize)]
//! struct GetVm { uuid: String }
//! #[derive(Clone, Debug, Serialize, Deserialize)]
//! struct VmInfo { uuid: String, state: String }
//! impl Message for GetVm { const TYPE: &'static str = "vm.GetVm"; }
//! impl Message for VmInfo { const TYPE: &'static str = "vm.VmInfo"; }
//! impl Request for GetVm { type Reply = VmInfo; }
//!
//! // A service handles the message types it declares.
//! struct VmService;
//! impl Handler<GetVm> for VmService {
//!     async fn handle(&self, req: GetVm, _ctx: Context) -> Result<VmInfo, ErrorCode> {
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
//! bus.register(Service::builder("vm", VmService).handle::<GetVm>().build()).await?;
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

mod bus;
pub mod cluster;
mod error;
pub mod message;
pub mod ring;
mod service;
pub mod transport;

pub use bus::{
    Ack, Bus, BusBuilder, BusStats, Call, Counter, DEFAULT_BUS_NAME, DEFAULT_TIMEOUT, Forward,
    GetStatistics, Interceptor, Pattern, Ping, Pong, RawCall, RawEvent, RawSend, RawSubscription,
    Received, RecentError, SendMessage, Statistics, Subscription,
};
pub use error::{ErrorCode, codes};
pub use message::{
    AnyMessage, Body, Envelope, Event, Headers, Kind, Message, MessageId, NodeId, ReplyStyle,
    Request, is_valid_service_name, service_of,
};
pub use ring::HashRing;
pub use service::{
    CONTEXT_PREFIX, Context, DeferredHandler, HISTOGRAM_BOUNDS_US, Handler, MessageHandler,
    ReplyPort, Service, ServiceBuilder, SyncKey, TypeStatistics, task_context,
};

pub(crate) use message::{decode_reply, encode_reply};
