//! A simulated hypervisor agent: real HTTP, pretend VMs. `cloudbus agent`
//! serves these, and the demo starts two in its own process when it is
//! given no agents.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use cloudbus::ErrorCode;
use cloudbus_agent::{Agent, CommandHandler, RunningAgent};

use super::{BootVm, ConnectHost, HaltVm, HostFacts, VmBooted, VmHalted};

/// One simulated host: its facts, the VMs it runs, and how long a boot
/// takes.
pub struct SimulatedHost {
    facts: HostFacts,
    boot_time: Duration,
    /// VM uuid to its console port and size (CPUs, GiB).
    running: Mutex<HashMap<String, (u16, u32, u32)>>,
}

impl SimulatedHost {
    /// A host named `name` with the given capacity; each boot takes
    /// `boot_time`.
    pub fn new(name: impl Into<String>, cpus: u32, memory_gb: u32, boot_time: Duration) -> Self {
        Self {
            facts: HostFacts {
                name: name.into(),
                cpus,
                memory_gb,
                free_cpus: None,
                free_memory_gb: None,
            },
            boot_time,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// The host's agent, ready to serve; with a token, it serves only
    /// management nodes that send it; with a limit, it runs at most that
    /// many commands at once; `callbacks` says how it reaches the nodes'
    /// HTTPS callback listeners.
    pub fn agent(
        self,
        token: Option<&str>,
        limit: Option<usize>,
        tls: Option<&AgentTls>,
        callbacks: &CallbackTls,
    ) -> Result<Agent, ErrorCode> {
        let mut agent = Agent::builder(self)
            .command::<ConnectHost>()
            .command::<BootVm>()
            .command::<HaltVm>();
        if let Some(token) = token {
            agent = agent.bearer_token(token);
        }
        if let Some(limit) = limit {
            agent = agent.max_concurrent(limit);
        }
        if let Some(ca) = &callbacks.node_ca {
            agent = agent.node_ca_pem(ca);
        }
        if let Some((cert, key)) = &callbacks.identity {
            agent = agent.callback_identity_pem(cert, key);
        }
        if let Some(tls) = tls {
            agent = agent.tls_pem(&tls.cert, &tls.key);
            if let Some(ca) = &tls.client_ca {
                agent = agent.client_ca_pem(ca);
            }
        }
        agent.build()
    }
}

impl CommandHandler<ConnectHost> for SimulatedHost {
    async fn handle(&self, _: ConnectHost) -> Result<HostFacts, ErrorCode> {
        let running = self.running.lock().expect("vm table");
        let (cpus, memory_gb) = running
            .values()
            .fold((0, 0), |(c, m), (_, vc, vm)| (c + vc, m + vm));
        Ok(HostFacts {
            free_cpus: Some(self.facts.cpus.saturating_sub(cpus)),
            free_memory_gb: Some(self.facts.memory_gb.saturating_sub(memory_gb)),
            ..self.facts.clone()
        })
    }
}

impl CommandHandler<BootVm> for SimulatedHost {
    async fn handle(&self, cmd: BootVm) -> Result<VmBooted, ErrorCode> {
        if cmd.cpus > self.facts.cpus || cmd.memory_gb > self.facts.memory_gb {
            return Err(ErrorCode::new(
                "hypervisor.TOO_BIG",
                format!("{} cannot hold VM {}", self.facts.name, cmd.name),
            ));
        }
        tokio::time::sleep(self.boot_time).await;
        let mut running = self.running.lock().expect("vm table");
        if running.contains_key(&cmd.vm_uuid) {
            return Err(ErrorCode::new(
                "hypervisor.VM_EXISTS",
                format!("VM {} already runs on {}", cmd.name, self.facts.name),
            ));
        }
        // Console ports in boot order, like a hypervisor's VNC displays.
        let port = 5900 + running.len() as u16;
        running.insert(cmd.vm_uuid.clone(), (port, cmd.cpus, cmd.memory_gb));
        Ok(VmBooted {
            console: format!("vnc://{}:{port}", self.facts.name),
            vm_uuid: cmd.vm_uuid,
        })
    }
}

impl CommandHandler<HaltVm> for SimulatedHost {
    async fn handle(&self, cmd: HaltVm) -> Result<VmHalted, ErrorCode> {
        match self.running.lock().expect("vm table").remove(&cmd.vm_uuid) {
            Some(_) => Ok(VmHalted {
                vm_uuid: cmd.vm_uuid,
            }),
            None => Err(ErrorCode::new(
                "hypervisor.NO_SUCH_VM",
                format!("no VM {} runs on {}", cmd.vm_uuid, self.facts.name),
            )),
        }
    }
}

/// A set of simulated hosts to serve: what `cloudbus agent` runs.
#[derive(Debug, Clone)]
pub struct Simulation {
    /// How many hosts.
    pub count: usize,
    /// Hosts are named `{prefix}-{first}`, `{prefix}-{first + 1}`…
    pub prefix: String,
    /// The number of the first host.
    pub first: usize,
    /// Host `i` listens on this port plus `i`, or each on a free port when
    /// the port is 0.
    pub listen: SocketAddr,
    /// CPUs of each host.
    pub cpus: u32,
    /// Memory of each host, in GiB.
    pub memory_gb: u32,
    /// How long each boot takes.
    pub boot_time: Duration,
    /// The bearer token management nodes must send, if any.
    pub token: Option<String>,
    /// Commands each host runs at once at most, if limited.
    pub max_concurrent: Option<usize>,
    /// Serve HTTPS with this certificate chain and key (PEM), and, with a
    /// client CA, only to management nodes with a certificate from it.
    pub tls: Option<AgentTls>,
    /// How the hosts reach the management nodes' HTTPS callback listeners.
    pub callbacks: CallbackTls,
}

/// TLS of simulated agents' callbacks to management nodes, all PEM.
#[derive(Debug, Clone, Default)]
pub struct CallbackTls {
    /// A CA to trust, besides the public roots, for the nodes' callback
    /// listeners.
    pub node_ca: Option<String>,
    /// Certificate chain and key presented to listeners that want mutual
    /// TLS.
    pub identity: Option<(String, String)>,
}

/// TLS settings of simulated agents, all PEM.
#[derive(Debug, Clone)]
pub struct AgentTls {
    /// The certificate chain every host serves.
    pub cert: String,
    /// Its private key.
    pub key: String,
    /// The CA management nodes' client certificates must come from.
    pub client_ca: Option<String>,
}

impl Simulation {
    /// The two hosts the demo drives: 8 CPUs and 16 GiB each, quick boots,
    /// on free loopback ports.
    pub fn demo() -> Self {
        Self {
            count: 2,
            prefix: "host".into(),
            first: 1,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            cpus: 8,
            memory_gb: 16,
            boot_time: Duration::from_millis(20),
            token: None,
            max_concurrent: None,
            tls: None,
            callbacks: CallbackTls::default(),
        }
    }

    /// Starts every host's agent; returns each host's name and agent.
    pub async fn serve(&self) -> std::io::Result<Vec<(String, RunningAgent)>> {
        let mut agents = Vec::with_capacity(self.count);
        for i in 0..self.count {
            let name = format!("{}-{}", self.prefix, self.first + i);
            let mut addr = self.listen;
            if addr.port() != 0 {
                let port = u16::try_from(usize::from(addr.port()) + i).map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!(
                            "{} hosts from port {} pass port 65535",
                            self.count,
                            addr.port()
                        ),
                    )
                })?;
                addr.set_port(port);
            }
            let agent = SimulatedHost::new(name.clone(), self.cpus, self.memory_gb, self.boot_time)
                .agent(
                    self.token.as_deref(),
                    self.max_concurrent,
                    self.tls.as_ref(),
                    &self.callbacks,
                )
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?
                .bind(addr)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("{name} on {addr}: {e}")))?;
            agents.push((name, agent));
        }
        Ok(agents)
    }
}
