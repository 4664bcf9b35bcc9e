//! Consumers acknowledge in batches (`multiple`), yet nothing is held
//! back: under load the broker never stalls on a missing ack (a prefetch
//! of 1 forces an ack per delivery), and once a node is idle every
//! message it took is acknowledged. The node queue, which brings the
//! replies, is consumed without acks: nothing of it is left unacked either.

mod broker;
mod common;

use std::time::Duration;

use broker::*;
use cloudbus::{NodeId, Service};
use common::*;

const WAIT: Duration = Duration::from_secs(30);

fn answering(name: &'static str, concurrency: usize) -> Service {
    Service::builder(name, ())
        .concurrency(concurrency)
        .on_request(|w: Work, _| async move { Ok(Done { n: w.n }) })
        .build()
}

/// Waits until `queue` holds no unacknowledged message.
async fn until_all_acked(queue: String) {
    until_queue_shows(
        &queue,
        "messages_unacknowledged",
        "0",
        WAIT,
        "still holds unacknowledged messages",
    )
    .await;
}

#[tokio::test]
async fn batched_acks_never_stall_a_consumer_and_leave_nothing_unacked() {
    let name = unique_bus("acks");
    let _cleanup = delete_bus_on_panic(&name);
    let (client, server) = (node(&name).await, node(&name).await);
    // Prefetch 1: every delivery must be acked before the next arrives.
    server.register(answering("narrow", 1)).await.unwrap();
    server.register(answering("wide", 64)).await.unwrap();
    let to: NodeId = server.node_id();

    for service in ["narrow", "wide"] {
        let calls = (0..300).map(|n| Work {
            key: service.into(),
            n,
        });
        let replies = tokio::time::timeout(
            WAIT,
            futures::future::join_all(calls.map(|w| {
                let client = client.clone();
                async move { client.call(w).service(service).node(to).timeout(WAIT).await }
            })),
        )
        .await
        .unwrap_or_else(|_| panic!("{service}: the consumer stalled"));
        for (n, reply) in replies.into_iter().enumerate() {
            assert_eq!(reply.unwrap().n, n as u32, "{service}");
        }
        until_all_acked(format!("{name}.message.{service}.{to}")).await;
    }
    // The node queue that brought the 600 replies holds nothing unacked,
    // since it is the one queue consumed without acks.
    let node_queue = format!("{name}.message.cloudbus.{}", client.node_id());
    until_all_acked(node_queue.clone()).await;
    let consumers = tokio::task::spawn_blocking({
        let name = name.clone();
        move || listing(&["list_consumers", "queue_name", "ack_required"], &name)
    })
    .await
    .unwrap();
    for queue in [node_queue, format!("{name}.message.wide.{to}")] {
        let acked = !queue.contains(".message.cloudbus.");
        assert!(
            consumers.contains(&format!("{queue}\t{acked}")),
            "{queue} should be consumed {}: {consumers:?}",
            if acked { "with acks" } else { "without acks" }
        );
    }

    client.shutdown().await;
    server.shutdown().await;
    delete_bus(&name).await;
}
