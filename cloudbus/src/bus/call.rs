//! Sending: requests that await a typed reply, and plain messages.

use std::borrow::Cow;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, stream};

use super::Bus;
use super::dispatch::Answer;
use super::request::{Requested, traced};
use crate::service::Inline;
use crate::{
    Body, Envelope, ErrorCode, Headers, Kind, Message, MessageId, NodeId, ReplyStyle, Request,
};
use tracing::Instrument as _;

/// Options shared by calls and plain sends.
#[derive(Default)]
pub(super) struct Addressing {
    pub(super) service: Option<Cow<'static, str>>,
    pub(super) node: Option<NodeId>,
    pub(super) resource: Option<String>,
    pub(super) headers: Headers,
}

/// Where a message goes, the same for every outgoing builder: typed or
/// raw, request or plain message.
macro_rules! addressing_methods {
    () => {
        /// Sends to this service instead of the one the type name starts with.
        pub fn service(mut self, service: impl Into<std::borrow::Cow<'static, str>>) -> Self {
            self.to.service = Some(service.into());
            self
        }

        /// Sends to the service on this node.
        pub fn node(mut self, node: $crate::NodeId) -> Self {
            self.to.node = Some(node);
            self
        }

        /// Sends to the service on the node that owns `resource` (usually
        /// its UUID) by the consistent hash ring, so every message about
        /// one resource is handled on one node.
        pub fn owner_of(mut self, resource: impl Into<String>) -> Self {
            self.to.resource = Some(resource.into());
            self
        }

        /// Adds an application header.
        pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
            self.to.headers.insert(key, value);
            self
        }

        /// Adds a value to the task context: it travels with this message
        /// and with every message sent while handling it, on any node
        /// (read it with [`Context::context`](crate::Context::context)).
        pub fn context(mut self, key: &str, value: impl Into<String>) -> Self {
            self.to
                .headers
                .insert(format!("{}{key}", $crate::CONTEXT_PREFIX), value);
            self
        }
    };
}
pub(super) use addressing_methods;

/// Makes an outgoing builder its own future: options are set by value,
/// then the first poll takes what it needs (its `start`) and the boxed work
/// runs from there. Nothing of it is pinned in place, so it is `Unpin`.
macro_rules! started_on_poll {
    ($ty:ty, $out:ty $(, $param:ident : $bound:path)?) => {
        impl$(<$param: $bound>)? Unpin for $ty {}

        impl$(<$param: $bound>)? std::future::Future for $ty {
            type Output = $out;

            fn poll(
                self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Self::Output> {
                let this = self.get_mut();
                if this.running.is_none() {
                    std::task::ready!($crate::bus::request::cooperate(cx));
                    this.running = Some(this.start());
                }
                match this.running.as_mut() {
                    Some(running) => running.as_mut().poll(cx),
                    None => std::task::Poll::Pending,
                }
            }
        }
    };
}
pub(super) use started_on_poll;

/// A request on its way; `.await` it for the typed reply. Set a timeout,
/// another service or a specific node first if needed.
///
/// Where it goes: the node named with [`node`](Self::node) or
/// [`owner_of`](Self::owner_of); else the service on this node if it runs
/// here; else the live members that run it, in turn. Each bus starts its
/// turns at a random member, so many short-lived callers (one call each,
/// like `cloudbus call`) spread over the members instead of all landing on
/// the first. An observer's built-in requests (`cloudbus.Ping`…) go to a
/// member, never to the observer itself.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Clone, Serialize, Deserialize)] struct Add { a: i64, b: i64 }
/// # #[derive(Clone, Debug, Serialize, Deserialize)] struct Sum { sum: i64 }
/// # impl cloudbus::Message for Add { const TYPE: &'static str = "calc.Add"; }
/// # impl cloudbus::Message for Sum { const TYPE: &'static str = "calc.Sum"; }
/// # impl cloudbus::Request for Add { type Reply = Sum; }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::time::Duration;
/// use cloudbus::{Bus, Service, codes};
/// let bus = Bus::embedded();
/// bus.register(Service::builder("calc", ())
///     .on_request(|r: Add, _| async move { Ok(Sum { sum: r.a + r.b }) })
///     .build()).await.unwrap();
///
/// let sum = bus.call(Add { a: 2, b: 3 }).timeout(Duration::from_secs(1)).await.unwrap();
/// assert_eq!(sum.sum, 5);
///
/// let err = bus.call(Add { a: 1, b: 1 }).service("nowhere").await.unwrap_err();
/// assert!(err.is(codes::NO_SUCH_SERVICE));
/// # }
/// ```
///
/// A call is a `'static` + `Send` future: `tokio::spawn(bus.call(req))`
/// works, and the request goes out at the first poll.
#[must_use = "a call does nothing until awaited"]
pub struct Call<R: Request> {
    bus: Bus,
    id: MessageId,
    cancellable: bool,
    request: Option<R>,
    timeout: Option<Duration>,
    to: Addressing,
    running: Option<BoxFuture<'static, Result<Body, ErrorCode>>>,
}

impl<R: Request> Call<R> {
    /// The request's id, known before it is sent: for logs, and to find
    /// the request on the receiving side.
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// How long to wait for the reply (default: the bus's default timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Makes the call cancellable from elsewhere and returns the handle that
    /// cancels it (ZStack's `cancel`); awaiting the call then ends with the
    /// handle's error as soon as it is used.
    ///
    /// ```
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Clone, Serialize, Deserialize, cloudbus::Message)]
    /// # #[message(type = "slow.Wait", reply = Done)] struct Wait {}
    /// # #[derive(Clone, Debug, Serialize, Deserialize, cloudbus::Message)]
    /// # #[message(type = "slow.Done")] struct Done {}
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use cloudbus::{Bus, Service, codes};
    /// let bus = Bus::embedded();
    /// bus.register(Service::builder("slow", ())
    ///     .on_request(|_: Wait, _| std::future::pending())
    ///     .build()).await.unwrap();
    ///
    /// let (call, cancel) = bus.call(Wait {}).cancellable();
    /// let waiting = tokio::spawn(call);
    /// tokio::task::yield_now().await;
    /// assert!(cancel.cancel());
    /// let err = waiting.await.unwrap().unwrap_err();
    /// assert!(err.is(codes::CANCELLED));
    /// # }
    /// ```
    pub fn cancellable(mut self) -> (Self, CancelHandle) {
        self.cancellable = true;
        let handle = CancelHandle::new(self.bus.clone(), self.id);
        (self, handle)
    }

    addressing_methods!();
}

/// Cancels one call made [`cancellable`](Call::cancellable).
#[derive(Clone)]
pub struct CancelHandle {
    bus: Bus,
    id: MessageId,
}

impl CancelHandle {
    pub(super) fn new(bus: Bus, id: MessageId) -> Self {
        Self { bus, id }
    }

    /// The cancelled request's id.
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// Ends the call with `cloudbus.CANCELLED`. Returns whether it was still
    /// waiting (it may have finished, or not be sent yet).
    pub fn cancel(&self) -> bool {
        self.bus.cancel(self.id, None)
    }

    /// Ends the call with `error`.
    pub fn cancel_with(&self, error: ErrorCode) -> bool {
        self.bus.cancel(self.id, Some(error))
    }
}

impl<R: Request> Call<R> {
    /// Hands the request over: typed to a handler on this node when it can
    /// take it so (see [`Bus::call_inline`]), else as a [`Body`].
    fn start(&mut self) -> Requested<Result<R::Reply, ErrorCode>> {
        let Some(request) = self.request.take() else {
            return Requested::Answered(Err(ErrorCode::internal("call polled after it ended")));
        };
        let timeout = self
            .timeout
            .unwrap_or(self.bus.inner.config.default_timeout);
        let to = std::mem::take(&mut self.to);
        let mut envelope =
            match self
                .bus
                .envelope(Kind::Request, R::TYPE.into(), R::service().into(), to)
            {
                Ok(envelope) => envelope,
                Err(error) => return Requested::Answered(Err(error)),
            };
        envelope.id = self.id;
        envelope.timeout = Some(timeout);
        // Made once: a traced call goes the general way, in this span.
        let span = crate::trace_context::sending_span(&envelope, self.bus.inner.node);
        let (request, envelope) = match R::STYLE {
            // Only the general path registers a cancellable call's id, and
            // publishes a non-blocking API's answer.
            ReplyStyle::Reply if !self.cancellable && span.is_disabled() => {
                match self.bus.call_inline(envelope, request) {
                    Inline::Replied(outcome) => return Requested::Answered(outcome),
                    Inline::Waiting(waiting) => return Requested::Waiting(waiting),
                    Inline::Declined(request, envelope) => (request, envelope),
                }
            }
            _ => (request, envelope),
        };
        let api_event = (R::STYLE == ReplyStyle::ApiEvent).then_some(Cow::Borrowed(R::Reply::TYPE));
        let body = Body::new(request);
        match (self.bus).request_spanned(envelope, body, api_event, self.cancellable, span) {
            Requested::Answered(outcome) => Requested::Answered(decoded::<R>(outcome)),
            Requested::Waiting(waiting) => Requested::Waiting(waiting),
        }
    }
}

/// The typed reply in an answer that came as a body.
fn decoded<R: Request>(outcome: Result<Body, ErrorCode>) -> Result<R::Reply, ErrorCode> {
    outcome.and_then(Body::decode::<R::Reply>)
}

impl<R: Request> Unpin for Call<R> {}

impl<R: Request> Future for Call<R> {
    type Output = Result<R::Reply, ErrorCode>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut running = this.running.take();
        let polled = Requested::poll(&mut running, cx, || this.start(), decoded::<R>);
        this.running = running;
        polled
    }
}

/// A plain message on its way; `.await` it to hand it over. It finishes
/// when the message is accepted, not when it is handled.
#[must_use = "a send does nothing until awaited"]
pub struct SendMessage<M> {
    bus: Bus,
    message: Option<M>,
    to: Addressing,
    running: Option<BoxFuture<'static, Result<(), ErrorCode>>>,
}

impl<M: Message> SendMessage<M> {
    addressing_methods!();
}

impl<M: Message> SendMessage<M> {
    fn start(&mut self) -> BoxFuture<'static, Result<(), ErrorCode>> {
        let bus = self.bus.clone();
        let (message, to) = (self.message.take(), std::mem::take(&mut self.to));
        Box::pin(async move {
            let message =
                message.ok_or_else(|| ErrorCode::internal("send polled after it ended"))?;
            let envelope = bus.envelope(Kind::Message, M::TYPE.into(), M::service().into(), to)?;
            bus.post(envelope, Body::new(message)).await
        })
    }
}

started_on_poll!(SendMessage<M>, Result<(), ErrorCode>, M: Message);

impl Bus {
    /// Sends a request and awaits its typed reply (or the error it ended in:
    /// the handler's own, `cloudbus.TIMEOUT`, `cloudbus.NO_SUCH_SERVICE`…).
    pub fn call<R: Request>(&self, request: R) -> Call<R> {
        Call {
            bus: self.clone(),
            id: MessageId::next(),
            cancellable: false,
            request: Some(request),
            timeout: None,
            to: Addressing::default(),
            running: None,
        }
    }

    /// Sends a plain message that needs no reply.
    pub fn send<M: Message>(&self, message: M) -> SendMessage<M> {
        SendMessage {
            bus: self.clone(),
            message: Some(message),
            to: Addressing::default(),
            running: None,
        }
    }

    /// Stops waiting for a request (ZStack's `cancel`): its caller's future
    /// resolves at once with `error`, by default `cloudbus.CANCELLED`. A
    /// reply that arrives later is counted as late and dropped. Returns
    /// whether a caller was waiting. Calls to other nodes can always be
    /// cancelled by id; calls within this node only when made
    /// [`cancellable`](Call::cancellable), which is also the handier way.
    pub fn cancel(&self, request: MessageId, error: Option<ErrorCode>) -> bool {
        let error = error.unwrap_or_else(|| {
            ErrorCode::new(
                crate::codes::CANCELLED,
                format!("request {request} was cancelled"),
            )
        });
        self.inner.pending.complete(request, Err(error))
    }

    /// Sends many requests, at most `parallelism` at a time, and returns
    /// their outcomes in the order of the requests.
    pub async fn call_all<R: Request>(
        &self,
        requests: impl IntoIterator<Item = R>,
        parallelism: usize,
    ) -> Vec<Result<R::Reply, ErrorCode>> {
        stream::iter(requests)
            .map(|r| self.call(r).into_future())
            .buffered(parallelism.max(1))
            .collect()
            .await
    }

    /// Sends many requests, at most `parallelism` at a time, and yields
    /// each outcome as it arrives with the request's index (ZStack's
    /// stepping callback): act on the first answers while others are out.
    pub fn call_each<'a, R: Request, I>(
        &'a self,
        requests: I,
        parallelism: usize,
    ) -> impl futures::Stream<Item = (usize, Result<R::Reply, ErrorCode>)> + 'a
    where
        I: IntoIterator<Item = R>,
        I::IntoIter: 'a,
    {
        stream::iter(requests.into_iter().enumerate())
            .map(move |(i, r)| {
                let call = self.call(r).into_future();
                async move { (i, call.await) }
            })
            .buffer_unordered(parallelism.max(1))
    }
}

impl Bus {
    /// Hands a plain message over; done once it is accepted.
    pub(crate) async fn post(&self, mut envelope: Envelope, body: Body) -> Result<(), ErrorCode> {
        let span = crate::trace_context::sending_span(&envelope, self.inner.node);
        let outcome = async {
            let target = self.resolve_outgoing(&mut envelope, &body, true)?;
            traced(&span, &target, &mut envelope);
            self.dispatch(target, envelope, body, Answer::Nobody, None)
                .await
        }
        .instrument(span.clone())
        .await;
        crate::trace_context::sent(&span, &outcome);
        outcome
    }
}
