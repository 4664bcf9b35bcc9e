//! `cloudbus`: run the demo, operate a bus from a terminal.

mod alloc;
mod commands;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A typed message bus for Rust control planes.
#[derive(Parser)]
#[command(name = "cloudbus", version, about)]
struct Cli {
    /// Log format on stderr: text, or json for log pipelines (level: RUST_LOG).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "CLOUDBUS_LOG_FORMAT"
    )]
    log_format: commands::LogFormat,
    /// Send spans to an OpenTelemetry collector over OTLP/HTTP at this base
    /// URL (e.g. http://127.0.0.1:4318), so a call shows up as one trace
    /// across nodes. Default: OTEL_EXPORTER_OTLP_ENDPOINT (or
    /// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); unset, nothing is exported.
    #[arg(long, global = true, value_name = "URL")]
    otlp_endpoint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the example control plane (vm, host, storage, audit) on the embedded bus.
    Demo(commands::demo::Args),
    /// Run a management node hosting demo services on RabbitMQ until Ctrl-C/SIGTERM.
    Node(commands::node::Args),
    /// Send a request to a service and print the reply's JSON.
    Call(commands::call::Args),
    /// Publish an event.
    Publish(commands::publish::Args),
    /// Print events as JSON lines as they are published.
    Tail(commands::tail::Args),
    /// Show the live nodes of a bus: services, heartbeats, queues.
    Status(commands::status::Args),
    /// Ping every live node (or one) and print each round-trip time.
    Ping(commands::ping::Args),
    /// Show which node owns a resource by the hash ring (`route` still works).
    #[command(alias = "route")]
    Owner(commands::owner::Args),
    /// Show per message type how many each node handled and how long they took.
    Stats(commands::stats::Args),
    /// Serve simulated hypervisor agents over HTTP for the host service to drive.
    Agent(commands::agent::Args),
    /// Measure the bus against raw baselines in the same run (build with --release).
    Bench(commands::bench::Args),
}

impl Command {
    /// The subcommand's name, as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Demo(_) => "demo",
            Command::Node(_) => "node",
            Command::Call(_) => "call",
            Command::Publish(_) => "publish",
            Command::Tail(_) => "tail",
            Command::Status(_) => "status",
            Command::Ping(_) => "ping",
            Command::Owner(_) => "owner",
            Command::Stats(_) => "stats",
            Command::Agent(_) => "agent",
            Command::Bench(_) => "bench",
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    commands::set_log_format(cli.log_format);
    // Collectors group spans by service: `cloudbus-node`, `cloudbus-call`…
    let service_name = format!("cloudbus-{}", cli.command.name());
    if let Err(e) = commands::start_export(cli.otlp_endpoint.as_deref(), &service_name) {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        match cli.command {
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Node(args) => commands::node::run(args).await,
            Command::Call(args) => commands::call::run(args).await,
            Command::Publish(args) => commands::publish::run(args).await,
            Command::Tail(args) => commands::tail::run(args).await,
            Command::Status(args) => commands::status::run(args).await,
            Command::Ping(args) => commands::ping::run(args).await,
            Command::Owner(args) => commands::owner::run(args).await,
            Command::Stats(args) => commands::stats::run(args).await,
            Command::Bench(args) => commands::bench::run(args).await,
            Command::Agent(args) => commands::agent::run(args).await,
        }
    });
    drop(runtime);
    commands::finish_export();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
