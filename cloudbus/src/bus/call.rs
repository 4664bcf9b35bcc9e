//! Sending: requests that await a typed reply, and plain messages.

use std::borrow::Cow;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{StreamExt, stream};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Bus;
use crate::service::{Delivery, ReplyTarget, ServiceRuntime};
use crate::{
    Body, Envelope, ErrorCode, Headers, Kind, Message, MessageId, NodeId, ReplyStyle, Request,
};

/// What "no timeout" amounts to: longer than any process lives.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Where a message goes.
pub(super) enum Target {
    Local(Arc<ServiceRuntime>),
    Remote(NodeId),
}

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
    running: Option<BoxFuture<'static, Result<R::Reply, ErrorCode>>>,
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
    fn start(&mut self) -> BoxFuture<'static, Result<R::Reply, ErrorCode>> {
        let bus = self.bus.clone();
        let (id, cancellable) = (self.id, self.cancellable);
        let timeout = self.timeout.unwrap_or(bus.inner.config.default_timeout);
        let (request, to) = (self.request.take(), std::mem::take(&mut self.to));
        Box::pin(async move {
            let request =
                request.ok_or_else(|| ErrorCode::internal("call polled after it ended"))?;
            let mut envelope =
                bus.envelope(Kind::Request, R::TYPE.into(), R::service().into(), to)?;
            envelope.id = id;
            envelope.timeout = Some(timeout);
            let api_event = (R::STYLE == ReplyStyle::ApiEvent).then_some(R::Reply::TYPE);
            bus.request(envelope, Body::new(request), api_event, cancellable)
                .await?
                .decode::<R::Reply>()
        })
    }
}

started_on_poll!(Call<R>, Result<R::Reply, ErrorCode>, R: Request);

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
            id: MessageId::random(),
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

    pub(super) fn envelope(
        &self,
        kind: Kind,
        type_name: Cow<'static, str>,
        default_service: Cow<'static, str>,
        to: Addressing,
    ) -> Result<Envelope, ErrorCode> {
        let mut envelope = Envelope::new(kind, type_name, self.inner.node);
        envelope.service = Some(to.service.unwrap_or(default_service));
        envelope.target = match (to.node, to.resource) {
            (Some(node), _) => Some(node),
            (None, Some(resource)) => Some(self.owner(&resource)?),
            (None, None) => None,
        };
        envelope.headers = to.headers;
        crate::service::inherit_task_context(&mut envelope.headers);
        Ok(envelope)
    }

    /// Readdresses a request being forwarded and finds where it goes.
    pub(super) fn forward_target(
        &self,
        envelope: &mut Envelope,
        to: Addressing,
    ) -> Result<Target, ErrorCode> {
        if let Some(service) = to.service {
            envelope.service = Some(service);
        }
        envelope.target = match (to.node, to.resource) {
            (Some(node), _) => Some(node),
            (None, Some(resource)) => Some(self.owner(&resource)?),
            (None, None) => None,
        };
        for (key, value) in to.headers.iter() {
            envelope.headers.insert(key, value);
        }
        envelope.check_wire_limits()?;
        self.resolve(envelope.service_name(), envelope.target)
    }

    /// The node that owns `resource` by the consistent hash ring over the
    /// live members (DESIGN §5). On the embedded bus, this node.
    pub fn owner(&self, resource: &str) -> Result<NodeId, ErrorCode> {
        self.inner.members.owner(resource).ok_or_else(|| {
            ErrorCode::new(
                crate::codes::NODE_UNAVAILABLE,
                format!("no node owns resource `{resource}`: no member of the cluster is known"),
            )
        })
    }

    pub(super) fn resolve(&self, service: &str, node: Option<NodeId>) -> Result<Target, ErrorCode> {
        let here = self.inner.node;
        let transport = self.inner.transport.is_some();
        match node {
            Some(node) if node != here => {
                if self.inner.members.departed(node) {
                    Err(ErrorCode::new(
                        crate::codes::NODE_UNAVAILABLE,
                        format!("node {node} has left the cluster or is dead"),
                    ))
                } else if transport {
                    Ok(Target::Remote(node))
                } else {
                    Err(ErrorCode::new(
                        crate::codes::NODE_UNAVAILABLE,
                        format!("node {node} cannot be reached: this bus has no transport"),
                    ))
                }
            }
            _ => match self.service(service) {
                Some(runtime) if self.inner.config.local_shortcut || !transport => {
                    Ok(Target::Local(runtime))
                }
                Some(_) => Ok(Target::Remote(here)),
                None if node.is_some() => Err(ErrorCode::no_such_service(service)),
                None => match self.inner.members.pick(service) {
                    Some(there) if transport && there != here => Ok(Target::Remote(there)),
                    _ => Err(ErrorCode::no_such_service(service)),
                },
            },
        }
    }

    /// Sends a request envelope and waits for the outcome. `api_event` names
    /// the event type that answers a non-blocking API; `cancellable` says
    /// whether the caller may cancel it by id.
    pub(crate) async fn request(
        &self,
        mut envelope: Envelope,
        body: Body,
        api_event: Option<&str>,
        cancellable: bool,
    ) -> Result<Body, ErrorCode> {
        self.check_open()?;
        self.intercept_send(&mut envelope, &body)?;
        envelope.check_wire_limits()?;
        let timeout = envelope
            .timeout
            .unwrap_or(self.inner.config.default_timeout);
        // A timeout too large to add to the clock means "as long as it takes".
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(|| Instant::now() + FOREVER);
        let what = envelope.type_name.clone();
        let id = envelope.id;
        let outcome = match self.resolve(envelope.service_name(), envelope.target)? {
            Target::Local(runtime) => {
                let (tx, rx) = oneshot::channel();
                let delivery = Delivery {
                    envelope,
                    body,
                    reply: ReplyTarget::Local(tx),
                    deadline: Some(deadline.into_std()),
                };
                let exchange = async {
                    runtime.deliver(self, delivery).await;
                    match rx.await {
                        Ok(outcome) => outcome,
                        // Dropped unanswered: the request expired before a
                        // handler took it; the deadline ends the wait.
                        Err(_) => std::future::pending().await,
                    }
                };
                if cancellable {
                    // Registered like a remote call, so that `cancel`
                    // finds it; only when its id was asked for, since
                    // nobody can cancel a call without its id.
                    let (_waiting, cancelled) = self.inner.pending.register(id, self.inner.node);
                    let exchange = async {
                        tokio::select! {
                            outcome = exchange => outcome,
                            Ok(outcome) = cancelled => outcome,
                        }
                    };
                    tokio::time::timeout_at(deadline, exchange).await
                } else {
                    tokio::time::timeout_at(deadline, exchange).await
                }
            }
            Target::Remote(node) => {
                let transport = self.transport()?;
                if let Some(event_type) = api_event {
                    self.bind_api_event(event_type).await?;
                }
                envelope.reply_to =
                    Some(format!("{}.{}", super::builtin::SERVICE, self.inner.node));
                let routing_key = format!("{}.{node}", envelope.service_name());
                let (_waiting, rx) = self.inner.pending.register(envelope.id, node);
                let exchange = async {
                    transport
                        .send(&routing_key, &envelope, body.to_json()?)
                        .await?;
                    rx.await
                        .unwrap_or_else(|_| Err(ErrorCode::internal("reply channel closed")))
                };
                tokio::time::timeout_at(deadline, exchange).await
            }
        };
        outcome.unwrap_or_else(|_| {
            self.inner.stats.timeouts.inc();
            Err(ErrorCode::timeout(&what, timeout))
        })
    }

    /// Hands a plain message over; done once it is accepted.
    pub(crate) async fn post(&self, mut envelope: Envelope, body: Body) -> Result<(), ErrorCode> {
        self.check_open()?;
        self.intercept_send(&mut envelope, &body)?;
        envelope.check_wire_limits()?;
        match self.resolve(envelope.service_name(), envelope.target)? {
            Target::Local(runtime) => {
                let delivery = Delivery {
                    envelope,
                    body,
                    reply: ReplyTarget::None,
                    deadline: None,
                };
                runtime.deliver(self, delivery).await;
                Ok(())
            }
            Target::Remote(node) => {
                let routing_key = format!("{}.{node}", envelope.service_name());
                self.transport()?
                    .send(&routing_key, &envelope, body.to_json()?)
                    .await
            }
        }
    }

    pub(super) fn transport(&self) -> Result<&Arc<dyn crate::transport::Transport>, ErrorCode> {
        self.inner
            .transport
            .as_ref()
            .ok_or_else(|| ErrorCode::internal("no transport"))
    }
}
