//! The scale-out backend: every tenant's vectors in one Qdrant collection, over
//! Qdrant's REST API.
//!
//! **One collection, keyed by tenant.** Qdrant's guidance for many tenants is a single
//! collection partitioned by a payload field, not a collection per tenant: each
//! collection carries its own segments, optimiser and memory, so thousands of them cost
//! far more than one, and creating one per new tenant would put collection management
//! on the tenant-creation path. So each point is a chunk (its id is the chunk id, unique
//! across the installation) with the payload `{"tenant": …, "document": …}`. The
//! `tenant` field has a keyword index with `is_tenant: true`, which tells Qdrant to
//! store each tenant's points together, so a tenant's search reads its own points
//! sequentially; `document` has a keyword index for document filters and deletes.
//!
//! **Isolation.** Every call that reads, counts or deletes points sends a filter made by
//! one function, [`wire::filter`], which always starts with the tenant's condition; no
//! call builds a filter of its own. The one call that spans tenants is
//! [`VectorStore::tenants`] (the start-up sweep of deleted tenants), which lists tenant
//! ids and reads no point.
//!
//! Calls block (the trait's contract: callers run them on blocking threads), so the
//! client is reqwest's blocking one, with the configured timeout on every request.
//! A Qdrant that does not answer (connection refused, timeout, 5xx) is
//! [`VectorError::Unavailable`]: a retry may succeed. The collection is created when
//! missing (an operator may create it beforehand with tuning of their own, e.g.
//! `hnsw_config: {m: 0, payload_m: 16}` for per-tenant graphs); an existing one must hold
//! one unnamed vector of the embedder's width compared by cosine. Needs Qdrant 1.12 or
//! later (`is_tenant`, the facet API).

#[cfg(test)]
mod tests;
mod wire;

use std::collections::HashSet;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;

use self::wire::Documents;
use super::{Backend, Hit, VectorError, VectorItem, VectorStore};
use crate::config::QdrantConfig;
use crate::domain::TenantId;

/// Points per upsert request.
const UPSERT_BATCH: usize = 256;
/// Points per scroll page when a tenant's vectors are read out.
const SCROLL_PAGE: usize = 256;
/// The most distinct values a facet (tenants, a tenant's documents) is asked for.
const FACET_LIMIT: usize = 100_000;

/// Vectors in one Qdrant collection, isolated by a tenant filter on every call.
pub struct QdrantVectorStore {
    http: reqwest::blocking::Client,
    /// `<url>/collections/<collection>`.
    base: String,
    collection: String,
    dim: usize,
}

/// Why a request failed: Qdrant's status, when it answered, and why.
struct Failure {
    status: Option<reqwest::StatusCode>,
    message: String,
}

impl From<Failure> for VectorError {
    fn from(f: Failure) -> Self {
        match f.status {
            Some(s) if s.is_client_error() => Self::Storage(f.message),
            // No answer, a timeout, or Qdrant failing: a later attempt may succeed.
            _ => Self::Unavailable(f.message),
        }
    }
}

impl QdrantVectorStore {
    /// Connects to `config.url()`, creates the collection and its payload indexes when
    /// missing, and checks an existing collection's vector size and distance.
    /// Blocks: call it off the async runtime.
    pub fn open(config: &QdrantConfig, dim: usize) -> Result<Self, VectorError> {
        let url = config
            .url()
            .ok_or_else(|| VectorError::Storage("qdrant.url is not set".into()))?;
        let mut headers = HeaderMap::new();
        if let Some(key) = &config.api_key {
            let mut value = HeaderValue::from_str(key.expose())
                .map_err(|_| VectorError::Storage("qdrant.api_key is not a valid header".into()))?;
            value.set_sensitive(true);
            headers.insert("api-key", value);
        }
        let timeout = Duration::from_millis(config.timeout_ms.max(1));
        let http = reqwest::blocking::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| VectorError::Storage(format!("building the Qdrant client: {e}")))?;
        let store = Self {
            http,
            base: format!(
                "{}/collections/{}",
                url.trim_end_matches('/'),
                config.collection
            ),
            collection: config.collection.clone(),
            dim,
        };
        store.prepare()?;
        Ok(store)
    }

    /// Makes sure the collection exists with the right shape and both payload indexes.
    fn prepare(&self) -> Result<(), VectorError> {
        let info = match self.call(Method::GET, "", None) {
            Ok(info) => info,
            Err(Failure {
                status: Some(reqwest::StatusCode::NOT_FOUND),
                ..
            }) => {
                tracing::info!(collection = %self.collection, "creating the Qdrant collection");
                let created = self.call(Method::PUT, "", Some(&wire::create_collection(self.dim)));
                // Another node may have created it meanwhile: what counts is that it
                // exists now.
                if let Err(e) = created {
                    tracing::debug!(error = %e.message, "creating the collection failed; reading it again");
                }
                self.call(Method::GET, "", None)?
            }
            Err(e) => return Err(e.into()),
        };
        wire::check_collection(&info, self.dim).map_err(|why| {
            VectorError::Storage(format!("Qdrant collection `{}` {why}", self.collection))
        })?;
        for field in wire::missing_indexes(&info) {
            tracing::info!(collection = %self.collection, field, "creating a Qdrant payload index");
            self.call(
                Method::PUT,
                "/index?wait=true",
                Some(&wire::keyword_index(field)),
            )?;
        }
        Ok(())
    }

    /// One request to the collection; answers the `result` of Qdrant's reply.
    fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let what = format!("Qdrant {method} /collections/{}{path}", self.collection);
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(body);
        }
        let answer = request.send().map_err(|e| Failure {
            status: e.status(),
            message: format!("{what}: {}", without_url(&e)),
        })?;
        let status = answer.status();
        let text = answer.text().map_err(|e| Failure {
            status: Some(status),
            message: format!("{what}: reading the answer: {}", without_url(&e)),
        })?;
        if !status.is_success() {
            return Err(Failure {
                status: Some(status),
                message: format!("{what}: {status}: {}", wire::error_message(&text)),
            });
        }
        let mut value: Value = serde_json::from_str(&text).map_err(|e| Failure {
            status: Some(status),
            message: format!("{what}: the answer is not JSON: {e}"),
        })?;
        Ok(value["result"].take())
    }

    fn delete(&self, filter: Value) -> Result<(), VectorError> {
        self.call(
            Method::POST,
            "/points/delete?wait=true",
            Some(&wire::by_filter(filter)),
        )?;
        Ok(())
    }

    /// The distinct values of a keyword field among the points `filter` selects.
    fn facet(&self, key: &str, filter: Option<Value>) -> Result<Vec<String>, VectorError> {
        let result = self.call(
            Method::POST,
            "/facet",
            Some(&wire::facet(key, filter, FACET_LIMIT)),
        )?;
        let values = wire::facet_values(&result)?;
        if values.len() >= FACET_LIMIT {
            tracing::warn!(
                key,
                limit = FACET_LIMIT,
                "Qdrant facet is at its limit; the list may be incomplete"
            );
        }
        Ok(values)
    }
}

/// A reqwest error's text without the URL (it names the host, which belongs in the
/// configuration, not in every error).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    match std::error::Error::source(e) {
        Some(source) => format!("{kind}: {source}"),
        None => kind.to_owned(),
    }
}

impl VectorStore for QdrantVectorStore {
    /// Writes the new vectors first, then deletes the document's other points: a search
    /// meanwhile sees the old vectors or the new ones, never none. A failure part-way
    /// leaves both, and the job's next attempt writes the same again.
    fn replace_document(
        &self,
        tenant: &TenantId,
        document: &str,
        items: Vec<VectorItem>,
    ) -> Result<(), VectorError> {
        for item in &items {
            crate::store::vectors::check_dim(self.dim, &item.vector)?;
        }
        for batch in items.chunks(UPSERT_BATCH) {
            self.call(
                Method::PUT,
                "/points?wait=true",
                Some(&wire::upsert(tenant, document, batch)),
            )?;
        }
        let kept: Vec<u64> = items.iter().map(|i| i.id).collect();
        self.delete(wire::filter(tenant, Documents::One(document), &kept))
    }

    fn delete_document(&self, tenant: &TenantId, document: &str) -> Result<(), VectorError> {
        self.delete(wire::filter(tenant, Documents::One(document), &[]))
    }

    fn search(
        &self,
        tenant: &TenantId,
        query: &[f32],
        k: usize,
        documents: Option<&HashSet<String>>,
    ) -> Result<Vec<Hit>, VectorError> {
        crate::store::vectors::check_dim(self.dim, query)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let scope = match documents {
            None => Documents::All,
            // Matches nothing: no need to ask.
            Some(d) if d.is_empty() => return Ok(Vec::new()),
            Some(d) => Documents::Any(d),
        };
        let body = wire::query(query, k, wire::filter(tenant, scope, &[]));
        let result = self.call(Method::POST, "/points/query", Some(&body))?;
        wire::hits(&result)
    }

    fn drop_tenant(&self, tenant: &TenantId) -> Result<(), VectorError> {
        self.delete(wire::filter(tenant, Documents::All, &[]))
    }

    fn count(&self, tenant: &TenantId) -> Result<usize, VectorError> {
        let body = wire::count(wire::filter(tenant, Documents::All, &[]));
        let result = self.call(Method::POST, "/points/count", Some(&body))?;
        wire::counted(&result)
    }

    fn check(&self) -> Result<String, VectorError> {
        let info = self.call(Method::GET, "", None)?;
        let status = info["status"].as_str().unwrap_or("unknown");
        let points = info["points_count"].as_u64().unwrap_or(0);
        if status == "red" {
            return Err(VectorError::Unavailable(format!(
                "Qdrant collection `{}` is red (an optimisation failed)",
                self.collection
            )));
        }
        Ok(format!(
            "collection `{}` {status}, {points} vectors",
            self.collection
        ))
    }

    fn tenants(&self) -> Vec<TenantId> {
        match self.facet(wire::TENANT, None) {
            Ok(values) => values
                .iter()
                .filter_map(|v| TenantId::parse(v).ok())
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "could not list the tenants in Qdrant");
                Vec::new()
            }
        }
    }

    fn documents(&self, tenant: &TenantId) -> Result<HashSet<String>, VectorError> {
        let filter = wire::filter(tenant, Documents::All, &[]);
        Ok(self
            .facet(wire::DOCUMENT, Some(filter))?
            .into_iter()
            .collect())
    }

    fn export(&self, tenant: &TenantId) -> Result<Vec<(String, VectorItem)>, VectorError> {
        let mut all = Vec::new();
        let mut offset = None;
        loop {
            let body = wire::scroll(
                wire::filter(tenant, Documents::All, &[]),
                offset,
                SCROLL_PAGE,
            );
            let result = self.call(Method::POST, "/points/scroll", Some(&body))?;
            let (items, next) = wire::page(&result)?;
            all.extend(items);
            match next {
                // Ids only grow from page to page; anything else would loop forever.
                Some(n) if offset.is_none_or(|o| n > o) => offset = Some(n),
                _ => return Ok(all),
            }
        }
    }

    fn backend(&self) -> Backend {
        Backend::Qdrant
    }
}
