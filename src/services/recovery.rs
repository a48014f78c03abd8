//! Keeping documents moving after interruptions: at start (documents a stopped
//! process left unfinished, leftovers of interrupted deletes, vectors of deleted
//! tenants) and, when jobs go through Redis, all the time ([`resync`]): a document
//! whose job Redis may have lost, or whose worker stopped answering, gets its job
//! pushed again.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::documents::queue_document;
use super::ingest::forget_vectors;
use super::{Knowledge, ServiceError, blocking};
use crate::domain::TenantId;
use crate::store::documents;

/// At start, before any worker runs: documents left `processing` by a stopped
/// process go back to `queued`, and every queued document without a waiting job gets
/// one (a duplicate job is harmless: only one run can claim the document).
pub async fn recover_unfinished(k: &Knowledge) -> Result<usize, ServiceError> {
    let now = k.core.clock.now();
    let unfinished = k
        .core
        .db
        .call(move |c| documents::unfinished_after_restart(c, now))
        .await?;
    let waiting = k.queue.waiting_documents().await?;
    let mut queued = 0;
    for (tenant_id, document_id) in unfinished {
        if waiting.as_ref().is_some_and(|w| w.contains(&document_id)) {
            continue;
        }
        let Ok(tenant) = TenantId::parse(&tenant_id) else {
            continue;
        };
        queue_document(k.intake(), &tenant, &document_id, None).await?;
        queued += 1;
    }
    if queued > 0 {
        tracing::info!(count = queued, "re-queued documents that had no job");
    }
    Ok(queued)
}

/// At start: drops the vectors of tenants deleted while the vector store was not open.
pub async fn drop_deleted_tenants(k: &Knowledge) -> Result<usize, ServiceError> {
    let known = k.core.db.call(|c| crate::store::tenants::ids(c)).await?;
    let vectors = k.vectors.clone();
    let dropped = blocking(move || {
        let mut dropped = 0;
        for tenant in vectors.tenants() {
            if !known.contains(tenant.as_str()) {
                tracing::info!(tenant = %tenant, "dropping vectors of a deleted tenant");
                vectors.drop_tenant(&tenant)?;
                dropped += 1;
            }
        }
        Ok::<_, crate::store::vectors::VectorError>(dropped)
    })
    .await??;
    Ok(dropped)
}

/// At start: removes vectors and stored files of documents that have no row (left
/// by a delete that was interrupted between its steps, or by an upload that stopped
/// before its row was written).
pub async fn sweep_leftovers(k: &Knowledge) -> Result<usize, ServiceError> {
    let mut removed = 0;
    let vectors = k.vectors.clone();
    for tenant in blocking(move || vectors.tenants()).await? {
        let t = tenant.clone();
        let known = k.core.db.call(move |c| documents::ids(c, &t)).await?;
        let (vectors, t) = (k.vectors.clone(), tenant.clone());
        let stored = blocking(move || vectors.documents(&t)).await??;
        for doc in stored.difference(&known) {
            tracing::info!(tenant = %tenant, document = %doc, "removing vectors of a deleted document");
            forget_vectors(k, &tenant, doc).await?;
            removed += 1;
        }
    }
    let tenants_dir = k.core.config.storage.data_dir.join("tenants");
    let Ok(mut dirs) = tokio::fs::read_dir(&tenants_dir).await else {
        return Ok(removed);
    };
    while let Some(entry) = dirs.next_entry().await? {
        let Ok(tenant) = TenantId::parse(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        let t = tenant.clone();
        let known = k.core.db.call(move |c| documents::ids(c, &t)).await?;
        let Ok(mut files) = tokio::fs::read_dir(entry.path().join("documents")).await else {
            continue;
        };
        while let Some(file) = files.next_entry().await? {
            let name = file.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                tracing::info!(tenant = %tenant, file = %name, "removing a stored file without a document");
                tokio::fs::remove_file(file.path()).await?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// With jobs in Redis, until `stop`: every `jobs.lease_secs / 4` (1–30 s) Redis is
/// asked for its run id. When it was unreachable, restarted (a new run id: it may
/// have lost every job) or refused an upload's job, every queued document gets its
/// job again; and documents whose lease ran out (a worker that died holding one, or a
/// job lost without notice) go back on the queue. Pushing a job twice is harmless:
/// only one run can claim a document.
pub async fn resync(k: Knowledge, stop: CancellationToken) {
    let Some(redis) = k.queue.redis().cloned() else {
        return;
    };
    let lease = Duration::from_secs(k.core.config.jobs.lease_secs);
    let tick = (lease / 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
    let mut run_id = redis.ping().await.ok();
    let mut unreachable = run_id.is_none();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.cancelled() => break,
        }
        match redis.ping().await {
            Err(e) => {
                if !unreachable {
                    tracing::warn!(error = %e, "Redis is unreachable; uploads are kept and queued when it answers again");
                }
                unreachable = true;
                continue;
            }
            Ok(id) => {
                let restarted = run_id.as_ref().is_some_and(|known| *known != id);
                if unreachable || restarted || redis.take_refused() {
                    tracing::info!(
                        restarted,
                        "Redis answers again; queueing every waiting document"
                    );
                    if let Err(e) = push_queued(&k).await {
                        tracing::warn!(error = %e, "could not queue the waiting documents again");
                        redis.note_refused();
                        continue;
                    }
                }
                unreachable = false;
                run_id = Some(id);
            }
        }
        if let Err(e) = expire_leases(&k, lease).await {
            tracing::warn!(error = %e, "could not hand expired leases to other workers");
        }
    }
}

async fn push_queued(k: &Knowledge) -> Result<usize, ServiceError> {
    let queued = k.core.db.call(|c| documents::queued(c)).await?;
    push_all(k, queued).await
}

async fn expire_leases(k: &Knowledge, lease: Duration) -> Result<usize, ServiceError> {
    let now = k.core.clock.now();
    let cutoff = now - chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
    let stale = k
        .core
        .db
        .call(move |c| documents::expire_leases(c, cutoff, now))
        .await?;
    if !stale.is_empty() {
        tracing::info!(
            count = stale.len(),
            "leases ran out; the documents are queued again"
        );
    }
    push_all(k, stale).await
}

async fn push_all(k: &Knowledge, docs: Vec<(String, String)>) -> Result<usize, ServiceError> {
    let mut pushed = 0;
    for (tenant, id) in docs {
        let Ok(tenant) = TenantId::parse(&tenant) else {
            continue;
        };
        queue_document(k.intake(), &tenant, &id, None).await?;
        pushed += 1;
    }
    Ok(pushed)
}
