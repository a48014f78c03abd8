//! The request and response bodies of the OpenAI-compatible routes, in OpenAI's own
//! shapes. Properties this server does not know are ignored, as OpenAI's clients send
//! many (`user`, `logit_bias`, …); the ones it knows are checked as declared.

use poem_openapi::{Enum, Object};

use super::oneof::{Content, StringOrList};
use crate::api::chat::SourceOut;
use crate::services::MAX_STOP_CHARS;
use crate::services::embeddings::{MAX_INPUT_CHARS, MAX_INPUTS};

/// `stop`: one text or up to four.
pub type Stop = StringOrList<0, 4, MAX_STOP_CHARS>;
/// `input` of an embeddings request: one text or a list of them.
pub type EmbeddingInput = StringOrList<1, MAX_INPUTS, MAX_INPUT_CHARS>;

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum RoleIn {
    /// Instructions.
    System,
    /// Instructions (OpenAI's newer name for `system`).
    Developer,
    /// The person asking.
    User,
    /// Earlier answers.
    Assistant,
}

/// One message of the conversation.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ChatCompletionMessageIn")]
pub struct MessageIn {
    /// Who speaks.
    pub role: RoleIn,
    /// The text, or an array of text parts.
    pub content: Content,
    /// A speaker's name; accepted and ignored.
    #[oai(validator(max_length = 256))]
    pub name: Option<String>,
}

/// Streaming options.
#[derive(Debug, Clone, Object)]
pub struct StreamOptions {
    /// Send one last chunk with `usage` (and empty `choices`) before `[DONE]`.
    pub include_usage: Option<bool>,
}

/// A chat completion request.
#[derive(Debug, Object)]
pub struct ChatCompletionIn {
    /// An agent's name (its instructions, retrieval and sampling apply), or a base model
    /// from `GET /v1/models`.
    #[oai(validator(min_length = 1, max_length = 256))]
    pub model: String,
    /// The conversation.
    #[oai(validator(min_items = 1, max_items = 256))]
    pub messages: Vec<MessageIn>,
    /// 0-2; 0 is greedy and deterministic.
    #[oai(validator(minimum(value = "0"), maximum(value = "2")))]
    pub temperature: Option<f64>,
    /// Nucleus sampling, 0-1.
    #[oai(validator(minimum(value = "0"), maximum(value = "1")))]
    pub top_p: Option<f64>,
    /// New tokens at most (`max_completion_tokens` wins when both are given).
    #[oai(validator(minimum(value = "1"), maximum(value = "4096")))]
    pub max_tokens: Option<u32>,
    /// New tokens at most.
    #[oai(validator(minimum(value = "1"), maximum(value = "4096")))]
    pub max_completion_tokens: Option<u32>,
    /// The answer ends before any of these texts.
    pub stop: Option<Stop>,
    /// Sampler seed.
    pub seed: Option<i64>,
    /// -2 to 2: lowers a token's chance for each time the answer used it (default on the
    /// bundled model 0.3, which keeps it from looping; upstreams: theirs).
    #[oai(validator(minimum(value = "-2"), maximum(value = "2")))]
    pub frequency_penalty: Option<f32>,
    /// -2 to 2: lowers a token's chance once the answer used it (default 0).
    #[oai(validator(minimum(value = "-2"), maximum(value = "2")))]
    pub presence_penalty: Option<f32>,
    /// Answer as server-sent `chat.completion.chunk` events.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Choices to generate: only 1.
    #[oai(validator(minimum(value = "1"), maximum(value = "1")))]
    pub n: Option<u32>,
}

/// Where a cited span points.
#[derive(Debug, Clone, Object)]
pub struct UrlCitation {
    /// First character of the cited span in the answer (Unicode code points).
    pub start_index: u32,
    /// One past its last character.
    pub end_index: u32,
    /// The document's title.
    pub title: String,
    /// The chunk: `…/api/v1/documents/{id}/chunks/{index}`.
    pub url: String,
}

/// The kind of an annotation.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "snake_case")]
pub enum AnnotationKind {
    /// A cited source.
    UrlCitation,
}

/// A span of the answer that rests on a source.
#[derive(Debug, Clone, Object)]
pub struct Annotation {
    /// `url_citation`.
    #[oai(rename = "type")]
    pub kind: AnnotationKind,
    /// The citation.
    pub url_citation: UrlCitation,
}

/// The assistant's role.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum AssistantRole {
    /// The model.
    Assistant,
}

/// The answer.
#[derive(Debug, Clone, Object)]
#[oai(rename = "ChatCompletionMessageOut")]
pub struct MessageOut {
    /// `assistant`.
    pub role: AssistantRole,
    /// The text.
    pub content: String,
    /// Always null: ragbox does not refuse by policy.
    pub refusal: Option<String>,
    /// Spans of the answer and the sources they rest on.
    pub annotations: Vec<Annotation>,
}

/// Why the answer ended.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum FinishReasonOut {
    /// End of turn or a stop text.
    Stop,
    /// The token limit or the context's end.
    Length,
}

/// One answer.
#[derive(Debug, Clone, Object)]
pub struct Choice {
    /// Always 0.
    pub index: u32,
    /// The answer.
    pub message: MessageOut,
    /// Why it ended.
    pub finish_reason: FinishReasonOut,
    /// Always null.
    pub logprobs: Option<String>,
}

/// Tokens used.
#[derive(Debug, Clone, Object)]
pub struct CompletionUsage {
    /// Prompt tokens (estimated with the local tokenizer for upstreams that do not say).
    pub prompt_tokens: u32,
    /// Answer tokens.
    pub completion_tokens: u32,
    /// Both.
    pub total_tokens: u32,
}

/// ragbox's additions, which standard clients ignore.
#[derive(Debug, Clone, Object)]
pub struct Extension {
    /// The chunks given to the model, numbered as the answer cites them (empty when the
    /// model's agent does not retrieve).
    pub sources: Vec<SourceOut>,
    /// Whether the conversation was cut to fit the model's context (oldest turns first).
    pub truncated: bool,
}

/// `chat.completion`.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "snake_case")]
pub enum CompletionObject {
    /// A whole answer.
    #[oai(rename = "chat.completion")]
    ChatCompletion,
}

/// A whole answer.
#[derive(Debug, Clone, Object)]
pub struct ChatCompletion {
    /// `chatcmpl-…`.
    pub id: String,
    /// `chat.completion`.
    pub object: CompletionObject,
    /// Unix seconds.
    pub created: i64,
    /// The model as asked for.
    pub model: String,
    /// One answer.
    pub choices: Vec<Choice>,
    /// Tokens used.
    pub usage: CompletionUsage,
    /// Sources, in full.
    pub ragbox: Extension,
}

/// What a chunk adds to the answer.
#[derive(Debug, Clone, Default, Object)]
pub struct Delta {
    /// `assistant`, on the first chunk only.
    #[oai(skip_serializing_if_is_none)]
    pub role: Option<AssistantRole>,
    /// More text.
    #[oai(skip_serializing_if_is_none)]
    pub content: Option<String>,
    /// The citations, on the chunk that ends the answer.
    #[oai(skip_serializing_if_is_none)]
    pub annotations: Option<Vec<Annotation>>,
}

/// One choice's part of a chunk.
#[derive(Debug, Clone, Object)]
pub struct ChunkChoice {
    /// Always 0.
    pub index: u32,
    /// What it adds.
    pub delta: Delta,
    /// Set on the chunk that ends the answer.
    pub finish_reason: Option<FinishReasonOut>,
}

/// `chat.completion.chunk`.
#[derive(Debug, Clone, Copy, Enum)]
pub enum ChunkObject {
    /// A piece of a streamed answer.
    #[oai(rename = "chat.completion.chunk")]
    ChatCompletionChunk,
}

/// One event of a streamed answer.
#[derive(Debug, Clone, Object)]
pub struct ChatCompletionChunk {
    /// The same on every chunk of one answer.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: ChunkObject,
    /// Unix seconds.
    pub created: i64,
    /// The model as asked for.
    pub model: String,
    /// One entry, or none on the usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Set on the usage chunk; null on the others when usage was asked for, absent
    /// when it was not.
    pub usage: Option<CompletionUsage>,
    /// Sources in full, on the chunk that ends the answer.
    #[oai(skip_serializing_if_is_none)]
    pub ragbox: Option<Extension>,
    /// A line sent as it is instead of this chunk (`[DONE]`, an error).
    #[oai(skip)]
    pub raw: Option<String>,
}

impl ChatCompletionChunk {
    /// An event that sends `line` as it is.
    pub fn raw(line: String) -> Self {
        Self {
            id: String::new(),
            object: ChunkObject::ChatCompletionChunk,
            created: 0,
            model: String::new(),
            choices: Vec::new(),
            usage: None,
            ragbox: None,
            raw: Some(line),
        }
    }

    /// The line to send instead of this chunk, if any.
    pub fn raw_line(&self) -> Option<&str> {
        self.raw.as_deref()
    }
}

/// How vectors are encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum EncodingFormat {
    /// Arrays of numbers.
    #[default]
    Float,
    /// Little-endian f32 bytes, base64.
    Base64,
}

/// An embeddings request.
#[derive(Debug, Object)]
pub struct EmbeddingsIn {
    /// One text or a list of texts (token arrays are not accepted).
    pub input: EmbeddingInput,
    /// The embedding model's name (`GET /v1/models`).
    #[oai(validator(min_length = 1, max_length = 256))]
    pub model: String,
    /// `float` (default) or `base64`.
    pub encoding_format: Option<EncodingFormat>,
    /// Must be the model's own width (384) when given; vectors are not shortened.
    #[oai(validator(minimum(value = "384"), maximum(value = "384")))]
    pub dimensions: Option<u32>,
}

/// A vector, as numbers or base64.
#[derive(Debug, Clone, poem_openapi::Union)]
#[oai(one_of)]
pub enum Vector {
    /// `float`.
    Float(Vec<f32>),
    /// `base64`.
    Base64(String),
}

/// `embedding`.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum EmbeddingObject {
    /// One vector.
    Embedding,
}

/// One input's vector.
#[derive(Debug, Clone, Object)]
pub struct Embedding {
    /// `embedding`.
    pub object: EmbeddingObject,
    /// Its input's position.
    pub index: u32,
    /// The vector (unit length).
    pub embedding: Vector,
}

/// Tokens read.
#[derive(Debug, Clone, Object)]
pub struct EmbeddingUsage {
    /// Tokens read, special tokens included.
    pub prompt_tokens: u32,
    /// The same.
    pub total_tokens: u32,
}

/// `list`.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum ListObject {
    /// A list.
    List,
}

/// The vectors, in input order.
#[derive(Debug, Clone, Object)]
pub struct EmbeddingsOut {
    /// `list`.
    pub object: ListObject,
    /// One per input.
    pub data: Vec<Embedding>,
    /// The model's name.
    pub model: String,
    /// Tokens read.
    pub usage: EmbeddingUsage,
}

/// `model`.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "lowercase")]
pub enum ModelObject {
    /// A model.
    Model,
}

/// A model the tenant can name.
#[derive(Debug, Clone, Object)]
pub struct ModelOut {
    /// The name to send as `model`.
    pub id: String,
    /// `model`.
    pub object: ModelObject,
    /// Unix seconds: the agent's creation, or the server's start.
    pub created: i64,
    /// The tenant's slug for its agents; `ragbox` for the base models.
    pub owned_by: String,
    /// ragbox's addition: `agent`, `chat` or `embedding`.
    pub kind: String,
}

/// The models.
#[derive(Debug, Clone, Object)]
pub struct ModelsOut {
    /// `list`.
    pub object: ListObject,
    /// Agents by name, then the base models.
    pub data: Vec<ModelOut>,
}
