//! One connection to the broker and everything declared on it. A new
//! session is made at start and after every reconnect, from what the bus
//! wants to exist (its services and event bindings), so the topology is
//! always whole again after a broker or network failure.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::topology::{self, Names};
use super::{AmqpConfig, consumer};
use crate::ErrorCode;
use crate::transport::Inbound;

/// Events a node holds unacknowledged at most.
const EVENT_PREFETCH: u16 = 1024;

/// What this node needs on the broker, kept across reconnects.
#[derive(Default)]
pub(crate) struct Wanted {
    /// Service name → prefetch.
    pub(crate) services: BTreeMap<String, usize>,
    /// Topic patterns bound to the event queue.
    pub(crate) bindings: BTreeSet<String>,
}

/// A live connection with its channels and consumers.
pub(crate) struct Session {
    /// The broker's address, without credentials (see [`super::url::address`]).
    pub(crate) broker: String,
    pub(crate) connection: Connection,
    /// Requests and plain messages: mandatory, confirmed.
    pub(crate) confirmed: Channel,
    /// Replies and events: fire and forget.
    pub(crate) fast: Channel,
    /// The event queue's consumer channel, which also carries bindings.
    pub(crate) events: Channel,
    /// Membership events, on a connection of their own: a node's flood of
    /// events (and the broker's flow control on that connection) must not
    /// hold back its heartbeats, or the others take it for dead.
    membership: Arc<Connection>,
    pub(crate) beats: Channel,
    consumers: Mutex<HashMap<String, ServiceConsumer>>,
    event_task: JoinHandle<()>,
}

struct ServiceConsumer {
    channel: Channel,
    tag: String,
    /// `None` once cancelled.
    task: Option<JoinHandle<()>>,
}

impl ServiceConsumer {
    /// Stops deliveries and waits until the loop has handed over what it
    /// already took; what is still queued stays on the broker.
    async fn cancel(&mut self) -> lapin::Result<()> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        let cancelled = self
            .channel
            .basic_cancel(self.tag.as_str().into(), BasicCancelOptions::default())
            .await;
        if cancelled.is_ok() {
            let _ = task.await;
        } else {
            task.abort();
        }
        cancelled
    }
}

impl Session {
    /// Connects and declares the exchanges, the event queue with every
    /// wanted binding, and a consumed queue for every wanted service,
    /// within the configured connect timeout (a broker that accepts TCP
    /// but never answers must not hold a node forever).
    pub(crate) async fn open(
        config: &AmqpConfig,
        names: &Names,
        inbound: &Arc<dyn Inbound>,
        wanted: &Wanted,
    ) -> Result<Session, ErrorCode> {
        let mut failures = Vec::new();
        for (at, url) in config.brokers_in_turn() {
            let what = || format!("cannot connect to {}", super::redact(url));
            match tokio::time::timeout(
                config.connect_timeout,
                Self::open_now(url, config, names, inbound, wanted),
            )
            .await
            {
                Ok(Ok(session)) => {
                    config.connected_to(at);
                    if failures.is_empty() {
                        tracing::debug!(broker = %super::redact(url), "connected");
                    } else {
                        tracing::info!(broker = %super::redact(url), "connected after trying other brokers");
                    }
                    return Ok(session);
                }
                Ok(Err(error)) if topology::is_queue_type_mismatch(&error) => {
                    // Every broker of the cluster would say the same.
                    return Err(queue_type_mismatch(&names.bus, names.queue_type));
                }
                Ok(Err(error)) => failures.push(super::broker_error(&what(), error)),
                Err(_) => failures.push(ErrorCode::new(
                    crate::codes::BROKER_UNAVAILABLE,
                    format!("{}: no answer within {:?}", what(), config.connect_timeout),
                )),
            }
        }
        Err(match failures.len() {
            0 => ErrorCode::invalid(format!("no broker URL in {:?}", config.redacted_url())),
            1 => failures.remove(0),
            n => ErrorCode::new(
                crate::codes::BROKER_UNAVAILABLE,
                format!(
                    "none of the {n} brokers answered: {}",
                    failures
                        .iter()
                        .map(|f| f.description())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            ),
        })
    }

    async fn open_now(
        url: &str,
        config: &AmqpConfig,
        names: &Names,
        inbound: &Arc<dyn Inbound>,
        wanted: &Wanted,
    ) -> lapin::Result<Session> {
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("cloudbus {} {}", names.bus, names.node).into());
        let tls = OwnedTLSConfig {
            identity: None,
            cert_chain: config.tls_ca.clone(),
        };
        let connection = Connection::connect_with_config(
            url,
            properties.clone(),
            tls.clone(),
            lapin::runtime::default_runtime()?,
        )
        .await?;
        let membership = Connection::connect_with_config(
            url,
            properties.with_connection_name(
                format!("cloudbus {} {} membership", names.bus, names.node).into(),
            ),
            tls,
            lapin::runtime::default_runtime()?,
        )
        .await?;
        let beats = membership.create_channel().await?;
        let confirmed = connection.create_channel().await?;
        confirmed
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let fast = connection.create_channel().await?;
        topology::declare_exchanges(&fast, names).await?;

        let events = connection.create_channel().await?;
        let event_queue = names.event_queue();
        topology::declare_queue(
            &events,
            &event_queue,
            names.queue_type,
            config.expiry_ms(),
            Some(topology::EVENT_QUEUE_MAX),
        )
        .await?;
        for pattern in &wanted.bindings {
            topology::bind(&events, &event_queue, &names.broadcast, pattern).await?;
        }
        events
            .basic_qos(EVENT_PREFETCH, BasicQosOptions::default())
            .await?;
        let consumer = events
            .basic_consume(
                event_queue.as_str().into(),
                format!("events.{}", names.node).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let event_task = tokio::spawn(consumer::event_loop(
            consumer,
            events.clone(),
            EVENT_PREFETCH,
            inbound.clone(),
            config.max_body,
        ));
        let session = Session {
            broker: super::url::address(url),
            connection,
            confirmed,
            fast,
            events,
            membership: Arc::new(membership),
            beats,
            consumers: Mutex::new(HashMap::new()),
            event_task,
        };
        for (service, prefetch) in &wanted.services {
            session
                .consume(config, names, inbound, service, *prefetch)
                .await?;
        }
        Ok(session)
    }

    /// Declares a service's queue and starts consuming it with `prefetch`.
    pub(crate) async fn consume(
        &self,
        config: &AmqpConfig,
        names: &Names,
        inbound: &Arc<dyn Inbound>,
        service: &str,
        prefetch: usize,
    ) -> lapin::Result<()> {
        let mut consumers = self.consumers.lock().await;
        if consumers.contains_key(service) {
            return Ok(());
        }
        let queue = names.service_queue(service);
        let tag = format!("{service}.{}", names.node);
        let channel = self.connection.create_channel().await?;
        // AMQP's prefetch is 16 bits; 0 would mean unlimited.
        let prefetch = prefetch.clamp(1, u16::MAX as usize) as u16;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        topology::declare_queue(&channel, &queue, names.queue_type, config.expiry_ms(), None)
            .await?;
        topology::bind(&channel, &queue, &names.p2p, &names.service_key(service)).await?;
        // The node queue is taken without acks. It brings the replies to
        // this node's own calls, each already bounded by a caller waiting
        // for it, and the built-in requests, small and quickly answered.
        // Acks there bought nothing: what a crashed node left unacked would
        // be redelivered to nobody, since the queue is its alone. Sparing
        // the broker an ack per reply gave about 10% more round trips.
        let acked = service != super::NODE_SERVICE;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions {
                    no_ack: !acked,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let task = tokio::spawn(consumer::service_loop(
            consumer,
            channel.clone(),
            acked.then_some(prefetch),
            Arc::from(service),
            inbound.clone(),
            config.max_body,
        ));
        consumers.insert(
            service.to_string(),
            ServiceConsumer {
                channel,
                tag,
                task: Some(task),
            },
        );
        Ok(())
    }

    /// Cancels a service's consumer, lets it hand over what it already
    /// holds, and deletes its queue: later requests for it are unroutable.
    pub(crate) async fn stop_consuming(
        &self,
        names: &Names,
        service: &str,
        inbound: &Arc<dyn Inbound>,
        max_body: usize,
    ) -> Result<(), ErrorCode> {
        let Some(mut consumer) = self.consumers.lock().await.remove(service) else {
            return Ok(());
        };
        let queue = names.service_queue(service);
        // First nothing new comes in: a message sent from now on is returned
        // to its sender at once (NO_SUCH_SERVICE) instead of landing in a
        // queue about to be deleted.
        let unbound = consumer
            .channel
            .queue_unbind(
                queue.as_str().into(),
                names.p2p.as_str().into(),
                names.service_key(service).into(),
                FieldTable::default(),
            )
            .await;
        let cancelled = consumer.cancel().await;
        // What was queued before is answered (the service is gone from the
        // bus, so its callers hear NO_SUCH_SERVICE), not dropped with it.
        drain(&consumer.channel, &queue, service, inbound, max_body).await;
        let deleted = consumer
            .channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
        if let Ok(dropped @ 1..) = deleted {
            tracing::warn!(%queue, dropped, "messages still queued for a removed service were dropped");
        }
        let _ = consumer.channel.close(200, "service removed".into()).await;
        unbound
            .and(cancelled)
            .and(deleted.map(|_| ()))
            .map_err(|e| super::broker_error(&format!("cannot remove {queue}"), e))
    }

    /// Stops taking new work for every service but `keep` (the node's own
    /// queue, which must go on bringing replies while in-flight handlers
    /// finish). Messages not yet taken stay queued.
    pub(crate) async fn pause(&self, keep: &str) {
        let mut consumers = self.consumers.lock().await;
        for (service, consumer) in consumers.iter_mut() {
            if service != keep
                && let Err(error) = consumer.cancel().await
            {
                tracing::debug!(%service, %error, "cancelling a consumer");
            }
        }
    }

    /// Stops every consumer and deletes this node's queues, except a
    /// service queue that still holds messages: those were accepted by the
    /// broker for this node, and a node restarted with the same id takes
    /// them up (otherwise the queue expires).
    pub(crate) async fn close(&self, names: &Names) {
        let mut consumers = std::mem::take(&mut *self.consumers.lock().await);
        // Queues are released side by side: deleting a quorum queue while a
        // broker node holding one of its replicas is down takes the broker
        // seconds per queue, which must not add up over a node's queues.
        let services = consumers.iter_mut().map(|(service, consumer)| async move {
            let _ = consumer.cancel().await;
            let queue = names.service_queue(service);
            let waiting = consumer
                .channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map(|q| q.message_count());
            match waiting {
                Ok(waiting @ 1..) if service != super::NODE_SERVICE => {
                    tracing::warn!(%queue, waiting, "messages still queued for this node are kept until the queue expires or the node comes back with the same id");
                }
                _ => {
                    let _ = consumer
                        .channel
                        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                        .await;
                }
            }
        });
        let events = async {
            let _ = self
                .events
                .queue_delete(names.event_queue().into(), QueueDeleteOptions::default())
                .await;
        };
        futures::future::join(futures::future::join_all(services), events).await;
        self.event_task.abort();
        if let Err(error) = self.connection.close(200, "node stopped".into()).await {
            tracing::debug!(%error, "closing the broker connection");
        }
        let _ = self.membership.close(200, "node stopped".into()).await;
    }

    /// Lets go of a session whose connection failed: its consumer tasks
    /// end (they would on their own once the channel errors).
    pub(crate) fn abandon(&self) {
        self.event_task.abort();
        // The membership connection may still be up; the next session
        // opens its own.
        let membership = Arc::clone(&self.membership);
        tokio::spawn(async move {
            let _ = membership.close(200, "reconnecting".into()).await;
        });
        if let Ok(consumers) = self.consumers.try_lock() {
            for task in consumers.values().filter_map(|c| c.task.as_ref()) {
                task.abort();
            }
        }
    }
}

/// Hands every message left in `queue` to the bus, acknowledging each, until
/// the queue is empty.
async fn drain(
    channel: &lapin::Channel,
    queue: &str,
    service: &str,
    inbound: &Arc<dyn Inbound>,
    max_body: usize,
) {
    let service: Arc<str> = Arc::from(service);
    while let Ok(Some(message)) = channel
        .basic_get(queue.into(), lapin::options::BasicGetOptions::default())
        .await
    {
        let delivery = message.delivery;
        let tag = delivery.delivery_tag;
        match super::codec::decode(&delivery.properties, delivery.data, max_body) {
            Ok(message) => inbound.service_message(service.clone(), message).await,
            Err(rejected) => inbound.malformed(rejected.reply, rejected.error).await,
        }
        if channel
            .basic_ack(tag, lapin::options::BasicAckOptions::default())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// The error of a node configured for another queue type than its bus.
fn queue_type_mismatch(bus: &str, mine: super::QueueType) -> ErrorCode {
    let theirs = match mine {
        super::QueueType::Classic => super::QueueType::Quorum,
        super::QueueType::Quorum => super::QueueType::Classic,
    };
    ErrorCode::new(
        crate::codes::INVALID_ARGUMENT,
        format!(
            "the queues of this node on bus `{bus}` exist as {theirs} queues but this node \
             is configured for {mine} queues: every node of a bus must use the same queue \
             type (AmqpConfig::queue_type, --queue-type)"
        ),
    )
}
