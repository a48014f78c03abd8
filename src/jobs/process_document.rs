//! The `process_document` job: extract → chunk → embed → store, with retries.

use std::sync::Arc;

use apalis::prelude::{BoxDynError, Data};
use serde::{Deserialize, Serialize};

use crate::services::ingest::{self, IngestDeps};

/// Process one document of one tenant. Kept backward-compatible: a stored job that
/// no longer decodes would stop the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessDocument {
    /// Owner.
    pub tenant_id: String,
    /// Document.
    pub document_id: String,
}

/// What the job needs.
pub type IngestContext = IngestDeps;

/// The worker's handler: runs the use-case; only infrastructure failures are errors
/// here (document failures are recorded on the document and retried by re-enqueueing).
pub async fn handle(
    job: ProcessDocument,
    ctx: Data<Arc<IngestContext>>,
) -> Result<(), BoxDynError> {
    ingest::run_job(&ctx, &job).await.map_err(|e| {
        tracing::error!(error = %e, document = %job.document_id, "document job failed");
        Box::new(e) as BoxDynError
    })
}
