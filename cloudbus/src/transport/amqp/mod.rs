//! The RabbitMQ transport: wire protocol v1 over AMQP 0-9-1 with `amqprs`
//! (see `docs/wire-protocol.md`).
//!
//! One connection per node and a fixed set of channels: one that publishes
//! requests and plain messages with publisher confirms (so a request no
//! queue takes fails at once with `cloudbus.NO_SUCH_SERVICE`), one that
//! publishes replies and events, and one per consumer so that each
//! service's prefetch is its own. Nothing is created per message.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), cloudbus::ErrorCode> {
//! use cloudbus::{Bus, transport::amqp::AmqpTransport};
//! let bus = Bus::builder()
//!     .name("prod")
//!     .transport(AmqpTransport::new("amqp://guest:guest@127.0.0.1:5672/%2f"))
//!     .build()
//!     .await?;
//! # Ok(()) }
//! ```

mod acks;
mod channel;
mod codec;
mod connect;
mod consumer;
#[doc(hidden)]
pub mod fuzzing;
mod held;
mod session;
mod supervisor;
mod topology;
mod url;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use amqprs::channel::{BasicPublishArguments, QueueUnbindArguments};
use arc_swap::ArcSwapOption;
use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

pub use url::redact;

use super::{Inbound, Transport};
use crate::address::{Destination, NODE_SERVICE};
use crate::{Envelope, ErrorCode, Kind, NodeId, codes};
use channel::{Channel, Confirm, Failure};
use session::{Session, Wanted};
use topology::Names;

/// Publishes an event to the BROADCAST exchange, without confirmation.
async fn publish_event(
    channel: &Channel,
    exchange: &str,
    envelope: &Envelope,
    props: amqprs::BasicProperties,
    body: Vec<u8>,
) -> Result<(), Failure> {
    channel
        .publish(
            props,
            body,
            BasicPublishArguments::new(exchange, &envelope.type_name),
        )
        .await
}

/// The URL used when none is given: a local broker with the default user.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// How to reach the broker and how to behave on it.
#[derive(Clone)]
pub struct AmqpConfig {
    url: String,
    /// The brokers of `url`, tried in turn from `next`.
    brokers: Vec<String>,
    next: Arc<std::sync::atomic::AtomicUsize>,
    queue_expiry: Duration,
    max_body: usize,
    reconnect_min: Duration,
    reconnect_max: Duration,
    connect_timeout: Duration,
    tls_ca: Option<String>,
    queue_type: QueueType,
    order: BrokerOrder,
    rebind_every: Duration,
}

/// Which broker of a list a node tries first, when it starts and after it
/// loses its connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BrokerOrder {
    /// Start at a random broker, then go round the list from the one after
    /// the last used: many nodes starting (or failing over) at once spread
    /// over the cluster instead of piling onto its first node.
    #[default]
    Random,
    /// Always try the list from its first broker: for a node that should
    /// use the broker beside it (ZStack runs one RabbitMQ node on each
    /// management node) and come back to it, after a failover, on its next
    /// reconnect.
    Listed,
}

impl std::str::FromStr for BrokerOrder {
    type Err = ErrorCode;
    fn from_str(s: &str) -> Result<Self, ErrorCode> {
        match s {
            "random" => Ok(BrokerOrder::Random),
            "listed" => Ok(BrokerOrder::Listed),
            other => Err(ErrorCode::invalid(format!(
                "no broker order {other:?}: choose random or listed"
            ))),
        }
    }
}

/// The type of a bus's queues on RabbitMQ; every node of a bus must use the
/// same one (a node configured for the other type fails to start, saying
/// so).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QueueType {
    /// Classic queues, on one broker node: the fastest, and what a single
    /// broker needs. A broker node's death loses what its queues held.
    #[default]
    Classic,
    /// Quorum queues, replicated across the nodes of a RabbitMQ cluster (a
    /// majority must be up), with plain messages published persistent: a
    /// broker node's death loses none of them. Queue expiry, per-message
    /// expiration, the event queue's length cap and prefetch behave as with
    /// classic queues (RabbitMQ 3.10 or later); quorum queues are durable,
    /// and cost more broker CPU and disk per message.
    Quorum,
}

impl std::fmt::Display for QueueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            QueueType::Classic => "classic",
            QueueType::Quorum => "quorum",
        })
    }
}

impl std::str::FromStr for QueueType {
    type Err = ErrorCode;
    fn from_str(s: &str) -> Result<Self, ErrorCode> {
        match s {
            "classic" => Ok(QueueType::Classic),
            "quorum" => Ok(QueueType::Quorum),
            other => Err(ErrorCode::invalid(format!(
                "no queue type {other:?}: choose classic or quorum"
            ))),
        }
    }
}

/// Shows the URLs with their passwords hidden.
impl std::fmt::Debug for AmqpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpConfig")
            .field("url", &self.redacted_url())
            .field("queue_expiry", &self.queue_expiry)
            .field("max_body", &self.max_body)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls_ca", &self.tls_ca.is_some())
            .field("queue_type", &self.queue_type)
            .field("order", &self.order)
            .finish_non_exhaustive()
    }
}

impl AmqpConfig {
    /// `amqp://user:password@host:port/vhost`, or `amqps://` for TLS; or a
    /// comma-separated list of such URLs, the nodes of a RabbitMQ cluster.
    ///
    /// With a list, a node starts at a broker picked at random (so that
    /// many nodes starting at once spread over the cluster instead of all
    /// landing on the first), tries the next when one does not answer, and
    /// after losing its connection reconnects to the next broker that
    /// answers, with the usual backoff between rounds, declaring its
    /// topology there again.
    pub fn new(url: impl Into<String>) -> Self {
        let url = url.into();
        let brokers = url::split_list(&url);
        let start = (uuid::Uuid::new_v4().as_u128() % brokers.len().max(1) as u128) as usize;
        Self {
            brokers,
            next: Arc::new(std::sync::atomic::AtomicUsize::new(start)),
            url,
            queue_expiry: Duration::from_secs(10 * 60),
            max_body: 4 * 1024 * 1024,
            reconnect_min: supervisor::MIN_DELAY,
            reconnect_max: supervisor::MAX_DELAY,
            connect_timeout: Duration::from_secs(10),
            tls_ca: None,
            queue_type: QueueType::Classic,
            order: BrokerOrder::Random,
            rebind_every: supervisor::REBIND_EVERY,
        }
    }

    /// Which broker of the list to try first (default
    /// [`BrokerOrder::Random`]).
    pub fn broker_order(mut self, order: BrokerOrder) -> Self {
        self.order = order;
        if order == BrokerOrder::Listed {
            self.next.store(0, std::sync::atomic::Ordering::Relaxed);
        }
        self
    }

    /// The type of the bus's queues (default classic): quorum queues for a
    /// bus on a RabbitMQ cluster that must lose nothing when a broker node
    /// dies.
    pub fn queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self
    }

    /// How long the broker keeps a node's queues after their consumer is
    /// gone (default 10 minutes): long enough to ride out a reconnect,
    /// short enough that dead nodes' queues do not pile up.
    pub fn queue_expiry(mut self, expiry: Duration) -> Self {
        self.queue_expiry = expiry;
        self
    }

    /// The largest body accepted from the wire (default 4 MiB); larger
    /// messages get a `cloudbus.MALFORMED` error reply.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// The bounds of the exponential backoff between reconnect attempts
    /// (default 100 ms to 10 s, with jitter so that many nodes do not
    /// reconnect in lockstep after a broker restart).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min = min;
        self.reconnect_max = max.max(min);
        self
    }

    /// How long connecting (TCP, TLS, AMQP handshake and declaring the
    /// topology) may take before the attempt counts as failed (default 10 s).
    /// For a silently dead link, also set the AMQP heartbeat in the URL,
    /// e.g. `?heartbeat=5`, which bounds how long a loss goes unnoticed.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How often a node binds its queues again (default 30 s). Binding is
    /// idempotent, so this only matters when something removed them: an
    /// operator deleting an exchange (which takes every node's bindings
    /// with it) or a binding. A node that only consumes would otherwise
    /// never notice, and its services would answer `NO_SUCH_SERVICE` for
    /// good. Each time costs one `queue.bind` per service and per
    /// subscribed pattern.
    pub fn rebind_every(mut self, every: Duration) -> Self {
        self.rebind_every = every.max(Duration::from_millis(10));
        self
    }

    /// Also trusts these CA certificates (PEM) when verifying the broker's
    /// certificate on an `amqps://` URL, for brokers with a private CA.
    /// The broker's certificate is always verified, host name included.
    pub fn tls_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.tls_ca = Some(pem.into());
        self
    }

    /// The URL (or list) with every password hidden, for logs.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// The brokers, in the order to try them now: from the one after the
    /// last broker used (or the random first one), round the list.
    fn brokers_in_turn(&self) -> impl Iterator<Item = (usize, &str)> {
        let n = self.brokers.len();
        let start = self.next.load(std::sync::atomic::Ordering::Relaxed);
        (0..n).map(move |i| {
            let at = (start + i) % n;
            (at, self.brokers[at].as_str())
        })
    }

    /// Remembers which broker answered, so that a reconnect starts with
    /// the next one (or, in listed order, with the first again).
    fn connected_to(&self, at: usize) {
        let next = match self.order {
            BrokerOrder::Random => (at + 1) % self.brokers.len().max(1),
            BrokerOrder::Listed => 0,
        };
        self.next.store(next, std::sync::atomic::Ordering::Relaxed);
    }

    fn expiry_ms(&self) -> u32 {
        self.queue_expiry.as_millis().clamp(1, u32::MAX as u128) as u32
    }
}

/// A node's link to RabbitMQ. Give it to [`BusBuilder::transport`](crate::BusBuilder::transport).
///
/// When the connection is lost, the transport reconnects by itself (with
/// backoff) and declares its queues, bindings and consumers again; in the
/// meantime sends fail at once with `cloudbus.BROKER_UNAVAILABLE`.
pub struct AmqpTransport {
    shared: Arc<Shared>,
}

/// What the transport and its supervisor share.
pub(crate) struct Shared {
    config: AmqpConfig,
    /// Set once by `start`.
    started: OnceLock<(Names, Arc<dyn Inbound>)>,
    /// What must exist on the broker; also serializes topology changes
    /// with reconnects.
    wanted: Mutex<Wanted>,
    /// The live session; `None` while disconnected.
    session: ArcSwapOption<Session>,
    closing: AtomicBool,
    supervisor: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn inbound(&self) -> &Arc<dyn Inbound> {
        &self.started.get().expect("started before supervised").1
    }

    fn names(&self) -> Result<&Names, ErrorCode> {
        self.started
            .get()
            .map(|(names, _)| names)
            .ok_or_else(not_started)
    }

    /// The live session, or why there is none.
    fn session(&self) -> Result<Arc<Session>, ErrorCode> {
        self.session.load_full().ok_or_else(|| {
            if self.started.get().is_none() {
                not_started()
            } else {
                ErrorCode::new(
                    codes::BROKER_UNAVAILABLE,
                    format!(
                        "not connected to the broker at {}; reconnecting",
                        self.config.redacted_url()
                    ),
                )
            }
        })
    }
}

/// The `amqprs` arguments for one broker URL, read exactly as the
/// transport reads it: percent-decoded vhost and credentials, `heartbeat`,
/// and TLS for `amqps://` with the platform's roots plus `tls_ca_pem`.
/// For programs that speak `amqprs` beside the bus, such as the raw
/// baselines of `cloudbus bench`, so that they reach the same broker the
/// same way. Not a stable API: its type is amqprs's.
#[doc(hidden)]
pub fn connection_arguments(
    url: &str,
    tls_ca_pem: Option<&str>,
    connection_name: &str,
) -> Result<amqprs::connection::OpenConnectionArguments, ErrorCode> {
    connect::arguments(url, tls_ca_pem, connection_name)
}

fn not_started() -> ErrorCode {
    ErrorCode::new(
        codes::BROKER_UNAVAILABLE,
        "the AMQP transport is not started",
    )
}

impl AmqpTransport {
    /// A transport for the broker at `url` (see [`AmqpConfig::new`]).
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_config(AmqpConfig::new(url))
    }

    /// A transport with every setting given.
    pub fn with_config(config: AmqpConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                started: OnceLock::new(),
                wanted: Mutex::new(Wanted::default()),
                session: ArcSwapOption::empty(),
                closing: AtomicBool::new(false),
                supervisor: std::sync::Mutex::new(None),
            }),
        }
    }
}

fn broker_error(what: &str, error: impl std::fmt::Display) -> ErrorCode {
    // The client's own text may echo parts of a URL (a vhost, say).
    ErrorCode::new(
        codes::BROKER_UNAVAILABLE,
        redact(&format!("{what}: {error}")),
    )
}

impl Transport for AmqpTransport {
    fn start<'a>(
        &'a self,
        bus: &'a str,
        node: NodeId,
        inbound: Arc<dyn Inbound>,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let shared = &self.shared;
            let names = Names::new(bus, node, shared.config.queue_type);
            codec::short("the event queue name", &names.event_queue())?;
            codec::short("the node queue name", &names.service_queue(NODE_SERVICE))?;
            let wanted = shared.wanted.lock().await;
            if shared.started.get().is_some() {
                return Err(ErrorCode::invalid("this AMQP transport is already started"));
            }
            let session = Session::open(&shared.config, &names, &inbound, &wanted).await?;
            let broker = session.broker.clone();
            shared
                .started
                .set((names, inbound))
                .map_err(|_| ErrorCode::invalid("this AMQP transport is already started"))?;
            shared.session.store(Some(Arc::new(session)));
            drop(wanted);
            let task = tokio::spawn(supervisor::supervise(shared.clone()));
            *shared.supervisor.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
            tracing::info!(bus, %node, %broker, "connected to the broker");
            Ok(())
        })
    }

    fn add_service<'a>(
        &'a self,
        service: &'a str,
        prefetch: usize,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let shared = &self.shared;
            let mut wanted = shared.wanted.lock().await;
            let session = shared.session()?;
            let names = shared.names()?;
            codec::short("the queue name", &names.service_queue(service))?;
            session
                .consume(&shared.config, names, shared.inbound(), service, prefetch)
                .await
                .map_err(|e| {
                    broker_error(
                        &format!("cannot consume {}", names.service_queue(service)),
                        e,
                    )
                })?;
            wanted.services.insert(service.to_string(), prefetch);
            Ok(())
        })
    }

    fn remove_service<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let shared = &self.shared;
            let mut wanted = shared.wanted.lock().await;
            wanted.services.remove(service);
            // While disconnected the queue stays until it expires; nothing
            // consumes it, so requests for it time out at their callers.
            let session = shared.session()?;
            session
                .stop_consuming(
                    shared.names()?,
                    service,
                    shared.inbound(),
                    shared.config.max_body,
                )
                .await
        })
    }

    fn send<'a>(
        &'a self,
        to: Destination<'a>,
        envelope: &'a Envelope,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let session = self.shared.session()?;
            let p2p = self.shared.names()?.p2p.as_str();
            let mut props = codec::properties(envelope)?;
            if self.shared.config.queue_type == QueueType::Quorum && envelope.kind == Kind::Message
            {
                // Nobody waits for a plain message: it must outlive a broker
                // node, as the quorum queue it lands in does.
                props.with_delivery_mode(2);
            }
            let routing_key = to.routing_key();
            let routing_key = routing_key.as_ref();
            codec::short("the routing key", routing_key)?;
            if let Destination::ReplyTo(_) = to {
                // A reply nobody can take (its caller's node is gone) is
                // simply lost; nothing waits for the broker's word on it.
                // It is awaited until queued for the wire, ahead of any
                // close a graceful stop sends after the handler ended.
                session
                    .fast
                    .publish(
                        props,
                        Vec::from(body),
                        BasicPublishArguments::new(p2p, routing_key),
                    )
                    .await
                    .map_err(|e| broker_error("cannot send a reply", e))?;
                return Ok(());
            }
            let confirm = session
                .confirmed
                .publish_confirmed(
                    envelope.id,
                    props,
                    Vec::from(body),
                    BasicPublishArguments::new(p2p, routing_key)
                        .mandatory(true)
                        .finish(),
                )
                .await
                .map_err(|e| super::delivery_unknown(broker_error("cannot send", e)))?;
            match confirm {
                Confirm::Ack => Ok(()),
                Confirm::Returned => Err(no_route(to)),
                Confirm::Nack => Err(ErrorCode::new(
                    codes::BROKER_UNAVAILABLE,
                    format!(
                        "the broker refused `{}` for {routing_key}",
                        envelope.type_name
                    ),
                )),
            }
        })
    }

    fn publish<'a>(
        &'a self,
        envelope: &'a Envelope,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let session = self.shared.session()?;
            let exchange = &self.shared.names()?.broadcast;
            // Also checks the type, the routing key here, for AMQP's limit.
            let props = codec::properties(envelope)?;
            // Membership events go on their own connection; if only that
            // one failed, the main one still carries them, as it did before.
            if crate::cluster::is_membership(&envelope.type_name) {
                match publish_event(
                    &session.beats,
                    exchange,
                    envelope,
                    props.clone(),
                    body.to_vec(),
                )
                .await
                {
                    Ok(()) => return Ok(()),
                    Err(error) => tracing::debug!(%error, "membership connection lost"),
                }
            }
            publish_event(&session.fast, exchange, envelope, props, Vec::from(body))
                .await
                .map_err(|e| broker_error("cannot publish", e))?;
            Ok(())
        })
    }

    fn bind<'a>(&'a self, pattern: &'a str) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            codec::short("the topic pattern", pattern)?;
            let shared = &self.shared;
            let mut wanted = shared.wanted.lock().await;
            let session = shared.session()?;
            let names = shared.names()?;
            topology::bind(
                &session.events,
                &names.event_queue(),
                &names.broadcast,
                pattern,
            )
            .await
            .map_err(|e| broker_error(&format!("cannot bind {pattern}"), e))?;
            wanted.bindings.insert(pattern.to_string());
            Ok(())
        })
    }

    fn unbind<'a>(&'a self, pattern: &'a str) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            codec::short("the topic pattern", pattern)?;
            let shared = &self.shared;
            let mut wanted = shared.wanted.lock().await;
            wanted.bindings.remove(pattern);
            let session = shared.session()?;
            let names = shared.names()?;
            session
                .events
                .inner
                .queue_unbind(QueueUnbindArguments::new(
                    &names.event_queue(),
                    &names.broadcast,
                    pattern,
                ))
                .await
                .map_err(|e| broker_error(&format!("cannot unbind {pattern}"), e))
        })
    }

    fn pause(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Ok(session) = self.shared.session() {
                session.pause(NODE_SERVICE).await;
            }
        })
    }

    fn broker(&self) -> Option<String> {
        self.shared
            .session
            .load()
            .as_ref()
            .map(|session| session.broker.clone())
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let shared = &self.shared;
            shared.closing.store(true, Ordering::Release);
            if let Some(task) = shared
                .supervisor
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                task.abort();
            }
            let _wanted = shared.wanted.lock().await;
            if let (Some(session), Ok(names)) = (shared.session.swap(None), shared.names()) {
                session.close(names).await;
            }
        })
    }
}

fn no_route(to: Destination<'_>) -> ErrorCode {
    let what = match to {
        Destination::Service(address) => {
            format!("no service `{}` on node {}", address.service, address.node)
        }
        Destination::ReplyTo(reply_to) => format!("nobody at `{reply_to}`"),
    };
    ErrorCode::new(
        codes::NO_SUCH_SERVICE,
        format!("{what}: no queue took the message"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(config: &AmqpConfig) -> Vec<usize> {
        config.brokers_in_turn().map(|(at, _)| at).collect()
    }

    #[test]
    fn listed_order_starts_at_the_first_broker_every_time() {
        let config = AmqpConfig::new("amqp://a/%2f,amqp://b/%2f,amqp://c/%2f")
            .broker_order(BrokerOrder::Listed);
        assert_eq!(order(&config), [0, 1, 2]);
        config.connected_to(1);
        assert_eq!(order(&config), [0, 1, 2], "back to the first first");
    }

    #[test]
    fn random_order_goes_round_from_the_broker_after_the_last() {
        let config = AmqpConfig::new("amqp://a/%2f,amqp://b/%2f,amqp://c/%2f");
        let first = order(&config);
        assert_eq!(first.len(), 3);
        assert_eq!((first[0] + 1) % 3, first[1]);
        config.connected_to(1);
        assert_eq!(order(&config), [2, 0, 1]);
        assert!("listed".parse::<BrokerOrder>().is_ok());
        let err = "first".parse::<BrokerOrder>().unwrap_err();
        assert!(err.description().contains("random or listed"), "{err}");
    }
}
