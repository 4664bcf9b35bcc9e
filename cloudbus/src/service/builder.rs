use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use super::entry::{DeferredEntry, HandlerEntry, MessageEntry, RequestEntry};
use super::{Context, DeferredHandler, Handler, MessageHandler, ReplyPort, SyncKey};
use crate::{ErrorCode, Event, Message, Request};

/// The default number of messages one service handles at once.
pub const DEFAULT_CONCURRENCY: usize = 1024;

/// A named set of handlers, ready to [`register`](crate::Bus::register).
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Clone, Serialize, Deserialize)] struct Add { a: i64, b: i64 }
/// # #[derive(Clone, Serialize, Deserialize)] struct Sum { sum: i64 }
/// # impl cloudbus::Message for Add { const TYPE: &'static str = "calc.Add"; }
/// # impl cloudbus::Message for Sum { const TYPE: &'static str = "calc.Sum"; }
/// # impl cloudbus::Request for Add { type Reply = Sum; }
/// use cloudbus::Service;
/// let calc = Service::builder("calc", ())
///     .on_request(|req: Add, _ctx| async move { Ok(Sum { sum: req.a + req.b }) })
///     .concurrency(16)
///     .build();
/// assert_eq!(calc.name(), "calc");
/// assert_eq!(calc.handled_types().collect::<Vec<_>>(), ["calc.Add"]);
/// ```
pub struct Service {
    pub(crate) name: Cow<'static, str>,
    pub(crate) handlers: HashMap<&'static str, Arc<dyn HandlerEntry>>,
    pub(crate) concurrency: usize,
    /// How many messages may wait behind their sync keys beyond those running.
    pub(crate) max_waiting: usize,
    /// The event types the service handles, subscribed to at `register`.
    pub(crate) events: Vec<&'static str>,
    /// A mistake made while building, reported by `register`.
    pub(crate) error: Option<ErrorCode>,
}

/// The handlers a service's state declares, so that building the service
/// registers every one of them: there is no second place to forget.
///
/// Implemented by [`#[handlers]`](crate::handlers) on an `impl` block, and
/// for `()`, the state of services made of closures only.
pub trait Handlers: Send + Sync + Sized + 'static {
    /// Adds this state's handlers to a service being built.
    fn register(builder: ServiceBuilder<Self>) -> ServiceBuilder<Self>;
}

impl Handlers for () {
    fn register(builder: ServiceBuilder<Self>) -> ServiceBuilder<Self> {
        builder
    }
}

impl Service {
    /// Starts a service named `name` with every handler that `state`
    /// declares (its [`#[handlers]`](crate::handlers) methods); add
    /// closures and settings on the builder.
    pub fn builder<S: Handlers>(name: impl Into<Cow<'static, str>>, state: S) -> ServiceBuilder<S> {
        S::register(ServiceBuilder {
            service: Service {
                name: name.into(),
                handlers: HashMap::new(),
                concurrency: DEFAULT_CONCURRENCY,
                max_waiting: DEFAULT_CONCURRENCY * 8,
                events: Vec::new(),
                error: None,
            },
            state: Arc::new(state),
        })
    }

    /// A service named `name` with every handler that `state` declares and
    /// the default settings.
    pub fn new<S: Handlers>(name: impl Into<Cow<'static, str>>, state: S) -> Service {
        Self::builder(name, state).build()
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The message types this service handles.
    pub fn handled_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.handlers.keys().copied()
    }
}

/// Builds a [`Service`]: the state's handlers are in already; each
/// `on_*` call adds a closure for one more message type.
pub struct ServiceBuilder<S> {
    service: Service,
    state: Arc<S>,
}

impl<S: Send + Sync + 'static> ServiceBuilder<S> {
    fn add_entry(mut self, type_name: &'static str, entry: Arc<dyn HandlerEntry>) -> Self {
        match self.service.handlers.entry(type_name) {
            Entry::Vacant(slot) => {
                slot.insert(entry);
            }
            Entry::Occupied(_) => {
                self.service.error.get_or_insert_with(|| {
                    ErrorCode::invalid(format!(
                        "service `{}` declares a handler for `{type_name}` twice",
                        self.service.name
                    ))
                });
            }
        }
        self
    }

    /// Handles requests `R` with an async closure; handy for small services and tests.
    pub fn on_request<R, F, Fut>(self, f: F) -> Self
    where
        R: Request,
        F: Fn(R, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Reply, ErrorCode>> + Send + 'static,
    {
        self.__request(move |_: Arc<S>, req, ctx| f(req, ctx), None)
    }

    /// Handles plain messages `M` with an async closure.
    pub fn on_message<M, F, Fut>(self, f: F) -> Self
    where
        M: Message,
        F: Fn(M, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ErrorCode>> + Send + 'static,
    {
        self.__message(move |_: Arc<S>, msg, ctx| f(msg, ctx), None)
    }

    /// Handles events `E` with an async closure. The service subscribes to
    /// `E` when it is registered and handles each event like a message:
    /// within its concurrency limit, a panic caught and counted, in its
    /// statistics, and finished before a graceful stop completes.
    pub fn on_event<E, F, Fut>(self, f: F) -> Self
    where
        E: Event,
        F: Fn(E, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ErrorCode>> + Send + 'static,
    {
        self.__event(move |_: Arc<S>, ev, ctx| f(ev, ctx), None)
    }

    #[doc(hidden)]
    /// Used by `#[handlers]`: a request handler with the state and an optional sync key.
    pub fn __request<R, F, Fut>(self, f: F, key: Option<fn(&S, &R) -> Option<SyncKey>>) -> Self
    where
        R: Request,
        F: Fn(Arc<S>, R, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Reply, ErrorCode>> + Send + 'static,
    {
        let handler = Arc::new(StateFn::new(&self.state, f, key));
        self.add_entry(
            R::TYPE,
            Arc::new(RequestEntry::<_, R>(handler, PhantomData)),
        )
    }

    #[doc(hidden)]
    /// Used by `#[handlers]`: a plain message handler.
    pub fn __message<M, F, Fut>(self, f: F, key: Option<fn(&S, &M) -> Option<SyncKey>>) -> Self
    where
        M: Message,
        F: Fn(Arc<S>, M, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ErrorCode>> + Send + 'static,
    {
        let handler = Arc::new(StateFn::new(&self.state, f, key));
        self.add_entry(
            M::TYPE,
            Arc::new(MessageEntry::<_, M>(handler, PhantomData)),
        )
    }

    #[doc(hidden)]
    /// Used by `#[handlers]`: an event handler.
    pub fn __event<E, F, Fut>(mut self, f: F, key: Option<fn(&S, &E) -> Option<SyncKey>>) -> Self
    where
        E: Event,
        F: Fn(Arc<S>, E, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ErrorCode>> + Send + 'static,
    {
        self.service.events.push(E::TYPE);
        self.__message(f, key)
    }

    #[doc(hidden)]
    /// Used by `#[handlers]`: a request answered through a [`ReplyPort`].
    pub fn __deferred<R, F, Fut>(self, f: F, key: Option<fn(&S, &R) -> Option<SyncKey>>) -> Self
    where
        R: Request,
        F: Fn(Arc<S>, R, Context, ReplyPort<R::Reply>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler = Arc::new(StateFn::new(&self.state, f, key));
        self.add_entry(
            R::TYPE,
            Arc::new(DeferredEntry::<_, R>(handler, PhantomData)),
        )
    }

    /// How many messages the service handles at once (default 1024). A
    /// sender waits when the service is full; over a broker this is the
    /// consumer's prefetch, so memory stays bounded.
    pub fn concurrency(mut self, limit: usize) -> Self {
        if limit == 0 {
            self.service.error.get_or_insert_with(|| {
                ErrorCode::invalid("a service's concurrency limit must be at least 1")
            });
        }
        self.service.concurrency = limit.max(1);
        self
    }

    /// How many messages may wait behind their sync keys, beyond the ones
    /// running (default 8 × the default concurrency). Waiting messages hold
    /// no concurrency permit, so a burst on one resource does not stop the
    /// others; this bounds the memory they take, and when it is reached
    /// senders wait (over a broker, the messages stay queued there).
    pub fn max_waiting(mut self, messages: usize) -> Self {
        self.service.max_waiting = messages;
        self
    }

    /// The finished service.
    pub fn build(self) -> Service {
        self.service
    }
}

/// A handler function with the service's state and its sync key.
struct StateFn<S, F, M> {
    state: Arc<S>,
    f: F,
    key: Option<fn(&S, &M) -> Option<SyncKey>>,
}

impl<S, F, M> StateFn<S, F, M> {
    fn new(state: &Arc<S>, f: F, key: Option<fn(&S, &M) -> Option<SyncKey>>) -> Self {
        Self {
            state: state.clone(),
            f,
            key,
        }
    }

    fn sync_key(&self, msg: &M) -> Option<SyncKey> {
        self.key.and_then(|key| key(&self.state, msg))
    }
}

impl<S, R, F, Fut> Handler<R> for StateFn<S, F, R>
where
    S: Send + Sync + 'static,
    R: Request,
    F: Fn(Arc<S>, R, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R::Reply, ErrorCode>> + Send + 'static,
{
    fn handle(
        &self,
        req: R,
        ctx: Context,
    ) -> impl Future<Output = Result<R::Reply, ErrorCode>> + Send {
        (self.f)(self.state.clone(), req, ctx)
    }

    fn sync_key(&self, req: &R) -> Option<SyncKey> {
        StateFn::sync_key(self, req)
    }

    fn keyed(&self) -> bool {
        self.key.is_some()
    }
}

impl<S, M, F, Fut> MessageHandler<M> for StateFn<S, F, M>
where
    S: Send + Sync + 'static,
    M: Message,
    F: Fn(Arc<S>, M, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ErrorCode>> + Send + 'static,
{
    fn receive(&self, msg: M, ctx: Context) -> impl Future<Output = Result<(), ErrorCode>> + Send {
        (self.f)(self.state.clone(), msg, ctx)
    }

    fn sync_key(&self, msg: &M) -> Option<SyncKey> {
        StateFn::sync_key(self, msg)
    }

    fn keyed(&self) -> bool {
        self.key.is_some()
    }
}

impl<S, R, F, Fut> DeferredHandler<R> for StateFn<S, F, R>
where
    S: Send + Sync + 'static,
    R: Request,
    F: Fn(Arc<S>, R, Context, ReplyPort<R::Reply>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn handle(
        &self,
        req: R,
        ctx: Context,
        reply: ReplyPort<R::Reply>,
    ) -> impl Future<Output = ()> + Send {
        (self.f)(self.state.clone(), req, ctx, reply)
    }

    fn sync_key(&self, req: &R) -> Option<SyncKey> {
        StateFn::sync_key(self, req)
    }

    fn keyed(&self) -> bool {
        self.key.is_some()
    }
}
