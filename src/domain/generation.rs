//! The vocabulary of text generation shared by the bundled model (`ml::generator`) and
//! the upstream providers (`llm`): a conversation's messages, how tokens are picked,
//! what comes back while an answer streams, and why generating failed.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::InvalidInput;

/// Who speaks a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions to the assistant.
    System,
    /// The person asking.
    User,
    /// The model's earlier answers.
    Assistant,
}

impl Role {
    /// The role's name as chat templates and provider APIs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }

    /// Parses `system`, `user` or `assistant`, exactly (no trimming, no other case).
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        match s {
            "system" => Ok(Self::System),
            "user" => Ok(Self::User),
            "assistant" => Ok(Self::Assistant),
            other => Err(InvalidInput(format!(
                "role `{other}` is not one of system, user, assistant"
            ))),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message of a conversation; serialises as `{"role": "user", "content": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// The text.
    pub content: String,
}

impl Message {
    /// A message of `role` saying `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// How to pick tokens.
#[derive(Debug, Clone)]
pub struct Sampling {
    /// 0 = greedy (deterministic).
    pub temperature: f64,
    /// Nucleus sampling; `None` or 1.0 = off.
    pub top_p: Option<f64>,
    /// Seed of the sampler.
    pub seed: u64,
    /// New tokens at most.
    pub max_tokens: usize,
    /// Generation ends before any of these texts.
    pub stop: Vec<String>,
    /// Keep going past end-of-turn tokens (benchmarks: a fixed number of tokens).
    pub ignore_eos: bool,
    /// Lowers a token's logit by this much for every time it was generated already
    /// (OpenAI's `frequency_penalty`, -2 to 2); `None` leaves the choice to the generator.
    pub frequency_penalty: Option<f32>,
    /// Lowers a token's logit by this much once it was generated at all (OpenAI's
    /// `presence_penalty`, -2 to 2); `None` leaves the choice to the generator.
    pub presence_penalty: Option<f32>,
}

/// Why an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// The model ended its turn, or a stop sequence was reached.
    Stop,
    /// The token limit was reached, or the context is full.
    Length,
}

impl FinishReason {
    /// `stop` or `length`, as the API reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tokens used, and why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Why the answer ended.
    pub finish_reason: FinishReason,
}

/// What a generator sends back while it answers.
#[derive(Debug, Clone)]
pub enum Event {
    /// The next piece of text.
    Text(String),
    /// The end.
    Done(Usage),
}

/// Why generation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GenError {
    /// The model file is missing or unusable; the message names the fix.
    #[error("{0}")]
    Load(String),
    /// The queue is full; retry later.
    #[error("the generation queue is full")]
    Busy,
    /// The model thread is gone.
    #[error("the generator is not running")]
    Stopped,
    /// The prompt does not fit the context window.
    #[error("{0}")]
    TooLong(String),
    /// The forward pass or tokenisation failed.
    #[error("generation failed: {0}")]
    Compute(String),
    /// An upstream provider refused, failed or went silent; `status` is its HTTP status
    /// when it answered one, and `message` names the provider.
    #[error("{message}")]
    Upstream {
        /// The upstream's HTTP status.
        status: Option<u16>,
        /// What happened.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_parse_exactly_and_serialise_lowercase() {
        for role in [Role::System, Role::User, Role::Assistant] {
            assert_eq!(Role::parse(role.as_str()), Ok(role));
        }
        assert!(Role::parse("User").is_err());
        assert!(Role::parse(" user").is_err());
        assert_eq!(
            Role::parse("robot").unwrap_err().0,
            "role `robot` is not one of system, user, assistant"
        );
        let json = serde_json::to_value(Message::new(Role::Assistant, "hi")).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"role": "assistant", "content": "hi"})
        );
    }

    #[test]
    fn finish_reasons_keep_their_wire_names() {
        assert_eq!(FinishReason::Stop.as_str(), "stop");
        assert_eq!(FinishReason::Length.as_str(), "length");
    }
}
