//! Flags telling a node's host service where its hosts' agents are and
//! how the agents call it back; shared by `demo` and `node`.

use std::net::SocketAddr;

use cloudbus_demo::HostAgents;

/// Where the host service finds the hypervisor agents.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// The hosts, comma-separated, each `name=url` of its agent (the lines
    /// `cloudbus agent` prints) or a bare agent URL. Give every node the
    /// same list: each tracks the hosts it owns by the hash ring. Without
    /// it, two simulated hosts are served in this process over HTTP on
    /// loopback.
    #[arg(long, value_delimiter = ',', value_name = "URL")]
    agents: Vec<String>,
    /// Where this node listens for the agents' callbacks.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    agent_callback_listen: SocketAddr,
    /// The URL agents reach the callback listener at, when it differs
    /// from the listen address (NAT, or listening on 0.0.0.0).
    #[arg(long, value_name = "URL")]
    agent_callback_url: Option<String>,
    /// Commands in flight to one agent at most.
    #[arg(long, value_name = "N", default_value_t = 8)]
    agent_limit: usize,
    /// How often the node pings each host it tracks, e.g. `5s`.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    host_ping_interval: std::time::Duration,
    /// A PEM file of CA certificates to trust for `https://` agents.
    #[arg(long, value_name = "PEM_FILE")]
    agent_ca: Option<std::path::PathBuf>,
    /// This node's client certificate (PEM file), for agents that want
    /// mutual TLS (`cloudbus agent --client-ca`); with --agent-key.
    #[arg(long, value_name = "PEM_FILE", requires = "agent_key")]
    agent_cert: Option<std::path::PathBuf>,
    /// The private key of --agent-cert (PEM file).
    #[arg(long, value_name = "PEM_FILE", requires = "agent_cert")]
    agent_key: Option<std::path::PathBuf>,
    /// Serve the callback listener over HTTPS with this certificate chain
    /// (PEM file; with --agent-callback-key), so that results come back
    /// encrypted; agents trust it through the public roots or
    /// `cloudbus agent --node-ca`.
    #[arg(long, value_name = "PEM_FILE", requires = "agent_callback_key")]
    agent_callback_cert: Option<std::path::PathBuf>,
    /// The private key of --agent-callback-cert (PEM file).
    #[arg(long, value_name = "PEM_FILE", requires = "agent_callback_cert")]
    agent_callback_key: Option<std::path::PathBuf>,
    /// Mutual TLS on callbacks: take results only from agents presenting a
    /// certificate from this CA (PEM file; `cloudbus agent
    /// --callback-cert`); needs --agent-callback-cert.
    #[arg(long, value_name = "PEM_FILE", requires = "agent_callback_cert")]
    agent_callback_client_ca: Option<std::path::PathBuf>,
    /// The bearer token the agents want (`cloudbus agent --token`).
    #[arg(long, env = "CLOUDBUS_AGENT_TOKEN", hide_env_values = true)]
    agent_token: Option<String>,
}

impl AgentArgs {
    /// The host service's settings.
    pub fn host_agents(&self) -> anyhow::Result<HostAgents> {
        let defaults = HostAgents::default();
        let mut client = defaults
            .client
            .callback_listen(self.agent_callback_listen)
            .per_host_limit(self.agent_limit);
        if let Some(url) = &self.agent_callback_url {
            client = client.callback_url(url.clone());
        }
        let read = |path: &std::path::PathBuf| {
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))
        };
        if let Some(ca) = &self.agent_ca {
            client = client.tls_ca_pem(read(ca)?);
        }
        if let (Some(cert), Some(key)) = (&self.agent_cert, &self.agent_key) {
            client = client.tls_identity_pem(&read(cert)?, &read(key)?);
        }
        if let (Some(cert), Some(key)) = (&self.agent_callback_cert, &self.agent_callback_key) {
            client = client.callback_tls_pem(&read(cert)?, &read(key)?);
        }
        if let Some(ca) = &self.agent_callback_client_ca {
            client = client.callback_client_ca_pem(read(ca)?);
        }
        if let Some(token) = &self.agent_token {
            client = client.bearer_token(token.clone());
        }
        if self.host_ping_interval.is_zero() {
            anyhow::bail!("--host-ping-interval must be above zero");
        }
        Ok(HostAgents {
            urls: self.agents.clone(),
            client,
            tracking: cloudbus_demo::host::TrackerConfig {
                interval: self.host_ping_interval,
                ..defaults.tracking
            },
        })
    }
}
