//! `/api/v1/search`.

use poem_openapi::payload::Json;
use poem_openapi::{Enum, Object, OpenApi, Tags};

use crate::api::error::ApiError;
use crate::api::security::TenantAuth;
use crate::api::state::AppState;
use crate::domain::Scope;
use crate::services::search::{self, Mode, Query};

#[derive(Tags)]
enum Tag {
    /// The tenant's knowledge: documents and search.
    Knowledge,
}

/// How to search.
#[derive(Debug, Clone, Copy, Enum, Default)]
#[oai(rename_all = "lowercase")]
pub enum ModeDto {
    /// Vectors and keywords fused (`[search]` in the configuration).
    #[default]
    Hybrid,
    /// Meaning only: cosine similarity.
    Vector,
    /// Words only: BM25.
    Keyword,
}

impl From<ModeDto> for Mode {
    fn from(m: ModeDto) -> Self {
        match m {
            ModeDto::Hybrid => Mode::Hybrid,
            ModeDto::Vector => Mode::Vector,
            ModeDto::Keyword => Mode::Keyword,
        }
    }
}

impl From<Mode> for ModeDto {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Hybrid => ModeDto::Hybrid,
            Mode::Vector => ModeDto::Vector,
            Mode::Keyword => ModeDto::Keyword,
        }
    }
}

/// A search.
#[derive(Debug, Object)]
pub struct SearchIn {
    /// What to look for (1-4000 characters; a blank query finds nothing).
    #[oai(validator(min_length = 1, max_length = 4000))]
    pub query: String,
    /// How many results (1-100).
    #[oai(
        default = "default_top_k",
        validator(minimum(value = "1"), maximum(value = "100"))
    )]
    pub top_k: u32,
    /// `hybrid` (default), `vector` or `keyword`.
    #[oai(default)]
    pub mode: ModeDto,
    /// Only chunks of these documents (at most 100 ids).
    #[oai(validator(
        max_items = 100,
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub document_ids: Option<Vec<String>>,
    /// Drop results below this score (cosine for vector, BM25 for keyword, the fused
    /// score for hybrid: 0-1 by default).
    pub min_score: Option<f32>,
}

fn default_top_k() -> u32 {
    5
}

/// A chunk found, with its source for citation.
#[derive(Debug, Object)]
pub struct SearchResult {
    /// Document.
    pub document_id: String,
    /// Document title.
    pub title: String,
    /// Position of the chunk in the document.
    pub chunk_index: u32,
    /// The chunk's text.
    pub text: String,
    /// Score in the mode's scale; higher is better.
    pub score: f32,
    /// First character of the chunk in the document's text.
    pub start: u64,
    /// One past the last character.
    pub end: u64,
}

/// Search results, best first.
#[derive(Debug, Object)]
pub struct SearchOut {
    /// Results.
    pub results: Vec<SearchResult>,
}

/// `/api/v1/search`.
pub struct SearchApi {
    state: AppState,
}

impl SearchApi {
    /// Wraps the state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

#[OpenApi(tag = "Tag::Knowledge")]
impl SearchApi {
    /// Semantic, keyword or hybrid search over the tenant's ready documents.
    #[oai(path = "/api/v1/search", method = "post", operation_id = "search")]
    async fn search(
        &self,
        auth: TenantAuth,
        body: Json<SearchIn>,
    ) -> Result<Json<SearchOut>, ApiError> {
        auth.0.require(Scope::Read)?;
        let k = &self.state.knowledge;
        let b = body.0;
        let found = search::search(
            k,
            &auth.0.tenant.id,
            Query {
                text: b.query,
                top_k: b.top_k as usize,
                mode: b.mode.into(),
                document_ids: b.document_ids,
                min_score: b.min_score,
            },
        )
        .await?;
        Ok(Json(SearchOut {
            results: found
                .into_iter()
                .map(|f| SearchResult {
                    document_id: f.chunk.document_id,
                    title: f.chunk.title,
                    chunk_index: f.chunk.chunk_index,
                    text: f.chunk.text,
                    score: f.score,
                    start: f.chunk.start,
                    end: f.chunk.end,
                })
                .collect(),
        }))
    }
}
