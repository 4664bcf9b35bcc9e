//! The live dashboard of a node: a single page (no build step, no CDN)
//! showing the bus as a whole: a map of the messages flowing between
//! services, charts of rates and handling times per service, the ring's
//! share of keys per node, the broker connection, the host fleet and the
//! agent commands, and tables. Updated every second over server-sent events.
//!
//! The statistics are the bus's, not this node's: a task asks every member
//! for its `cloudbus.GetStatistics` once per second (and every member that
//! runs `host` for its tracked hosts) and keeps the last five minutes, from
//! which rates over the last ten seconds and the charts are computed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, Json};
use axum::routing::get;
use cloudbus::{Bus, GetStatistics, Statistics, TypeStatistics};
use cloudbus_agent::AgentClient;
use cloudbus_demo::messages::{GetTrackedHosts, TrackedHosts};
use futures::Stream;
use serde_json::{Value, json};

const PAGE: &str = include_str!("page.html");
/// How long the history goes back.
const HISTORY: Duration = Duration::from_secs(300);
/// The window of the rates shown: long enough that a burst of calls is
/// still visible for a while after it ended.
const RATE_WINDOW_MS: u64 = 10_000;
/// The step of the charts' points.
const CHART_STEP_MS: u64 = 5_000;
/// Synthetic keys for the ring's share per node.
const RING_KEYS: usize = 1_000;
/// Caller name for messages not sent by a handler: an API client, the CLI,
/// or work outside handlers (an agent's callback answering a deferred call).
const CLIENT: &str = "client";

/// What the dashboard keeps between ticks.
struct Dashboard {
    bus: Bus,
    agents: Option<AgentClient>,
    fleet: Mutex<Fleet>,
}

#[derive(Default)]
struct Fleet {
    history: VecDeque<Sample>,
    hosts: Vec<TrackedHosts>,
    unanswered: Vec<String>,
}

/// The bus's totals at one moment.
#[derive(Clone, Default)]
struct Sample {
    t_ms: u64,
    /// Per (service, type), summed over every node.
    types: BTreeMap<(String, String), Totals>,
    /// Per (service, type), the nodes that reported it.
    nodes: BTreeMap<(String, String), Vec<String>>,
    connected: bool,
    reconnects: u64,
    failovers: u64,
    agents: Option<[u64; 4]>,
}

#[derive(Clone, Default)]
struct Totals {
    count: u64,
    errors: u64,
    total_us: u64,
    max_us: u64,
    histogram: Vec<u64>,
    from: BTreeMap<String, u64>,
}

impl Totals {
    fn add(&mut self, t: &TypeStatistics) {
        self.count += t.count;
        self.errors += t.errors;
        self.total_us += t.total_us;
        self.max_us = self.max_us.max(t.max_us);
        if self.histogram.len() < t.histogram.len() {
            self.histogram.resize(t.histogram.len(), 0);
        }
        for (sum, n) in self.histogram.iter_mut().zip(&t.histogram) {
            *sum += n;
        }
        for from in &t.from {
            *self.from.entry(from.service.clone()).or_default() += from.count;
        }
    }

    /// What happened between `before` and `self`.
    fn since(&self, before: Option<&Totals>) -> Totals {
        let Some(before) = before else {
            return self.clone();
        };
        Totals {
            count: self.count.saturating_sub(before.count),
            errors: self.errors.saturating_sub(before.errors),
            total_us: self.total_us.saturating_sub(before.total_us),
            max_us: self.max_us,
            histogram: self
                .histogram
                .iter()
                .enumerate()
                .map(|(i, n)| n.saturating_sub(before.histogram.get(i).copied().unwrap_or(0)))
                .collect(),
            from: self
                .from
                .iter()
                .map(|(k, n)| {
                    let b = before.from.get(k).copied().unwrap_or(0);
                    (k.clone(), n.saturating_sub(b))
                })
                .collect(),
        }
    }
}

/// The `q` quantile of a handling-time histogram, as the upper bound of
/// its bucket (µs); 0 when it is empty.
fn quantile(histogram: &[u64], q: f64) -> u64 {
    let total: u64 = histogram.iter().sum();
    if total == 0 {
        return 0;
    }
    let wanted = ((total as f64) * q).ceil() as u64;
    let bounds = TypeStatistics::HISTOGRAM_BOUNDS_US;
    let mut seen = 0;
    for (i, n) in histogram.iter().enumerate() {
        seen += n;
        if seen >= wanted.max(1) {
            return bounds
                .get(i)
                .copied()
                .unwrap_or(bounds[bounds.len() - 1] * 2);
        }
    }
    bounds[bounds.len() - 1] * 2
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Serves the dashboard on `addr` until the process ends, with the
/// counters of the client that drives this node's host agents when it
/// has one.
pub async fn serve(
    bus: Bus,
    agents: Option<AgentClient>,
    addr: SocketAddr,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening for the dashboard on {addr}"))?;
    let bound = listener.local_addr()?;
    let dashboard = Arc::new(Dashboard {
        bus,
        agents,
        fleet: Mutex::default(),
    });
    // The first sample before the page can be asked for: rates need a
    // baseline.
    poll(&dashboard).await;
    let polled = Arc::downgrade(&dashboard);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let Some(dashboard) = polled.upgrade() else {
                break;
            };
            if dashboard.bus.is_shut_down() {
                break;
            }
            poll(&dashboard).await;
        }
    });
    let app = Router::new()
        .route(
            "/",
            get(|State(d): State<Arc<Dashboard>>| async move {
                // A fresh sample, so the page shows what just happened.
                poll(&d).await;
                Html(page(&d))
            }),
        )
        .route(
            "/api/state",
            get(|State(d): State<Arc<Dashboard>>| async move { Json(state(&d)) }),
        )
        .route("/events", get(events))
        .with_state(dashboard);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::warn!(%error, "the dashboard stopped");
        }
    });
    Ok(bound)
}

/// Asks every member for its statistics (and the host members for their
/// hosts) and records a sample.
async fn poll(dashboard: &Dashboard) {
    let bus = &dashboard.bus;
    let members = bus.cluster().nodes().to_vec();
    let timeout = Duration::from_secs(2);
    let stats = futures::future::join_all(members.iter().map(|n| {
        let node = n.node;
        async move {
            let answer = bus.call(GetStatistics {}).node(node).timeout(timeout).await;
            (node, answer)
        }
    }));
    let hosts = futures::future::join_all(
        members
            .iter()
            .filter(|n| n.services.iter().any(|s| s == "host"))
            .map(|n| bus.call(GetTrackedHosts {}).node(n.node).timeout(timeout)),
    );
    let (stats, hosts) = futures::join!(stats, hosts);
    let mut sample = Sample {
        t_ms: now_ms(),
        connected: bus.broker_connected(),
        reconnects: bus.counters().reconnects.get(),
        failovers: bus.counters().failovers.get(),
        agents: dashboard.agents.as_ref().map(|a| {
            let s = a.stats();
            [
                s.sent.get(),
                s.failed.get(),
                s.timeouts.get(),
                s.unreachable.get(),
            ]
        }),
        ..Sample::default()
    };
    let mut unanswered = Vec::new();
    for (node, answer) in stats {
        match answer {
            Ok(Statistics { types, .. }) => {
                for t in &types {
                    let key = (t.service.clone(), t.type_name.clone());
                    sample.types.entry(key.clone()).or_default().add(t);
                    sample.nodes.entry(key).or_default().push(node.to_string());
                }
            }
            Err(error) => unanswered.push(format!("{node}: {error}")),
        }
    }
    let hosts: Vec<TrackedHosts> = hosts.into_iter().filter_map(Result::ok).collect();
    let mut fleet = dashboard.fleet.lock().unwrap_or_else(|e| e.into_inner());
    fleet.history.push_back(sample);
    let horizon = now_ms().saturating_sub(HISTORY.as_millis() as u64);
    while fleet.history.front().is_some_and(|s| s.t_ms < horizon) {
        fleet.history.pop_front();
    }
    fleet.hosts = hosts;
    fleet.unanswered = unanswered;
}

/// The page with the current state inlined.
fn page(dashboard: &Dashboard) -> String {
    // `</` cannot end the script early once escaped.
    let state = state(dashboard).to_string().replace("</", "<\\/");
    PAGE.replace("/*STATE*/null", &state)
}

/// The state once per second, as long as the page is open.
async fn events(
    State(dashboard): State<Arc<Dashboard>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ticks = tokio::time::interval(Duration::from_secs(1));
    let stream = futures::stream::unfold((dashboard, ticks), |(d, mut ticks)| async move {
        ticks.tick().await;
        let event = Event::default().data(state(&d).to_string());
        Some((Ok(event), (d, ticks)))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// The sample about `window_ms` before the last one (or the oldest).
fn before(history: &VecDeque<Sample>, window_ms: u64, at: usize) -> Option<&Sample> {
    let last = history.get(at)?;
    history
        .iter()
        .take(at)
        .find(|s| last.t_ms.saturating_sub(s.t_ms) <= window_ms + 500)
}

/// Message types the dashboard itself asks for once per second: not drawn.
fn own_query(service: &str, type_name: &str) -> bool {
    service == "cloudbus" || type_name == "host.GetTrackedHosts"
}

/// Everything the page shows.
fn state(dashboard: &Dashboard) -> Value {
    let bus = &dashboard.bus;
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
    let mut ring: BTreeMap<String, u64> = view
        .ring()
        .nodes()
        .iter()
        .map(|n| (n.to_string(), 0))
        .collect();
    for i in 0..RING_KEYS {
        if let Some(owner) = view.ring().owner(&format!("resource-{i}")) {
            *ring.entry(owner.to_string()).or_default() += 1;
        }
    }
    let ring: Vec<Value> = ring
        .into_iter()
        .map(|(node, keys)| json!({"node": node, "keys": keys}))
        .collect();

    let fleet = dashboard.fleet.lock().unwrap_or_else(|e| e.into_inner());
    let history = &fleet.history;
    let (flow, bus_types) = flow(history);
    let series = series(history);
    let broker_history: Vec<Value> = history
        .iter()
        .map(|s| json!({"t": s.t_ms, "connected": s.connected, "reconnects": s.reconnects, "failovers": s.failovers}))
        .collect();
    let agents = agent_rates(history);
    let hosts: Vec<Value> = fleet
        .hosts
        .iter()
        .map(|h| {
            let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
            for host in &h.hosts {
                *by_status.entry(host.status.as_str()).or_default() += 1;
            }
            json!({"node": h.node, "hosts": h.hosts.len(), "by_status": by_status})
        })
        .collect();

    let stats = bus.counters();
    json!({
        "bus": bus.name(),
        "node": bus.node_id().to_string(),
        "time_ms": now_ms(),
        "rate_window_s": RATE_WINDOW_MS / 1000,
        "broker_connected": bus.broker_connected(),
        "broker": bus.broker(),
        "pending_calls": bus.pending_calls(),
        "nodes": nodes,
        "types": bus.statistics(),
        "bus_types": bus_types,
        "flow": flow,
        "series": series,
        "ring": ring,
        "ring_keys": RING_KEYS,
        "broker_history": broker_history,
        "hosts": hosts,
        "agents": agents,
        "unanswered": fleet.unanswered,
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

/// The map's services and edges, and the table of every type on the bus,
/// with rates over the last [`RATE_WINDOW_MS`].
fn flow(history: &VecDeque<Sample>) -> (Value, Vec<Value>) {
    let Some(last) = history.back() else {
        return (json!({"services": [], "edges": []}), Vec::new());
    };
    let base = before(history, RATE_WINDOW_MS, history.len() - 1);
    let seconds = base
        .map(|b| (last.t_ms.saturating_sub(b.t_ms) as f64 / 1000.0).max(0.001))
        .unwrap_or(0.0);
    let rate = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    let mut services: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut edges = Vec::new();
    let mut table = Vec::new();
    for ((service, type_name), totals) in &last.types {
        let key = (service.clone(), type_name.clone());
        let window = totals.since(base.and_then(|b| b.types.get(&key)));
        // Handling times of the window, or of all time when it was quiet.
        let recent = if window.count > 0 { &window } else { totals };
        let p50 = quantile(&recent.histogram, 0.5);
        let p99 = quantile(&recent.histogram, 0.99);
        let error_rate = if recent.count > 0 {
            recent.errors as f64 / recent.count as f64
        } else {
            0.0
        };
        let hosting = last.nodes.get(&key).cloned().unwrap_or_default();
        if totals.count > 0 {
            table.push(json!({
                "type": type_name, "service": service, "count": totals.count,
                "errors": totals.errors, "rate": rate(window.count),
                "avg_us": totals.total_us.checked_div(totals.count).unwrap_or(0),
                "p50_us": p50, "p99_us": p99, "max_us": totals.max_us,
                "nodes": hosting.len(),
            }));
        }
        if own_query(service, type_name) {
            continue;
        }
        services.entry(service.clone()).or_default();
        for (from, count) in &totals.from {
            let from = if from.is_empty() {
                CLIENT
            } else {
                from.as_str()
            };
            if from != CLIENT {
                services.entry(from.to_string()).or_default();
            }
            let in_window = window.from.get(if from == CLIENT { "" } else { from });
            edges.push(json!({
                "from": from, "to": service, "type": type_name,
                "count": count, "rate": rate(in_window.copied().unwrap_or(0)),
                "error_rate": error_rate, "p50_us": p50, "p99_us": p99,
            }));
        }
    }
    for ((service, _), hosting) in &last.nodes {
        if let Some(nodes) = services.get_mut(service) {
            for node in hosting {
                if !nodes.contains(node) {
                    nodes.push(node.clone());
                }
            }
        }
    }
    let services: Vec<Value> = services
        .into_iter()
        .map(|(service, nodes)| json!({"service": service, "nodes": nodes}))
        .collect();
    (json!({"services": services, "edges": edges}), table)
}

/// Per service, a point every [`CHART_STEP_MS`]: messages per second and
/// p50/p99 handling time over the [`RATE_WINDOW_MS`] before it.
fn series(history: &VecDeque<Sample>) -> Value {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    if history.is_empty() {
        return json!({});
    }
    let mut at = history.len() - 1;
    let mut points = Vec::new();
    loop {
        points.push(at);
        let t = history[at].t_ms;
        match history
            .iter()
            .take(at)
            .rposition(|s| t.saturating_sub(s.t_ms) >= CHART_STEP_MS)
        {
            Some(i) => at = i,
            None => break,
        }
    }
    points.reverse();
    for &i in &points {
        let sample = &history[i];
        let Some(base) = before(history, RATE_WINDOW_MS, i) else {
            continue;
        };
        let seconds = (sample.t_ms.saturating_sub(base.t_ms) as f64 / 1000.0).max(0.001);
        if sample.t_ms == base.t_ms {
            continue;
        }
        let mut per_service: HashMap<&str, (u64, Vec<u64>)> = HashMap::new();
        for ((service, type_name), totals) in &sample.types {
            if own_query(service, type_name) {
                continue;
            }
            let window = totals.since(base.types.get(&(service.clone(), type_name.clone())));
            let entry = per_service.entry(service).or_default();
            entry.0 += window.count;
            if entry.1.len() < window.histogram.len() {
                entry.1.resize(window.histogram.len(), 0);
            }
            for (sum, n) in entry.1.iter_mut().zip(&window.histogram) {
                *sum += n;
            }
        }
        for (service, (count, histogram)) in per_service {
            out.entry(service.to_string()).or_default().push(json!({
                "t": sample.t_ms, "rate": count as f64 / seconds,
                "p50_us": quantile(&histogram, 0.5), "p99_us": quantile(&histogram, 0.99),
            }));
        }
    }
    json!(out)
}

/// This node's agent commands: totals, and per second over the window.
fn agent_rates(history: &VecDeque<Sample>) -> Value {
    let Some(last) = history.back() else {
        return Value::Null;
    };
    let Some(now) = last.agents else {
        return Value::Null;
    };
    let base = before(history, RATE_WINDOW_MS, history.len() - 1);
    let (then, seconds) = match base.and_then(|b| b.agents.map(|a| (a, b.t_ms))) {
        Some((a, t)) => (a, (last.t_ms.saturating_sub(t) as f64 / 1000.0).max(0.001)),
        None => (now, 1.0),
    };
    let per_s = |i: usize| now[i].saturating_sub(then[i]) as f64 / seconds;
    json!({
        "sent": now[0], "failed": now[1], "timeouts": now[2], "unreachable": now[3],
        "sent_per_s": per_s(0), "failed_per_s": per_s(1),
    })
}
