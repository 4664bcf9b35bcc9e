//! The bus: one API to call services, send messages and publish events,
//! whatever the transport.

mod builder;
mod builtin;
mod call;
mod counters;
mod dispatch;
mod event_queue;
mod forward;
mod inbound;
mod interceptor;
mod membership;
mod pending;
mod publish;
mod raw;
mod recent;
mod reply;
mod request;
mod routing;
mod subscribe;

pub use builder::{BusBuilder, DEFAULT_BUS_NAME, DEFAULT_TIMEOUT};
pub(crate) use builtin::Ack;
pub use builtin::{GetStatistics, Ping, Pong, Statistics};
pub use call::{Call, CancelHandle, SendMessage};
pub use counters::{BusCounters, Counter};
pub use forward::Forward;
pub use interceptor::Interceptor;
pub use raw::{RawCall, RawSend};
pub use recent::RecentError;
pub use subscribe::{RawEvent, RawSubscription, Received, Subscription};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::cluster::Members;
use crate::message::is_valid_service_name;
use crate::service::{Service, ServiceRuntime};
use crate::transport::Transport;
use crate::{Body, Envelope, ErrorCode, NodeId};
pub use event_queue::Overflow;
pub(crate) use event_queue::QueueReceiver;
use pending::Pending;
pub(crate) use subscribe::SubscriberInfo;
use subscribe::Subscribers;

/// The message bus of one node. Cheap to clone: clones share the node.
///
/// See the [crate documentation](crate) for a tour.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<BusInner>,
}

pub(crate) struct Config {
    pub(crate) default_timeout: Duration,
    pub(crate) local_shortcut: bool,
    pub(crate) subscription_capacity: usize,
}

/// The services registered on a node, by name.
type Services = hashbrown::HashMap<String, Arc<ServiceRuntime>>;

pub(crate) struct BusInner {
    name: String,
    node: NodeId,
    started_at: SystemTime,
    config: Config,
    /// Registered services; read lock-free on every message, and hashed
    /// with foldhash (the names are the program's own, not a sender's).
    services: ArcSwap<Services>,
    /// Serializes registrations (rare), never taken on the message path.
    registry: tokio::sync::Mutex<()>,
    subscribers: Subscribers,
    /// How many local subscriptions use each pattern bound on the transport.
    bindings: tokio::sync::Mutex<HashMap<String, usize>>,
    pending: Pending,
    /// Live members and the routes derived from them.
    members: Members,
    /// Wakes the heartbeat task to announce a change at once.
    wake: Arc<tokio::sync::Notify>,
    heartbeats: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
    /// Whether the transport is connected to its broker (always, without one).
    connected: tokio::sync::watch::Sender<bool>,
    /// The broker last connected to, to count moves to another one.
    last_broker: std::sync::Mutex<Option<String>>,
    interceptors: Vec<Arc<dyn Interceptor>>,
    transport: Option<Arc<dyn Transport>>,
    closed: AtomicBool,
    stats: BusCounters,
    recent_errors: recent::RecentErrors,
}

impl Bus {
    /// A bus with no transport: every service lives in this process and
    /// messages move between tasks without serialization.
    ///
    /// Must be called inside a Tokio runtime.
    pub fn embedded() -> Bus {
        BusBuilder::default().assemble()
    }

    /// Configures a bus: name, node id, timeouts, interceptors, transport.
    pub fn builder() -> BusBuilder {
        BusBuilder::default()
    }

    /// The bus name; several buses can share one broker.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.inner.node
    }

    /// When this node started.
    pub fn started_at(&self) -> SystemTime {
        self.inner.started_at
    }

    /// The services registered on this node, sorted.
    pub fn services(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.services.load().keys().cloned().collect();
        names.sort();
        names
    }

    /// Per message type handled on this node: count and handling time
    /// (min/avg/max), sorted by type. Other nodes ask with
    /// [`GetStatistics`].
    pub fn statistics(&self) -> Vec<crate::TypeStatistics> {
        let mut all: Vec<crate::TypeStatistics> = self
            .inner
            .services
            .load()
            .values()
            .flat_map(|runtime| runtime.statistics().collect::<Vec<_>>())
            .collect();
        all.sort_by(|a, b| a.type_name.cmp(&b.type_name));
        all
    }

    /// The last errors (up to 50) this node answered messages with,
    /// newest first: what an operator looks at first.
    pub fn recent_errors(&self) -> Vec<RecentError> {
        self.inner.recent_errors.list()
    }

    /// Counters of dropped, refused and failed messages.
    pub fn counters(&self) -> &BusCounters {
        &self.inner.stats
    }

    /// Whether this node is connected to its broker right now (always
    /// `true` without one). While it is not, sends fail at once with
    /// `cloudbus.BROKER_UNAVAILABLE` and the transport reconnects.
    pub fn broker_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// The broker this node is connected to now, as `host:port/vhost`
    /// without credentials; `None` while disconnected or without a broker.
    /// On a RabbitMQ cluster it changes when the node fails over.
    pub fn broker(&self) -> Option<String> {
        self.inner.transport.as_ref()?.broker()
    }

    /// Follows the broker connection: the value changes when it is lost
    /// and when it is back with the topology restored.
    pub fn broker_changes(&self) -> tokio::sync::watch::Receiver<bool> {
        self.inner.connected.subscribe()
    }

    /// How many callers wait for a reply right now, on this node or others.
    pub fn pending_calls(&self) -> usize {
        self.inner.pending.len()
    }

    /// Registers a service on this node. Its name must match
    /// `[a-z][a-z0-9_-]*` and be unused on this node.
    pub async fn register(&self, service: Service) -> Result<(), ErrorCode> {
        if service.name == builtin::SERVICE {
            return Err(ErrorCode::invalid(
                "the service name `cloudbus` is reserved for the bus itself",
            ));
        }
        self.register_runtime(service).await
    }

    async fn register_runtime(&self, mut service: Service) -> Result<(), ErrorCode> {
        if let Some(error) = service.error.take() {
            return Err(error);
        }
        if !is_valid_service_name(&service.name) {
            return Err(ErrorCode::invalid(format!(
                "`{}` is not a valid service name: use [a-z][a-z0-9_-]*",
                service.name
            )));
        }
        self.check_open()?;
        let _registry = self.inner.registry.lock().await;
        if self.inner.services.load().contains_key(&*service.name) {
            return Err(ErrorCode::invalid(format!(
                "a service named `{}` is already registered on this node",
                service.name
            )));
        }
        let events = std::mem::take(&mut service.events);
        let runtime = Arc::new(ServiceRuntime::new(service));
        let name = runtime.name().to_string();
        self.inner.services.rcu(|map| {
            let mut map = hashbrown::HashMap::clone(map);
            map.insert(name.clone(), runtime.clone());
            map
        });
        if let Some(transport) = &self.inner.transport
            && let Err(error) = transport.add_service(&name, runtime.concurrency()).await
        {
            self.remove_runtime(&name);
            return Err(error);
        }
        if !events.is_empty() {
            match self.subscribe_service(&events).await {
                Ok((subscribed, rx)) => runtime.feed_events(self, subscribed, rx),
                Err(error) => {
                    // Whatever it had started ends with it.
                    self.remove_runtime(&name);
                    if let Some(transport) = &self.inner.transport {
                        let _ = transport.remove_service(&name).await;
                    }
                    runtime.drain().await;
                    return Err(error);
                }
            }
        }
        self.services_changed();
        tracing::debug!(service = %name, node = %self.inner.node, "service registered");
        Ok(())
    }

    /// Removes a service from this node: new messages for it get
    /// `cloudbus.NO_SUCH_SERVICE`; the ones it accepted finish first.
    pub async fn unregister(&self, name: &str) -> Result<(), ErrorCode> {
        if name == builtin::SERVICE {
            return Err(ErrorCode::invalid(
                "the `cloudbus` service cannot be removed",
            ));
        }
        let _registry = self.inner.registry.lock().await;
        let runtime = self
            .remove_runtime(name)
            .ok_or_else(|| ErrorCode::no_such_service(name))?;
        self.services_changed();
        if let Some(transport) = &self.inner.transport {
            transport.remove_service(name).await?;
        }
        runtime.drain().await;
        Ok(())
    }

    fn remove_runtime(&self, name: &str) -> Option<Arc<ServiceRuntime>> {
        let mut removed = None;
        self.inner.services.rcu(|map| {
            let mut map = hashbrown::HashMap::clone(map);
            removed = map.remove(name);
            map
        });
        removed
    }

    /// Stops the node gracefully: waits for every message already accepted
    /// to be handled, then refuses new work, fails callers still waiting on
    /// other nodes with `cloudbus.SHUTTING_DOWN`, ends subscriptions and
    /// closes the transport. Idempotent.
    pub async fn shutdown(&self) {
        if self.inner.closed.load(Ordering::Acquire) {
            return;
        }
        if let Some(transport) = &self.inner.transport {
            // No new work from the broker; what it holds stays queued.
            transport.pause().await;
        }
        let runtimes: Vec<Arc<ServiceRuntime>> =
            self.inner.services.load().values().cloned().collect();
        // Handlers still running may call other local services, so every
        // service keeps serving until all of them are idle.
        futures::future::join_all(runtimes.iter().map(|r| r.quiesce())).await;
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        futures::future::join_all(runtimes.iter().map(|r| r.drain())).await;
        self.stop_membership().await;
        self.inner.pending.fail_all(&ErrorCode::shutting_down());
        self.inner.subscribers.clear();
        if let Some(transport) = &self.inner.transport {
            transport.close().await;
        }
        tracing::info!(node = %self.inner.node, bus = %self.inner.name, "bus shut down");
    }

    /// Whether [`shutdown`](Bus::shutdown) has run.
    pub fn is_shut_down(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    fn check_open(&self) -> Result<(), ErrorCode> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(ErrorCode::shutting_down())
        } else {
            Ok(())
        }
    }

    fn service(&self, name: &str) -> Option<Arc<ServiceRuntime>> {
        self.inner.services.load().get(name).cloned()
    }

    pub(crate) fn intercept_delivery(
        &self,
        envelope: &Envelope,
        body: &Body,
    ) -> Result<(), ErrorCode> {
        self.inner
            .interceptors
            .iter()
            .try_for_each(|i| i.before_deliver(envelope, body))
    }

    fn intercept_send(&self, envelope: &mut Envelope, body: &Body) -> Result<(), ErrorCode> {
        self.inner
            .interceptors
            .iter()
            .try_for_each(|i| i.before_send(envelope, body))
            .inspect_err(|_| self.inner.stats.rejected.inc())
    }

    fn intercept_publish(&self, envelope: &mut Envelope, body: &Body) -> Result<(), ErrorCode> {
        self.inner
            .interceptors
            .iter()
            .try_for_each(|i| i.before_publish(envelope, body))
            .inspect_err(|_| self.inner.stats.rejected.inc())
    }
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("name", &self.inner.name)
            .field("node", &self.inner.node)
            .field("services", &self.services())
            .finish()
    }
}
