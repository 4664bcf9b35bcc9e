//! Untyped messages: a type name and a JSON body. For tools, gateways and
//! tests that speak to services without linking their message types (the
//! `cloudbus call` command is one).

use std::borrow::Cow;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::Bus;
use super::call::{Addressing, addressing_methods, started_on_poll};
use super::request::Requested;
use crate::message::service_of;
use crate::{Body, Envelope, ErrorCode, Kind, MessageId};

/// A request made of a type name and JSON; `.await` it for the reply's JSON.
///
/// ```
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Clone, Serialize, Deserialize)] struct Add { a: i64, b: i64 }
/// # #[derive(Clone, Debug, Serialize, Deserialize)] struct Sum { sum: i64 }
/// # impl cloudbus::Message for Add { const TYPE: &'static str = "calc.Add"; }
/// # impl cloudbus::Message for Sum { const TYPE: &'static str = "calc.Sum"; }
/// # impl cloudbus::Request for Add { type Reply = Sum; }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use cloudbus::{Bus, Service};
/// let bus = Bus::embedded();
/// bus.register(Service::builder("calc", ())
///     .on_request(|r: Add, _| async move { Ok(Sum { sum: r.a + r.b }) })
///     .build()).await.unwrap();
///
/// let reply = bus.call_json("calc.Add", r#"{"a": 2, "b": 3}"#).await.unwrap();
/// assert_eq!(&reply[..], br#"{"sum":5}"#);
/// # }
/// ```
#[must_use = "a call does nothing until awaited"]
pub struct RawCall {
    bus: Bus,
    id: MessageId,
    cancellable: bool,
    type_name: String,
    body: Bytes,
    timeout: Option<Duration>,
    api_event: Option<String>,
    to: Addressing,
    running: Option<BoxFuture<'static, Result<Body, ErrorCode>>>,
}

impl RawCall {
    /// The request's id.
    pub fn id(&self) -> MessageId {
        self.id
    }

    /// Makes the call cancellable; see [`Call::cancellable`](crate::Call::cancellable).
    pub fn cancellable(mut self) -> (Self, crate::CancelHandle) {
        self.cancellable = true;
        let handle = crate::CancelHandle::new(self.bus.clone(), self.id);
        (self, handle)
    }

    /// How long to wait for the reply (default: the bus's default timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    addressing_methods!();

    /// Marks the request as a non-blocking API answered by an event of
    /// `event_type` (which carries the request id) instead of a reply.
    pub fn api_event(mut self, event_type: impl Into<String>) -> Self {
        self.api_event = Some(event_type.into());
        self
    }
}

impl RawCall {
    fn start(&mut self) -> Requested {
        let timeout = self
            .timeout
            .unwrap_or(self.bus.inner.config.default_timeout);
        let type_name = std::mem::take(&mut self.type_name);
        let (body, to) = (std::mem::take(&mut self.body), std::mem::take(&mut self.to));
        let api_event = self.api_event.take().map(Cow::Owned);
        let (mut envelope, body) = match self.bus.raw_envelope(Kind::Request, type_name, body, to) {
            Ok(started) => started,
            Err(error) => return Requested::Answered(Err(error)),
        };
        envelope.id = self.id;
        envelope.timeout = Some(timeout);
        self.bus
            .request(envelope, body, api_event, self.cancellable)
    }
}

impl Unpin for RawCall {}

impl std::future::Future for RawCall {
    type Output = Result<Bytes, ErrorCode>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let mut running = this.running.take();
        let polled = Requested::poll(&mut running, cx, || this.start(), |outcome| outcome);
        this.running = running;
        let outcome = ready!(polled);
        Poll::Ready(outcome.and_then(|body| body.to_json()))
    }
}

/// A plain message made of a type name and JSON; `.await` it to hand it over.
#[must_use = "a send does nothing until awaited"]
pub struct RawSend {
    bus: Bus,
    type_name: String,
    body: Bytes,
    to: Addressing,
    running: Option<BoxFuture<'static, Result<(), ErrorCode>>>,
}

impl RawSend {
    addressing_methods!();
}

impl RawSend {
    fn start(&mut self) -> BoxFuture<'static, Result<(), ErrorCode>> {
        let bus = self.bus.clone();
        let type_name = std::mem::take(&mut self.type_name);
        let (body, to) = (std::mem::take(&mut self.body), std::mem::take(&mut self.to));
        Box::pin(async move {
            let (envelope, body) = bus.raw_envelope(Kind::Message, type_name, body, to)?;
            bus.post(envelope, body).await
        })
    }
}

started_on_poll!(RawSend, Result<(), ErrorCode>);

impl Bus {
    /// Sends a request given by its type name and JSON body, and awaits the
    /// reply's JSON. The target service is the type name's first word
    /// unless [`RawCall::service`] says otherwise. A body that is not a JSON
    /// object is refused with `cloudbus.INVALID_ARGUMENT` before sending.
    pub fn call_json(&self, type_name: impl Into<String>, body: impl Into<Bytes>) -> RawCall {
        RawCall {
            bus: self.clone(),
            id: MessageId::next(),
            cancellable: false,
            type_name: type_name.into(),
            body: body.into(),
            timeout: None,
            api_event: None,
            to: Addressing::default(),
            running: None,
        }
    }

    /// Sends a plain message given by its type name and JSON body.
    pub fn send_json(&self, type_name: impl Into<String>, body: impl Into<Bytes>) -> RawSend {
        RawSend {
            bus: self.clone(),
            type_name: type_name.into(),
            body: body.into(),
            to: Addressing::default(),
            running: None,
        }
    }

    /// Publishes an event given by its type name and JSON body.
    pub async fn publish_json(
        &self,
        type_name: impl Into<String>,
        body: impl Into<Bytes>,
    ) -> Result<(), ErrorCode> {
        let type_name = type_name.into();
        let body = body.into();
        check_raw(&type_name, &body)?;
        let envelope = Envelope::new(Kind::Event, type_name, self.inner.node);
        self.publish_envelope(envelope, Body::Json(body)).await
    }

    fn raw_envelope(
        &self,
        kind: Kind,
        type_name: String,
        body: Bytes,
        to: Addressing,
    ) -> Result<(Envelope, Body), ErrorCode> {
        check_raw(&type_name, &body)?;
        let service = Cow::Owned(service_of(&type_name).to_string());
        let envelope = self.envelope(kind, Cow::Owned(type_name), service, to)?;
        Ok((envelope, Body::Json(body)))
    }
}

/// Refuses what no service could read, before it leaves this node.
fn check_raw(type_name: &str, body: &[u8]) -> Result<(), ErrorCode> {
    let valid_name = !type_name.is_empty()
        && type_name
            .split('.')
            .all(|word| !word.is_empty() && !word.contains(['*', '#', ' ']));
    if !valid_name {
        return Err(ErrorCode::invalid(format!(
            "`{type_name}` is not a valid message type name: use dotted words such as `vm.StartVm`"
        )));
    }
    serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
        .map(drop)
        .map_err(|e| {
            ErrorCode::invalid(format!(
                "the body of `{type_name}` must be a JSON object: {e}"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::check_raw;
    use crate::codes;

    #[test]
    fn names_and_bodies_are_checked_before_sending() {
        assert!(check_raw("vm.StartVm", b"{}").is_ok());
        assert!(check_raw("vm.StartVm", br#"{"uuid": "v1"}"#).is_ok());
        for (name, body) in [
            ("", &b"{}"[..]),
            ("vm..StartVm", b"{}"),
            ("vm.*", b"{}"),
            ("vm.StartVm", b"[1]"),
            ("vm.StartVm", b"{nope"),
            ("vm.StartVm", b""),
        ] {
            let err = check_raw(name, body).unwrap_err();
            assert!(err.is(codes::INVALID_ARGUMENT), "{name} {body:?}: {err}");
        }
    }
}
