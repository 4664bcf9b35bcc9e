//! The RabbitMQ transport against the real broker (CLOUDBUS_AMQP_URL, by
//! default the local one). Every test uses a bus name of its own, so tests
//! run in parallel without seeing each other. A broker that cannot be
//! reached fails these tests; they never skip.
//!
//! The scenarios shared with the in-memory broker (`memory_broker.rs`) are
//! in `scenarios/messaging.rs`; here are those about what only RabbitMQ
//! has: the declared topology, expiration in the queue, the prefetch, and
//! a foreign client speaking the wire protocol with nothing but lapin.

mod broker;
mod common;
mod proxy;
mod rabbit;
mod scenarios;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use broker::*;
use cloudbus::{Bus, Service, codes};
use common::*;
use tokio::sync::Notify;

scenarios::messaging::tests!(rabbit::Rabbit::new);

/// Waits until `rabbitmqctl` shows `queue` with `counts` (messages ready,
/// tab, unacknowledged): what the broker holds is the thing under test.
async fn wait_for_queue(queue: &str, counts: &str) {
    let want = format!("{queue}\t{counts}");
    let bus = queue.split(".message.").next().unwrap().to_string();
    within(&format!("{queue} to hold {counts}"), async {
        loop {
            let bus = bus.clone();
            let lines = tokio::task::spawn_blocking(move || {
                listing(
                    &[
                        "list_queues",
                        "name",
                        "messages_ready",
                        "messages_unacknowledged",
                    ],
                    &bus,
                )
            })
            .await
            .unwrap();
            if lines.contains(&want) {
                return;
            }
        }
    })
    .await
}

#[tokio::test]
async fn the_topology_is_exactly_the_documented_one() {
    let name = unique_bus("topo");
    let _cleanup = delete_bus_on_panic(&name);
    let a = node(&name).await;
    let b = node(&name).await;
    a.register(echo_service()).await.unwrap();
    let _events = b.subscribe_pattern("vm.*").await.unwrap();
    let (na, nb) = (a.node_id(), b.node_id());
    let mut expected = vec![
        format!("{name}.event.{na}"),
        format!("{name}.event.{nb}"),
        format!("{name}.message.cloudbus.{na}"),
        format!("{name}.message.cloudbus.{nb}"),
        format!("{name}.message.echo.{na}"),
    ];
    expected.sort();
    assert_eq!(queue_names(&name), expected);
    for queue in listing(&["list_queues", "name", "arguments"], &name) {
        assert!(
            queue.contains("x-expires"),
            "{queue} must expire when its node is gone"
        );
        assert_eq!(
            queue.contains("x-max-length"),
            queue.contains(".event."),
            "only event queues are capped: {queue}"
        );
    }
    assert_eq!(
        listing(&["list_exchanges", "name", "type", "durable"], &name),
        vec![
            format!("{name}.BROADCAST\ttopic\ttrue"),
            format!("{name}.P2P\tdirect\ttrue"),
        ]
    );
    let bindings = listing(
        &[
            "list_bindings",
            "source_name",
            "destination_name",
            "routing_key",
        ],
        &name,
    );
    assert!(bindings.contains(&format!("{name}.P2P\t{name}.message.echo.{na}\techo.{na}")));
    assert!(bindings.contains(&format!("{name}.BROADCAST\t{name}.event.{nb}\tvm.*")));
    assert!(bindings.contains(&format!(
        "{name}.BROADCAST\t{name}.event.{nb}\tcloudbus.node.*"
    )));

    // Unregistering removes the service's queue; stopping removes the rest.
    a.unregister("echo").await.unwrap();
    assert!(!queue_names(&name).contains(&format!("{name}.message.echo.{na}")));
    a.shutdown().await;
    b.shutdown().await;
    assert_eq!(queue_names(&name), Vec::<String>::new());
    delete_bus(&name).await;
}

#[tokio::test]
async fn a_request_that_expires_in_the_queue_never_runs() {
    let name = unique_bus("timeout");
    let _cleanup = delete_bus_on_panic(&name);
    let (a, b) = (node(&name).await, node(&name).await);
    let release = Arc::new(Notify::new());
    let handled = Arc::new(AtomicUsize::new(0));
    let (gate, count) = (release.clone(), handled.clone());
    b.register(
        Service::builder("work", ())
            .on_request(move |req: Work, _ctx| {
                let (gate, count) = (gate.clone(), count.clone());
                async move {
                    count.fetch_add(1, Ordering::SeqCst);
                    if req.key == "block" {
                        gate.notified().await;
                    }
                    Ok(Done { n: req.n })
                }
            })
            .concurrency(1)
            .build(),
    )
    .await
    .unwrap();
    let to_b = |key: &str, n, timeout| {
        a.call(Work { key: key.into(), n })
            .node(b.node_id())
            .timeout(timeout)
            .into_future()
    };
    // The first request holds the only slot until released, past its timeout.
    let err = to_b("block", 1, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert_eq!(err.code(), codes::TIMEOUT);
    // The second fills the consumer's prefetch of one (delivered, not acked)…
    let filler = to_b("filler", 2, Duration::from_secs(60));
    let queue = format!("{name}.message.work.{}", b.node_id());
    let rest = async {
        wait_for_queue(&queue, "0\t1").await;
        // …so the third waits in the queue, and dies there when its time is up.
        let err = to_b("late", 3, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(err.code(), codes::TIMEOUT);
        wait_for_queue(&queue, "0\t1").await;
        release.notify_one();
    };
    let (filler, ()) = futures::join!(filler, rest);
    assert_eq!(filler.unwrap().n, 2);
    let done = to_b("fresh", 4, Duration::from_secs(20)).await.unwrap();
    assert_eq!(done.n, 4);
    assert_eq!(
        handled.load(Ordering::SeqCst),
        3,
        "the expired request must not run"
    );
    // The first request's reply came after its caller gave up: counted, dropped.
    within("the late reply", async {
        while a.counters().late_replies.get() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(a.counters().timeouts.get(), 2);
    a.shutdown().await;
    b.shutdown().await;
    delete_bus(&name).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_requests_create_no_queue() {
    let name = unique_bus("load");
    let _cleanup = delete_bus_on_panic(&name);
    let (a, b) = (node(&name).await, node(&name).await);
    b.register(echo_service()).await.unwrap();
    let before = queue_names(&name);
    assert_eq!(before.len(), 5, "{before:?}");

    let load = async {
        let calls = (0..10_000).map(|i| {
            a.call(Echo {
                text: i.to_string(),
            })
            .node(b.node_id())
            .timeout(Duration::from_secs(120))
            .into_future()
        });
        futures::future::join_all(calls).await
    };
    // While the load runs, the broker's queues are watched.
    let done = std::sync::atomic::AtomicBool::new(false);
    let watch = async {
        let mut samples = Vec::new();
        while !done.load(Ordering::Acquire) {
            let bus = name.clone();
            samples.push(
                tokio::task::spawn_blocking(move || queue_names(&bus))
                    .await
                    .unwrap(),
            );
        }
        samples
    };
    let load = async {
        let replies = load.await;
        done.store(true, Ordering::Release);
        replies
    };
    let (replies, samples) = futures::join!(load, watch);
    for (i, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply.unwrap().text, i.to_string());
    }
    assert!(!samples.is_empty());
    for sample in samples {
        assert_eq!(sample, before, "the queue count never changes");
    }
    assert_eq!(queue_names(&name), before);
    assert_eq!(a.pending_calls(), 0);
    a.shutdown().await;
    b.shutdown().await;
    delete_bus(&name).await;
}

/// A foreign client that speaks the wire protocol with nothing but lapin.
struct RawClient {
    conn: lapin::Connection,
    channel: lapin::Channel,
    node: cloudbus::NodeId,
    replies: lapin::Consumer,
    bus: String,
}

impl RawClient {
    async fn new(bus: &str) -> Self {
        use lapin::options::*;
        let conn = lapin::Connection::connect(&url(), Default::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        let node = cloudbus::NodeId::random();
        let queue = format!("{bus}.message.cloudbus.{node}");
        let exclusive = QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        };
        channel
            .queue_declare(queue.as_str().into(), exclusive, Default::default())
            .await
            .unwrap();
        channel
            .queue_bind(
                queue.as_str().into(),
                format!("{bus}.P2P").into(),
                format!("cloudbus.{node}").into(),
                Default::default(),
                Default::default(),
            )
            .await
            .unwrap();
        let replies = channel
            .basic_consume(
                queue.as_str().into(),
                "raw".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .unwrap();
        RawClient {
            conn,
            channel,
            node,
            replies,
            bus: bus.to_string(),
        }
    }

    /// Properties of a well-formed request from this client.
    fn request(&self, type_name: &str) -> (cloudbus::MessageId, lapin::BasicProperties) {
        use lapin::types::{AMQPValue, FieldTable};
        let id = cloudbus::MessageId::random();
        let mut headers = FieldTable::default();
        headers.insert("cb-kind".into(), AMQPValue::LongString("request".into()));
        headers.insert(
            "cb-source".into(),
            AMQPValue::LongString(self.node.to_string().into()),
        );
        let props = lapin::BasicProperties::default()
            .with_message_id(id.to_string().into())
            .with_type(type_name.into())
            .with_content_type("application/json".into())
            .with_reply_to(format!("cloudbus.{}", self.node).into())
            .with_headers(headers);
        (id, props)
    }

    async fn publish(&self, key: &str, body: &[u8], props: lapin::BasicProperties) {
        self.channel
            .basic_publish(
                format!("{}.P2P", self.bus).into(),
                key.into(),
                Default::default(),
                body,
                props,
            )
            .await
            .unwrap();
    }

    /// The next reply: its correlation id and JSON body.
    async fn reply(&mut self) -> (String, serde_json::Value) {
        use futures::StreamExt;
        let delivery = within("a reply", self.replies.next())
            .await
            .unwrap()
            .unwrap();
        let correlation = delivery.properties.correlation_id().clone().unwrap();
        (
            correlation.to_string(),
            serde_json::from_slice(&delivery.data).unwrap(),
        )
    }
}

#[tokio::test]
async fn bad_input_from_the_wire_gets_an_error_reply_and_the_consumer_goes_on() {
    use cloudbus::transport::amqp::{AmqpConfig, AmqpTransport};
    let name = unique_bus("bad");
    let _cleanup = delete_bus_on_panic(&name);
    let b = Bus::builder()
        .name(&name)
        .transport(AmqpTransport::with_config(
            AmqpConfig::new(url()).max_body(1024),
        ))
        .build()
        .await
        .unwrap();
    b.register(echo_service()).await.unwrap();
    let mut raw = RawClient::new(&name).await;
    let key = format!("echo.{}", b.node_id());

    let malformed = |body: &serde_json::Value, what: &str| {
        assert_eq!(body["success"], false, "{what}: {body}");
        assert_eq!(body["error"]["code"], codes::MALFORMED, "{what}: {body}");
    };
    let (id, props) = raw.request("echo.Echo");
    raw.publish(&key, b"{not json", props).await;
    let (correlation, body) = raw.reply().await;
    assert_eq!(correlation, id.to_string());
    malformed(&body, "invalid JSON");

    let (id, props) = raw.request("echo.Echo");
    raw.publish(&key, br#"{"txt": 1}"#, props).await;
    let (correlation, body) = raw.reply().await;
    assert_eq!(correlation, id.to_string());
    malformed(&body, "wrong fields");

    let (_, props) = raw.request("");
    raw.publish(&key, b"{}", props).await;
    malformed(&raw.reply().await.1, "no type");

    let (_, props) = raw.request("echo.Echo");
    raw.publish(&key, b"{}", props.with_content_type("text/xml".into()))
        .await;
    malformed(&raw.reply().await.1, "wrong content type");

    let (_, props) = raw.request("echo.Echo");
    let big = format!(r#"{{"text": "{}"}}"#, "x".repeat(2000));
    raw.publish(&key, big.as_bytes(), props).await;
    let (_, body) = raw.reply().await;
    malformed(&body, "too large");
    assert!(
        body["error"]["description"]
            .as_str()
            .unwrap()
            .contains("limit of 1024")
    );

    let (_, props) = raw.request("echo.Nonsense");
    raw.publish(&key, b"{}", props).await;
    let (_, body) = raw.reply().await;
    assert_eq!(body["error"]["code"], codes::UNKNOWN_MESSAGE);

    // AMQP strings are bytes: one that is not UTF-8 (the protocol wants
    // UTF-8) must not cost the node its connection.
    let (id, props) = raw.request("echo.Echo");
    let mut headers = props.headers().clone().unwrap();
    headers.insert(
        "x-binary".into(),
        lapin::types::AMQPValue::LongString(b"\xff\xfe not utf-8".to_vec().into()),
    );
    raw.publish(
        &key,
        br#"{"text": "binary header"}"#,
        props.with_headers(headers),
    )
    .await;
    let (correlation, body) = raw.reply().await;
    assert_eq!(correlation, id.to_string());
    assert_eq!(body["reply"]["text"], "binary header", "{body}");

    // A reply nobody asked for, sent to b's node queue: counted, dropped.
    let (_, props) = raw.request("echo.EchoReply");
    let mut headers = props.headers().clone().unwrap();
    headers.insert(
        "cb-kind".into(),
        lapin::types::AMQPValue::LongString("reply".into()),
    );
    let stray = props
        .with_headers(headers)
        .with_correlation_id(cloudbus::MessageId::random().to_string().into());
    raw.publish(
        &format!("cloudbus.{}", b.node_id()),
        br#"{"success": true, "reply": {}}"#,
        stray,
    )
    .await;

    // After all that, a good request is served as usual.
    let (id, props) = raw.request("echo.Echo");
    raw.publish(&key, br#"{"text": "still here"}"#, props).await;
    let (correlation, body) = raw.reply().await;
    assert_eq!(correlation, id.to_string());
    assert_eq!(body["success"], true, "{body}");
    assert_eq!(body["reply"]["text"], "still here");

    within("the stray reply to be counted", async {
        while b.counters().late_replies.get() == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(b.counters().malformed.get() >= 3);
    raw.conn.close(200, "done".into()).await.unwrap();
    b.shutdown().await;
    delete_bus(&name).await;
}

/// amqprs closes a connection or channel that is dropped open from a task
/// it spawns; a bus kept past its runtime (returned from `block_on`) must
/// still drop without a panic.
#[test]
fn a_bus_outliving_its_runtime_drops_quietly() {
    let name = unique_bus("late-drop");
    let _cleanup = delete_bus_on_panic(&name);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bus = runtime.block_on(async {
        let bus = Bus::builder()
            .name(&name)
            .amqp(url())
            .build()
            .await
            .unwrap();
        bus.register(echo_service()).await.unwrap();
        bus
    });
    drop(runtime);
    drop(bus);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(delete_bus(&name));
}
