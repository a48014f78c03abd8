//! `/api/v1/chat` and `/api/v1/chat/stream`: answers grounded in the tenant's knowledge.

use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use poem::web::sse::Event as SseEvent;
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, Tags};

use crate::api::error::{ApiError, ErrorCode};
use crate::api::security::TenantAuth;
use crate::api::state::AppState;
use crate::domain::{Event, GenError, Message, Role, Scope};
use crate::services::agents;
use crate::services::chat::{self, ChatRequest, Overrides, Prepared, RetrievalOverrides, Source};
use crate::telemetry::TenantMeter;

#[derive(Tags)]
enum Tag {
    /// Chat grounded in the tenant's knowledge.
    Chat,
}

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum RoleDto {
    /// Instructions, joined to the assistant's.
    System,
    /// The person asking.
    User,
    /// Earlier answers.
    Assistant,
}

impl From<RoleDto> for Role {
    fn from(r: RoleDto) -> Self {
        match r {
            RoleDto::System => Role::System,
            RoleDto::User => Role::User,
            RoleDto::Assistant => Role::Assistant,
        }
    }
}

/// One message of the conversation.
#[derive(Debug, Clone, Object)]
pub struct MessageIn {
    /// Who speaks.
    pub role: RoleDto,
    /// The text.
    pub content: String,
}

/// Retrieval for this chat; omitted fields keep their defaults.
#[derive(Debug, Clone, Object)]
pub struct RetrievalIn {
    /// Search the tenant's knowledge (default true).
    pub enabled: Option<bool>,
    /// Chunks given to the model, 1-20 (default 4).
    #[oai(validator(minimum(value = "1"), maximum(value = "20")))]
    pub top_k: Option<u32>,
    /// Drop chunks below this hybrid score.
    pub min_score: Option<f32>,
    /// Only chunks of these documents (at most 100 ids).
    #[oai(validator(
        max_items = 100,
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub document_ids: Option<Vec<String>>,
}

/// A chat request.
#[derive(Debug, Object)]
pub struct ChatIn {
    /// The conversation; retrieval searches for its last user message.
    #[oai(validator(min_items = 1, max_items = 256))]
    pub messages: Vec<MessageIn>,
    /// Answer as this agent (its instructions, sampling and retrieval; fields given
    /// here win). Without one, the tenant's system prompt and the defaults apply.
    pub agent_id: Option<String>,
    /// Retrieval settings.
    pub retrieval: Option<RetrievalIn>,
    /// Sampling temperature, 0-2; 0 is greedy and deterministic (default: the agent's, else 0.7).
    #[oai(validator(minimum(value = "0"), maximum(value = "2")))]
    pub temperature: Option<f64>,
    /// Nucleus sampling, 0-1 (default 0.9).
    #[oai(validator(minimum(value = "0"), maximum(value = "1")))]
    pub top_p: Option<f64>,
    /// Sampler seed (default 42).
    pub seed: Option<u64>,
    /// New tokens at most, 1-4096 (default: the agent's, else 512; never more than the
    /// context leaves).
    #[oai(validator(minimum(value = "1"), maximum(value = "4096")))]
    pub max_tokens: Option<u32>,
    /// The answer ends before any of these texts (at most 4, each 1-64 characters).
    #[oai(validator(max_items = 4, min_length = 1, max_length = 64))]
    pub stop: Option<Vec<String>>,
    /// Lowers a token's chance by this much for each time the answer used it, -2 to 2
    /// (default on the bundled model 0.3, which keeps it from looping; upstreams: theirs).
    #[oai(validator(minimum(value = "-2"), maximum(value = "2")))]
    pub frequency_penalty: Option<f32>,
    /// Lowers a token's chance by this much once the answer used it, -2 to 2 (default 0).
    #[oai(validator(minimum(value = "-2"), maximum(value = "2")))]
    pub presence_penalty: Option<f32>,
}

/// A chunk the answer may cite as `[n]`.
#[derive(Debug, Clone, Object)]
pub struct SourceOut {
    /// Its number in the prompt.
    pub n: u32,
    /// Document.
    pub document_id: String,
    /// Document title.
    pub title: String,
    /// Position of the chunk in the document.
    pub chunk_index: u32,
    /// Hybrid score.
    pub score: f32,
    /// The chunk's text.
    pub text: String,
}

/// Tokens used.
#[derive(Debug, Clone, Object)]
pub struct UsageOut {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Answer tokens.
    pub completion_tokens: u32,
    /// `stop` or `length`.
    pub finish_reason: String,
}

/// A whole answer.
#[derive(Debug, Object)]
pub struct ChatOut {
    /// The answer.
    pub text: String,
    /// The sources given to the model (empty when retrieval was off).
    pub sources: Vec<SourceOut>,
    /// Tokens used.
    pub usage: UsageOut,
}

/// An error inside a stream.
#[derive(Debug, Clone, Object)]
pub struct StreamError {
    /// Stable code.
    pub code: String,
    /// What happened.
    pub message: String,
}

/// One event of the stream: `{"sources": …}` first when retrieval ran, then
/// `{"text": …}` pieces, `{"error": …}` on failure, and finally the line `[DONE]`.
#[derive(Debug, Clone, Object)]
pub struct StreamEvent {
    /// Sources, once, before the text.
    #[oai(skip_serializing_if_is_none)]
    pub sources: Option<Vec<SourceOut>>,
    /// A piece of the answer.
    #[oai(skip_serializing_if_is_none)]
    pub text: Option<String>,
    /// A failure after the stream started.
    #[oai(skip_serializing_if_is_none)]
    pub error: Option<StreamError>,
    /// Set on the last event, sent as `[DONE]`.
    #[oai(skip)]
    pub done: bool,
}

impl StreamEvent {
    fn empty() -> Self {
        Self {
            sources: None,
            text: None,
            error: None,
            done: false,
        }
    }
}

#[derive(ApiResponse)]
enum ChatStream {
    /// Server-sent events, `data: {...}` each, ending with `data: [DONE]`.
    #[oai(status = 200)]
    Ok(
        EventStream<BoxStream<'static, StreamEvent>>,
        #[oai(header = "Cache-Control")] String,
        #[oai(header = "X-Accel-Buffering")] String,
    ),
}

/// Silence longer than this gets a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// `/api/v1/chat*`.
pub struct ChatApi {
    state: AppState,
}

impl ChatApi {
    /// Wraps the state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }

    async fn prepare(&self, auth: &TenantAuth, body: ChatIn) -> Result<Prepared, ApiError> {
        auth.0.require(Scope::Read)?;
        let tenant = &auth.0.tenant;
        let agent = match &body.agent_id {
            Some(id) => Some(
                agents::get(&self.state.core, &tenant.id, id)
                    .await?
                    .settings,
            ),
            None => None,
        };
        let messages = body
            .messages
            .into_iter()
            .map(|m| Message::new(m.role.into(), m.content))
            .collect();
        let overrides = Overrides {
            retrieval: body
                .retrieval
                .map(RetrievalIn::into_overrides)
                .unwrap_or_default(),
            temperature: body.temperature,
            top_p: body.top_p,
            seed: body.seed,
            max_tokens: body.max_tokens.map(|n| n as usize),
            stop: body.stop.unwrap_or_default(),
            frequency_penalty: body.frequency_penalty,
            presence_penalty: body.presence_penalty,
        };
        let request =
            ChatRequest::from_settings(messages, agent.as_ref(), &tenant.system_prompt, overrides);
        Ok(chat::prepare(
            &self.state.knowledge,
            &self.state.generator,
            &self.state.upstreams,
            &tenant.id,
            request,
        )
        .await?)
    }
}

impl RetrievalIn {
    fn into_overrides(self) -> RetrievalOverrides {
        RetrievalOverrides {
            enabled: self.enabled,
            top_k: self.top_k.map(|k| k as usize),
            min_score: self.min_score,
            document_ids: self.document_ids,
        }
    }
}

impl From<&Source> for SourceOut {
    fn from(s: &Source) -> Self {
        Self {
            n: s.n as u32,
            document_id: s.document_id.clone(),
            title: s.title.clone(),
            chunk_index: s.chunk_index,
            score: s.score,
            text: s.text.clone(),
        }
    }
}

fn sources_out(prepared: &Prepared) -> Vec<SourceOut> {
    prepared
        .sources
        .iter()
        .flatten()
        .map(SourceOut::from)
        .collect()
}

#[OpenApi(tag = "Tag::Chat")]
impl ChatApi {
    /// Answers the conversation's last message as one JSON object.
    #[oai(path = "/api/v1/chat", method = "post", operation_id = "chat")]
    async fn chat(&self, auth: TenantAuth, body: Json<ChatIn>) -> Result<Json<ChatOut>, ApiError> {
        let core = &self.state.core;
        let _running = core.limiter.generation(core, &auth.0.tenant.id).await?;
        let prepared = self.prepare(&auth, body.0).await?;
        let rx = chat::start(&self.state.generator, &prepared).await?;
        let (text, usage) = chat::collect(rx).await?;
        self.state.metrics.tenants().of(&auth.0.tenant).chat(&usage);
        Ok(Json(ChatOut {
            text,
            sources: sources_out(&prepared),
            usage: UsageOut {
                prompt_tokens: usage.prompt_tokens as u32,
                completion_tokens: usage.completion_tokens as u32,
                finish_reason: usage.finish_reason.as_str().to_owned(),
            },
        }))
    }

    /// Answers the conversation's last message as server-sent events, piece by piece.
    #[oai(
        path = "/api/v1/chat/stream",
        method = "post",
        operation_id = "chat_stream"
    )]
    async fn chat_stream(
        &self,
        auth: TenantAuth,
        body: Json<ChatIn>,
    ) -> Result<ChatStream, ApiError> {
        let core = &self.state.core;
        let running = core.limiter.generation(core, &auth.0.tenant.id).await?;
        let prepared = self.prepare(&auth, body.0).await?;
        let rx = chat::start(&self.state.generator, &prepared).await?;
        let head = prepared.sources.is_some().then(|| StreamEvent {
            sources: Some(sources_out(&prepared)),
            ..StreamEvent::empty()
        });
        let meter = self.state.metrics.tenants().of(&auth.0.tenant);
        let body = tokio_stream_of(rx, meter)
            .take_while(|e| std::future::ready(!e.done))
            .chain(futures_util::stream::once(async move {
                // The tenant's place among running generations is held to the end.
                drop(running);
                StreamEvent {
                    done: true,
                    ..StreamEvent::empty()
                }
            }));
        let events = futures_util::stream::iter(head).chain(body).boxed();
        let stream = EventStream::new(events)
            .keep_alive(KEEP_ALIVE)
            .to_event(|e: StreamEvent| {
                if e.done {
                    SseEvent::message("[DONE]")
                } else {
                    SseEvent::message(e.to_json_string())
                }
            });
        Ok(ChatStream::Ok(stream, "no-cache".into(), "no".into()))
    }
}

/// The generator's events as stream events; the stream ends after `Done` (whose tokens
/// `meter` counts to the tenant) or an error.
fn tokio_stream_of(
    rx: tokio::sync::mpsc::Receiver<Result<Event, GenError>>,
    meter: TenantMeter,
) -> impl futures_util::Stream<Item = StreamEvent> + Send + 'static {
    futures_util::stream::unfold((rx, false), move |(mut rx, finished)| {
        let meter = meter.clone();
        async move {
            if finished {
                return None;
            }
            let done = StreamEvent {
                done: true,
                ..StreamEvent::empty()
            };
            match rx.recv().await {
                Some(Ok(Event::Text(t))) => Some((
                    StreamEvent {
                        text: Some(t),
                        ..StreamEvent::empty()
                    },
                    (rx, false),
                )),
                Some(Ok(Event::Done(usage))) => {
                    meter.chat(&usage);
                    Some((done, (rx, true)))
                }
                None => Some((done, (rx, true))),
                Some(Err(e)) => {
                    let code = ErrorCode::of_generation(&e);
                    tracing::error!(error = %e, "generation failed mid-stream");
                    Some((
                        StreamEvent {
                            error: Some(StreamError {
                                code: code.as_str().into(),
                                message: e.to_string(),
                            }),
                            ..StreamEvent::empty()
                        },
                        (rx, true),
                    ))
                }
            }
        }
    })
}
