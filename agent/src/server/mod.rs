//! The host side: an agent serving typed commands over HTTP.

mod auth;
mod deliver;
mod dispatch;
mod running;

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use cloudbus::{ErrorCode, codes as bus_codes};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::Command;
use crate::stats::AgentStats;
use crate::wire::MAX_BODY;

pub use running::RunningAgent;

/// Handles one command type on an agent. Implemented by the agent's state,
/// once per command, and registered with [`AgentBuilder::command`]. (Bus
/// services declare handlers once, with [`cloudbus::handlers`]; agents do
/// not have that macro yet.)
pub trait CommandHandler<C: Command>: Send + Sync + 'static {
    /// Does the work. An error goes back to the caller with its code; a
    /// panic goes back as `cloudbus.INTERNAL`.
    fn handle(&self, cmd: C) -> impl Future<Output = Result<C::Response, ErrorCode>> + Send;
}

/// An agent: its commands, ready to serve with [`Agent::bind`] or to mount
/// into an existing axum application with [`Agent::into_router`].
pub struct Agent {
    router: Router,
    shared: Arc<Shared>,
    /// Serves HTTPS with this, when set.
    tls: Option<Arc<rustls::ServerConfig>>,
}

/// What every request handler of one agent shares.
pub(crate) struct Shared {
    /// Sends callbacks; reuses connections to the management nodes. Set
    /// when the agent is built (it depends on the node CA).
    http: OnceLock<reqwest::Client>,
    /// Callback work still running, so shutdown can wait for it.
    tasks: TaskTracker,
    /// At most this many commands run at once, when set.
    limit: OnceLock<Semaphore>,
    stats: Arc<AgentStats>,
}

impl Shared {
    /// The callback client [`AgentBuilder::build`] made.
    pub(crate) fn http(&self) -> &reqwest::Client {
        self.http.get_or_init(|| {
            crate::tls::callback_client(None, None)
                .expect("a client with the public roots and no proxy always builds")
        })
    }
}

/// Builds an [`Agent`] from its state and the commands the state handles.
pub struct AgentBuilder<S> {
    state: Arc<S>,
    router: Router,
    paths: HashSet<&'static str>,
    token: Option<Arc<str>>,
    /// Certificate chain and key (PEM) to serve HTTPS with.
    tls: Option<(String, String)>,
    /// The CA (PEM) client certificates must come from (mutual TLS).
    client_ca: Option<String>,
    /// A CA (PEM) to trust for HTTPS callback listeners.
    node_ca: Option<String>,
    /// Key and certificate chain (PEM) presented on callbacks.
    callback_identity: Option<String>,
    error: Option<ErrorCode>,
    shared: Arc<Shared>,
}

impl Agent {
    /// Starts an agent whose handlers share `state`.
    pub fn builder<S: Send + Sync + 'static>(state: S) -> AgentBuilder<S> {
        AgentBuilder {
            state: Arc::new(state),
            router: Router::new(),
            paths: HashSet::new(),
            token: None,
            tls: None,
            client_ca: None,
            node_ca: None,
            callback_identity: None,
            error: None,
            shared: Arc::new(Shared {
                http: OnceLock::new(),
                tasks: TaskTracker::new(),
                limit: OnceLock::new(),
                stats: Arc::default(),
            }),
        }
    }

    /// The agent as an axum router, to serve beside other routes. Callback
    /// work started by it is not awaited by anyone then.
    pub fn into_router(self) -> Router {
        self.router
    }

    /// What the agent has done so far; clone it to read it after shutdown.
    pub fn stats(&self) -> &Arc<AgentStats> {
        &self.shared.stats
    }
}

impl<S: Send + Sync + 'static> AgentBuilder<S> {
    /// Serves command `C` at `C::PATH` with the state's handler.
    pub fn command<C: Command>(mut self) -> Self
    where
        S: CommandHandler<C>,
    {
        if self.error.is_some() {
            return self;
        }
        if let Err(e) = check_path(C::PATH) {
            self.error = Some(e);
            return self;
        }
        if !self.paths.insert(C::PATH) {
            self.error = Some(ErrorCode::new(
                bus_codes::INVALID_ARGUMENT,
                format!("two commands are served at {}", C::PATH),
            ));
            return self;
        }
        let state = Arc::clone(&self.state);
        let shared = Arc::clone(&self.shared);
        self.router = self.router.route(
            C::PATH,
            post(move |headers, body| {
                dispatch::serve::<S, C>(Arc::clone(&state), Arc::clone(&shared), headers, body)
            }),
        );
        self
    }

    /// Serves only requests that carry `Authorization: Bearer <token>`;
    /// the others get `401` with `agent.UNAUTHORIZED`. Give the management
    /// nodes the same token with
    /// [`AgentClientBuilder::bearer_token`](crate::AgentClientBuilder::bearer_token).
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        let token: String = token.into();
        if token.is_empty() {
            self.error.get_or_insert(ErrorCode::new(
                bus_codes::INVALID_ARGUMENT,
                "an agent's bearer token cannot be empty",
            ));
        }
        self.token = Some(token.into());
        self
    }

    /// Serves HTTPS (`https://` URLs) with this certificate chain and
    /// private key, both PEM, so that commands and the bearer token never
    /// cross the network in clear. Management nodes verify the
    /// certificate, host name included; give them the CA with
    /// [`AgentClientBuilder::tls_ca_pem`](crate::AgentClientBuilder::tls_ca_pem)
    /// when it is private.
    pub fn tls_pem(mut self, cert_chain: impl Into<String>, key: impl Into<String>) -> Self {
        self.tls = Some((cert_chain.into(), key.into()));
        self
    }

    /// Mutual TLS: accepts only clients presenting a certificate signed by
    /// this CA (PEM), checked in the handshake, before any command is
    /// read; what a shared bearer token does, with a credential per
    /// management node. Needs [`tls_pem`](Self::tls_pem).
    pub fn client_ca_pem(mut self, ca: impl Into<String>) -> Self {
        self.client_ca = Some(ca.into());
        self
    }

    /// Trusts this CA (PEM), besides the public roots, for the management
    /// nodes' callback listeners that serve HTTPS with a private
    /// certificate
    /// ([`AgentClientBuilder::callback_tls_pem`](crate::AgentClientBuilder::callback_tls_pem)),
    /// so that a callback command's result goes back encrypted to a node
    /// this agent has verified.
    pub fn node_ca_pem(mut self, ca: impl Into<String>) -> Self {
        self.node_ca = Some(ca.into());
        self
    }

    /// Presents this certificate chain and private key (both PEM) when
    /// sending callbacks, to management nodes whose callback listener
    /// accepts only agents with a certificate from its CA
    /// ([`AgentClientBuilder::callback_client_ca_pem`](crate::AgentClientBuilder::callback_client_ca_pem)):
    /// then a node takes results only from agents it can name.
    pub fn callback_identity_pem(mut self, cert_chain: &str, key: &str) -> Self {
        self.callback_identity = Some(format!("{key}\n{cert_chain}"));
        self
    }

    /// Runs at most `limit` commands at once, whichever management nodes
    /// send them; the others wait their turn (a callback command waits
    /// after its `202`). Without it, an agent driven by several nodes runs
    /// everything it receives at once.
    pub fn max_concurrent(mut self, limit: usize) -> Self {
        if limit == 0 || self.shared.limit.set(Semaphore::new(limit)).is_err() {
            self.error.get_or_insert(ErrorCode::new(
                bus_codes::INVALID_ARGUMENT,
                "an agent's concurrency limit is set once, to at least 1",
            ));
        }
        self
    }

    /// The agent, or the first mistake made while building it.
    pub fn build(self) -> Result<Agent, ErrorCode> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let tls = match (&self.tls, &self.client_ca) {
            (Some((cert, key)), ca) => Some(crate::tls::server_config(
                "agent",
                cert,
                key,
                ca.as_deref(),
            )?),
            (None, Some(_)) => {
                return Err(ErrorCode::new(
                    bus_codes::INVALID_ARGUMENT,
                    "an agent that checks client certificates must serve TLS: give tls_pem too",
                ));
            }
            (None, None) => None,
        };
        let http = crate::tls::callback_client(
            self.node_ca.as_deref(),
            self.callback_identity.as_deref(),
        )?;
        // Built once: a second build of one builder is not possible.
        let _ = self.shared.http.set(http);
        let mut router = self
            .router
            .fallback(dispatch::no_such_command)
            .layer(DefaultBodyLimit::max(MAX_BODY));
        if let Some(token) = self.token {
            router = router.layer(axum::middleware::from_fn_with_state(token, auth::require));
        }
        Ok(Agent {
            router,
            shared: self.shared,
            tls,
        })
    }
}

fn check_path(path: &str) -> Result<(), ErrorCode> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/_.-".contains(c);
    if path.len() > 1 && path.starts_with('/') && path.chars().all(allowed) {
        Ok(())
    } else {
        Err(ErrorCode::new(
            bus_codes::INVALID_ARGUMENT,
            format!(
                "command path {path:?} must start with / and hold only letters, digits and /_.-"
            ),
        ))
    }
}
