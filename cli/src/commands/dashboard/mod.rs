//! The live dashboard of a node: a single page (no build step) showing the
//! cluster, message rates per type and recent errors, updated every second
//! over server-sent events.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, Json};
use axum::routing::get;
use cloudbus::Bus;
use futures::Stream;
use serde_json::{Value, json};

const PAGE: &str = include_str!("page.html");

/// Serves the dashboard on `addr` until the process ends.
pub async fn serve(bus: Bus, addr: SocketAddr) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for the dashboard on {addr}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route(
            "/",
            get(|State(bus): State<Bus>| async move { Html(page(&bus)) }),
        )
        .route(
            "/api/state",
            get(|State(bus): State<Bus>| async move { Json(state(&bus)) }),
        )
        .route("/events", get(events))
        .with_state(bus);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "the dashboard stopped");
        }
    });
    Ok(bound)
}

/// The page with the current state inlined.
fn page(bus: &Bus) -> String {
    // `</` cannot end the script early once escaped.
    let state = state(bus).to_string().replace("</", "<\\/");
    PAGE.replace("/*STATE*/null", &state)
}

/// The state once per second, as long as the page is open.
async fn events(State(bus): State<Bus>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ticks = tokio::time::interval(Duration::from_secs(1));
    let stream = futures::stream::unfold((bus, ticks), |(bus, mut ticks)| async move {
        ticks.tick().await;
        let event = Event::default().data(state(&bus).to_string());
        Some((Ok(event), (bus, ticks)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Everything the page shows.
fn state(bus: &Bus) -> Value {
    let view = bus.cluster();
    let nodes: Vec<Value> = view
        .nodes()
        .iter()
        .map(|n| {
            json!({
                "node": n.node.to_string(),
                "broker": n.broker,
                "services": n.services,
                "last_seen_ms": n.last_seen.as_millis() as u64,
                "interval_ms": n.interval.as_millis() as u64,
                "this_node": n.this_node,
            })
        })
        .collect();
    let stats = bus.counters();
    json!({
        "bus": bus.name(),
        "node": bus.node_id().to_string(),
        "time_ms": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        "broker_connected": bus.broker_connected(),
        "broker": bus.broker(),
        "pending_calls": bus.pending_calls(),
        "nodes": nodes,
        "types": bus.statistics(),
        "recent_errors": bus.recent_errors(),
        "counters": {
            "late_replies": stats.late_replies.get(),
            "expired": stats.expired.get(),
            "malformed": stats.malformed.get(),
            "rejected": stats.rejected.get(),
            "timeouts": stats.timeouts.get(),
            "reconnects": stats.reconnects.get(),
            "failovers": stats.failovers.get(),
            "events_dropped": stats.events_dropped.get(),
        },
    })
}
