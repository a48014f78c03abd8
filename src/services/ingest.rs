//! Processing a document: extract → chunk → embed → store chunks and vectors. Each
//! run replaces whatever an earlier (or interrupted) run stored, so running it twice
//! leaves one copy of each chunk.

use std::time::Duration;

use tracing::instrument;

use super::documents::file_path;
use super::{Knowledge, ServiceError, blocking};
use crate::domain::TenantId;
use crate::jobs::ProcessDocument;
use crate::store::documents::{self, Document, NewChunk, Status};
use crate::store::vectors::VectorItem;
use crate::text::chunker;
use crate::text::extract::{self, Kind};

/// What the document job needs.
pub type IngestDeps = Knowledge;

const EMBED_BATCH: usize = 64;

/// Why one processing attempt failed.
enum Attempt {
    /// The document was deleted meanwhile: nothing to do.
    Gone,
    /// This attempt failed for a reason worth retrying or reporting.
    Failed(String),
}

/// Runs the job for one document. Document-level failures are recorded on the
/// document (and retried after `jobs.retry_delay_secs` by a delayed job until
/// `jobs.max_retries` is spent); only infrastructure failures are returned.
#[instrument(skip_all, fields(tenant = %job.tenant_id, document = %job.document_id))]
pub async fn run_job(k: &Knowledge, job: &ProcessDocument) -> Result<(), ServiceError> {
    let Ok(tenant) = TenantId::parse(&job.tenant_id) else {
        tracing::warn!("job names an invalid tenant id; dropped");
        return Ok(());
    };
    let (t, i) = (tenant.clone(), job.document_id.clone());
    let Some(doc) = k.core.db.call(move |c| documents::get(c, &t, &i)).await? else {
        return Ok(());
    };
    if matches!(doc.status, Status::Ready | Status::Failed) {
        // A duplicate delivery of a job that already ran to its end.
        return Ok(());
    }
    let attempt = doc.attempts + 1;
    let (t, i, now) = (tenant.clone(), doc.id.clone(), k.core.clock.now());
    k.core
        .db
        .call(move |c| {
            documents::set_status(c, &t, &i, Status::Processing, Some(attempt), None, now)
        })
        .await?;

    match process(k, &tenant, &doc).await {
        Ok(count) => {
            let (t, i, now) = (tenant.clone(), doc.id.clone(), k.core.clock.now());
            k.core
                .db
                .call(move |c| documents::mark_ready(c, &t, &i, count, attempt, now))
                .await?;
            tracing::info!(chunks = count, attempt, "document ready");
        }
        Err(Attempt::Gone) => {
            let (vectors, t, i) = (k.vectors.clone(), tenant.clone(), doc.id.clone());
            blocking(move || vectors.delete_document(&t, &i)).await??;
        }
        Err(Attempt::Failed(reason)) => {
            let retries = k.core.config.jobs.max_retries;
            let last = attempt > retries;
            let status = if last { Status::Failed } else { Status::Queued };
            let (t, i, now, msg) = (
                tenant.clone(),
                doc.id.clone(),
                k.core.clock.now(),
                reason.clone(),
            );
            k.core
                .db
                .call(move |c| {
                    documents::set_status(c, &t, &i, status, Some(attempt), Some(&msg), now)
                })
                .await?;
            if last {
                tracing::warn!(attempt, %reason, "document failed; no retries left");
            } else {
                tracing::warn!(attempt, %reason, "document attempt failed; will retry");
                let delay = Duration::from_secs(k.core.config.jobs.retry_delay_secs);
                k.queue.enqueue(job.clone(), Some(delay)).await?;
            }
        }
    }
    Ok(())
}

async fn process(k: &Knowledge, tenant: &TenantId, doc: &Document) -> Result<usize, Attempt> {
    let failed = |m: String| Attempt::Failed(m);
    let path = file_path(&k.core, tenant, &doc.id);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| failed(format!("the stored original could not be read: {e}")))?;
    let kind = Kind::from_media_type(&doc.media_type)
        .ok_or_else(|| failed(format!("unknown media type {}", doc.media_type)))?;
    let text = blocking(move || extract::extract(kind, &bytes))
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))?;

    let tokenizer = k.embedder.tokenizer().clone();
    let (max, overlap) = (
        k.core.config.chunking.max_tokens,
        k.core.config.chunking.overlap_tokens,
    );
    let chunks = blocking(move || chunker::chunk(&tokenizer, &text, max, overlap))
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))?;
    if chunks.is_empty() {
        return Err(failed("the document contains no text".into()));
    }

    let mut vectors = Vec::with_capacity(chunks.len());
    for batch in chunks.chunks(EMBED_BATCH) {
        let texts = batch.iter().map(|c| c.text.clone()).collect();
        let embedded = k
            .embedder
            .embed_waiting(texts)
            .await
            .map_err(|e| failed(e.to_string()))?;
        vectors.extend(embedded);
    }

    let rows: Vec<NewChunk> = chunks
        .into_iter()
        .map(|c| NewChunk {
            index: c.index,
            text: c.text,
            start: c.start,
            end: c.end,
            tokens: c.tokens,
        })
        .collect();
    let count = rows.len();
    let (t, i) = (tenant.clone(), doc.id.clone());
    let ids = k
        .core
        .db
        .call(move |c| documents::replace_chunks(c, &t, &i, &rows))
        .await
        .map_err(|e| failed(e.to_string()))?
        .ok_or(Attempt::Gone)?;
    let items: Vec<VectorItem> = ids
        .into_iter()
        .zip(vectors)
        .map(|(id, vector)| VectorItem { id, vector })
        .collect();
    let (store, t, i) = (k.vectors.clone(), tenant.clone(), doc.id.clone());
    blocking(move || store.replace_document(&t, &i, items))
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))?;
    // Deleted while the vectors were written: take them out again.
    let (t, i) = (tenant.clone(), doc.id.clone());
    let still_there = k
        .core
        .db
        .call(move |c| documents::get(c, &t, &i))
        .await
        .map_err(|e| failed(e.to_string()))?
        .is_some();
    if !still_there {
        return Err(Attempt::Gone);
    }
    Ok(count)
}

/// Re-queues documents left queued or processing by a process that stopped before
/// their job was stored; runs at start when the queue holds no unfinished job.
pub async fn requeue_orphans(k: &Knowledge) -> Result<usize, ServiceError> {
    if k.queue.pending().await? > 0 {
        return Ok(0);
    }
    let stuck: Vec<(String, String)> = k
        .core
        .db
        .call(|c| {
            let mut stmt = c.prepare(
                "SELECT tenant_id, id FROM documents WHERE status IN ('queued', 'processing')",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await?;
    for (tenant_id, document_id) in &stuck {
        k.queue
            .enqueue(
                ProcessDocument {
                    tenant_id: tenant_id.clone(),
                    document_id: document_id.clone(),
                },
                None,
            )
            .await?;
    }
    if !stuck.is_empty() {
        tracing::info!(count = stuck.len(), "re-queued documents that had no job");
    }
    Ok(stuck.len())
}
