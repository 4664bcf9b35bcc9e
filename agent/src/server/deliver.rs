//! Sends a finished command's outcome to the caller's callback endpoint.

use std::time::Duration;

use axum::http::{StatusCode, header};
use backon::{ExponentialBuilder, Retryable};
use serde::Serialize;

use super::Shared;
use super::dispatch::Callback;
use crate::wire::{Outcome, TASK_ID_HEADER};

/// Why one delivery attempt failed, and whether another may succeed.
enum Failure {
    /// The connection failed or the node was busy: worth retrying.
    Transient(String),
    /// The node answered that it does not want it (the caller gave up, or
    /// the body was refused): retrying cannot help.
    Refused(StatusCode),
}

/// POSTs the outcome, retrying a few times over about three seconds when
/// the management node cannot be reached, so that a node restarting its
/// listener or a dropped connection does not lose finished work.
pub(super) async fn callback<T: Serialize>(
    shared: &Shared,
    to: Callback,
    command: &'static str,
    outcome: Outcome<T>,
    context: &crate::CommandContext,
) {
    // Shared by every attempt without copying.
    let body: bytes::Bytes = match serde_json::to_vec(&outcome) {
        Ok(body) => body.into(),
        Err(e) => {
            let error = cloudbus::ErrorCode::new(
                cloudbus::codes::INTERNAL,
                format!("the agent could not encode the response to {command}: {e}"),
            );
            serde_json::to_vec(&Outcome::<()>::Error(error))
                .expect("an error code always encodes")
                .into()
        }
    };
    let attempt = || async {
        let mut request = shared
            .http()
            .post(to.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(TASK_ID_HEADER, &to.task_id);
        for (name, value) in context.headers() {
            request = request.header(name, value);
        }
        let sent = request
            .body(body.clone())
            .send()
            .await
            .map_err(|e| Failure::Transient(e.to_string()))?;
        match sent.status() {
            s if s.is_success() => Ok(()),
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                Err(Failure::Transient(format!("the node answered {s}")))
            }
            s => Err(Failure::Refused(s)),
        }
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_times(4)
        .with_jitter();
    let result = attempt
        .retry(backoff)
        .when(|f| matches!(f, Failure::Transient(_)))
        .await;
    match result {
        Ok(()) => shared.stats.callbacks_sent.increment(),
        Err(failure) => {
            shared.stats.callbacks_failed.increment();
            match failure {
                Failure::Transient(why) => tracing::warn!(
                    command,
                    task = %to.task_id,
                    url = %to.url,
                    "the callback could not be delivered: {why}"
                ),
                Failure::Refused(status) => tracing::info!(
                    command,
                    task = %to.task_id,
                    %status,
                    "the management node refused the callback (the caller has likely given up)"
                ),
            }
        }
    }
}
