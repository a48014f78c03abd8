//! `/api/v1/documents`: upload, list, get, delete, reprocess.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::types::multipart::{JsonField, Upload};
use poem_openapi::{ApiResponse, Enum, Multipart, Object, OpenApi, Tags};
use serde_json::Value;

use crate::api::error::ApiError;
use crate::api::security::TenantAuth;
use crate::api::state::AppState;
use crate::domain::Scope;
use crate::services::documents::{self, NewDocument};
use crate::store::documents::{Document, Status};

#[derive(Tags)]
enum Tag {
    /// The tenant's knowledge: documents and search.
    Knowledge,
}

/// A document uploaded as a file; a part not named here is refused.
#[derive(Debug, Multipart)]
#[oai(deny_unknown_fields)]
pub struct UploadForm {
    /// The file: text, Markdown, HTML or PDF.
    pub file: Upload,
    /// Title (at most 500 characters); defaults to the file name.
    #[oai(validator(max_length = 500))]
    pub title: Option<String>,
    /// A JSON object stored with the document.
    pub metadata: Option<JsonField<BTreeMap<String, Value>>>,
}

/// A document given as text.
#[derive(Debug, Object)]
pub struct DocumentIn {
    /// Title (at most 500 characters); defaults to the text's first line.
    #[oai(validator(max_length = 500))]
    pub title: Option<String>,
    /// The text: at least one character that is neither white space nor a control
    /// character (a document without one is refused as empty).
    #[oai(validator(pattern = r"[^\s\x00-\x1f\x7f-\x9f]"))]
    pub text: String,
    /// Stored with the document.
    pub metadata: Option<BTreeMap<String, Value>>,
}

/// Where a document is in its processing.
#[derive(Debug, Clone, Copy, Enum, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum StatusDto {
    /// Waiting for a worker (also between retries).
    Queued,
    /// Being processed.
    Processing,
    /// Searchable.
    Ready,
    /// Failed after the retries; see `last_error`.
    Failed,
}

impl From<Status> for StatusDto {
    fn from(s: Status) -> Self {
        match s {
            Status::Queued => Self::Queued,
            Status::Processing => Self::Processing,
            Status::Ready => Self::Ready,
            Status::Failed => Self::Failed,
        }
    }
}

impl From<StatusDto> for Status {
    fn from(s: StatusDto) -> Self {
        match s {
            StatusDto::Queued => Self::Queued,
            StatusDto::Processing => Self::Processing,
            StatusDto::Ready => Self::Ready,
            StatusDto::Failed => Self::Failed,
        }
    }
}

/// The answer to an upload.
#[derive(Debug, Object)]
pub struct Accepted {
    /// Document id.
    pub id: String,
    /// The document's status, named as `GET /api/v1/documents/{id}` names it: `queued`
    /// for a new (or reprocessed) document until a worker takes it; the existing
    /// document's status for a duplicate.
    pub status: StatusDto,
    /// True when the tenant already had this content (nothing new was queued).
    pub duplicate: bool,
}

/// A document.
#[derive(Debug, Object)]
pub struct DocumentOut {
    /// Id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Status.
    pub status: StatusDto,
    /// Media type of the original.
    pub media_type: String,
    /// Uploaded file name.
    pub filename: Option<String>,
    /// Client metadata.
    pub metadata: BTreeMap<String, Value>,
    /// Processing attempts so far.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Chunks stored.
    pub chunk_count: u32,
    /// Size of the original in bytes.
    pub bytes: u64,
    /// SHA-256 of the original.
    pub content_hash: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
    /// Last processed successfully.
    pub processed_at: Option<DateTime<Utc>>,
}

impl From<Document> for DocumentOut {
    fn from(d: Document) -> Self {
        Self {
            id: d.id,
            title: d.title,
            status: d.status.into(),
            media_type: d.media_type,
            filename: d.filename,
            metadata: d.metadata.into_iter().collect(),
            attempts: d.attempts,
            last_error: d.last_error,
            chunk_count: d.chunk_count,
            bytes: d.bytes,
            content_hash: d.content_hash,
            created_at: d.created_at,
            updated_at: d.updated_at,
            processed_at: d.processed_at,
        }
    }
}

/// A page of documents.
#[derive(Debug, Object)]
pub struct DocumentList {
    /// Documents, newest first.
    pub items: Vec<DocumentOut>,
    /// How many match.
    pub total: u64,
}

#[derive(ApiResponse)]
enum UploadResponse {
    /// New: queued for processing.
    #[oai(status = 202)]
    Accepted(Json<Accepted>),
    /// The tenant already had this content: the existing document.
    #[oai(status = 200)]
    Existing(Json<Accepted>),
}

#[derive(ApiResponse)]
enum Reprocessing {
    /// Queued again.
    #[oai(status = 202)]
    Accepted(Json<Accepted>),
}

#[derive(ApiResponse)]
enum Deleted {
    /// Deleted with its chunks, vectors and stored bytes.
    #[oai(status = 204)]
    NoContent,
}

/// `/api/v1/documents`.
pub struct DocumentsApi {
    state: AppState,
}

impl DocumentsApi {
    /// Wraps the state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn answer(doc: Document, created: bool) -> UploadResponse {
    if created {
        UploadResponse::Accepted(Json(Accepted {
            id: doc.id,
            status: doc.status.into(),
            duplicate: false,
        }))
    } else {
        UploadResponse::Existing(Json(Accepted {
            id: doc.id,
            status: doc.status.into(),
            duplicate: true,
        }))
    }
}

#[OpenApi(prefix_path = "/api/v1/documents", tag = "Tag::Knowledge")]
impl DocumentsApi {
    /// Uploads a file (text, Markdown, HTML, PDF); answers at once and processes it in
    /// the background. The same content twice returns the existing document.
    #[oai(path = "/upload", method = "post", operation_id = "upload_document")]
    async fn upload(&self, auth: TenantAuth, form: UploadForm) -> Result<UploadResponse, ApiError> {
        auth.0.require(Scope::Write)?;
        let k = &self.state.knowledge;
        let metadata = form.metadata.map(|m| m.0.into_iter().collect());
        let filename = form.file.file_name().map(str::to_owned);
        let content_type = form.file.content_type().map(str::to_owned);
        let bytes = form.file.into_vec().await.map_err(|e| {
            ApiError::new(
                crate::api::error::ErrorCode::BadRequest,
                format!("reading the upload: {e}"),
            )
        })?;
        let (doc, created) = documents::create(
            k.intake(),
            &auth.0.tenant.id,
            NewDocument {
                title: form.title,
                filename,
                content_type,
                metadata,
                bytes,
            },
        )
        .await?;
        Ok(answer(doc, created))
    }

    /// Adds a document given as text.
    #[oai(path = "/", method = "post", operation_id = "create_document")]
    async fn create(
        &self,
        auth: TenantAuth,
        body: Json<DocumentIn>,
    ) -> Result<UploadResponse, ApiError> {
        auth.0.require(Scope::Write)?;
        let k = &self.state.knowledge;
        let body = body.0;
        let (doc, created) = documents::create(
            k.intake(),
            &auth.0.tenant.id,
            NewDocument {
                title: body.title,
                filename: None,
                content_type: Some("text/plain".into()),
                metadata: body.metadata.map(|m| m.into_iter().collect()),
                bytes: body.text.into_bytes(),
            },
        )
        .await?;
        Ok(answer(doc, created))
    }

    /// Lists documents, newest first.
    #[oai(path = "/", method = "get", operation_id = "list_documents")]
    async fn list(
        &self,
        auth: TenantAuth,
        /// Only documents in this status.
        status: Query<Option<StatusDto>>,
        /// Page size, 1-1000.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u32>,
        /// Documents to skip.
        #[oai(default)]
        offset: Query<u32>,
    ) -> Result<Json<DocumentList>, ApiError> {
        auth.0.require(Scope::Read)?;
        let k = &self.state.knowledge;
        let (items, total) = documents::list(
            k.intake(),
            &auth.0.tenant.id,
            status.0.map(Into::into),
            limit.0,
            offset.0,
        )
        .await?;
        Ok(Json(DocumentList {
            items: items.into_iter().map(Into::into).collect(),
            total,
        }))
    }

    /// One document with its processing state.
    #[oai(path = "/:id", method = "get", operation_id = "get_document")]
    async fn get(&self, auth: TenantAuth, id: Path<String>) -> Result<Json<DocumentOut>, ApiError> {
        auth.0.require(Scope::Read)?;
        let k = &self.state.knowledge;
        Ok(Json(
            documents::get(k.intake(), &auth.0.tenant.id, &id)
                .await?
                .into(),
        ))
    }

    /// One chunk of a document, as search and citations name it.
    #[oai(
        path = "/:id/chunks/:index",
        method = "get",
        operation_id = "get_document_chunk"
    )]
    async fn chunk(
        &self,
        auth: TenantAuth,
        id: Path<String>,
        index: Path<u32>,
    ) -> Result<Json<ChunkOut>, ApiError> {
        auth.0.require(Scope::Read)?;
        let k = &self.state.knowledge;
        let c = documents::chunk(k.intake(), &auth.0.tenant.id, &id, index.0).await?;
        Ok(Json(ChunkOut {
            document_id: c.document_id,
            title: c.title,
            chunk_index: c.chunk_index,
            text: c.text,
            start: c.start,
            end: c.end,
        }))
    }

    /// Deletes a document, its chunks, vectors and stored bytes; search stops
    /// returning it at once.
    #[oai(path = "/:id", method = "delete", operation_id = "delete_document")]
    async fn delete(&self, auth: TenantAuth, id: Path<String>) -> Result<Deleted, ApiError> {
        auth.0.require(Scope::Write)?;
        let k = &self.state.knowledge;
        documents::delete(k, &auth.0.tenant.id, &id).await?;
        Ok(Deleted::NoContent)
    }

    /// Processes a document again from its stored original.
    #[oai(
        path = "/:id/reprocess",
        method = "post",
        operation_id = "reprocess_document"
    )]
    async fn reprocess(
        &self,
        auth: TenantAuth,
        id: Path<String>,
    ) -> Result<Reprocessing, ApiError> {
        auth.0.require(Scope::Write)?;
        let k = &self.state.knowledge;
        let doc = documents::reprocess(k.intake(), &auth.0.tenant.id, &id).await?;
        Ok(Reprocessing::Accepted(Json(Accepted {
            id: doc.id,
            status: doc.status.into(),
            duplicate: false,
        })))
    }
}

/// One chunk of a document.
#[derive(Debug, Object)]
pub struct ChunkOut {
    /// Document.
    pub document_id: String,
    /// Document title.
    pub title: String,
    /// Position of the chunk in the document.
    pub chunk_index: u32,
    /// The chunk's text.
    pub text: String,
    /// First character of the chunk in the document's text.
    pub start: u64,
    /// One past the last character.
    pub end: u64,
}

fn default_limit() -> u32 {
    50
}
