//! Per-tenant series with a bounded label set: the first `tenant_series` tenants seen
//! since start are labelled by their slug, every tenant after them is counted under
//! `other`, so a box with many tenants (or a hostile flood of new ones) cannot grow the
//! scrape without bound.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

use crate::domain::{TenantId, Usage};
use crate::store::tenants::Tenant;

/// The label of the tenants past the bound.
pub const OTHER: &str = "other";

/// Status classes, by hundreds.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// One label's counters, resolved once.
struct Series {
    requests: [IntCounter; 5],
    prompt: IntCounter,
    completion: IntCounter,
    embedding: IntCounter,
}

impl Series {
    fn new(requests: &IntCounterVec, tokens: &IntCounterVec, label: &str) -> Self {
        Self {
            requests: CLASSES.map(|c| requests.with_label_values(&[label, c])),
            prompt: tokens.with_label_values(&[label, "prompt"]),
            completion: tokens.with_label_values(&[label, "completion"]),
            embedding: tokens.with_label_values(&[label, "embedding"]),
        }
    }
}

/// Requests and tokens per tenant; cheap to clone.
#[derive(Clone)]
pub struct TenantMeters(Arc<Inner>);

struct Inner {
    requests: IntCounterVec,
    tokens: IntCounterVec,
    max: usize,
    named: RwLock<HashMap<TenantId, Arc<Series>>>,
    other: Arc<Series>,
}

impl TenantMeters {
    /// Registers the series in `registry`; at most `max` tenants get a label of their own.
    pub fn register(registry: &Registry, max: usize) -> prometheus::Result<Self> {
        let requests = IntCounterVec::new(
            Opts::new(
                "tenant_requests_total",
                "Authenticated tenant requests by tenant slug (tenants past \
                 metrics.tenant_series: other) and status class",
            ),
            &["tenant", "class"],
        )?;
        let tokens = IntCounterVec::new(
            Opts::new(
                "tenant_tokens_total",
                "Tokens spent per tenant: prompt and completion of chats (bundled model or \
                 upstream), embedding of /v1/embeddings inputs",
            ),
            &["tenant", "kind"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        let other = Arc::new(Series::new(&requests, &tokens, OTHER));
        Ok(Self(Arc::new(Inner {
            requests,
            tokens,
            max,
            named: RwLock::default(),
            other,
        })))
    }

    fn series(&self, id: &TenantId, slug: &str) -> Arc<Series> {
        let inner = &self.0;
        {
            let named = inner.named.read().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = named.get(id) {
                return s.clone();
            }
            if named.len() >= inner.max {
                return inner.other.clone();
            }
        }
        let mut named = inner.named.write().unwrap_or_else(|e| e.into_inner());
        if named.len() >= inner.max && !named.contains_key(id) {
            return inner.other.clone();
        }
        named
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Series::new(&inner.requests, &inner.tokens, slug)))
            .clone()
    }

    /// The series of one tenant (`other` past the bound).
    pub fn of(&self, tenant: &Tenant) -> TenantMeter {
        self.meter(&tenant.id, tenant.slug.as_str())
    }

    fn meter(&self, id: &TenantId, slug: &str) -> TenantMeter {
        TenantMeter(self.series(id, slug))
    }
}

/// One tenant's series, resolved; cheap to clone and to keep in a stream.
#[derive(Clone)]
pub struct TenantMeter(Arc<Series>);

impl TenantMeter {
    /// One answered request, by its status.
    pub fn request(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.0.requests[class].inc();
    }

    /// The tokens of one finished chat.
    pub fn chat(&self, usage: &Usage) {
        self.0.prompt.inc_by(usage.prompt_tokens as u64);
        self.0.completion.inc_by(usage.completion_tokens as u64);
    }

    /// The tokens of one embedding request.
    pub fn embedded(&self, tokens: usize) {
        self.0.embedding.inc_by(tokens as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    fn render(registry: &Registry) -> String {
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn tenants_past_the_bound_share_the_other_label() {
        let registry = Registry::new();
        let meters = TenantMeters::register(&registry, 2).unwrap();
        for i in 0..50 {
            let id = TenantId::from_db(format!("id-{i}"));
            meters.meter(&id, &format!("t{i}")).request(200);
        }
        // Seen again, an early tenant keeps its own label.
        meters
            .meter(&TenantId::from_db("id-1".into()), "t1")
            .request(404);
        let text = render(&registry);
        assert!(text.contains(r#"tenant_requests_total{class="2xx",tenant="t0"} 1"#));
        assert!(text.contains(r#"tenant_requests_total{class="4xx",tenant="t1"} 1"#));
        assert!(text.contains(r#"tenant_requests_total{class="2xx",tenant="other"} 48"#));
        assert!(!text.contains(r#"tenant="t2""#), "{text}");
        let labels: std::collections::HashSet<&str> = text
            .lines()
            .filter_map(|l| l.split("tenant=\"").nth(1))
            .filter_map(|l| l.split('"').next())
            .collect();
        assert_eq!(labels.len(), 3, "{labels:?}");
    }

    #[test]
    fn chat_and_embedding_tokens_count_by_kind() {
        let registry = Registry::new();
        let meters = TenantMeters::register(&registry, 10).unwrap();
        let id = TenantId::from_db("a".into());
        let usage = Usage {
            prompt_tokens: 120,
            completion_tokens: 7,
            finish_reason: crate::domain::FinishReason::Stop,
        };
        meters.meter(&id, "acme").chat(&usage);
        meters.meter(&id, "acme").chat(&usage);
        meters.meter(&id, "acme").embedded(33);
        let text = render(&registry);
        assert!(text.contains(r#"tenant_tokens_total{kind="prompt",tenant="acme"} 240"#));
        assert!(text.contains(r#"tenant_tokens_total{kind="completion",tenant="acme"} 14"#));
        assert!(text.contains(r#"tenant_tokens_total{kind="embedding",tenant="acme"} 33"#));
    }
}
