//! What one chat asks for: the request's own choices over the agent's settings over
//! the defaults, merged once here for the HTTP API and the CLI alike.

use crate::domain::{Message, Sampling};
use crate::services::models::ChatModel;
use crate::store::agents::AgentSettings;

/// Sampling temperature when neither the request nor an agent sets one.
pub const DEFAULT_TEMPERATURE: f64 = 0.7;
/// New tokens at most when neither the request nor an agent sets a limit.
pub const DEFAULT_MAX_TOKENS: usize = 512;
/// Nucleus sampling when the request does not set it (agents do not).
pub const DEFAULT_TOP_P: f64 = 0.9;
/// Sampler seed when the request does not set one (agents do not).
pub const DEFAULT_SEED: u64 = 42;
/// Chunks put in the prompt when neither the request nor an agent says.
pub const DEFAULT_TOP_K: usize = 4;
/// Frequency penalty of the bundled model when the request does not set one: enough
/// that a small model at temperature 0 leaves a phrase it would otherwise repeat
/// without end, small enough that a grounded answer still quotes its sources. Upstream
/// providers get only the penalties a request sets.
pub const DEFAULT_LOCAL_FREQUENCY_PENALTY: f32 = 0.3;

/// Retrieval for one chat.
#[derive(Debug, Clone)]
pub struct Retrieval {
    /// Search the tenant's knowledge at all.
    pub enabled: bool,
    /// Chunks to put in the prompt, at most.
    pub top_k: usize,
    /// Drop chunks scoring below this (hybrid score).
    pub min_score: Option<f32>,
    /// Only chunks of these documents.
    pub document_ids: Option<Vec<String>>,
}

impl Default for Retrieval {
    fn default() -> Self {
        Self {
            enabled: true,
            top_k: DEFAULT_TOP_K,
            min_score: None,
            document_ids: None,
        }
    }
}

/// A request's own retrieval choices; each one given wins.
#[derive(Debug, Clone, Default)]
pub struct RetrievalOverrides {
    /// Search the tenant's knowledge at all.
    pub enabled: Option<bool>,
    /// Chunks to put in the prompt, at most.
    pub top_k: Option<usize>,
    /// Drop chunks scoring below this.
    pub min_score: Option<f32>,
    /// Only chunks of these documents.
    pub document_ids: Option<Vec<String>>,
}

impl RetrievalOverrides {
    /// `base` with the choices given here in place of its own.
    fn over(self, base: Retrieval) -> Retrieval {
        Retrieval {
            enabled: self.enabled.unwrap_or(base.enabled),
            top_k: self.top_k.unwrap_or(base.top_k),
            min_score: self.min_score.or(base.min_score),
            document_ids: self.document_ids.or(base.document_ids),
        }
    }
}

/// A request's own choices for one chat; each one given wins over the agent's setting
/// and the default.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// Retrieval.
    pub retrieval: RetrievalOverrides,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Sampler seed.
    pub seed: Option<u64>,
    /// New tokens at most.
    pub max_tokens: Option<usize>,
    /// The answer ends before any of these texts.
    pub stop: Vec<String>,
    /// OpenAI's frequency penalty, -2 to 2.
    pub frequency_penalty: Option<f32>,
    /// OpenAI's presence penalty, -2 to 2.
    pub presence_penalty: Option<f32>,
}

/// A chat to answer.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// The conversation so far; the last message is the user's.
    pub messages: Vec<Message>,
    /// The assistant's instructions (agent or tenant).
    pub system_prompt: String,
    /// Retrieval settings.
    pub retrieval: Retrieval,
    /// Sampling settings.
    pub sampling: Sampling,
    /// Provider by name; `None` is the server's default.
    pub provider: Option<String>,
    /// Model at an upstream provider; `None` is its default.
    pub model: Option<String>,
}

impl ChatRequest {
    /// The chat `messages` ask for, its settings taken in order of precedence from the
    /// request's `overrides`, the `agent` (when the chat is with one), and the defaults
    /// above. The agent's instructions replace the tenant's `tenant_prompt` unless they
    /// are blank.
    pub fn from_settings(
        messages: Vec<Message>,
        agent: Option<&AgentSettings>,
        tenant_prompt: &str,
        overrides: Overrides,
    ) -> Self {
        let system_prompt = match agent {
            Some(a) if !a.system_prompt.trim().is_empty() => a.system_prompt.clone(),
            _ => tenant_prompt.to_owned(),
        };
        let retrieval = agent.map_or_else(Retrieval::default, |a| Retrieval {
            enabled: a.retrieval.enabled,
            top_k: a.retrieval.top_k as usize,
            min_score: a.retrieval.min_score,
            document_ids: a.retrieval.document_ids.clone(),
        });
        let temperature = overrides
            .temperature
            .or(agent.map(|a| a.temperature))
            .unwrap_or(DEFAULT_TEMPERATURE);
        let max_tokens = overrides
            .max_tokens
            .or(agent.map(|a| a.max_tokens as usize))
            .unwrap_or(DEFAULT_MAX_TOKENS);
        Self {
            messages,
            system_prompt,
            retrieval: overrides.retrieval.over(retrieval),
            sampling: Sampling {
                temperature,
                top_p: Some(overrides.top_p.unwrap_or(DEFAULT_TOP_P)),
                seed: overrides.seed.unwrap_or(DEFAULT_SEED),
                max_tokens,
                stop: overrides.stop,
                ignore_eos: false,
                frequency_penalty: overrides.frequency_penalty,
                presence_penalty: overrides.presence_penalty,
            },
            provider: agent.map(|a| a.provider.clone()),
            model: agent.and_then(|a| a.model.clone()),
        }
    }
}

impl ChatRequest {
    /// The chat a model name resolved to asks for: an agent's as
    /// [`ChatRequest::from_settings`] makes it; a base model's with the tenant's
    /// instructions and no retrieval (grounding is what agents are for).
    pub fn for_model(
        model: &ChatModel,
        messages: Vec<Message>,
        tenant_prompt: &str,
        mut overrides: Overrides,
    ) -> Self {
        let agent = match model {
            ChatModel::Agent(a) => Some(&a.settings),
            _ => {
                overrides.retrieval.enabled = Some(false);
                None
            }
        };
        let mut request = Self::from_settings(messages, agent, tenant_prompt, overrides);
        match model {
            ChatModel::Agent(_) => {}
            ChatModel::Local => {
                request.provider = Some(crate::config::LOCAL_PROVIDER.to_owned());
                request.model = None;
            }
            ChatModel::Upstream { provider, model } => {
                request.provider = Some(provider.clone());
                request.model = Some(model.clone());
            }
        }
        request
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;
    use crate::store::agents::AgentRetrieval;

    fn agent() -> AgentSettings {
        AgentSettings {
            system_prompt: "  ".into(),
            provider: "local".into(),
            model: Some("m".into()),
            temperature: 0.2,
            max_tokens: 100,
            retrieval: AgentRetrieval {
                enabled: false,
                top_k: 7,
                min_score: Some(0.3),
                document_ids: None,
            },
        }
    }

    fn ask() -> Vec<Message> {
        vec![Message::new(Role::User, "hi")]
    }

    #[test]
    fn without_an_agent_the_tenant_prompt_and_the_defaults_apply() {
        let r = ChatRequest::from_settings(ask(), None, "Tenant.", Overrides::default());
        assert_eq!(r.system_prompt, "Tenant.");
        assert!(r.retrieval.enabled);
        assert_eq!(r.retrieval.top_k, DEFAULT_TOP_K);
        assert_eq!(r.sampling.temperature, DEFAULT_TEMPERATURE);
        assert_eq!(r.sampling.top_p, Some(DEFAULT_TOP_P));
        assert_eq!(r.sampling.seed, DEFAULT_SEED);
        assert_eq!(r.sampling.max_tokens, DEFAULT_MAX_TOKENS);
        assert!(r.sampling.stop.is_empty() && !r.sampling.ignore_eos);
        assert_eq!((r.provider, r.model), (None, None));
    }

    #[test]
    fn a_base_model_answers_without_retrieval_and_an_agent_as_itself() {
        let r = ChatRequest::for_model(&ChatModel::Local, ask(), "Tenant.", Overrides::default());
        assert!(!r.retrieval.enabled);
        assert_eq!(r.provider.as_deref(), Some("local"));
        assert_eq!(r.system_prompt, "Tenant.");
        let upstream = ChatModel::Upstream {
            provider: "openai".into(),
            model: "gpt-x".into(),
        };
        let r = ChatRequest::for_model(&upstream, ask(), "", Overrides::default());
        assert_eq!(
            (r.provider.as_deref(), r.model.as_deref()),
            (Some("openai"), Some("gpt-x"))
        );
        let a = crate::store::agents::Agent {
            id: "a".into(),
            tenant_id: crate::domain::TenantId::generate(),
            name: "support".into(),
            settings: AgentSettings {
                retrieval: AgentRetrieval {
                    enabled: true,
                    ..agent().retrieval
                },
                ..agent()
            },
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        };
        let r = ChatRequest::for_model(
            &ChatModel::Agent(Box::new(a)),
            ask(),
            "",
            Overrides::default(),
        );
        assert!(r.retrieval.enabled);
        assert_eq!(r.retrieval.top_k, 7);
        assert_eq!(r.model.as_deref(), Some("m"));
    }

    #[test]
    fn the_request_wins_over_the_agent_which_wins_over_the_defaults() {
        let a = agent();
        let r = ChatRequest::from_settings(ask(), Some(&a), "Tenant.", Overrides::default());
        // A blank agent prompt falls back to the tenant's.
        assert_eq!(r.system_prompt, "Tenant.");
        assert!(!r.retrieval.enabled);
        assert_eq!(r.retrieval.top_k, 7);
        assert_eq!(r.retrieval.min_score, Some(0.3));
        assert_eq!(r.sampling.temperature, 0.2);
        assert_eq!(r.sampling.max_tokens, 100);
        assert_eq!(r.provider.as_deref(), Some("local"));
        assert_eq!(r.model.as_deref(), Some("m"));

        let overrides = Overrides {
            retrieval: RetrievalOverrides {
                enabled: Some(true),
                top_k: Some(2),
                ..RetrievalOverrides::default()
            },
            temperature: Some(0.0),
            top_p: Some(0.5),
            seed: Some(7),
            max_tokens: Some(10),
            stop: vec!["\n".into()],
            frequency_penalty: Some(1.5),
            presence_penalty: None,
        };
        let a = AgentSettings {
            system_prompt: "Agent.".into(),
            ..agent()
        };
        let r = ChatRequest::from_settings(ask(), Some(&a), "Tenant.", overrides);
        assert_eq!(r.system_prompt, "Agent.");
        assert!(r.retrieval.enabled);
        assert_eq!(r.retrieval.top_k, 2);
        assert_eq!(r.retrieval.min_score, Some(0.3));
        assert_eq!(r.sampling.temperature, 0.0);
        assert_eq!(r.sampling.top_p, Some(0.5));
        assert_eq!(r.sampling.seed, 7);
        assert_eq!(r.sampling.max_tokens, 10);
        assert_eq!(r.sampling.stop, ["\n"]);
        assert_eq!(r.sampling.frequency_penalty, Some(1.5));
        assert_eq!(r.sampling.presence_penalty, None);
    }
}
