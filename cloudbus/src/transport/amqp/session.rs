//! One connection to the broker and everything declared on it. A new
//! session is made at start and after every reconnect, from what the bus
//! wants to exist (its services and event bindings), so the topology is
//! always whole again after a broker or network failure.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use amqprs::channel::{
    BasicCancelArguments, BasicConsumeArguments, BasicGetArguments, BasicQosArguments,
    QueueDeclareArguments, QueueDeleteArguments, QueueUnbindArguments,
};
use amqprs::connection::Connection;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use super::channel::{Alarm, Channel, Failure};
use super::held::Held;
use super::topology::{self, Names};
use super::{AmqpConfig, connect, consumer};
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
    pub(crate) connection: Held<Connection>,
    /// Requests and plain messages: mandatory, confirmed.
    pub(crate) confirmed: Channel,
    /// Replies and events: fire and forget.
    pub(crate) fast: Channel,
    /// The event queue's consumer channel, which also carries bindings.
    pub(crate) events: Channel,
    /// Membership events, on a connection of their own: a node's flood of
    /// events (and the broker's flow control on that connection) must not
    /// hold back its heartbeats, or the others take it for dead.
    pub(crate) membership: Held<Connection>,
    pub(crate) beats: Channel,
    /// Raised when the broker closes a channel of this session or cancels
    /// one of its consumers: the supervisor then builds a new session.
    pub(crate) alarm: Arc<Alarm>,
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
    async fn cancel(&mut self) -> Result<(), Failure> {
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        let cancelled = self
            .channel
            .inner
            .basic_cancel(BasicCancelArguments::new(&self.tag))
            .await
            .map(drop)
            .map_err(|e| self.channel.failure(e));
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
    ) -> Result<Session, Failure> {
        let name = format!("cloudbus {} {}", names.bus, names.node);
        let tls = config.tls_ca.as_deref();
        let mut args = connect::arguments(url, tls, &name).map_err(|e| Failure(e.to_string()))?;
        let connection = Connection::open(&args).await.map_err(opening)?;
        args.connection_name(&format!("{name} membership"));
        let membership = Connection::open(&args).await.map_err(opening)?;
        let beats = Channel::open(&membership, false).await?;
        let confirmed = Channel::open(&connection, true).await?;
        let fast = Channel::open(&connection, false).await?;
        topology::declare_exchanges(&fast, names).await?;

        let events = Channel::open(&connection, false).await?;
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
            .inner
            .basic_qos(BasicQosArguments::new(0, EVENT_PREFETCH, false))
            .await
            .map_err(|e| events.failure(e))?;
        let (_, consumer) = events
            .inner
            .basic_consume_rx(
                BasicConsumeArguments::new(&event_queue, &format!("events.{}", names.node))
                    .manual_ack(true)
                    .finish(),
            )
            .await
            .map_err(|e| events.failure(e))?;
        let event_task = tokio::spawn(consumer::event_loop(
            consumer,
            (*events.inner).clone(),
            EVENT_PREFETCH,
            inbound.clone(),
            config.max_body,
        ));
        let session = Session {
            broker: super::url::address(url),
            connection: Held::new(connection),
            confirmed,
            fast,
            events,
            membership: Held::new(membership),
            beats,
            alarm: Arc::default(),
            consumers: Mutex::new(HashMap::new()),
            event_task,
        };
        for channel in [
            &session.confirmed,
            &session.fast,
            &session.events,
            &session.beats,
        ] {
            channel.in_use(&session.alarm);
        }
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
    ) -> Result<(), Failure> {
        let mut consumers = self.consumers.lock().await;
        if consumers.contains_key(service) {
            return Ok(());
        }
        let queue = names.service_queue(service);
        let tag = format!("{service}.{}", names.node);
        let channel = Channel::open(&self.connection, false).await?;
        // AMQP's prefetch is 16 bits; 0 would mean unlimited.
        let prefetch = prefetch.clamp(1, u16::MAX as usize) as u16;
        channel
            .inner
            .basic_qos(BasicQosArguments::new(0, prefetch, false))
            .await
            .map_err(|e| channel.failure(e))?;
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
        let (_, consumer) = channel
            .inner
            .basic_consume_rx(
                BasicConsumeArguments::new(&queue, &tag)
                    .manual_ack(acked)
                    .finish(),
            )
            .await
            .map_err(|e| channel.failure(e))?;
        channel.in_use(&self.alarm);
        let task = tokio::spawn(consumer::service_loop(
            consumer,
            (*channel.inner).clone(),
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
            .inner
            .queue_unbind(QueueUnbindArguments::new(
                &queue,
                &names.p2p,
                &names.service_key(service),
            ))
            .await
            .map_err(|e| consumer.channel.failure(e));
        let cancelled = consumer.cancel().await;
        // What was queued before is answered (the service is gone from the
        // bus, so its callers hear NO_SUCH_SERVICE), not dropped with it.
        drain(&consumer.channel, &queue, service, inbound, max_body).await;
        let deleted = consumer
            .channel
            .inner
            .queue_delete(QueueDeleteArguments::new(&queue))
            .await
            .map_err(|e| consumer.channel.failure(e));
        if let Ok(Some(dropped @ 1..)) = deleted {
            tracing::warn!(%queue, dropped, "messages still queued for a removed service were dropped");
        }
        let _ = (*consumer.channel.inner).clone().close().await;
        unbound
            .and(cancelled)
            .and(deleted.map(|_| ()))
            .map_err(|e| super::broker_error(&format!("cannot remove {queue}"), e))
    }

    /// Binds this node's queues again, as `wanted` says: an operator may
    /// have deleted an exchange (and every binding with it) or a binding.
    /// Binding is idempotent; a missing exchange makes the broker close the
    /// channel, which raises the alarm and rebuilds the whole session.
    pub(crate) async fn rebind(&self, names: &Names, wanted: &Wanted) -> Result<(), Failure> {
        for service in wanted.services.keys() {
            let queue = names.service_queue(service);
            topology::bind(
                &self.events,
                &queue,
                &names.p2p,
                &names.service_key(service),
            )
            .await?;
        }
        let event_queue = names.event_queue();
        for pattern in &wanted.bindings {
            topology::bind(&self.events, &event_queue, &names.broadcast, pattern).await?;
        }
        Ok(())
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
                .inner
                .queue_declare(QueueDeclareArguments::new(&queue).passive(true).finish())
                .await
                .map(|q| q.map_or(0, |(_, messages, _)| messages));
            match waiting {
                Ok(waiting @ 1..) if service != super::NODE_SERVICE => {
                    tracing::warn!(%queue, waiting, "messages still queued for this node are kept until the queue expires or the node comes back with the same id");
                }
                _ => {
                    let _ = consumer
                        .channel
                        .inner
                        .queue_delete(QueueDeleteArguments::new(&queue))
                        .await;
                }
            }
        });
        let events = async {
            let _ = self
                .events
                .inner
                .queue_delete(QueueDeleteArguments::new(&names.event_queue()))
                .await;
        };
        futures::future::join(futures::future::join_all(services), events).await;
        self.event_task.abort();
        if let Err(error) = (*self.connection).clone().close().await {
            tracing::debug!(%error, "closing the broker connection");
        }
        let _ = (*self.membership).clone().close().await;
    }

    /// Lets go of a session that failed: its consumer tasks end (they
    /// would on their own once the channel errors) and its connections
    /// close. One of them may still be up (only the other failed, or the
    /// broker only closed a channel); the next session opens its own, and
    /// closing the old one returns what its consumers held unacknowledged
    /// to their queues.
    pub(crate) fn abandon(&self) {
        self.event_task.abort();
        self.confirmed.abandon();
        for connection in [&self.connection, &self.membership] {
            let connection = (**connection).clone();
            tokio::spawn(async move {
                let _ = connection.close().await;
            });
        }
        if let Ok(consumers) = self.consumers.try_lock() {
            for task in consumers.values().filter_map(|c| c.task.as_ref()) {
                task.abort();
            }
        }
    }
}

/// Why a connection could not be opened. RabbitMQ answers a refused login
/// by dropping the socket (it says why only to clients that announce
/// `authentication_failure_close`, which amqprs does not), so a connection
/// dropped during the handshake is reported as the refused login it
/// almost always is; a broker that is not there refuses the TCP connection
/// instead.
fn opening(error: amqprs::error::Error) -> Failure {
    let text = error.to_string();
    if text.contains("reset by peer") || text.contains("peer shutdown") {
        Failure(format!(
            "{text}: the broker dropped the connection during the login, as RabbitMQ does \
             when it refuses the user name or password (ACCESS_REFUSED)"
        ))
    } else {
        Failure(text)
    }
}

/// Hands every message left in `queue` to the bus, acknowledging each, until
/// the queue is empty.
async fn drain(
    channel: &Channel,
    queue: &str,
    service: &str,
    inbound: &Arc<dyn Inbound>,
    max_body: usize,
) {
    let service: Arc<str> = Arc::from(service);
    while let Ok(Some((got, props, data))) =
        channel.inner.basic_get(BasicGetArguments::new(queue)).await
    {
        let tag = got.delivery_tag();
        match super::codec::decode(&props, data, max_body) {
            Ok(message) => inbound.service_message(service.clone(), message).await,
            Err(rejected) => inbound.malformed(rejected.reply, rejected.error).await,
        }
        if channel
            .inner
            .basic_ack(amqprs::channel::BasicAckArguments::new(tag, false))
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
