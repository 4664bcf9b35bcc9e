//! Spans to an OpenTelemetry collector (Jaeger, Tempo, the OpenTelemetry
//! Collector…) over OTLP/HTTP with protobuf, so that one API call shows up
//! as one trace across every node it crossed (feature `otlp`).
//!
//! The bus makes a span for each message it sends (`call vm.StartVm`,
//! `send …`, `publish …`) and for each one a service handles
//! (`handle vm.StartVm`); the sending span's context travels in the
//! message's `traceparent` header and becomes the parent of the handling
//! span on the receiving node. This module sets up the exporter and the
//! `tracing` layer that turns those spans into OpenTelemetry spans:
//!
//! ```no_run
//! use tracing_subscriber::layer::SubscriberExt as _;
//! use tracing_subscriber::util::SubscriberInitExt as _;
//! # fn main() -> Result<(), cloudbus::ErrorCode> {
//! // Before the async runtime starts (or from a blocking thread).
//! let exporter = cloudbus::otlp::OtlpExporter::new("http://127.0.0.1:4318", "my-control-plane")?;
//! tracing_subscriber::registry()
//!     .with(exporter.layer())
//!     .with(tracing_subscriber::fmt::layer())
//!     .init();
//! // … run the node …
//! exporter.shutdown()?; // at exit: sends what is still buffered
//! # Ok(()) }
//! ```
//!
//! Spans are batched and sent from a thread of their own, never from the
//! async runtime. Without an exporter nothing of this runs: the bus's spans
//! are `debug` spans that a usual log filter leaves disabled.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::registry::LookupSpan;

use crate::ErrorCode;

/// The standard variable naming the collector's base URL (`/v1/traces` is
/// appended).
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The standard variable naming the full URL spans are sent to.
pub const TRACES_ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";

/// Where spans go, and the batching pipeline that sends them. Keep it until
/// the process ends and call [`shutdown`](Self::shutdown) then, or the
/// spans of the last seconds are lost.
pub struct OtlpExporter {
    provider: SdkTracerProvider,
    url: String,
}

impl OtlpExporter {
    /// Exports to the collector at `endpoint`: its base URL
    /// (`http://collector:4318`, spans go to `/v1/traces` under it) or the
    /// full URL ending in `/v1/traces`. `service_name` is the
    /// `service.name` collectors group spans by, unless `OTEL_SERVICE_NAME`
    /// says otherwise.
    pub fn new(endpoint: &str, service_name: &str) -> Result<Self, ErrorCode> {
        Self::to_url(traces_url(endpoint)?, service_name)
    }

    /// Exports where the standard variables say: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`
    /// (used as is), else `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL). `None`
    /// when neither is set (or both are empty).
    pub fn from_env(service_name: &str) -> Result<Option<Self>, ErrorCode> {
        let var = |name| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let url = match (var(TRACES_ENDPOINT_VAR), var(ENDPOINT_VAR)) {
            (Some(url), _) => {
                check_http(&url, TRACES_ENDPOINT_VAR)?;
                url
            }
            (None, Some(base)) => traces_url(&base)?,
            (None, None) => return Ok(None),
        };
        Self::to_url(url, service_name).map(Some)
    }

    fn to_url(url: String, service_name: &str) -> Result<Self, ErrorCode> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url.clone())
            .build()
            .map_err(|e| ErrorCode::invalid(format!("the OTLP exporter for {url}: {e}")))?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service_name.to_string());
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        Ok(Self { provider, url })
    }

    /// The URL spans are sent to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans for
    /// this exporter. It takes the bus's own `debug` spans and everyone
    /// else's from `info` up, whatever the log filter of other layers is;
    /// install it on a [`tracing_subscriber::registry()`] beside them.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber + for<'span> LookupSpan<'span> + Send + Sync,
    {
        let tracer = self.provider.tracer("cloudbus");
        let filter = Targets::new()
            .with_target("cloudbus", LevelFilter::DEBUG)
            .with_default(LevelFilter::INFO);
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(filter)
    }

    /// Sends every span still buffered and stops the exporter; blocks until
    /// the collector answered or the export timed out. Call it at exit.
    pub fn shutdown(&self) -> Result<(), ErrorCode> {
        self.provider.shutdown().map_err(|e| {
            ErrorCode::new(
                crate::codes::INTERNAL,
                format!("flushing spans to {}: {e}", self.url),
            )
        })
    }
}

/// The traces URL for a collector's base URL (or a URL that already ends
/// in `/v1/traces`).
fn traces_url(endpoint: &str) -> Result<String, ErrorCode> {
    let endpoint = endpoint.trim();
    check_http(endpoint, "the OTLP endpoint")?;
    if endpoint.trim_end_matches('/').ends_with("/v1/traces") {
        return Ok(endpoint.trim_end_matches('/').to_string());
    }
    Ok(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
}

/// Only plain HTTP is built in: TLS to a collector is left to a local
/// collector or agent, which is how collectors are usually deployed.
fn check_http(url: &str, what: &str) -> Result<(), ErrorCode> {
    let host = url.strip_prefix("http://");
    match host {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ if url.starts_with("https://") => Err(ErrorCode::invalid(format!(
            "{what} {url:?}: only http:// is supported; send to a local OpenTelemetry collector that forwards over TLS"
        ))),
        _ => Err(ErrorCode::invalid(format!(
            "{what} {url:?} is not a URL such as http://127.0.0.1:4318"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_to_a_base_url_once() {
        for (given, url) in [
            ("http://c:4318", "http://c:4318/v1/traces"),
            ("http://c:4318/", "http://c:4318/v1/traces"),
            (" http://c:4318/otlp ", "http://c:4318/otlp/v1/traces"),
            ("http://c:4318/v1/traces", "http://c:4318/v1/traces"),
        ] {
            assert_eq!(traces_url(given).unwrap(), url);
        }
        for bad in ["", "c:4318", "http://", "https://c:4318", "ftp://c"] {
            let error = traces_url(bad).unwrap_err();
            assert!(error.is(crate::codes::INVALID_ARGUMENT), "{bad:?}: {error}");
        }
    }
}
