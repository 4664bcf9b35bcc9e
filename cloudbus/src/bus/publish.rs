//! Events: publish to every subscriber; subscribe by type or pattern.

use std::sync::Arc;

use tracing::Instrument as _;

use super::event_queue::{Overflow, QueueReceiver, event_queue};
use super::subscribe::{SubscriberInfo, deliver_blocked};
use super::{Bus, RawSubscription, Subscription};
use crate::address::Pattern;
use crate::{Body, Envelope, ErrorCode, Event, Kind};

impl Bus {
    /// Publishes an event: every subscription whose pattern matches its
    /// type, on every node, gets a copy.
    pub async fn publish<E: Event>(&self, event: E) -> Result<(), ErrorCode> {
        let mut envelope = Envelope::new(Kind::Event, E::TYPE, self.inner.node);
        crate::service::inherit_task_context(&mut envelope.headers);
        self.publish_envelope(envelope, Body::new(event)).await
    }

    pub(crate) async fn publish_envelope(
        &self,
        mut envelope: Envelope,
        body: Body,
    ) -> Result<(), ErrorCode> {
        // Publishing to local subscribers never waits (unless one applies
        // backpressure): take from the task's budget so a publishing loop
        // still yields (see `request::cooperate`).
        tokio::task::coop::consume_budget().await;
        self.check_open()?;
        self.intercept_publish(&mut envelope, &body)?;
        envelope.check_wire_limits()?;
        // Heartbeats and the like are the bus's own housekeeping: tracing
        // them would bury the calls in a trace per node per second.
        if crate::cluster::is_membership(&envelope.type_name) {
            return self.publish_traced(envelope, body).await;
        }
        let span = crate::trace_context::sending_span(&envelope, self.inner.node);
        crate::trace_context::inject(&span, &mut envelope.headers);
        let outcome = self
            .publish_traced(envelope, body)
            .instrument(span.clone())
            .await;
        crate::trace_context::sent(&span, &outcome);
        outcome
    }

    async fn publish_traced(&self, envelope: Envelope, body: Body) -> Result<(), ErrorCode> {
        let body = body.into_shared();
        if let Some(transport) = &self.inner.transport {
            // Other nodes get it through the broker; this node's own copy
            // coming back is ignored, local subscribers are served below.
            transport.publish(&envelope, body.to_json()?).await?;
        }
        let blocked =
            self.inner
                .subscribers
                .dispatch(&Arc::new(envelope), &body, &self.inner.stats);
        // A backpressured subscriber that is full holds the publisher here.
        deliver_blocked(blocked).await;
        Ok(())
    }

    /// Subscribes to events of type `E`.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)] struct VmStarted { uuid: String }
    /// # impl cloudbus::Message for VmStarted { const TYPE: &'static str = "vm.VmStarted"; }
    /// # impl cloudbus::Event for VmStarted {}
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bus = cloudbus::Bus::embedded();
    /// let mut started = bus.subscribe::<VmStarted>().await.unwrap();
    /// bus.publish(VmStarted { uuid: "v1".into() }).await.unwrap();
    /// assert_eq!(started.recv().await.unwrap().uuid, "v1");
    /// # }
    /// ```
    pub async fn subscribe<E: Event>(&self) -> Result<Subscription<E>, ErrorCode> {
        self.subscribe_with(Overflow::default()).await
    }

    /// [`subscribe`](Bus::subscribe) with a policy for when the
    /// subscription's buffer is full (see [`Overflow`]).
    pub async fn subscribe_with<E: Event>(
        &self,
        overflow: Overflow,
    ) -> Result<Subscription<E>, ErrorCode> {
        let (sub, rx) = self.add_subscriber(E::TYPE, overflow).await?;
        Ok(Subscription::new(self.clone(), sub, rx))
    }

    /// Subscribes to every event whose type matches an AMQP topic pattern:
    /// `*` is one word, `#` any number of words (`vm.*`, `#`).
    pub async fn subscribe_pattern(&self, pattern: &str) -> Result<RawSubscription, ErrorCode> {
        self.subscribe_pattern_with(pattern, Overflow::default())
            .await
    }

    /// [`subscribe_pattern`](Bus::subscribe_pattern) with a policy for when
    /// the subscription's buffer is full (see [`Overflow`]).
    pub async fn subscribe_pattern_with(
        &self,
        pattern: &str,
        overflow: Overflow,
    ) -> Result<RawSubscription, ErrorCode> {
        let (sub, rx) = self.add_subscriber(pattern, overflow).await?;
        Ok(RawSubscription::new(self.clone(), sub, rx))
    }

    async fn add_subscriber(
        &self,
        pattern: &str,
        overflow: Overflow,
    ) -> Result<(Arc<SubscriberInfo>, QueueReceiver), ErrorCode> {
        let pattern: Pattern = pattern.parse()?;
        self.bind_pattern(pattern.as_str()).await?;
        Ok(self
            .inner
            .subscribers
            .add(pattern, self.inner.config.subscription_capacity, overflow))
    }

    /// Subscribes a service to its event types, all into one stream so
    /// that they arrive in the order they were published.
    pub(crate) async fn subscribe_service(
        &self,
        types: &[&'static str],
    ) -> Result<(Vec<Arc<SubscriberInfo>>, QueueReceiver), ErrorCode> {
        // Like any subscriber by default, a busy service misses events
        // (counted) rather than holding up the node's event queue.
        let (tx, rx) = event_queue(self.inner.config.subscription_capacity, Overflow::default());
        let mut subscribed = Vec::with_capacity(types.len());
        for event_type in types {
            let added = async {
                let pattern: Pattern = event_type.parse()?;
                self.bind_pattern(pattern.as_str()).await?;
                Ok::<_, ErrorCode>(self.inner.subscribers.add_sender(pattern, tx.clone()))
            };
            match added.await {
                Ok(info) => subscribed.push(info),
                Err(error) => {
                    for info in subscribed {
                        self.unsubscribe(info.id, &info.pattern).await;
                    }
                    return Err(error);
                }
            }
        }
        Ok((subscribed, rx))
    }

    /// Makes sure this node's event queue receives events matching
    /// `pattern`, counting one more subscription that needs it.
    pub(crate) async fn bind_pattern(&self, pattern: &str) -> Result<(), ErrorCode> {
        self.bind(pattern, true).await
    }

    /// Keeps this node bound to an API event type for good: callers of
    /// non-blocking APIs receive their answer through it.
    pub(crate) async fn bind_api_event(&self, event_type: &str) -> Result<(), ErrorCode> {
        self.bind(event_type, false).await
    }

    async fn bind(&self, pattern: &str, counted: bool) -> Result<(), ErrorCode> {
        self.check_open()?;
        let Some(transport) = &self.inner.transport else {
            return Ok(());
        };
        let mut bindings = self.inner.bindings.lock().await;
        if let Some(count) = bindings.get_mut(pattern) {
            if counted {
                *count += 1;
            }
            return Ok(());
        }
        transport.bind(pattern).await?;
        bindings.insert(pattern.to_string(), 1);
        Ok(())
    }

    /// Ends a subscription and removes its transport binding when it was
    /// the last one to use the pattern.
    pub(crate) async fn unsubscribe(&self, id: u64, pattern: &Pattern) {
        self.inner.subscribers.remove(id, pattern);
        let Some(transport) = &self.inner.transport else {
            return;
        };
        if self.is_shut_down() {
            return;
        }
        let mut bindings = self.inner.bindings.lock().await;
        let Some(count) = bindings.get_mut(pattern.as_str()) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            bindings.remove(pattern.as_str());
            if let Err(error) = transport.unbind(pattern.as_str()).await {
                tracing::warn!(%pattern, %error, "could not remove event binding");
            }
        }
    }

    /// [`unsubscribe`](Bus::unsubscribe) from a destructor: the local part
    /// at once, the binding in the background.
    pub(crate) fn unsubscribe_later(&self, id: u64, pattern: &Pattern) {
        self.inner.subscribers.remove(id, pattern);
        if self.inner.transport.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let bus = self.clone();
        let pattern = pattern.clone();
        runtime.spawn(async move { bus.unsubscribe(id, &pattern).await });
    }
}
