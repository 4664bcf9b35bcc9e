use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::{Bus, BusInner, Config, Interceptor, builtin, inbound::BusInbound};
use crate::cluster::{Members, MembershipConfig};
use crate::transport::Transport;
use crate::{ErrorCode, NodeId};

/// The bus name used when none is given.
pub const DEFAULT_BUS_NAME: &str = "cloudbus";
/// How long a caller waits for a reply when the call sets no timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Configures a [`Bus`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// let bus = cloudbus::Bus::builder()
///     .name("billing")
///     .default_timeout(Duration::from_secs(5))
///     .build()
///     .await
///     .unwrap();
/// assert_eq!(bus.name(), "billing");
/// # }
/// ```
pub struct BusBuilder {
    name: String,
    node: Option<NodeId>,
    default_timeout: Duration,
    local_shortcut: bool,
    subscription_capacity: usize,
    interceptors: Vec<Arc<dyn Interceptor>>,
    transport: Option<Arc<dyn Transport>>,
    membership: MembershipConfig,
}

impl Default for BusBuilder {
    fn default() -> Self {
        Self {
            name: DEFAULT_BUS_NAME.to_string(),
            node: None,
            default_timeout: DEFAULT_TIMEOUT,
            local_shortcut: true,
            subscription_capacity: 4096,
            interceptors: Vec::new(),
            transport: None,
            membership: MembershipConfig::default(),
        }
    }
}

impl BusBuilder {
    /// The bus name (default `cloudbus`): exchanges and queues are prefixed
    /// with it, so several buses can share one broker. Letters, digits, `_`
    /// and `-`.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// This node's id (default: a new random one).
    pub fn node_id(mut self, node: NodeId) -> Self {
        self.node = Some(node);
        self
    }

    /// The timeout of calls that set none (default 30 s).
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Whether a message for a service on this node is handed over in
    /// process, skipping the transport (default true).
    pub fn local_shortcut(mut self, enabled: bool) -> Self {
        self.local_shortcut = enabled;
        self
    }

    /// How many undelivered events a subscription buffers before it misses
    /// events (default 4096). Publishers never wait for slow subscribers.
    pub fn subscription_capacity(mut self, capacity: usize) -> Self {
        self.subscription_capacity = capacity.max(1);
        self
    }

    /// Adds an interceptor; they run in the order added.
    pub fn interceptor(mut self, interceptor: impl Interceptor) -> Self {
        self.interceptors.push(Arc::new(interceptor));
        self
    }

    /// Connects the bus to other nodes through a transport.
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// How often this node sends heartbeats (default 1 s); the others
    /// declare it dead after it misses [`heartbeat_misses`](Self::heartbeat_misses) of them.
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.membership.interval = interval;
        self
    }

    /// How many heartbeat intervals a node may miss before it is declared
    /// dead and its callers fail with `cloudbus.NODE_UNAVAILABLE` (default 3).
    pub fn heartbeat_misses(mut self, misses: u32) -> Self {
        self.membership.misses = misses;
        self
    }

    /// Makes this bus an observer: it calls services, publishes and
    /// subscribes like any node, but it does not announce itself, so it
    /// never owns resources on the ring and nobody routes work to it. For
    /// command-line tools, gateways and test clients.
    pub fn observer(mut self) -> Self {
        self.membership.member = false;
        self
    }

    /// Connects the bus to RabbitMQ at `url` (`amqp://user:pass@host:port/vhost`
    /// or `amqps://…`); shorthand for a [`transport`](Self::transport) of
    /// [`AmqpTransport`](crate::transport::amqp::AmqpTransport).
    #[cfg(feature = "amqp")]
    pub fn amqp(self, url: impl Into<String>) -> Self {
        self.transport(crate::transport::amqp::AmqpTransport::new(url))
    }

    /// Starts the node: registers the built-in `cloudbus` service and, with
    /// a transport, declares this node's topology.
    pub async fn build(self) -> Result<Bus, ErrorCode> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(ErrorCode::invalid(format!(
                "`{}` is not a valid bus name: use 1 to 64 letters, digits, `_` and `-`",
                self.name
            )));
        }
        if self.default_timeout.is_zero() {
            return Err(ErrorCode::invalid("the default timeout must be above zero"));
        }
        if self.membership.interval.is_zero() || self.membership.misses == 0 {
            return Err(ErrorCode::invalid(
                "the heartbeat interval and the number of missed heartbeats must be above zero",
            ));
        }
        let bus = self.assemble_without_builtin();
        if let Some(transport) = &bus.inner.transport {
            let inbound = Arc::new(BusInbound::new(&bus));
            transport
                .start(&bus.inner.name, bus.inner.node, inbound)
                .await?;
            *bus.inner
                .last_broker
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = transport.broker();
        }
        bus.register_runtime(builtin::service()).await?;
        if bus.inner.transport.is_some() {
            bus.start_membership().await?;
        }
        tracing::info!(node = %bus.node_id(), bus = %bus.name(), "bus started");
        Ok(bus)
    }

    /// A bus without a transport, built synchronously.
    pub(crate) fn assemble(self) -> Bus {
        let bus = self.assemble_without_builtin();
        let runtime = Arc::new(crate::service::ServiceRuntime::new(builtin::service()));
        bus.inner
            .services
            .store(Arc::new(hashbrown::HashMap::from([(
                builtin::SERVICE.to_string(),
                runtime,
            )])));
        bus.services_changed();
        bus
    }

    fn assemble_without_builtin(self) -> Bus {
        let node = self.node.unwrap_or_else(NodeId::random);
        let started_at = SystemTime::now();
        Bus {
            inner: Arc::new(BusInner {
                name: self.name,
                node,
                started_at,
                config: Config {
                    default_timeout: self.default_timeout,
                    local_shortcut: self.local_shortcut,
                    subscription_capacity: self.subscription_capacity,
                },
                services: ArcSwap::default(),
                registry: tokio::sync::Mutex::new(()),
                subscribers: Default::default(),
                bindings: Default::default(),
                pending: Default::default(),
                members: Members::new(node, self.membership, started_at),
                wake: Default::default(),
                heartbeats: Default::default(),
                connected: tokio::sync::watch::Sender::new(true),
                last_broker: Default::default(),
                interceptors: self.interceptors,
                transport: self.transport,
                closed: AtomicBool::new(false),
                stats: Default::default(),
                recent_errors: Default::default(),
            }),
        }
    }
}
