//! Chat grounded in the tenant's knowledge: the last user message is searched (hybrid),
//! the chunks found go into the prompt as numbered sources within a token budget that
//! fits the model's context, and the model is asked to cite them as [n].

mod citations;
mod fit;
mod messages;
mod request;

use super::search::{self, Mode, Query};
use super::{Knowledge, ServiceError, blocking};
use crate::domain::{Event, GenError, Message, Role, Sampling, TenantId};
use crate::llm::{Upstream, Upstreams};
use crate::ml::Generator;

pub use citations::{Citation, cite};
pub use messages::MAX_MESSAGES;
use messages::validate;
pub use request::{
    ChatRequest, DEFAULT_LOCAL_FREQUENCY_PENALTY, DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K, Overrides, Retrieval, RetrievalOverrides,
};

/// A chunk given to the model as source `[n]`.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its number in the prompt.
    pub n: usize,
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

/// Who answers a prepared chat, with what it needs.
pub enum Target {
    /// The bundled model, with the prompt tokenized.
    Local {
        /// The rendered prompt's tokens.
        prompt: Vec<u32>,
    },
    /// An upstream provider, with the messages it is sent.
    Upstream {
        /// The provider.
        upstream: Upstream,
        /// The model asked for.
        model: String,
        /// Instructions with sources, then the conversation.
        messages: Vec<Message>,
        /// The local estimate of the prompt's tokens.
        prompt_tokens: usize,
    },
}

/// A chat ready to run: its sources and prompt.
pub struct Prepared {
    /// Sources put in the prompt; `None` when retrieval was off.
    pub sources: Option<Vec<Source>>,
    /// Who answers.
    pub target: Target,
    /// Sampling, with `max_tokens` fitted to the context left.
    pub sampling: Sampling,
    /// Whether the conversation was cut to fit the context.
    pub truncated: bool,
}

/// The context window and the token count of messages, for the model that answers.
/// Upstream models are counted with the local tokenizer: an estimate, kept on the safe
/// side by a margin per message.
struct Budget<'a> {
    generator: &'a Generator,
    upstream: Option<&'a Upstream>,
}

impl Budget<'_> {
    fn context(&self) -> usize {
        match self.upstream {
            Some(u) => u.context_tokens(),
            None => self.generator.context_tokens(),
        }
    }

    /// Tokens of a conversation as the target will see it; tokenizing runs off the
    /// async runtime.
    async fn count(&self, messages: Vec<Message>) -> Result<usize, ServiceError> {
        let generator = self.generator.clone();
        let upstream = self.upstream.is_some();
        blocking(move || {
            if upstream {
                return Ok(messages
                    .iter()
                    .map(|m| generator.count_tokens(&m.content) + 8)
                    .sum::<usize>()
                    + 8);
            }
            local_prompt(&generator, &messages).map(|p| p.len())
        })
        .await?
    }
}

/// The bundled model's prompt: the chat template rendered, then tokenized.
fn local_prompt(generator: &Generator, messages: &[Message]) -> Result<Vec<u32>, ServiceError> {
    generator
        .tokenize(&generator.render(messages).map_err(gen_error)?)
        .map_err(gen_error)
}

/// Bytes of text per token of context that a conversation may bring before it is
/// tokenized (no tokenizer packs more): beyond that it is cut by bytes first.
const MAX_BYTES_PER_TOKEN: usize = 32;

/// Tokens kept free for the answer when the request does not say.
const MIN_ANSWER_TOKENS: usize = 16;

/// Checks the messages, retrieves sources and builds the prompt. Everything that can
/// be refused is refused here (422), before any answer starts.
pub async fn prepare(
    k: &Knowledge,
    generator: &Generator,
    upstreams: &Upstreams,
    tenant: &TenantId,
    req: ChatRequest,
) -> Result<Prepared, ServiceError> {
    let ChatRequest {
        messages,
        system_prompt,
        retrieval,
        mut sampling,
        provider,
        model,
    } = req;
    validate(&messages)?;
    super::check_stops(&sampling.stop)?;
    for (field, value) in [
        ("frequency_penalty", sampling.frequency_penalty),
        ("presence_penalty", sampling.presence_penalty),
    ] {
        if value.is_some_and(|v| !(-2.0..=2.0).contains(&v)) {
            return Err(ServiceError::Invalid(format!(
                "{field} must be between -2 and 2"
            )));
        }
    }
    super::check_document_ids("retrieval.document_ids", retrieval.document_ids.as_deref())?;
    let upstream = upstreams
        .route(provider.as_deref())
        .map_err(ServiceError::Invalid)?;
    let budget = Budget {
        generator,
        upstream: upstream.as_ref(),
    };
    let question = messages::question(&messages).map(str::to_owned);
    let context = budget.context();
    // Too long for the context: cut to fit (see `fit`), leaving room for an answer.
    let mut conv = fit::Conversation {
        system_prompt,
        messages,
    };
    let (bare_tokens, truncated) = fit::fit(
        &budget,
        &mut conv,
        context.saturating_sub(MIN_ANSWER_TOKENS),
        context * MAX_BYTES_PER_TOKEN,
    )
    .await?;
    if truncated {
        tracing::info!(
            tokens = bare_tokens,
            context,
            "conversation cut to fit the context"
        );
    }
    let fit::Conversation {
        system_prompt,
        mut messages,
    } = conv;
    let answer_room = sampling.max_tokens.min(context - bare_tokens).max(1);

    let sources = if retrieval.enabled {
        let found = match &question {
            None => Vec::new(),
            Some(question) => {
                search::search(
                    k,
                    tenant,
                    Query {
                        text: question.chars().take(4000).collect(),
                        top_k: retrieval.top_k.clamp(1, 100),
                        mode: Mode::Hybrid,
                        document_ids: retrieval.document_ids.clone(),
                        min_score: retrieval.min_score,
                    },
                )
                .await?
            }
        };
        // Sources are added in rank order while they fit beside the conversation and
        // the answer.
        let mut budget = context.saturating_sub(bare_tokens + answer_room + 64);
        let mut kept = Vec::new();
        for f in found {
            let cost = generator.count_tokens(&f.chunk.text) + 16;
            if cost > budget {
                break;
            }
            budget -= cost;
            kept.push(Source {
                n: kept.len() + 1,
                document_id: f.chunk.document_id,
                title: f.chunk.title,
                chunk_index: f.chunk.chunk_index,
                score: f.score,
                text: f.chunk.text,
            });
        }
        Some(kept)
    } else {
        None
    };

    messages = conversation(&system_prompt, sources.as_deref().unwrap_or(&[]), &messages);
    let target = match &upstream {
        None => {
            let (g, m) = (generator.clone(), messages);
            Target::Local {
                prompt: blocking(move || local_prompt(&g, &m)).await??,
            }
        }
        Some(upstream) => Target::Upstream {
            prompt_tokens: budget.count(messages.clone()).await?,
            model: upstream.model(model.as_deref()),
            upstream: upstream.clone(),
            messages,
        },
    };
    let prompt_tokens = match &target {
        Target::Local { prompt } => prompt.len(),
        Target::Upstream { prompt_tokens, .. } => *prompt_tokens,
    };
    sampling.max_tokens = answer_room.min(context.saturating_sub(prompt_tokens).max(1));
    if matches!(target, Target::Local { .. }) {
        sampling
            .frequency_penalty
            .get_or_insert(DEFAULT_LOCAL_FREQUENCY_PENALTY);
    }
    Ok(Prepared {
        sources,
        target,
        sampling,
        truncated,
    })
}

/// The messages the model sees: one system message (instructions, then the numbered
/// sources), then the conversation without the caller's own system messages, whose
/// text joins the instructions.
fn conversation(system_prompt: &str, sources: &[Source], messages: &[Message]) -> Vec<Message> {
    let mut system = system_prompt.trim().to_owned();
    for m in messages.iter().filter(|m| m.role == Role::System) {
        if !system.is_empty() {
            system.push_str("\n\n");
        }
        system.push_str(m.content.trim());
    }
    if !sources.is_empty() {
        if !system.is_empty() {
            system.push_str("\n\n");
        }
        system.push_str(
            "Answer from the numbered sources below. Cite the sources you use as [n]. \
             If they do not hold the answer, say so.\n",
        );
        for s in sources {
            system.push_str(&format!("\n[{}] {}\n{}\n", s.n, s.title, s.text.trim()));
        }
    }
    let mut out = Vec::with_capacity(messages.len() + 1);
    if !system.is_empty() {
        out.push(Message::new(Role::System, system));
    }
    out.extend(messages.iter().filter(|m| m.role != Role::System).cloned());
    out
}

/// Starts the answer: on the bundled model (a full queue is refused, 429) or at the
/// upstream, whose refusal or silence before the first byte is a 502.
pub async fn start(
    generator: &Generator,
    prepared: &Prepared,
) -> Result<tokio::sync::mpsc::Receiver<Result<Event, GenError>>, ServiceError> {
    match &prepared.target {
        Target::Local { prompt } => generator
            .generate(prompt.clone(), prepared.sampling.clone())
            .map_err(gen_error),
        Target::Upstream {
            upstream,
            model,
            messages,
            prompt_tokens,
        } => upstream
            .start(model, messages, &prepared.sampling, *prompt_tokens)
            .await
            .map_err(gen_error),
    }
}

/// Waits for a whole answer: its text and usage.
pub async fn collect(
    mut rx: tokio::sync::mpsc::Receiver<Result<Event, GenError>>,
) -> Result<(String, crate::domain::Usage), ServiceError> {
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event {
            Ok(Event::Text(t)) => text.push_str(&t),
            Ok(Event::Done(usage)) => return Ok((text, usage)),
            Err(e) => return Err(gen_error(e)),
        }
    }
    Err(ServiceError::Internal(
        "the generator stopped without finishing".into(),
    ))
}

/// Maps generator errors to service errors.
pub fn gen_error(e: GenError) -> ServiceError {
    match e {
        GenError::Busy => ServiceError::RateLimited("the generator is busy; retry shortly".into()),
        GenError::TooLong(m) => ServiceError::Invalid(m),
        GenError::Upstream { message, .. } => ServiceError::Upstream(message),
        // The bundled model is not there to answer: a service condition, not a bug.
        GenError::Load(m) => ServiceError::Busy(format!("the local model is unavailable: {m}")),
        other => ServiceError::Internal(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, content: &str) -> Message {
        Message::new(role, content)
    }

    #[test]
    fn sources_are_numbered_into_one_system_message() {
        let sources = vec![Source {
            n: 1,
            document_id: "d".into(),
            title: "Refunds".into(),
            chunk_index: 0,
            score: 0.5,
            text: "Refunds within 14 days.".into(),
        }];
        let out = conversation(
            "You are Acme's assistant.",
            &sources,
            &[
                msg(Role::System, "Be brief."),
                msg(Role::User, "Refund window?"),
            ],
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].role, Role::System);
        assert!(
            out[0]
                .content
                .starts_with("You are Acme's assistant.\n\nBe brief.")
        );
        assert!(
            out[0]
                .content
                .contains("[1] Refunds\nRefunds within 14 days.")
        );
        assert_eq!(out[1].content, "Refund window?");
    }
}
