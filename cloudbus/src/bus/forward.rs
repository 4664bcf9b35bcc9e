//! Forwarding (ZStack's `route`): a handler passes the request it received
//! on to another service or node, and the final handler's reply goes
//! straight back to the original caller, with the same id, reply address,
//! deadline and headers.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::oneshot;

use super::call::{Addressing, Target, addressing_methods};
use crate::service::{Delivery, ReplyMeta, ReplyTarget};
use crate::{Body, Context, ErrorCode, ReplyPort, ReplyStyle, Request};

/// A request on its way to the handler that will answer it; `.await` it to
/// hand it over. Made by [`Context::forward`].
///
/// Use case: an API entry service hands `StartVm` to the VM's owner node
/// with `.owner_of(vm_uuid)`; the owner's reply reaches the API caller
/// directly, without coming back through the entry service.
#[must_use = "a forward does nothing until awaited"]
pub struct Forward<'a, R: Request> {
    ctx: &'a Context,
    request: R,
    port: ReplyPort<R::Reply>,
    to: Addressing,
}

impl<R: Request> Forward<'_, R> {
    addressing_methods!();
}

impl Context {
    /// Forwards the request being handled (or another one of the same
    /// type) to the handler that will answer the caller through `port`.
    /// Without `.service`/`.node`/`.owner_of`, it goes to the same service
    /// as chosen by the usual routing. If it cannot be delivered, the
    /// caller gets the error at once, and so does the awaiting handler.
    pub fn forward<R: Request>(&self, request: R, port: ReplyPort<R::Reply>) -> Forward<'_, R> {
        Forward {
            ctx: self,
            request,
            port,
            to: Addressing::default(),
        }
    }
}

impl<'a, R: Request> IntoFuture for Forward<'a, R> {
    type Output = Result<(), ErrorCode>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let Forward {
                ctx,
                request,
                mut port,
                to,
            } = self;
            let bus = ctx.bus();
            let mut envelope = ctx.envelope().clone();
            let target = bus.forward_target(&mut envelope, to);
            let target = match target {
                Ok(target) => target,
                Err(error) => {
                    port.fail(error.clone()).await;
                    return Err(error);
                }
            };
            let Some(reply) = port.responder().take_target() else {
                return Ok(());
            };
            let remaining = envelope
                .timeout
                .map(|t| t.saturating_sub(envelope.created_at.elapsed().unwrap_or_default()));
            match target {
                Target::Local(runtime) => {
                    let delivery = Delivery {
                        envelope,
                        body: Body::new(request),
                        reply,
                        deadline: remaining.map(|r| Instant::now() + r.min(YEAR)),
                    };
                    runtime.deliver(bus, delivery).await;
                    Ok(())
                }
                Target::Remote(node) => {
                    let caller_here = !matches!(reply, ReplyTarget::Remote(_));
                    envelope.reply_to = Some(match reply {
                        ReplyTarget::Remote(reply_to) => reply_to,
                        ReplyTarget::Local(tx) => {
                            // The caller is in this process, waiting on its
                            // oneshot: relay the reply that comes back to
                            // this node's queue under the request's id.
                            relay(bus, envelope.id, node, tx).await;
                            format!("{}.{}", super::builtin::SERVICE, bus.node_id())
                        }
                        ReplyTarget::None => {
                            format!("{}.{}", super::builtin::SERVICE, bus.node_id())
                        }
                    });
                    let routing_key = format!("{}.{node}", envelope.service_name());
                    let sent = match (Body::new(request).to_json(), bus.transport()) {
                        (Ok(body), Ok(transport)) => {
                            transport.send(&routing_key, &envelope, body).await
                        }
                        (Err(error), _) | (_, Err(error)) => Err(error),
                    };
                    if let Err(error) = &sent {
                        // Nobody else will answer: tell the caller.
                        if caller_here {
                            bus.inner.pending.complete(envelope.id, Err(error.clone()));
                        } else if let Some(reply_to) = envelope.reply_to.clone() {
                            let meta = ReplyMeta {
                                request: envelope.id,
                                request_type: envelope.type_name.clone(),
                                caller: envelope.source,
                                style: ReplyStyle::Reply,
                            };
                            bus.finish_request(
                                &meta,
                                ReplyTarget::Remote(reply_to),
                                Err(error.clone()),
                            )
                            .await;
                        }
                    }
                    sent
                }
            }
        })
    }
}

/// Waits for the forwarded request's reply in the pending map (which also
/// fails it if `node` dies) and hands it to the local caller; gives up when
/// the caller stops waiting. Returns once the waiter is registered.
async fn relay(
    bus: &crate::Bus,
    id: crate::MessageId,
    node: crate::NodeId,
    tx: oneshot::Sender<Result<Body, ErrorCode>>,
) {
    let (ready, registered) = oneshot::channel::<()>();
    let bus = bus.clone();
    let mut tx = tx;
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

const YEAR: Duration = Duration::from_secs(365 * 86_400);
