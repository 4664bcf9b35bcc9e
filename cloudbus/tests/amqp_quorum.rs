//! A bus on quorum queues: the same messaging, replicated queues, and a
//! node configured for the other queue type refused with a clear error.

mod broker;
mod common;

use std::time::Duration;

use broker::*;
use cloudbus::transport::amqp::{AmqpConfig, AmqpTransport, QueueType};
use cloudbus::{Bus, ErrorCode, codes};
use common::*;

async fn start(
    bus: &str,
    queue_type: QueueType,
    node: Option<cloudbus::NodeId>,
) -> Result<Bus, ErrorCode> {
    let mut builder = Bus::builder()
        .name(bus)
        .transport(AmqpTransport::with_config(
            AmqpConfig::new(url()).queue_type(queue_type),
        ));
    if let Some(node) = node {
        builder = builder.node_id(node);
    }
    builder.build().await
}

#[tokio::test]
async fn a_quorum_bus_declares_quorum_queues_and_serves_as_usual() {
    let name = unique_bus("quorum");
    let _cleanup = delete_bus_on_panic(&name);
    let (a, b) = (
        start(&name, QueueType::Quorum, None).await.unwrap(),
        start(&name, QueueType::Quorum, None).await.unwrap(),
    );
    b.register(echo_service()).await.unwrap();
    let reply = a
        .call(echo("q"))
        .node(b.node_id())
        .timeout(Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(reply.text, "q");
    let types = listing(&["list_queues", "name", "type"], &name);
    assert!(!types.is_empty());
    for row in &types {
        assert!(row.ends_with("quorum"), "{types:?}");
    }
    // The node queues, the service queue and both event queues.
    assert!(
        types
            .iter()
            .any(|row| row.starts_with(&format!("{name}.message.echo."))),
        "{types:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
    delete_bus(&name).await;
}

#[tokio::test]
async fn a_node_whose_queues_exist_with_the_other_type_is_refused_naming_both() {
    for (first, second) in [
        (QueueType::Quorum, QueueType::Classic),
        (QueueType::Classic, QueueType::Quorum),
    ] {
        let name = unique_bus("queue-type");
        let _cleanup = delete_bus_on_panic(&name);
        let node = start(&name, first, None).await.unwrap();
        // The same node id again (a node restarted with another setting)
        // meets its queues, declared with the other type.
        let err = start(&name, second, Some(node.node_id()))
            .await
            .unwrap_err();
        assert!(err.is(codes::INVALID_ARGUMENT), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("exist as {first} queues"))
                && text.contains(&format!("configured for {second} queues")),
            "{text}"
        );
        assert!(node.broker_connected(), "the running node goes on");
        node.shutdown().await;
        delete_bus(&name).await;
    }
}
