//! The wire body of a reply: `{"success": true, "reply": {…}}` or
//! `{"success": false, "error": {…}}` (DESIGN §4).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::Body;
use crate::ErrorCode;

/// Encodes a handler's outcome as a reply body, serializing the value once.
pub(crate) fn encode_reply(outcome: &Result<Body, ErrorCode>) -> Result<Bytes, ErrorCode> {
    match outcome {
        Ok(body) => {
            let value = body.to_json()?;
            let mut out = Vec::with_capacity(value.len() + 28);
            out.extend_from_slice(br#"{"success":true,"reply":"#);
            out.extend_from_slice(&value);
            out.push(b'}');
            Ok(out.into())
        }
        Err(error) => {
            #[derive(serde::Serialize)]
            struct Failed<'a> {
                success: bool,
                error: &'a ErrorCode,
            }
            serde_json::to_vec(&Failed {
                success: false,
                error,
            })
            .map(Bytes::from)
            .map_err(|e| ErrorCode::internal(format!("cannot encode error reply: {e}")))
        }
    }
}

/// Decodes a reply body into the outcome it carries; the reply value stays
/// JSON until the caller, who knows its type, decodes it.
pub(crate) fn decode_reply(bytes: &[u8]) -> Result<Result<Body, ErrorCode>, ErrorCode> {
    #[derive(Deserialize)]
    struct Wire<'a> {
        success: bool,
        #[serde(borrow, default)]
        reply: Option<&'a RawValue>,
        #[serde(default)]
        error: Option<ErrorCode>,
    }
    let wire: Wire<'_> = serde_json::from_slice(bytes)
        .map_err(|e| ErrorCode::malformed(format!("reply body is not valid: {e}")))?;
    match (wire.success, wire.reply, wire.error) {
        (true, Some(reply), _) => Ok(Ok(Body::Json(Bytes::copy_from_slice(
            reply.get().as_bytes(),
        )))),
        (true, None, _) => Err(ErrorCode::malformed(
            "reply body has success=true but no `reply`",
        )),
        (false, _, Some(error)) => Ok(Err(error)),
        (false, _, None) => Err(ErrorCode::malformed(
            "reply body has success=false but no `error`",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;
    use serde::Serialize;

    #[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
    struct R {
        ok: bool,
    }
    impl Message for R {
        const TYPE: &'static str = "t.R";
    }

    #[test]
    fn success_and_failure_follow_the_wire_rules() {
        let ok = encode_reply(&Ok(Body::new(R { ok: true }))).unwrap();
        assert_eq!(&ok[..], br#"{"success":true,"reply":{"ok":true}}"#);
        let back = decode_reply(&ok).unwrap().unwrap();
        assert_eq!(back.decode::<R>().unwrap(), R { ok: true });

        let err = ErrorCode::new("vm.NOT_FOUND", "gone");
        let failed = encode_reply(&Err(err.clone())).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&failed).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"success": false, "error": {"code": "vm.NOT_FOUND", "description": "gone"}})
        );
        assert_eq!(decode_reply(&failed).unwrap().unwrap_err(), err);
    }

    #[test]
    fn incomplete_reply_bodies_are_malformed() {
        for bad in [
            &b"{}"[..],
            br#"{"success":true}"#,
            br#"{"success":false}"#,
            b"[1]",
            b"\xff",
        ] {
            let err = decode_reply(bad).unwrap_err();
            assert!(err.is(crate::codes::MALFORMED), "{err}");
        }
    }
}
