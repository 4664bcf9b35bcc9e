//! Envelope ↔ AMQP properties, exactly as wire protocol v1 says
//! (`docs/wire-protocol.md`). Decoding is strict about what the protocol
//! needs and says precisely what is wrong, because the other side may be a
//! client in any language.

use std::borrow::Cow;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amqprs::{BasicProperties, FieldName, FieldTable, FieldValue};
use bytes::Bytes;

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

/// AMQP short strings (property values, header names, routing keys) hold
/// at most 255 bytes.
const SHORT_MAX: usize = 255;

/// A short string, or why it cannot be one.
pub(crate) fn short(what: &str, value: &str) -> Result<(), ErrorCode> {
    if value.len() > SHORT_MAX {
        return Err(ErrorCode::invalid(format!(
            "{what} `{}…` is {} bytes long; AMQP allows at most {SHORT_MAX}",
            value.chars().take(32).collect::<String>(),
            value.len()
        )));
    }
    Ok(())
}

fn name(key: &str) -> Result<FieldName, ErrorCode> {
    short("the header name", key)?;
    Ok(FieldName::try_from(key).expect("checked length"))
}

/// The AMQP properties of a message with this envelope; an error for what
/// AMQP cannot carry (a name over 255 bytes).
pub(crate) fn properties(envelope: &Envelope) -> Result<BasicProperties, ErrorCode> {
    short("the message type", &envelope.type_name)?;
    let mut headers = FieldTable::new();
    headers.insert(name(KIND)?, envelope.kind.as_str().into());
    headers.insert(name(SOURCE)?, envelope.source.to_string().into());
    if let Some(api) = envelope.api_id {
        headers.insert(name(API_ID)?, api.to_string().into());
    }
    for (key, value) in envelope.headers.iter() {
        headers.insert(name(key)?, value.into());
    }
    let timestamp = envelope
        .created_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut props = BasicProperties::default();
    props
        .with_message_id(&envelope.id.to_string())
        .with_message_type(&envelope.type_name)
        .with_content_type(CONTENT_TYPE)
        .with_timestamp(timestamp);
    if let Some(reply_to) = &envelope.reply_to {
        short("reply_to", reply_to)?;
        props.with_reply_to(reply_to);
    }
    if let Some(correlation) = envelope.correlation_id {
        props.with_correlation_id(&correlation.to_string());
    }
    if envelope.kind == Kind::Request
        && let Some(timeout) = envelope.timeout
    {
        let total = timeout.as_millis();
        headers.insert(
            name(TIMEOUT_MS)?,
            FieldValue::l(total.min(i64::MAX as u128) as i64),
        );
        let elapsed = envelope.created_at.elapsed().unwrap_or_default();
        let remaining = timeout.saturating_sub(elapsed).as_millis().max(1);
        if remaining <= MAX_EXPIRATION_MS {
            props.with_expiration(&remaining.to_string());
        }
    }
    props.with_headers(headers);
    Ok(props)
}

/// A message that could not be taken apart: why, and where the error
/// reply goes when the sender waits for one.
#[derive(Debug)]
pub(crate) struct Rejected {
    pub(crate) error: ErrorCode,
    /// `reply_to` and request id, for requests that can be answered.
    pub(crate) reply: Option<(String, MessageId)>,
}

/// The protocol's own headers of a message, picked out in one pass, and
/// the application headers beside them.
#[derive(Default)]
struct Picked<'a> {
    kind: Option<&'a str>,
    source: Option<&'a str>,
    api_id: Option<&'a str>,
    timeout: Option<&'a FieldValue>,
    application: Headers,
}

fn pick(headers: Option<&FieldTable>) -> Picked<'_> {
    let mut picked = Picked::default();
    for (key, value) in headers.map(|h| h.as_ref().iter()).into_iter().flatten() {
        let key: &String = key.as_ref();
        let key = key.as_str();
        match key {
            KIND => picked.kind = text(value),
            SOURCE => picked.source = text(value),
            API_ID => picked.api_id = text(value),
            TIMEOUT_MS => picked.timeout = Some(value),
            _ if key.starts_with("cb-") => {}
            _ => {
                let value = match value {
                    FieldValue::S(s) => AsRef::<String>::as_ref(s).clone(),
                    other => match integer(other) {
                        Some(n) => n.to_string(),
                        None => continue,
                    },
                };
                picked.application.insert(key, value);
            }
        }
    }
    picked
}

/// Reads a delivered message. `max_body` bounds the body's size.
pub(crate) fn decode(
    props: &BasicProperties,
    data: Vec<u8>,
    max_body: usize,
) -> Result<WireMessage, Box<Rejected>> {
    let picked = pick(props.headers());
    let kind = picked.kind.map(str::parse::<Kind>);
    let id = props.message_id().map(|id| id.parse::<MessageId>());
    let reply_to = props.reply_to();
    // Whatever names a reply_to and an id is answered, unless it says it
    // is something that is never answered.
    let unanswered = matches!(kind, Some(Ok(Kind::Message | Kind::Reply | Kind::Event)));
    let reply = match (&id, reply_to) {
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
        .message_type()
        .map(String::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| missing("type", "property"))
        .map_err(&reject)?;
    if let Some(content_type) = props.content_type() {
        let essence = content_type.split(';').next().unwrap_or("").trim();
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
    let source = picked
        .source
        .ok_or_else(|| missing(SOURCE, "header"))
        .and_then(str::parse::<NodeId>)
        .map_err(&reject)?;

    let mut envelope = Envelope::new(kind, Cow::Owned(type_name.to_string()), source);
    envelope.id = id;
    envelope.reply_to = reply_to.cloned();
    if let Some(ts) = props.timestamp() {
        // A timestamp beyond what the clock can hold counts as "now".
        envelope.created_at = UNIX_EPOCH
            .checked_add(Duration::from_secs(ts))
            .unwrap_or_else(SystemTime::now);
    }
    if let Some(correlation) = props.correlation_id() {
        envelope.correlation_id = Some(correlation.parse().map_err(&reject)?);
    }
    if let Some(api) = picked.api_id {
        envelope.api_id = Some(api.parse().map_err(&reject)?);
    }
    if let Some(value) = picked.timeout {
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
    envelope.headers = picked.application;
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

fn text(value: &FieldValue) -> Option<&str> {
    match value {
        FieldValue::S(s) => Some(AsRef::<String>::as_ref(s).as_str()),
        _ => None,
    }
}

/// An AMQP integer of any width (clients differ in what they send).
fn integer(value: &FieldValue) -> Option<i64> {
    Some(match value {
        FieldValue::b(v) => i64::from(*v),
        FieldValue::B(v) => i64::from(*v),
        FieldValue::s(v) => i64::from(*v),
        FieldValue::u(v) => i64::from(*v),
        FieldValue::I(v) => i64::from(*v),
        FieldValue::i(v) => i64::from(*v),
        FieldValue::l(v) => *v,
        FieldValue::T(v) => i64::try_from(*v).ok()?,
        _ => return None,
    })
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

    fn with(props: &BasicProperties, change: impl FnOnce(&mut BasicProperties)) -> BasicProperties {
        let mut props = props.clone();
        change(&mut props);
        props
    }

    fn with_header(props: &BasicProperties, key: &str, value: FieldValue) -> BasicProperties {
        let mut headers = props.headers().cloned().unwrap();
        headers.insert(key.try_into().unwrap(), value);
        with(props, |p| {
            p.with_headers(headers);
        })
    }

    #[test]
    fn a_request_survives_the_round_trip() {
        let sent = request();
        let props = properties(&sent).unwrap();
        assert_eq!(props.content_type().unwrap(), CONTENT_TYPE);
        let expiration: u64 = props.expiration().unwrap().parse().unwrap();
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
        let props = properties(&reply).unwrap();
        let got = decode(&props, b"{}".to_vec(), 1024).unwrap().envelope;
        assert_eq!(got.correlation_id, reply.correlation_id);
        assert_eq!(got.api_id, reply.api_id);
        assert!(props.expiration().is_none());
    }

    #[test]
    fn what_amqp_cannot_carry_is_an_error_not_a_panic() {
        let long = "x".repeat(256);
        let mut envelope = request();
        envelope.headers.insert(long.clone(), "v");
        let error = properties(&envelope).unwrap_err();
        assert_eq!(error.code(), crate::codes::INVALID_ARGUMENT);
        assert!(error.description().contains("256 bytes"), "{error}");
        let mut envelope = request();
        envelope.type_name = Cow::Owned(format!("vm.{long}"));
        assert!(properties(&envelope).is_err());
        let mut envelope = request();
        envelope.headers.insert("big", long);
        assert!(
            properties(&envelope).is_ok(),
            "header values are long strings"
        );
    }

    #[test]
    fn timeouts_of_any_integer_width_are_read() {
        let base = properties(&request()).unwrap();
        for value in [
            FieldValue::B(7),
            FieldValue::s(7),
            FieldValue::i(7),
            FieldValue::l(7),
        ] {
            let props = with_header(&base, TIMEOUT_MS, value);
            let got = decode(&props, Vec::new(), 1024).unwrap().envelope;
            assert_eq!(got.timeout, Some(Duration::from_millis(7)));
        }
    }

    #[test]
    fn bad_input_is_rejected_with_a_reason_and_an_answer_when_possible() {
        let sent = request();
        let base = properties(&sent).unwrap();
        let cases = [
            (
                with(&base, |p| {
                    p.with_content_type("text/plain");
                }),
                "content_type",
            ),
            (
                with(&base, |p| {
                    p.with_message_type("");
                }),
                "`type`",
            ),
            (with_header(&base, KIND, "gossip".into()), "gossip"),
            (with_header(&base, SOURCE, "nobody".into()), "nobody"),
            (with_header(&base, TIMEOUT_MS, "soon".into()), TIMEOUT_MS),
            (
                with_header(&base, TIMEOUT_MS, FieldValue::I(-1)),
                TIMEOUT_MS,
            ),
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
        let no_id = BasicProperties::default()
            .with_headers(base.headers().cloned().unwrap())
            .finish();
        assert!(
            decode(&no_id, Vec::new(), 1024)
                .unwrap_err()
                .reply
                .is_none()
        );
        let no_kind = BasicProperties::default()
            .with_message_id(&sent.id.to_string())
            .finish();
        assert!(
            decode(&no_kind, Vec::new(), 1024)
                .unwrap_err()
                .reply
                .is_none()
        );
    }

    #[test]
    fn a_charset_parameter_is_fine() {
        let props = with(&properties(&request()).unwrap(), |p| {
            p.with_content_type("application/json; charset=utf-8");
        });
        assert!(decode(&props, b"{}".to_vec(), 1024).is_ok());
    }
}
