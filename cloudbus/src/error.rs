//! Errors as values: every failure the bus or a handler reports is an [`ErrorCode`].

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// Stable codes of the bus itself (DESIGN §4). Application codes are free
/// strings such as `vm.NOT_FOUND`; these are the ones the bus produces.
pub mod codes {
    /// The caller's timeout passed before a reply arrived.
    pub const TIMEOUT: &str = "cloudbus.TIMEOUT";
    /// No service of that name can be reached (at once, never after a timeout).
    pub const NO_SUCH_SERVICE: &str = "cloudbus.NO_SUCH_SERVICE";
    /// The service exists but does not handle this message type.
    pub const UNKNOWN_MESSAGE: &str = "cloudbus.UNKNOWN_MESSAGE";
    /// The message could not be decoded (bad JSON, wrong fields, wrong type).
    pub const MALFORMED: &str = "cloudbus.MALFORMED";
    /// The handler failed unexpectedly (for instance it panicked).
    pub const INTERNAL: &str = "cloudbus.INTERNAL";
    /// The node that owned the request is gone.
    pub const NODE_UNAVAILABLE: &str = "cloudbus.NODE_UNAVAILABLE";
    /// The broker cannot be reached right now.
    pub const BROKER_UNAVAILABLE: &str = "cloudbus.BROKER_UNAVAILABLE";
    /// The handler finished (or dropped its reply port) without replying.
    pub const NO_REPLY: &str = "cloudbus.NO_REPLY";
    /// The request was cancelled by its caller.
    pub const CANCELLED: &str = "cloudbus.CANCELLED";
    /// The bus or service is shutting down and takes no new work.
    pub const SHUTTING_DOWN: &str = "cloudbus.SHUTTING_DOWN";
    /// The caller passed something the bus cannot accept (a bad name, a duplicate service…).
    pub const INVALID_ARGUMENT: &str = "cloudbus.INVALID_ARGUMENT";
    /// An interceptor refused the message.
    pub const REJECTED: &str = "cloudbus.REJECTED";
}

/// An error as it travels on the bus: a stable `code` a program can match on,
/// a human `description`, optional structured `details` and the `cause` it
/// wraps. It is what ZStack calls `ErrorCode`, and crosses the wire as the
/// `error` object of a failed reply.
///
/// ```
/// use cloudbus::ErrorCode;
/// let err = ErrorCode::new("vm.NOT_FOUND", "no VM with uuid 42");
/// assert_eq!(err.code(), "vm.NOT_FOUND");
/// assert!(!err.is_bus_error());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub struct ErrorCode {
    code: Cow<'static, str>,
    #[serde(default)]
    description: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    details: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cause: Option<Box<ErrorCode>>,
}

impl ErrorCode {
    /// An error with a code and a description.
    pub fn new(code: impl Into<Cow<'static, str>>, description: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            description: description.into(),
            details: serde_json::Value::Null,
            cause: None,
        }
    }

    /// Attaches structured details (any JSON value) for programs and operators.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// Records the error this one was caused by.
    pub fn with_cause(mut self, cause: ErrorCode) -> Self {
        self.cause = Some(Box::new(cause));
        self
    }

    /// The stable code, e.g. `cloudbus.TIMEOUT` or `vm.NOT_FOUND`.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The human description.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Structured details, `Null` when there are none.
    pub fn details(&self) -> &serde_json::Value {
        &self.details
    }

    /// The wrapped cause, if any.
    pub fn cause(&self) -> Option<&ErrorCode> {
        self.cause.as_deref()
    }

    /// Whether the code is one of the bus's own (`cloudbus.*`).
    pub fn is_bus_error(&self) -> bool {
        self.code.starts_with("cloudbus.")
    }

    /// Whether this error has the given code.
    pub fn is(&self, code: &str) -> bool {
        self.code == code
    }

    pub(crate) fn timeout(what: &str, after: std::time::Duration) -> Self {
        Self::new(
            codes::TIMEOUT,
            format!("{what}: no reply within {} ms", after.as_millis()),
        )
    }

    pub(crate) fn no_such_service(service: &str) -> Self {
        Self::new(
            codes::NO_SUCH_SERVICE,
            format!("no service named `{service}` is reachable"),
        )
    }

    pub(crate) fn unknown_message(service: &str, type_name: &str) -> Self {
        Self::new(
            codes::UNKNOWN_MESSAGE,
            format!("service `{service}` does not handle `{type_name}`"),
        )
    }

    pub(crate) fn malformed(description: impl Into<String>) -> Self {
        Self::new(codes::MALFORMED, description)
    }

    pub(crate) fn internal(description: impl Into<String>) -> Self {
        Self::new(codes::INTERNAL, description)
    }

    pub(crate) fn invalid(description: impl Into<String>) -> Self {
        Self::new(codes::INVALID_ARGUMENT, description)
    }

    pub(crate) fn shutting_down() -> Self {
        Self::new(codes::SHUTTING_DOWN, "the bus is shutting down")
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.description)?;
        if let Some(cause) = &self.cause {
            write!(f, " (caused by {cause})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_form_omits_empty_details_and_cause() {
        let err = ErrorCode::new(codes::TIMEOUT, "late");
        let json = serde_json::to_value(&err).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"code": "cloudbus.TIMEOUT", "description": "late"})
        );
    }

    #[test]
    fn cause_and_details_round_trip() {
        let err = ErrorCode::new("vm.START_FAILED", "could not start")
            .with_details(serde_json::json!({"vm": "v1"}))
            .with_cause(ErrorCode::new("host.DOWN", "host h1 is down"));
        let back: ErrorCode = serde_json::from_slice(&serde_json::to_vec(&err).unwrap()).unwrap();
        assert_eq!(back, err);
        assert_eq!(back.cause().unwrap().code(), "host.DOWN");
        assert_eq!(
            back.to_string(),
            "vm.START_FAILED: could not start (caused by host.DOWN: host h1 is down)"
        );
    }

    #[test]
    fn a_minimal_foreign_error_decodes() {
        let err: ErrorCode = serde_json::from_str(r#"{"code":"x.Y"}"#).unwrap();
        assert_eq!(err.code(), "x.Y");
        assert_eq!(err.description(), "");
        assert!(!err.is_bus_error());
    }
}
