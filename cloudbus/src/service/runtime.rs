use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::entry::{Delivery, HandlerEntry};
use super::in_flight::InFlight;
use super::sync::{SyncQueues, Ticket};
use super::{ReplyTarget, Responder, Service, TypeStatistics, TypeStats};
use crate::bus::{EventDelivery, SubscriberInfo};
use crate::{Bus, ErrorCode};

/// A registered service at run time: its handlers, its concurrency permits
/// and its per-key queues. Each service has its own; nothing is shared
/// between services on the hot path.
pub(crate) struct ServiceRuntime {
    name: Cow<'static, str>,
    handlers: HashMap<&'static str, (Arc<dyn HandlerEntry>, Arc<TypeStats>)>,
    permits: Arc<Semaphore>,
    concurrency: usize,
    sync: SyncQueues,
    in_flight: Arc<InFlight>,
    closing: AtomicBool,
    /// The tasks that hand the events this service subscribed to over to
    /// its handlers; stopped when the service stops.
    feeders: std::sync::Mutex<Vec<(Arc<Notify>, JoinHandle<()>)>>,
}

impl ServiceRuntime {
    pub(crate) fn new(service: Service) -> Self {
        Self {
            name: service.name,
            handlers: service
                .handlers
                .into_iter()
                .map(|(name, entry)| (name, (entry, Arc::default())))
                .collect(),
            permits: Arc::new(Semaphore::new(service.concurrency)),
            concurrency: service.concurrency,
            sync: SyncQueues::default(),
            in_flight: Arc::default(),
            closing: AtomicBool::new(false),
            feeders: std::sync::Mutex::default(),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// What each of this service's message types has seen so far.
    pub(crate) fn statistics(&self) -> impl Iterator<Item = TypeStatistics> + '_ {
        self.handlers
            .iter()
            .map(|(name, (_, stats))| stats.snapshot(&self.name, name))
    }

    /// Hands a message to its handler. Waits while the service is at its
    /// concurrency limit (that wait is the backpressure); returns once the
    /// handler is started or queued behind its sync key, not when it ends.
    pub(crate) async fn deliver(&self, bus: &Bus, delivery: Delivery) {
        // Counted before the closing check: a drain either sees this
        // message in flight or this message sees the service closing.
        let in_flight = self.in_flight.enter();
        if self.closing.load(Ordering::SeqCst) {
            return reject(bus, delivery, ErrorCode::no_such_service(&self.name)).await;
        }
        if let Err(error) = bus.intercept_delivery(&delivery.envelope, &delivery.body) {
            bus.counters().rejected.inc();
            return reject(bus, delivery, error).await;
        }
        let Some((entry, stats)) = self.handlers.get(&*delivery.envelope.type_name) else {
            let error = ErrorCode::unknown_message(&self.name, &delivery.envelope.type_name);
            return reject(bus, delivery, error).await;
        };
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return reject(bus, delivery, ErrorCode::no_such_service(&self.name)).await;
        };
        if delivery.deadline.is_some_and(|d| Instant::now() >= d) {
            // The caller has stopped waiting; running the handler now would
            // only produce a reply nobody reads.
            bus.counters().expired.inc();
            return;
        }
        let task_context = super::context::task_context_of(&delivery.envelope);
        let span = handling_span(bus, &self.name, &delivery.envelope);
        let Some(job) = entry.prepare(bus, delivery, stats.clone()) else {
            return;
        };
        let run = super::context::within_task_context(task_context, job.run);
        // Only a span someone listens to costs an allocation.
        let run = if span.is_disabled() {
            run
        } else {
            Box::pin(run.instrument(span))
        };
        let ticket = Ticket::new(permit, in_flight);
        match job.sync {
            None => {
                tokio::spawn(async move {
                    run.await;
                    drop(ticket);
                });
            }
            Some(key) => self.sync.submit(key, run, ticket),
        }
    }

    /// Hands the events of the service's subscriptions (one stream, in
    /// publishing order) to its handlers, one [`deliver`](Self::deliver) at
    /// a time, so that a busy service slows its events down like any other
    /// sender.
    pub(crate) fn feed_events(
        self: &Arc<Self>,
        bus: &Bus,
        subscribed: Vec<Arc<SubscriberInfo>>,
        mut events: mpsc::Receiver<EventDelivery>,
    ) {
        let (runtime, bus) = (self.clone(), bus.clone());
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let feeder = tokio::spawn(async move {
            let mut subscribed = Some(subscribed);
            loop {
                let event = tokio::select! {
                    biased;
                    () = stopped.notified(), if subscribed.is_some() => {
                        // No new events; those already taken are still
                        // handled, until the stream ends.
                        for info in subscribed.take().into_iter().flatten() {
                            bus.unsubscribe(info.id, &info.pattern).await;
                        }
                        continue;
                    }
                    event = events.recv() => event,
                };
                let Some(event) = event else { break };
                let delivery = Delivery {
                    envelope: Arc::unwrap_or_clone(event.envelope),
                    body: event.body,
                    reply: ReplyTarget::None,
                    deadline: None,
                };
                runtime.deliver(&bus, delivery).await;
            }
        });
        self.feeders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((stop, feeder));
    }

    /// Ends the service's event subscriptions once the events they have
    /// taken are handed to handlers.
    async fn stop_feeding(&self) {
        let feeders: Vec<_> = self
            .feeders
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect();
        for (stop, feeder) in feeders {
            stop.notify_one();
            let _ = feeder.await;
        }
    }

    /// Waits until no message is in flight, still taking new ones.
    pub(crate) async fn quiesce(&self) {
        self.in_flight.idle().await;
    }

    /// Stops taking messages and waits for every accepted one to finish.
    pub(crate) async fn drain(&self) {
        self.stop_feeding().await;
        self.closing.store(true, Ordering::SeqCst);
        self.in_flight.idle().await;
    }
}

/// The span of one message being handled: what it is, where, and (filled
/// in when it ends) how it went and how long it took. `traceparent` ties
/// it to the caller's trace.
fn handling_span(bus: &Bus, service: &str, envelope: &crate::Envelope) -> tracing::Span {
    tracing::debug_span!(
        "handle",
        r#type = %envelope.type_name,
        service,
        node = %bus.node_id(),
        id = %envelope.id,
        from = %envelope.source,
        traceparent = envelope.headers.get("traceparent").unwrap_or(""),
        outcome = tracing::field::Empty,
        duration_us = tracing::field::Empty,
    )
}

async fn reject(bus: &Bus, delivery: Delivery, error: ErrorCode) {
    tracing::debug!(type_name = %delivery.envelope.type_name, %error, "rejecting message");
    Responder::new(bus.clone(), &delivery.envelope, delivery.reply)
        .answer(Err(error))
        .await;
}
