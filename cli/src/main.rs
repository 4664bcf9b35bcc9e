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

fn main() -> ExitCode {
    let cli = Cli::parse();
    commands::set_log_format(cli.log_format);
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
            Command::Owner(args) => commands::owner::run(args).await,
            Command::Stats(args) => commands::stats::run(args).await,
            Command::Bench(args) => commands::bench::run(args).await,
            Command::Agent(args) => commands::agent::run(args).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
