//! What arrives from the transport: requests and messages for local
//! services, replies for local callers, events for local subscribers.

use std::sync::{Arc, Weak};

use futures::future::BoxFuture;

use super::{Bus, BusInner, builtin};
use crate::cluster::NodeHeartbeat;
use crate::service::{Delivery, ReplyMeta, ReplyTarget};
use crate::transport::{Inbound, WireMessage};
use crate::{Body, ErrorCode, Kind, Message, MessageId, NodeId, decode_reply};

/// The bus as the transport sees it. Holds the bus weakly so a transport
/// never keeps a shut-down bus alive.
pub(crate) struct BusInbound(Weak<BusInner>);

impl BusInbound {
    pub(crate) fn new(bus: &Bus) -> Self {
        Self(Arc::downgrade(&bus.inner))
    }

    fn bus(&self) -> Option<Bus> {
        self.0.upgrade().map(|inner| Bus { inner })
    }
}

impl Inbound for BusInbound {
    fn service_message(&self, service: Arc<str>, message: WireMessage) -> BoxFuture<'static, ()> {
        // Most deliveries are handed over without waiting: then there is
        // nothing to box (a zero-sized future allocates nothing).
        self.bus()
            .and_then(|bus| bus.on_service_message(&service, message))
            .unwrap_or_else(|| Box::pin(std::future::ready(())))
    }

    fn event(&self, message: WireMessage) -> BoxFuture<'static, ()> {
        let blocked = match self.bus() {
            Some(bus) => bus.on_event(message),
            None => Vec::new(),
        };
        if blocked.is_empty() {
            // Nothing to wait for, and a zero-sized future: no allocation.
            Box::pin(std::future::ready(()))
        } else {
            Box::pin(super::subscribe::deliver_blocked(blocked))
        }
    }

    fn undeliverable(&self, request: MessageId, error: ErrorCode) {
        if let Some(bus) = self.bus() {
            bus.inner.pending.complete(request, Err(error));
        }
    }

    fn connection_changed(&self, connected: bool) {
        if let Some(bus) = self.bus() {
            bus.on_connection_changed(connected);
        }
    }

    fn malformed(
        &self,
        reply: Option<(String, MessageId)>,
        error: ErrorCode,
    ) -> BoxFuture<'static, ()> {
        let bus = self.bus();
        Box::pin(async move {
            let Some(bus) = bus else { return };
            bus.inner.stats.malformed.inc();
            let Some((reply_to, request)) = reply else {
                return;
            };
            let meta = ReplyMeta {
                request,
                request_type: "unreadable".into(),
                caller: NodeId::from(uuid::Uuid::nil()),
                style: crate::ReplyStyle::Reply,
            };
            bus.finish_request(&meta, ReplyTarget::Remote(reply_to), Err(error))
                .await;
        })
    }
}

impl Bus {
    fn on_connection_changed(&self, connected: bool) {
        if connected {
            self.inner.stats.reconnects.inc();
            let now = self.broker();
            let mut last = self
                .inner
                .last_broker
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if now.is_some() && *last != now {
                self.inner.stats.failovers.inc();
                tracing::info!(from = ?*last, to = ?now, "failed over to another broker");
                *last = now;
            }
            drop(last);
            // Whoever declared this node dead meanwhile learns it is back.
            self.inner.wake.notify_one();
        }
        self.inner.connected.send_replace(connected);
    }

    /// Hands a message from a service queue over; what is left to wait
    /// for (a busy service, an error to send back), if anything.
    fn on_service_message(
        &self,
        service: &str,
        message: WireMessage,
    ) -> Option<BoxFuture<'static, ()>> {
        let WireMessage { mut envelope, body } = message;
        // The queue it came from names the service: interceptors and
        // handlers see the same envelope as on the sending node.
        envelope.service = Some(service.to_string().into());
        let reply = match envelope.kind {
            Kind::Reply => {
                self.on_reply(service, envelope, &body);
                return None;
            }
            Kind::Event => {
                self.inner.stats.malformed.inc();
                tracing::warn!(service, type_name = %envelope.type_name, "event arrived on a service queue; dropped");
                return None;
            }
            Kind::Message => ReplyTarget::None,
            Kind::Request => match &envelope.reply_to {
                Some(reply_to) => ReplyTarget::Remote(reply_to.clone()),
                None => {
                    self.inner.stats.malformed.inc();
                    tracing::warn!(service, type_name = %envelope.type_name, "request without reply_to; dropped");
                    return None;
                }
            },
        };
        let deadline = envelope
            .timeout
            .map(|t| super::routing::deadline_after(t).into_std());
        let delivery = Delivery {
            envelope: Arc::new(envelope),
            body: Body::Json(body),
            reply,
            deadline,
        };
        let Some(runtime) = self.service(service) else {
            let error = ErrorCode::no_such_service(service);
            let responder =
                crate::service::Responder::new(self.clone(), &delivery.envelope, delivery.reply);
            return Some(Box::pin(responder.answer(Err(error))));
        };
        let stalled = runtime.deliver_now(self, delivery)?;
        let bus = self.clone();
        Some(Box::pin(async move {
            runtime.resume(&bus, stalled).await;
        }))
    }

    fn on_reply(&self, service: &str, envelope: crate::Envelope, body: &[u8]) {
        if service != builtin::SERVICE {
            tracing::warn!(service, "reply arrived on a service queue; dropped");
            self.inner.stats.malformed.inc();
            return;
        }
        let Some(request) = envelope.correlation_id else {
            self.inner.stats.malformed.inc();
            tracing::warn!(type_name = %envelope.type_name, "reply without correlation_id; dropped");
            return;
        };
        // A caller gets an undecodable reply as an error, not as a timeout.
        let outcome = decode_reply(body).unwrap_or_else(Err);
        if !self.inner.pending.complete(request, outcome) {
            self.inner.stats.late_replies.inc();
            tracing::debug!(%request, "reply for a caller that no longer waits; dropped");
        }
    }

    fn on_event(&self, message: WireMessage) -> super::subscribe::Blocked {
        let WireMessage { envelope, body } = message;
        if envelope.source == self.inner.node {
            if envelope.type_name == NodeHeartbeat::TYPE {
                // How far this node has read its event queue.
                self.inner.members.beat_came_back(envelope.id);
            }
            // Local subscribers got it when it was published.
            return Vec::new();
        }
        if crate::cluster::is_membership(&envelope.type_name) {
            self.on_membership(&envelope.type_name, &body);
        }
        let body = Body::Json(body);
        if let Some(api) = envelope.api_id {
            if let Some(copy) = body.share() {
                self.inner.pending.complete(api, Ok(copy));
            }
        }
        self.inner
            .subscribers
            .dispatch(&Arc::new(envelope), &body, &self.inner.stats)
    }
}
