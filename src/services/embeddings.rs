//! Embeddings of caller-given texts (the OpenAI-compatible `/v1/embeddings`): bounded
//! before any work, embedded ahead of ingestion like a search query, and counted in the
//! model's own tokens.

use tracing::instrument;

use super::ServiceError;
use crate::ml::Embedder;

/// Texts in one request, at most (OpenAI's own limit).
pub const MAX_INPUTS: usize = 2048;
/// Characters of one text, at most; the model reads only its first `max_tokens` tokens.
pub const MAX_INPUT_CHARS: usize = 32_768;

/// Vectors, one per input in order, and the tokens the model read.
#[derive(Debug)]
pub struct Embedded {
    /// Unit-length vectors.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens read, special tokens included; a text longer than the model's window
    /// counts only the tokens it read.
    pub prompt_tokens: usize,
}

/// Embeds `inputs` on the interactive queue (full → 503 with `Retry-After`).
#[instrument(skip_all, fields(inputs = inputs.len()))]
pub async fn embed(embedder: &Embedder, inputs: Vec<String>) -> Result<Embedded, ServiceError> {
    check(&inputs)?;
    let (vectors, prompt_tokens) = embedder.embed_counting(inputs).await?;
    Ok(Embedded {
        vectors,
        prompt_tokens,
    })
}

/// Refuses what would grow the work without bound: too many texts, an empty or an
/// over-long one.
fn check(inputs: &[String]) -> Result<(), ServiceError> {
    if inputs.is_empty() {
        return Err(ServiceError::Invalid(
            "input must hold at least one text".into(),
        ));
    }
    if inputs.len() > MAX_INPUTS {
        return Err(ServiceError::Invalid(format!(
            "input holds {} texts; at most {MAX_INPUTS} per request",
            inputs.len()
        )));
    }
    for (i, text) in inputs.iter().enumerate() {
        if text.is_empty() {
            return Err(ServiceError::Invalid(format!("input[{i}] is empty")));
        }
        if text.chars().count() > MAX_INPUT_CHARS {
            return Err(ServiceError::Invalid(format!(
                "input[{i}] is longer than {MAX_INPUT_CHARS} characters"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_checked_before_any_work() {
        assert!(check(&["a".into()]).is_ok());
        assert!(check(&[]).is_err());
        assert!(check(&["a".into(), String::new()]).is_err());
        assert!(check(&vec!["a".to_owned(); MAX_INPUTS + 1]).is_err());
        assert!(check(&["x".repeat(MAX_INPUT_CHARS + 1)]).is_err());
        assert!(check(&["é".repeat(MAX_INPUT_CHARS)]).is_ok());
    }
}
