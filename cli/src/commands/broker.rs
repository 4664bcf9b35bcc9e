//! The flags every command that talks to a broker shares, and how it
//! joins the bus as an observer.

use std::time::Duration;

use anyhow::Context as _;
use cloudbus::transport::amqp::{self, AmqpConfig, AmqpTransport};
use cloudbus::{Bus, BusBuilder};

/// Where the bus is.
#[derive(clap::Args, Clone, Debug)]
pub struct BrokerArgs {
    /// The RabbitMQ URL (`amqp://` or `amqps://`), or a comma-separated list
    /// of the nodes of a RabbitMQ cluster; passwords are never printed.
    #[arg(long, env = "CLOUDBUS_AMQP_URL", default_value = amqp::DEFAULT_URL, hide_env_values = true)]
    pub amqp_url: String,
    /// The bus name: several buses can share one broker.
    #[arg(long, env = "CLOUDBUS_BUS", default_value = cloudbus::DEFAULT_BUS_NAME)]
    pub bus: String,
    /// A PEM file of CA certificates to trust for an `amqps://` broker
    /// (besides the system's); the broker's certificate is always verified.
    #[arg(long, env = "CLOUDBUS_AMQP_CA", value_name = "PEM_FILE")]
    pub amqp_ca: Option<std::path::PathBuf>,
    /// The bus's queue type: classic (one broker) or quorum (replicated
    /// across a RabbitMQ cluster); the same for every node of a bus.
    #[arg(long, env = "CLOUDBUS_QUEUE_TYPE", default_value = "classic")]
    pub queue_type: amqp::QueueType,
    /// Which broker of a list to try first: random (spreads many nodes
    /// over the cluster) or listed (the first that answers, e.g. the
    /// broker on the same host).
    #[arg(long, env = "CLOUDBUS_BROKER_ORDER", default_value = "random")]
    pub broker_order: amqp::BrokerOrder,
}

impl BrokerArgs {
    /// A bus builder connected to this broker.
    pub fn builder(&self) -> anyhow::Result<BusBuilder> {
        let mut config = AmqpConfig::new(&self.amqp_url)
            .queue_type(self.queue_type)
            .broker_order(self.broker_order);
        if let Some(path) = &self.amqp_ca {
            let pem = std::fs::read_to_string(path)
                .with_context(|| format!("reading the CA file {}", path.display()))?;
            config = config.tls_ca_pem(pem);
        }
        Ok(Bus::builder()
            .name(&self.bus)
            .transport(AmqpTransport::with_config(config)))
    }

    /// Joins the bus as an observer: it can call, publish and listen, but
    /// it owns no resources and nobody routes work to it.
    pub async fn observer(&self) -> anyhow::Result<Bus> {
        self.builder()?.observer().build().await.with_context(|| {
            format!(
                "connecting to bus {:?} at {}",
                self.bus,
                amqp::redact(&self.amqp_url)
            )
        })
    }
}

/// How long a tool waits for the members to answer its discovery request.
pub const DISCOVERY_LIMIT: Duration = Duration::from_secs(3);
/// The silence after which a tool assumes every member has answered.
pub const DISCOVERY_QUIET: Duration = Duration::from_millis(300);

/// The nodes a tool asks: the one named, or every live member once they
/// have answered the tool's discovery.
pub async fn target_nodes(bus: &Bus, node: Option<cloudbus::NodeId>) -> Vec<cloudbus::NodeId> {
    match node {
        Some(node) => vec![node],
        None => {
            let view = bus.settled_cluster(DISCOVERY_QUIET, DISCOVERY_LIMIT).await;
            view.nodes().iter().map(|n| n.node).collect()
        }
    }
}
