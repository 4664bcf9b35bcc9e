//! `amqp-rpc`: request/reply between two nodes over RabbitMQ against two
//! raw `lapin` client/server pairs on the same broker (a static request
//! queue, a static reply queue, correlation ids): one with the bus's
//! semantics (requests acked with a prefetch, published `mandatory` with
//! confirms), one with none, the broker path alone: the limit; and one
//! with the bus's semantics and every property of its wire protocol, so
//! that what the bus costs shows apart from what its protocol costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cloudbus::{Bus, Service};
use dashmap::DashMap;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::sync::oneshot;

use super::measure::{Sample, closed_loop};
use super::messages::{Echo, EchoReply, answer};
use super::wire;

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

/// A careful raw `lapin` client and server in one process, written the way
/// `lapin` is fastest: one static request queue and one static reply
/// queue, the server taking deliveries as they come and answering each in
/// its own task (so replies and acks are pipelined, never one delivery at a
/// time), one dispatcher routing replies to callers by correlation id.
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
    let server = Connection::connect(url, ConnectionProperties::default()).await?;
    let client = Connection::connect(url, ConnectionProperties::default()).await?;

    let serving = server.create_channel().await?;
    if acks {
        serving
            .basic_qos(level.clamp(64, 65_535) as u16, BasicQosOptions::default())
            .await?;
    }
    serving
        .queue_declare(
            requests.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut incoming = serving
        .basic_consume(
            requests.as_str().into(),
            "server".into(),
            BasicConsumeOptions {
                no_ack: !acks,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let server_task = tokio::spawn({
        let serving = serving.clone();
        async move {
            while let Some(Ok(delivery)) = incoming.next().await {
                let serving = serving.clone();
                tokio::spawn(async move {
                    let props = &delivery.properties;
                    let id = match wire {
                        true => props.message_id(),
                        false => props.correlation_id(),
                    };
                    if let (Some(reply_to), Some(id), Ok(req)) = (
                        props.reply_to().clone(),
                        id.clone(),
                        serde_json::from_slice::<Echo>(&delivery.data),
                    ) {
                        let body = serde_json::to_vec(&answer(req)).unwrap_or_default();
                        let reply = BasicProperties::default().with_correlation_id(id);
                        let _ = serving
                            .basic_publish(
                                "".into(),
                                reply_to,
                                BasicPublishOptions::default(),
                                &body,
                                if wire { wire::reply(reply) } else { reply },
                            )
                            .await;
                    }
                    if acks {
                        let _ = delivery.ack(BasicAckOptions::default()).await;
                    }
                });
            }
        }
    });

    let waiting: Arc<DashMap<u64, oneshot::Sender<Vec<u8>>>> = Arc::default();
    let listening = client.create_channel().await?;
    listening
        .queue_declare(
            replies.as_str().into(),
            QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut answers = listening
        .basic_consume(
            replies.as_str().into(),
            "client".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    let reply_task = tokio::spawn({
        let waiting = waiting.clone();
        async move {
            while let Some(Ok(delivery)) = answers.next().await {
                let id = delivery
                    .properties
                    .correlation_id()
                    .as_ref()
                    .and_then(|id| match wire {
                        true => u64::from_str_radix(id.as_str(), 16).ok(),
                        false => id.as_str().parse::<u64>().ok(),
                    });
                if let Some((_, tx)) = id.and_then(|id| waiting.remove(&id)) {
                    let _ = tx.send(delivery.data);
                }
            }
        }
    });
    let sending = client.create_channel().await?;
    if acks {
        sending
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
    }
    let next = Arc::new(AtomicU64::new(0));
    let sample = closed_loop(level, duration, {
        let (requests, replies) = (
            ShortString::from(requests.clone()),
            ShortString::from(replies.clone()),
        );
        move |i| {
            let (sending, waiting, requests, replies, next) = (
                sending.clone(),
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
                let confirm = sending
                    .basic_publish(
                        "".into(),
                        requests,
                        BasicPublishOptions {
                            mandatory: acks,
                            ..Default::default()
                        },
                        &body,
                        match wire {
                            true => wire::request(id, replies),
                            false => BasicProperties::default()
                                .with_correlation_id(id.to_string().into())
                                .with_reply_to(replies)
                                .with_content_type("application/json".into()),
                        },
                    )
                    .await?;
                if acks {
                    confirm.await?;
                }
                serde_json::from_slice::<EchoReply>(&rx.await?)?;
                Ok(())
            }
        }
    })
    .await;
    server_task.abort();
    reply_task.abort();
    let cleanup = server.create_channel().await?;
    for queue in [&requests, &replies] {
        let _ = cleanup
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = server.close(200, "done".into()).await;
    let _ = client.close(200, "done".into()).await;
    sample
}
