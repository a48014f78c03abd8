//! Remote work: a `ragbox worker` takes a document job from Redis, claims the document
//! from the serving node (getting its bytes and how to cut it), extracts, cuts and
//! embeds it, and hands the chunks and vectors back; the serving node stores them as it
//! stores its own. Both halves are here: [`claim`] and [`complete`] run on the serving
//! node, [`RemoteWorker`] on the worker. A worker keeps nothing: a claim lasts
//! `jobs.lease_secs`, after which the document goes to another worker.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::documents::{file_path, queue_document};
use super::ingest::{self, Attempt, Cutting, Prepared};
use super::{Knowledge, ServiceError};
use crate::domain::TenantId;
use crate::jobs::ProcessDocument;
use crate::ml::embedder::DIM;
use crate::store::chunks::NewChunk;
use crate::store::documents::{self, Claim};

/// A document claimed for one processing attempt, as the worker gets it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claimed {
    /// The attempt this claim is; the result must name it.
    pub attempt: u32,
    /// The document's media type.
    pub media_type: String,
    /// The original bytes, base64.
    pub content_base64: String,
    /// How to cut it.
    pub cutting: Cutting,
}

/// How a worker's attempt ended.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Cut and embedded: the chunks, and their vectors as little-endian f32, 384 per
    /// chunk, base64.
    Prepared {
        /// The chunks, in order.
        chunks: Vec<NewChunk>,
        /// Every chunk's vector, concatenated.
        vectors_base64: String,
    },
    /// The document failed (extraction, no text, too many chunks); retried while
    /// attempts are left.
    Failed {
        /// Why.
        reason: String,
    },
    /// The worker stopped (shutdown) before it finished: queued again at once.
    Interrupted,
}

/// A worker's result for one claim.
#[derive(Debug, Serialize, Deserialize)]
pub struct Completion {
    /// Owner.
    pub tenant_id: String,
    /// Document.
    pub document_id: String,
    /// The claim's attempt.
    pub attempt: u32,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Serving node: claims a queued document for a remote worker. `None` when there is
/// nothing to do (deleted, done, held by another attempt, or out of attempts).
pub async fn claim(
    k: &Knowledge,
    tenant: &TenantId,
    id: &str,
) -> Result<Option<Claimed>, ServiceError> {
    let max_attempts = k.core.config.jobs.max_retries.saturating_add(1);
    let (t, i, now) = (tenant.clone(), id.to_owned(), k.core.clock.now());
    let claimed = k
        .core
        .db
        .call(move |c| documents::claim(c, &t, &i, max_attempts, now))
        .await?;
    let Claim::Claimed(attempt) = claimed else {
        return Ok(None);
    };
    let (t, i) = (tenant.clone(), id.to_owned());
    let Some(doc) = k.core.db.call(move |c| documents::get(c, &t, &i)).await? else {
        return Ok(None);
    };
    let bytes = match tokio::fs::read(file_path(&k.core, tenant, id)).await {
        Ok(bytes) => bytes,
        Err(e) => {
            let reason = format!("the stored original could not be read: {e}");
            ingest::settle(k, tenant, id, attempt, Err(Attempt::Failed(reason))).await?;
            return Ok(None);
        }
    };
    tracing::info!(tenant = %tenant, document = %id, attempt, "document claimed by a remote worker");
    Ok(Some(Claimed {
        attempt,
        media_type: doc.media_type,
        content_base64: BASE64.encode(bytes),
        cutting: Cutting::of(&k.core.config),
    }))
}

/// Serving node: stores a remote worker's result as a local one is stored. False when
/// the attempt no longer holds the document (deleted, or its lease ran out and another
/// worker has it): the result is dropped.
pub async fn complete(k: &Knowledge, done: Completion) -> Result<bool, ServiceError> {
    let tenant = TenantId::parse(&done.tenant_id)
        .map_err(|_| ServiceError::Invalid("tenant_id is not a tenant id".into()))?;
    let (id, attempt) = (done.document_id, done.attempt);
    let (t, i) = (tenant.clone(), id.clone());
    if !k
        .core
        .db
        .call(move |c| documents::holds(c, &t, &i, attempt))
        .await?
    {
        return Ok(false);
    }
    let outcome = match done.outcome {
        Outcome::Prepared {
            chunks,
            vectors_base64,
        } => {
            let prepared = decode(chunks, &vectors_base64, Cutting::of(&k.core.config))?;
            ingest::store(k, &tenant, &id, prepared).await
        }
        Outcome::Failed { reason } => Err(Attempt::Failed(reason)),
        Outcome::Interrupted => {
            let (t, i, now) = (tenant.clone(), id.clone(), k.core.clock.now());
            let msg = "its worker stopped before it finished; queued again";
            if k.core
                .db
                .call(move |c| documents::release(c, &t, &i, attempt, true, msg, now))
                .await?
            {
                queue_document(k.intake(), &tenant, &id, None).await?;
            }
            return Ok(true);
        }
    };
    ingest::settle(k, &tenant, &id, attempt, outcome).await?;
    Ok(true)
}

/// Checks a worker's chunks and vectors before anything is stored.
fn decode(
    chunks: Vec<NewChunk>,
    vectors_base64: &str,
    cutting: Cutting,
) -> Result<Prepared, ServiceError> {
    let invalid = |m: String| Err(ServiceError::Invalid(m));
    if chunks.is_empty() || chunks.len() > cutting.max_chunks {
        return invalid(format!(
            "a result has 1 to documents.max_chunks ({}) chunks",
            cutting.max_chunks
        ));
    }
    let bytes = BASE64
        .decode(vectors_base64)
        .map_err(|e| ServiceError::Invalid(format!("vectors_base64: {e}")))?;
    if bytes.len() != chunks.len() * DIM * 4 {
        return invalid(format!(
            "vectors_base64 holds {} bytes; {} chunks need {}",
            bytes.len(),
            chunks.len(),
            chunks.len() * DIM * 4
        ));
    }
    let vectors: Vec<Vec<f32>> = bytes
        .chunks_exact(DIM * 4)
        .map(|v| {
            v.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect()
        })
        .collect();
    if vectors.iter().flatten().any(|x| !x.is_finite()) {
        return invalid("a vector holds a value that is not a finite number".into());
    }
    Ok(Prepared { chunks, vectors })
}

fn encode(prepared: Prepared) -> Outcome {
    let mut bytes = Vec::with_capacity(prepared.vectors.len() * DIM * 4);
    for x in prepared.vectors.iter().flatten() {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    Outcome::Prepared {
        chunks: prepared.chunks,
        vectors_base64: BASE64.encode(bytes),
    }
}

/// Why a remote job could not run.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// The serving node could not be reached, or answered with an error.
    #[error("serving node: {0}")]
    Server(String),
    /// The result is larger than the serving node accepts (`server.max_body_bytes`).
    #[error("the result is larger than the serving node's server.max_body_bytes")]
    TooLarge,
}

/// Worker: runs document jobs against a serving node.
#[derive(Clone)]
pub struct RemoteWorker {
    client: reqwest::Client,
    base: String,
    token: String,
    embedder: crate::ml::Embedder,
    extraction: crate::config::ExtractionConfig,
    retry_for: Duration,
    stop: CancellationToken,
}

impl RemoteWorker {
    /// A worker for the serving node at `base` (its `/api/v1/admin/jobs` routes, with
    /// the operator token), with its own model and extraction limits.
    pub fn new(
        config: &crate::config::Config,
        token: String,
        embedder: crate::ml::Embedder,
        stop: CancellationToken,
    ) -> Result<Self, RemoteError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| RemoteError::Server(e.to_string()))?;
        Ok(Self {
            client,
            base: config.worker.server_url.trim_end_matches('/').to_owned(),
            token,
            embedder,
            extraction: config.extraction.clone(),
            retry_for: Duration::from_secs(config.worker.server_retry_secs),
            stop,
        })
    }

    /// The job handler of a worker process.
    pub fn handler(self) -> crate::jobs::Handler {
        crate::jobs::Handler::new(move |job| {
            let worker = self.clone();
            async move { worker.run(job).await }
        })
    }

    /// Claims, prepares and hands back one document.
    pub async fn run(&self, job: ProcessDocument) -> Result<(), RemoteError> {
        let ask = serde_json::json!({"tenant_id": job.tenant_id, "document_id": job.document_id});
        let Some(claimed) = self.post("claim", &ask).await? else {
            tracing::debug!(document = %job.document_id, "nothing to do: the document is not waiting");
            return Ok(());
        };
        let claimed: Claimed = serde_json::from_value(claimed)
            .map_err(|e| RemoteError::Server(format!("unreadable claim: {e}")))?;
        let outcome = self
            .prepare(claimed.media_type, &claimed.content_base64, claimed.cutting)
            .await;
        match &outcome {
            Outcome::Prepared { chunks, .. } => {
                tracing::info!(document = %job.document_id, chunks = chunks.len(), "document prepared");
            }
            Outcome::Failed { reason } => {
                tracing::warn!(document = %job.document_id, %reason, "document failed");
            }
            Outcome::Interrupted => {
                tracing::info!(document = %job.document_id, "document interrupted; handed back");
            }
        }
        let done = Completion {
            tenant_id: job.tenant_id,
            document_id: job.document_id.clone(),
            attempt: claimed.attempt,
            outcome,
        };
        let body = serde_json::to_value(&done).map_err(|e| RemoteError::Server(e.to_string()))?;
        let answer = match self.post("complete", &body).await {
            Err(RemoteError::TooLarge) => {
                let failed = Completion {
                    outcome: Outcome::Failed {
                        reason: RemoteError::TooLarge.to_string(),
                    },
                    ..done
                };
                let body = serde_json::to_value(&failed)
                    .map_err(|e| RemoteError::Server(e.to_string()))?;
                self.post("complete", &body).await?
            }
            other => other?,
        };
        if answer.is_none() {
            tracing::info!(document = %job.document_id, "result dropped: the claim had passed to another worker");
        }
        Ok(())
    }

    async fn prepare(&self, media_type: String, content: &str, cutting: Cutting) -> Outcome {
        let bytes = match BASE64.decode(content) {
            Ok(b) => b,
            Err(e) => {
                return Outcome::Failed {
                    reason: format!("unreadable content: {e}"),
                };
            }
        };
        let limits = match ingest::extraction_limits(&self.extraction, bytes.len() as u64) {
            Ok(l) => l,
            Err(reason) => return Outcome::Failed { reason },
        };
        let cancel = self.stop.child_token();
        match ingest::prepare(
            &self.embedder,
            &media_type,
            bytes,
            &limits,
            cutting,
            &cancel,
        )
        .await
        {
            Ok(prepared) => encode(prepared),
            Err(_) if self.stop.is_cancelled() => Outcome::Interrupted,
            Err(Attempt::Gone) => Outcome::Interrupted,
            Err(Attempt::Failed(reason)) => Outcome::Failed { reason },
        }
    }

    /// POSTs to `/api/v1/admin/jobs/{path}`, retrying while the serving node is
    /// unreachable or busy; `None` on 409 (nothing to do, or the claim passed on).
    async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Option<serde_json::Value>, RemoteError> {
        let url = format!("{}/api/v1/admin/jobs/{path}", self.base);
        let deadline = tokio::time::Instant::now() + self.retry_for;
        let mut wait = Duration::from_millis(200);
        loop {
            let sent = self
                .client
                .post(&url)
                .bearer_auth(&self.token)
                .json(body)
                .send()
                .await;
            let error = match sent {
                Ok(r) if r.status() == reqwest::StatusCode::CONFLICT => return Ok(None),
                Ok(r) if r.status() == reqwest::StatusCode::PAYLOAD_TOO_LARGE => {
                    return Err(RemoteError::TooLarge);
                }
                Ok(r) if r.status() == reqwest::StatusCode::NO_CONTENT => {
                    return Ok(Some(serde_json::Value::Null));
                }
                Ok(r) if r.status().is_success() => {
                    return r
                        .json()
                        .await
                        .map(Some)
                        .map_err(|e| RemoteError::Server(e.to_string()));
                }
                Ok(r) if r.status().is_server_error() || r.status().as_u16() == 429 => {
                    format!("{} answered {}", url, r.status())
                }
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    return Err(RemoteError::Server(format!(
                        "{url} answered {status}: {text}"
                    )));
                }
                Err(e) => format!("{url}: {e}"),
            };
            if tokio::time::Instant::now() + wait > deadline {
                return Err(RemoteError::Server(error));
            }
            tracing::warn!(%error, "serving node unavailable; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
}
