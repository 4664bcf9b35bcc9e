//! Delivering a handler's outcome to whoever waits for it.

use tokio::sync::oneshot;

use super::Bus;
use crate::address::Destination;
use crate::service::{ReplyMeta, ReplyTarget};
use crate::{Body, Envelope, ErrorCode, Kind, ReplyStyle, encode_reply};

/// The type name of an error reply on the wire (informative only).
const ERROR_REPLY_TYPE: &str = "cloudbus.ErrorReply";

/// A handler's outcome.
type Outcome = Result<Body, ErrorCode>;

impl Bus {
    /// Answers one request or plain message, exactly once. A plain
    /// message's outcome and a reply to a caller in this process are done
    /// at once; only an answer that must wait (sent over the network, or
    /// published as an event) builds the state for it, boxed, so that it
    /// does not weigh on every handler's future (it would be most of a
    /// job's size, copied for every message).
    ///
    /// What can be done at once is done when this is called, before the
    /// returned future is polled.
    pub(crate) fn finish_request<'a>(
        &'a self,
        meta: &'a ReplyMeta,
        target: ReplyTarget,
        outcome: Outcome,
    ) -> impl Future<Output = ()> + Send + 'a {
        let later = self
            .finish_at_once(meta, target, outcome)
            .map(|(target, outcome)| Box::pin(self.finish_later(meta, target, outcome)));
        async move {
            if let Some(later) = later {
                later.await;
            }
        }
    }

    /// What [`finish_request`](Self::finish_request) can do without
    /// waiting. Returns the rest for [`finish_later`](Self::finish_later).
    fn finish_at_once(
        &self,
        meta: &ReplyMeta,
        target: ReplyTarget,
        outcome: Outcome,
    ) -> Option<(ReplyTarget, Outcome)> {
        if let Err(error) = &outcome {
            self.inner.recent_errors.push(&meta.request_type, error);
        }
        let published = meta.style == ReplyStyle::ApiEvent && outcome.is_ok();
        match target {
            ReplyTarget::None if !published => self.nobody_waits(meta, outcome),
            ReplyTarget::Local(tx) if !published => self.answer_here(meta, tx, outcome),
            target => return Some((target, outcome)),
        }
        None
    }

    /// A plain message's outcome: an error is counted and logged.
    fn nobody_waits(&self, meta: &ReplyMeta, outcome: Outcome) {
        if let Err(error) = outcome {
            self.inner.stats.message_errors.inc();
            tracing::warn!(type_name = %meta.request_type, id = %meta.request, %error, "handling a plain message failed");
        }
    }

    /// A reply to a caller in this process.
    fn answer_here(&self, meta: &ReplyMeta, tx: oneshot::Sender<Outcome>, outcome: Outcome) {
        if tx.send(outcome).is_err() {
            self.inner.stats.late_replies.inc();
            tracing::debug!(type_name = %meta.request_type, id = %meta.request, "reply arrived after the caller stopped waiting; dropped");
        }
    }

    /// The rest of [`finish_request`](Self::finish_request), after
    /// [`finish_at_once`](Self::finish_at_once).
    async fn finish_later(&self, meta: &ReplyMeta, target: ReplyTarget, outcome: Outcome) {
        let outcome = match outcome {
            Ok(body) if meta.style == ReplyStyle::ApiEvent => {
                // A non-blocking API answers by publishing its event, which
                // every subscriber sees; a remote caller receives it through
                // its event queue, a local one directly.
                let body = body.into_shared();
                let local_copy = body.share();
                let mut envelope = Envelope::new(
                    Kind::Event,
                    body.type_name().unwrap_or(ERROR_REPLY_TYPE),
                    self.inner.node,
                );
                envelope.api_id = Some(meta.request);
                match self.publish_envelope(envelope, body).await {
                    Ok(()) if matches!(target, ReplyTarget::Remote(_)) => return,
                    Ok(()) => local_copy.ok_or_else(|| ErrorCode::internal("unshareable event")),
                    Err(error) => Err(error),
                }
            }
            other => other,
        };
        match target {
            ReplyTarget::None => self.nobody_waits(meta, outcome),
            ReplyTarget::Local(tx) => self.answer_here(meta, tx, outcome),
            ReplyTarget::Remote(reply_to) => {
                let type_name = match &outcome {
                    Ok(body) => body.type_name().unwrap_or(ERROR_REPLY_TYPE),
                    Err(_) => ERROR_REPLY_TYPE,
                };
                let mut envelope = Envelope::new(Kind::Reply, type_name, self.inner.node);
                envelope.correlation_id = Some(meta.request);
                envelope.target = Some(meta.caller);
                let body = encode_reply(&outcome)
                    .or_else(|error| encode_reply(&Err(error)))
                    .expect("an error reply always encodes");
                let Some(transport) = &self.inner.transport else {
                    return;
                };
                if let Err(error) = transport
                    .send(Destination::ReplyTo(&reply_to), &envelope, body)
                    .await
                {
                    tracing::warn!(%reply_to, id = %meta.request, %error, "could not send reply");
                }
            }
        }
    }
}
