use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use super::route::{DeferredRoute, MessageRoute, RequestRoute, Route};
use super::{Context, DeferredHandler, Handler, MessageHandler};
use crate::{ErrorCode, Message, Request};

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
    pub(crate) routes: HashMap<&'static str, Arc<dyn Route>>,
    pub(crate) concurrency: usize,
    /// A mistake made while building, reported by `register`.
    pub(crate) error: Option<ErrorCode>,
}

impl Service {
    /// Starts a service named `name` whose handlers are implemented by `state`.
    pub fn builder<S: Send + Sync + 'static>(
        name: impl Into<Cow<'static, str>>,
        state: S,
    ) -> ServiceBuilder<S> {
        ServiceBuilder {
            service: Service {
                name: name.into(),
                routes: HashMap::new(),
                concurrency: DEFAULT_CONCURRENCY,
                error: None,
            },
            state: Arc::new(state),
        }
    }

    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The message types this service handles.
    pub fn handled_types(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.routes.keys().copied()
    }
}

/// Builds a [`Service`]; each `handle`/`receive`/`defer` call declares one
/// message type the service handles.
pub struct ServiceBuilder<S> {
    service: Service,
    state: Arc<S>,
}

impl<S: Send + Sync + 'static> ServiceBuilder<S> {
    fn route(mut self, type_name: &'static str, route: Arc<dyn Route>) -> Self {
        match self.service.routes.entry(type_name) {
            Entry::Vacant(slot) => {
                slot.insert(route);
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

    /// Handles requests `R` with the state's [`Handler<R>`].
    pub fn handle<R: Request>(self) -> Self
    where
        S: Handler<R>,
    {
        let route = Arc::new(RequestRoute::<S, R>(self.state.clone(), PhantomData));
        self.route(R::TYPE, route)
    }

    /// Handles plain messages `M` with the state's [`MessageHandler<M>`].
    pub fn receive<M: Message>(self) -> Self
    where
        S: MessageHandler<M>,
    {
        let route = Arc::new(MessageRoute::<S, M>(self.state.clone(), PhantomData));
        self.route(M::TYPE, route)
    }

    /// Handles requests `R` with the state's [`DeferredHandler<R>`].
    pub fn defer<R: Request>(self) -> Self
    where
        S: DeferredHandler<R>,
    {
        let route = Arc::new(DeferredRoute::<S, R>(self.state.clone(), PhantomData));
        self.route(R::TYPE, route)
    }

    /// Handles requests `R` with an async closure; handy for small services and tests.
    pub fn on_request<R, F, Fut>(self, f: F) -> Self
    where
        R: Request,
        F: Fn(R, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R::Reply, ErrorCode>> + Send + 'static,
    {
        let route = Arc::new(RequestRoute::<FnHandler<F>, R>(
            Arc::new(FnHandler(f)),
            PhantomData,
        ));
        self.route(R::TYPE, route)
    }

    /// Handles plain messages `M` with an async closure.
    pub fn on_message<M, F, Fut>(self, f: F) -> Self
    where
        M: Message,
        F: Fn(M, Context) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ErrorCode>> + Send + 'static,
    {
        let route = Arc::new(MessageRoute::<FnHandler<F>, M>(
            Arc::new(FnHandler(f)),
            PhantomData,
        ));
        self.route(M::TYPE, route)
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

    /// The finished service.
    pub fn build(self) -> Service {
        self.service
    }
}

/// Adapts an async closure to the handler traits.
struct FnHandler<F>(F);

impl<R, F, Fut> Handler<R> for FnHandler<F>
where
    R: Request,
    F: Fn(R, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R::Reply, ErrorCode>> + Send + 'static,
{
    fn handle(
        &self,
        req: R,
        ctx: Context,
    ) -> impl Future<Output = Result<R::Reply, ErrorCode>> + Send {
        (self.0)(req, ctx)
    }
}

impl<M, F, Fut> MessageHandler<M> for FnHandler<F>
where
    M: Message,
    F: Fn(M, Context) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), ErrorCode>> + Send + 'static,
{
    fn receive(&self, msg: M, ctx: Context) -> impl Future<Output = Result<(), ErrorCode>> + Send {
        (self.0)(msg, ctx)
    }
}
