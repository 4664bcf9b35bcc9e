//! The management-node side: sends typed commands to agents and receives
//! their callbacks.

mod call;
mod callbacks;
mod limits;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cloudbus::{ErrorCode, codes as bus_codes};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::Command;
use crate::stats::ClientStats;
use crate::wire::CALLBACK_PATH;

pub use call::AgentCall;
use callbacks::Waiting;
use limits::Limits;

/// Sends commands to host agents. One per management node: it holds the
/// connection pool, the limits and the node's callback listener. Cloning
/// is cheap and shares all of them.
#[derive(Clone)]
pub struct AgentClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    limits: Limits,
    waiting: Arc<Waiting>,
    stats: Arc<ClientStats>,
    timeout: Duration,
    callback_url: String,
    listener: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

/// Settings of an [`AgentClient`]; the defaults suit a node driving
/// thousands of hosts.
#[derive(Debug, Clone)]
pub struct AgentClientBuilder {
    per_host: usize,
    total: usize,
    /// Idle connections kept per agent; `None`: as many as `per_host`.
    idle_per_host: Option<usize>,
    /// Extra CA certificates (PEM) to trust for `https://` agents.
    tls_ca: Option<String>,
    /// This node's client certificate chain and key (PEM), for agents
    /// that want mutual TLS.
    tls_identity: Option<Secret>,
    timeout: Duration,
    connect_timeout: Duration,
    listen: SocketAddr,
    callback_base: Option<String>,
    /// The callback listener's certificate chain and key (PEM), to serve
    /// HTTPS with.
    callback_tls: Option<(String, Secret)>,
    /// The CA (PEM) agents' callback certificates must come from.
    callback_client_ca: Option<String>,
    token: Option<Secret>,
}

/// A token that never shows in logs or `Debug` output.
#[derive(Clone)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Default for AgentClientBuilder {
    fn default() -> Self {
        Self {
            per_host: 8,
            total: 1024,
            idle_per_host: None,
            tls_ca: None,
            tls_identity: None,
            timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(5),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            callback_base: None,
            callback_tls: None,
            callback_client_ca: None,
            token: None,
        }
    }
}

impl AgentClientBuilder {
    /// Commands in flight to one agent at most (default 8); more wait their
    /// turn. Also the most connections kept open to one agent.
    pub fn per_host_limit(mut self, limit: usize) -> Self {
        self.per_host = limit;
        self
    }

    /// Connections open to all agents at most (default 1024), so a node
    /// driving 100,000 hosts never runs out of sockets. A command waiting
    /// for its callback holds none.
    pub fn max_connections(mut self, limit: usize) -> Self {
        self.total = limit;
        self
    }

    /// Idle connections kept open to one agent for the next command
    /// (default: as many as [`per_host_limit`](Self::per_host_limit), for
    /// 60 s). [`max_connections`](Self::max_connections) bounds the
    /// connections in use; idle ones come on top, one set per agent
    /// contacted in the last minute. A node that drives more agents than
    /// it may hold sockets for (a fleet of thousands, pinged in turn) sets
    /// 0: each command then opens its connection and closes it after, the
    /// callback listener asks agents to close theirs after each callback
    /// (`Connection: close`), and the connections to agents never pass
    /// `max_connections`.
    pub fn idle_per_host(mut self, idle: usize) -> Self {
        self.idle_per_host = Some(idle);
        self
    }

    /// How long a command may take, callback included, unless the call
    /// says otherwise (default 60 s). Past it the command fails with
    /// `cloudbus.TIMEOUT`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long to wait for an agent to accept a connection (default 5 s);
    /// past it the command fails with `agent.UNREACHABLE`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Where the callback listener binds (default `127.0.0.1:0`, a free
    /// port on loopback, which only local agents can reach).
    pub fn callback_listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// The base URL agents reach the callback listener at, e.g.
    /// `http://10.0.0.5:7071`, when it differs from the bound address
    /// (behind NAT, or bound to `0.0.0.0`).
    pub fn callback_url(mut self, base: impl Into<String>) -> Self {
        self.callback_base = Some(base.into());
        self
    }

    /// Also trusts these CA certificates (PEM) when verifying `https://`
    /// agents, for agents with certificates from a private CA. An agent's
    /// certificate is always verified, host name included.
    pub fn tls_ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.tls_ca = Some(pem.into());
        self
    }

    /// Presents this certificate chain and private key (both PEM) to
    /// agents that accept only clients with a certificate from their CA
    /// ([`AgentBuilder::client_ca_pem`](crate::AgentBuilder::client_ca_pem)).
    pub fn tls_identity_pem(mut self, cert_chain: &str, key: &str) -> Self {
        self.tls_identity = Some(Secret(format!("{key}\n{cert_chain}")));
        self
    }

    /// Serves the callback listener over HTTPS with this certificate chain
    /// and private key (both PEM), so that the results of callback
    /// commands come back encrypted; its URL is then `https://`. Agents
    /// verify the certificate, host name included, against the public
    /// roots and the CA given to them with
    /// [`AgentBuilder::node_ca_pem`](crate::AgentBuilder::node_ca_pem).
    pub fn callback_tls_pem(mut self, cert_chain: &str, key: &str) -> Self {
        self.callback_tls = Some((cert_chain.to_owned(), Secret(key.to_owned())));
        self
    }

    /// Mutual TLS on callbacks: the callback listener accepts only agents
    /// presenting a certificate signed by this CA (PEM), checked in the
    /// handshake, so that a result is taken only from an agent this node
    /// can name, not from whoever learned a task id. Agents present theirs
    /// with
    /// [`AgentBuilder::callback_identity_pem`](crate::AgentBuilder::callback_identity_pem).
    /// Needs [`callback_tls_pem`](Self::callback_tls_pem).
    pub fn callback_client_ca_pem(mut self, ca: impl Into<String>) -> Self {
        self.callback_client_ca = Some(ca.into());
        self
    }

    /// Sends `Authorization: Bearer <token>` with every command, for
    /// agents built with
    /// [`AgentBuilder::bearer_token`](crate::AgentBuilder::bearer_token).
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Secret(token.into()));
        self
    }

    /// Binds the callback listener and returns the client.
    pub async fn start(self) -> Result<AgentClient, ErrorCode> {
        let invalid = |what: String| ErrorCode::new(bus_codes::INVALID_ARGUMENT, what);
        if self.per_host == 0 || self.total == 0 {
            return Err(invalid("agent client limits must be at least 1".into()));
        }
        if self.timeout.is_zero() {
            return Err(invalid(
                "the agent command timeout must be above zero".into(),
            ));
        }
        let listener = TcpListener::bind(self.listen).await.map_err(|e| {
            invalid(format!(
                "cannot listen for agent callbacks on {}: {e}",
                self.listen
            ))
        })?;
        let bound = listener
            .local_addr()
            .map_err(|e| invalid(format!("the callback listener has no address: {e}")))?;
        let callback_tls = match (&self.callback_tls, &self.callback_client_ca) {
            (Some((cert, Secret(key))), ca) => Some(crate::tls::server_config(
                "callback listener",
                cert,
                key,
                ca.as_deref(),
            )?),
            (None, Some(_)) => {
                return Err(invalid(
                    "a callback listener that checks agents' certificates must serve TLS: \
                     give callback_tls_pem too"
                        .into(),
                ));
            }
            (None, None) => None,
        };
        let scheme = if callback_tls.is_some() {
            "https"
        } else {
            "http"
        };
        let base = match self.callback_base {
            Some(base) => {
                let url = reqwest::Url::parse(&base)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                    .ok_or_else(|| invalid(format!("callback URL {base:?} is not http(s)")))?;
                // An https URL without TLS here is a proxy terminating it;
                // an http URL to a listener serving TLS reaches nobody.
                if callback_tls.is_some() && url.scheme() == "http" {
                    return Err(invalid(format!(
                        "callback URL {base:?} is http, but the callback listener serves HTTPS \
                         (callback_tls_pem): make it https"
                    )));
                }
                url.as_str().trim_end_matches('/').to_owned()
            }
            None if bound.ip().is_unspecified() => {
                return Err(invalid(format!(
                    "the callback listener binds {bound}, which agents cannot dial: \
                     give the URL they can reach it at"
                )));
            }
            None => format!("{scheme}://{bound}"),
        };
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(Secret(token)) = &self.token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| invalid("the agent bearer token must be visible ASCII".into()))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        crate::tls::ensure_provider();
        let mut http = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(false);
        if let Some(pem) = &self.tls_ca {
            http = crate::tls::trusting(http, pem, "agent CA")?;
        }
        if let Some(Secret(pem)) = &self.tls_identity {
            http = crate::tls::presenting(http, pem, "the client certificate and key")?;
        }
        let http = http
            .default_headers(headers)
            .connect_timeout(self.connect_timeout)
            .pool_max_idle_per_host(self.idle_per_host.unwrap_or(self.per_host))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .no_proxy()
            .build()
            .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        let waiting = Arc::new(Waiting::default());
        let stats = Arc::new(ClientStats::default());
        // No idle connections to agents: none from them either.
        let close = self.idle_per_host == Some(0);
        let router = callbacks::router(Arc::clone(&waiting), Arc::clone(&stats), close);
        let listener = match callback_tls {
            Some(config) => {
                let listener = crate::tls::TlsListener::new(listener, config, |_| {})
                    .map_err(|e| invalid(format!("the callback listener has no address: {e}")))?;
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, router).await {
                        tracing::error!("the agent callback listener stopped: {e}");
                    }
                })
            }
            None => tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, router).await {
                    tracing::error!("the agent callback listener stopped: {e}");
                }
            }),
        };
        Ok(AgentClient {
            inner: Arc::new(Inner {
                http,
                limits: Limits::new(self.per_host, self.total),
                waiting,
                stats,
                timeout: self.timeout,
                callback_url: format!("{base}{CALLBACK_PATH}"),
                listener,
            }),
        })
    }
}

impl AgentClient {
    /// Settings, then [`AgentClientBuilder::start`].
    pub fn builder() -> AgentClientBuilder {
        AgentClientBuilder::default()
    }

    /// Sends `cmd` to the agent at `agent` (its base URL, e.g.
    /// `http://10.0.0.7:7070`) and resolves to its typed response (like
    /// [`Bus::call`](cloudbus::Bus::call), it waits for the answer). Await
    /// it, or set [`AgentCall::timeout`] first.
    pub fn call<'a, C: Command>(&'a self, agent: &'a str, cmd: C) -> AgentCall<'a, C> {
        AgentCall::new(self, agent, cmd)
    }

    /// The URL agents post callbacks to.
    pub fn callback_url(&self) -> &str {
        &self.inner.callback_url
    }

    /// Commands accepted by agents whose callback has not come yet.
    pub fn awaiting_callbacks(&self) -> usize {
        self.inner.waiting.len()
    }

    /// What this client has sent and how it ended.
    pub fn stats(&self) -> &ClientStats {
        &self.inner.stats
    }

    /// Stops the callback listener and fails the commands still waiting
    /// for a callback with `cloudbus.SHUTTING_DOWN`.
    pub fn shutdown(&self) {
        self.inner.listener.abort();
        self.inner.waiting.clear();
    }
}
