//! Several nodes in one process over the in-memory broker: the P2P and
//! BROADCAST semantics of the wire protocol, with bodies crossing as JSON.
//! The scenarios shared with RabbitMQ (`amqp.rs`) are in
//! `scenarios/messaging.rs`; here are those that need the in-memory
//! broker's own means: a bare node speaking only the wire protocol.

mod common;
mod scenarios;

use cloudbus::address::{Destination, ServiceAddress};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cloudbus::transport::memory::MemoryBroker;
use cloudbus::transport::{Inbound, Transport, WireMessage};
use cloudbus::{Bus, Envelope, ErrorCode, Kind, NodeId, Ping, codes};
use common::*;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

scenarios::messaging::tests!(scenarios::Memory::new);

const BUS: &str = "memtest";

async fn node(broker: &MemoryBroker) -> Bus {
    Bus::builder()
        .name(BUS)
        .transport(broker.transport())
        .build()
        .await
        .unwrap()
}

/// A bare node on the broker that speaks only the wire protocol.
struct Raw {
    transport: cloudbus::transport::memory::MemoryTransport,
    node: NodeId,
    replies: mpsc::UnboundedReceiver<WireMessage>,
}

struct Capture(mpsc::UnboundedSender<WireMessage>);

impl Inbound for Capture {
    fn service_message(&self, _service: Arc<str>, message: WireMessage) -> BoxFuture<'static, ()> {
        self.0.send(message).unwrap();
        Box::pin(async {})
    }
    fn event(&self, _message: WireMessage) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
    fn undeliverable(&self, _request: cloudbus::MessageId, _error: ErrorCode) {}
    fn malformed(
        &self,
        _reply: Option<(String, cloudbus::MessageId)>,
        _error: ErrorCode,
    ) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

async fn raw_node(broker: &MemoryBroker) -> Raw {
    let transport = broker.transport();
    let node = NodeId::random();
    let (tx, replies) = mpsc::unbounded_channel();
    transport
        .start(BUS, node, Arc::new(Capture(tx)))
        .await
        .unwrap();
    transport.add_service("cloudbus", 1).await.unwrap();
    Raw {
        transport,
        node,
        replies,
    }
}

impl Raw {
    async fn request(
        &mut self,
        to: &Bus,
        type_name: &'static str,
        body: &'static [u8],
    ) -> WireMessage {
        let mut envelope = Envelope::new(Kind::Request, type_name, self.node);
        envelope.reply_to = Some(format!("cloudbus.{}", self.node));
        envelope.timeout = Some(Duration::from_secs(5));
        let to = ServiceAddress::new(cloudbus::message::service_of(type_name), to.node_id());
        self.transport
            .send(
                Destination::Service(to),
                &envelope,
                Bytes::from_static(body),
            )
            .await
            .unwrap();
        let reply = self.replies.recv().await.unwrap();
        assert_eq!(reply.envelope.kind, Kind::Reply);
        assert_eq!(reply.envelope.correlation_id, Some(envelope.id));
        reply
    }
}

fn error_code(reply: &WireMessage) -> String {
    let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(json["success"], false, "{json}");
    json["error"]["code"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn bad_input_from_the_wire_gets_an_error_reply_and_the_service_keeps_going() {
    let broker = MemoryBroker::new();
    let bus = node(&broker).await;
    bus.register(echo_service()).await.unwrap();
    let mut raw = raw_node(&broker).await;

    let reply = raw.request(&bus, "echo.Echo", b"{not json").await;
    assert_eq!(error_code(&reply), codes::MALFORMED);
    let reply = raw.request(&bus, "echo.Echo", br#"{"wrong": 1}"#).await;
    assert_eq!(error_code(&reply), codes::MALFORMED);
    let reply = raw.request(&bus, "echo.Nope", b"{}").await;
    assert_eq!(error_code(&reply), codes::UNKNOWN_MESSAGE);
    assert_eq!(bus.counters().malformed.get(), 2);

    let reply = raw
        .request(&bus, "echo.Echo", br#"{"text": "still here"}"#)
        .await;
    let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    assert_eq!(json["success"], true);
    assert_eq!(json["reply"]["text"], "still here");
    assert_eq!(reply.envelope.type_name, "echo.EchoReply");
}

#[tokio::test]
async fn replies_nobody_waits_for_are_counted_and_dropped() {
    let broker = MemoryBroker::new();
    let bus = node(&broker).await;
    let raw = raw_node(&broker).await;
    let mut stray = Envelope::new(Kind::Reply, "echo.EchoReply", raw.node);
    stray.correlation_id = Some(cloudbus::MessageId::random());
    let to = Destination::Service(ServiceAddress::of_node(bus.node_id()));
    let body = Bytes::from_static(br#"{"success":true,"reply":{}}"#);
    raw.transport.send(to, &stray, body.clone()).await.unwrap();
    raw.transport.send(to, &stray, body).await.unwrap();
    // A ping from another node is queued behind the stray replies on the
    // same node queue, so once it is answered they have been handled.
    let pong = Bus::builder()
        .name(BUS)
        .transport(broker.transport())
        .build()
        .await
        .unwrap()
        .call(Ping {})
        .node(bus.node_id())
        .await
        .unwrap();
    assert_eq!(pong.node, bus.node_id());
    assert_eq!(bus.counters().late_replies.get(), 2);
}
