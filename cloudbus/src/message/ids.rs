use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ErrorCode;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// On the wire it is 32 lowercase hex digits without dashes; parsing
        /// also accepts the dashed form.
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A new random id.
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.simple(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.simple(), f)
            }
        }

        impl FromStr for $name {
            type Err = ErrorCode;
            fn from_str(s: &str) -> Result<Self, ErrorCode> {
                Uuid::try_parse(s).map(Self).map_err(|e| {
                    ErrorCode::malformed(format!(
                        "`{s}` is not a valid {}: {e}",
                        stringify!($name)
                    ))
                })
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(&self.0.simple())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

impl MessageId {
    /// A new id, unique in time and space without a random draw: 64 random
    /// bits fixed for this process, then a process-wide counter. Cheaper
    /// than [`random`](Self::random) on the hot path, and still 32 hex
    /// digits on the wire.
    pub fn next() -> Self {
        use std::sync::OnceLock;
        use std::sync::atomic::{AtomicU64, Ordering};
        static PREFIX: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(|| Uuid::new_v4().as_u64_pair().0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self(Uuid::from_u64_pair(prefix, n))
    }
}

uuid_id!(
    /// The id of one message (`message_id`), and of the request a reply
    /// answers (`correlation_id`).
    MessageId
);
uuid_id!(
    /// The id of a management node: its queues are named after it and the
    /// hash ring places it by it.
    NodeId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_ids_are_distinct_and_read_back_from_the_wire() {
        let ids: Vec<MessageId> = (0..1000).map(|_| MessageId::next()).collect();
        let distinct: std::collections::HashSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        for id in &ids[..3] {
            let wire = id.to_string();
            assert_eq!(wire.len(), 32);
            assert_eq!(wire.parse::<MessageId>().unwrap(), *id);
        }
        // Another thread draws from the same sequence.
        let other = std::thread::spawn(MessageId::next).join().unwrap();
        assert!(!distinct.contains(&other));
    }

    #[test]
    fn ids_print_as_32_hex_digits_and_parse_both_forms() {
        let id = NodeId::random();
        let text = id.to_string();
        assert_eq!(text.len(), 32);
        assert!(
            text.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_eq!(text.parse::<NodeId>().unwrap(), id);
        let dashed = id.as_uuid().hyphenated().to_string();
        assert_eq!(dashed.parse::<NodeId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{text}\""));
    }

    #[test]
    fn a_bad_id_is_a_malformed_error() {
        let err = "not-a-uuid".parse::<MessageId>().unwrap_err();
        assert!(err.is(crate::codes::MALFORMED), "{err}");
    }
}
