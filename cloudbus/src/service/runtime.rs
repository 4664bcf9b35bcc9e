use std::any::Any;
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::context::ServiceName;
use super::entry::{Delivery, HandlerEntry};
use super::in_flight::{InFlight, InFlightGuard};
use super::inline::{Admitted, Answered, Inline, InlineRequest};
use super::permits::{Permit, Permits};
use super::sync::{SyncQueues, Ticket};
use super::{ReplyTarget, Responder, Service, TypeStatistics, TypeStats};
use crate::bus::{QueueReceiver, SubscriberInfo};
use crate::{Bus, Envelope, ErrorCode, Request};

/// A registered service at run time: its handlers, its concurrency permits
/// and its per-key queues. Each service has its own; nothing is shared
/// between services on the hot path.
pub(crate) struct ServiceRuntime {
    name: Cow<'static, str>,
    /// The name again, for the task-local that marks what handlers send.
    shared_name: ServiceName,
    /// By message type, hashed with foldhash: looked up for every message.
    handlers: hashbrown::HashMap<&'static str, Registered>,
    /// Handlers running at once: the concurrency limit.
    permits: Arc<Permits>,
    /// Messages of keyed handlers taken at once, running or waiting behind
    /// their sync keys: what their senders wait for (the others wait for
    /// a permit).
    admission: Arc<Permits>,
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
            shared_name: ServiceName::new(service.name.clone()),
            name: service.name,
            handlers: service
                .handlers
                .into_iter()
                .map(|(name, entry)| (name, Registered::new(entry)))
                .collect(),
            permits: Arc::new(Permits::new(service.concurrency)),
            admission: Arc::new(Permits::new(
                service.concurrency.saturating_add(service.max_waiting),
            )),
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

    /// The concurrency permits, for tests that take some.
    #[cfg(test)]
    pub(crate) fn permits(&self) -> &Arc<Permits> {
        &self.permits
    }

    pub(crate) fn concurrency(&self) -> usize {
        self.concurrency
    }

    /// What each of this service's message types has seen so far.
    pub(crate) fn statistics(&self) -> impl Iterator<Item = TypeStatistics> + '_ {
        self.handlers
            .iter()
            .map(|(name, handler)| handler.stats.snapshot(&self.name, name))
    }

    /// Hands a message to its handler. Waits while the service has taken
    /// as much as it may (that wait is the backpressure); returns once the
    /// handler is started, finished, or queued behind its sync key, not
    /// necessarily when it ends.
    pub(crate) async fn deliver(&self, bus: &Bus, delivery: Delivery) {
        // Everything that needs no waiting happens in plain functions; only
        // a wait or a rejection builds (and boxes) a future, so the usual
        // call carries none of their state.
        let stalled = self.deliver_now(bus, delivery);
        if let Some(resumed) = stalled.map(|stalled| self.resume(bus, stalled)) {
            resumed.await;
        }
    }

    /// Finishes a delivery that could not be done at once.
    pub(crate) fn resume<'a>(&'a self, bus: &'a Bus, stalled: Stalled) -> BoxFuture<'a, ()> {
        match stalled {
            Stalled::Rejected(delivery, error) => Box::pin(reject(bus, delivery, error)),
            Stalled::Waiting(waiting) => Box::pin(self.deliver_later(bus, waiting)),
        }
    }

    /// Delivers at once if the service has room; else says what is left
    /// (for [`resume`](Self::resume)).
    pub(crate) fn deliver_now(&self, bus: &Bus, delivery: Delivery) -> Option<Stalled> {
        // Counted before the closing check: a drain either sees this
        // message in flight or this message sees the service closing.
        let in_flight = self.in_flight.enter();
        if self.closing.load(Ordering::SeqCst) {
            let error = ErrorCode::no_such_service(&self.name);
            return Some(Stalled::Rejected(delivery, error));
        }
        if let Err(error) = bus.intercept_delivery(&delivery.envelope, &delivery.body) {
            bus.counters().rejected.inc();
            return Some(Stalled::Rejected(delivery, error));
        }
        let Some(handler) = self.handlers.get(&*delivery.envelope.type_name) else {
            let error = ErrorCode::unknown_message(&self.name, &delivery.envelope.type_name);
            return Some(Stalled::Rejected(delivery, error));
        };
        // A handler without sync keys takes its concurrency permit before
        // anything is decoded; a keyed one takes its place among the
        // admitted (running or waiting on a key), and a permit only once
        // its key's turn comes, so waiters on one busy resource never hold
        // permits others need.
        let Ok(room) = self.room(handler).clone().try_acquire_owned() else {
            return Stalled::waiting(delivery, in_flight);
        };
        self.launch(bus, delivery, handler, in_flight, room);
        None
    }

    /// Handles a typed request on the caller's task (see `inline`), or
    /// declines it, untouched, for the general path: when the handler is
    /// not a plain request handler of `R`, or the service is closing or
    /// full. (One whose sync key is held queues behind it.)
    pub(crate) fn call_inline<R: Request>(
        &self,
        bus: &Bus,
        envelope: Envelope,
        req: R,
    ) -> Inline<R, Answered> {
        let typed = self.handlers.get(R::TYPE).and_then(|registered| {
            let typed = registered.typed.as_ref()?;
            Some((
                registered,
                typed.downcast_ref::<Arc<dyn InlineRequest<R>>>()?,
            ))
        });
        let Some((registered, typed)) = typed else {
            return Inline::Declined(req, envelope);
        };
        // As in `deliver_now`: counted before the closing check.
        let in_flight = self.in_flight.enter();
        if self.closing.load(Ordering::SeqCst) {
            return Inline::Declined(req, envelope);
        }
        // A keyed handler's message takes its place among the admitted,
        // a permit, and its key, as `launch` and `SyncQueues::submit` do.
        let (key, admitted) = if registered.keyed {
            let Ok(admitted) = self.admission.clone().try_acquire_owned() else {
                return Inline::Declined(req, envelope);
            };
            (typed.sync_key(&req), Some(admitted))
        } else {
            (None, None)
        };
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            return Inline::Declined(req, envelope);
        };
        let (handling, span) = self.begin(bus, &registered.stats, &envelope);
        let admitted = Admitted {
            ticket: Ticket::new(admitted, in_flight),
            permit,
            key: key.map(|key| self.sync.keyed(key, &self.permits)),
            span,
        };
        typed
            .clone()
            .call(bus, Arc::new(envelope), req, handling, admitted)
    }

    /// Waits for room in the service (its backpressure), then delivers.
    async fn deliver_later(&self, bus: &Bus, waiting: Waiting) {
        let Waiting {
            delivery,
            in_flight,
        } = waiting;
        let Some(handler) = self.handlers.get(&*delivery.envelope.type_name) else {
            return;
        };
        let room = self.room(handler).clone().acquire_owned().await;
        self.launch(bus, delivery, handler, in_flight, room);
    }

    /// What a message for `handler` takes to be accepted: a keyed
    /// handler's place among the admitted, or else a concurrency permit.
    fn room(&self, handler: &Registered) -> &Arc<Permits> {
        if handler.keyed {
            &self.admission
        } else {
            &self.permits
        }
    }

    /// Starts an admitted message's handler (on the caller's task first
    /// when a caller here waits for it), or queues it behind its sync key.
    /// `room` is what [`room`](Self::room) gave.
    fn launch(
        &self,
        bus: &Bus,
        delivery: Delivery,
        Registered {
            entry,
            stats,
            keyed,
            ..
        }: &Registered,
        in_flight: InFlightGuard,
        room: Permit,
    ) {
        let (ticket, permit) = if *keyed {
            (Ticket::new(Some(room), in_flight), None)
        } else {
            (Ticket::new(None, in_flight), Some(room))
        };
        if delivery.deadline.is_some_and(|d| Instant::now() >= d) {
            // The caller has stopped waiting; running the handler now would
            // only produce a reply nobody reads.
            bus.counters().expired.inc();
            return;
        }
        // A caller in this process waits for the answer anyway: its own
        // task runs the handler as far as it goes without waiting.
        let inline = matches!(delivery.reply, ReplyTarget::Local(_));
        let (handling, span) = self.begin(bus, stats, &delivery.envelope);
        let traced = super::entry::Traced(!span.is_disabled());
        let Some(job) = entry.prepare(bus, delivery, stats.clone(), handling, traced) else {
            return;
        };
        let run = job.run;
        // Only a span someone listens to costs an allocation.
        let run = if span.is_disabled() {
            run
        } else {
            Box::pin(run.instrument(span))
        };
        match (job.sync, permit) {
            (Some(key), _) => self.sync.submit(key, run, ticket, &self.permits, inline),
            (None, Some(permit)) => start(run, ticket.running(permit), inline),
            // A keyed handler that gave this message no key: it runs freely,
            // once a permit is free.
            (None, None) => match self.permits.clone().try_acquire_owned() {
                Ok(permit) => start(run, ticket.running(permit), inline),
                Err(_) => {
                    let permits = self.permits.clone();
                    tokio::spawn(async move {
                        let _ticket = ticket.running(permits.acquire_owned().await);
                        run.await;
                    });
                }
            },
        }
    }

    /// What every handled message starts with, on either path: who sent
    /// it is counted, and its handling (the task-local its handler's sends
    /// inherit) and its span are made.
    fn begin(
        &self,
        bus: &Bus,
        stats: &TypeStats,
        envelope: &Envelope,
    ) -> (super::context::Handling, tracing::Span) {
        let from = envelope.headers.get(super::context::FROM_SERVICE);
        stats.record_from(from.unwrap_or(""));
        let handling = super::context::Handling::new(self.shared_name.clone(), envelope);
        (handling, handling_span(bus, &self.name, envelope))
    }

    /// Hands the events of the service's subscriptions (one stream, in
    /// publishing order) to its handlers, one [`deliver`](Self::deliver) at
    /// a time, so that a busy service slows its events down like any other
    /// sender.
    pub(crate) fn feed_events(
        self: &Arc<Self>,
        bus: &Bus,
        subscribed: Vec<Arc<SubscriberInfo>>,
        mut events: QueueReceiver,
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
                    envelope: event.envelope,
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

/// One message type's handler as the runtime keeps it.
struct Registered {
    entry: Arc<dyn HandlerEntry>,
    stats: Arc<TypeStats>,
    /// The entry's [`typed`](HandlerEntry::typed) form, if it has one.
    typed: Option<Box<dyn Any + Send + Sync>>,
    /// The entry's [`keyed`](HandlerEntry::keyed), asked once: the entry
    /// sits beside a reference count that every message changes, so
    /// reading it per message costs a cache miss when two cores share
    /// the work.
    keyed: bool,
}

impl Registered {
    fn new(entry: Arc<dyn HandlerEntry>) -> Self {
        let stats = Arc::default();
        Self {
            keyed: entry.keyed(),
            typed: entry.typed(&stats),
            entry,
            stats,
        }
    }
}

/// What a delivery still needs once it could not be done at once.
pub(crate) enum Stalled {
    /// It is answered with this error.
    Rejected(Delivery, ErrorCode),
    /// It waits for room in the service.
    Waiting(Waiting),
}

impl Stalled {
    /// Sets when the caller of a waiting delivery stops waiting, so that it
    /// is dropped rather than handled after that.
    pub(crate) fn expiring_at(mut self, deadline: Instant) -> Self {
        if let Stalled::Waiting(waiting) = &mut self {
            waiting.delivery.deadline = Some(deadline);
        }
        self
    }

    fn waiting(delivery: Delivery, in_flight: InFlightGuard) -> Option<Self> {
        Some(Stalled::Waiting(Waiting {
            delivery,
            in_flight,
        }))
    }
}

/// A message accepted but waiting for the service's room.
pub(crate) struct Waiting {
    delivery: Delivery,
    in_flight: InFlightGuard,
}

/// Runs a handler's job. With `inline`, the calling task polls it first:
/// a handler that finishes without waiting (the common case) costs no task
/// and no wake-up; one that waits goes on in a task of its own from where
/// it stopped, so a caller that stops waiting never cancels it.
fn start(mut run: BoxFuture<'static, ()>, ticket: Ticket, inline: bool) {
    if inline && (&mut run).now_or_never().is_some() {
        drop(ticket);
        return;
    }
    tokio::spawn(async move {
        run.await;
        drop(ticket);
    });
}

/// The span of one message being handled: what it is, where, and (filled
/// in when it ends) how it went and how long it took. `traceparent` ties
/// it to the caller's trace.
fn handling_span(bus: &Bus, service: &str, envelope: &crate::Envelope) -> tracing::Span {
    let kind = match envelope.kind {
        crate::Kind::Request => "server",
        _ => "consumer",
    };
    let span = tracing::debug_span!(
        "handle",
        otel.name = %format_args!("handle {}", envelope.type_name),
        otel.kind = kind,
        otel.status_code = tracing::field::Empty,
        r#type = %envelope.type_name,
        service,
        node = %bus.node_id(),
        id = %envelope.id,
        from = %envelope.source,
        traceparent = envelope.headers.get(crate::trace_context::TRACEPARENT).unwrap_or(""),
        outcome = tracing::field::Empty,
        duration_us = tracing::field::Empty,
    );
    crate::trace_context::adopt_parent(&span, &envelope.headers);
    span
}

async fn reject(bus: &Bus, delivery: Delivery, error: ErrorCode) {
    tracing::debug!(type_name = %delivery.envelope.type_name, %error, "rejecting message");
    Responder::new(bus.clone(), &delivery.envelope, delivery.reply)
        .answer(Err(error))
        .await;
}
