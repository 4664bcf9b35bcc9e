//! `cloudbus owner`: which node owns a resource.

use anyhow::bail;
use serde_json::json;

use super::broker::{BrokerArgs, DISCOVERY_LIMIT, DISCOVERY_QUIET};

/// Flags of `cloudbus owner`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The resource, usually its UUID.
    resource: String,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Prints the owner of the resource by the ring over the live nodes.
pub async fn run(args: Args) -> anyhow::Result<()> {
    super::logging::init("warn");
    let bus = args.broker.observer().await?;
    let view = bus.settled_cluster(DISCOVERY_QUIET, DISCOVERY_LIMIT).await;
    bus.shutdown().await;
    let Some(owner) = view.owner(&args.resource) else {
        bail!(
            "no live node on bus {:?}: nobody owns {:?}",
            args.broker.bus,
            args.resource
        );
    };
    if args.json {
        let value = json!({
            "resource": args.resource,
            "owner": owner.to_string(),
            "nodes": view.len(),
            "key_hash": format!("{:016x}", cloudbus::ring::key_hash(&args.resource)),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        println!("{owner}");
    }
    Ok(())
}
