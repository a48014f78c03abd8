//! Chats as a client sees them: questions, streamed answers and their SSE events.

use serde_json::{Value, json};

use super::tenant::Tenant;

/// One user message, as a chat's `messages`.
pub fn question(q: &str) -> Value {
    json!([{"role": "user", "content": q}])
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(|d| d.trim().to_owned())
        .collect()
}

/// POSTs a streamed chat; returns the response as it is.
pub async fn chat_stream(t: &Tenant<'_>, body: Value) -> reqwest::Response {
    t.post("/api/v1/chat/stream", &body).await
}

/// A streamed chat that must answer 200: its headers and its SSE payloads.
pub async fn stream(t: &Tenant<'_>, body: Value) -> (reqwest::header::HeaderMap, Vec<String>) {
    let r = chat_stream(t, body).await;
    assert_eq!(r.status(), 200);
    let headers = r.headers().clone();
    (headers, sse_data(&r.text().await.unwrap()))
}

/// The JSON events of a stream, without its closing `[DONE]`.
pub fn parsed(events: &[String]) -> Vec<Value> {
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

/// The answer's text: the `text` of every event, joined.
pub fn joined_text(events: &[Value]) -> String {
    events.iter().filter_map(|e| e["text"].as_str()).collect()
}
