//! The serving node's side of remote workers (`ragbox worker`), with the operator
//! token: claim a queued document, hand back its chunks and vectors.

use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Tags};

use crate::api::error::{ApiError, ErrorCode};
use crate::api::security::AdminAuth;
use crate::api::state::AppState;
use crate::domain::TenantId;
use crate::services::ingest::Cutting;
use crate::services::remote::{self, Completion, Outcome};
use crate::store::chunks::NewChunk;

#[derive(Tags)]
enum Tag {
    /// Operator: remote workers take document jobs (operator token).
    Jobs,
}

/// A document job a worker took from the queue.
#[derive(Debug, Object)]
pub struct ClaimIn {
    /// The document's tenant (its id).
    #[oai(validator(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub tenant_id: String,
    /// The document (its id).
    #[oai(validator(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub document_id: String,
}

/// How the serving node cuts documents.
#[derive(Debug, Object)]
pub struct CuttingDto {
    /// Tokens per chunk, at most.
    pub max_tokens: u64,
    /// Tokens shared by neighbouring chunks.
    pub overlap_tokens: u64,
    /// More chunks than this fail the document.
    pub max_chunks: u64,
}

/// A document claimed for one attempt.
#[derive(Debug, Object)]
pub struct ClaimOut {
    /// The attempt; the result names it.
    pub attempt: u32,
    /// The document's media type.
    pub media_type: String,
    /// The original bytes, base64.
    pub content_base64: String,
    /// How to cut it.
    pub cutting: CuttingDto,
}

/// One chunk of a result.
#[derive(Debug, Object)]
pub struct ChunkDto {
    /// Position in the document.
    pub index: u64,
    /// Text.
    pub text: String,
    /// First character in the extracted text.
    pub start: u64,
    /// One past the last character.
    pub end: u64,
    /// Tokens.
    pub tokens: u64,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum OutcomeDto {
    /// Cut and embedded: `chunks` and `vectors_base64` are set.
    Prepared,
    /// The document failed: `reason` says why.
    Failed,
    /// The worker stopped first: queued again at once.
    Interrupted,
}

/// A worker's result for one claim.
#[derive(Debug, Object)]
pub struct CompleteIn {
    /// The document's tenant (its id).
    #[oai(validator(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub tenant_id: String,
    /// The document (its id).
    #[oai(validator(
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub document_id: String,
    /// The claim's attempt.
    pub attempt: u32,
    /// How it ended.
    pub outcome: OutcomeDto,
    /// The chunks, in order (`prepared`).
    pub chunks: Option<Vec<ChunkDto>>,
    /// Every chunk's vector (384 little-endian f32 each), concatenated, base64
    /// (`prepared`).
    pub vectors_base64: Option<String>,
    /// Why the document failed (`failed`).
    #[oai(validator(max_length = 4096))]
    pub reason: Option<String>,
}

#[derive(ApiResponse)]
enum Claimed {
    /// Claimed: process it and report the result.
    #[oai(status = 200)]
    Ok(Json<ClaimOut>),
}

#[derive(ApiResponse)]
enum Completed {
    /// Stored (or recorded as failed).
    #[oai(status = 204)]
    NoContent,
}

/// `/api/v1/admin/jobs`.
pub struct JobsApi {
    state: AppState,
}

impl JobsApi {
    /// Wraps the state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn tenant_id(raw: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(raw).map_err(|_| ApiError::invalid("tenant_id is not a tenant id"))
}

fn size(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

#[OpenApi(prefix_path = "/api/v1/admin/jobs", tag = "Tag::Jobs")]
impl JobsApi {
    /// Claims a queued document for one processing attempt (what `ragbox worker`
    /// does for each job it takes). 409 `conflict` when there is nothing to do: the
    /// document is gone, done, or held by another attempt.
    #[oai(path = "/claim", method = "post", operation_id = "claim_job")]
    async fn claim(&self, _auth: AdminAuth, body: Json<ClaimIn>) -> Result<Claimed, ApiError> {
        let tenant = tenant_id(&body.tenant_id)?;
        match remote::claim(&self.state.knowledge, &tenant, &body.document_id).await? {
            Some(c) => Ok(Claimed::Ok(Json(ClaimOut {
                attempt: c.attempt,
                media_type: c.media_type,
                content_base64: c.content_base64,
                cutting: c.cutting.into(),
            }))),
            None => Err(ApiError::new(
                ErrorCode::Conflict,
                "the document is not waiting for processing",
            )),
        }
    }

    /// Hands back the result of a claimed attempt; the serving node stores it as it
    /// stores its own. 409 `conflict` when the attempt no longer holds the document
    /// (its lease ran out, or it was deleted): the result is dropped.
    #[oai(path = "/complete", method = "post", operation_id = "complete_job")]
    async fn complete(
        &self,
        _auth: AdminAuth,
        body: Json<CompleteIn>,
    ) -> Result<Completed, ApiError> {
        let body = body.0;
        tenant_id(&body.tenant_id)?;
        let outcome = match body.outcome {
            OutcomeDto::Prepared => {
                // Missing parts are empty: whether the claim still holds is checked
                // first, then the result (a result without chunks is refused).
                Outcome::Prepared {
                    chunks: body
                        .chunks
                        .unwrap_or_default()
                        .into_iter()
                        .map(|c| NewChunk {
                            index: size(c.index),
                            text: c.text,
                            start: size(c.start),
                            end: size(c.end),
                            tokens: size(c.tokens),
                        })
                        .collect(),
                    vectors_base64: body.vectors_base64.unwrap_or_default(),
                }
            }
            OutcomeDto::Failed => Outcome::Failed {
                reason: body
                    .reason
                    .unwrap_or_else(|| "the worker gave no reason".into()),
            },
            OutcomeDto::Interrupted => Outcome::Interrupted,
        };
        let done = Completion {
            tenant_id: body.tenant_id,
            document_id: body.document_id,
            attempt: body.attempt,
            outcome,
        };
        if remote::complete(&self.state.knowledge, done).await? {
            Ok(Completed::NoContent)
        } else {
            Err(ApiError::new(
                ErrorCode::Conflict,
                "this attempt no longer holds the document; the result is dropped",
            ))
        }
    }
}

impl From<Cutting> for CuttingDto {
    fn from(c: Cutting) -> Self {
        Self {
            max_tokens: c.max_tokens as u64,
            overlap_tokens: c.overlap_tokens as u64,
            max_chunks: c.max_chunks as u64,
        }
    }
}
