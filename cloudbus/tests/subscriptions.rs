//! What a subscription does when its buffer is full, for each policy.

use std::time::Duration;

use cloudbus::Overflow;
use cloudbus::prelude::*;
use cloudbus::transport::memory::MemoryBroker;
use futures::FutureExt;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, Message)]
#[message(type = "tick.Tick", event)]
struct Tick {
    n: u32,
}

async fn small_bus(capacity: usize) -> Bus {
    Bus::builder()
        .subscription_capacity(capacity)
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn drop_newest_keeps_the_first_events_and_counts_the_rest() {
    let bus = small_bus(2).await;
    let mut ticks = bus.subscribe::<Tick>().await.unwrap();
    for n in 1..=5 {
        bus.publish(Tick { n }).await.unwrap();
    }
    assert_eq!(ticks.recv().await.unwrap().n, 1);
    assert_eq!(ticks.recv().await.unwrap().n, 2);
    assert_eq!(ticks.lagged(), 3);
    assert_eq!(bus.counters().events_dropped.get(), 3);
    bus.shutdown().await;
}

#[tokio::test]
async fn drop_oldest_keeps_the_latest_events_and_counts_the_rest() {
    let bus = small_bus(2).await;
    let mut ticks = bus
        .subscribe_with::<Tick>(Overflow::DropOldest)
        .await
        .unwrap();
    let mut raw = bus
        .subscribe_pattern_with("tick.#", Overflow::DropOldest)
        .await
        .unwrap();
    for n in 1..=5 {
        bus.publish(Tick { n }).await.unwrap();
    }
    assert_eq!(ticks.recv().await.unwrap().n, 4);
    assert_eq!(ticks.recv().await.unwrap().n, 5);
    assert_eq!(ticks.lagged(), 3);
    assert_eq!(raw.recv().await.unwrap().decode::<Tick>().unwrap().n, 4);
    assert_eq!(raw.lagged(), 3);
    bus.shutdown().await;
}

#[tokio::test]
async fn backpressure_holds_a_local_publisher_and_loses_nothing() {
    let bus = small_bus(1).await;
    let mut ticks = bus
        .subscribe_with::<Tick>(Overflow::Backpressure)
        .await
        .unwrap();
    bus.publish(Tick { n: 1 }).await.unwrap();
    // Full: the next publish waits for the subscriber.
    let mut second = Box::pin(bus.publish(Tick { n: 2 }));
    assert!((&mut second).now_or_never().is_none());
    assert_eq!(ticks.recv().await.unwrap().n, 1);
    second.await.unwrap();
    assert_eq!(ticks.recv().await.unwrap().n, 2);
    assert_eq!(ticks.lagged(), 0);
    // A subscriber that goes away releases a publisher waiting on it.
    bus.publish(Tick { n: 3 }).await.unwrap();
    let waiting = tokio::spawn({
        let bus = bus.clone();
        async move { bus.publish(Tick { n: 4 }).await }
    });
    drop(ticks);
    waiting.await.unwrap().unwrap();
    assert_eq!(bus.counters().events_dropped.get(), 0);
    bus.shutdown().await;
}

#[tokio::test]
async fn backpressure_over_a_broker_leaves_events_queued_there_not_lost() {
    let broker = MemoryBroker::new();
    let node = || async {
        Bus::builder()
            .name("subs-backpressure")
            .transport(broker.transport())
            .subscription_capacity(1)
            .build()
            .await
            .unwrap()
    };
    let (publisher, subscriber) = (node().await, node().await);
    let mut ticks = subscriber
        .subscribe_with::<Tick>(Overflow::Backpressure)
        .await
        .unwrap();
    for n in 0..200 {
        publisher.publish(Tick { n }).await.unwrap();
    }
    // Read slowly: every one arrives, in order, none dropped.
    for n in 0..200 {
        let tick = tokio::time::timeout(Duration::from_secs(10), ticks.recv())
            .await
            .expect("the next event arrives")
            .unwrap();
        assert_eq!(tick.n, n);
        tokio::task::yield_now().await;
    }
    assert_eq!(ticks.lagged(), 0);
    assert_eq!(subscriber.counters().events_dropped.get(), 0);
    publisher.shutdown().await;
    subscriber.shutdown().await;
}
