//! What wire protocol v1 (`docs/wire-protocol.md` §2, §5, §6) puts on
//! each message, for the raw programs that measure what the protocol
//! itself costs the broker and the client library, apart from the bus.

use amqprs::{BasicProperties, FieldName, FieldTable, FieldValue};

use cloudbus::Message;

use super::messages::{Echo, EchoReply, Tick};

/// The node id a raw wire-protocol program sends as `cb-source`.
const RAW_NODE: &str = "0123456789abcdef0123456789abcdef";

/// A request as wire protocol v1 has it: `message_id` (the call's id, 32
/// hex), `type`, `content_type`, `timestamp`, `reply_to`, `expiration`, and
/// the `cb-kind`, `cb-source` and `cb-timeout-ms` headers.
pub fn request(id: u64, reply_to: &str) -> BasicProperties {
    let mut headers = FieldTable::new();
    headers.insert(key("cb-timeout-ms"), FieldValue::l(30_000));
    let mut props = every_message(
        BasicProperties::default(),
        "request",
        Echo::TYPE,
        id.into(),
        headers,
    );
    props.with_reply_to(reply_to).with_expiration("30000");
    props
}

/// A reply as wire protocol v1 has it: `correlation_id` (set by the
/// caller of this), a `message_id` of its own, `type`, `content_type`,
/// `timestamp`, and the `cb-kind` and `cb-source` headers.
pub fn reply(reply: BasicProperties) -> BasicProperties {
    let id = uuid::Uuid::new_v4().as_u128();
    every_message(reply, "reply", EchoReply::TYPE, id, FieldTable::new())
}

/// An event as wire protocol v1 has it: `message_id`, `type`,
/// `content_type`, `timestamp`, and the `cb-kind` and `cb-source` headers.
pub fn event(id: u64) -> BasicProperties {
    every_message(
        BasicProperties::default(),
        "event",
        Tick::TYPE,
        id.into(),
        FieldTable::new(),
    )
}

/// What every message carries (§2): `message_id` (32 hex), `type`,
/// `content_type`, `timestamp`, and the `cb-kind` and `cb-source` headers
/// (long strings) beside the kind's own `headers`.
fn every_message(
    mut props: BasicProperties,
    kind: &str,
    type_name: &str,
    id: u128,
    mut headers: FieldTable,
) -> BasicProperties {
    headers.insert(key("cb-kind"), FieldValue::from(kind));
    headers.insert(key("cb-source"), FieldValue::from(RAW_NODE));
    props
        .with_message_id(&format!("{id:032x}"))
        .with_message_type(type_name)
        .with_content_type("application/json")
        .with_timestamp(unix_seconds())
        .with_headers(headers);
    props
}

/// A header's name: a short string, which all of the protocol's are.
fn key(name: &str) -> FieldName {
    name.try_into()
        .expect("header names of the protocol are short strings")
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a FieldValue> {
        props.headers()?.get(&key(name))
    }

    /// The wire baseline is only a fair measure of the protocol if it
    /// carries what `docs/wire-protocol.md` §2 and §5 put on each message.
    #[test]
    fn the_raw_messages_carry_every_property_of_the_protocol() {
        let request = request(42, "replies");
        let id = request.message_id().unwrap().as_str();
        assert_eq!(id.len(), 32);
        assert_eq!(u64::from_str_radix(id, 16).unwrap(), 42);
        assert_eq!(request.message_type().unwrap(), "bench.Echo");
        assert!(request.content_type().is_some() && request.timestamp().is_some());
        assert_eq!(request.reply_to().unwrap(), "replies");
        assert_eq!(request.expiration().unwrap(), "30000");
        for name in ["cb-kind", "cb-source"] {
            assert!(
                matches!(header(&request, name), Some(FieldValue::S(_))),
                "{name}"
            );
        }
        assert_eq!(
            header(&request, "cb-kind"),
            Some(&FieldValue::from("request"))
        );
        assert_eq!(
            header(&request, "cb-timeout-ms"),
            Some(&FieldValue::l(30_000))
        );
        let mut props = BasicProperties::default();
        props.with_correlation_id(id);
        let reply = reply(props);
        assert_eq!(reply.correlation_id().unwrap(), id);
        assert_eq!(reply.message_id().unwrap().len(), 32);
        assert_eq!(reply.message_type().unwrap(), "bench.EchoReply");
        assert!(reply.content_type().is_some() && reply.timestamp().is_some());
        assert!(reply.expiration().is_none() && reply.reply_to().is_none());
        assert!(header(&reply, "cb-kind").is_some() && header(&reply, "cb-source").is_some());
        assert!(header(&reply, "cb-timeout-ms").is_none());
        let event = event(7);
        assert_eq!(event.message_id().unwrap().len(), 32);
        assert_eq!(event.message_type().unwrap(), "bench.Tick");
        assert!(event.content_type().is_some() && event.timestamp().is_some());
        assert!(header(&event, "cb-kind").is_some() && header(&event, "cb-source").is_some());
    }
}
