//! `amqp-rpc`: request/reply between two nodes over RabbitMQ against a raw
//! `lapin` client/server pair on the same broker: a static request queue,
//! a static reply queue, correlation ids. Both sides publish requests with
//! publisher confirms and `mandatory` (what the bus does to fail fast on an
//! unknown service), replies without; both acknowledge every message.

use std::sync::Arc;
use std::time::Duration;

use cloudbus::{Bus, Service};
use dashmap::DashMap;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use tokio::sync::oneshot;

use super::measure::{Sample, closed_loop};
use super::messages::{Echo, EchoReply, answer};

pub async fn run(
    url: &str,
    name: &str,
    level: usize,
    duration: Duration,
) -> anyhow::Result<(Sample, Sample)> {
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
    let baseline = raw(url, name, level, duration).await;
    Ok((sample?, baseline?))
}

async fn raw(url: &str, name: &str, level: usize, duration: Duration) -> anyhow::Result<Sample> {
    let requests = format!("{name}.raw.requests");
    let replies = format!("{name}.raw.replies");
    let server = Connection::connect(url, ConnectionProperties::default()).await?;
    let client = Connection::connect(url, ConnectionProperties::default()).await?;

    let serving = server.create_channel().await?;
    serving
        .basic_qos(level.clamp(64, 65_535) as u16, BasicQosOptions::default())
        .await?;
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
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let answering = server.create_channel().await?;
    let server_task = tokio::spawn(async move {
        while let Some(Ok(delivery)) = incoming.next().await {
            let props = delivery.properties.clone();
            if let (Some(reply_to), Some(id), Ok(req)) = (
                props.reply_to().clone(),
                props.correlation_id().clone(),
                serde_json::from_slice::<Echo>(&delivery.data),
            ) {
                let body = serde_json::to_vec(&answer(req)).unwrap_or_default();
                let _ = answering
                    .basic_publish(
                        "".into(),
                        reply_to.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default().with_correlation_id(id),
                    )
                    .await;
            }
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
    });

    let waiting: Arc<DashMap<u64, oneshot::Sender<()>>> = Arc::default();
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
            BasicConsumeOptions::default(),
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
                    .and_then(|id| id.as_str().parse::<u64>().ok());
                if serde_json::from_slice::<EchoReply>(&delivery.data).is_ok()
                    && let Some((_, tx)) = id.and_then(|id| waiting.remove(&id))
                {
                    let _ = tx.send(());
                }
                let _ = delivery.ack(BasicAckOptions::default()).await;
            }
        }
    });
    let sending = client.create_channel().await?;
    sending
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sample = closed_loop(level, duration, {
        let (sending, waiting, requests, replies) = (
            sending.clone(),
            waiting.clone(),
            requests.clone(),
            replies.clone(),
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
                let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (tx, rx) = oneshot::channel();
                waiting.insert(id, tx);
                let body = serde_json::to_vec(&Echo::new(i as u64, 1))?;
                sending
                    .basic_publish(
                        "".into(),
                        requests.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &body,
                        BasicProperties::default()
                            .with_correlation_id(id.to_string().into())
                            .with_reply_to(replies.as_str().into())
                            .with_content_type("application/json".into()),
                    )
                    .await?
                    .await?;
                rx.await?;
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
