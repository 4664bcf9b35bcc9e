//! ZStack CloudBus parity: cancel, forward, unregister at run time, task
//! context propagation and stepping replies. The scenarios between nodes
//! are shared with RabbitMQ (`amqp_parity.rs`, `scenarios/parity.rs`) and
//! run here on the in-memory broker; the same cancel and unregister steps
//! also run on the embedded bus, caller and server being one bus.

mod common;
mod scenarios;

use std::sync::Arc;

use cloudbus::{Bus, ErrorCode, Service};
use common::*;
use futures::StreamExt;
use scenarios::parity::{Entry, cancel_between, unregister_in_flight_between};
use tokio::sync::Notify;

scenarios::parity::tests!(scenarios::Memory::new);

#[tokio::test]
async fn on_the_embedded_bus_a_cancelled_call_ends_at_once_and_its_late_reply_is_dropped() {
    let bus = Bus::embedded();
    cancel_between(&bus, &bus).await;
}

#[tokio::test]
async fn on_the_embedded_bus_a_forward_stays_in_process() {
    let bus = Bus::embedded();
    bus.register(echo_service()).await.unwrap();
    bus.register(Service::new("api", Entry)).await.unwrap();
    let reply = bus
        .call(Echo { text: "v1".into() })
        .service("api")
        .context("request-id", "local")
        .await
        .unwrap();
    assert_eq!(reply.text, "v1|local");
    assert_eq!(reply.node, bus.node_id().to_string());
}

#[tokio::test]
async fn on_the_embedded_bus_a_service_unregistered_while_busy_finishes_its_work_and_can_come_back()
{
    let bus = Bus::embedded();
    unregister_in_flight_between(&bus, &bus).await;
}

#[tokio::test]
async fn replies_can_be_taken_one_by_one_as_they_arrive() {
    let bus = Bus::embedded();
    let release = Arc::new(Notify::new());
    bus.register(
        Service::builder("work", ())
            .on_request({
                let release = release.clone();
                move |w: Work, _| {
                    let release = release.clone();
                    async move {
                        // Request 0 waits; the others answer at once.
                        if w.n == 0 {
                            release.notified().await;
                        }
                        if w.n == 3 {
                            return Err(ErrorCode::new("steps.BAD", "three"));
                        }
                        Ok(Done { n: w.n })
                    }
                }
            })
            .build(),
    )
    .await
    .unwrap();
    let requests = (0..5).map(|n| Work {
        key: n.to_string(),
        n,
    });
    let mut stream = Box::pin(bus.call_each(requests, 5));
    let mut seen = Vec::new();
    for _ in 0..4 {
        let (i, outcome) = stream.next().await.unwrap();
        seen.push(i);
        match i {
            3 => assert_eq!(outcome.unwrap_err().code(), "steps.BAD"),
            _ => assert_eq!(outcome.unwrap().n, i as u32),
        }
    }
    assert!(!seen.contains(&0), "the slow one comes last: {seen:?}");
    release.notify_one();
    let (i, outcome) = stream.next().await.unwrap();
    assert_eq!((i, outcome.unwrap().n), (0, 0));
    assert!(stream.next().await.is_none());
}
