//! `cloudbus agent`: simulated hypervisor agents, one HTTP listener per
//! host, for the demo's host service to drive.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use cloudbus_demo::hypervisor::{AgentTls, CallbackTls, Simulation};

/// Flags of `cloudbus agent`.
#[derive(clap::Args)]
pub struct Args {
    /// How many hosts to simulate.
    #[arg(long, default_value_t = 2)]
    hosts: usize,
    /// Where the first host listens; host N listens on the next ports. Port
    /// 0 gives each host a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7070")]
    listen: SocketAddr,
    /// Hosts are named PREFIX-FIRST, PREFIX-(FIRST+1)…
    #[arg(long, default_value = "host")]
    prefix: String,
    /// The number of the first host; give agent processes distinct ranges.
    #[arg(long, default_value_t = 1)]
    first: usize,
    /// CPUs of each host.
    #[arg(long, default_value_t = 8)]
    cpus: u32,
    /// Memory of each host, in GiB.
    #[arg(long, default_value_t = 16)]
    memory_gb: u32,
    /// How long booting a VM takes, e.g. `2s`.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    boot_time: Duration,
    /// Serve only management nodes that send this bearer token.
    #[arg(long, env = "CLOUDBUS_AGENT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Commands each host runs at once at most; the others wait their turn.
    #[arg(long, value_name = "N")]
    max_concurrent: Option<usize>,
    /// Serve HTTPS with this certificate chain (PEM file; with --tls-key).
    #[arg(long, value_name = "PEM_FILE", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM file).
    #[arg(long, value_name = "PEM_FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Mutual TLS: serve only management nodes presenting a certificate
    /// from this CA (PEM file); needs --tls-cert.
    #[arg(long, value_name = "PEM_FILE", requires = "tls_cert")]
    client_ca: Option<std::path::PathBuf>,
    /// Trust this CA (PEM file), besides the public roots, for management
    /// nodes whose callback listener serves HTTPS
    /// (`cloudbus node --agent-callback-cert`).
    #[arg(long, value_name = "PEM_FILE")]
    node_ca: Option<std::path::PathBuf>,
    /// Present this certificate chain (PEM file; with --callback-key) on
    /// callbacks, to nodes that take results only from agents of their CA
    /// (`cloudbus node --agent-callback-client-ca`).
    #[arg(long, value_name = "PEM_FILE", requires = "callback_key")]
    callback_cert: Option<std::path::PathBuf>,
    /// The private key of --callback-cert (PEM file).
    #[arg(long, value_name = "PEM_FILE", requires = "callback_cert")]
    callback_key: Option<std::path::PathBuf>,
}

fn read_pem(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Serves the hosts until Ctrl-C or SIGTERM; prints `NAME URL` per host on
/// stdout first, so scripts can hand the URLs to `cloudbus node --agents`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    super::logging::init("info");
    anyhow::ensure!(args.hosts > 0, "--hosts must be at least 1");
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(AgentTls {
            cert: read_pem(cert)?,
            key: read_pem(key)?,
            client_ca: args.client_ca.as_deref().map(read_pem).transpose()?,
        }),
        _ => None,
    };
    let simulation = Simulation {
        count: args.hosts,
        prefix: args.prefix,
        first: args.first,
        listen: args.listen,
        cpus: args.cpus,
        memory_gb: args.memory_gb,
        boot_time: args.boot_time,
        token: args.token,
        max_concurrent: args.max_concurrent,
        tls,
        callbacks: CallbackTls {
            node_ca: args.node_ca.as_deref().map(read_pem).transpose()?,
            identity: match (&args.callback_cert, &args.callback_key) {
                (Some(cert), Some(key)) => Some((read_pem(cert)?, read_pem(key)?)),
                _ => None,
            },
        },
    };
    let agents = simulation
        .serve()
        .await
        .context("starting the simulated hosts' agents")?;
    for (name, agent) in &agents {
        // `name=url`: what `--agents` takes, line for line.
        println!("{name}={}", agent.url());
    }
    tracing::info!(hosts = agents.len(), "agents serving");
    super::signal::stop_requested().await;
    tracing::info!("stopping: finishing accepted commands and their callbacks");
    for (name, agent) in agents {
        agent
            .shutdown()
            .await
            .with_context(|| format!("stopping {name}'s agent"))?;
    }
    Ok(())
}
