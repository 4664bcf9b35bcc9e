//! The trace context of a message: the spans of sending and handling, and
//! how they are tied together across nodes by the W3C `traceparent` header.
//!
//! Every outgoing request, plain message and event gets a `debug` span
//! (`call`, `send`, `publish`), and every handled one a `handle` span. With
//! the `otel` feature and a `tracing-opentelemetry` layer installed, the
//! sending span's OpenTelemetry context replaces the message's
//! `traceparent`, and the receiving node makes it the parent of its
//! `handle` span: one API call is one trace, however many nodes it crosses.
//! Without either, `traceparent` travels as the caller set it and these
//! spans cost what a disabled span costs.

use crate::{Envelope, Headers, Kind};

/// The W3C trace context header.
pub(crate) const TRACEPARENT: &str = "traceparent";

/// The span of sending `envelope` (named for collectors as `call vm.StartVm`,
/// `send …`, `publish …`), a child of the current span.
pub(crate) fn sending_span(envelope: &Envelope, node: crate::NodeId) -> tracing::Span {
    let (operation, kind) = match envelope.kind {
        Kind::Request => ("call", "client"),
        Kind::Event => ("publish", "producer"),
        _ => ("send", "producer"),
    };
    let span = tracing::debug_span!(
        "send",
        otel.name = %format_args!("{operation} {}", envelope.type_name),
        otel.kind = kind,
        otel.status_code = tracing::field::Empty,
        r#type = %envelope.type_name,
        service = envelope.service.as_deref().unwrap_or(""),
        node = %node,
        id = %envelope.id,
        to = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    continue_given_trace(&span, &envelope.headers);
    span
}

/// A sender outside any traced span that set `traceparent` itself (a
/// gateway passing on its HTTP caller's) continues that trace.
#[cfg(feature = "otel")]
fn continue_given_trace(span: &tracing::Span, headers: &Headers) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if span.is_disabled() || headers.get(TRACEPARENT).is_none() {
        return;
    }
    let current = tracing::Span::current().context();
    if !current.span().span_context().is_valid() {
        adopt_parent(span, headers);
    }
}

#[cfg(not(feature = "otel"))]
fn continue_given_trace(_span: &tracing::Span, _headers: &Headers) {}

/// Records how a sending span ended.
pub(crate) fn sent<T>(span: &tracing::Span, outcome: &Result<T, crate::ErrorCode>) {
    if span.is_disabled() {
        return;
    }
    match outcome {
        Ok(_) => span.record("outcome", "ok"),
        Err(error) => span
            .record("outcome", error.code())
            .record("otel.status_code", "ERROR"),
    };
}

/// Puts the trace context of `span` into `headers` as `traceparent`, in
/// place of one inherited from the message being handled, so the next hop
/// is parented on this span. A no-op unless OpenTelemetry tracks the span.
#[cfg(feature = "otel")]
pub(crate) fn inject(span: &tracing::Span, headers: &mut Headers) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if span.is_disabled() {
        return;
    }
    let cx = span.context();
    let span_ref = cx.span();
    let context = span_ref.span_context();
    if context.is_valid() {
        headers.insert(
            TRACEPARENT,
            format!(
                "00-{}-{}-{:02x}",
                context.trace_id(),
                context.span_id(),
                context.trace_flags().to_u8()
            ),
        );
    }
}

#[cfg(not(feature = "otel"))]
pub(crate) fn inject(_span: &tracing::Span, _headers: &mut Headers) {}

/// Makes the sender's span, named by `traceparent`, the parent of the span
/// that handles the message. Must be called before `span` is entered.
#[cfg(feature = "otel")]
pub(crate) fn adopt_parent(span: &tracing::Span, headers: &Headers) {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if span.is_disabled() {
        return;
    }
    if let Some(remote) = headers.get(TRACEPARENT).and_then(parse) {
        // Without an OpenTelemetry layer there is nothing to parent.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
}

#[cfg(not(feature = "otel"))]
pub(crate) fn adopt_parent(_span: &tracing::Span, _headers: &Headers) {}

/// A `traceparent` value (`00-<trace id>-<span id>-<flags>`) as a remote
/// span context; `None` if malformed or all zero, as W3C says to ignore it.
#[cfg(feature = "otel")]
fn parse(value: &str) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    // Version 00 has exactly four fields; later versions may add more.
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let lower_hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !(lower_hex(version) && lower_hex(trace) && lower_hex(span) && lower_hex(flags)) {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let context = SpanContext::new(
        TraceId::from_hex(trace).ok()?,
        SpanId::from_hex(span).ok()?,
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        TraceState::default(),
    );
    context.is_valid().then_some(context)
}

#[cfg(all(test, feature = "otel"))]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_parsed_as_w3c_says() {
        let good = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            good.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(good.span_id().to_string(), "00f067aa0ba902b7");
        assert!(good.is_sampled() && good.is_remote());
        let unsampled = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.is_sampled());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
        ] {
            assert!(parse(bad).is_none(), "{bad:?} must be ignored");
        }
        // A later version may carry more fields.
        assert!(parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-xyz").is_some());
    }
}
