//! `amqp-rpc`: request/reply between two nodes over RabbitMQ against three
//! raw `amqprs` client/server pairs on the same broker (a static request
//! queue, a static reply queue, correlation ids): one with the bus's
//! semantics (requests acked with a prefetch, published `mandatory` with
//! confirms), one with none, the broker path alone: the limit; and one
//! with the bus's semantics and every property of its wire protocol, so
//! that what the bus costs shows apart from what its protocol costs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use amqprs::callbacks::{ChannelCallback, DefaultChannelCallback};
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    ConfirmSelectArguments, QueueDeclareArguments, QueueDeleteArguments,
};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use anyhow::Context as _;
use async_trait::async_trait;
use cloudbus::{Bus, Service};
use dashmap::DashMap;
use tokio::sync::oneshot;

use super::measure::{Sample, closed_loop};
use super::messages::{Echo, EchoReply, answer};
use super::{raw_amqp, wire};

/// One level of `amqp-rpc`: the bus and its three raw baselines.
pub struct Measured {
    pub bus: Sample,
    pub baseline: Sample,
    pub limit: Sample,
    pub wire: Sample,
}

pub async fn run(
    url: &str,
    name: &str,
    level: usize,
    duration: Duration,
) -> anyhow::Result<Measured> {
    let server = Bus::builder().name(name).amqp(url).build().await?;
    let client = Bus::builder().name(name).amqp(url).build().await?;
    server
        .register(
            Service::builder("bench", ())
                .concurrency(level.max(64))
                .on_request(|req: Echo, _| async move { Ok(answer(req)) })
                .build(),
        )
        .await?;
    let to = server.node_id();
    let sample = closed_loop(level, duration, {
        let client = client.clone();
        move |i| {
            let client = client.clone();
            async move {
                client.call(Echo::new(i as u64, 1)).node(to).await?;
                Ok(())
            }
        }
    })
    .await;
    client.shutdown().await;
    server.shutdown().await;
    Ok(Measured {
        bus: sample?,
        baseline: raw(url, name, level, duration, Semantics::Bus).await?,
        limit: raw(url, name, level, duration, Semantics::Limit).await?,
        wire: raw(url, name, level, duration, Semantics::Wire).await?,
    })
}

/// What the raw program promises, beyond moving bytes.
#[derive(Clone, Copy, PartialEq)]
pub enum Semantics {
    /// The bus's guarantees: requests acked after their reply is out, with
    /// a prefetch; published `mandatory` on a confirmed channel, each
    /// caller awaiting its confirm. Replies are taken without acks.
    Bus,
    /// Nothing but the broker path: no acks, no confirms. The limit.
    Limit,
    /// The bus's guarantees, and every property wire protocol v1 puts on a
    /// request and a reply (`docs/wire-protocol.md` §2 and §5): what the broker
    /// and the client library pay for the protocol itself.
    Wire,
}

/// A careful raw `amqprs` client and server in one process, written the
/// way `amqprs` is fastest: one static request queue and one static reply
/// queue, the server taking deliveries as they come and answering each in
/// its own task (so replies and acks are pipelined, never one delivery at a
/// time), one dispatcher routing replies to callers by correlation id. The
/// client publishes and takes its replies on one channel: `amqprs` runs a
/// task per channel that every incoming frame passes through, and a second
/// one for the confirms cost about 4 µs of CPU per round trip (12%).
async fn raw(
    url: &str,
    name: &str,
    level: usize,
    duration: Duration,
    semantics: Semantics,
) -> anyhow::Result<Sample> {
    let acks = semantics != Semantics::Limit;
    let wire = semantics == Semantics::Wire;
    let requests = format!("{name}.raw.requests");
    let replies = format!("{name}.raw.replies");
    let server = raw_amqp::connect(url).await?;
    let client = raw_amqp::connect(url).await?;

    let serving = raw_amqp::channel(&server).await?;
    if acks {
        let prefetch = level.clamp(64, 65_535) as u16;
        serving
            .basic_qos(BasicQosArguments::new(0, prefetch, false))
            .await?;
    }
    serving
        .queue_declare(QueueDeclareArguments::new(&requests))
        .await?;
    let (_, mut incoming) = serving
        .basic_consume_rx(
            BasicConsumeArguments::new(&requests, "server")
                .manual_ack(acks)
                .finish(),
        )
        .await?;
    let server_task = tokio::spawn({
        let serving = serving.clone();
        async move {
            while let Some(delivery) = incoming.recv().await {
                let serving = serving.clone();
                tokio::spawn(async move {
                    let (Some(deliver), Some(props), Some(body)) = (
                        delivery.deliver,
                        delivery.basic_properties,
                        delivery.content,
                    ) else {
                        return;
                    };
                    let id = match wire {
                        true => props.message_id(),
                        false => props.correlation_id(),
                    };
                    if let (Some(reply_to), Some(id), Ok(req)) =
                        (props.reply_to(), id, serde_json::from_slice::<Echo>(&body))
                    {
                        let body = serde_json::to_vec(&answer(req)).unwrap_or_default();
                        let mut reply = BasicProperties::default();
                        reply.with_correlation_id(id);
                        let _ = serving
                            .basic_publish(
                                if wire { wire::reply(reply) } else { reply },
                                body,
                                BasicPublishArguments::new("", reply_to),
                            )
                            .await;
                    }
                    if acks {
                        let ack = BasicAckArguments::new(deliver.delivery_tag(), false);
                        let _ = serving.basic_ack(ack).await;
                    }
                });
            }
        }
    });

    let waiting: Arc<DashMap<u64, oneshot::Sender<Vec<u8>>>> = Arc::default();
    let calling = raw_amqp::channel(&client).await?;
    calling
        .queue_declare(QueueDeclareArguments::new(&replies))
        .await?;
    let (_, mut answers) = calling
        .basic_consume_rx(
            BasicConsumeArguments::new(&replies, "client")
                .auto_ack(true)
                .finish(),
        )
        .await?;
    let reply_task = tokio::spawn({
        let waiting = waiting.clone();
        async move {
            while let Some(delivery) = answers.recv().await {
                let id = delivery
                    .basic_properties
                    .as_ref()
                    .and_then(|props| props.correlation_id())
                    .and_then(|id| match wire {
                        true => u64::from_str_radix(id, 16).ok(),
                        false => id.parse::<u64>().ok(),
                    });
                if let Some((_, tx)) = id.and_then(|id| waiting.remove(&id)) {
                    let _ = tx.send(delivery.content.unwrap_or_default());
                }
            }
        }
    });
    let confirms = Arc::new(Confirms::default());
    if acks {
        calling
            .register_callback(ConfirmCallback(confirms.clone()))
            .await?;
        calling
            .confirm_select(ConfirmSelectArguments::default())
            .await?;
    }
    let next = Arc::new(AtomicU64::new(0));
    let sample = closed_loop(level, duration, {
        let (calling, requests, replies) = (calling.clone(), requests.clone(), replies.clone());
        move |i| {
            let (calling, confirms, waiting, requests, replies, next) = (
                calling.clone(),
                confirms.clone(),
                waiting.clone(),
                requests.clone(),
                replies.clone(),
                next.clone(),
            );
            async move {
                let id = next.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = oneshot::channel();
                waiting.insert(id, tx);
                let body = serde_json::to_vec(&Echo::new(i as u64, 1))?;
                let props = match wire {
                    true => wire::request(id, &replies),
                    false => {
                        let mut props = BasicProperties::default();
                        props
                            .with_correlation_id(&id.to_string())
                            .with_reply_to(&replies)
                            .with_content_type("application/json");
                        props
                    }
                };
                let mut publish = BasicPublishArguments::new("", &requests);
                publish.mandatory = acks;
                if acks {
                    confirms.publish(&calling, props, body, publish).await?;
                } else {
                    calling.basic_publish(props, body, publish).await?;
                }
                serde_json::from_slice::<EchoReply>(&rx.await?)?;
                Ok(())
            }
        }
    })
    .await;
    server_task.abort();
    reply_task.abort();
    // Closing a channel cancels its consumer; the queues go after. The
    // server's reply tasks may still publish on its closed channel, which
    // the broker answers by closing that connection: the queues are
    // deleted from the client's.
    for channel in [serving, calling] {
        let _ = channel.close().await;
    }
    let cleanup = client.open_channel(None).await?;
    for queue in [&requests, &replies] {
        let _ = cleanup.queue_delete(QueueDeleteArguments::new(queue)).await;
    }
    let _ = cleanup.close().await;
    let _ = server.close().await;
    let _ = client.close().await;
    sample
}

/// Publisher confirms the way `amqprs` has them: `basic_publish` returns
/// once the frames are queued, and the broker's `basic.ack`/`basic.nack`
/// reach the channel's callback with the publish's delivery tag (1, 2, ...
/// per channel, in the order the publishes arrive). So a caller takes the
/// next tag and queues its publish under one lock, which keeps the tags in
/// the order of the wire, and waits for the callback to resolve its tag.
struct Confirms {
    /// The tag the broker gives the next publish, less one.
    published: tokio::sync::Mutex<u64>,
    /// The callers waiting, by tag; `None` once the channel is gone, so
    /// that nobody waits for a confirm that cannot come.
    waiting: Mutex<Option<BTreeMap<u64, oneshot::Sender<()>>>>,
}

impl Default for Confirms {
    fn default() -> Self {
        Self {
            published: tokio::sync::Mutex::new(0),
            waiting: Mutex::new(Some(BTreeMap::new())),
        }
    }
}

impl Confirms {
    /// Publishes and waits until the broker confirms. A nack ends the wait
    /// too, as in the `lapin` baseline this replaces (which awaited its
    /// confirm without looking at it); a return (no route) is followed by
    /// its confirm.
    async fn publish(
        &self,
        channel: &Channel,
        props: BasicProperties,
        body: Vec<u8>,
        args: BasicPublishArguments,
    ) -> anyhow::Result<()> {
        let (tx, rx) = oneshot::channel();
        {
            let mut published = self.published.lock().await;
            let tag = *published + 1;
            self.waiting()
                .as_mut()
                .context("the channel closed")?
                .insert(tag, tx);
            if let Err(e) = channel.basic_publish(props, body, args).await {
                if let Some(waiting) = self.waiting().as_mut() {
                    waiting.remove(&tag);
                }
                return Err(e.into());
            }
            *published = tag;
        }
        rx.await
            .context("the channel closed before the broker confirmed")
    }

    /// Confirms `tag`, or every tag up to it if `multiple`.
    fn confirm(&self, tag: u64, multiple: bool) {
        let done: Vec<oneshot::Sender<()>> = match self.waiting().as_mut() {
            Some(waiting) if multiple => {
                let later = waiting.split_off(&(tag + 1));
                std::mem::replace(waiting, later).into_values().collect()
            }
            Some(waiting) => waiting.remove(&tag).into_iter().collect(),
            None => Vec::new(),
        };
        for tx in done {
            let _ = tx.send(());
        }
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Option<BTreeMap<u64, oneshot::Sender<()>>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The confirming channel's callback: confirms, and fails the waiting
/// callers when the channel goes.
struct ConfirmCallback(Arc<Confirms>);

#[async_trait]
impl ChannelCallback for ConfirmCallback {
    async fn close(
        &mut self,
        channel: &Channel,
        close: CloseChannel,
    ) -> Result<(), amqprs::error::Error> {
        DefaultChannelCallback.close(channel, close).await
    }
    async fn cancel(
        &mut self,
        channel: &Channel,
        cancel: Cancel,
    ) -> Result<(), amqprs::error::Error> {
        DefaultChannelCallback.cancel(channel, cancel).await
    }
    async fn flow(
        &mut self,
        channel: &Channel,
        active: bool,
    ) -> Result<bool, amqprs::error::Error> {
        DefaultChannelCallback.flow(channel, active).await
    }
    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        self.0.confirm(ack.delivery_tag(), ack.mutiple());
    }
    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        self.0.confirm(nack.delivery_tag(), nack.multiple());
    }
    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {}
}

/// The channel's dispatcher drops its callback when the channel closes.
impl Drop for ConfirmCallback {
    fn drop(&mut self) {
        self.0.waiting().take();
    }
}
