//! Prometheus metrics of a node, served at `http://<addr>/metrics`: the
//! library's [`BusMetrics`] and, on a node that drives host agents, its
//! agent client's counters. Everything is read when scraped, so the message
//! path pays nothing for it.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use cloudbus::Bus;
use cloudbus::metrics::{BusMetrics, counter, gauge};
use cloudbus_agent::AgentClient;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Listens on `addr` and answers `GET /metrics` until the process ends;
/// with the node's agent client, its counters too.
pub async fn serve(
    bus: Bus,
    agents: Option<AgentClient>,
    addr: SocketAddr,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for metrics on {addr}"))?;
    let bound = listener.local_addr()?;
    let mut registry = Registry::default();
    registry.register_collector(Box::new(BusMetrics::new(&bus)));
    if let Some(agents) = agents {
        registry.register_collector(Box::new(AgentMetrics(agents)));
    }
    let registry = Arc::new(registry);
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move {
                let mut text = String::new();
                // Writing to a String cannot fail.
                let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
                ([(CONTENT_TYPE, cloudbus::metrics::CONTENT_TYPE)], text)
            }
        }),
    );
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "metrics listener stopped");
        }
    });
    Ok(bound)
}

/// The counters of the client that drives this node's host agents.
struct AgentMetrics(AgentClient);

impl fmt::Debug for AgentMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentMetrics")
    }
}

impl Collector for AgentMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let stats = self.0.stats();
        for (name, help, value) in [
            (
                "cloudbus_agent_commands",
                "Commands sent to host agents.",
                &stats.sent,
            ),
            (
                "cloudbus_agent_failures",
                "Commands that failed.",
                &stats.failed,
            ),
            (
                "cloudbus_agent_timeouts",
                "Commands that timed out.",
                &stats.timeouts,
            ),
            (
                "cloudbus_agent_unreachable",
                "Commands to agents that could not be reached.",
                &stats.unreachable,
            ),
            (
                "cloudbus_agent_callbacks",
                "Callbacks received.",
                &stats.callbacks,
            ),
            (
                "cloudbus_agent_late_callbacks",
                "Callbacks for commands nobody waited for any more.",
                &stats.late_callbacks,
            ),
        ] {
            counter(&mut encoder, name, help, value.get())?;
        }
        gauge(
            &mut encoder,
            "cloudbus_agent_awaiting_callbacks",
            "Accepted commands whose callback has not come yet.",
            self.0.awaiting_callbacks() as i64,
        )
    }
}
