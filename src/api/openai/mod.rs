//! The OpenAI-compatible surface under `/v1`: `models`, `chat/completions` (whole or
//! streamed) and `embeddings`, with a tenant key as the bearer token and errors in
//! OpenAI's shape, so the official SDKs and the tools built on them work unchanged.
//! Citations travel in OpenAI's own `message.annotations`; the full sources in one
//! `ragbox` object that standard clients ignore.

mod chat;
mod error;
pub mod oneof;
pub mod types;

use base64::Engine;
use poem::Request;
use poem_openapi::payload::Json;
use poem_openapi::{OpenApi, Tags};

use crate::api::security::TenantAuth;
use crate::api::state::AppState;
use crate::domain::Scope;
use crate::services::{embeddings, models};
pub use error::OpenAiError;
use types::*;

#[derive(Tags)]
enum Tag {
    /// OpenAI-compatible routes: point an OpenAI SDK at `<server>/v1` with a tenant key.
    OpenAi,
}

/// `/v1/*`.
pub struct OpenAiApi {
    state: AppState,
}

impl OpenAiApi {
    /// Wraps the state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

#[OpenApi(prefix_path = "/v1", tag = "Tag::OpenAi")]
impl OpenAiApi {
    /// The models this tenant can name: its agents, the bundled and upstream chat
    /// models, and the embedding model.
    #[oai(path = "/models", method = "get", operation_id = "openai_list_models")]
    async fn models(&self, auth: TenantAuth) -> Result<Json<ModelsOut>, OpenAiError> {
        auth.0.require(Scope::Read)?;
        let tenant = &auth.0.tenant;
        let entries = models::list(
            &self.state.core,
            &self.state.models,
            &self.state.upstreams,
            &tenant.id,
        )
        .await?;
        let data = entries
            .into_iter()
            .map(|e| {
                let (owned_by, kind) = match e.kind {
                    models::Kind::Agent => (tenant.slug.to_string(), "agent"),
                    models::Kind::Chat => ("ragbox".to_owned(), "chat"),
                    models::Kind::Embedding => ("ragbox".to_owned(), "embedding"),
                };
                ModelOut {
                    id: e.id,
                    object: ModelObject::Model,
                    created: e.created.timestamp(),
                    owned_by,
                    kind: kind.to_owned(),
                }
            })
            .collect();
        Ok(Json(ModelsOut {
            object: ListObject::List,
            data,
        }))
    }

    /// Answers a conversation as an agent or a base model; with `stream: true` as
    /// server-sent `chat.completion.chunk` events ending with `data: [DONE]`.
    #[oai(
        path = "/chat/completions",
        method = "post",
        operation_id = "openai_chat_completions"
    )]
    async fn chat_completions(
        &self,
        auth: TenantAuth,
        req: &Request,
        body: Json<ChatCompletionIn>,
    ) -> Result<chat::Completion, OpenAiError> {
        chat::complete(&self.state, &auth.0, base_url(req), body.0).await
    }

    /// Embeds one text or a list of texts with the embedding model.
    #[oai(
        path = "/embeddings",
        method = "post",
        operation_id = "openai_embeddings"
    )]
    async fn embeddings(
        &self,
        auth: TenantAuth,
        body: Json<EmbeddingsIn>,
    ) -> Result<Json<EmbeddingsOut>, OpenAiError> {
        auth.0.require(Scope::Read)?;
        let body = body.0;
        models::embedding_model(&self.state.models, &body.model)
            .map_err(|e| OpenAiError::from(e).param("model"))?;
        let done = embeddings::embed(&self.state.knowledge.embedder, body.input.0).await?;
        self.state
            .metrics
            .tenants()
            .of(&auth.0.tenant)
            .embedded(done.prompt_tokens);
        let base64 = body.encoding_format == Some(EncodingFormat::Base64);
        let data = done
            .vectors
            .into_iter()
            .enumerate()
            .map(|(i, v)| Embedding {
                object: EmbeddingObject::Embedding,
                index: i as u32,
                embedding: if base64 {
                    Vector::Base64(encode_f32(&v))
                } else {
                    Vector::Float(v)
                },
            })
            .collect();
        let tokens = done.prompt_tokens as u32;
        Ok(Json(EmbeddingsOut {
            object: ListObject::List,
            data,
            model: body.model,
            usage: EmbeddingUsage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            },
        }))
    }
}

/// A vector as OpenAI's `base64` encoding: its f32 values' little-endian bytes.
fn encode_f32(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// This server's address as the client reached it (`X-Forwarded-Proto` and `Host`),
/// for citation URLs; empty (URLs then start with `/`) when the request names no host.
fn base_url(req: &Request) -> String {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let host = header("host").or_else(|| req.uri().authority().map(|a| a.as_str()));
    let Some(host) = host.filter(|h| {
        h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    }) else {
        return String::new();
    };
    let scheme = match header("x-forwarded-proto") {
        Some("https") => "https",
        _ => "http",
    };
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_vectors_are_little_endian_f32() {
        let s = encode_f32(&[1.0, -0.5]);
        let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        assert_eq!(bytes, [0, 0, 128, 63, 0, 0, 0, 191]);
    }

    #[test]
    fn the_base_url_comes_from_the_host_and_never_from_odd_bytes() {
        let req = Request::builder()
            .header("host", "rag.example:8080")
            .header("x-forwarded-proto", "https")
            .finish();
        assert_eq!(base_url(&req), "https://rag.example:8080");
        let req = Request::builder().header("host", "a\"b").finish();
        assert_eq!(base_url(&req), "");
    }
}
