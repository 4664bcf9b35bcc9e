//! What a command carries besides its body: the caller's trace
//! (`traceparent`) and task context (`ctx-*` headers), so that an agent's
//! handler can read them, pass them on, and return them with its callback;
//! a trace then runs from the API call through the bus to the host and
//! back.

use std::collections::BTreeMap;

use axum::http::HeaderMap;

tokio::task_local! {
    static CURRENT: CommandContext;
}

/// The trace and task context of the command being handled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandContext {
    traceparent: Option<String>,
    /// Task context values by key (the header name without `ctx-`).
    values: BTreeMap<String, String>,
}

impl CommandContext {
    /// The W3C trace context of the caller, if it sent one.
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// A task context value set by the caller (`.context(key, value)` on
    /// the bus call that led to this command).
    pub fn value(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// Every task context value, by key.
    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.values
    }

    pub(crate) fn from_headers(headers: &HeaderMap) -> Self {
        let text = |v: &axum::http::HeaderValue| v.to_str().ok().map(str::to_owned);
        Self {
            traceparent: headers.get("traceparent").and_then(text),
            values: headers
                .iter()
                .filter_map(|(name, value)| {
                    let key = name.as_str().strip_prefix("ctx-")?;
                    Some((key.to_owned(), text(value)?))
                })
                .collect(),
        }
    }

    /// The headers that carry it, as sent with a callback.
    pub(crate) fn headers(&self) -> impl Iterator<Item = (String, &str)> {
        self.traceparent
            .as_deref()
            .map(|t| ("traceparent".to_owned(), t))
            .into_iter()
            .chain(
                self.values
                    .iter()
                    .map(|(k, v)| (format!("ctx-{k}"), v.as_str())),
            )
    }

    /// Runs `f` with this as the current context.
    pub(crate) async fn scope<F: Future>(self, f: F) -> F::Output {
        CURRENT.scope(self, f).await
    }
}

/// The context of the command whose handler is running; `None` outside a
/// handler.
///
/// ```no_run
/// # use cloudbus_agent::{CommandHandler, Command};
/// # struct Host; #[derive(serde::Serialize, serde::Deserialize)] struct Boot {}
/// # impl Command for Boot { const PATH: &'static str = "/boot"; type Response = (); }
/// impl CommandHandler<Boot> for Host {
///     async fn handle(&self, _: Boot) -> Result<(), cloudbus::ErrorCode> {
///         let ctx = cloudbus_agent::command_context().unwrap_or_default();
///         tracing::info!(trace = ?ctx.traceparent(), user = ?ctx.value("user"), "booting");
///         Ok(())
///     }
/// }
/// ```
pub fn command_context() -> Option<CommandContext> {
    CURRENT.try_with(Clone::clone).ok()
}
