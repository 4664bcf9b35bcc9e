//! The management node's callback endpoint: one listener per node, one map
//! of waiting tasks, however many commands are in flight.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::stats::ClientStats;
use crate::wire::{CALLBACK_PATH, MAX_BODY, TASK_ID_HEADER};

/// Tasks accepted by agents whose callback has not come yet.
#[derive(Default)]
pub(super) struct Waiting {
    tasks: DashMap<Uuid, oneshot::Sender<Bytes>>,
}

/// Owns a task's place in [`Waiting`]; leaving it (answered, timed out or
/// dropped by the caller) frees the place, so nothing leaks.
pub(super) struct Waiter {
    waiting: Arc<Waiting>,
    id: Uuid,
    pub(super) rx: oneshot::Receiver<Bytes>,
}

impl Waiting {
    pub(super) fn register(self: &Arc<Self>) -> Waiter {
        let id = Uuid::new_v4();
        let (tx, rx) = oneshot::channel();
        self.tasks.insert(id, tx);
        Waiter {
            waiting: Arc::clone(self),
            id,
            rx,
        }
    }

    /// Fails every waiting task: the node is shutting down.
    pub(super) fn clear(&self) {
        self.tasks.clear();
    }

    pub(super) fn len(&self) -> usize {
        self.tasks.len()
    }
}

impl Waiter {
    pub(super) fn id(&self) -> Uuid {
        self.id
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.waiting.tasks.remove(&self.id);
    }
}

#[derive(Clone)]
struct Endpoint {
    waiting: Arc<Waiting>,
    stats: Arc<ClientStats>,
    /// Answers with `Connection: close`, so that agents keep no idle
    /// connection to this node (a node driving a fleet bounds its sockets).
    close: bool,
}

/// The router serving [`CALLBACK_PATH`].
pub(super) fn router(waiting: Arc<Waiting>, stats: Arc<ClientStats>, close: bool) -> Router {
    Router::new()
        .route(CALLBACK_PATH, post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Endpoint {
            waiting,
            stats,
            close,
        })
}

async fn receive(
    State(endpoint): State<Endpoint>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, &'static str) {
    let mut answer = HeaderMap::new();
    if endpoint.close {
        answer.insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    // The agent returns the trace it was given: the callback is part of it.
    tracing::debug!(
        traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok()),
        "agent callback"
    );
    let (status, text) = outcome(&endpoint, &headers, body);
    (status, answer, text)
}

fn outcome(endpoint: &Endpoint, headers: &HeaderMap, body: Bytes) -> (StatusCode, &'static str) {
    let Some(id) = headers
        .get(TASK_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Uuid::parse_str(v).ok())
    else {
        return (
            StatusCode::BAD_REQUEST,
            "a callback needs the x-cloudbus-task-id header this node sent",
        );
    };
    // The waiter may have given up a moment ago; then the callback is late too.
    let delivered = match endpoint.waiting.tasks.remove(&id) {
        Some((_, tx)) => tx.send(body).is_ok(),
        None => false,
    };
    if delivered {
        endpoint.stats.callbacks.increment();
        return (StatusCode::OK, "delivered");
    }
    endpoint.stats.late_callbacks.increment();
    tracing::debug!(task = %id, "a callback for a task nobody waits for");
    (StatusCode::NOT_FOUND, "no caller waits for this task")
}
