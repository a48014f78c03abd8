//! `POST /v1/chat/completions`: the request mapped onto the chat use-case, and its
//! answer in OpenAI's shapes: one `chat.completion`, or `chat.completion.chunk` events
//! (the role first, then text, then the finish reason with the citations, then usage
//! when asked for) and `data: [DONE]`.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use poem::web::sse::Event as SseEvent;
use poem_openapi::payload::{EventStream, Json};
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, ResponseContent};
use tokio::sync::mpsc::Receiver;

use super::OpenAiError;
use super::types::*;
use crate::api::chat::SourceOut;
use crate::api::error::{ApiError, ErrorCode};
use crate::api::state::AppState;
use crate::auth::AuthContext;
use crate::domain::{Event, FinishReason, GenError, Message, Role, Scope, Usage};
use crate::services::chat::{self, ChatRequest, Citation, Overrides, Prepared, Source};
use crate::services::models;
use crate::telemetry::TenantMeter;

/// Silence longer than this gets a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The answer's body: JSON, or server-sent events.
#[derive(ResponseContent)]
pub enum CompletionBody {
    /// `chat.completion`.
    Json(Json<ChatCompletion>),
    /// `chat.completion.chunk` events, then `data: [DONE]`.
    Stream(EventStream<BoxStream<'static, ChatCompletionChunk>>),
}

/// The answer.
#[derive(ApiResponse)]
pub enum Completion {
    /// The answer, whole or streamed.
    #[oai(status = 200)]
    Ok(CompletionBody),
}

/// What a request asks of the answer's shape.
struct Shape {
    id: String,
    created: i64,
    model: String,
    include_usage: bool,
    base_url: String,
}

/// Answers a chat completion request for the tenant `auth` names.
pub async fn complete(
    state: &AppState,
    auth: &AuthContext,
    base_url: String,
    body: ChatCompletionIn,
) -> Result<Completion, OpenAiError> {
    auth.require(Scope::Read)?;
    let core = &state.core;
    let tenant = &auth.tenant;
    let running = core.limiter.generation(core, &tenant.id).await?;
    let model = models::chat_model(
        core,
        &state.models,
        &state.upstreams,
        &tenant.id,
        &body.model,
    )
    .await
    .map_err(|e| OpenAiError::from(e).param("model"))?;
    let stream = body.stream.unwrap_or(false);
    let shape = Shape {
        id: format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
        created: core.clock.now().timestamp(),
        model: body.model.clone(),
        include_usage: body
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        base_url,
    };
    let request = ChatRequest::for_model(
        &model,
        messages(&body.messages),
        &tenant.system_prompt,
        overrides(&body),
    );
    let prepared = chat::prepare(
        &state.knowledge,
        &state.generator,
        &state.upstreams,
        &tenant.id,
        request,
    )
    .await?;
    let rx = chat::start(&state.generator, &prepared).await?;
    let sources = prepared.sources.clone().unwrap_or_default();
    let meter = state.metrics.tenants().of(tenant);
    if stream {
        let events = streamed(rx, sources, prepared.truncated, shape, running, meter);
        return Ok(Completion::Ok(CompletionBody::Stream(events)));
    }
    let (text, usage) = chat::collect(rx).await?;
    meter.chat(&usage);
    drop(running);
    Ok(Completion::Ok(CompletionBody::Json(Json(whole(
        &shape, &prepared, text, usage,
    )))))
}

fn messages(raw: &[MessageIn]) -> Vec<Message> {
    raw.iter()
        .map(|m| {
            let role = match m.role {
                RoleIn::System | RoleIn::Developer => Role::System,
                RoleIn::User => Role::User,
                RoleIn::Assistant => Role::Assistant,
            };
            Message::new(role, m.content.0.clone())
        })
        .collect()
}

fn overrides(body: &ChatCompletionIn) -> Overrides {
    Overrides {
        temperature: body.temperature,
        top_p: body.top_p,
        // OpenAI's seed is any 64-bit integer; its bits seed the sampler.
        seed: body.seed.map(|s| s as u64),
        max_tokens: body
            .max_completion_tokens
            .or(body.max_tokens)
            .map(|n| n as usize),
        stop: body.stop.clone().map(|s| s.0).unwrap_or_default(),
        frequency_penalty: body.frequency_penalty,
        presence_penalty: body.presence_penalty,
        ..Overrides::default()
    }
}

fn finish(reason: FinishReason) -> FinishReasonOut {
    match reason {
        FinishReason::Stop => FinishReasonOut::Stop,
        FinishReason::Length => FinishReasonOut::Length,
    }
}

fn usage_out(u: &Usage) -> CompletionUsage {
    CompletionUsage {
        prompt_tokens: u.prompt_tokens as u32,
        completion_tokens: u.completion_tokens as u32,
        total_tokens: (u.prompt_tokens + u.completion_tokens) as u32,
    }
}

/// The citations of an answer as OpenAI annotations.
fn annotations(text: &str, sources: &[Source], base_url: &str) -> Vec<Annotation> {
    chat::cite(text, sources)
        .into_iter()
        .map(
            |Citation {
                 source, start, end, ..
             }| {
                let s = &sources[source];
                Annotation {
                    kind: AnnotationKind::UrlCitation,
                    url_citation: UrlCitation {
                        start_index: start as u32,
                        end_index: end as u32,
                        title: s.title.clone(),
                        url: format!(
                            "{base_url}/api/v1/documents/{}/chunks/{}",
                            s.document_id, s.chunk_index
                        ),
                    },
                }
            },
        )
        .collect()
}

fn extension(sources: &[Source], truncated: bool) -> Extension {
    Extension {
        sources: sources.iter().map(SourceOut::from).collect(),
        truncated,
    }
}

fn whole(shape: &Shape, prepared: &Prepared, text: String, usage: Usage) -> ChatCompletion {
    let sources = prepared.sources.as_deref().unwrap_or(&[]);
    ChatCompletion {
        id: shape.id.clone(),
        object: CompletionObject::ChatCompletion,
        created: shape.created,
        model: shape.model.clone(),
        choices: vec![Choice {
            index: 0,
            message: MessageOut {
                role: AssistantRole::Assistant,
                annotations: annotations(&text, sources, &shape.base_url),
                content: text,
                refusal: None,
            },
            finish_reason: finish(usage.finish_reason),
            logprobs: None,
        }],
        usage: usage_out(&usage),
        ragbox: extension(sources, prepared.truncated),
    }
}

/// What the event stream carries besides chunks.
enum Wire {
    Chunk(Box<ChatCompletionChunk>),
    Raw(String),
}

impl Shape {
    fn chunk(&self, delta: Delta, finish_reason: Option<FinishReasonOut>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: ChunkObject::ChatCompletionChunk,
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
            }],
            usage: None,
            ragbox: None,
            raw: None,
        }
    }
}

/// The answer as `chat.completion.chunk` events. `running` (the tenant's place among
/// running generations) is held until the stream ends or the client leaves; the
/// tenant's series count the answer's tokens when it ends.
fn streamed(
    rx: Receiver<Result<Event, GenError>>,
    sources: Vec<Source>,
    truncated: bool,
    shape: Shape,
    running: tokio::sync::OwnedSemaphorePermit,
    meter: TenantMeter,
) -> EventStream<BoxStream<'static, ChatCompletionChunk>> {
    let include_usage = shape.include_usage;
    let first = shape.chunk(
        Delta {
            role: Some(AssistantRole::Assistant),
            content: Some(String::new()),
            annotations: None,
        },
        None,
    );
    struct Run {
        rx: Receiver<Result<Event, GenError>>,
        sources: Vec<Source>,
        truncated: bool,
        shape: Shape,
        text: String,
        pending: VecDeque<Wire>,
        ended: bool,
        meter: TenantMeter,
        _running: tokio::sync::OwnedSemaphorePermit,
    }
    let run = Run {
        rx,
        sources,
        truncated,
        shape,
        text: String::new(),
        pending: VecDeque::from([Wire::Chunk(Box::new(first))]),
        ended: false,
        meter,
        _running: running,
    };
    let wire = futures_util::stream::unfold(run, |mut run| async move {
        loop {
            if let Some(next) = run.pending.pop_front() {
                return Some((next, run));
            }
            if run.ended {
                return None;
            }
            match run.rx.recv().await {
                Some(Ok(Event::Text(t))) => {
                    run.text.push_str(&t);
                    let delta = Delta {
                        content: Some(t),
                        ..Delta::default()
                    };
                    run.pending
                        .push_back(Wire::Chunk(Box::new(run.shape.chunk(delta, None))));
                }
                Some(Ok(Event::Done(usage))) => {
                    run.meter.chat(&usage);
                    let delta = Delta {
                        annotations: Some(annotations(
                            &run.text,
                            &run.sources,
                            &run.shape.base_url,
                        )),
                        ..Delta::default()
                    };
                    let mut last = run.shape.chunk(delta, Some(finish(usage.finish_reason)));
                    last.ragbox = Some(extension(&run.sources, run.truncated));
                    run.pending.push_back(Wire::Chunk(Box::new(last)));
                    if run.shape.include_usage {
                        let mut tally = run.shape.chunk(Delta::default(), None);
                        tally.choices.clear();
                        tally.usage = Some(usage_out(&usage));
                        run.pending.push_back(Wire::Chunk(Box::new(tally)));
                    }
                    run.pending.push_back(Wire::Raw("[DONE]".into()));
                    run.ended = true;
                }
                Some(Err(e)) => {
                    tracing::error!(error = %e, "generation failed mid-stream");
                    let code = ErrorCode::of_generation(&e);
                    let (_, body) = ApiError::new(code, e.to_string()).openai_body();
                    run.pending.push_back(Wire::Raw(body.to_json_string()));
                    run.pending.push_back(Wire::Raw("[DONE]".into()));
                    run.ended = true;
                }
                None => {
                    run.pending.push_back(Wire::Raw("[DONE]".into()));
                    run.ended = true;
                }
            }
        }
    });
    // The declared item type is the chunk; raw lines ride in a chunk's skipped field.
    let items = wire
        .map(|w| match w {
            Wire::Chunk(c) => *c,
            Wire::Raw(line) => ChatCompletionChunk::raw(line),
        })
        .boxed();
    EventStream::new(items)
        .keep_alive(KEEP_ALIVE)
        .to_event(move |c: ChatCompletionChunk| {
            if let Some(line) = c.raw_line() {
                return SseEvent::message(line);
            }
            let mut json = c.to_json().unwrap_or_default();
            if !include_usage && let Some(o) = json.as_object_mut() {
                o.remove("usage");
            }
            SseEvent::message(json.to_string())
        })
}
