//! Untyped messages: a type name and a JSON body. For tools, gateways and
//! tests that speak to services without linking their message types (the
//! `cloudbus call` command is one).

use std::borrow::Cow;
use std::future::IntoFuture;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;

use super::Bus;
use super::call::{Addressing, addressing_methods};
use crate::{Body, Envelope, ErrorCode, Kind, MessageId, service_of};

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
pub struct RawCall<'a> {
    bus: &'a Bus,
    id: MessageId,
    cancellable: std::cell::Cell<bool>,
    type_name: String,
    body: Bytes,
    timeout: Option<Duration>,
    api_event: Option<String>,
    to: Addressing,
}

impl RawCall<'_> {
    /// The request's id, for [`Bus::cancel`].
    pub fn id(&self) -> MessageId {
        self.cancellable.set(true);
        self.id
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

impl<'a> IntoFuture for RawCall<'a> {
    type Output = Result<Bytes, ErrorCode>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let (mut envelope, body) =
                self.bus
                    .raw_envelope(Kind::Request, self.type_name, self.body, self.to)?;
            envelope.id = self.id;
            envelope.timeout = Some(
                self.timeout
                    .unwrap_or(self.bus.inner.config.default_timeout),
            );
            self.bus
                .request(
                    envelope,
                    body,
                    self.api_event.as_deref(),
                    self.cancellable.get(),
                )
                .await?
                .to_json()
        })
    }
}

/// A plain message made of a type name and JSON; `.await` it to hand it over.
#[must_use = "a send does nothing until awaited"]
pub struct RawSend<'a> {
    bus: &'a Bus,
    type_name: String,
    body: Bytes,
    to: Addressing,
}

impl RawSend<'_> {
    addressing_methods!();
}

impl<'a> IntoFuture for RawSend<'a> {
    type Output = Result<(), ErrorCode>;
    type IntoFuture = BoxFuture<'a, Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let (envelope, body) =
                self.bus
                    .raw_envelope(Kind::Message, self.type_name, self.body, self.to)?;
            self.bus.post(envelope, body).await
        })
    }
}

impl Bus {
    /// Sends a request given by its type name and JSON body, and awaits the
    /// reply's JSON. The target service is the type name's first word
    /// unless [`RawCall::service`] says otherwise. A body that is not a JSON
    /// object is refused with `cloudbus.INVALID_ARGUMENT` before sending.
    pub fn call_json(&self, type_name: impl Into<String>, body: impl Into<Bytes>) -> RawCall<'_> {
        RawCall {
            bus: self,
            id: MessageId::random(),
            cancellable: std::cell::Cell::new(false),
            type_name: type_name.into(),
            body: body.into(),
            timeout: None,
            api_event: None,
            to: Addressing::default(),
        }
    }

    /// Sends a plain message given by its type name and JSON body.
    pub fn send_json(&self, type_name: impl Into<String>, body: impl Into<Bytes>) -> RawSend<'_> {
        RawSend {
            bus: self,
            type_name: type_name.into(),
            body: body.into(),
            to: Addressing::default(),
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
