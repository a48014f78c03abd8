//! Documents: upload (deduplicated by content), list, get, delete, reprocess.

use std::path::PathBuf;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tracing::instrument;

use super::{Intake, Knowledge, ServiceError, blocking, limited_text};
use crate::domain::TenantId;
use crate::jobs::ProcessDocument;
use crate::store::documents::{self, Document, Status};
use crate::text::extract::{self, ExtractError};

/// A document as given by a client.
#[derive(Debug, Clone)]
pub struct NewDocument {
    /// Title; else the file name, else the first line of the text.
    pub title: Option<String>,
    /// Uploaded file name.
    pub filename: Option<String>,
    /// Declared media type.
    pub content_type: Option<String>,
    /// Client metadata.
    pub metadata: Option<Map<String, Value>>,
    /// The original bytes.
    pub bytes: Vec<u8>,
}

/// Where a tenant's original files are kept.
pub fn file_path(core: &super::Core, tenant: &TenantId, id: &str) -> PathBuf {
    core.config
        .storage
        .tenant_dir(tenant.as_str())
        .join("documents")
        .join(id)
}

fn extract_error(e: ExtractError) -> ServiceError {
    match e {
        e @ ExtractError::Unsupported(_) => ServiceError::Unsupported(e.to_string()),
        other => ServiceError::Invalid(other.to_string()),
    }
}

/// The longest file name accepted with an upload.
const MAX_FILENAME_BYTES: usize = 255;
/// The longest title, in characters (a longer file name is cut to it).
const MAX_TITLE_CHARS: usize = 500;

fn default_title(new: &NewDocument) -> String {
    if let Some(name) = &new.filename
        && !name.trim().is_empty()
    {
        return name.trim().chars().take(MAX_TITLE_CHARS).collect();
    }
    let text = String::from_utf8_lossy(&new.bytes[..new.bytes.len().min(512)]).into_owned();
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("Untitled");
    line.chars().take(120).collect()
}

/// Stores a document and queues its processing. Returns the document and whether it
/// is new (`false`: the tenant already had this content, and that document is returned).
#[instrument(skip_all, fields(tenant = %tenant, bytes = new.bytes.len()))]
pub async fn create(
    k: Intake<'_>,
    tenant: &TenantId,
    new: NewDocument,
) -> Result<(Document, bool), ServiceError> {
    let max = k.core.config.documents.max_bytes;
    if new.bytes.len() as u64 > max {
        return Err(ServiceError::TooLarge(format!(
            "the document is larger than the limit of {max} bytes"
        )));
    }
    if new.bytes.is_empty() {
        return Err(ServiceError::Invalid("the document is empty".into()));
    }
    super::check_object_size("metadata", new.metadata.as_ref())?;
    if let Some(name) = &new.filename
        && name.len() > MAX_FILENAME_BYTES
    {
        return Err(ServiceError::Invalid(format!(
            "the file name must be at most {MAX_FILENAME_BYTES} bytes"
        )));
    }
    let kind = extract::detect(
        new.content_type.as_deref(),
        new.filename.as_deref(),
        &new.bytes,
    )
    .map_err(extract_error)?;
    let bytes = new.bytes.clone();
    // A linear check only (type, encoding, nesting); the parsing is the job's.
    blocking(move || extract::precheck(kind, &bytes))
        .await?
        .map_err(extract_error)?;
    let title = match &new.title {
        Some(t) if !super::is_blank(t) => {
            limited_text("title", t, MAX_TITLE_CHARS)?.trim().to_owned()
        }
        _ => default_title(&new),
    };
    let now = k.core.clock.now();
    let doc = Document {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: tenant.clone(),
        title,
        media_type: kind.media_type().to_owned(),
        filename: new.filename.clone(),
        metadata: new.metadata.clone().unwrap_or_default(),
        content_hash: hex::encode(Sha256::digest(&new.bytes)),
        bytes: new.bytes.len() as u64,
        status: Status::Queued,
        attempts: 0,
        last_error: None,
        chunk_count: 0,
        created_at: now,
        updated_at: now,
        processed_at: None,
    };
    // The original goes to disk first, under a temporary name, so that a stored row
    // always has its file.
    let path = file_path(k.core, tenant, &doc.id);
    let tmp = path.with_extension("part");
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    tokio::fs::write(&tmp, &new.bytes).await?;
    let row = doc.clone();
    let inserted = k
        .core
        .db
        .call(move |c| documents::insert_or_existing(c, &row))
        .await;
    let (stored, created) = match inserted {
        Ok(r) => r,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e.into());
        }
    };
    if !created {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Ok((stored, false));
    }
    tokio::fs::rename(&tmp, &path).await?;
    enqueue(k, tenant, &stored.id).await?;
    tracing::info!(document = %stored.id, media_type = %stored.media_type, "document queued");
    Ok((stored, true))
}

/// Puts a document's job on the queue. Its round is the number of documents its
/// tenant has waiting, so that tenants take turns: a tenant with thousands queued does
/// not hold back another's single upload.
pub async fn queue_document(
    k: Intake<'_>,
    tenant: &TenantId,
    id: &str,
    delay: Option<std::time::Duration>,
) -> Result<(), ServiceError> {
    let t = tenant.clone();
    let round = k
        .core
        .db
        .call(move |c| documents::queued_count(c, &t))
        .await?;
    let job = ProcessDocument {
        tenant_id: tenant.to_string(),
        document_id: id.to_owned(),
    };
    k.queue.enqueue(job, delay, round).await?;
    Ok(())
}

/// Queues a new document. When Redis refuses the job, the document stays `queued` on
/// the database and its job is pushed once Redis answers again (the upload is not
/// refused); the embedded queue failing fails the document and answers 503.
async fn enqueue(k: Intake<'_>, tenant: &TenantId, id: &str) -> Result<(), ServiceError> {
    if let Err(e) = queue_document(k, tenant, id, None).await {
        if k.queue.redis().is_some() {
            tracing::warn!(error = %e, document = %id, "Redis refused the job; it is pushed again when Redis answers");
            return Ok(());
        }
        let (t, i, now) = (tenant.clone(), id.to_owned(), k.core.clock.now());
        let msg = format!("could not queue processing: {e}");
        let _ = k
            .core
            .db
            .call(move |c| documents::set_status(c, &t, &i, Status::Failed, None, Some(&msg), now))
            .await;
        return Err(ServiceError::Busy(
            "the job queue is unavailable; retry later".into(),
        ));
    }
    Ok(())
}

/// One document; 404 when absent or another tenant's.
pub async fn get(k: Intake<'_>, tenant: &TenantId, id: &str) -> Result<Document, ServiceError> {
    let (t, i) = (tenant.clone(), id.to_owned());
    k.core
        .db
        .call(move |c| documents::get(c, &t, &i))
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("no document `{id}`")))
}

/// One chunk of one of the tenant's documents (a citation's target); 404 when the
/// document or the chunk is not there.
pub async fn chunk(
    k: Intake<'_>,
    tenant: &TenantId,
    document: &str,
    index: u32,
) -> Result<crate::store::chunks::ChunkHit, ServiceError> {
    let (t, d) = (tenant.clone(), document.to_owned());
    k.core
        .db
        .call(move |c| crate::store::chunks::chunk_at(c, &t, &d, index))
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("no chunk {index} of document `{document}`")))
}

/// A page of documents, newest first.
pub async fn list(
    k: Intake<'_>,
    tenant: &TenantId,
    status: Option<Status>,
    limit: u32,
    offset: u32,
) -> Result<(Vec<Document>, u64), ServiceError> {
    let t = tenant.clone();
    Ok(k.core
        .db
        .call(move |c| documents::list(c, &t, status, limit, offset))
        .await?)
}

/// Deletes a document: its row and chunks, its vectors and its stored bytes, and stops
/// any processing of it. Search stops returning it at once. The row goes first: if the
/// process stops before the rest, the start-up sweep removes what has no row.
#[instrument(skip_all, fields(tenant = %tenant, document = %id))]
pub async fn delete(k: &Knowledge, tenant: &TenantId, id: &str) -> Result<(), ServiceError> {
    let (t, i) = (tenant.clone(), id.to_owned());
    k.in_flight.cancel(id);
    if !k
        .core
        .db
        .call(move |c| documents::delete(c, &t, &i))
        .await?
    {
        return Err(ServiceError::NotFound(format!("no document `{id}`")));
    }
    let (vectors, t, i) = (k.vectors.clone(), tenant.clone(), id.to_owned());
    blocking(move || vectors.delete_document(&t, &i)).await??;
    match tokio::fs::remove_file(file_path(&k.core, tenant, id)).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    tracing::info!("document deleted");
    Ok(())
}

/// Queues a document to be processed again from its stored bytes.
pub async fn reprocess(
    k: Intake<'_>,
    tenant: &TenantId,
    id: &str,
) -> Result<Document, ServiceError> {
    get(k, tenant, id).await?;
    let (t, i, now) = (tenant.clone(), id.to_owned(), k.core.clock.now());
    // One conditional update: of two concurrent calls, one queues and the other is told.
    let queued = k
        .core
        .db
        .call(move |c| documents::requeue_settled(c, &t, &i, now))
        .await?;
    if !queued {
        return Err(ServiceError::Conflict(
            "the document is already being processed".into(),
        ));
    }
    enqueue(k, tenant, id).await?;
    get(k, tenant, id).await
}
