//! Transports carry messages between nodes. The bus needs none to work in
//! one process (the embedded bus); with one, the same program spans nodes.
//!
//! A transport implements the topology of the wire protocol (DESIGN §4):
//! a direct exchange `<bus>.P2P` where every service of every node has one
//! static queue bound with routing key `<service>.<node>` (the node's own
//! `cloudbus` queue also takes its replies), and a topic exchange
//! `<bus>.BROADCAST` feeding one event queue per node. Nothing is declared
//! per message.

#[cfg(feature = "amqp")]
pub mod amqp;
pub mod memory;

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;

use crate::address::Destination;
use crate::{Envelope, ErrorCode, MessageId, NodeId};

/// Marks the error of a send that failed after its message was handed to
/// the broker but before the broker confirmed it (the connection dropped
/// in between): the message may have arrived. Its details then say
/// `{"delivered": "unknown"}`, so that whoever retries a plain message
/// knows a retry may deliver it twice, and a request's caller keeps
/// waiting for a reply that may still come.
pub fn delivery_unknown(error: ErrorCode) -> ErrorCode {
    error.with_details(serde_json::json!({ "delivered": "unknown" }))
}

/// Whether a send's error was marked with [`delivery_unknown`].
pub fn is_delivery_unknown(error: &ErrorCode) -> bool {
    error.details().get("delivered").and_then(|d| d.as_str()) == Some("unknown")
}

/// A message as it crosses a transport: the envelope (AMQP properties and
/// headers) and the JSON body.
#[derive(Clone, Debug)]
pub struct WireMessage {
    /// Properties and `cb-*` headers.
    pub envelope: Envelope,
    /// The JSON body.
    pub body: Bytes,
}

/// Where a transport hands what it receives: the bus of this node.
pub trait Inbound: Send + Sync + 'static {
    /// A message from the queue of `service` on this node (requests, plain
    /// messages, and for the `cloudbus` service also replies). The future
    /// finishes when the bus has accepted the message; a consumer that
    /// awaits it gets backpressure from the service's concurrency limit.
    fn service_message(&self, service: Arc<str>, message: WireMessage) -> BoxFuture<'static, ()>;

    /// An event from this node's event queue. The future finishes when
    /// every subscriber has it; a consumer that awaits it stops taking
    /// events while a backpressured subscriber is full.
    fn event(&self, message: WireMessage) -> BoxFuture<'static, ()>;

    /// A request this node sent could not be delivered (the broker returned
    /// it, or the node it waited on is gone): its caller fails at once with
    /// `error` instead of waiting for the timeout. For transports that learn
    /// of returns after [`Transport::send`] has finished.
    fn undeliverable(&self, request: MessageId, error: ErrorCode);

    /// A message arrived that could not be read (bad properties, wrong
    /// content type, too large…): the bus counts and logs it and, when the
    /// sender of a request waits at `reply` (`reply_to`, request id),
    /// answers it with `error`.
    fn malformed(
        &self,
        reply: Option<(String, MessageId)>,
        error: ErrorCode,
    ) -> BoxFuture<'static, ()>;

    /// The link to the broker went down (`false`) or came back with the
    /// whole topology restored (`true`).
    fn connection_changed(&self, _connected: bool) {}
}

/// Moves messages between the nodes of one bus.
pub trait Transport: Send + Sync + 'static {
    /// Declares the exchanges and this node's event queue, and starts
    /// handing what arrives to `inbound`.
    fn start<'a>(
        &'a self,
        bus: &'a str,
        node: NodeId,
        inbound: Arc<dyn Inbound>,
    ) -> BoxFuture<'a, Result<(), ErrorCode>>;

    /// Declares and consumes the queue of a service on this node, taking at
    /// most `prefetch` unfinished messages at a time.
    fn add_service<'a>(
        &'a self,
        service: &'a str,
        prefetch: usize,
    ) -> BoxFuture<'a, Result<(), ErrorCode>>;

    /// Stops consuming a service's queue and deletes it.
    fn remove_service<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<(), ErrorCode>>;

    /// Publishes a request or plain message to a service's queue, or a
    /// reply to its caller's `reply_to`, on P2P. Messages to a service are
    /// mandatory: if no queue takes one, the result is
    /// `cloudbus.NO_SUCH_SERVICE`. Replies are not: a reply whose caller is
    /// gone has nobody to tell. A failure after the message may have
    /// reached the broker is marked with [`delivery_unknown`].
    fn send<'a>(
        &'a self,
        to: Destination<'a>,
        envelope: &'a Envelope,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), ErrorCode>>;

    /// Publishes an event on BROADCAST with its type name as routing key.
    fn publish<'a>(
        &'a self,
        envelope: &'a Envelope,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), ErrorCode>>;

    /// Binds this node's event queue to a topic pattern.
    fn bind<'a>(&'a self, pattern: &'a str) -> BoxFuture<'a, Result<(), ErrorCode>>;

    /// Removes a binding of this node's event queue.
    fn unbind<'a>(&'a self, pattern: &'a str) -> BoxFuture<'a, Result<(), ErrorCode>>;

    /// Stops taking new requests and messages for the services of this
    /// node (not its replies or events), as the first step of a graceful
    /// stop: what is not taken yet stays queued on the broker.
    fn pause(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Stops consuming and releases this node's queues.
    fn close(&self) -> BoxFuture<'_, ()>;

    /// The broker this node is connected to now, as an address without
    /// credentials (`host:port/vhost`), for operators; `None` while
    /// disconnected or without a broker.
    fn broker(&self) -> Option<String> {
        None
    }
}
