//! An in-process broker with the semantics of the RabbitMQ topology: a
//! direct `P2P` exchange with one static queue per service per node, a topic
//! `BROADCAST` exchange with one event queue per node, mandatory publishing
//! and per-message expiration. Bodies cross it as JSON, exactly as they
//! would cross RabbitMQ, so several [`Bus`](crate::Bus) nodes in one process
//! behave as if they were on a broker: multi-node tests need no RabbitMQ.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use cloudbus::{Bus, Ping, transport::memory::MemoryBroker};
//! let broker = MemoryBroker::new();
//! let a = Bus::builder().transport(broker.transport()).build().await.unwrap();
//! let b = Bus::builder().transport(broker.transport()).build().await.unwrap();
//! let pong = a.call(Ping {}).node(b.node_id()).await.unwrap();
//! assert_eq!(pong.node, b.node_id());
//! # }
//! ```

use crate::address::{BusNames, Destination, ServiceAddress};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::{Inbound, Transport, WireMessage};
use crate::address::Pattern;
use crate::{Envelope, ErrorCode, Kind, NodeId, codes};

/// The broker: share it (it is cheap to clone) and give each node a
/// [`transport`](MemoryBroker::transport).
#[derive(Clone, Default)]
pub struct MemoryBroker {
    state: Arc<Mutex<BrokerState>>,
}

#[derive(Default)]
struct BrokerState {
    buses: HashMap<String, Exchanges>,
}

/// The two exchanges of one bus and the queues bound to them.
#[derive(Default)]
struct Exchanges {
    /// `P2P`: routing key `<service>.<node>` → that service's queue.
    p2p: HashMap<String, Queue>,
    /// `BROADCAST`: each node's event queue with its bindings.
    events: HashMap<NodeId, EventQueue>,
    /// Nodes cut off from the broker: what they send is lost.
    cut: HashSet<NodeId>,
}

struct Queue {
    name: String,
    tx: mpsc::UnboundedSender<WireMessage>,
}

struct EventQueue {
    queue: Queue,
    bindings: Vec<Pattern>,
}

impl MemoryBroker {
    /// A new, empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// A transport for one more node on this broker.
    pub fn transport(&self) -> MemoryTransport {
        MemoryTransport {
            broker: self.clone(),
            attached: Mutex::new(None),
        }
    }

    /// The queues of a bus, sorted: what `rabbitmqctl list_queues` would show.
    pub fn queue_names(&self, bus: &str) -> Vec<String> {
        let state = self.lock();
        let mut names: Vec<String> = state
            .buses
            .get(bus)
            .map(|ex| {
                ex.p2p
                    .values()
                    .map(|q| q.name.clone())
                    .chain(ex.events.values().map(|e| e.queue.name.clone()))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The patterns a node's event queue is bound with, sorted.
    pub fn event_bindings(&self, bus: &str, node: NodeId) -> Vec<String> {
        let state = self.lock();
        let mut patterns: Vec<String> = state
            .buses
            .get(bus)
            .and_then(|ex| ex.events.get(&node))
            .map(|e| e.bindings.iter().map(|p| p.as_str().to_string()).collect())
            .unwrap_or_default();
        patterns.sort();
        patterns
    }

    /// Cuts a node off as if it crashed and its queues expired: messages
    /// for it are no longer routable, and what it sends (heartbeats,
    /// replies) no longer arrives anywhere.
    pub fn disconnect(&self, bus: &str, node: NodeId) {
        let mut state = self.lock();
        if let Some(ex) = state.buses.get_mut(bus) {
            let suffix = format!(".{node}");
            ex.p2p.retain(|key, _| !key.ends_with(&suffix));
            ex.events.remove(&node);
            ex.cut.insert(node);
        }
    }

    fn lock(&self) -> MutexGuard<'_, BrokerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One node's connection to a [`MemoryBroker`].
pub struct MemoryTransport {
    broker: MemoryBroker,
    attached: Mutex<Option<Attached>>,
}

struct Attached {
    bus: String,
    node: NodeId,
    inbound: Arc<dyn Inbound>,
    consumers: HashMap<String, AbortHandle>,
}

fn cut_off() -> ErrorCode {
    ErrorCode::new(
        codes::BROKER_UNAVAILABLE,
        "this node is cut off from the in-memory broker",
    )
}

fn not_started() -> ErrorCode {
    ErrorCode::new(
        codes::BROKER_UNAVAILABLE,
        "the transport is not started or is closed",
    )
}

/// A request whose expiration passed while it sat in the queue dies there.
fn expired(message: &WireMessage) -> bool {
    let envelope = &message.envelope;
    envelope.kind == Kind::Request
        && envelope.timeout.is_some_and(|timeout| {
            SystemTime::now()
                .duration_since(envelope.created_at)
                .is_ok_and(|age| age > timeout)
        })
}

impl MemoryTransport {
    fn with_attached<T>(
        &self,
        f: impl FnOnce(&mut Attached) -> Result<T, ErrorCode>,
    ) -> Result<T, ErrorCode> {
        let mut attached = self.attached.lock().unwrap_or_else(|e| e.into_inner());
        f(attached.as_mut().ok_or_else(not_started)?)
    }

    fn bus_and_node(&self) -> Result<(String, NodeId), ErrorCode> {
        self.with_attached(|a| Ok((a.bus.clone(), a.node)))
    }
}

impl Transport for MemoryTransport {
    fn start<'a>(
        &'a self,
        bus: &'a str,
        node: NodeId,
        inbound: Arc<dyn Inbound>,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let (tx, mut rx) = mpsc::unbounded_channel::<WireMessage>();
            let events = inbound.clone();
            let consumer = tokio::spawn(async move {
                while let Some(message) = rx.recv().await {
                    events.event(message).await;
                }
            });
            let name = BusNames::new(bus).event_queue(node);
            self.broker
                .lock()
                .buses
                .entry(bus.to_string())
                .or_default()
                .events
                .insert(
                    node,
                    EventQueue {
                        queue: Queue { name, tx },
                        bindings: Vec::new(),
                    },
                );
            let mut consumers = HashMap::new();
            consumers.insert(String::new(), consumer.abort_handle());
            *self.attached.lock().unwrap_or_else(|e| e.into_inner()) = Some(Attached {
                bus: bus.to_string(),
                node,
                inbound,
                consumers,
            });
            Ok(())
        })
    }

    fn add_service<'a>(
        &'a self,
        service: &'a str,
        _prefetch: usize,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let (bus, node) = self.bus_and_node()?;
            let (tx, mut rx) = mpsc::unbounded_channel::<WireMessage>();
            let inbound = self.with_attached(|a| Ok(a.inbound.clone()))?;
            let service_name: Arc<str> = Arc::from(service);
            let consumer = tokio::spawn(async move {
                while let Some(message) = rx.recv().await {
                    if expired(&message) {
                        continue;
                    }
                    // Awaiting acceptance is the consumer's backpressure.
                    inbound.service_message(service_name.clone(), message).await;
                }
            });
            self.with_attached(|a| {
                a.consumers
                    .insert(service.to_string(), consumer.abort_handle());
                Ok(())
            })?;
            let queue = Queue {
                name: BusNames::new(&bus).service_queue(service, node),
                tx,
            };
            self.broker
                .lock()
                .buses
                .entry(bus)
                .or_default()
                .p2p
                .insert(ServiceAddress::new(service, node).routing_key(), queue);
            Ok(())
        })
    }

    fn remove_service<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let (bus, node) = self.bus_and_node()?;
            // Dropping the queue's sender lets the consumer finish what was
            // already queued, then end.
            if let Some(ex) = self.broker.lock().buses.get_mut(&bus) {
                ex.p2p
                    .remove(&ServiceAddress::new(service, node).routing_key());
            }
            self.with_attached(|a| {
                a.consumers.remove(service);
                Ok(())
            })
        })
    }

    fn send<'a>(
        &'a self,
        to: Destination<'a>,
        envelope: &'a Envelope,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let routing_key = to.routing_key();
            let routing_key = routing_key.as_ref();
            let (bus, node) = self.bus_and_node()?;
            let state = self.broker.lock();
            let exchanges = state.buses.get(&bus);
            if exchanges.is_some_and(|ex| ex.cut.contains(&node)) {
                return Err(cut_off());
            }
            let queue = exchanges
                .and_then(|ex| ex.p2p.get(routing_key))
                .ok_or_else(|| {
                    ErrorCode::new(
                        codes::NO_SUCH_SERVICE,
                        format!("no queue is bound to `{routing_key}` on {bus}.P2P"),
                    )
                })?;
            let message = WireMessage {
                envelope: envelope.clone(),
                body,
            };
            queue.tx.send(message).map_err(|_| {
                ErrorCode::new(
                    codes::NO_SUCH_SERVICE,
                    format!("the queue for `{routing_key}` is gone"),
                )
            })
        })
    }

    fn publish<'a>(
        &'a self,
        envelope: &'a Envelope,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let (bus, node) = self.bus_and_node()?;
            let state = self.broker.lock();
            let Some(ex) = state.buses.get(&bus) else {
                return Ok(());
            };
            if ex.cut.contains(&node) {
                return Err(cut_off());
            }
            for queue in ex.events.values() {
                if queue
                    .bindings
                    .iter()
                    .any(|p| p.matches(&envelope.type_name))
                {
                    let message = WireMessage {
                        envelope: envelope.clone(),
                        body: body.clone(),
                    };
                    let _ = queue.queue.tx.send(message);
                }
            }
            Ok(())
        })
    }

    fn bind<'a>(&'a self, pattern: &'a str) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let pattern: Pattern = pattern.parse()?;
            let (bus, node) = self.bus_and_node()?;
            let mut state = self.broker.lock();
            let queue = state
                .buses
                .get_mut(&bus)
                .and_then(|ex| ex.events.get_mut(&node))
                .ok_or_else(not_started)?;
            if !queue.bindings.contains(&pattern) {
                queue.bindings.push(pattern);
            }
            Ok(())
        })
    }

    fn unbind<'a>(&'a self, pattern: &'a str) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let (bus, node) = self.bus_and_node()?;
            if let Some(queue) = self
                .broker
                .lock()
                .buses
                .get_mut(&bus)
                .and_then(|ex| ex.events.get_mut(&node))
            {
                queue.bindings.retain(|p| p.as_str() != pattern);
            }
            Ok(())
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let attached = self
                .attached
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(attached) = attached {
                self.broker.disconnect(&attached.bus, attached.node);
                for consumer in attached.consumers.values() {
                    consumer.abort();
                }
            }
        })
    }
}
