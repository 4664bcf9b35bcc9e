//! Handing a request over and waiting for its answer.
//!
//! A request to a handler on this node whose service has room is handled
//! right here, on the caller's task, and most such handlers answer without
//! waiting: then the call is over before any future is built, with no timer
//! armed and nothing boxed. Everything else (a handler that waits, a busy
//! service, another node, a traced or cancellable call) goes on as one boxed
//! future that waits for the reply within the deadline.

use std::borrow::Cow;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::oneshot::{self, error::TryRecvError};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::Bus;
use super::dispatch::{Answer, Target};
use crate::service::{Delivery, Inline, ReplyTarget};
use crate::{Body, Envelope, ErrorCode, Request};

type Outcome = Result<Body, ErrorCode>;

/// A request handed over: already answered (with what its caller gets,
/// `T`: the body, or the typed reply of a call handled by type), or
/// waiting for its answer.
pub(crate) enum Requested<T = Outcome> {
    Answered(T),
    Waiting(BoxFuture<'static, Outcome>),
}

impl<T> Requested<T> {
    /// Polls a request future whose state is `running`: the first poll
    /// hands the request over with `start`, later ones wait for the answer,
    /// which `finish` turns into what the caller gets. Inlined: it is
    /// every call's first step.
    #[inline]
    pub(super) fn poll(
        running: &mut Option<BoxFuture<'static, Outcome>>,
        cx: &mut Context<'_>,
        start: impl FnOnce() -> Requested<T>,
        finish: impl FnOnce(Outcome) -> T,
    ) -> Poll<T> {
        let waiting = match running {
            Some(waiting) => waiting,
            None => {
                std::task::ready!(cooperate(cx));
                match start() {
                    Requested::Answered(outcome) => return Poll::Ready(outcome),
                    Requested::Waiting(waiting) => running.insert(waiting),
                }
            }
        };
        let outcome = std::task::ready!(waiting.as_mut().poll(cx));
        *running = None;
        Poll::Ready(finish(outcome))
    }
}

/// Takes a unit of the task's tokio budget before a message is handed
/// over. A local handler that answers at once never makes its caller wait,
/// so without this a task calling in a loop would never yield, and the
/// tasks queued behind it on its thread (timers, I/O, a sync key's next
/// job) would starve until it stopped.
pub(crate) fn cooperate(cx: &mut Context<'_>) -> Poll<()> {
    let progress = std::task::ready!(tokio::task::coop::poll_proceed(cx));
    progress.made_progress();
    Poll::Ready(())
}

impl Bus {
    /// Sends a request envelope. `api_event` names the event type that
    /// answers a non-blocking API; `cancellable` says whether the caller
    /// may cancel it by id.
    pub(crate) fn request(
        &self,
        envelope: Envelope,
        body: Body,
        api_event: Option<Cow<'static, str>>,
        cancellable: bool,
    ) -> Requested {
        let span = crate::trace_context::sending_span(&envelope, self.inner.node);
        self.request_spanned(envelope, body, api_event, cancellable, span)
    }

    /// [`request`](Self::request) with its sending span made already.
    pub(super) fn request_spanned(
        &self,
        envelope: Envelope,
        body: Body,
        api_event: Option<Cow<'static, str>>,
        cancellable: bool,
        span: tracing::Span,
    ) -> Requested {
        if span.is_disabled() {
            return self.hand_over(envelope, body, api_event, cancellable, &span);
        }
        let bus = self.clone();
        Requested::Waiting(Box::pin(async move {
            let requested =
                span.in_scope(|| bus.hand_over(envelope, body, api_event, cancellable, &span));
            let outcome = match requested {
                Requested::Answered(outcome) => outcome,
                Requested::Waiting(waiting) => waiting.instrument(span.clone()).await,
            };
            crate::trace_context::sent(&span, &outcome);
            outcome
        }))
    }

    fn hand_over(
        &self,
        mut envelope: Envelope,
        body: Body,
        api_event: Option<Cow<'static, str>>,
        cancellable: bool,
        span: &tracing::Span,
    ) -> Requested {
        let target = match self.resolve_outgoing(&mut envelope, &body, true) {
            Ok(target) => target,
            Err(error) => return Requested::Answered(Err(error)),
        };
        traced(span, &target, &mut envelope);
        let timeout = envelope
            .timeout
            .unwrap_or(self.inner.config.default_timeout);
        let runtime = match target {
            // Only a cancellable call needs its id registered first.
            Target::Local(runtime) if !cancellable => runtime,
            target => {
                let (bus, deadline) = (self.clone(), super::routing::deadline_after(timeout));
                return Requested::Waiting(Box::pin(async move {
                    bus.request_in(target, envelope, body, api_event, deadline, timeout)
                        .await
                }));
            }
        };
        let (tx, mut rx) = oneshot::channel();
        let what = envelope.type_name.clone();
        let delivery = Delivery {
            envelope: std::sync::Arc::new(envelope),
            body,
            reply: ReplyTarget::Local(tx),
            // Delivered now, the handler starts on this very call, which
            // is still waiting: only a zero timeout has expired already.
            // The clock is read for the deadline once something must wait.
            deadline: timeout.is_zero().then(std::time::Instant::now),
        };
        let stalled = runtime.deliver_now(self, delivery);
        let rx = match stalled {
            Some(_) => Some(rx),
            None => match rx.try_recv() {
                Ok(outcome) => return Requested::Answered(outcome),
                Err(TryRecvError::Empty) => Some(rx),
                // Dropped unanswered: it expired before a handler took it.
                Err(TryRecvError::Closed) => None,
            },
        };
        let deadline = super::routing::deadline_after(timeout);
        let stalled = stalled.map(|stalled| stalled.expiring_at(deadline.into_std()));
        let bus = self.clone();
        Requested::Waiting(Box::pin(async move {
            let exchange = async {
                if let Some(stalled) = stalled {
                    runtime.resume(&bus, stalled).await;
                }
                match rx {
                    Some(rx) => answer_of(rx).await,
                    None => std::future::pending().await,
                }
            };
            bus.within(deadline, &what, timeout, exchange).await
        }))
    }

    /// Offers a typed request to a handler on this node that can take it
    /// on the caller's task without type erasure (see
    /// `ServiceRuntime::call_inline`); gives it back untouched, for
    /// [`request`](Self::request), whenever the general path must take it:
    /// interceptors to run, another node, a zero timeout. (A traced send
    /// is not offered: its span wraps the general path.)
    pub(crate) fn call_inline<R: Request>(
        &self,
        envelope: Envelope,
        req: R,
    ) -> Inline<R, BoxFuture<'static, Outcome>> {
        let timeout = envelope
            .timeout
            .unwrap_or(self.inner.config.default_timeout);
        if !self.inner.interceptors.is_empty()
            || timeout.is_zero()
            || self.check_open().is_err()
            || envelope.check_wire_limits().is_err()
        {
            return Inline::Declined(req, envelope);
        }
        let services = self.inner.services.load();
        let Some(runtime) = self.resolve_here(&services, envelope.service_name(), envelope.target)
        else {
            return Inline::Declined(req, envelope);
        };
        match runtime.call_inline(self, envelope, req) {
            Inline::Replied(outcome) => {
                if let Err(error) = &outcome {
                    self.inner.recent_errors.push(R::TYPE, error);
                }
                Inline::Replied(outcome)
            }
            Inline::Waiting(answered) => {
                let (bus, deadline) = (self.clone(), super::routing::deadline_after(timeout));
                Inline::Waiting(Box::pin(async move {
                    bus.within(deadline, R::TYPE, timeout, answer_of(answered))
                        .await
                }))
            }
            Inline::Declined(req, envelope) => Inline::Declined(req, envelope),
        }
    }

    /// A request to another node, or a cancellable one: registered by id
    /// (so that `cancel` and a dying node's callers find it) before it is
    /// dispatched. `deadline` ends the wait for `timeout`.
    async fn request_in(
        &self,
        target: Target,
        envelope: Envelope,
        body: Body,
        api_event: Option<Cow<'static, str>>,
        deadline: Instant,
        timeout: Duration,
    ) -> Outcome {
        let (what, id) = (envelope.type_name.clone(), envelope.id);
        // A caller here waits on a oneshot; a handler elsewhere answers this
        // node's queue, and the pending map (which also fails the call if
        // that node dies) hands the reply over.
        let mut cancelled = None;
        let (answer, rx, _waiting) = match &target {
            Target::Local(_) => {
                let (tx, rx) = oneshot::channel();
                let (guard, registered) = self.inner.pending.register(id, self.inner.node);
                cancelled = Some(registered);
                (Answer::Here(tx), rx, guard)
            }
            Target::Remote(node) => {
                if let Some(event_type) = &api_event {
                    self.bind_api_event(event_type).await?;
                }
                let (waiting, rx) = self.inner.pending.register(id, *node);
                (Answer::At(self.reply_to()), rx, waiting)
            }
        };
        let exchange = async {
            if let Err(error) = self
                .dispatch(target, envelope, body, answer, Some(deadline))
                .await
            {
                if !crate::transport::is_delivery_unknown(&error) {
                    return Err(error);
                }
                // The broker may have the request: its reply can still
                // come, after a reconnect too. Failing now would invite a
                // retry of a request that may be running.
                tracing::debug!(%what, %id, %error, "request unconfirmed; waiting for its reply");
            }
            let answered = answer_of(rx);
            match cancelled {
                Some(cancelled) => tokio::select! {
                    outcome = answered => outcome,
                    Ok(outcome) = cancelled => outcome,
                },
                None => answered.await,
            }
        };
        self.within(deadline, &what, timeout, exchange).await
    }

    /// Waits for `exchange` until `deadline`, then fails the call with
    /// `cloudbus.TIMEOUT`.
    async fn within(
        &self,
        deadline: Instant,
        what: &str,
        timeout: Duration,
        exchange: impl Future<Output = Outcome>,
    ) -> Outcome {
        tokio::time::timeout_at(deadline, exchange)
            .await
            .unwrap_or_else(|_| {
                self.inner.stats.timeouts.inc();
                Err(ErrorCode::timeout(what, timeout))
            })
    }
}

/// The answer a handler sends on `rx`. Dropped unanswered, the request
/// expired before a handler took it: the caller's deadline ends the wait.
async fn answer_of(rx: oneshot::Receiver<Outcome>) -> Outcome {
    match rx.await {
        Ok(outcome) => outcome,
        Err(_) => std::future::pending().await,
    }
}

/// Notes where a routed message goes on its sending span, and hands the
/// span's trace context on in the message.
pub(super) fn traced(span: &tracing::Span, target: &Target, envelope: &mut Envelope) {
    if span.is_disabled() {
        return;
    }
    if let Target::Remote(node) = target {
        span.record("to", tracing::field::display(node));
    }
    crate::trace_context::inject(span, &mut envelope.headers);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::call::Addressing;
    use crate::{Kind, Message, Service};
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Serialize, Deserialize)]
    struct Add(i64, i64);
    #[derive(Clone, Debug, Serialize, Deserialize)]
    struct Sum(i64);
    impl Message for Add {
        const TYPE: &'static str = "calc.Add";
    }
    impl Message for Sum {
        const TYPE: &'static str = "calc.Sum";
    }
    impl Request for Add {
        type Reply = Sum;
    }

    /// Interceptors that see every message, and count them.
    #[derive(Default)]
    struct Counting(std::sync::atomic::AtomicUsize);
    impl crate::Interceptor for std::sync::Arc<Counting> {
        fn before_deliver(&self, _: &Envelope, _: &Body) -> Result<(), ErrorCode> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }
    }

    async fn calc(bus: &Bus, concurrency: usize) {
        let service = Service::builder("calc", ())
            .concurrency(concurrency)
            .on_request(|Add(a, b), _| async move { Ok(Sum(a + b)) })
            .build();
        bus.register(service).await.unwrap();
    }

    /// Adds with `a` as the sync key; `Add(0, _)` waits for `gate` first.
    async fn keyed_calc(bus: &Bus, gate: std::sync::Arc<tokio::sync::Semaphore>) {
        let service = Service::builder("calc", ())
            .__request(
                move |_, Add(a, b), _| {
                    let gate = gate.clone();
                    async move {
                        if a == 0 {
                            gate.acquire().await.unwrap().forget();
                        }
                        Ok(Sum(a + b))
                    }
                },
                Some(|_: &(), Add(a, _): &Add| Some(crate::SyncKey::new(a.to_string()))),
            )
            .build();
        bus.register(service).await.unwrap();
    }

    fn offer(bus: &Bus, timeout: Option<Duration>) -> Inline<Add, BoxFuture<'static, Outcome>> {
        offer_add(bus, timeout, Add(2, 3))
    }

    fn offer_add(
        bus: &Bus,
        timeout: Option<Duration>,
        add: Add,
    ) -> Inline<Add, BoxFuture<'static, Outcome>> {
        let mut envelope = bus
            .envelope(
                Kind::Request,
                Add::TYPE.into(),
                "calc".into(),
                Addressing::default(),
            )
            .unwrap();
        envelope.timeout = timeout;
        bus.call_inline(envelope, add)
    }

    #[tokio::test]
    async fn a_typed_call_is_answered_inline_unless_the_general_path_must_take_it() {
        let bus = Bus::embedded();
        // No such service here: routing (and its error) is the general path's.
        assert!(matches!(offer(&bus, None), Inline::Declined(Add(2, 3), _)));
        calc(&bus, 1).await;
        assert!(matches!(offer(&bus, None), Inline::Replied(Ok(Sum(5)))));
        // A zero timeout has expired already: the general path drops it.
        let zero = Some(Duration::ZERO);
        assert!(matches!(offer(&bus, zero), Inline::Declined(..)));
        // The only permit is taken: the caller must wait for it.
        let runtime = bus.service("calc").unwrap();
        let held = runtime.permits().clone().try_acquire_owned().unwrap();
        assert!(matches!(offer(&bus, None), Inline::Declined(..)));
        drop(held);
        assert!(matches!(offer(&bus, None), Inline::Replied(Ok(Sum(5)))));
        bus.shutdown().await;

        // Interceptors see the body: their bus never takes the typed path.
        let counting = std::sync::Arc::new(Counting::default());
        let bus = Bus::builder()
            .interceptor(counting.clone())
            .build()
            .await
            .unwrap();
        calc(&bus, 1).await;
        assert!(matches!(offer(&bus, None), Inline::Declined(..)));
        let sum = bus.call(Add(1, 1)).await.unwrap();
        assert_eq!(
            (sum.0, counting.0.load(std::sync::atomic::Ordering::SeqCst)),
            (2, 1)
        );
        bus.shutdown().await;
    }

    #[tokio::test]
    async fn a_keyed_call_is_answered_inline_while_its_key_is_free_and_queues_while_held() {
        let bus = Bus::embedded();
        let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
        keyed_calc(&bus, gate.clone()).await;
        assert!(matches!(
            offer_add(&bus, None, Add(1, 2)),
            Inline::Replied(Ok(Sum(3)))
        ));
        // Key 0's handler waits at the gate, in a task of its own.
        let Inline::Waiting(waiting) = offer_add(&bus, None, Add(0, 4)) else {
            panic!("the handler at the gate should wait");
        };
        // Its key is held: a newcomer on it queues behind, and waits;
        // another key is free.
        let Inline::Waiting(queued) = offer_add(&bus, None, Add(0, 5)) else {
            panic!("a call on a held key should queue");
        };
        assert!(matches!(
            offer_add(&bus, None, Add(2, 2)),
            Inline::Replied(Ok(Sum(4)))
        ));
        gate.add_permits(2);
        let first = waiting.await.unwrap().decode::<Sum>().unwrap();
        let second = queued.await.unwrap().decode::<Sum>().unwrap();
        assert_eq!((first.0, second.0), (4, 5));
        // Once the key is let go, its calls are inline again.
        gate.add_permits(1);
        assert!(matches!(
            offer_add(&bus, None, Add(0, 7)),
            Inline::Replied(Ok(Sum(7)))
        ));
        bus.shutdown().await;
    }
}
