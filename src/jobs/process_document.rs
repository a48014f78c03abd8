//! The `process_document` job: its payload, and the worker function that hands each
//! job to the handler the application wired in.

use std::time::Instant;

use apalis::prelude::{BoxDynError, Data};
use serde::{Deserialize, Serialize};

use super::Runner;

/// Process one document of one tenant. Kept backward-compatible: a stored job that
/// no longer decodes would stop the worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcessDocument {
    /// Owner.
    pub tenant_id: String,
    /// Document.
    pub document_id: String,
}

/// The worker function: runs the wired-in handler, counted in the metrics; only
/// infrastructure failures are errors here (document failures are recorded on the
/// document and retried by enqueueing a new job).
pub async fn handle(job: ProcessDocument, runner: Data<Runner>) -> Result<(), BoxDynError> {
    let document = job.document_id.clone();
    let started = Instant::now();
    let _running = runner.metrics.started();
    let result = runner.handler.run(job).await;
    runner.metrics.finished(started.elapsed(), result.is_ok());
    result.inspect_err(|e| {
        tracing::error!(error = %e, %document, "document job failed");
    })
}
