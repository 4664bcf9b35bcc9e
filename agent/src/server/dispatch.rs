//! One command request: decode, run, answer now or accept and call back.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cloudbus::{ErrorCode, codes as bus_codes};
use futures::FutureExt;
use serde::Serialize;
use tracing::{Instrument, Span};

use super::{CommandHandler, Shared, deliver};
use crate::wire::{Accepted, CALLBACK_URL_HEADER, MAX_TASK_ID, Outcome, TASK_ID_HEADER};
use crate::{Command, CommandContext, codes};

/// Where a caller asked the outcome to be sent.
pub(super) struct Callback {
    pub url: reqwest::Url,
    pub task_id: String,
}

pub(super) async fn serve<S, C>(
    state: Arc<S>,
    shared: Arc<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response
where
    S: CommandHandler<C>,
    C: Command,
{
    shared.stats.commands.increment();
    let cmd: C = match serde_json::from_slice(&body) {
        Ok(cmd) => cmd,
        Err(e) => {
            let error = ErrorCode::new(
                codes::BAD_COMMAND,
                format!("the body is not a valid {} command: {e}", C::PATH),
            );
            return answer(StatusCode::BAD_REQUEST, &Outcome::<()>::Error(error));
        }
    };
    // The handler's logs carry the caller's trace, so a command can be
    // followed from the API call through the bus to the host.
    let span = tracing::info_span!(
        "command",
        path = C::PATH,
        traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok()),
        task = headers.get(TASK_ID_HEADER).and_then(|v| v.to_str().ok()),
    );
    let context = CommandContext::from_headers(&headers);
    let callback = match callback_of(&headers) {
        Ok(callback) => callback,
        Err(error) => return answer(StatusCode::BAD_REQUEST, &Outcome::<()>::Error(error)),
    };
    match callback {
        None => {
            let outcome = context.scope(run(&shared, &*state, cmd, span)).await;
            let status = match outcome {
                Outcome::Reply(_) => StatusCode::OK,
                Outcome::Error(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            answer(status, &outcome)
        }
        Some(callback) => {
            let accepted = Accepted {
                accepted: callback.task_id.clone(),
            };
            let worker = Arc::clone(&shared);
            shared.tasks.spawn(async move {
                let outcome = context
                    .clone()
                    .scope(run(&worker, &*state, cmd, span))
                    .await;
                // The outcome goes back with the trace and task context.
                deliver::callback(&worker, callback, C::PATH, outcome, &context).await;
            });
            answer(StatusCode::ACCEPTED, &accepted)
        }
    }
}

/// Runs the handler, turning a panic into an error the caller can see.
async fn run<S, C>(shared: &Shared, state: &S, cmd: C, span: Span) -> Outcome<C::Response>
where
    S: CommandHandler<C>,
    C: Command,
{
    let _permit = match shared.limit.get() {
        Some(limit) => Some(limit.acquire().await.expect("the limit is never closed")),
        None => None,
    };
    let _running = shared.stats.running();
    match AssertUnwindSafe(state.handle(cmd))
        .catch_unwind()
        .instrument(span)
        .await
    {
        Ok(Ok(response)) => Outcome::Reply(response),
        Ok(Err(error)) => Outcome::Error(error),
        Err(_) => {
            tracing::error!(command = C::PATH, "the agent's handler panicked");
            Outcome::Error(ErrorCode::new(
                bus_codes::INTERNAL,
                format!("the agent's handler for {} panicked", C::PATH),
            ))
        }
    }
}

/// Reads the callback headers: both or neither.
fn callback_of(headers: &HeaderMap) -> Result<Option<Callback>, ErrorCode> {
    let text = |name: &str| -> Result<Option<&str>, ErrorCode> {
        headers
            .get(name)
            .map(|v| {
                v.to_str().map_err(|_| {
                    ErrorCode::new(codes::BAD_COMMAND, format!("header {name} is not ASCII"))
                })
            })
            .transpose()
    };
    match (text(CALLBACK_URL_HEADER)?, text(TASK_ID_HEADER)?) {
        (None, None) => Ok(None),
        (Some(url), Some(task_id)) => {
            if task_id.is_empty() || task_id.len() > MAX_TASK_ID {
                return Err(ErrorCode::new(
                    codes::BAD_COMMAND,
                    format!("header {TASK_ID_HEADER} must hold 1 to {MAX_TASK_ID} characters"),
                ));
            }
            let url = reqwest::Url::parse(url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .ok_or_else(|| {
                    ErrorCode::new(
                        codes::BAD_COMMAND,
                        format!("header {CALLBACK_URL_HEADER} is not an http(s) URL: {url:?}"),
                    )
                })?;
            Ok(Some(Callback {
                url,
                task_id: task_id.to_owned(),
            }))
        }
        _ => Err(ErrorCode::new(
            codes::BAD_COMMAND,
            format!("headers {CALLBACK_URL_HEADER} and {TASK_ID_HEADER} go together"),
        )),
    }
}

/// Answers a path no command is served at.
pub(super) async fn no_such_command(uri: Uri) -> Response {
    let error = ErrorCode::new(
        codes::NO_SUCH_COMMAND,
        format!("this agent serves no command at {}", uri.path()),
    );
    answer(StatusCode::NOT_FOUND, &Outcome::<()>::Error(error))
}

pub(super) fn answer(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(json) => (status, [(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(e) => {
            let error = ErrorCode::new(
                bus_codes::INTERNAL,
                format!("the agent could not encode its answer: {e}"),
            );
            let json = serde_json::to_vec(&Outcome::<()>::Error(error))
                .expect("an error code always encodes");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "application/json")],
                json,
            )
                .into_response()
        }
    }
}
