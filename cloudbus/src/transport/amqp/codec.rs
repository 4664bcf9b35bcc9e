//! Envelope ↔ AMQP properties, exactly as wire protocol v1 says
//! (`docs/wire-protocol.md`). Decoding is strict about what the protocol
//! needs and says precisely what is wrong, because the other side may be a
//! client in any language.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::transport::WireMessage;
use crate::{Envelope, ErrorCode, Headers, Kind, MessageId, NodeId};

/// `content_type` of every message.
pub(crate) const CONTENT_TYPE: &str = "application/json";
pub(crate) const KIND: &str = "cb-kind";
pub(crate) const SOURCE: &str = "cb-source";
pub(crate) const TIMEOUT_MS: &str = "cb-timeout-ms";
pub(crate) const API_ID: &str = "cb-api-id";

/// Larger timeouts are sent without `expiration` (RabbitMQ takes at most
/// 2^31-1 ms, about 24 days).
const MAX_EXPIRATION_MS: u128 = i32::MAX as u128;

/// The AMQP properties of a message with this envelope.
pub(crate) fn properties(envelope: &Envelope) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(KIND.into(), string(envelope.kind.as_str()));
    headers.insert(SOURCE.into(), owned(envelope.source.to_string()));
    if let Some(api) = envelope.api_id {
        headers.insert(API_ID.into(), owned(api.to_string()));
    }
    for (key, value) in envelope.headers.iter() {
        headers.insert(key.into(), string(value));
    }
    let timestamp = envelope
        .created_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut props = BasicProperties::default()
        .with_message_id(ShortString::from(envelope.id.to_string()))
        .with_type(ShortString::from(envelope.type_name.as_ref()))
        .with_content_type(CONTENT_TYPE.into())
        .with_timestamp(timestamp);
    if let Some(reply_to) = &envelope.reply_to {
        props = props.with_reply_to(reply_to.as_str().into());
    }
    if let Some(correlation) = envelope.correlation_id {
        props = props.with_correlation_id(correlation.to_string().into());
    }
    if envelope.kind == Kind::Request
        && let Some(timeout) = envelope.timeout
    {
        let total = timeout.as_millis();
        headers.insert(
            TIMEOUT_MS.into(),
            AMQPValue::LongLongInt(total.min(i64::MAX as u128) as i64),
        );
        let elapsed = envelope.created_at.elapsed().unwrap_or_default();
        let remaining = timeout.saturating_sub(elapsed).as_millis().max(1);
        if remaining <= MAX_EXPIRATION_MS {
            props = props.with_expiration(remaining.to_string().into());
        }
    }
    props.with_headers(headers)
}

fn string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// A string header from a `String` the caller no longer needs, uncopied.
fn owned(s: String) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// A message that could not be taken apart: why, and where the error
/// reply goes when the sender waits for one.
#[derive(Debug)]
pub(crate) struct Rejected {
    pub(crate) error: ErrorCode,
    /// `reply_to` and request id, for requests that can be answered.
    pub(crate) reply: Option<(String, MessageId)>,
}

/// Reads a delivered message. `max_body` bounds the body's size.
pub(crate) fn decode(
    props: &BasicProperties,
    data: Vec<u8>,
    max_body: usize,
) -> Result<WireMessage, Box<Rejected>> {
    let headers = props.headers().as_ref();
    let kind = header_str(headers, KIND).map(str::parse::<Kind>);
    let id = props
        .message_id()
        .as_ref()
        .map(|id| id.as_str().parse::<MessageId>());
    let reply_to = props.reply_to().as_ref().map(|r| r.to_string());
    // Whatever names a reply_to and an id is answered, unless it says it
    // is something that is never answered.
    let unanswered = matches!(kind, Some(Ok(Kind::Message | Kind::Reply | Kind::Event)));
    let reply = match (&id, &reply_to) {
        (Some(Ok(id)), Some(reply_to)) if !unanswered => Some((reply_to.clone(), *id)),
        _ => None,
    };
    let reject = |error: ErrorCode| {
        Box::new(Rejected {
            error,
            reply: reply.clone(),
        })
    };

    let kind = kind
        .ok_or_else(|| missing(KIND, "header"))
        .and_then(|k| k)
        .map_err(&reject)?;
    let id = id
        .ok_or_else(|| missing("message_id", "property"))
        .and_then(|id| id)
        .map_err(&reject)?;
    let type_name = props
        .kind()
        .as_ref()
        .map(|t| t.as_str())
        .filter(|t| !t.is_empty())
        .ok_or_else(|| missing("type", "property"))
        .map_err(&reject)?;
    if let Some(content_type) = props.content_type() {
        let essence = content_type.as_str().split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case(CONTENT_TYPE) {
            return Err(reject(ErrorCode::malformed(format!(
                "content_type is `{content_type}`, expected `{CONTENT_TYPE}`"
            ))));
        }
    }
    if data.len() > max_body {
        return Err(reject(ErrorCode::malformed(format!(
            "the body of `{type_name}` is {} bytes, more than the limit of {max_body}",
            data.len()
        ))));
    }
    let source = header_str(headers, SOURCE)
        .ok_or_else(|| missing(SOURCE, "header"))
        .and_then(str::parse::<NodeId>)
        .map_err(&reject)?;

    let mut envelope = Envelope::new(kind, Cow::Owned(type_name.to_string()), source);
    envelope.id = id;
    envelope.reply_to = reply_to;
    if let Some(ts) = props.timestamp() {
        // A timestamp beyond what the clock can hold counts as "now".
        envelope.created_at = UNIX_EPOCH
            .checked_add(Duration::from_secs(*ts))
            .unwrap_or_else(SystemTime::now);
    }
    if let Some(correlation) = props.correlation_id() {
        envelope.correlation_id = Some(correlation.as_str().parse().map_err(&reject)?);
    }
    if let Some(api) = header_str(headers, API_ID) {
        envelope.api_id = Some(api.parse().map_err(&reject)?);
    }
    if let Some(value) = headers.and_then(|h| h.inner().get(TIMEOUT_MS)) {
        let ms = integer(value)
            .filter(|ms| *ms >= 0)
            .ok_or_else(|| {
                ErrorCode::malformed(format!(
                    "header {TIMEOUT_MS} must be a non-negative integer, got {value:?}"
                ))
            })
            .map_err(&reject)?;
        envelope.timeout = Some(Duration::from_millis(ms as u64));
    }
    envelope.headers = application_headers(headers);
    // A timestamp from a skewed clock must not make a message look ancient.
    if envelope.created_at > SystemTime::now() {
        envelope.created_at = SystemTime::now();
    }
    Ok(WireMessage {
        envelope,
        body: Bytes::from(data),
    })
}

fn missing(name: &str, what: &str) -> ErrorCode {
    ErrorCode::malformed(format!("the {what} `{name}` is missing"))
}

fn header_str<'a>(headers: Option<&'a FieldTable>, key: &str) -> Option<&'a str> {
    match headers?.inner().get(key)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// An AMQP integer of any width (clients differ in what they send).
fn integer(value: &AMQPValue) -> Option<i64> {
    Some(match value {
        AMQPValue::ShortShortInt(v) => i64::from(*v),
        AMQPValue::ShortShortUInt(v) => i64::from(*v),
        AMQPValue::ShortInt(v) => i64::from(*v),
        AMQPValue::ShortUInt(v) => i64::from(*v),
        AMQPValue::LongInt(v) => i64::from(*v),
        AMQPValue::LongUInt(v) => i64::from(*v),
        AMQPValue::LongLongInt(v) => *v,
        AMQPValue::Timestamp(v) => i64::try_from(*v).ok()?,
        _ => return None,
    })
}

/// Every string header that is not one of the protocol's own.
fn application_headers(headers: Option<&FieldTable>) -> Headers {
    let mut out = Headers::default();
    for (key, value) in headers.map(|h| h.inner().iter()).into_iter().flatten() {
        let key = key.as_str();
        if key.starts_with("cb-") {
            continue;
        }
        let value = match value {
            AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
            AMQPValue::ShortString(s) => s.to_string(),
            other => match integer(other) {
                Some(n) => n.to_string(),
                None => continue,
            },
        };
        out.insert(key, value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Envelope {
        let mut envelope = Envelope::new(Kind::Request, "vm.StartVm", NodeId::random());
        envelope.reply_to = Some(format!("cloudbus.{}", envelope.source));
        envelope.timeout = Some(Duration::from_secs(5));
        envelope.headers.insert("traceparent", "00-abc-def-01");
        envelope
    }

    #[test]
    fn a_request_survives_the_round_trip() {
        let sent = request();
        let props = properties(&sent);
        assert_eq!(
            props.content_type().as_ref().unwrap().as_str(),
            CONTENT_TYPE
        );
        let expiration: u64 = props
            .expiration()
            .as_ref()
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        assert!(expiration > 4_000 && expiration <= 5_000, "{expiration}");
        let got = decode(&props, b"{}".to_vec(), 1024).unwrap().envelope;
        assert_eq!(got.id, sent.id);
        assert_eq!(got.kind, Kind::Request);
        assert_eq!(got.type_name, "vm.StartVm");
        assert_eq!(got.source, sent.source);
        assert_eq!(got.reply_to, sent.reply_to);
        assert_eq!(got.timeout, Some(Duration::from_secs(5)));
        assert_eq!(got.headers.get("traceparent"), Some("00-abc-def-01"));
        assert_eq!(
            got.headers.get(KIND),
            None,
            "protocol headers are not application headers"
        );
    }

    #[test]
    fn replies_and_api_events_keep_their_ids() {
        let mut reply = Envelope::new(Kind::Reply, "vm.VmStarted", NodeId::random());
        reply.correlation_id = Some(MessageId::random());
        reply.api_id = Some(MessageId::random());
        let got = decode(&properties(&reply), b"{}".to_vec(), 1024)
            .unwrap()
            .envelope;
        assert_eq!(got.correlation_id, reply.correlation_id);
        assert_eq!(got.api_id, reply.api_id);
        assert!(properties(&reply).expiration().is_none());
    }

    #[test]
    fn timeouts_of_any_integer_width_are_read() {
        for value in [
            AMQPValue::ShortShortUInt(7),
            AMQPValue::ShortInt(7),
            AMQPValue::LongUInt(7),
            AMQPValue::LongLongInt(7),
        ] {
            let mut props = properties(&request());
            let mut headers = props.headers().clone().unwrap();
            headers.insert(TIMEOUT_MS.into(), value);
            props = props.with_headers(headers);
            let got = decode(&props, Vec::new(), 1024).unwrap().envelope;
            assert_eq!(got.timeout, Some(Duration::from_millis(7)));
        }
    }

    #[test]
    fn bad_input_is_rejected_with_a_reason_and_an_answer_when_possible() {
        let sent = request();
        let base = properties(&sent);
        let with_header = |key: &str, value: AMQPValue| {
            let mut headers = base.headers().clone().unwrap();
            headers.insert(key.into(), value);
            base.clone().with_headers(headers)
        };
        let cases = [
            (
                base.clone().with_content_type("text/plain".into()),
                "content_type",
            ),
            (base.clone().with_type("".into()), "`type`"),
            (with_header(KIND, string("gossip")), "gossip"),
            (with_header(SOURCE, string("nobody")), "nobody"),
            (with_header(TIMEOUT_MS, string("soon")), TIMEOUT_MS),
            (with_header(TIMEOUT_MS, AMQPValue::LongInt(-1)), TIMEOUT_MS),
        ];
        for (props, reason) in cases {
            let rejected = decode(&props, b"{}".to_vec(), 1024).unwrap_err();
            assert_eq!(rejected.error.code(), crate::codes::MALFORMED);
            assert!(
                rejected.error.description().contains(reason),
                "{:?}",
                rejected.error
            );
            assert_eq!(
                rejected.reply,
                Some((sent.reply_to.clone().unwrap(), sent.id))
            );
        }
        let too_big = decode(&base, vec![b' '; 2048], 1024).unwrap_err();
        assert!(too_big.error.description().contains("2048 bytes"));

        // Without a usable id or kind there is nobody to answer.
        let no_id = BasicProperties::default().with_headers(base.headers().clone().unwrap());
        assert!(
            decode(&no_id, Vec::new(), 1024)
                .unwrap_err()
                .reply
                .is_none()
        );
        let no_kind = BasicProperties::default().with_message_id(sent.id.to_string().into());
        assert!(
            decode(&no_kind, Vec::new(), 1024)
                .unwrap_err()
                .reply
                .is_none()
        );
    }

    #[test]
    fn a_charset_parameter_is_fine() {
        let props =
            properties(&request()).with_content_type("application/json; charset=utf-8".into());
        assert!(decode(&props, b"{}".to_vec(), 1024).is_ok());
    }
}
