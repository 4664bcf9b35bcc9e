//! `amqp-events`: events delivered per second from concurrent publishers to
//! 1 or 3 subscribing nodes over RabbitMQ, against raw `lapin` publishing
//! to a topic exchange with one consumed queue per subscriber. Neither side
//! confirms publishes; both acknowledge every delivery, in batches (one
//! `multiple` ack for the deliveries already arrived).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cloudbus::Bus;
use futures::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};

use super::measure::{Sample, closed_loop};
use super::messages::Tick;

/// Delivered events per second (summed over subscribers) for the bus, the
/// baseline, and the baseline carrying the wire protocol's properties;
/// latencies are those of the publish calls.
pub async fn run(
    url: &str,
    name: &str,
    publishers: usize,
    subscribers: usize,
    duration: Duration,
) -> anyhow::Result<(Sample, Sample, Sample)> {
    let bus = bus_side(url, name, publishers, subscribers, duration).await?;
    let raw = raw_side(url, name, publishers, subscribers, duration, false).await?;
    let wire = raw_side(url, name, publishers, subscribers, duration, true).await?;
    Ok((bus, raw, wire))
}

async fn bus_side(
    url: &str,
    name: &str,
    publishers: usize,
    subscribers: usize,
    duration: Duration,
) -> anyhow::Result<Sample> {
    let delivered = Arc::new(AtomicU64::new(0));
    let mut nodes = Vec::new();
    for _ in 0..subscribers {
        let node = Bus::builder().name(name).amqp(url).build().await?;
        let mut ticks = node.subscribe::<Tick>().await?;
        let delivered = delivered.clone();
        tokio::spawn(async move {
            while ticks.recv().await.is_some() {
                delivered.fetch_add(1, Ordering::Relaxed);
            }
        });
        nodes.push(node);
    }
    let publisher = Bus::builder().name(name).amqp(url).build().await?;
    let sample = delivered_rate(&delivered, publishers, subscribers, duration, {
        let publisher = publisher.clone();
        move |i| {
            let publisher = publisher.clone();
            async move {
                publisher.publish(Tick::new(i as u64)).await?;
                Ok(())
            }
        }
    })
    .await;
    publisher.shutdown().await;
    for node in nodes {
        node.shutdown().await;
    }
    sample
}

async fn raw_side(
    url: &str,
    name: &str,
    publishers: usize,
    subscribers: usize,
    duration: Duration,
    wire: bool,
) -> anyhow::Result<Sample> {
    let exchange = format!("{name}.raw.events");
    let delivered = Arc::new(AtomicU64::new(0));
    let mut connections = Vec::new();
    let mut queues = Vec::new();
    for s in 0..subscribers {
        let conn = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let queue = format!("{name}.raw.events.{s}");
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "bench.*".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channel.basic_qos(1024, BasicQosOptions::default()).await?;
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "sub".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let delivered = delivered.clone();
        let acking = channel.clone();
        tokio::spawn(async move {
            let count = |delivery: &lapin::message::Delivery| {
                if serde_json::from_slice::<Tick>(&delivery.data).is_ok() {
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
                delivery.delivery_tag
            };
            // Every delivery already here, then one ack for them all.
            while let Some(Ok(delivery)) = consumer.next().await {
                let mut last = count(&delivery);
                while let Some(Some(Ok(delivery))) = consumer.next().now_or_never() {
                    last = count(&delivery);
                }
                let _ = acking
                    .basic_ack(last, BasicAckOptions { multiple: true })
                    .await;
            }
        });
        queues.push(queue);
        connections.push(conn);
    }
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let sample = delivered_rate(&delivered, publishers, subscribers, duration, {
        let (channel, exchange) = (channel.clone(), exchange.clone());
        move |i| {
            let (channel, exchange) = (channel.clone(), exchange.clone());
            async move {
                let body = serde_json::to_vec(&Tick::new(i as u64))?;
                channel
                    .basic_publish(
                        exchange.as_str().into(),
                        "bench.Tick".into(),
                        BasicPublishOptions::default(),
                        &body,
                        match wire {
                            true => super::wire::event(i as u64),
                            false => BasicProperties::default()
                                .with_content_type("application/json".into()),
                        },
                    )
                    .await?;
                Ok(())
            }
        }
    })
    .await;
    for queue in &queues {
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = channel
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    for c in connections.iter().chain([&conn]) {
        let _ = c.close(200, "done".into()).await;
    }
    sample
}

/// Publishes for `duration` and reports deliveries per second over the
/// same window, instead of publishes per second.
async fn delivered_rate<F, Fut>(
    delivered: &AtomicU64,
    publishers: usize,
    subscribers: usize,
    duration: Duration,
    publish: F,
) -> anyhow::Result<Sample>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let published = Arc::new(AtomicU64::new(0));
    let counted = {
        let published = published.clone();
        move |i| {
            let (publish, published) = (publish.clone(), published.clone());
            async move {
                publish(i).await?;
                published.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    };
    let before = delivered.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut sample = closed_loop(publishers, duration, counted).await?;
    // Count the events still on their way too: every copy delivered, or
    // until deliveries stop for a second (a full subscriber drops events).
    let expected = published.load(Ordering::Relaxed) * subscribers as u64;
    let (mut last, mut last_change) = (before, Instant::now());
    loop {
        let now = delivered.load(Ordering::Relaxed);
        if now != last {
            (last, last_change) = (now, Instant::now());
        }
        if now - before >= expected || last_change.elapsed() > Duration::from_secs(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = last_change.duration_since(started).as_secs_f64();
    sample.ops_per_sec = if last > before {
        (last - before) as f64 / elapsed
    } else {
        0.0
    };
    Ok(sample)
}
