//! Membership, the hash ring and routing by resource, on several nodes of
//! the in-memory broker. The scenarios are shared with RabbitMQ
//! (`amqp_cluster.rs`, `scenarios/cluster.rs`); here is only what the
//! embedded bus does alone.

mod common;
mod scenarios;

use cloudbus::Bus;
use common::*;

scenarios::cluster::tests!(scenarios::Memory::new);

#[tokio::test]
async fn the_embedded_bus_owns_every_resource_itself() {
    let bus = Bus::embedded();
    bus.register(echo_service()).await.unwrap();
    assert_eq!(bus.cluster().len(), 1);
    assert_eq!(bus.owner("vm-1").unwrap(), bus.node_id());
    let reply = bus.call(echo("x")).owner_of("vm-1").await.unwrap();
    assert_eq!(reply.node, bus.node_id().to_string());
    assert_eq!(bus.cluster().nodes()[0].services, ["cloudbus", "echo"]);
}
