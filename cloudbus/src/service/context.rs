use std::sync::Arc;

use crate::{Bus, Envelope, Headers, MessageId, NodeId};

/// Headers with this prefix form the task context (ZStack's task-context
/// header): set by the API caller, they travel with every message sent
/// while handling the message that carried them, across services and nodes.
pub(crate) const CONTEXT_PREFIX: &str = "ctx-";
/// The W3C trace context travels the same way.
const TRACEPARENT: &str = "traceparent";

/// The service whose handler sent a message (an application header, so
/// that the receiving node can count who calls it: the dashboard's map).
/// Absent on messages sent from outside any handler.
pub(crate) const FROM_SERVICE: &str = "cloudbus-from-service";

tokio::task_local! {
    /// What the current task handles: for whom, and in which task context.
    static HANDLING: Handling;
}

/// The service whose handler runs, and the task context of its message:
/// what it sends carries both. One task-local, set where the handler's
/// future is built, so that it costs no allocation of its own.
pub(crate) struct Handling {
    service: ServiceName,
    context: Option<Arc<Headers>>,
}

/// A service's name as its handlers' tasks keep it: copied when it is
/// static (the usual case), so that no reference count is touched by both
/// cores on every message; shared otherwise.
#[derive(Clone)]
pub(crate) enum ServiceName {
    Static(&'static str),
    Shared(Arc<str>),
}

impl ServiceName {
    pub(crate) fn new(name: std::borrow::Cow<'static, str>) -> Self {
        match name {
            std::borrow::Cow::Borrowed(name) => ServiceName::Static(name),
            std::borrow::Cow::Owned(name) => ServiceName::Shared(Arc::from(name)),
        }
    }
}

impl std::ops::Deref for ServiceName {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            ServiceName::Static(name) => name,
            ServiceName::Shared(name) => name,
        }
    }
}

impl Handling {
    pub(crate) fn new(service: ServiceName, envelope: &Envelope) -> Self {
        Self {
            service,
            context: task_context_of(envelope),
        }
    }

    /// Runs `work` as this handling.
    pub(crate) fn scope<F: std::future::Future>(
        self,
        work: F,
    ) -> tokio::task::futures::TaskLocalFuture<Handling, F> {
        HANDLING.scope(self, work)
    }
}

fn is_context(key: &str) -> bool {
    key.starts_with(CONTEXT_PREFIX) || key == TRACEPARENT
}

/// The task context a message carries, if any.
fn task_context_of(envelope: &Envelope) -> Option<Arc<Headers>> {
    let mut context = Headers::default();
    for (key, value) in envelope.headers.iter().filter(|(k, _)| is_context(k)) {
        context.insert(key, value);
    }
    (!context.is_empty()).then(|| Arc::new(context))
}

/// The task context of the message being handled by the current task:
/// its `ctx-*` headers and `traceparent`, if it has any. For passing the
/// context on over other protocols, such as HTTP to host agents.
pub fn task_context() -> Option<Arc<Headers>> {
    HANDLING.try_with(|h| h.context.clone()).ok().flatten()
}

/// Adds the current task context to the headers of a message being sent,
/// without overriding what the sender set itself.
pub(crate) fn inherit_task_context(headers: &mut Headers) {
    let _ = HANDLING.try_with(|handling| {
        if headers.get(FROM_SERVICE).is_none() {
            headers.insert(FROM_SERVICE, &*handling.service);
        }
        for (key, value) in handling.context.iter().flat_map(|c| c.iter()) {
            if headers.get(key).is_none() {
                headers.insert(key, value);
            }
        }
    });
}

/// What a handler knows about the message it handles, and the bus to send
/// further messages on.
#[derive(Clone)]
pub struct Context {
    bus: Bus,
    envelope: Arc<Envelope>,
}

impl Context {
    pub(crate) fn new(bus: Bus, envelope: Arc<Envelope>) -> Self {
        Self { bus, envelope }
    }

    /// The bus, to call other services, send messages or publish events.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The envelope of the message being handled.
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The envelope, shared: for whoever must keep it after the handler
    /// has taken this context.
    pub(crate) fn shared_envelope(&self) -> Arc<Envelope> {
        self.envelope.clone()
    }

    /// The id of the message being handled.
    pub fn message_id(&self) -> MessageId {
        self.envelope.id
    }

    /// The node that sent the message.
    pub fn source(&self) -> NodeId {
        self.envelope.source
    }

    /// An application header of the message.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.envelope.headers.get(key)
    }

    /// A value of the task context (set by the API caller with
    /// `.context(key, value)`, carried here through every hop).
    pub fn context(&self, key: &str) -> Option<&str> {
        self.envelope
            .headers
            .iter()
            .find(|(k, _)| k.strip_prefix(CONTEXT_PREFIX) == Some(key))
            .map(|(_, v)| v)
    }
}
