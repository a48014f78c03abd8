//! The OpenAI chat-completions wire format, as spoken by OpenAI and by the
//! OpenAI-compatible servers (llama.cpp, vLLM, Ollama): request bodies and stream chunks.

use serde_json::{Value, json};

use super::sse::SseEvent;
use super::{Piece, Tally};
use crate::domain::{FinishReason, Message, Sampling};

/// The body of a streamed `POST /chat/completions`.
pub fn body(model: &str, messages: &[Message], sampling: &Sampling) -> Value {
    let mut body = json!({
        "model": model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "seed": sampling.seed,
    });
    if let Some(p) = sampling.top_p {
        body["top_p"] = json!(p);
    }
    if !sampling.stop.is_empty() {
        body["stop"] = json!(sampling.stop);
    }
    // Only penalties the caller chose: the upstream's own defaults suit its model.
    if let Some(f) = sampling.frequency_penalty {
        body["frequency_penalty"] = json!(f);
    }
    if let Some(p) = sampling.presence_penalty {
        body["presence_penalty"] = json!(p);
    }
    body
}

/// One chunk of the stream: `data: {choices: [{delta: {content}, finish_reason}], usage?}`,
/// ended by `data: [DONE]`; an `error` object is a failure.
pub fn decode(event: &SseEvent, tally: &mut Tally) -> Piece {
    let data = event.data.trim();
    if data == "[DONE]" {
        return Piece::End;
    }
    if data.is_empty() {
        return Piece::Nothing;
    }
    let chunk: Value = match serde_json::from_str(data) {
        Ok(v) => v,
        Err(e) => return Piece::Failed(format!("unreadable stream chunk: {e}")),
    };
    if let Some(err) = chunk.get("error") {
        let message = err["message"].as_str().unwrap_or("no message");
        return Piece::Failed(format!("error in stream: {message}"));
    }
    if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
        tally.prompt_tokens = usage["prompt_tokens"].as_u64().map(|n| n as usize);
        tally.completion_tokens = usage["completion_tokens"].as_u64().map(|n| n as usize);
    }
    let choice = &chunk["choices"][0];
    match choice["finish_reason"].as_str() {
        Some("length") => tally.finish_reason = Some(FinishReason::Length),
        Some(_) => tally.finish_reason = Some(FinishReason::Stop),
        None => {}
    }
    match choice["delta"]["content"].as_str() {
        Some(text) => Piece::Text(text.to_owned()),
        None => Piece::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    fn data(d: &str) -> SseEvent {
        SseEvent {
            event: String::new(),
            data: d.into(),
        }
    }

    #[test]
    fn chunks_become_text_usage_and_end() {
        let mut tally = Tally::default();
        let first = r#"{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"Par"},"finish_reason":null}]}"#;
        assert_eq!(decode(&data(first), &mut tally), Piece::Text("Par".into()));
        let last = r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#;
        assert_eq!(decode(&data(last), &mut tally), Piece::Nothing);
        let usage = r#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":5,"total_tokens":17}}"#;
        assert_eq!(decode(&data(usage), &mut tally), Piece::Nothing);
        assert_eq!(decode(&data("[DONE]"), &mut tally), Piece::End);
        assert_eq!(tally.prompt_tokens, Some(12));
        assert_eq!(tally.completion_tokens, Some(5));
        assert_eq!(tally.finish_reason, Some(FinishReason::Length));
        assert!(matches!(
            decode(&data(r#"{"error":{"message":"overloaded"}}"#), &mut tally),
            Piece::Failed(m) if m.contains("overloaded")
        ));
    }

    #[test]
    fn the_body_carries_the_sampling() {
        let sampling = Sampling {
            temperature: 0.0,
            top_p: Some(0.9),
            seed: 7,
            max_tokens: 32,
            stop: vec!["\n\n".into()],
            ignore_eos: false,
            frequency_penalty: Some(0.5),
            presence_penalty: None,
        };
        let messages = [Message::new(Role::User, "hi")];
        let b = body("m", &messages, &sampling);
        assert_eq!(b["stream"], true);
        assert_eq!(b["max_tokens"], 32);
        assert_eq!(b["messages"][0]["content"], "hi");
        assert_eq!(b["stop"][0], "\n\n");
        assert_eq!(b["seed"], 7);
        assert_eq!(b["frequency_penalty"], 0.5);
        assert!(b.get("presence_penalty").is_none());
    }
}
