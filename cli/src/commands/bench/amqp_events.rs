//! `amqp-events`: events delivered per second from concurrent publishers to
//! 1 or 3 subscribing nodes over RabbitMQ, against raw `amqprs` publishing
//! to a topic exchange with one consumed queue per subscriber. Neither side
//! confirms publishes; both acknowledge every delivery, in batches (one
//! `multiple` ack for the deliveries already arrived).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use amqprs::BasicProperties;
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments,
    ConsumerMessage, ExchangeDeclareArguments, ExchangeDeleteArguments, ExchangeType,
    QueueBindArguments, QueueDeclareArguments, QueueDeleteArguments,
};
use cloudbus::Bus;

use super::measure::{Sample, closed_loop};
use super::messages::Tick;
use super::raw_amqp;

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
    let mut channels = Vec::new();
    let mut queues = Vec::new();
    for s in 0..subscribers {
        let conn = raw_amqp::connect(url).await?;
        let channel = raw_amqp::channel(&conn).await?;
        channel
            .exchange_declare(ExchangeDeclareArguments::of_type(
                &exchange,
                ExchangeType::Topic,
            ))
            .await?;
        let queue = format!("{name}.raw.events.{s}");
        channel
            .queue_declare(QueueDeclareArguments::new(&queue))
            .await?;
        channel
            .queue_bind(QueueBindArguments::new(&queue, &exchange, "bench.*"))
            .await?;
        channel
            .basic_qos(BasicQosArguments::new(0, 1024, false))
            .await?;
        let (_, mut consumer) = channel
            .basic_consume_rx(
                BasicConsumeArguments::new(&queue, "sub")
                    .manual_ack(true)
                    .finish(),
            )
            .await?;
        let delivered = delivered.clone();
        let acking = channel.clone();
        tokio::spawn(async move {
            let count = |delivery: ConsumerMessage| {
                let ok = delivery
                    .content
                    .is_some_and(|body| serde_json::from_slice::<Tick>(&body).is_ok());
                if ok {
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
                delivery.deliver.map(|d| d.delivery_tag())
            };
            // Every delivery already here, then one ack for them all.
            while let Some(delivery) = consumer.recv().await {
                let mut last = count(delivery);
                while let Ok(delivery) = consumer.try_recv() {
                    last = count(delivery).or(last);
                }
                if let Some(tag) = last {
                    let _ = acking.basic_ack(BasicAckArguments::new(tag, true)).await;
                }
            }
        });
        queues.push(queue);
        channels.push(channel);
        connections.push(conn);
    }
    let conn = raw_amqp::connect(url).await?;
    let channel = raw_amqp::channel(&conn).await?;
    let sample = delivered_rate(&delivered, publishers, subscribers, duration, {
        let (channel, exchange) = (channel.clone(), exchange.clone());
        move |i| {
            let (channel, exchange) = (channel.clone(), exchange.clone());
            async move {
                let body = serde_json::to_vec(&Tick::new(i as u64))?;
                let props = match wire {
                    true => super::wire::event(i as u64),
                    false => {
                        let mut props = BasicProperties::default();
                        props.with_content_type("application/json");
                        props
                    }
                };
                channel
                    .basic_publish(
                        props,
                        body,
                        BasicPublishArguments::new(&exchange, "bench.Tick"),
                    )
                    .await?;
                Ok(())
            }
        }
    })
    .await;
    // Closing a channel cancels its consumer; the queues go after.
    for subscribing in channels {
        let _ = subscribing.close().await;
    }
    for queue in &queues {
        let _ = channel.queue_delete(QueueDeleteArguments::new(queue)).await;
    }
    let _ = channel
        .exchange_delete(ExchangeDeleteArguments::new(&exchange))
        .await;
    let _ = channel.close().await;
    for c in connections.into_iter().chain([conn]) {
        let _ = c.close().await;
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
