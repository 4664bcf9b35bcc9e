//! The RabbitMQ transport: wire protocol v1 over AMQP 0-9-1 with `lapin`
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

mod codec;
mod consumer;
mod topology;
mod url;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use lapin::Confirmation;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

pub use url::redact;

use super::{Inbound, Transport};
use crate::{Envelope, ErrorCode, Kind, NodeId, codes};
use topology::Names;

/// The URL used when none is given: a local broker with the default user.
pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// How to reach the broker and how to behave on it.
#[derive(Clone, Debug)]
pub struct AmqpConfig {
    url: String,
    queue_expiry: Duration,
    max_body: usize,
}

impl AmqpConfig {
    /// `amqp://user:password@host:port/vhost`, or `amqps://` for TLS.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            queue_expiry: Duration::from_secs(10 * 60),
            max_body: 4 * 1024 * 1024,
        }
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

    /// The URL with its password hidden, for logs.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }
}

/// A node's link to RabbitMQ. Give it to [`BusBuilder::transport`](crate::BusBuilder::transport).
pub struct AmqpTransport {
    config: AmqpConfig,
    link: OnceLock<Link>,
}

/// What exists once the transport has started.
struct Link {
    names: Names,
    connection: Connection,
    /// Requests and plain messages: mandatory, confirmed.
    confirmed: Channel,
    /// Replies and events: fire and forget.
    fast: Channel,
    /// The event queue's consumer channel, which also carries bindings.
    events: Channel,
    inbound: Arc<dyn Inbound>,
    consumers: Mutex<HashMap<String, ServiceConsumer>>,
    event_task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

struct ServiceConsumer {
    channel: Channel,
    tag: String,
    task: JoinHandle<()>,
}

impl AmqpTransport {
    /// A transport for the broker at `url` (see [`AmqpConfig::new`]).
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_config(AmqpConfig::new(url))
    }

    /// A transport with every setting given.
    pub fn with_config(config: AmqpConfig) -> Self {
        Self {
            config,
            link: OnceLock::new(),
        }
    }

    fn link(&self) -> Result<&Link, ErrorCode> {
        self.link.get().ok_or_else(|| {
            ErrorCode::new(
                codes::BROKER_UNAVAILABLE,
                "the AMQP transport is not started",
            )
        })
    }

    async fn connect(
        &self,
        bus: &str,
        node: NodeId,
        inbound: Arc<dyn Inbound>,
    ) -> lapin::Result<Link> {
        let names = Names::new(bus, node);
        let properties = ConnectionProperties::default()
            .with_connection_name(format!("cloudbus {bus} {node}").into());
        let connection = Connection::connect(&self.config.url, properties).await?;
        let confirmed = connection.create_channel().await?;
        confirmed
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let fast = connection.create_channel().await?;
        topology::declare_exchanges(&fast, &names).await?;

        let events = connection.create_channel().await?;
        let event_queue = names.event_queue();
        topology::declare_queue(&events, &event_queue, self.expiry_ms()).await?;
        events.basic_qos(1024, BasicQosOptions::default()).await?;
        let consumer = events
            .basic_consume(
                event_queue.as_str().into(),
                format!("events.{node}").into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let event_task = tokio::spawn(consumer::event_loop(
            consumer,
            inbound.clone(),
            self.config.max_body,
        ));
        Ok(Link {
            names,
            connection,
            confirmed,
            fast,
            events,
            inbound,
            consumers: Mutex::new(HashMap::new()),
            event_task: std::sync::Mutex::new(Some(event_task)),
        })
    }

    fn expiry_ms(&self) -> u32 {
        self.config
            .queue_expiry
            .as_millis()
            .clamp(1, u32::MAX as u128) as u32
    }
}

fn broker_error(what: &str, error: lapin::Error) -> ErrorCode {
    ErrorCode::new(codes::BROKER_UNAVAILABLE, format!("{what}: {error}"))
}

impl Transport for AmqpTransport {
    fn start<'a>(
        &'a self,
        bus: &'a str,
        node: NodeId,
        inbound: Arc<dyn Inbound>,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            if self.link.get().is_some() {
                return Err(ErrorCode::invalid("this AMQP transport is already started"));
            }
            let link = self.connect(bus, node, inbound).await.map_err(|e| {
                broker_error(
                    &format!("cannot connect to {}", self.config.redacted_url()),
                    e,
                )
            })?;
            tracing::info!(bus, %node, broker = %self.config.redacted_url(), "connected to the broker");
            self.link
                .set(link)
                .map_err(|_| ErrorCode::invalid("this AMQP transport is already started"))
        })
    }

    fn add_service<'a>(
        &'a self,
        service: &'a str,
        prefetch: usize,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let link = self.link()?;
            let mut consumers = link.consumers.lock().await;
            if consumers.contains_key(service) {
                return Ok(());
            }
            let names = &link.names;
            let queue = names.service_queue(service);
            let tag = format!("{service}.{}", names.node);
            let setup = async {
                let channel = link.connection.create_channel().await?;
                // AMQP's prefetch is 16 bits; 0 would mean unlimited.
                let prefetch = prefetch.clamp(1, u16::MAX as usize) as u16;
                channel
                    .basic_qos(prefetch, BasicQosOptions::default())
                    .await?;
                topology::declare_queue(&channel, &queue, self.expiry_ms()).await?;
                topology::bind(&channel, &queue, &names.p2p, &names.service_key(service)).await?;
                let consumer = channel
                    .basic_consume(
                        queue.as_str().into(),
                        tag.as_str().into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                Ok::<_, lapin::Error>((channel, consumer))
            };
            let (channel, consumer) = setup
                .await
                .map_err(|e| broker_error(&format!("cannot consume {queue}"), e))?;
            let task = tokio::spawn(consumer::service_loop(
                consumer,
                Arc::from(service),
                link.inbound.clone(),
                self.config.max_body,
            ));
            consumers.insert(service.to_string(), ServiceConsumer { channel, tag, task });
            Ok(())
        })
    }

    fn remove_service<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let link = self.link()?;
            let Some(consumer) = link.consumers.lock().await.remove(service) else {
                return Ok(());
            };
            stop_consumer(link, service, consumer).await
        })
    }

    fn send<'a>(
        &'a self,
        routing_key: &'a str,
        envelope: &'a Envelope,
        body: Bytes,
    ) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let link = self.link()?;
            let props = codec::properties(envelope);
            if envelope.kind == Kind::Reply {
                // A reply nobody can take (its caller's node is gone) is
                // simply lost; nothing waits for the broker's word on it.
                link.fast
                    .basic_publish(
                        link.names.p2p.as_str().into(),
                        routing_key.into(),
                        BasicPublishOptions::default(),
                        &body,
                        props,
                    )
                    .await
                    .map_err(|e| broker_error("cannot send a reply", e))?;
                return Ok(());
            }
            let confirm = link
                .confirmed
                .basic_publish(
                    link.names.p2p.as_str().into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &body,
                    props,
                )
                .await
                .map_err(|e| broker_error("cannot send", e))?
                .await
                .map_err(|e| broker_error("no confirmation from the broker", e))?;
            match confirm {
                Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
                Confirmation::Ack(Some(_)) => Err(no_route(routing_key)),
                Confirmation::Nack(_) => Err(ErrorCode::new(
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
            let link = self.link()?;
            link.fast
                .basic_publish(
                    link.names.broadcast.as_str().into(),
                    envelope.type_name.as_ref().into(),
                    BasicPublishOptions::default(),
                    &body,
                    codec::properties(envelope),
                )
                .await
                .map_err(|e| broker_error("cannot publish", e))?;
            Ok(())
        })
    }

    fn bind<'a>(&'a self, pattern: &'a str) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let link = self.link()?;
            let names = &link.names;
            topology::bind(
                &link.events,
                &names.event_queue(),
                &names.broadcast,
                pattern,
            )
            .await
            .map_err(|e| broker_error(&format!("cannot bind {pattern}"), e))
        })
    }

    fn unbind<'a>(&'a self, pattern: &'a str) -> BoxFuture<'a, Result<(), ErrorCode>> {
        Box::pin(async move {
            let link = self.link()?;
            let names = &link.names;
            link.events
                .queue_unbind(
                    names.event_queue().into(),
                    names.broadcast.as_str().into(),
                    pattern.into(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| broker_error(&format!("cannot unbind {pattern}"), e))
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Ok(link) = self.link() else {
                return;
            };
            let consumers: Vec<_> = link.consumers.lock().await.drain().collect();
            for (service, consumer) in consumers {
                if let Err(error) = stop_consumer(link, &service, consumer).await {
                    tracing::debug!(%service, %error, "stopping a consumer");
                }
            }
            // A node that stops on purpose leaves no queues behind.
            let event_queue = link.names.event_queue();
            let _ = link
                .events
                .queue_delete(event_queue.as_str().into(), QueueDeleteOptions::default())
                .await;
            if let Some(task) = link
                .event_task
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
            {
                task.abort();
            }
            if let Err(error) = link.connection.close(200, "node stopped".into()).await {
                tracing::debug!(%error, "closing the broker connection");
            }
        })
    }
}

/// Cancels a service's consumer, lets it hand over what it already holds,
/// and deletes its queue: later requests for it are unroutable.
async fn stop_consumer(
    link: &Link,
    service: &str,
    consumer: ServiceConsumer,
) -> Result<(), ErrorCode> {
    let ServiceConsumer { channel, tag, task } = consumer;
    let cancelled = channel
        .basic_cancel(tag.as_str().into(), BasicCancelOptions::default())
        .await;
    if cancelled.is_ok() {
        let _ = task.await;
    } else {
        task.abort();
    }
    let queue = link.names.service_queue(service);
    let deleted = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = channel.close(200, "service removed".into()).await;
    cancelled
        .and(deleted.map(|_| ()))
        .map_err(|e| broker_error(&format!("cannot remove {queue}"), e))
}

fn no_route(routing_key: &str) -> ErrorCode {
    let (service, node) = routing_key.split_once('.').unwrap_or((routing_key, "?"));
    ErrorCode::new(
        codes::NO_SUCH_SERVICE,
        format!("no service `{service}` on node {node}: no queue took the message"),
    )
}
