//! Flags telling a node's host service where its hosts' agents are and
//! how the agents call it back; shared by `demo` and `node`.

use std::net::SocketAddr;

use cloudbus_demo::HostAgents;

/// Where the host service finds the hypervisor agents.
#[derive(clap::Args)]
pub struct AgentArgs {
    /// Base URLs of the hosts' agents, comma-separated (e.g. the lines
    /// `cloudbus agent` prints). Without it, two simulated hosts are served
    /// in this process over HTTP on loopback.
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
    /// The bearer token the agents want (`cloudbus agent --token`).
    #[arg(long, env = "CLOUDBUS_AGENT_TOKEN", hide_env_values = true)]
    agent_token: Option<String>,
}

impl AgentArgs {
    /// The host service's settings.
    pub fn host_agents(&self) -> HostAgents {
        let defaults = HostAgents::default();
        let mut client = defaults
            .client
            .callback_listen(self.agent_callback_listen)
            .per_host_limit(self.agent_limit);
        if let Some(url) = &self.agent_callback_url {
            client = client.callback_url(url.clone());
        }
        if let Some(token) = &self.agent_token {
            client = client.bearer_token(token.clone());
        }
        HostAgents {
            urls: self.agents.clone(),
            client,
        }
    }
}
