//! Prometheus metrics of a node, served at `http://<addr>/metrics`. Values
//! are read from the bus when scraped (statistics, counters, cluster), so
//! the message path pays nothing for them.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use cloudbus::Bus;
use cloudbus_agent::AgentClient;
use metrics::{counter, gauge, with_local_recorder};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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
    let recorder = Arc::new(PrometheusBuilder::new().build_recorder());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (bus, agents, recorder) = (bus.clone(), agents.clone(), recorder.clone());
            tokio::spawn(async move {
                if let Err(error) = answer(stream, &bus, agents.as_ref(), &recorder).await {
                    tracing::debug!(%error, "metrics request failed");
                }
            });
        }
    });
    Ok(bound)
}

async fn answer(
    mut stream: TcpStream,
    bus: &Bus,
    agents: Option<&AgentClient>,
    recorder: &PrometheusRecorder,
) -> std::io::Result<()> {
    // Only the request line matters; a scrape's request is small.
    let mut head = [0u8; 2048];
    let n = stream.read(&mut head).await?;
    let request = String::from_utf8_lossy(&head[..n]);
    let (status, body) = if request.starts_with("GET /metrics") {
        sample(bus, agents, recorder);
        let mut body = recorder.handle().render();
        body.push_str(&histograms(bus));
        ("200 OK", body)
    } else {
        ("404 Not Found", "try /metrics\n".to_string())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Handling time per message type as Prometheus histograms (the recorder
/// only sees values, not the bus's own buckets, so these are rendered here).
fn histograms(bus: &Bus) -> String {
    let mut out = String::from(
        "# HELP cloudbus_handling_seconds Time to handle a message, by type.\n\
         # TYPE cloudbus_handling_seconds histogram\n",
    );
    for t in bus.statistics() {
        let labels = format!("type=\"{}\",service=\"{}\"", t.type_name, t.service);
        let mut cumulative = 0;
        for (i, n) in t.histogram.iter().enumerate() {
            cumulative += n;
            let le = cloudbus::HISTOGRAM_BOUNDS_US
                .get(i)
                .map_or("+Inf".to_string(), |us| (*us as f64 / 1e6).to_string());
            out.push_str(&format!(
                "cloudbus_handling_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}\n"
            ));
        }
        out.push_str(&format!(
            "cloudbus_handling_seconds_sum{{{labels}}} {}\ncloudbus_handling_seconds_count{{{labels}}} {}\n",
            t.total_us as f64 / 1e6,
            t.count
        ));
    }
    out
}

/// Copies the bus's (and the agent client's) numbers into the recorder.
fn sample(bus: &Bus, agents: Option<&AgentClient>, recorder: &PrometheusRecorder) {
    with_local_recorder(recorder, || {
        for t in bus.statistics() {
            let labels = [
                ("type", t.type_name.clone()),
                ("service", t.service.clone()),
            ];
            for (outcome, n) in [("ok", t.count - t.errors), ("error", t.errors)] {
                let labels = [
                    ("type", t.type_name.clone()),
                    ("service", t.service.clone()),
                    ("outcome", outcome.to_string()),
                ];
                counter!("cloudbus_messages_handled_total", &labels).absolute(n);
            }
            gauge!("cloudbus_handling_seconds_avg", &labels).set(t.avg_us as f64 / 1e6);
            gauge!("cloudbus_handling_seconds_max", &labels).set(t.max_us as f64 / 1e6);
        }
        let stats = bus.stats();
        for (name, value) in [
            ("cloudbus_late_replies_total", stats.late_replies.get()),
            ("cloudbus_expired_total", stats.expired.get()),
            ("cloudbus_malformed_total", stats.malformed.get()),
            ("cloudbus_rejected_total", stats.rejected.get()),
            ("cloudbus_message_errors_total", stats.message_errors.get()),
            ("cloudbus_events_dropped_total", stats.events_dropped.get()),
            ("cloudbus_timeouts_total", stats.timeouts.get()),
            ("cloudbus_reconnects_total", stats.reconnects.get()),
        ] {
            counter!(name).absolute(value);
        }
        gauge!("cloudbus_pending_calls").set(bus.pending_calls() as f64);
        gauge!("cloudbus_cluster_nodes").set(bus.cluster().len() as f64);
        gauge!("cloudbus_broker_connected").set(if bus.broker_connected() { 1.0 } else { 0.0 });
        if let Some(agents) = agents {
            let stats = agents.stats();
            for (name, value) in [
                ("cloudbus_agent_commands_total", stats.sent.get()),
                ("cloudbus_agent_failures_total", stats.failed.get()),
                ("cloudbus_agent_timeouts_total", stats.timeouts.get()),
                ("cloudbus_agent_unreachable_total", stats.unreachable.get()),
                ("cloudbus_agent_callbacks_total", stats.callbacks.get()),
                (
                    "cloudbus_agent_late_callbacks_total",
                    stats.late_callbacks.get(),
                ),
            ] {
                counter!(name).absolute(value);
            }
            gauge!("cloudbus_agent_awaiting_callbacks").set(agents.awaiting_callbacks() as f64);
        }
    });
}
