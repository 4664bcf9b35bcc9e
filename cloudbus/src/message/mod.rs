//! The message model: what a message is, the kinds of message, and the
//! envelope every message travels in.
//!
//! The kinds follow ZStack's class hierarchy, as traits:
//! - [`Message`]: the root; sent with [`Bus::send`](crate::Bus::send) it is a
//!   plain message that needs no reply.
//! - [`Request`]: needs a reply and names its reply type. A blocking API is a
//!   request answered by a reply; a non-blocking API sets
//!   [`Request::STYLE`] to [`ReplyStyle::ApiEvent`] and is answered by
//!   publishing its reply as an event that carries the request id, so any
//!   subscriber (an auditor, say) sees the result too.
//! - [`Event`]: published to every subscriber.

mod body;
mod envelope;
mod ids;
mod reply_body;

pub use body::{AnyMessage, Body};
pub use envelope::{Envelope, Headers, Kind};
pub use ids::{MessageId, NodeId};
pub(crate) use reply_body::{decode_reply, encode_reply};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A message type. Its [`TYPE`](Message::TYPE) is the name it has on the
/// wire, dotted, whose first word is by convention the owning service
/// (`vm.StartVm` belongs to `vm`).
///
/// Messages are plain serde data: on the embedded bus they are moved between
/// tasks without serialization; across nodes the same types travel as JSON.
///
/// Derive it, with the wire name and, for a [`Request`], its reply type;
/// `event` makes an [`Event`], `api_event` a request answered by an event
/// ([`ReplyStyle::ApiEvent`]), and `service = "..."` sends it to another
/// service than the name's first word. The derive checks the name at
/// compile time.
///
/// ```
/// use cloudbus::{Message, Request};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, Serialize, Deserialize, Message)]
/// #[message(type = "storage.GetCapacity", reply = Capacity)]
/// struct GetCapacity { primary_storage: String }
///
/// #[derive(Clone, Debug, Serialize, Deserialize, Message)]
/// #[message(type = "storage.Capacity")]
/// struct Capacity { available_gb: u32 }
///
/// #[derive(Clone, Debug, Serialize, Deserialize, Message)]
/// #[message(type = "storage.CapacityChanged", event)]
/// struct CapacityChanged { available_gb: u32 }
///
/// assert_eq!(GetCapacity::TYPE, "storage.GetCapacity");
/// assert_eq!(<GetCapacity as Message>::service(), "storage");
/// ```
///
/// Written by hand, the same is one impl per trait:
///
/// ```
/// use serde::{Deserialize, Serialize};
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// struct ReturnCapacity { host: String, cpus: u32 }
/// impl cloudbus::Message for ReturnCapacity {
///     const TYPE: &'static str = "storage.ReturnCapacity";
/// }
/// assert_eq!(<ReturnCapacity as cloudbus::Message>::service(), "storage");
/// ```
pub trait Message: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The wire name of the type, e.g. `vm.StartVm`.
    const TYPE: &'static str;

    /// The service this message goes to unless the caller names another:
    /// the first word of [`TYPE`](Message::TYPE).
    fn service() -> &'static str {
        const { service_of(Self::TYPE) }
    }
}

/// A message that needs a reply of type [`Reply`](Request::Reply); the reply
/// type is known at compile time, so `bus.call(req).await` returns it.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// struct QueryVms {}
/// #[derive(Clone, Debug, Serialize, Deserialize)]
/// struct QueryVmsReply { vms: Vec<String> }
/// impl cloudbus::Message for QueryVms { const TYPE: &'static str = "vm.QueryVms"; }
/// impl cloudbus::Message for QueryVmsReply { const TYPE: &'static str = "vm.QueryVmsReply"; }
/// impl cloudbus::Request for QueryVms { type Reply = QueryVmsReply; }
/// ```
pub trait Request: Message {
    /// What the handler answers with.
    type Reply: Message;

    /// How the answer travels: as a reply to the caller (a blocking API or
    /// any internal request), or published as an API event.
    const STYLE: ReplyStyle = ReplyStyle::Reply;
}

/// How a [`Request`] is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyStyle {
    /// Straight back to the caller (ZStack's `MessageReply` / `APIReply`).
    Reply,
    /// Published as an event carrying the request id in `cb-api-id`
    /// (ZStack's non-blocking API answered by an `APIEvent`). The caller
    /// still receives it as the result of `call`, and every subscriber of the
    /// event type sees it too. Errors still come back as error replies.
    ApiEvent,
}

/// A message that is published to every subscriber instead of sent to one
/// service. Its [`TYPE`](Message::TYPE) is the topic subscribers match.
pub trait Event: Message {}

/// The service part of a dotted type name: everything before the first dot.
pub const fn service_of(type_name: &str) -> &str {
    // A plain loop, so that it can run at compile time: a message type's
    // service is then a constant, not worked out on every call.
    let bytes = type_name.as_bytes();
    let mut end = 0;
    while end < bytes.len() && bytes[end] != b'.' {
        end += 1;
    }
    // Cut before an ASCII byte, so the first part is whole UTF-8.
    match std::str::from_utf8(bytes.split_at(end).0) {
        Ok(service) => service,
        Err(_) => type_name,
    }
}

/// Whether `name` is a valid service name: `[a-z][a-z0-9_-]*`, at most
/// 100 bytes (so that queue names stay within AMQP's 255).
pub fn is_valid_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 100
        && matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_is_first_word_of_type() {
        assert_eq!(service_of("vm.StartVm"), "vm");
        assert_eq!(service_of("cloudbus.node.heartbeat"), "cloudbus");
        assert_eq!(service_of("plain"), "plain");
    }

    #[test]
    fn service_names_follow_the_wire_rule() {
        for ok in ["vm", "host-agent", "a_1"] {
            assert!(is_valid_service_name(ok), "{ok}");
        }
        let long = "v".repeat(101);
        for bad in ["", "Vm", "1vm", "vm.x", "vm x", "é", long.as_str()] {
            assert!(!is_valid_service_name(bad), "{bad}");
        }
    }
}
