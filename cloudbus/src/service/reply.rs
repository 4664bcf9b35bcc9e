use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::oneshot;

use crate::error::codes;
use crate::{Body, Bus, Envelope, ErrorCode, Message, MessageId, NodeId, ReplyStyle};

/// Where the answer to a message goes.
pub(crate) enum ReplyTarget {
    /// A plain message: nobody waits; errors are only logged and counted.
    None,
    /// A caller in this process, waiting on its own future.
    Local(oneshot::Sender<Result<Body, ErrorCode>>),
    /// A caller on another node: the reply goes to this routing key on P2P.
    Remote(String),
}

/// What the bus needs to know to answer one request.
pub(crate) struct ReplyMeta {
    pub(crate) request: MessageId,
    pub(crate) request_type: std::borrow::Cow<'static, str>,
    pub(crate) caller: NodeId,
    pub(crate) style: ReplyStyle,
}

/// Answers one message exactly once. If it is dropped unanswered it answers
/// `cloudbus.NO_REPLY` itself (or `cloudbus.INTERNAL` while a handler
/// panics), so a caller never waits for a reply that cannot come.
pub(crate) struct Responder {
    bus: Bus,
    meta: ReplyMeta,
    target: Option<ReplyTarget>,
    /// Set by the runtime when the handler holding this responder panicked.
    panicked: Option<Arc<AtomicBool>>,
}

impl Responder {
    pub(crate) fn new(bus: Bus, envelope: &Envelope, target: ReplyTarget) -> Self {
        Self {
            bus,
            meta: ReplyMeta {
                request: envelope.id,
                request_type: envelope.type_name.clone(),
                caller: envelope.source,
                style: ReplyStyle::Reply,
            },
            target: Some(target),
            panicked: None,
        }
    }

    pub(crate) fn watch_panic(mut self, flag: Arc<AtomicBool>) -> Self {
        self.panicked = Some(flag);
        self
    }

    pub(crate) fn with_style(mut self, style: ReplyStyle) -> Self {
        self.meta.style = style;
        self
    }

    /// Hands over where the answer must go, without answering: the
    /// request is forwarded and another handler will answer it.
    pub(crate) fn take_target(&mut self) -> Option<ReplyTarget> {
        self.target.take()
    }

    /// Sends the outcome to whoever waits for it.
    pub(crate) async fn answer(mut self, outcome: Result<Body, ErrorCode>) {
        if let Some(target) = self.target.take() {
            self.bus.finish_request(&self.meta, target, outcome).await;
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        let Some(target) = self.target.take() else {
            return;
        };
        let panicked = std::thread::panicking()
            || self
                .panicked
                .as_ref()
                .is_some_and(|flag| flag.load(Ordering::Acquire));
        let error = if panicked {
            ErrorCode::internal(format!("handler of `{}` panicked", self.meta.request_type))
        } else {
            ErrorCode::new(
                codes::NO_REPLY,
                format!(
                    "handler of `{}` finished without replying",
                    self.meta.request_type
                ),
            )
        };
        let bus = self.bus.clone();
        let meta = ReplyMeta {
            request: self.meta.request,
            request_type: self.meta.request_type.clone(),
            caller: self.meta.caller,
            style: self.meta.style,
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move { bus.finish_request(&meta, target, Err(error)).await });
            }
            Err(_) => {
                tracing::error!(request = %meta.request, "reply port dropped outside a runtime; caller will time out")
            }
        }
    }
}

/// The port a handler that answers later replies through (a `#[handlers]`
/// method with a last `reply: ReplyPort<R::Reply>` parameter), like
/// ractor's `RpcReplyPort`. Move it anywhere; answer it once. Dropping it
/// unanswered replies `cloudbus.NO_REPLY`, so a caller never waits for a
/// reply that cannot come.
pub struct ReplyPort<R> {
    responder: Responder,
    _reply: PhantomData<fn(R)>,
}

impl<R: Message> ReplyPort<R> {
    pub(crate) fn new(responder: Responder) -> Self {
        Self {
            responder,
            _reply: PhantomData,
        }
    }

    pub(crate) fn responder(&mut self) -> &mut Responder {
        &mut self.responder
    }

    /// Answers with a reply or an error.
    pub async fn send(self, outcome: Result<R, ErrorCode>) {
        self.responder.answer(outcome.map(Body::new)).await
    }

    /// Answers with a reply.
    pub async fn reply(self, reply: R) {
        self.send(Ok(reply)).await
    }

    /// Answers with an error.
    pub async fn fail(self, error: ErrorCode) {
        self.send(Err(error)).await
    }
}
