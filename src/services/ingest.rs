//! Processing a document: extract → chunk → embed → store chunks and vectors. Each
//! run replaces whatever an earlier (or interrupted) run stored, so running it twice
//! leaves one copy of each chunk.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::instrument;

use super::documents::{file_path, queue_document};
use super::{Knowledge, ServiceError, blocking};
use crate::domain::TenantId;
use crate::jobs::ProcessDocument;
use crate::store::chunks::{self, NewChunk};
use crate::store::documents::{self, Claim, Document};
use crate::store::vectors::VectorItem;
use crate::text::chunker;
use crate::text::extract::Kind;
use crate::text::sandbox::{self, Limits, SandboxError};

const EMBED_BATCH: usize = 64;

/// Why one processing attempt failed.
pub(super) enum Attempt {
    /// The document was deleted meanwhile: nothing to do.
    Gone,
    /// This attempt failed for a reason worth retrying or reporting.
    Failed(String),
}

/// The documents being processed now, each with a token that stops its work: a delete
/// cancels one (its extraction child is killed and no more batches are embedded), and
/// shutdown cancels all, so that SIGTERM never waits for a slow document.
#[derive(Clone, Default)]
pub struct InFlight {
    running: Arc<Mutex<HashMap<String, CancellationToken>>>,
    shutdown: CancellationToken,
}

impl InFlight {
    fn start(&self, document: &str) -> InFlightGuard {
        let token = self.shutdown.child_token();
        if let Ok(mut map) = self.running.lock() {
            map.insert(document.to_owned(), token.clone());
        }
        InFlightGuard {
            set: self.clone(),
            document: document.to_owned(),
            token,
        }
    }

    /// Stops the work on a document, if any is running.
    pub fn cancel(&self, document: &str) {
        if let Ok(map) = self.running.lock()
            && let Some(token) = map.get(document)
        {
            token.cancel();
        }
    }

    /// Stops every document's work for shutdown; the documents go back to `queued` and
    /// run again at the next start.
    pub fn interrupt_all(&self) {
        self.shutdown.cancel();
    }
}

struct InFlightGuard {
    set: InFlight,
    document: String,
    token: CancellationToken,
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Ok(mut map) = self.set.running.lock() {
            map.remove(&self.document);
        }
    }
}

/// A runner of this process's document jobs for CLI commands (its metrics are counted
/// but not exported).
pub fn local_runner(k: Knowledge) -> Result<crate::jobs::Runner, ServiceError> {
    Ok(crate::jobs::Runner {
        name: "ingest",
        handler: job_handler(k),
        metrics: crate::jobs::JobMetrics::unregistered()
            .map_err(|e| ServiceError::Internal(e.to_string()))?,
    })
}

/// The job queue's handler: runs [`run_job`] for each document job.
pub fn job_handler(k: Knowledge) -> crate::jobs::Handler {
    crate::jobs::Handler::new(move |job| {
        let k = k.clone();
        async move { run_job(&k, &job).await }
    })
}

/// Runs the job for one document: claims it (so no two runs interleave), processes it,
/// and records the outcome. A failed attempt is retried by a new, delayed job until
/// `jobs.max_retries` is spent; the queue itself never retries. Only a failure to claim
/// is returned (the document then stays queued and is queued again at the next start).
#[instrument(skip_all, fields(tenant = %job.tenant_id, document = %job.document_id))]
pub async fn run_job(k: &Knowledge, job: &ProcessDocument) -> Result<(), ServiceError> {
    let Ok(tenant) = TenantId::parse(&job.tenant_id) else {
        tracing::warn!("job names an invalid tenant id; dropped");
        return Ok(());
    };
    let Some(slot) = tenant_slot(k, &tenant, &job.document_id).await? else {
        return Ok(());
    };
    let max_attempts = k.core.config.jobs.max_retries.saturating_add(1);
    // In flight before the claim makes it `processing`: a delete that sees it processing
    // always finds the work to stop, however late this task runs after the claim.
    let guard = k.in_flight.start(&job.document_id);
    let (t, i, now) = (tenant.clone(), job.document_id.clone(), k.core.clock.now());
    let claimed = k
        .core
        .db
        .call(move |c| documents::claim(c, &t, &i, max_attempts, now))
        .await?;
    let attempt = match claimed {
        Claim::Claimed(attempt) => attempt,
        Claim::Exhausted => {
            tracing::warn!("document failed: its attempts were used up before this job ran");
            return Ok(());
        }
        // Deleted, finished, or another job has it: a duplicate delivery.
        Claim::NotQueued => return Ok(()),
    };
    let (t, i) = (tenant.clone(), job.document_id.clone());
    let Some(doc) = k.core.db.call(move |c| documents::get(c, &t, &i)).await? else {
        return Ok(());
    };
    let outcome = process(k, &tenant, &doc, slot, &guard.token).await;
    drop(guard);

    if k.in_flight.shutdown.is_cancelled() && outcome.is_err() {
        // Stopped for shutdown, not by the document: queued again for the next start.
        let (t, i, now) = (tenant.clone(), doc.id.clone(), k.core.clock.now());
        let msg = "interrupted by a shutdown; it runs again at the next start";
        k.core
            .db
            .call(move |c| documents::release(c, &t, &i, attempt, true, msg, now))
            .await?;
        return Ok(());
    }
    settle(k, &tenant, &doc.id, attempt, outcome).await
}

/// Records how processing attempt `attempt` ended: ready, gone, or failed (retried by
/// a new, delayed job until `jobs.max_retries` is spent). An attempt that no longer
/// holds the document (deleted, or given to another worker) changes nothing.
pub(super) async fn settle(
    k: &Knowledge,
    tenant: &TenantId,
    id: &str,
    attempt: u32,
    outcome: Result<usize, Attempt>,
) -> Result<(), ServiceError> {
    let max_attempts = k.core.config.jobs.max_retries.saturating_add(1);
    match outcome {
        Ok(count) => {
            let (t, i, now) = (tenant.clone(), id.to_owned(), k.core.clock.now());
            let marked = k
                .core
                .db
                .call(move |c| documents::mark_ready(c, &t, &i, count, attempt, now))
                .await?;
            if marked {
                tracing::info!(chunks = count, attempt, "document ready");
            } else {
                forget_if_gone(k, tenant, id).await?;
            }
        }
        Err(Attempt::Gone) => forget_if_gone(k, tenant, id).await?,
        Err(Attempt::Failed(reason)) => {
            let retry = attempt < max_attempts;
            let (t, i, now, msg) = (
                tenant.clone(),
                id.to_owned(),
                k.core.clock.now(),
                reason.clone(),
            );
            let released = k
                .core
                .db
                .call(move |c| documents::release(c, &t, &i, attempt, retry, &msg, now))
                .await?;
            if !released {
                forget_if_gone(k, tenant, id).await?;
            } else if retry {
                tracing::warn!(attempt, %reason, "document attempt failed; will retry");
                let delay = Duration::from_secs(k.core.config.jobs.retry_delay_secs);
                queue_document(k.intake(), tenant, id, Some(delay)).await?;
            } else {
                tracing::warn!(attempt, %reason, "document failed; no retries left");
            }
        }
    }
    Ok(())
}

/// The tenant's share of the workers. When all its places are taken, the job waits for
/// one while no other tenant has work waiting; once another has, it goes back behind
/// that work (its round is its tenant's count of waiting documents) and `None` says
/// so. A job is only ever put back in favour of another tenant's, so a single busy
/// tenant costs the queue nothing.
async fn tenant_slot(
    k: &Knowledge,
    tenant: &TenantId,
    document: &str,
) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ServiceError> {
    let places = k.core.limiter.ingestion(&k.core, tenant).await?;
    loop {
        if let Ok(slot) = places.clone().try_acquire_owned() {
            return Ok(Some(slot));
        }
        let others = match k.queue.others_waiting(tenant.as_str()).await? {
            Some(waiting) => waiting,
            None => {
                let t = tenant.clone();
                k.core
                    .db
                    .call(move |c| documents::others_queued(c, &t))
                    .await?
            }
        };
        if others {
            queue_document(k.intake(), tenant, document, Some(Duration::from_secs(1))).await?;
            return Ok(None);
        }
        if let Ok(Ok(slot)) =
            tokio::time::timeout(Duration::from_secs(1), places.clone().acquire_owned()).await
        {
            return Ok(Some(slot));
        }
    }
}

/// Takes a document's vectors out when the document is gone (a delete raced the
/// attempt); a document that another attempt holds keeps what that attempt wrote.
async fn forget_if_gone(k: &Knowledge, tenant: &TenantId, id: &str) -> Result<(), ServiceError> {
    let (t, i) = (tenant.clone(), id.to_owned());
    if k.core
        .db
        .call(move |c| documents::get(c, &t, &i))
        .await?
        .is_some()
    {
        return Ok(());
    }
    forget_vectors(k, tenant, id).await
}

pub(super) async fn forget_vectors(
    k: &Knowledge,
    tenant: &TenantId,
    id: &str,
) -> Result<(), ServiceError> {
    let (vectors, t, i) = (k.vectors.clone(), tenant.clone(), id.to_owned());
    blocking(move || vectors.delete_document(&t, &i)).await??;
    Ok(())
}

/// The limits of one document's extraction child.
pub fn extraction_limits(
    x: &crate::config::ExtractionConfig,
    input_bytes: u64,
) -> Result<Limits, String> {
    let program = match &x.program {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find the ragbox executable for extraction: {e}"))?,
    };
    Ok(Limits {
        program,
        memory_bytes: x.memory_mb.saturating_mul(1024 * 1024),
        cpu_secs: x.cpu_secs,
        timeout: Duration::from_secs(x.timeout_secs),
        max_text_bytes: x.text_cap(input_bytes),
    })
}

/// How the serving node wants documents cut: the same on every worker.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Cutting {
    /// Tokens per chunk, at most.
    pub max_tokens: usize,
    /// Tokens shared by neighbouring chunks.
    pub overlap_tokens: usize,
    /// More chunks than this fail the document.
    pub max_chunks: usize,
}

impl Cutting {
    /// The settings of this process's configuration.
    pub fn of(config: &crate::config::Config) -> Self {
        Self {
            max_tokens: config.chunking.max_tokens,
            overlap_tokens: config.chunking.overlap_tokens,
            max_chunks: config.documents.max_chunks,
        }
    }
}

/// A document extracted, cut and embedded: one vector per chunk.
pub struct Prepared {
    /// The chunks, in order.
    pub chunks: Vec<NewChunk>,
    /// Their embeddings, in the same order.
    pub vectors: Vec<Vec<f32>>,
}

/// The CPU-heavy half of processing, done by whichever process runs the job (the
/// serving node or a `ragbox worker`): extract in a child process with `limits`, cut,
/// embed.
pub(super) async fn prepare(
    embedder: &crate::ml::Embedder,
    media_type: &str,
    bytes: Vec<u8>,
    limits: &Limits,
    cutting: Cutting,
    cancel: &CancellationToken,
) -> Result<Prepared, Attempt> {
    let chunks = cut(embedder, media_type, bytes, limits, cutting, cancel).await?;
    embed(embedder, chunks, cancel).await
}

/// Extracts a document's text in a child process with `limits` and cuts it.
async fn cut(
    embedder: &crate::ml::Embedder,
    media_type: &str,
    bytes: Vec<u8>,
    limits: &Limits,
    cutting: Cutting,
    cancel: &CancellationToken,
) -> Result<Vec<chunker::Chunk>, Attempt> {
    let failed = |m: String| Attempt::Failed(m);
    let kind = Kind::from_media_type(media_type)
        .ok_or_else(|| failed(format!("unknown media type {media_type}")))?;
    let text = match sandbox::extract(kind, bytes, limits, cancel).await {
        Ok(text) => text,
        Err(SandboxError::Cancelled) => return Err(Attempt::Gone),
        Err(e) => return Err(failed(e.to_string())),
    };

    let tokenizer = embedder.tokenizer().clone();
    let (max, overlap) = (cutting.max_tokens, cutting.overlap_tokens);
    let chunks = blocking(move || chunker::chunk(&tokenizer, &text, max, overlap))
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))?;
    if chunks.is_empty() {
        return Err(failed("the document contains no text".into()));
    }
    if chunks.len() > cutting.max_chunks {
        return Err(failed(format!(
            "the document makes {} chunks, more than documents.max_chunks ({})",
            chunks.len(),
            cutting.max_chunks
        )));
    }
    Ok(chunks)
}

/// Embeds a document's chunks, a batch at a time until done or cancelled.
async fn embed(
    embedder: &crate::ml::Embedder,
    chunks: Vec<chunker::Chunk>,
    cancel: &CancellationToken,
) -> Result<Prepared, Attempt> {
    let mut vectors = Vec::with_capacity(chunks.len());
    for batch in chunks.chunks(EMBED_BATCH) {
        if cancel.is_cancelled() {
            return Err(Attempt::Gone);
        }
        let texts = batch.iter().map(|c| c.text.clone()).collect();
        let embedded = embedder
            .embed_waiting(texts)
            .await
            .map_err(|e| Attempt::Failed(e.to_string()))?;
        vectors.extend(embedded);
    }
    let chunks = chunks
        .into_iter()
        .map(|c| NewChunk {
            index: c.index,
            text: c.text,
            start: c.start,
            end: c.end,
            tokens: c.tokens,
        })
        .collect();
    Ok(Prepared { chunks, vectors })
}

/// Processes a document while holding the tenant's place among running jobs (`slot`).
/// Once the document is cut, it waits for one of the tenant's places at the embedding
/// model and gives `slot` back: the tenant's next document is extracted and cut while
/// this one is embedded, and this one is stored while the next is embedded, so the
/// model does not wait for either.
async fn process(
    k: &Knowledge,
    tenant: &TenantId,
    doc: &Document,
    slot: tokio::sync::OwnedSemaphorePermit,
    cancel: &CancellationToken,
) -> Result<usize, Attempt> {
    let failed = |m: String| Attempt::Failed(m);
    let path = file_path(&k.core, tenant, &doc.id);
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|e| failed(format!("the stored original could not be read: {e}")))?;
    let limits =
        extraction_limits(&k.core.config.extraction, bytes.len() as u64).map_err(failed)?;
    let cutting = Cutting::of(&k.core.config);
    let chunks = cut(
        &k.embedder,
        &doc.media_type,
        bytes,
        &limits,
        cutting,
        cancel,
    )
    .await?;
    let places = k
        .core
        .limiter
        .embedding(&k.core, tenant)
        .await
        .map_err(|e| failed(e.to_string()))?;
    let place = tokio::select! {
        place = places.acquire_owned() => place.map_err(|e| failed(e.to_string()))?,
        () = cancel.cancelled() => return Err(Attempt::Gone),
    };
    drop(slot);
    let prepared = embed(&k.embedder, chunks, cancel).await?;
    drop(place);
    store(k, tenant, &doc.id, prepared).await
}

/// The storing half of processing, always on the serving node: the chunks into the
/// database (replacing an earlier run's), their vectors into the vector store.
pub(super) async fn store(
    k: &Knowledge,
    tenant: &TenantId,
    id: &str,
    prepared: Prepared,
) -> Result<usize, Attempt> {
    let failed = |m: String| Attempt::Failed(m);
    let Prepared {
        chunks: rows,
        vectors,
    } = prepared;
    let count = rows.len();
    let (t, i) = (tenant.clone(), id.to_owned());
    let ids = k
        .core
        .db
        .call(move |c| chunks::replace_chunks(c, &t, &i, &rows))
        .await
        .map_err(|e| failed(e.to_string()))?
        .ok_or(Attempt::Gone)?;
    let items: Vec<VectorItem> = ids
        .into_iter()
        .zip(vectors)
        .map(|(id, vector)| VectorItem { id, vector })
        .collect();
    let (store, t, i) = (k.vectors.clone(), tenant.clone(), id.to_owned());
    blocking(move || store.replace_document(&t, &i, items))
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))?;
    // Deleted while the vectors were written: take them out again.
    let (t, i) = (tenant.clone(), id.to_owned());
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
