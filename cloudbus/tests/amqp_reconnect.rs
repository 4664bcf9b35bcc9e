//! Losing the broker connection: the node reconnects by itself and
//! restores its queues, bindings and consumers; sends fail fast while it
//! is away; a request in flight across the outage still gets its reply.

mod broker;
mod common;
mod proxy;

use std::sync::Arc;
use std::time::Duration;

use broker::*;
use cloudbus::transport::amqp::{AmqpConfig, AmqpTransport};
use cloudbus::{Bus, Service, codes};
use common::*;
use proxy::Proxy;
use tokio::sync::Notify;

const WAIT: Duration = Duration::from_secs(20);

async fn node(bus: &str, url: String) -> Bus {
    let transport = AmqpTransport::with_config(
        AmqpConfig::new(url)
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200)),
    );
    Bus::builder()
        .name(bus)
        .transport(transport)
        // Nobody is declared dead during these outages.
        .heartbeat_interval(Duration::from_secs(30))
        .build()
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ must be reachable: {e}"))
}

async fn broker_is(bus: &Bus, connected: bool) {
    let mut changes = bus.broker_changes();
    tokio::time::timeout(WAIT, changes.wait_for(|c| *c == connected))
        .await
        .unwrap_or_else(|_| panic!("the broker connection did not become {connected}"))
        .unwrap();
}

#[tokio::test]
async fn a_lost_connection_comes_back_with_its_topology_and_sends_fail_fast_meanwhile() {
    let name = unique_bus("reconnect");
    let _cleanup = delete_bus_on_panic(&name);
    let proxy = Proxy::start(broker_addr()).await;
    let proxied = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port());
    let a = node(&name, proxied).await;
    let b = node(&name, url()).await;
    a.register(echo_named("api")).await.unwrap();
    b.register(echo_service()).await.unwrap();
    let (release, started) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    b.register(gated("slow", started.clone(), release.clone()))
        .await
        .unwrap();
    let mut events = a.subscribe::<VmStateChanged>().await.unwrap();
    let before = queue_names(&name);
    let echo = |text: &str| Echo { text: text.into() };
    a.call(echo("1")).node(b.node_id()).await.unwrap();

    // A request is in flight when the connection goes.
    let in_flight = tokio::spawn({
        let (a, target) = (a.clone(), b.node_id());
        async move {
            a.call(Work {
                key: "k".into(),
                n: 7,
            })
            .service("slow")
            .node(target)
            .timeout(WAIT)
            .await
        }
    });
    started.notified().await;
    proxy.cut();
    broker_is(&a, false).await;
    assert!(!a.broker_connected());

    // Meanwhile: fail fast, never wait for a timeout.
    let err = a
        .call(echo("2"))
        .node(b.node_id())
        .timeout(WAIT)
        .await
        .unwrap_err();
    assert!(err.is(codes::BROKER_UNAVAILABLE), "{err}");
    let err = a
        .publish(VmStateChanged {
            uuid: "x".into(),
            state: "y".into(),
        })
        .await
        .unwrap_err();
    assert!(err.is(codes::BROKER_UNAVAILABLE), "{err}");
    // The slow handler answers while the caller is away: the reply waits
    // in the caller's node queue. Away as the broker sees it: until the
    // broker has noticed the dropped connection, it would still hand the
    // reply to the old consumer, and the node queue is taken without acks
    // (docs/reliability.md: such a reply is lost, the call times out).
    let node_queue = format!("{name}.message.cloudbus.{}", a.node_id());
    until_queue_shows(
        &node_queue,
        "consumers",
        "0",
        WAIT,
        "the broker still lists a consumer",
    )
    .await;
    release.notify_one();

    proxy.restore();
    broker_is(&a, true).await;
    assert_eq!(a.counters().reconnects.get(), 1);
    let done = tokio::time::timeout(WAIT, in_flight)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        done.n, 7,
        "the reply sent during the outage arrives after it"
    );

    // Everything is back: calls out, calls in (A's service consumer),
    // events in (A's binding), and not one queue more or less.
    assert_eq!(a.call(echo("3")).node(b.node_id()).await.unwrap().text, "3");
    let reply = b
        .call(echo("4"))
        .service("api")
        .node(a.node_id())
        .await
        .unwrap();
    assert_eq!(reply.node, a.node_id().to_string());
    b.publish(VmStateChanged {
        uuid: "v1".into(),
        state: "Running".into(),
    })
    .await
    .unwrap();
    let event = tokio::time::timeout(WAIT, events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.uuid, "v1");
    assert_eq!(queue_names(&name), before);

    a.shutdown().await;
    b.shutdown().await;
    delete_bus(&name).await;
}

/// The connection drops after a request reached the broker but before the
/// broker's confirm reached the caller: the request is running, so the
/// call waits for its reply (which arrives after the reconnect) instead of
/// failing and inviting a retry. A plain message caught the same way fails,
/// saying that it may have been delivered.
#[tokio::test]
async fn a_request_whose_confirm_is_lost_with_the_connection_still_gets_its_reply() {
    let name = unique_bus("unconfirmed");
    let _cleanup = delete_bus_on_panic(&name);
    let proxy = Proxy::start(broker_addr()).await;
    let proxied = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port());
    let a = node(&name, proxied).await;
    let b = node(&name, url()).await;
    let (release, started) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    b.register(gated("slow", started.clone(), release.clone()))
        .await
        .unwrap();
    let (noted_tx, mut noted) = tokio::sync::mpsc::unbounded_channel();
    b.register(
        Service::builder("notes", ())
            .on_message(move |note: Note, _| {
                let noted_tx = noted_tx.clone();
                async move {
                    let _ = noted_tx.send(note.n);
                    Ok(())
                }
            })
            .build(),
    )
    .await
    .unwrap();

    // Nothing from the broker reaches A any more: no confirm, no reply.
    proxy.stall_downstream();
    let in_flight = tokio::spawn({
        let (a, target) = (a.clone(), b.node_id());
        async move {
            a.call(Work {
                key: "k".into(),
                n: 7,
            })
            .service("slow")
            .node(target)
            .timeout(WAIT)
            .await
        }
    });
    let note = tokio::spawn({
        let (a, target) = (a.clone(), b.node_id());
        async move {
            a.send(Note {
                key: "k".into(),
                n: 8,
            })
            .service("notes")
            .node(target)
            .await
        }
    });
    // Both reached B; their confirms wait in the proxy, and go with it.
    within("the request to reach B", started.notified()).await;
    assert_eq!(within("the note to reach B", noted.recv()).await, Some(8));
    proxy.cut();
    broker_is(&a, false).await;

    let err = within("the note's send to fail", note)
        .await
        .unwrap()
        .unwrap_err();
    assert!(err.is(codes::BROKER_UNAVAILABLE), "{err}");
    assert!(
        cloudbus::transport::is_delivery_unknown(&err),
        "the error says the note may have arrived: {err:?}"
    );
    assert!(
        !in_flight.is_finished(),
        "the call still waits for its reply"
    );

    // The reply goes to A's node queue once the broker no longer lists
    // the old consumer (docs/reliability.md: before that it would be lost).
    let node_queue = format!("{name}.message.cloudbus.{}", a.node_id());
    until_queue_shows(
        &node_queue,
        "consumers",
        "0",
        WAIT,
        "the broker still lists a consumer",
    )
    .await;
    release.notify_one();
    proxy.restore();
    broker_is(&a, true).await;
    let done = within("the call to end", in_flight)
        .await
        .unwrap()
        .expect("the reply of the unconfirmed request arrives after the reconnect");
    assert_eq!(done.n, 7);

    a.shutdown().await;
    b.shutdown().await;
    delete_bus(&name).await;
}

/// The broker closes either of a node's connections (an operator's
/// `close_connection`): the node notices and builds its session again,
/// the membership connection included, so that its heartbeats do not stop
/// while it goes on serving (the others would take it for dead).
#[tokio::test]
async fn a_connection_closed_by_the_broker_is_reopened() {
    let name = unique_bus("closed");
    let _cleanup = delete_bus_on_panic(&name);
    let a = node(&name, url()).await;
    let b = node(&name, url()).await;
    b.register(echo_service()).await.unwrap();
    for (closed, which) in ["", " membership"].into_iter().enumerate() {
        let conn_name = format!("cloudbus {name} {}{which}", a.node_id());
        let listing = rabbitmqctl(&[
            "list_connections",
            "pid",
            "client_properties",
            "-q",
            "--no-table-headers",
        ]);
        let pid = listing
            .lines()
            .find(|l| l.contains(&format!("\"{conn_name}\"")))
            .and_then(|l| l.split('\t').next())
            .unwrap_or_else(|| panic!("no connection {conn_name:?}"))
            .to_string();
        rabbitmqctl(&["close_connection", &pid, "test: operator closes it"]);
        wait_until("the session is built again", || {
            a.counters().reconnects.get() == closed as u64 + 1
        })
        .await;
        broker_is(&a, true).await;
        let reply = a
            .call(Echo {
                text: "back".into(),
            })
            .node(b.node_id())
            .await
            .unwrap();
        assert_eq!(reply.text, "back");
    }
    a.shutdown().await;
    b.shutdown().await;
    delete_bus(&name).await;
}

/// An operator deletes a service's queue under its consumer: the broker
/// cancels the consumer while the connection stays up. The node builds its
/// session again, so the service is back, instead of its callers hearing
/// `NO_SUCH_SERVICE` for good from a node that says it runs it.
#[tokio::test]
async fn a_service_queue_deleted_under_its_consumer_comes_back() {
    let name = unique_bus("queue-gone");
    let _cleanup = delete_bus_on_panic(&name);
    let a = node(&name, url()).await;
    let b = node(&name, url()).await;
    b.register(echo_service()).await.unwrap();
    let echo = |text: &str| Echo { text: text.into() };
    assert_eq!(a.call(echo("1")).node(b.node_id()).await.unwrap().text, "1");

    rabbitmqctl(&[
        "delete_queue",
        &format!("{name}.message.echo.{}", b.node_id()),
    ]);
    wait_until("B builds its session again", || {
        b.counters().reconnects.get() == 1
    })
    .await;
    broker_is(&b, true).await;
    assert_eq!(a.call(echo("2")).node(b.node_id()).await.unwrap().text, "2");
    assert_eq!(a.counters().reconnects.get(), 0, "A lost nothing");
    a.shutdown().await;
    b.shutdown().await;
    delete_bus(&name).await;
}

/// The broker closes a channel of a node whose connection stays up: here
/// the one its replies and events go out on, over an event published to an
/// exchange an operator deleted (404). The node builds its session again,
/// declaring the exchange and its bindings anew, and answers requests
/// again instead of letting every caller time out.
#[tokio::test]
async fn a_channel_closed_by_the_broker_is_opened_again() {
    let name = unique_bus("channel-gone");
    let _cleanup = delete_bus_on_panic(&name);
    let a = node(&name, url()).await;
    let b = node(&name, url()).await;
    a.register(echo_named("api")).await.unwrap();
    let call = |text: &str| {
        b.call(Echo { text: text.into() })
            .service("api")
            .node(a.node_id())
    };
    assert_eq!(call("1").await.unwrap().text, "1");

    delete_exchange(&format!("{name}.BROADCAST")).await;
    // Fire and forget: the broker's refusal comes afterwards, as a
    // channel close.
    a.publish(VmStateChanged {
        uuid: "v1".into(),
        state: "Running".into(),
    })
    .await
    .unwrap();
    wait_until("A builds its session again", || {
        a.counters().reconnects.get() == 1
    })
    .await;
    broker_is(&a, true).await;
    assert_eq!(call("2").await.unwrap().text, "2");
    a.shutdown().await;
    b.shutdown().await;
    delete_bus(&name).await;
}

/// Calls B from A until a call is answered. Meanwhile calls fail, with
/// `NO_SUCH_SERVICE` while B's binding is missing, `BROKER_UNAVAILABLE`
/// while A reconnects, or `TIMEOUT` for the one whose channel the broker
/// closed before confirming it (A cannot know it was not delivered).
async fn until_answered(a: &Bus, b: &Bus, text: &str) {
    within("B's service is reachable again", async {
        loop {
            let call = a.call(Echo { text: text.into() }).node(b.node_id());
            match call.timeout(Duration::from_millis(500)).await {
                Ok(reply) => break assert_eq!(reply.text, text),
                Err(e)
                    if e.is(codes::NO_SUCH_SERVICE)
                        || e.is(codes::BROKER_UNAVAILABLE)
                        || e.is(codes::TIMEOUT) =>
                {
                    tokio::task::yield_now().await
                }
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await;
}

/// An operator removes a node's binding, or deletes the `P2P` exchange and
/// every binding to it with it. A node that only serves never publishes
/// there, so no broker refusal tells it; it binds its queues again every
/// `rebind_every`, so that its service is back for callers instead of
/// `NO_SUCH_SERVICE` for good.
#[tokio::test]
async fn a_node_that_only_serves_binds_its_queues_again_after_an_exchange_is_deleted() {
    let name = unique_bus("rebind");
    let _cleanup = delete_bus_on_panic(&name);
    let a = node(&name, url()).await;
    let b = Bus::builder()
        .name(&name)
        .transport(AmqpTransport::with_config(
            AmqpConfig::new(url()).rebind_every(Duration::from_millis(100)),
        ))
        .heartbeat_interval(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    b.register(echo_service()).await.unwrap();
    let echo = |text: &str| Echo { text: text.into() };
    assert_eq!(a.call(echo("1")).node(b.node_id()).await.unwrap().text, "1");
    // One binding removed: B binds it again, without a reconnect.
    let key = format!("echo.{}", b.node_id());
    unbind(
        &format!("{name}.message.{key}"),
        &format!("{name}.P2P"),
        &key,
    )
    .await;
    until_answered(&a, &b, "2").await;
    assert_eq!(
        b.counters().reconnects.get(),
        0,
        "a binding alone needs no reconnect"
    );

    // The exchange deleted: A's next publish is refused (404), so A
    // declares it again, without B's bindings. B binds its own again once
    // the exchange is back, or, if its turn comes first, the broker refuses
    // the binding and B rebuilds its session; either way the service is back.
    delete_exchange(&format!("{name}.P2P")).await;
    until_answered(&a, &b, "3").await;
    a.shutdown().await;
    b.shutdown().await;
    delete_bus(&name).await;
}

#[tokio::test]
async fn an_unreachable_broker_fails_the_start_with_a_clear_error() {
    let proxy = Proxy::start(broker_addr()).await;
    proxy.cut();
    let url = format!("amqp://guest:secret-pw@127.0.0.1:{}/%2f", proxy.port());
    let err = tokio::time::timeout(
        WAIT,
        Bus::builder().name(unique_bus("down")).amqp(url).build(),
    )
    .await
    .expect("no hang")
    .unwrap_err();
    assert!(err.is(codes::BROKER_UNAVAILABLE), "{err}");
    assert!(
        !err.to_string().contains("secret-pw"),
        "the password is never shown: {err}"
    );
}

#[tokio::test]
async fn a_silently_stalled_link_is_noticed_by_heartbeats_and_replaced() {
    let name = unique_bus("stall");
    let _cleanup = delete_bus_on_panic(&name);
    let proxy = Proxy::start(broker_addr()).await;
    // AMQP heartbeats every 2 s (the shortest the client takes): a link
    // that stops moving bytes is declared lost after two missed beats.
    let proxied = format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f?heartbeat=2",
        proxy.port()
    );
    let transport = AmqpTransport::with_config(
        AmqpConfig::new(proxied)
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
            .connect_timeout(Duration::from_secs(2)),
    );
    let a = Bus::builder()
        .name(&name)
        .transport(transport)
        .heartbeat_interval(Duration::from_secs(30))
        .build()
        .await
        .unwrap();
    let b = node(&name, url()).await;
    b.register(echo_service()).await.unwrap();
    let echo = |text: &str| Echo { text: text.into() };
    a.call(echo("1")).node(b.node_id()).await.unwrap();

    proxy.stall();
    broker_is(&a, false).await;
    let err = a
        .call(echo("2"))
        .node(b.node_id())
        .timeout(WAIT)
        .await
        .unwrap_err();
    assert!(err.is(codes::BROKER_UNAVAILABLE), "{err}");
    // While stalled, reconnect attempts hang in the handshake and are
    // abandoned after the connect timeout, then retried.
    proxy.restore();
    broker_is(&a, true).await;
    assert_eq!(a.call(echo("3")).node(b.node_id()).await.unwrap().text, "3");
    a.shutdown().await;
    b.shutdown().await;
    delete_bus(&name).await;
}

/// A node that cannot read its event queue for a while (its link stalls;
/// an event flood does the same) must not take the silence of the others
/// for their death: their heartbeats are waiting in its queue. Its own
/// heartbeats, which come back through the same queue, tell it how far
/// behind it is. A call in flight to the other node survives the stall.
#[tokio::test]
async fn a_node_behind_on_its_event_queue_declares_no_live_node_dead() {
    let name = unique_bus("behind");
    let _cleanup = delete_bus_on_panic(&name);
    let proxy = Proxy::start(broker_addr()).await;
    let proxied = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port());
    let beat = Duration::from_millis(100);
    let member = |url: String| {
        let name = name.clone();
        async move {
            Bus::builder()
                .name(&name)
                .transport(AmqpTransport::new(url))
                .heartbeat_interval(beat)
                .heartbeat_misses(3)
                .build()
                .await
                .unwrap_or_else(|e| panic!("RabbitMQ must be reachable: {e}"))
        }
    };
    let a = member(proxied).await;
    let b = member(url()).await;
    let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    b.register(gated("work", started.clone(), release.clone()))
        .await
        .unwrap();
    a.wait_for_cluster(WAIT, |view| view.len() == 2)
        .await
        .unwrap();
    let call = tokio::spawn({
        let (a, b) = (a.clone(), b.node_id());
        async move {
            let work = Work {
                key: "vm-1".into(),
                n: 7,
            };
            a.call(work).node(b).timeout(WAIT).await
        }
    });
    started.notified().await;

    proxy.stall();
    // The fault lasts 15 heartbeat intervals: five times the 300 ms after
    // which a silent node is dead.
    tokio::time::sleep(beat * 15).await;
    proxy.restore();

    release.notify_one();
    let done = call.await.unwrap().expect("b was never taken for dead");
    assert_eq!(done.n, 7);
    a.shutdown().await;
    b.shutdown().await;
    delete_bus(&name).await;
}
