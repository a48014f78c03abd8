//! Logs, request ids and Prometheus metrics.

use std::io::IsTerminal;
use std::time::Instant;

use poem::http::HeaderValue;
use poem::{Endpoint, IntoResponse, PathPattern, Request, Response};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

mod sink;
mod tenants;
pub use sink::flush as flush_logs;
pub use tenants::{TenantMeter, TenantMeters};

/// Installs the global log subscriber; `RUST_LOG` overrides `log.level`. Lines go to
/// stderr through a writer thread ([`sink`]), coloured only where stderr is a terminal;
/// call [`flush_logs`] before the process ends.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(sink::Sink);
    let result = match config.format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    // A second init (tests start many servers in one process) keeps the first subscriber.
    let _ = result;
}

/// The request id header.
pub const REQUEST_ID: &str = "x-request-id";

/// The id of the request being served.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn accept_request_id(value: &HeaderValue) -> Option<String> {
    let s = value.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    ok.then(|| s.to_owned())
}

/// A random (version 4) UUID from the thread's generator, which draws on the operating
/// system only to seed itself: `Uuid::new_v4` asks it on every call, a system call per
/// request.
fn new_request_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

/// The method as a metrics label, from a fixed set: any other name a client sends
/// becomes `OTHER`, so clients cannot create series at will.
pub fn method_label(method: &poem::http::Method) -> &'static str {
    use poem::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// HTTP metrics, labelled by route template, never by raw path or tenant; tenants have
/// series of their own in [`TenantMeters`], with a bounded label set.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    tenants: TenantMeters,
}

impl Metrics {
    /// Registers the metrics; at most `tenant_series` tenants get series of their own.
    pub fn new(tenant_series: usize) -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("ragbox".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route template, method and status",
            ),
            &["method", "route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route template",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["method", "route"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        let build = IntCounterVec::new(Opts::new("build_info", "ragbox version"), &["version"])?;
        registry.register(Box::new(build.clone()))?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).inc();
        let tenants = TenantMeters::register(&registry, tenant_series)?;
        Ok(Self {
            registry,
            requests,
            latency,
            tenants,
        })
    }

    /// The per-tenant series.
    pub fn tenants(&self) -> &TenantMeters {
        &self.tenants
    }

    /// The registry, for components that add their own metrics.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "could not encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .with_label_values(&[method, route, status.to_string().as_str()])
            .inc();
        self.latency
            .with_label_values(&[method, route])
            .observe(seconds);
    }
}

/// Outermost middleware: request id (taken or generated, echoed back), a span with
/// the id and the tenant, one log line and the metrics for every request.
pub async fn observe<E: Endpoint>(
    metrics: Metrics,
    ep: E,
    mut req: Request,
) -> poem::Result<Response> {
    let started = Instant::now();
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(accept_request_id)
        .unwrap_or_else(new_request_id);
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = method_label(req.method());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %method,
        path = %req.uri().path(),
        tenant = tracing::field::Empty,
    );
    let result = ep.call(req).instrument(span.clone()).await;
    let mut resp = match result {
        Ok(resp) => resp.into_response(),
        Err(err) => err.into_response(),
    };
    let route = resp
        .data::<PathPattern>()
        .map(|p| p.0.to_string())
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    metrics.observe(method, &route, status, elapsed.as_secs_f64());
    span.in_scope(|| {
        tracing::info!(status, route = %route, latency_ms = elapsed.as_secs_f64() * 1000.0, "request");
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, value);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_request_ids_are_distinct_version_4_uuids() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(parsed.get_version(), Some(uuid::Version::Random), "{id}");
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122, "{id}");
            assert_eq!(id.len(), 36);
        }
    }
}
