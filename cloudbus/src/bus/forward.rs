//! Forwarding (ZStack's `route`): a handler passes the request it received
//! on to another service or node, and the final handler's reply goes
//! straight back to the original caller, with the same id, reply address,
//! deadline and headers.

use std::future::IntoFuture;

use futures::future::BoxFuture;

use super::call::{Addressing, addressing_methods};
use super::dispatch::Answer;
use super::routing::deadline_after;
use crate::service::{ReplyMeta, ReplyTarget};
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
            let body = Body::new(request);
            // Forwarding is part of handling what was already sent and
            // intercepted: it is readdressed and routed, not intercepted again.
            let target = bus
                .readdress(&mut envelope, to)
                .and_then(|()| bus.resolve_outgoing(&mut envelope, &body, false));
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
            // The caller's deadline goes with the request.
            let deadline = envelope.timeout.map(|timeout| {
                let spent = envelope.created_at.elapsed().unwrap_or_default();
                deadline_after(timeout.saturating_sub(spent))
            });
            let (id, type_name, caller) =
                (envelope.id, envelope.type_name.clone(), envelope.source);
            let (answer, caller_here) = match reply {
                ReplyTarget::None => (Answer::Nobody, false),
                ReplyTarget::Local(tx) => (Answer::Here(tx), true),
                ReplyTarget::Remote(reply_to) => (Answer::At(reply_to), false),
            };
            let reply_to = match &answer {
                Answer::At(reply_to) => Some(reply_to.clone()),
                _ => None,
            };
            let sent = bus.dispatch(target, envelope, body, answer, deadline).await;
            if let Err(error) = &sent {
                // Nobody else will answer: tell the caller.
                if caller_here {
                    bus.inner.pending.complete(id, Err(error.clone()));
                } else if let Some(reply_to) = reply_to {
                    let meta = ReplyMeta {
                        request: id,
                        request_type: type_name,
                        caller,
                        style: ReplyStyle::Reply,
                    };
                    bus.finish_request(&meta, ReplyTarget::Remote(reply_to), Err(error.clone()))
                        .await;
                }
            }
            sent
        })
    }
}
