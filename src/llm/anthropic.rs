//! Anthropic's Messages API: request bodies and its streaming events
//! (`message_start`, `content_block_delta`, `message_delta`, `message_stop`, `ping`,
//! `error`).

use serde_json::{Value, json};

use super::sse::SseEvent;
use super::{Piece, Tally};
use crate::domain::{FinishReason, Message, Role, Sampling};

/// The body of a streamed `POST /v1/messages`: system text apart, the conversation as
/// alternating user and assistant turns (neighbours of one role joined).
pub fn body(model: &str, messages: &[Message], sampling: &Sampling) -> Value {
    let system: Vec<&str> = messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect();
    let mut turns: Vec<Value> = Vec::new();
    for m in messages.iter().filter(|m| m.role != Role::System) {
        match turns.last_mut() {
            Some(last) if last["role"] == m.role.as_str() => {
                let joined = format!(
                    "{}\n\n{}",
                    last["content"].as_str().unwrap_or(""),
                    m.content
                );
                last["content"] = json!(joined);
            }
            _ => turns.push(json!({"role": m.role, "content": m.content})),
        }
    }
    let mut body = json!({
        "model": model,
        "messages": turns,
        "max_tokens": sampling.max_tokens,
        "stream": true,
        // Anthropic's temperature range is 0-1.
        "temperature": sampling.temperature.clamp(0.0, 1.0),
    });
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if let Some(p) = sampling.top_p.filter(|p| *p < 1.0) {
        body["top_p"] = json!(p);
    }
    if !sampling.stop.is_empty() {
        body["stop_sequences"] = json!(sampling.stop);
    }
    body
}

/// One streaming event; the `type` in the data decides (the `event:` line repeats it).
pub fn decode(event: &SseEvent, tally: &mut Tally) -> Piece {
    if event.data.trim().is_empty() {
        return Piece::Nothing;
    }
    let data: Value = match serde_json::from_str(&event.data) {
        Ok(v) => v,
        Err(e) => return Piece::Failed(format!("unreadable stream event: {e}")),
    };
    let kind = data["type"].as_str().unwrap_or(event.event.as_str());
    match kind {
        "message_start" => {
            let usage = &data["message"]["usage"];
            tally.prompt_tokens = usage["input_tokens"].as_u64().map(|n| n as usize);
            tally.completion_tokens = usage["output_tokens"].as_u64().map(|n| n as usize);
            Piece::Nothing
        }
        "content_block_delta" if data["delta"]["type"] == "text_delta" => {
            Piece::Text(data["delta"]["text"].as_str().unwrap_or("").to_owned())
        }
        "message_delta" => {
            if let Some(n) = data["usage"]["output_tokens"].as_u64() {
                tally.completion_tokens = Some(n as usize);
            }
            match data["delta"]["stop_reason"].as_str() {
                Some("max_tokens") => tally.finish_reason = Some(FinishReason::Length),
                Some(_) => tally.finish_reason = Some(FinishReason::Stop),
                None => {}
            }
            Piece::Nothing
        }
        "message_stop" => Piece::End,
        "error" => {
            let kind = data["error"]["type"].as_str().unwrap_or("error");
            let message = data["error"]["message"].as_str().unwrap_or("no message");
            Piece::Failed(format!("{kind}: {message}"))
        }
        // ping, content_block_start/stop, and event types added later.
        _ => Piece::Nothing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: Role, content: &str) -> Message {
        Message::new(role, content)
    }

    #[test]
    fn system_goes_apart_and_turns_alternate() {
        let sampling = Sampling {
            temperature: 1.5,
            top_p: Some(0.9),
            seed: 1,
            max_tokens: 64,
            stop: vec![],
            ignore_eos: false,
            frequency_penalty: None,
            presence_penalty: None,
        };
        let b = body(
            "claude",
            &[
                msg(Role::System, "Be brief."),
                msg(Role::User, "a"),
                msg(Role::User, "b"),
                msg(Role::Assistant, "c"),
                msg(Role::User, "d"),
            ],
            &sampling,
        );
        assert_eq!(b["system"], "Be brief.");
        assert_eq!(b["messages"].as_array().unwrap().len(), 3);
        assert_eq!(b["messages"][0]["content"], "a\n\nb");
        assert_eq!(b["temperature"], 1.0);
        assert_eq!(b["max_tokens"], 64);
        assert!(b.get("stop_sequences").is_none());
    }

    #[test]
    fn events_become_text_usage_and_end() {
        let ev = |event: &str, data: &str| SseEvent {
            event: event.into(),
            data: data.into(),
        };
        let mut tally = Tally::default();
        let start = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"m","stop_reason":null,"usage":{"input_tokens":25,"output_tokens":1}}}"#;
        assert_eq!(
            decode(&ev("message_start", start), &mut tally),
            Piece::Nothing
        );
        let delta = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#;
        assert_eq!(
            decode(&ev("content_block_delta", delta), &mut tally),
            Piece::Text("Hello".into())
        );
        let end = r#"{"type":"message_delta","delta":{"stop_reason":"max_tokens","stop_sequence":null},"usage":{"output_tokens":15}}"#;
        assert_eq!(
            decode(&ev("message_delta", end), &mut tally),
            Piece::Nothing
        );
        assert_eq!(
            decode(
                &ev("message_stop", r#"{"type":"message_stop"}"#),
                &mut tally
            ),
            Piece::End
        );
        assert_eq!(tally.prompt_tokens, Some(25));
        assert_eq!(tally.completion_tokens, Some(15));
        assert_eq!(tally.finish_reason, Some(FinishReason::Length));
        let err = r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(
            decode(&ev("error", err), &mut tally),
            Piece::Failed("overloaded_error: Overloaded".into())
        );
    }
}
