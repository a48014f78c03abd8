//! Use-cases shared by the HTTP API, the CLI and background jobs.

pub mod agents;
pub mod chat;
pub mod documents;
pub mod embeddings;
pub mod eval;
pub mod health;
pub mod ingest;
pub mod keys;
pub mod limits;
pub mod migrate;
pub mod models;
pub mod recovery;
pub mod reindex;
pub mod remote;
pub mod search;
pub mod tenants;

use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::InvalidInput;
use crate::store::{Db, StoreError};

/// What every use-case needs: configuration, the database and the clock.
#[derive(Clone)]
pub struct Core {
    /// Effective configuration.
    pub config: Arc<Config>,
    /// The SQLite store.
    pub db: Db,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Per-tenant request rates and concurrency.
    pub limiter: limits::Limiter,
}

/// Why a use-case failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The thing does not exist (or belongs to someone else).
    #[error("{0}")]
    NotFound(String),
    /// The thing exists already, or the state does not allow the request.
    #[error("{0}")]
    Conflict(String),
    /// The input is well-formed but not acceptable.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file operation failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The input is larger than allowed.
    #[error("{0}")]
    TooLarge(String),
    /// The input's type is not accepted.
    #[error("{0}")]
    Unsupported(String),
    /// A bounded resource is full; retry later.
    #[error("{0}")]
    Busy(String),
    /// A per-request queue (the generator's) is full; retry shortly (429).
    #[error("{0}")]
    RateLimited(String),
    /// An upstream provider refused or failed before the answer started (502).
    #[error("{0}")]
    Upstream(String),
    /// A component failed (embedding, vectors, queue); details in the log.
    #[error("{0}")]
    Internal(String),
}

impl From<InvalidInput> for ServiceError {
    fn from(err: InvalidInput) -> Self {
        Self::Invalid(err.0)
    }
}

/// The knowledge components: what documents, jobs and search need beside [`Core`].
#[derive(Clone)]
pub struct Knowledge {
    /// Configuration, database, clock.
    pub core: Core,
    /// The embedding model.
    pub embedder: crate::ml::Embedder,
    /// Vectors.
    pub vectors: Arc<dyn crate::store::vectors::VectorStore>,
    /// The job queue.
    pub queue: crate::jobs::JobQueue,
    /// Documents being processed now, to stop when deleted.
    pub in_flight: ingest::InFlight,
}

impl Knowledge {
    /// The parts that accept documents and report on them.
    pub fn intake(&self) -> Intake<'_> {
        Intake {
            core: &self.core,
            queue: &self.queue,
        }
    }
}

/// Accepting documents and reading their state needs the database and the job queue,
/// not the model or the vectors: the CLI uses this alone to queue work for a running
/// server, which holds the vector store.
#[derive(Clone, Copy)]
pub struct Intake<'a> {
    /// Configuration, database, clock.
    pub core: &'a Core,
    /// The job queue.
    pub queue: &'a crate::jobs::JobQueue,
}

impl From<crate::ml::EmbedError> for ServiceError {
    fn from(e: crate::ml::EmbedError) -> Self {
        match e {
            crate::ml::EmbedError::Busy => {
                Self::Busy("the embedding model is busy; retry shortly".into())
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<crate::store::vectors::VectorError> for ServiceError {
    fn from(e: crate::store::vectors::VectorError) -> Self {
        match e {
            // A remote store that does not answer: 503 with Retry-After, the cause in
            // the log.
            crate::store::vectors::VectorError::Unavailable(why) => {
                tracing::warn!(error = %why, "the vector store does not answer");
                Self::Busy("the vector store does not answer; retry shortly".into())
            }
            other => Self::Internal(other.to_string()),
        }
    }
}

impl From<crate::jobs::QueueError> for ServiceError {
    fn from(e: crate::jobs::QueueError) -> Self {
        Self::Internal(e.to_string())
    }
}

/// Runs blocking work (model, index, parsing) off the async runtime.
pub async fn blocking<T, F>(f: F) -> Result<T, ServiceError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ServiceError::Internal(format!("blocking task failed: {e}")))
}

/// Checks a required, length-limited text field: at most `max_chars` as given, not
/// blank; returns it trimmed.
pub fn required_text(field: &str, value: &str, max_chars: usize) -> Result<String, ServiceError> {
    limited_text(field, value, max_chars)?;
    if is_blank(value) {
        return Err(ServiceError::Invalid(format!("{field} must not be blank")));
    }
    Ok(value.trim().to_owned())
}

/// Checks a length-limited text field (at most `max_chars` as given).
pub fn limited_text(field: &str, value: &str, max_chars: usize) -> Result<String, ServiceError> {
    if value.chars().count() > max_chars {
        return Err(ServiceError::Invalid(format!(
            "{field} must be at most {max_chars} characters"
        )));
    }
    Ok(value.to_owned())
}

/// Whether a text is empty or white space only. White space is what the API's `\S`
/// patterns exclude (Unicode's, plus the four separators U+001C-U+001F that
/// Python-compatible regular expressions count too), so the document and the server
/// agree on every text.
pub fn is_blank(value: &str) -> bool {
    value
        .chars()
        .all(|c| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// Documents a filter (search, chat, agents) may name.
pub const MAX_DOCUMENT_IDS: usize = 100;
/// The largest JSON object of free-form fields (document metadata, tenant settings),
/// serialised.
pub const MAX_OBJECT_BYTES: usize = 16 * 1024;
/// Stop texts of a chat, and the length of each.
pub const MAX_STOPS: usize = 4;
/// The longest stop text, in characters.
pub const MAX_STOP_CHARS: usize = 64;

/// Checks a document filter before any work is done with it: at most
/// [`MAX_DOCUMENT_IDS`] ids, each a document id (a UUID).
pub fn check_document_ids(field: &str, ids: Option<&[String]>) -> Result<(), ServiceError> {
    let Some(ids) = ids else {
        return Ok(());
    };
    if ids.len() > MAX_DOCUMENT_IDS {
        return Err(ServiceError::Invalid(format!(
            "{field} names {} documents; at most {MAX_DOCUMENT_IDS} are allowed",
            ids.len()
        )));
    }
    // The hyphenated form only, as the API declares it.
    let canonical = |id: &str| id.len() == 36 && uuid::Uuid::try_parse(id).is_ok();
    if let Some(bad) = ids.iter().find(|id| !canonical(id)) {
        let shown: String = bad.chars().take(40).collect();
        return Err(ServiceError::Invalid(format!(
            "{field} holds `{shown}`, which is not a document id"
        )));
    }
    Ok(())
}

/// Checks a free-form JSON object's size (serialised) against [`MAX_OBJECT_BYTES`].
pub fn check_object_size(
    field: &str,
    object: Option<&serde_json::Map<String, serde_json::Value>>,
) -> Result<(), ServiceError> {
    let size = object
        .map(|o| serde_json::to_vec(o).map(|v| v.len()).unwrap_or(usize::MAX))
        .unwrap_or(0);
    if size > MAX_OBJECT_BYTES {
        return Err(ServiceError::Invalid(format!(
            "{field} must be at most {MAX_OBJECT_BYTES} bytes as JSON"
        )));
    }
    Ok(())
}

/// Checks a chat's stop texts: at most [`MAX_STOPS`], each 1 to [`MAX_STOP_CHARS`]
/// characters.
pub fn check_stops(stops: &[String]) -> Result<(), ServiceError> {
    if stops.len() > MAX_STOPS {
        return Err(ServiceError::Invalid(format!(
            "stop holds at most {MAX_STOPS} texts"
        )));
    }
    if stops
        .iter()
        .any(|s| s.is_empty() || s.chars().count() > MAX_STOP_CHARS)
    {
        return Err(ServiceError::Invalid(format!(
            "each stop text must be 1 to {MAX_STOP_CHARS} characters"
        )));
    }
    Ok(())
}
