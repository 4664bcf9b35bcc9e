use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use super::{MessageId, NodeId};
use crate::ErrorCode;

/// What a message is for; `cb-kind` on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Needs a reply.
    Request,
    /// Needs no reply.
    Message,
    /// Answers a request.
    Reply,
    /// Published to every subscriber.
    Event,
}

impl Kind {
    /// The wire name (`request`, `message`, `reply`, `event`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Request => "request",
            Kind::Message => "message",
            Kind::Reply => "reply",
            Kind::Event => "event",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = ErrorCode;
    fn from_str(s: &str) -> Result<Self, ErrorCode> {
        match s {
            "request" => Ok(Kind::Request),
            "message" => Ok(Kind::Message),
            "reply" => Ok(Kind::Reply),
            "event" => Ok(Kind::Event),
            other => Err(ErrorCode::malformed(format!("unknown cb-kind `{other}`"))),
        }
    }
}

/// Application headers: string keys and values that travel with a message
/// (a session token, a request id for logs, …). Empty headers cost nothing:
/// kept as a sorted list, as a message carries a handful at most (and
/// most none), where a tree map cost dozens of instructions per message
/// just to drop when empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, String)>);

impl Headers {
    fn find(&self, key: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_str().cmp(key))
    }

    /// Sets a header, replacing any previous value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        match self.find(&key) {
            Ok(at) => self.0[at].1 = value.into(),
            Err(at) => self.0.insert(at, (key, value.into())),
        }
    }

    /// The value of a header.
    pub fn get(&self, key: &str) -> Option<&str> {
        let at = self.find(key).ok()?;
        Some(self.0[at].1.as_str())
    }

    /// Removes a header and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let at = self.find(key).ok()?;
        Some(self.0.remove(at).1)
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// All headers, sorted by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut headers = Self::default();
        for (key, value) in iter {
            headers.insert(key, value);
        }
        headers
    }
}

/// Everything about a message except its body: the fields of the wire
/// protocol's AMQP properties and `cb-*` headers.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// This message's id (`message_id`).
    pub id: MessageId,
    /// The message type name (`type`), e.g. `vm.StartVm`.
    pub type_name: Cow<'static, str>,
    /// `cb-kind`.
    pub kind: Kind,
    /// The target service of a request or plain message.
    pub service: Option<Cow<'static, str>>,
    /// The node the message was sent to, when it was addressed to one.
    pub target: Option<NodeId>,
    /// The sender's node (`cb-source`).
    pub source: NodeId,
    /// Where replies go: `cloudbus.<node>` for requests from another node.
    pub reply_to: Option<String>,
    /// For replies: the id of the request answered.
    pub correlation_id: Option<MessageId>,
    /// For an API event: the id of the non-blocking API request it answers (`cb-api-id`).
    pub api_id: Option<MessageId>,
    /// When the message was sent.
    pub created_at: SystemTime,
    /// For requests: how long the caller waits for the reply.
    pub timeout: Option<Duration>,
    /// Application headers.
    pub headers: Headers,
}

impl Envelope {
    /// A fresh envelope of the given kind and type, sent now from `source`.
    pub fn new(kind: Kind, type_name: impl Into<Cow<'static, str>>, source: NodeId) -> Self {
        Self {
            id: MessageId::next(),
            type_name: type_name.into(),
            kind,
            service: None,
            target: None,
            source,
            reply_to: None,
            correlation_id: None,
            api_id: None,
            created_at: SystemTime::now(),
            timeout: None,
            headers: Headers::default(),
        }
    }

    /// The envelope of a reply to this request.
    pub fn reply(&self, type_name: impl Into<Cow<'static, str>>, source: NodeId) -> Self {
        let mut reply = Envelope::new(Kind::Reply, type_name, source);
        reply.correlation_id = Some(self.id);
        reply.target = Some(self.source);
        reply
    }

    /// The target service, or the empty string when there is none.
    pub fn service_name(&self) -> &str {
        self.service.as_deref().unwrap_or("")
    }

    /// The envelope for a log line about a failure: ids, addresses and
    /// headers, with the values of headers that look like credentials
    /// (`token`, `secret`, `password`, `session`, `auth`, `key`) hidden.
    pub fn redacted(&self) -> String {
        const SECRET: [&str; 6] = ["token", "secret", "password", "session", "auth", "key"];
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let lower = k.to_ascii_lowercase();
                let hidden = SECRET.iter().any(|s| lower.contains(s));
                format!("{k}={}", if hidden { "***" } else { v })
            })
            .collect();
        format!(
            "{} {} id={} from={} service={} reply_to={} headers=[{}]",
            self.kind.as_str(),
            self.type_name,
            self.id,
            self.source,
            self.service_name(),
            self.reply_to.as_deref().unwrap_or("-"),
            headers.join(", ")
        )
    }

    /// Refuses what the wire cannot carry faithfully: AMQP short strings
    /// hold at most 255 bytes, and `cb-*` headers belong to the protocol.
    pub(crate) fn check_wire_limits(&self) -> Result<(), ErrorCode> {
        if self.type_name.is_empty() || self.type_name.len() > 255 {
            return Err(ErrorCode::invalid(format!(
                "a message type name must have 1 to 255 bytes, `{}…` has {}",
                self.type_name.chars().take(40).collect::<String>(),
                self.type_name.len()
            )));
        }
        for (key, _) in self.headers.iter() {
            if key.is_empty() || key.len() > 255 || key.starts_with("cb-") {
                return Err(ErrorCode::invalid(format!(
                    "header `{}` cannot be sent: names have 1 to 255 bytes and `cb-` is reserved",
                    key.chars().take(40).collect::<String>()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_one_value_per_key_sorted_by_key() {
        let mut headers: Headers = [("b", "1"), ("a", "2"), ("b", "3")].into_iter().collect();
        headers.insert("c", "4");
        headers.insert("a", "5");
        let all: Vec<_> = headers.iter().collect();
        assert_eq!(all, [("a", "5"), ("b", "3"), ("c", "4")]);
        assert_eq!(headers.get("b"), Some("3"));
        assert_eq!(headers.get("d"), None);
        assert_eq!(headers.remove("b"), Some("3".to_string()));
        assert_eq!(headers.remove("b"), None);
        assert_eq!(headers.iter().count(), 2);
        assert!(!headers.is_empty());
        assert!(Headers::default().is_empty());
    }

    #[test]
    fn a_failure_report_hides_credentials() {
        let mut envelope = Envelope::new(Kind::Request, "vm.StartVm", NodeId::random());
        envelope.headers.insert("session", "s3cr3t");
        envelope.headers.insert("X-Auth-Token", "t0k3n");
        envelope.headers.insert("ctx-request-id", "r-1");
        let report = envelope.redacted();
        assert!(report.contains("vm.StartVm"), "{report}");
        assert!(report.contains("ctx-request-id=r-1"), "{report}");
        assert!(report.contains("session=***"), "{report}");
        assert!(
            !report.contains("s3cr3t") && !report.contains("t0k3n"),
            "{report}"
        );
    }

    #[test]
    fn kinds_round_trip_through_their_wire_names() {
        for kind in [Kind::Request, Kind::Message, Kind::Reply, Kind::Event] {
            assert_eq!(kind.as_str().parse::<Kind>().unwrap(), kind);
        }
        assert!("Request".parse::<Kind>().is_err());
    }

    #[test]
    fn a_reply_envelope_points_back_at_the_request() {
        let node = NodeId::random();
        let req = Envelope::new(Kind::Request, "vm.StartVm", node);
        let reply = req.reply("vm.StartVmReply", NodeId::random());
        assert_eq!(reply.kind, Kind::Reply);
        assert_eq!(reply.correlation_id, Some(req.id));
        assert_eq!(reply.target, Some(node));
        assert_ne!(reply.id, req.id);
    }

    #[test]
    fn headers_keep_the_last_value() {
        let mut h: Headers = [("a", "1")].into_iter().collect();
        h.insert("a", "2");
        assert_eq!(h.get("a"), Some("2"));
        assert_eq!(h.remove("a").as_deref(), Some("2"));
        assert!(h.is_empty());
    }
}
