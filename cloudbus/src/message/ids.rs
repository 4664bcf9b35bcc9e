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
