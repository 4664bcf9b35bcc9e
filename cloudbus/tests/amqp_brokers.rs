//! Several broker addresses: a node takes a comma-separated list, connects
//! to one that answers, moves to another when its connection is lost, and
//! never shows a password, whatever the input.

mod broker;
mod common;
mod proxy;

use std::time::Duration;

use broker::*;
use cloudbus::transport::amqp::{AmqpConfig, AmqpTransport};
use cloudbus::{Bus, codes};
use common::*;
use proxy::Proxy;

const WAIT: Duration = Duration::from_secs(20);

async fn start(bus: &str, urls: &str) -> Result<Bus, cloudbus::ErrorCode> {
    let transport = AmqpTransport::with_config(
        AmqpConfig::new(urls)
            .connect_timeout(Duration::from_secs(5))
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200)),
    );
    Bus::builder()
        .name(bus)
        .transport(transport)
        .heartbeat_interval(Duration::from_secs(30))
        .build()
        .await
}

/// A port on which nothing listens: a broker that is down.
async fn dead_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

fn at(port: u16, password: &str) -> String {
    format!("amqp://guest:{password}@127.0.0.1:{port}/%2f")
}

#[tokio::test]
async fn a_node_connects_to_whichever_broker_of_its_list_answers() {
    let name = unique_bus("brokers-list");
    let _cleanup = delete_bus_on_panic(&name);
    let dead = at(dead_port().await, "guest");
    let peer = start(&name, &url()).await.unwrap();
    peer.register(echo_service()).await.unwrap();
    // The dead broker first and last: a random start meets it either way.
    for urls in [format!("{dead},{}", url()), format!("{}, {dead}", url())] {
        let bus = start(&name, &urls).await.expect("one broker answers");
        let reply = bus
            .call(echo("hi"))
            .node(peer.node_id())
            .timeout(WAIT)
            .await
            .unwrap();
        assert_eq!(reply.text, "hi");
        bus.shutdown().await;
    }
    peer.shutdown().await;
    delete_bus(&name).await;
}

#[tokio::test]
async fn when_every_broker_is_down_the_error_names_them_all_without_passwords() {
    let name = unique_bus("brokers-down");
    let _cleanup = delete_bus_on_panic(&name);
    let (a, b) = (dead_port().await, dead_port().await);
    let urls = format!("{},{}", at(a, "first-secret"), at(b, "second-secret"));
    let err = start(&name, &urls).await.unwrap_err();
    assert!(err.is(codes::BROKER_UNAVAILABLE), "{err}");
    let text = format!("{err} {err:?}");
    assert!(
        !text.contains("first-secret") && !text.contains("second-secret"),
        "{text}"
    );
    assert!(text.contains(&format!("127.0.0.1:{a}")), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{b}")), "{text}");
    // The configuration itself never shows them either.
    let config = format!("{:?}", AmqpConfig::new(urls));
    assert!(!config.contains("secret"), "{config}");
    // Malformed lists and URLs are refused with the passwords hidden too.
    for bad in [
        "amqp://guest:oops-secret@127.0.0.1:1/%2f,amqp://guest:guest@",
        "amqp://guest:sec/ret@127.0.0.1:1",
        ",,",
    ] {
        let err = start(&name, bad).await.unwrap_err();
        let text = format!("{err}");
        assert!(
            !text.contains("secret") && !text.contains("sec/ret"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_lost_connection_moves_to_the_next_broker_and_restores_the_topology() {
    let name = unique_bus("brokers-failover");
    let _cleanup = delete_bus_on_panic(&name);
    // Two "brokers": two proxies in front of the one real broker, so
    // cutting one is the death of a cluster node.
    let (one, two) = (
        Proxy::start(broker_addr()).await,
        Proxy::start(broker_addr()).await,
    );
    let urls = format!("{},{}", at(one.port(), "guest"), at(two.port(), "guest"));
    let node = start(&name, &urls).await.unwrap();
    node.register(echo_service()).await.unwrap();
    let caller = start(&name, &url()).await.unwrap();
    let call = || caller.call(echo("x")).node(node.node_id()).timeout(WAIT);
    call().await.unwrap();
    // Cut whichever proxy the node uses: both, one after the other, with
    // the other restored in between, so it must move each time.
    for (cut, spare) in [(&one, &two), (&two, &one)] {
        spare.restore();
        cut.cut();
        let mut changes = node.broker_changes();
        // It may already be gone from the cut proxy, or still be on the
        // spare: either way it ends up connected, and its queue serves.
        tokio::time::timeout(WAIT, changes.wait_for(|connected| *connected))
            .await
            .expect("reconnected")
            .unwrap();
        // Its queue outlived the cut: a call made now is answered once it
        // consumes again.
        call()
            .await
            .expect("the node serves through the other broker");
    }
    caller.shutdown().await;
    node.shutdown().await;
    delete_bus(&name).await;
}
