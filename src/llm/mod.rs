//! Generation providers beside the bundled model (`crate::ml::generator`): any
//! OpenAI-compatible server and Anthropic's Messages API, both streamed. An upstream
//! answer arrives as the same events as the local model's, so chat handles both alike.

pub mod anthropic;
pub mod openai;
pub mod sse;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;

use crate::config::{Config, LOCAL_PROVIDER, ProviderConfig, ProviderKind};
use crate::domain::{Event, FinishReason, GenError, Message, Sampling, Usage};
use sse::{SseEvent, SseParser};

/// Pieces of text buffered between an upstream and a slow client.
const CHANNEL: usize = 64;

/// Bytes of an upstream's error body kept for the message.
const ERROR_BODY_LIMIT: usize = 4096;

/// The configured upstreams and which provider is the default.
#[derive(Clone)]
pub struct Upstreams {
    by_name: Arc<BTreeMap<String, Upstream>>,
    default: String,
    /// `local` and the configured names, for messages.
    available: Arc<str>,
}

impl Upstreams {
    /// Builds a client for each `[providers.NAME]`.
    pub fn from_config(config: &Config) -> Result<Self, GenError> {
        let mut by_name = BTreeMap::new();
        for (name, p) in &config.providers {
            by_name.insert(name.clone(), Upstream::new(name, p)?);
        }
        Ok(Self {
            by_name: Arc::new(by_name),
            default: config.generation.provider.clone(),
            available: config.available_providers().into(),
        })
    }

    /// The provider used when an agent names none.
    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// Each configured provider's name and default model, by name.
    pub fn defaults(&self) -> impl Iterator<Item = (&str, &str)> {
        self.by_name
            .iter()
            .map(|(name, u)| (name.as_str(), u.0.config.model.as_str()))
    }

    /// The upstream a provider name means; `Ok(None)` is the bundled model, `None`
    /// the default. An unknown name is an error naming the available ones.
    pub fn route(&self, provider: Option<&str>) -> Result<Option<Upstream>, String> {
        let name = provider.unwrap_or(&self.default);
        if name == LOCAL_PROVIDER {
            return Ok(None);
        }
        self.by_name.get(name).cloned().map(Some).ok_or_else(|| {
            format!(
                "provider `{name}` is not configured on this server (available: {})",
                self.available
            )
        })
    }
}

/// One upstream provider: its settings and an HTTP client; cheap to clone.
#[derive(Clone)]
pub struct Upstream(Arc<UpstreamInner>);

struct UpstreamInner {
    name: String,
    config: ProviderConfig,
    base: String,
    client: reqwest::Client,
}

/// What one event of an upstream stream meant.
#[derive(Debug, PartialEq)]
pub enum Piece {
    /// Text of the answer.
    Text(String),
    /// Bookkeeping (usage, a finish reason, keep-alive): nothing to forward.
    Nothing,
    /// The answer is complete.
    End,
    /// The upstream reported a failure inside the stream.
    Failed(String),
}

/// Usage and finish reason as reported along the stream.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    /// Prompt tokens, when the upstream said.
    pub prompt_tokens: Option<usize>,
    /// Answer tokens, when the upstream said.
    pub completion_tokens: Option<usize>,
    /// Why the answer ended, when the upstream said.
    pub finish_reason: Option<FinishReason>,
}

impl Upstream {
    fn new(name: &str, config: &ProviderConfig) -> Result<Self, GenError> {
        // No redirects: a 3xx would carry the provider's key to wherever it points.
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| GenError::Load(format!("provider `{name}`: {e}")))?;
        Ok(Self(Arc::new(UpstreamInner {
            name: name.to_owned(),
            base: config.base(),
            config: config.clone(),
            client,
        })))
    }

    /// The provider's name in the configuration.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Context window the prompt and answer must fit.
    pub fn context_tokens(&self) -> usize {
        self.0.config.context_tokens
    }

    /// The model to ask for: the agent's, else the provider's default.
    pub fn model(&self, requested: Option<&str>) -> String {
        requested
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .unwrap_or(&self.0.config.model)
            .to_owned()
    }

    fn idle(&self) -> Duration {
        Duration::from_millis(self.0.config.idle_timeout_ms)
    }

    fn failure(&self, status: Option<u16>, what: impl std::fmt::Display) -> GenError {
        let message = match status {
            Some(s) => format!("upstream `{}` answered {s}: {what}", self.0.name),
            None => format!("upstream `{}`: {what}", self.0.name),
        };
        tracing::warn!(provider = %self.0.name, status, error = %what, "upstream generation failed");
        GenError::Upstream { status, message }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let c = &self.0.config;
        let mut req = self
            .0
            .client
            .request(method, format!("{}{path}", self.0.base));
        match c.kind {
            ProviderKind::Openai => {
                if let Some(key) = &c.api_key {
                    req = req.bearer_auth(key.expose());
                }
            }
            ProviderKind::Anthropic => {
                if let Some(key) = &c.api_key {
                    req = req.header("x-api-key", key.expose());
                }
                req = req.header("anthropic-version", &c.anthropic_version);
            }
        }
        req
    }

    /// Sends the conversation and waits for the answer's headers; a refusal, an
    /// unreachable server or silence past the idle timeout is an error carrying the
    /// upstream status when there was one. The answer then streams into the receiver;
    /// dropping it closes the upstream connection. `prompt_tokens` is the local estimate
    /// reported when the upstream gives no usage.
    pub async fn start(
        &self,
        model: &str,
        messages: &[Message],
        sampling: &Sampling,
        prompt_tokens: usize,
    ) -> Result<mpsc::Receiver<Result<Event, GenError>>, GenError> {
        let (path, body) = match self.0.config.kind {
            ProviderKind::Openai => ("/chat/completions", openai::body(model, messages, sampling)),
            ProviderKind::Anthropic => ("/v1/messages", anthropic::body(model, messages, sampling)),
        };
        let send = self
            .request(reqwest::Method::POST, path)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&body)
            .send();
        let response = match tokio::time::timeout(self.idle(), send).await {
            Err(_) => {
                return Err(self.failure(
                    None,
                    format!("no answer within {} ms", self.0.config.idle_timeout_ms),
                ));
            }
            Ok(Err(e)) => return Err(self.failure(None, describe(e))),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if !status.is_success() {
            let detail = self.error_detail(response).await;
            return Err(self.failure(Some(status.as_u16()), detail));
        }
        let (tx, rx) = mpsc::channel(CHANNEL);
        let upstream = self.clone();
        tokio::spawn(async move {
            upstream.pump(response, tx, prompt_tokens).await;
        });
        Ok(rx)
    }

    /// The message of an error answer: the JSON `error.message` both APIs use, else
    /// the start of the body.
    async fn error_detail(&self, response: reqwest::Response) -> String {
        let body = match tokio::time::timeout(self.idle(), response.bytes()).await {
            Ok(Ok(b)) => b,
            _ => return "no readable error body".into(),
        };
        let body = &body[..body.len().min(ERROR_BODY_LIMIT)];
        let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let message = json.as_ref().and_then(|j| {
            j["error"]["message"]
                .as_str()
                .or_else(|| j["error"].as_str())
                .or_else(|| j["detail"].as_str())
                .map(str::to_owned)
        });
        message.unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned())
    }

    /// Reads the event stream into the channel until the end, a failure, or the
    /// receiver is dropped.
    async fn pump(
        &self,
        response: reqwest::Response,
        tx: mpsc::Sender<Result<Event, GenError>>,
        prompt_estimate: usize,
    ) {
        let mut bytes = response.bytes_stream();
        let mut parser = SseParser::default();
        let mut tally = Tally::default();
        let mut pieces = 0usize;
        let kind = self.0.config.kind;
        loop {
            let chunk = tokio::select! {
                _ = tx.closed() => return, // the client left: drop the connection
                next = tokio::time::timeout(self.idle(), bytes.next()) => next,
            };
            let events: Vec<SseEvent> = match chunk {
                Err(_) => {
                    let e = self.failure(
                        None,
                        format!("no data within {} ms", self.0.config.idle_timeout_ms),
                    );
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Ok(None) => {
                    let e = self.failure(None, "the stream ended before the answer was complete");
                    let _ = tx.send(Err(e)).await;
                    return;
                }
                Ok(Some(Err(e))) => {
                    let _ = tx.send(Err(self.failure(None, describe(e)))).await;
                    return;
                }
                Ok(Some(Ok(b))) => match parser.push(&b) {
                    Ok(events) => events,
                    Err(e) => {
                        let _ = tx.send(Err(self.failure(None, e))).await;
                        return;
                    }
                },
            };
            for event in events {
                let piece = match kind {
                    ProviderKind::Openai => openai::decode(&event, &mut tally),
                    ProviderKind::Anthropic => anthropic::decode(&event, &mut tally),
                };
                match piece {
                    Piece::Text(t) if t.is_empty() => {}
                    Piece::Text(t) => {
                        pieces += 1;
                        if tx.send(Ok(Event::Text(t))).await.is_err() {
                            return;
                        }
                    }
                    Piece::Nothing => {}
                    Piece::End => {
                        let usage = Usage {
                            prompt_tokens: tally.prompt_tokens.unwrap_or(prompt_estimate),
                            completion_tokens: tally.completion_tokens.unwrap_or(pieces),
                            finish_reason: tally.finish_reason.unwrap_or(FinishReason::Stop),
                        };
                        let _ = tx.send(Ok(Event::Done(usage))).await;
                        return;
                    }
                    Piece::Failed(m) => {
                        let _ = tx.send(Err(self.failure(None, m))).await;
                        return;
                    }
                }
            }
        }
    }

    /// Whether the upstream answers: its model list, under the idle timeout.
    pub async fn probe(&self) -> Result<String, String> {
        let path = match self.0.config.kind {
            ProviderKind::Openai => "/models",
            ProviderKind::Anthropic => "/v1/models",
        };
        let send = self.request(reqwest::Method::GET, path).send();
        match tokio::time::timeout(self.idle(), send).await {
            Err(_) => Err(format!("upstream `{}` did not answer", self.0.name)),
            Ok(Err(e)) => Err(format!("upstream `{}`: {}", self.0.name, describe(e))),
            Ok(Ok(r)) if r.status().is_success() => Ok(format!(
                "upstream `{}` reachable, model {}",
                self.0.name, self.0.config.model
            )),
            Ok(Ok(r)) => Err(format!(
                "upstream `{}` answered {}",
                self.0.name,
                r.status().as_u16()
            )),
        }
    }
}

/// A transport error in words, without the request's headers or URL: a URL may hold
/// credentials (`https://user:key@host/…`, `?key=…`), so none reaches a message or log.
fn describe(e: reqwest::Error) -> String {
    if e.is_connect() {
        "unreachable (connection failed)".into()
    } else if e.is_timeout() {
        "timed out".into()
    } else {
        let e = e.without_url();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        text
    }
}
