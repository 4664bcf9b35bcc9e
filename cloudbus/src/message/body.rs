use std::any::Any;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::Message;
use crate::ErrorCode;

/// A message value with its type erased, so the bus can move any message
/// without knowing its type, and serialize it only when it leaves the process.
pub trait AnyMessage: Any + Send + Sync {
    /// The wire type name.
    fn type_name(&self) -> &'static str;
    /// The JSON body of the wire protocol.
    fn to_json(&self) -> Result<Vec<u8>, ErrorCode>;
    /// For downcasting by reference.
    fn as_any(&self) -> &dyn Any;
    /// For downcasting by value.
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send>;
}

impl<M: Message> AnyMessage for M {
    fn type_name(&self) -> &'static str {
        M::TYPE
    }
    fn to_json(&self) -> Result<Vec<u8>, ErrorCode> {
        serde_json::to_vec(self)
            .map_err(|e| ErrorCode::internal(format!("cannot encode `{}`: {e}", M::TYPE)))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any + Send> {
        self
    }
}

/// A message body. In process it is the typed value itself (no
/// serialization); from the wire it is the JSON bytes, decoded only by the
/// code that knows the type.
pub enum Body {
    /// A value moved to exactly one receiver.
    Value(Box<dyn AnyMessage>),
    /// A value shared by several receivers (events fanned out in process).
    Shared(Arc<dyn AnyMessage>),
    /// JSON from the wire.
    Json(Bytes),
}

impl Body {
    /// Wraps a typed message.
    pub fn new<M: Message>(msg: M) -> Self {
        Body::Value(Box::new(msg))
    }

    /// Turns the body into the typed message `M`: a downcast for in-process
    /// values, JSON decoding for wire bytes. A mismatch is `cloudbus.MALFORMED`.
    pub fn decode<M: Message>(self) -> Result<M, ErrorCode> {
        match self {
            Body::Value(value) => {
                let found = value.type_name();
                value
                    .into_any()
                    .downcast::<M>()
                    .map(|m| *m)
                    .map_err(|_| mismatch::<M>(found))
            }
            Body::Shared(value) => value
                .as_any()
                .downcast_ref::<M>()
                .cloned()
                .ok_or_else(|| mismatch::<M>(value.type_name())),
            Body::Json(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                ErrorCode::malformed(format!("body is not a valid `{}`: {e}", M::TYPE))
            }),
        }
    }

    /// The type name of an in-process value; `None` for JSON from the wire.
    pub fn type_name(&self) -> Option<&'static str> {
        match self {
            Body::Value(value) => Some(value.type_name()),
            Body::Shared(value) => Some(value.type_name()),
            Body::Json(_) => None,
        }
    }

    /// A reference to the typed value, when the body is an in-process value of type `M`.
    pub fn downcast_ref<M: Message>(&self) -> Option<&M> {
        match self {
            Body::Value(value) => value.as_any().downcast_ref(),
            Body::Shared(value) => value.as_any().downcast_ref(),
            Body::Json(_) => None,
        }
    }

    /// The JSON encoding of the body, as it goes on the wire.
    pub fn to_json(&self) -> Result<Bytes, ErrorCode> {
        match self {
            Body::Value(value) => value.to_json().map(Bytes::from),
            Body::Shared(value) => value.to_json().map(Bytes::from),
            Body::Json(bytes) => Ok(bytes.clone()),
        }
    }

    /// Makes the body shareable by several receivers without copying the value.
    pub(crate) fn into_shared(self) -> Body {
        match self {
            Body::Value(value) => Body::Shared(Arc::from(value)),
            other => other,
        }
    }

    /// A cheap copy of a shared or JSON body.
    pub(crate) fn share(&self) -> Option<Body> {
        match self {
            Body::Value(_) => None,
            Body::Shared(value) => Some(Body::Shared(value.clone())),
            Body::Json(bytes) => Some(Body::Json(bytes.clone())),
        }
    }
}

fn mismatch<M: Message>(found: &str) -> ErrorCode {
    ErrorCode::malformed(format!("expected a `{}`, got a `{found}`", M::TYPE))
}

/// Shows the fields, as the JSON the body would have on the wire, so that
/// a logged event reads the same in process and across nodes.
impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = match self {
            Body::Value(v) => v.as_ref(),
            Body::Shared(v) => v.as_ref(),
            Body::Json(b) => return write!(f, "{}", String::from_utf8_lossy(b)),
        };
        match value.to_json() {
            Ok(json) => write!(
                f,
                "{} {}",
                value.type_name(),
                String::from_utf8_lossy(&json)
            ),
            Err(_) => write!(f, "{} (cannot be encoded)", value.type_name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Ping {
        n: u32,
    }
    impl Message for Ping {
        const TYPE: &'static str = "t.Ping";
    }
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Other {}
    impl Message for Other {
        const TYPE: &'static str = "t.Other";
    }

    #[test]
    fn values_decode_without_serialization_and_json_decodes_from_bytes() {
        assert_eq!(
            Body::new(Ping { n: 1 }).decode::<Ping>().unwrap(),
            Ping { n: 1 }
        );
        let json = Body::new(Ping { n: 2 }).to_json().unwrap();
        assert_eq!(&json[..], br#"{"n":2}"#);
        assert_eq!(Body::Json(json).decode::<Ping>().unwrap(), Ping { n: 2 });
        let shared = Body::new(Ping { n: 3 }).into_shared();
        let copy = shared.share().unwrap();
        assert_eq!(copy.decode::<Ping>().unwrap(), Ping { n: 3 });
        assert_eq!(shared.decode::<Ping>().unwrap(), Ping { n: 3 });
    }

    #[test]
    fn a_wrong_type_is_malformed_not_a_panic() {
        let err = Body::new(Other {}).decode::<Ping>().unwrap_err();
        assert!(err.is(crate::codes::MALFORMED));
        assert!(err.description().contains("t.Other"), "{err}");
        let err = Body::Json(Bytes::from_static(b"{nope"))
            .decode::<Ping>()
            .unwrap_err();
        assert!(err.is(crate::codes::MALFORMED));
    }

    #[test]
    fn debug_shows_the_fields_wherever_the_body_came_from() {
        let shared = Body::new(Ping { n: 7 }).into_shared();
        assert_eq!(format!("{shared:?}"), r#"t.Ping {"n":7}"#);
        assert_eq!(
            format!("{:?}", Body::new(Ping { n: 8 })),
            r#"t.Ping {"n":8}"#
        );
        let json = Body::Json(Bytes::from_static(br#"{"n":9}"#));
        assert_eq!(format!("{json:?}"), r#"{"n":9}"#);
    }
}
