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
use crate::service::{Delivery, ReplyTarget};
use crate::{Body, Envelope, ErrorCode};

type Outcome = Result<Body, ErrorCode>;

/// A request handed over: already answered, or waiting for its answer.
pub(crate) enum Requested {
    Answered(Outcome),
    Waiting(BoxFuture<'static, Outcome>),
}

impl Requested {
    /// Polls a request future whose state is `running`: the first poll
    /// hands the request over with `start`, later ones wait for the answer.
    pub(super) fn poll(
        running: &mut Option<BoxFuture<'static, Outcome>>,
        cx: &mut Context<'_>,
        start: impl FnOnce() -> Requested,
    ) -> Poll<Outcome> {
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
        Poll::Ready(outcome)
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
