//! Typed requests handled on their caller's task.
//!
//! A caller and a handler in one process usually agree on the request's
//! type `R`: then the request need not be boxed into a [`Body`], nor its
//! reply, nor the reply sent through a channel. The typed entry takes the
//! `R` and, when the handler answers without waiting (the common case),
//! gives the `R::Reply` straight back. A handler that must wait goes on in
//! a task of its own and answers through a channel, as on the general path.

use std::marker::PhantomData;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::oneshot;
use tracing::Instrument as _;

use super::context::Handling;
use super::entry::{Traced, handled};
use super::permits::Permit;
use super::sync::{KeyedJob, Ticket};
use super::{Context, Handler, ReplyTarget, Responder, SyncKey, TypeStats};
use crate::{Body, Bus, Envelope, ErrorCode, Request};

/// What became of a typed request offered to the inline path.
pub(crate) enum Inline<R: Request, W> {
    /// The handler answered at once.
    Replied(Result<R::Reply, ErrorCode>),
    /// The handler waits; `W` brings its answer.
    Waiting(W),
    /// Not taken: something needs the general path (see
    /// `ServiceRuntime::call_inline`). The request is given back untouched.
    Declined(R, Envelope),
}

/// The answer of a handler that had to wait.
pub(crate) type Answered = oneshot::Receiver<Result<Body, ErrorCode>>;

/// A request handler's entry, typed by its request: what lets a caller
/// that knows `R` skip the type erasure.
pub(crate) trait InlineRequest<R: Request>: Send + Sync {
    /// The handler's sync key for `req`.
    fn sync_key(&self, req: &R) -> Option<SyncKey>;

    /// Runs the handler on the calling task as far as it goes without
    /// waiting, or queues it behind its sync key if the key is held. The
    /// message is admitted; it never declines.
    fn call(
        self: Arc<Self>,
        bus: &Bus,
        envelope: Arc<Envelope>,
        req: R,
        handling: Handling,
        admitted: Admitted<'_>,
    ) -> Inline<R, Answered>;
}

/// What a message taken on the inline path holds.
pub(crate) struct Admitted<'a> {
    /// Its place in flight (and among the admitted, if keyed).
    pub(crate) ticket: Ticket,
    /// A concurrency permit to run now.
    pub(crate) permit: Permit,
    /// Its sync key, if it has one: held only just before the handler is
    /// polled, so that the key is held no longer than the handler runs.
    pub(crate) key: Option<KeyedJob<'a>>,
    /// Its handling span (disabled unless someone listens).
    pub(crate) span: tracing::Span,
}

/// The typed entry of a [`Handler`], with its message type's statistics.
pub(crate) struct TypedRequest<S, R> {
    pub(super) service: Arc<S>,
    pub(super) stats: Arc<TypeStats>,
    pub(super) request: PhantomData<fn(R)>,
}

impl<S: Handler<R>, R: Request> InlineRequest<R> for TypedRequest<S, R> {
    fn sync_key(&self, req: &R) -> Option<SyncKey> {
        self.service.sync_key(req)
    }

    fn call(
        self: Arc<Self>,
        bus: &Bus,
        envelope: Arc<Envelope>,
        req: R,
        handling: Handling,
        admitted: Admitted<'_>,
    ) -> Inline<R, Answered> {
        let Admitted {
            ticket,
            permit,
            key,
            span,
        } = admitted;
        let ctx = Context::new(bus.clone(), envelope.clone());
        let traced = Traced(!span.is_disabled());
        let run = handling
            .scope(async move { handled(&*self.service, req, ctx, &self.stats, traced).await });
        // Only a span someone listens to wraps the handler (and makes its
        // box larger): entering and leaving even a disabled one costs.
        let mut run: BoxFuture<'static, Result<R::Reply, ErrorCode>> = if traced.0 {
            Box::pin(run.instrument(span))
        } else {
            Box::pin(run)
        };
        let held = match key.as_ref().map(KeyedJob::try_hold) {
            Some(Some(held)) => Some(held),
            Some(None) => {
                // Its key is held: it queues, and takes a permit when its
                // turn comes.
                drop(permit);
                let (answering, answered) = answering::<R>(bus, &envelope, run);
                if let Some(key) = key {
                    key.submit(answering, ticket);
                }
                return Inline::Waiting(answered);
            }
            None => None,
        };
        let ticket = ticket.running(permit);
        let ready = match &held {
            Some(held) => held.poll(|| (&mut run).now_or_never()),
            None => (&mut run).now_or_never(),
        };
        if let Some(outcome) = ready {
            match held {
                Some(held) => held.finished(ticket),
                None => drop(ticket),
            }
            return Inline::Replied(outcome);
        }
        // It waits: it goes on in a task of its own (then its key's next
        // jobs), so that a caller that stops waiting never cancels it.
        let (answering, answered) = answering::<R>(bus, &envelope, run);
        match held {
            Some(held) => held.go_on(answering, ticket),
            None => {
                tokio::spawn(async move {
                    answering.await;
                    drop(ticket);
                });
            }
        }
        Inline::Waiting(answered)
    }
}

/// The handler's future `run` made to answer its caller through a channel,
/// the way a handler that cannot answer at once does.
fn answering<R: Request>(
    bus: &Bus,
    envelope: &Envelope,
    run: impl Future<Output = Result<R::Reply, ErrorCode>> + Send + 'static,
) -> (BoxFuture<'static, ()>, Answered) {
    let (tx, rx) = oneshot::channel();
    let responder =
        Responder::new(bus.clone(), envelope, ReplyTarget::Local(tx)).with_style(R::STYLE);
    let answering = Box::pin(async move {
        let outcome = run.await;
        responder.answer(outcome.map(Body::new)).await;
    });
    (answering, rx)
}
