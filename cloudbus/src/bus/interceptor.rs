use crate::{Body, Envelope, ErrorCode};

/// Cross-cutting behaviour around every message: authentication, auditing,
/// tracing, header stamping. Interceptors run in the order they were added
/// to the [`BusBuilder`](crate::BusBuilder); the first error stops the
/// message and goes back to the sender instead of a reply.
///
/// ```
/// use cloudbus::{Body, Envelope, ErrorCode, Interceptor};
///
/// /// Refuses API calls without a session token.
/// struct RequireSession;
///
/// impl Interceptor for RequireSession {
///     fn before_deliver(&self, envelope: &Envelope, _body: &Body) -> Result<(), ErrorCode> {
///         if envelope.type_name.starts_with("api.") && envelope.headers.get("session").is_none() {
///             return Err(ErrorCode::new("auth.NO_SESSION", "a session token is required"));
///         }
///         Ok(())
///     }
/// }
/// ```
pub trait Interceptor: Send + Sync + 'static {
    /// Before a request or plain message leaves the sender; may add headers.
    fn before_send(&self, _envelope: &mut Envelope, _body: &Body) -> Result<(), ErrorCode> {
        Ok(())
    }

    /// Before a request or plain message reaches its handler, on the receiving node.
    fn before_deliver(&self, _envelope: &Envelope, _body: &Body) -> Result<(), ErrorCode> {
        Ok(())
    }

    /// Before an event is published; may add headers.
    fn before_publish(&self, _envelope: &mut Envelope, _body: &Body) -> Result<(), ErrorCode> {
        Ok(())
    }
}
