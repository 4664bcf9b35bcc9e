//! `cloudbus node`: a management node hosting the demo services on a broker.

use std::time::Duration;

use anyhow::Context as _;
use cloudbus::NodeId;
use cloudbus::transport::amqp;

use super::broker::BrokerArgs;

/// Flags of `cloudbus node`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The demo services to host, comma-separated (vm, host, storage, audit).
    #[arg(long, value_delimiter = ',', default_value = "vm,host,storage,audit")]
    services: Vec<String>,
    /// This node's id (32 hex digits); random when not given.
    #[arg(long)]
    node_id: Option<NodeId>,
    /// How often this node sends heartbeats, e.g. `1s` or `250ms`.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    heartbeat: Duration,
    /// How many heartbeats a node may miss before it is declared dead.
    #[arg(long, default_value_t = 3)]
    heartbeat_misses: u32,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Serve the live dashboard at http://ADDR/ (e.g. 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    http: Option<std::net::SocketAddr>,
    #[command(flatten)]
    agents: super::host_agents::AgentArgs,
}

/// Runs the node until Ctrl-C or SIGTERM, then drains and leaves.
pub async fn run(args: Args) -> anyhow::Result<()> {
    super::logging::init("info");
    let mut builder = args
        .broker
        .builder()?
        .heartbeat_interval(args.heartbeat)
        .heartbeat_misses(args.heartbeat_misses);
    if let Some(node) = args.node_id {
        builder = builder.node_id(node);
    }
    let agents = args.agents.host_agents()?;
    let url = amqp::redact(&args.broker.amqp_url);
    let bus = builder
        .build()
        .await
        .with_context(|| format!("starting a node of bus {:?} at {url}", args.broker.bus))?;
    let names: Vec<&str> = args.services.iter().map(String::as_str).collect();
    let installed = match cloudbus_demo::install(&bus, &names, &agents).await {
        Ok(installed) => installed,
        Err(error) => {
            bus.shutdown().await;
            return Err(error).context("installing the demo services");
        }
    };
    let served = async {
        if let Some(addr) = args.metrics_addr {
            let agents = installed.agents.clone();
            let bound = super::metrics::serve(bus.clone(), agents, addr).await?;
            tracing::info!(metrics = %format!("http://{bound}/metrics"), "serving metrics");
        }
        if let Some(addr) = args.http {
            // With this node's agent client: its command rates and failures.
            let agents = installed.agents.clone();
            let bound = super::dashboard::serve(bus.clone(), agents, addr).await?;
            tracing::info!(dashboard = %format!("http://{bound}/"), "serving the dashboard");
        }
        Ok::<_, anyhow::Error>(())
    };
    if let Err(error) = served.await {
        bus.shutdown().await;
        return Err(error);
    }
    tracing::info!(
        node = %bus.node_id(),
        bus = %bus.name(),
        broker = %bus.broker().unwrap_or_default(),
        services = %bus.services().join(","),
        "node started"
    );
    super::signal::stop_requested().await;
    tracing::info!(node = %bus.node_id(), "stopping: draining in-flight work");
    bus.shutdown().await;
    if let Some(auditor) = installed.auditor {
        auditor.finish().await;
    }
    tracing::info!(node = %bus.node_id(), "node stopped");
    Ok(())
}
