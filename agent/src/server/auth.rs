//! A shared bearer token between management nodes and agents.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use cloudbus::ErrorCode;

use super::dispatch::answer;
use crate::codes;
use crate::wire::Outcome;

/// Lets a request through only with the agent's token.
pub(super) async fn require(
    State(token): State<Arc<str>>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given.is_some_and(|given| same(given.as_bytes(), token.as_bytes())) {
        return next.run(request).await;
    }
    let error = ErrorCode::new(
        codes::UNAUTHORIZED,
        "this agent needs the bearer token it was given",
    );
    answer(StatusCode::UNAUTHORIZED, &Outcome::<()>::Error(error))
}

/// Compares in time that depends only on the lengths, so the token cannot
/// be guessed a byte at a time.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
