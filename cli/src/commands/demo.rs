//! `cloudbus demo`: the example control plane on the embedded bus.

use anyhow::Context as _;
use cloudbus::Bus;

/// Flags of `cloudbus demo`.
#[derive(clap::Args)]
pub struct Args {
    /// Log every send, delivery and publish on stderr, to see the flow.
    #[arg(long)]
    trace: bool,
    #[command(flatten)]
    agents: super::host_agents::AgentArgs,
}

/// Runs the demo and prints its narration on stdout.
pub async fn run(args: Args) -> anyhow::Result<()> {
    super::logging::init(if args.trace {
        "warn,cloudbus_demo=info"
    } else {
        "warn"
    });
    let mut builder = Bus::builder();
    if args.trace {
        builder = builder.interceptor(cloudbus_demo::trace::Trace);
    }
    let bus = builder.build().await.context("starting the embedded bus")?;
    println!("cloudbus demo: an example control plane on the embedded bus");
    cloudbus_demo::run(&bus, &args.agents.host_agents()?, |line| println!("{line}"))
        .await
        .context("the demo failed")?;
    Ok(())
}
