//! One command from a management node to an agent.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use axum::http::{StatusCode, header};
use cloudbus::{ErrorCode, codes as bus_codes};
use serde::de::{DeserializeOwned, IgnoredAny};

use super::{AgentClient, Inner};
use crate::wire::{CALLBACK_URL_HEADER, MAX_BODY, Outcome, TASK_ID_HEADER};
use crate::{Command, Mode, codes};

/// A command on its way; await it for the typed response.
#[must_use = "a command is sent only when awaited"]
pub struct AgentCall<'a, C> {
    client: &'a AgentClient,
    agent: &'a str,
    cmd: C,
    timeout: Option<Duration>,
}

impl<'a, C: Command> AgentCall<'a, C> {
    pub(super) fn new(client: &'a AgentClient, agent: &'a str, cmd: C) -> Self {
        Self {
            client,
            agent,
            cmd,
            timeout: None,
        }
    }

    /// How long this command may take, callback included; past it the
    /// command fails with `cloudbus.TIMEOUT`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    async fn run(self) -> Result<C::Response, ErrorCode> {
        let inner = &*self.client.inner;
        let timeout = self.timeout.unwrap_or(inner.timeout);
        inner.stats.sent.increment();
        let exchange = exchange::<C>(inner, self.agent, self.cmd);
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ErrorCode::new(
                bus_codes::TIMEOUT,
                format!(
                    "agent {} did not complete {} within {timeout:?}",
                    self.agent,
                    C::PATH
                ),
            )),
        };
        if let Err(error) = &result {
            inner.stats.failed.increment();
            match error.code() {
                bus_codes::TIMEOUT => inner.stats.timeouts.increment(),
                codes::UNREACHABLE => inner.stats.unreachable.increment(),
                _ => {}
            }
        }
        result
    }
}

impl<'a, C: Command> IntoFuture for AgentCall<'a, C> {
    type Output = Result<C::Response, ErrorCode>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

async fn exchange<C: Command>(
    inner: &Inner,
    agent: &str,
    cmd: C,
) -> Result<C::Response, ErrorCode> {
    let (url, host) = endpoint(agent, C::PATH)?;
    let body = serde_json::to_vec(&cmd).map_err(|e| {
        ErrorCode::new(
            bus_codes::INVALID_ARGUMENT,
            format!("the {} command cannot be encoded: {e}", C::PATH),
        )
    })?;
    let slot = inner.limits.slot(&host).await;
    let mut request = inner
        .http
        .post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body);
    // Sent from a bus handler: the agent sees the same trace and task context.
    if let Some(context) = cloudbus::task_context() {
        use reqwest::header::{HeaderName, HeaderValue};
        for (key, value) in context.iter() {
            // A context entry HTTP cannot carry is left out, not an error.
            if let (Ok(key), Ok(value)) = (
                HeaderName::from_bytes(key.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                request = request.header(key, value);
            }
        }
    }
    match C::MODE {
        Mode::Sync => {
            let (status, body) = read(request, agent).await?;
            drop(slot);
            decode::<C::Response>(status, &body, agent, C::PATH)
        }
        Mode::Callback => {
            // Registered before sending: a quick agent may call back before
            // its 202 is read here.
            let mut waiter = inner.waiting.register();
            let request = request
                .header(TASK_ID_HEADER, waiter.id().to_string())
                .header(CALLBACK_URL_HEADER, &inner.callback_url);
            let (status, body) = read(request, agent).await?;
            drop(slot);
            if status != StatusCode::ACCEPTED {
                decode::<IgnoredAny>(status, &body, agent, C::PATH)?;
                return Err(bad_response(
                    agent,
                    C::PATH,
                    format!("answered {status} instead of 202 Accepted"),
                ));
            }
            let body = (&mut waiter.rx).await.map_err(|_| {
                ErrorCode::new(
                    bus_codes::SHUTTING_DOWN,
                    format!(
                        "the node stopped waiting for agent {agent}'s callback to {}",
                        C::PATH
                    ),
                )
            })?;
            decode::<C::Response>(StatusCode::OK, &body, agent, C::PATH)
        }
    }
}

/// The command's URL and the `host:port` its limits are kept under.
fn endpoint(agent: &str, path: &str) -> Result<(reqwest::Url, String), ErrorCode> {
    let invalid = || {
        ErrorCode::new(
            bus_codes::INVALID_ARGUMENT,
            format!("agent address {agent:?} is not an http(s) URL such as http://10.0.0.7:7070"),
        )
    };
    let mut url = reqwest::Url::parse(agent).map_err(|_| invalid())?;
    let host = match url.host_str() {
        Some(host) if !host.is_empty() && matches!(url.scheme(), "http" | "https") => {
            format!("{host}:{}", url.port_or_known_default().unwrap_or(80))
        }
        _ => return Err(invalid()),
    };
    // The command's path goes after any path prefix of the agent's address.
    let full = format!("{}{path}", url.path().trim_end_matches('/'));
    url.set_path(&full);
    Ok((url, host))
}

/// Sends the request and reads the whole answer, refusing bodies over
/// [`MAX_BODY`].
async fn read(
    request: reqwest::RequestBuilder,
    agent: &str,
) -> Result<(StatusCode, Vec<u8>), ErrorCode> {
    let mut response = request.send().await.map_err(|e| unreachable(agent, &e))?;
    let status = response.status();
    let too_big = || {
        ErrorCode::new(
            codes::BAD_RESPONSE,
            format!("agent {agent} answered with a body over {MAX_BODY} bytes"),
        )
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| unreachable(agent, &e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

fn decode<T: DeserializeOwned>(
    status: StatusCode,
    body: &[u8],
    agent: &str,
    path: &str,
) -> Result<T, ErrorCode> {
    match serde_json::from_slice::<Outcome<T>>(body) {
        Ok(Outcome::Reply(reply)) if status.is_success() => Ok(reply),
        Ok(Outcome::Reply(_)) => Err(bad_response(
            agent,
            path,
            format!("answered {status} with a reply"),
        )),
        Ok(Outcome::Error(error)) => Err(error),
        Err(e) => {
            let start = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
            Err(bad_response(
                agent,
                path,
                format!(
                    "answered {status} with a body that is not a {path} outcome ({e}): {start:?}"
                ),
            ))
        }
    }
}

fn bad_response(agent: &str, path: &str, what: String) -> ErrorCode {
    ErrorCode::new(
        codes::BAD_RESPONSE,
        format!("agent {agent} {what} (command {path})"),
    )
}

/// A failed connection or exchange. Whether a synchronous command ran is
/// unknown then, which the description says.
fn unreachable(agent: &str, error: &reqwest::Error) -> ErrorCode {
    let mut why = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        why.push_str(": ");
        why.push_str(&cause.to_string());
        source = cause.source();
    }
    let what = if error.is_connect() {
        "cannot connect to agent"
    } else {
        "lost the connection to agent (the command may or may not have run)"
    };
    ErrorCode::new(codes::UNREACHABLE, format!("{what} {agent}: {why}"))
}
