//! `cloudbus publish`: publish one event.

use super::broker::BrokerArgs;

/// Flags of `cloudbus publish`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The event's type, e.g. `vm.VmStateChanged`.
    #[arg(value_name = "TYPE")]
    type_name: String,
    /// The event's body, a JSON object.
    #[arg(default_value = "{}")]
    json: String,
}

/// Publishes the event and returns once the broker has it.
pub async fn run(args: Args) -> anyhow::Result<()> {
    super::logging::init("warn");
    let bus = args.broker.observer().await?;
    let outcome = bus.publish_json(&args.type_name, args.json).await;
    bus.shutdown().await;
    Ok(outcome?)
}
