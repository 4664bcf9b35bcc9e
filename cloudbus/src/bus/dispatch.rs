//! The one way a message leaves its sender: requests, plain messages and
//! forwarded requests are all addressed, checked, routed and handed over
//! here, on this node or through the transport to another.

use std::borrow::Cow;
use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::call::Addressing;
use super::routing::{self, Situation};
use super::{Bus, Services};
use crate::address::{Destination, ServiceAddress};
use crate::service::{Delivery, ReplyTarget, ServiceRuntime};
use crate::{Body, Envelope, ErrorCode, Kind, MessageId, NodeId};

pub(super) type Target = routing::Target<Arc<ServiceRuntime>>;

/// Who waits for the answer to a dispatched message.
pub(super) enum Answer {
    /// Nobody: a plain message.
    Nobody,
    /// A caller on this node, through the oneshot given. Remote handlers
    /// answer this node's queue; the pending map hands the reply over.
    Here(oneshot::Sender<Result<Body, ErrorCode>>),
    /// Whoever waits at this `reply_to` (a forwarded request's caller on
    /// another node, or in another language).
    At(String),
}

impl Bus {
    /// A new outgoing envelope from a sender's addressing.
    pub(super) fn envelope(
        &self,
        kind: Kind,
        type_name: Cow<'static, str>,
        default_service: Cow<'static, str>,
        to: Addressing,
    ) -> Result<Envelope, ErrorCode> {
        let mut envelope = Envelope::new(kind, type_name, self.inner.node);
        envelope.service = Some(to.service.unwrap_or(default_service));
        envelope.target = self.target_node(to.node, to.resource.as_deref())?;
        envelope.headers = to.headers;
        crate::service::inherit_task_context(&mut envelope.headers);
        Ok(envelope)
    }

    /// Readdresses a request being forwarded: another service, node or
    /// owner, and more headers.
    pub(super) fn readdress(
        &self,
        envelope: &mut Envelope,
        to: Addressing,
    ) -> Result<(), ErrorCode> {
        if let Some(service) = to.service {
            envelope.service = Some(service);
        }
        envelope.target = self.target_node(to.node, to.resource.as_deref())?;
        for (key, value) in to.headers.iter() {
            envelope.headers.insert(key, value);
        }
        Ok(())
    }

    fn target_node(
        &self,
        node: Option<NodeId>,
        resource: Option<&str>,
    ) -> Result<Option<NodeId>, ErrorCode> {
        match (node, resource) {
            (Some(node), _) => Ok(Some(node)),
            (None, Some(resource)) => self.owner(resource).map(Some),
            (None, None) => Ok(None),
        }
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

    /// Where a message for `service` (on `node`, if named) goes now.
    ///
    /// An observer (a command-line tool, a gateway) runs the built-in
    /// `cloudbus` service only to receive its replies: a built-in request
    /// it sends to no node in particular goes to a member, never to itself.
    pub(super) fn resolve(&self, service: &str, node: Option<NodeId>) -> Result<Target, ErrorCode> {
        self.resolve_with(service, node, || self.service(service), &|service: &str| {
            self.inner.members.pick(service)
        })
    }

    /// The service among `services` (the registered ones) that a message
    /// for `service` (on `node`) goes to, if it goes to one on this node.
    /// Unlike [`resolve`](Self::resolve), it takes no turn among the other
    /// nodes that run it, and borrows the runtime rather than share it.
    pub(super) fn resolve_here<'a>(
        &self,
        services: &'a Services,
        service: &str,
        node: Option<NodeId>,
    ) -> Option<&'a ServiceRuntime> {
        let local = || services.get(service).map(|runtime| &**runtime);
        match self.resolve_with(service, node, local, &|_: &str| None) {
            Ok(routing::Target::Local(runtime)) => Some(runtime),
            _ => None,
        }
    }

    fn resolve_with<L>(
        &self,
        service: &str,
        node: Option<NodeId>,
        local: impl FnOnce() -> Option<L>,
        pick: &impl Fn(&str) -> Option<NodeId>,
    ) -> Result<routing::Target<L>, ErrorCode> {
        let members = &self.inner.members;
        let observer_builtin = !members.config.member
            && node.is_none()
            && service == crate::address::NODE_SERVICE
            && self.inner.transport.is_some();
        if observer_builtin && pick(service).is_none() {
            return Err(ErrorCode::new(
                crate::codes::NODE_UNAVAILABLE,
                "no member of the cluster is known to answer a built-in request".to_string(),
            ));
        }
        routing::resolve(
            service,
            node,
            Situation {
                here: self.inner.node,
                transport: self.inner.transport.is_some(),
                local_shortcut: self.inner.config.local_shortcut,
                local: if observer_builtin { None } else { local() },
                departed: &|node| members.departed(node),
                pick,
            },
        )
    }

    /// Checks an outgoing message against the wire's limits and routes it;
    /// `intercepted` messages (new ones, not forwards) pass the send
    /// interceptors first.
    pub(super) fn resolve_outgoing(
        &self,
        envelope: &mut Envelope,
        body: &Body,
        intercepted: bool,
    ) -> Result<Target, ErrorCode> {
        self.check_open()?;
        if intercepted {
            self.intercept_send(envelope, body)?;
        }
        envelope.check_wire_limits()?;
        self.resolve(envelope.service_name(), envelope.target)
    }

    /// Hands a routed message to its handler: delivered to the service on
    /// this node, or published to its queue on another. `deadline` is when
    /// the caller stops waiting. Returns once the message is accepted (or
    /// the transport refused it); the answer goes to `answer`.
    pub(super) async fn dispatch(
        &self,
        target: Target,
        mut envelope: Envelope,
        body: Body,
        answer: Answer,
        deadline: Option<Instant>,
    ) -> Result<(), ErrorCode> {
        let node = match target {
            Target::Local(runtime) => {
                let reply = match answer {
                    Answer::Nobody => ReplyTarget::None,
                    Answer::Here(tx) => ReplyTarget::Local(tx),
                    Answer::At(reply_to) => ReplyTarget::Remote(reply_to),
                };
                let delivery = Delivery {
                    envelope: Arc::new(envelope),
                    body,
                    reply,
                    deadline: deadline.map(Instant::into_std),
                };
                runtime.deliver(self, delivery).await;
                return Ok(());
            }
            Target::Remote(node) => node,
        };
        envelope.reply_to = match answer {
            Answer::Nobody => None,
            Answer::Here(tx) => {
                // The caller is in this process, waiting on its oneshot:
                // relay the reply that comes back to this node's queue.
                self.relay(envelope.id, node, tx).await;
                Some(self.reply_to())
            }
            Answer::At(reply_to) => Some(reply_to),
        };
        let to = ServiceAddress::new(envelope.service_name(), node);
        let body = body.to_json()?;
        self.transport()?
            .send(Destination::Service(to), &envelope, body)
            .await
    }

    /// The `reply_to` of this node's calls: its own service's queue.
    pub(super) fn reply_to(&self) -> String {
        ServiceAddress::of_node(self.inner.node).routing_key()
    }

    /// Waits for a reply in the pending map (which also fails it if `node`
    /// dies) and hands it to a caller waiting on `tx`; gives up when the
    /// caller stops waiting. Returns once the waiter is registered.
    async fn relay(
        &self,
        id: MessageId,
        node: NodeId,
        mut tx: oneshot::Sender<Result<Body, ErrorCode>>,
    ) {
        let (ready, registered) = oneshot::channel::<()>();
        let bus = self.clone();
        tokio::spawn(async move {
            let (_waiting, rx) = bus.inner.pending.register(id, node);
            let _ = ready.send(());
            tokio::select! {
                Ok(outcome) = rx => {
                    let _ = tx.send(outcome);
                }
                () = tx.closed() => {}
            }
        });
        let _ = registered.await;
    }

    pub(super) fn transport(&self) -> Result<&Arc<dyn crate::transport::Transport>, ErrorCode> {
        self.inner
            .transport
            .as_ref()
            .ok_or_else(|| ErrorCode::internal("no transport"))
    }
}
