//! The [`Nodes`] factory for the shared scenarios on RabbitMQ: every test
//! gets a bus name of its own and `finish` deletes what the bus declared.
//! Needs `mod broker; mod proxy; mod scenarios;` next to it.
#![allow(dead_code)]

use std::sync::Mutex;

use cloudbus::{Bus, BusBuilder, NodeId};

use crate::broker::{
    broker_addr, delete_bus, delete_bus_on_panic, listing, queue_names, unique_bus, url,
};
use crate::proxy::Proxy;
use crate::scenarios::{Mortal, Nodes, bus_name, shut_down};

/// Nodes of a bus of their own on the test broker.
pub struct Rabbit {
    bus: String,
    started: Mutex<Vec<Bus>>,
}

impl Rabbit {
    /// A new bus for the test named `test`.
    pub fn new(test: &str) -> Self {
        Rabbit {
            bus: unique_bus(&bus_name(test)),
            started: Mutex::default(),
        }
    }
}

/// Runs a `rabbitmqctl` query off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

impl Nodes for Rabbit {
    fn bus(&self) -> &str {
        &self.bus
    }

    fn builder(&self) -> BusBuilder {
        Bus::builder().name(&self.bus).amqp(url())
    }

    async fn start(&self, builder: BusBuilder) -> Bus {
        let bus = builder
            .build()
            .await
            .unwrap_or_else(|e| panic!("RabbitMQ must be reachable at {}: {e}", url()));
        self.started.lock().unwrap().push(bus.clone());
        bus
    }

    /// Reaches the broker through a proxy that `kill` cuts for good.
    async fn mortal(&self, configure: impl FnOnce(BusBuilder) -> BusBuilder) -> Mortal {
        let proxy = Proxy::start(broker_addr()).await;
        let through_proxy = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port());
        let builder = configure(Bus::builder().name(&self.bus).amqp(through_proxy));
        let bus = builder.build().await.unwrap();
        Mortal::new(bus, move || proxy.cut())
    }

    async fn queue_names(&self) -> Vec<String> {
        let bus = self.bus.clone();
        blocking(move || queue_names(&bus)).await
    }

    async fn event_bindings(&self, node: NodeId) -> Vec<String> {
        let bus = self.bus.clone();
        let rows = blocking(move || {
            listing(
                &[
                    "list_bindings",
                    "source_name",
                    "destination_name",
                    "routing_key",
                ],
                &bus,
            )
        })
        .await;
        let prefix = format!("{0}.BROADCAST\t{0}.event.{node}\t", self.bus);
        let mut patterns: Vec<String> = rows
            .iter()
            .filter_map(|row| row.strip_prefix(&prefix).map(str::to_string))
            .collect();
        patterns.sort();
        patterns
    }

    async fn finish(self) {
        shut_down(&self.started).await;
        delete_bus(&self.bus).await;
    }
}

/// A scenario that panics never reaches `finish`: its bus is deleted here.
impl Drop for Rabbit {
    fn drop(&mut self) {
        drop(delete_bus_on_panic(&self.bus));
    }
}
