//! Whole-bus scenarios written once and run on every transport: the
//! in-memory broker (`memory_broker.rs`, `parity.rs`, `cluster.rs`) and
//! RabbitMQ (`amqp.rs`, `amqp_parity.rs`, `amqp_cluster.rs`), so the two
//! cannot drift apart.
//!
//! A scenario is `pub async fn name(nodes: &impl Nodes)`: it asks the
//! factory for the nodes it needs and never names a transport. Each group
//! (`messaging`, `parity`, `cluster`) lists its scenarios once, in a macro
//! that a test file expands with its factory, so a scenario added to the
//! list runs on both transports.
#![allow(dead_code)]

pub mod cluster;
pub mod messaging;
pub mod parity;

use std::sync::Mutex;

use cloudbus::transport::memory::MemoryBroker;
use cloudbus::{Bus, BusBuilder, NodeId};

use crate::common::within;

/// Makes the nodes of one test's bus on one transport.
#[allow(async_fn_in_trait)]
pub trait Nodes {
    /// The name of the bus every node joins.
    fn bus(&self) -> &str;

    /// A builder for one more node of the bus, with the transport's
    /// defaults; the scenario adds its own settings, then [`start`](Self::start)s it.
    fn builder(&self) -> BusBuilder;

    /// Builds the node; [`finish`](Self::finish) shuts it down.
    async fn start(&self, builder: BusBuilder) -> Bus;

    /// A node with the defaults.
    async fn node(&self) -> Bus {
        self.start(self.builder()).await
    }

    /// A node that [`Mortal::kill`] cuts off as a crash or a partition
    /// would: nothing reaches it any more and nothing it sends arrives.
    async fn mortal(&self, configure: impl FnOnce(BusBuilder) -> BusBuilder) -> Mortal;

    /// The bus's queues on the broker, sorted.
    async fn queue_names(&self) -> Vec<String>;

    /// The patterns `node`'s event queue is bound with, sorted.
    async fn event_bindings(&self, node: NodeId) -> Vec<String>;

    /// Shuts down every node [`start`](Self::start) built and removes what
    /// the bus left on the broker.
    async fn finish(self);
}

/// A node that a test can kill; it is never shut down.
pub struct Mortal {
    pub bus: Bus,
    kill: Box<dyn FnOnce() + Send>,
}

impl Mortal {
    pub fn new(bus: Bus, kill: impl FnOnce() + Send + 'static) -> Self {
        Mortal {
            bus,
            kill: Box::new(kill),
        }
    }

    pub fn kill(self) {
        (self.kill)()
    }
}

/// Shuts the nodes down, each within [`crate::common::WAIT`]: a scenario
/// that leaves a handler stuck fails here instead of hanging.
pub async fn shut_down(nodes: &Mutex<Vec<Bus>>) {
    let nodes = std::mem::take(&mut *nodes.lock().unwrap());
    for bus in nodes {
        within("a node's shutdown", bus.shutdown()).await;
    }
}

/// A bus name for the test named `test`: bus names have at most 64
/// characters, with room left for a unique suffix.
pub fn bus_name(test: &str) -> String {
    test.chars().take(40).collect()
}

/// Nodes on a [`MemoryBroker`] of their own.
pub struct Memory {
    bus: String,
    broker: MemoryBroker,
    started: Mutex<Vec<Bus>>,
}

impl Memory {
    /// A new broker for the test named `test`.
    pub fn new(test: &str) -> Self {
        Memory {
            bus: bus_name(test),
            broker: MemoryBroker::new(),
            started: Mutex::default(),
        }
    }

    /// The broker, for the tests of its own inspection API.
    pub fn broker(&self) -> &MemoryBroker {
        &self.broker
    }
}

impl Nodes for Memory {
    fn bus(&self) -> &str {
        &self.bus
    }

    fn builder(&self) -> BusBuilder {
        Bus::builder()
            .name(&self.bus)
            .transport(self.broker.transport())
    }

    async fn start(&self, builder: BusBuilder) -> Bus {
        let bus = builder.build().await.unwrap();
        self.started.lock().unwrap().push(bus.clone());
        bus
    }

    async fn mortal(&self, configure: impl FnOnce(BusBuilder) -> BusBuilder) -> Mortal {
        let bus = configure(self.builder()).build().await.unwrap();
        let (broker, name, node) = (self.broker.clone(), self.bus.clone(), bus.node_id());
        Mortal::new(bus, move || broker.disconnect(&name, node))
    }

    async fn queue_names(&self) -> Vec<String> {
        self.broker.queue_names(&self.bus)
    }

    async fn event_bindings(&self, node: NodeId) -> Vec<String> {
        self.broker.event_bindings(&self.bus, node)
    }

    async fn finish(self) {
        shut_down(&self.started).await;
    }
}

/// Defines one `#[tokio::test]` per scenario of a group (with the
/// attributes written before its name), each with nodes from
/// `$nodes(test_name)`, which it finishes once the scenario is done.
macro_rules! tests {
    ($group:ident, $nodes:expr; $($(#[$attr:meta])* $scenario:ident),* $(,)?) => {
        $(
            #[tokio::test]
            $(#[$attr])*
            async fn $scenario() {
                let nodes = $nodes(stringify!($scenario));
                $crate::scenarios::$group::$scenario(&nodes).await;
                $crate::scenarios::Nodes::finish(nodes).await;
            }
        )*
    };
}
pub(crate) use tests;
