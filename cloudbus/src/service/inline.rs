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
use tokio::sync::oneshot;

use super::context::Handling;
use super::entry::{Traced, handled};
use super::sync::Ticket;
use super::{Context, Handler, ReplyTarget, Responder, TypeStats};
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
    /// Runs the handler on the calling task as far as it goes without
    /// waiting. The message is admitted (`ticket`) and untraced; it never
    /// declines.
    fn call(
        self: Arc<Self>,
        bus: &Bus,
        envelope: Arc<Envelope>,
        req: R,
        handling: Handling,
        ticket: Ticket,
    ) -> Inline<R, Answered>;
}

/// The typed entry of a [`Handler`], with its message type's statistics.
pub(crate) struct TypedRequest<S, R> {
    pub(super) service: Arc<S>,
    pub(super) stats: Arc<TypeStats>,
    pub(super) request: PhantomData<fn(R)>,
}

impl<S: Handler<R>, R: Request> InlineRequest<R> for TypedRequest<S, R> {
    fn call(
        self: Arc<Self>,
        bus: &Bus,
        envelope: Arc<Envelope>,
        req: R,
        handling: Handling,
        ticket: Ticket,
    ) -> Inline<R, Answered> {
        let ctx = Context::new(bus.clone(), envelope.clone());
        let mut run = Box::pin(handling.scope(async move {
            handled(&*self.service, req, ctx, &self.stats, Traced(false)).await
        }));
        if let Some(outcome) = (&mut run).now_or_never() {
            drop(ticket);
            return Inline::Replied(outcome);
        }
        // It waits: it goes on in a task of its own, so that a caller
        // that stops waiting never cancels it.
        let (tx, rx) = oneshot::channel();
        let responder =
            Responder::new(bus.clone(), &envelope, ReplyTarget::Local(tx)).with_style(R::STYLE);
        tokio::spawn(async move {
            let outcome = run.await;
            responder.answer(outcome.map(Body::new)).await;
            drop(ticket);
        });
        Inline::Waiting(rx)
    }
}
