//! An interceptor that logs the flow of every message, to show where each
//! one goes (`cloudbus demo --trace`).

use cloudbus::{Body, Envelope, ErrorCode, Interceptor};

/// Logs each send, delivery and publish at `info` on target
/// `cloudbus_demo::trace`.
pub struct Trace;

impl Interceptor for Trace {
    fn before_send(&self, envelope: &mut Envelope, _body: &Body) -> Result<(), ErrorCode> {
        tracing::info!(
            target: "cloudbus_demo::trace",
            "send    {:<8} {:<24} -> {}",
            envelope.kind.as_str(),
            envelope.type_name,
            envelope.service_name()
        );
        Ok(())
    }

    fn before_deliver(&self, envelope: &Envelope, _body: &Body) -> Result<(), ErrorCode> {
        tracing::info!(
            target: "cloudbus_demo::trace",
            "deliver {:<8} {:<24} at {}",
            envelope.kind.as_str(),
            envelope.type_name,
            envelope.service_name()
        );
        Ok(())
    }

    fn before_publish(&self, envelope: &mut Envelope, _body: &Body) -> Result<(), ErrorCode> {
        tracing::info!(
            target: "cloudbus_demo::trace",
            "publish event    {:<24}{}",
            envelope.type_name,
            if envelope.api_id.is_some() { " (API result)" } else { "" }
        );
        Ok(())
    }
}
