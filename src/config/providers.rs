//! Upstream generation providers (`[providers.NAME]`) and the name of the local one.

use serde::{Deserialize, Serialize};

use super::{Config, Secret};

/// The name of the bundled model as a provider.
pub const LOCAL_PROVIDER: &str = "local";

/// The wire protocol of an upstream provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Any server with OpenAI's streaming chat completions (`POST {base_url}/chat/completions`).
    Openai,
    /// Anthropic's Messages API (`POST {base_url}/v1/messages`).
    Anthropic,
}

/// One upstream generation provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// Wire protocol.
    pub kind: ProviderKind,
    /// Where it answers: for `openai` the URL before `/chat/completions` (often ending
    /// in `/v1`); for `anthropic` the URL before `/v1/messages` (default Anthropic's API).
    pub base_url: Option<String>,
    /// Sent as `Authorization: Bearer` (openai) or `x-api-key` (anthropic). Never logged.
    pub api_key: Option<Secret>,
    /// Model used when the agent names none.
    pub model: String,
    /// Context window (prompt and answer) the sources are fitted into.
    pub context_tokens: usize,
    /// Limit on opening the connection.
    pub connect_timeout_ms: u64,
    /// Limit on the wait for the answer's headers and between two pieces of the stream.
    pub idle_timeout_ms: u64,
    /// `anthropic-version` header (anthropic only).
    pub anthropic_version: String,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            kind: ProviderKind::Openai,
            base_url: None,
            api_key: None,
            model: String::new(),
            context_tokens: 8192,
            connect_timeout_ms: 5_000,
            idle_timeout_ms: 60_000,
            anthropic_version: "2023-06-01".into(),
        }
    }
}

impl ProviderConfig {
    /// The base URL without a trailing slash.
    pub fn base(&self) -> String {
        let base = match (&self.base_url, self.kind) {
            (Some(url), _) => url.as_str(),
            (None, ProviderKind::Anthropic) => "https://api.anthropic.com",
            (None, ProviderKind::Openai) => "",
        };
        base.trim_end_matches('/').to_owned()
    }
}

impl Config {
    /// Every provider a chat may name: `local` and the configured ones, as a list for
    /// messages ("local, a, b").
    pub fn available_providers(&self) -> String {
        self.provider_names().collect::<Vec<_>>().join(", ")
    }

    /// Every provider a chat may name: `local`, then the configured ones by name.
    pub fn provider_names(&self) -> impl Iterator<Item = &str> {
        std::iter::once(LOCAL_PROVIDER).chain(self.providers.keys().map(String::as_str))
    }
}
