//! `cloudbus call`: send one request and print the reply.

use std::time::Duration;

use anyhow::{Context as _, bail};
use cloudbus::NodeId;

use super::broker::{BrokerArgs, DISCOVERY_LIMIT, DISCOVERY_QUIET};

/// Flags of `cloudbus call`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    broker: BrokerArgs,
    /// The service to call, e.g. `vm`.
    service: String,
    /// The request's type, e.g. `vm.CreateVm`.
    #[arg(value_name = "TYPE")]
    type_name: String,
    /// The request's body, a JSON object.
    #[arg(default_value = "{}")]
    json: String,
    /// Call the service on this node (for the built-in `cloudbus` service,
    /// without it: a member at random, named on stderr).
    #[arg(long, conflicts_with = "owner_of")]
    node: Option<NodeId>,
    /// Call the service on the node that owns this resource (by the ring).
    #[arg(long)]
    owner_of: Option<String>,
    /// How long to wait for the reply, e.g. `10s` or `500ms`.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The request is a non-blocking API answered by an event of this type.
    #[arg(long, value_name = "EVENT_TYPE")]
    api_event: Option<String>,
}

/// Prints the reply's JSON on stdout; an error reply is an error (exit 1).
/// A built-in request (service `cloudbus`) goes to a member of the bus,
/// and which one answered is said on stderr.
pub async fn run(args: Args) -> anyhow::Result<()> {
    super::logging::init("warn");
    let bus = args.broker.observer().await?;
    let outcome = call(&bus, &args).await;
    bus.shutdown().await;
    let (reply, answered_by) = outcome?;
    let value: serde_json::Value =
        serde_json::from_slice(&reply).context("the reply is not JSON")?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    if let Some(node) = answered_by {
        eprintln!("answered by node {node}");
    }
    Ok(())
}

/// The reply, and the node that answered when this command chose it.
async fn call(bus: &cloudbus::Bus, args: &Args) -> anyhow::Result<(bytes::Bytes, Option<NodeId>)> {
    let mut request = bus
        .call_json(&args.type_name, args.json.clone())
        .service(args.service.clone())
        .timeout(args.timeout);
    let builtin = args.service == cloudbus::address::NODE_SERVICE;
    let mut chosen = None;
    if let Some(node) = args.node {
        request = request.node(node);
    } else {
        // Learn who runs what (and, for the ring, every member) first.
        let view = bus.settled_cluster(DISCOVERY_QUIET, DISCOVERY_LIMIT).await;
        if view.is_empty() {
            bail!("no node of bus {:?} answered", bus.name());
        }
        if let Some(resource) = &args.owner_of {
            request = request.owner_of(resource);
            chosen = view.owner(resource);
        } else if builtin {
            // Every member runs the built-in service; this tool's own copy
            // only takes its replies. Ask one member, at random.
            let nodes = view.nodes();
            let node = nodes[uuid::Uuid::new_v4().as_u128() as usize % nodes.len()].node;
            request = request.node(node);
            chosen = Some(node);
        }
    }
    if let Some(event) = &args.api_event {
        request = request.api_event(event);
    }
    let reply = request.await?;
    Ok((reply, if builtin { chosen.or(args.node) } else { None }))
}
