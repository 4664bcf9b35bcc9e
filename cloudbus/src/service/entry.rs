//! The type-erased bridge between a service's handlers and the runtime:
//! decode the body, compute the sync key, build the job.

use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;

use super::context::Handling;
use super::inline::{InlineRequest, TypedRequest};
use super::{
    Context, DeferredHandler, Handler, MessageHandler, ReplyPort, ReplyTarget, Responder, SyncKey,
    TypeStats,
};
use crate::{Body, Bus, Envelope, ErrorCode, Message, Request};

/// One message on its way to a handler.
pub(crate) struct Delivery {
    /// Shared from the start: the handler's context keeps it, and a
    /// pointer is what moves through the runtime.
    pub(crate) envelope: Arc<Envelope>,
    pub(crate) body: Body,
    pub(crate) reply: ReplyTarget,
    /// After this instant the caller no longer waits; the message is dropped
    /// instead of handled.
    pub(crate) deadline: Option<Instant>,
}

/// A handler's work for one message, ready to run.
pub(crate) struct Job {
    pub(crate) sync: Option<SyncKey>,
    pub(crate) run: BoxFuture<'static, ()>,
}

/// A handler for one message type, with the type erased.
pub(crate) trait HandlerEntry: Send + Sync {
    /// Decodes the message and prepares the job; `None` when the message was
    /// already answered (it could not be decoded).
    fn prepare(
        &self,
        bus: &Bus,
        delivery: Delivery,
        stats: Arc<TypeStats>,
        handling: Handling,
        traced: Traced,
    ) -> Option<Job>;

    /// Whether the handler may serialize messages by sync key.
    fn keyed(&self) -> bool;

    /// A request handler's typed entry for calls handled on the caller's
    /// task: an `Arc<dyn InlineRequest<R>>`, asked for once at
    /// registration. `None` for other handlers.
    fn typed(&self, _stats: &Arc<TypeStats>) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        None
    }
}

fn decode<M: Message>(bus: &Bus, delivery: Delivery) -> Result<(M, Arc<Envelope>, Responder), ()> {
    let Delivery {
        envelope,
        body,
        reply,
        ..
    } = delivery;
    let responder = Responder::new(bus.clone(), &envelope, reply);
    match body.decode::<M>() {
        Ok(msg) => Ok((msg, envelope, responder)),
        Err(error) => {
            bus.counters().malformed.inc();
            tracing::warn!(type_name = %envelope.type_name, id = %envelope.id, %error, "dropping undecodable message");
            tokio::spawn(responder.answer(Err(error)));
            Err(())
        }
    }
}

/// Turns a caught panic into the error the caller sees, and logs the
/// message that caused it (credentials hidden) for the post-mortem.
fn panic_error(envelope: &Envelope, panic: Box<dyn std::any::Any + Send>) -> ErrorCode {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    let type_name = &envelope.type_name;
    tracing::error!(%type_name, panic = %text, message = %envelope.redacted(), "handler panicked");
    ErrorCode::internal(format!("handler of `{type_name}` panicked: {text}"))
}

/// Whether a message's handling has a span (see `runtime::handling_span`)
/// to close with its outcome: known when the job is made, so that an
/// untraced message does not look the current span up when it ends.
#[derive(Clone, Copy)]
pub(crate) struct Traced(pub(crate) bool);

/// Counts a handled message and closes its span with the outcome.
fn finished(stats: &TypeStats, started: Instant, error: Option<&ErrorCode>, traced: Traced) {
    let took = started.elapsed();
    stats.record(took, error.is_some());
    if !traced.0 {
        return;
    }
    let span = tracing::Span::current();
    if !span.is_disabled() {
        span.record("outcome", error.map_or("ok", |e| e.code()));
        span.record("duration_us", took.as_micros() as u64);
        if error.is_some() {
            span.record("otel.status_code", "ERROR");
        }
    }
}

pub(crate) struct RequestEntry<S, R>(pub(crate) Arc<S>, pub(crate) PhantomData<fn(R)>);

impl<S: Handler<R>, R: Request> HandlerEntry for RequestEntry<S, R> {
    fn keyed(&self) -> bool {
        self.0.keyed()
    }

    fn prepare(
        &self,
        bus: &Bus,
        delivery: Delivery,
        stats: Arc<TypeStats>,
        handling: Handling,
        traced: Traced,
    ) -> Option<Job> {
        let (req, envelope, responder) = decode::<R>(bus, delivery).ok()?;
        let sync = self.0.sync_key(&req);
        let service = self.0.clone();
        let ctx = Context::new(bus.clone(), envelope);
        let responder = responder.with_style(R::STYLE);
        Some(Job {
            sync,
            run: Box::pin(handling.scope(async move {
                let outcome = handled(&*service, req, ctx, &stats, traced).await;
                responder.answer(outcome.map(Body::new)).await;
            })),
        })
    }

    fn typed(&self, stats: &Arc<TypeStats>) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        let typed: Arc<dyn InlineRequest<R>> = Arc::new(TypedRequest {
            service: self.0.clone(),
            stats: stats.clone(),
            request: PhantomData,
        });
        Some(Box::new(typed))
    }
}

/// Runs a request handler to its outcome: a panic becomes
/// `cloudbus.INTERNAL`, and the handling is counted.
pub(super) async fn handled<S: Handler<R>, R: Request>(
    service: &S,
    req: R,
    ctx: Context,
    stats: &TypeStats,
    traced: Traced,
) -> Result<R::Reply, ErrorCode> {
    let envelope = ctx.shared_envelope();
    let started = Instant::now();
    let outcome = match AssertUnwindSafe(service.handle(req, ctx))
        .catch_unwind()
        .await
    {
        Ok(outcome) => outcome,
        Err(panic) => Err(panic_error(&envelope, panic)),
    };
    finished(stats, started, outcome.as_ref().err(), traced);
    outcome
}

pub(crate) struct MessageEntry<S, M>(pub(crate) Arc<S>, pub(crate) PhantomData<fn(M)>);

impl<S: MessageHandler<M>, M: Message> HandlerEntry for MessageEntry<S, M> {
    fn keyed(&self) -> bool {
        self.0.keyed()
    }

    fn prepare(
        &self,
        bus: &Bus,
        delivery: Delivery,
        stats: Arc<TypeStats>,
        handling: Handling,
        traced: Traced,
    ) -> Option<Job> {
        let (msg, envelope, responder) = decode::<M>(bus, delivery).ok()?;
        let sync = self.0.sync_key(&msg);
        let service = self.0.clone();
        let ctx = Context::new(bus.clone(), envelope.clone());
        Some(Job {
            sync,
            run: Box::pin(handling.scope(async move {
                let started = Instant::now();
                let outcome = match AssertUnwindSafe(service.receive(msg, ctx))
                    .catch_unwind()
                    .await
                {
                    Ok(outcome) => outcome,
                    Err(panic) => Err(panic_error(&envelope, panic)),
                };
                finished(&stats, started, outcome.as_ref().err(), traced);
                // A plain message has no caller; a request sent to a
                // message handler still gets an answer.
                responder
                    .answer(outcome.map(|()| Body::new(crate::bus::Ack {})))
                    .await;
            })),
        })
    }
}

pub(crate) struct DeferredEntry<S, R>(pub(crate) Arc<S>, pub(crate) PhantomData<fn(R)>);

impl<S: DeferredHandler<R>, R: Request> HandlerEntry for DeferredEntry<S, R> {
    fn keyed(&self) -> bool {
        self.0.keyed()
    }

    fn prepare(
        &self,
        bus: &Bus,
        delivery: Delivery,
        stats: Arc<TypeStats>,
        handling: Handling,
        traced: Traced,
    ) -> Option<Job> {
        let (req, envelope, responder) = decode::<R>(bus, delivery).ok()?;
        let sync = self.0.sync_key(&req);
        let service = self.0.clone();
        let ctx = Context::new(bus.clone(), envelope.clone());
        let panicked = Arc::new(AtomicBool::new(false));
        let port = ReplyPort::new(responder.with_style(R::STYLE).watch_panic(panicked.clone()));
        Some(Job {
            sync,
            run: Box::pin(handling.scope(async move {
                // The port lives inside the handler's future: flag the panic
                // before that future (and the port) is dropped, so the port
                // answers `cloudbus.INTERNAL` rather than `NO_REPLY`.
                // A deferred handler's time is until it returns, not until
                // its port is answered (which may be later, elsewhere).
                let started = Instant::now();
                let mut handling =
                    Box::pin(AssertUnwindSafe(service.handle(req, ctx, port)).catch_unwind());
                let error = match (&mut handling).await {
                    Ok(()) => None,
                    Err(panic) => {
                        panicked.store(true, Ordering::Release);
                        Some(panic_error(&envelope, panic))
                    }
                };
                finished(&stats, started, error.as_ref(), traced);
            })),
        })
    }
}
