use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::Semaphore;
use tracing::Instrument;

use super::in_flight::InFlight;
use super::route::{Delivery, Route};
use super::sync::{SyncQueues, Ticket};
use super::{Responder, Service, TypeStatistics, TypeStats};
use crate::{Bus, ErrorCode};

/// A registered service at run time: its handlers, its concurrency permits
/// and its per-key queues. Each service has its own; nothing is shared
/// between services on the hot path.
pub(crate) struct ServiceRuntime {
    name: Cow<'static, str>,
    routes: HashMap<&'static str, (Arc<dyn Route>, Arc<TypeStats>)>,
    permits: Arc<Semaphore>,
    concurrency: usize,
    sync: SyncQueues,
    in_flight: Arc<InFlight>,
    closing: AtomicBool,
}

impl ServiceRuntime {
    pub(crate) fn new(service: Service) -> Self {
        Self {
            name: service.name,
            routes: service
                .routes
                .into_iter()
                .map(|(name, route)| (name, (route, Arc::default())))
                .collect(),
            permits: Arc::new(Semaphore::new(service.concurrency)),
            concurrency: service.concurrency,
            sync: SyncQueues::default(),
            in_flight: Arc::default(),
            closing: AtomicBool::new(false),
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
        self.routes
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
            bus.stats().rejected.inc();
            return reject(bus, delivery, error).await;
        }
        let Some((route, stats)) = self.routes.get(&*delivery.envelope.type_name) else {
            let error = ErrorCode::unknown_message(&self.name, &delivery.envelope.type_name);
            return reject(bus, delivery, error).await;
        };
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return reject(bus, delivery, ErrorCode::no_such_service(&self.name)).await;
        };
        if delivery.deadline.is_some_and(|d| Instant::now() >= d) {
            // The caller has stopped waiting; running the handler now would
            // only produce a reply nobody reads.
            bus.stats().expired.inc();
            return;
        }
        let task_context = super::context::task_context_of(&delivery.envelope);
        let span = handling_span(bus, &self.name, &delivery.envelope);
        let Some(job) = route.prepare(bus, delivery, stats.clone()) else {
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

    /// Waits until no message is in flight, still taking new ones.
    pub(crate) async fn quiesce(&self) {
        self.in_flight.idle().await;
    }

    /// Stops taking messages and waits for every accepted one to finish.
    pub(crate) async fn drain(&self) {
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
