//! Chat through the real server and the real local model.

use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code};
use crate::knowledge::Tenant;

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
        .map(|d| d.trim().to_owned())
        .collect()
}

pub async fn stream(t: &Tenant<'_>, body: Value) -> (reqwest::header::HeaderMap, Vec<String>) {
    let r = t
        .app
        .client
        .post(t.app.url("/api/v1/chat/stream"))
        .bearer_auth(&t.key)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let headers = r.headers().clone();
    (headers, sse_data(&r.text().await.unwrap()))
}

pub fn question(q: &str) -> Value {
    json!([{"role": "user", "content": q}])
}

#[tokio::test]
async fn a_streamed_chat_sends_sources_text_and_done() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    let (headers, events) = stream(
        &t,
        json!({"messages": question("Say hello."), "temperature": 0, "max_tokens": 16}),
    )
    .await;
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(headers["cache-control"], "no-cache");
    assert_eq!(headers["x-accel-buffering"], "no");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let parsed: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert!(
        parsed[0]["sources"].is_array(),
        "sources come first: {}",
        parsed[0]
    );
    let text: String = parsed[1..]
        .iter()
        .map(|e| e["text"].as_str().expect("text events only").to_owned())
        .collect();
    assert!(!text.trim().is_empty());
}

#[tokio::test]
async fn greedy_answers_repeat_and_agree_between_json_and_stream() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    let body = json!({
        "messages": question("What is the capital of France?"),
        "temperature": 0, "max_tokens": 12, "retrieval": {"enabled": false},
    });
    let ask = || async {
        let r = app
            .client
            .post(app.url("/api/v1/chat"))
            .bearer_auth(&t.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()
    };
    let first = ask().await;
    let second = ask().await;
    assert_eq!(first["text"], second["text"]);
    assert!(first["text"].as_str().unwrap().contains("Paris"), "{first}");
    assert_eq!(first["sources"], json!([]));
    assert!(first["usage"]["completion_tokens"].as_u64().unwrap() <= 12);
    let (_, events) = stream(&t, body.clone()).await;
    let streamed: String = events[..events.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        streamed,
        first["text"].as_str().unwrap(),
        "no sources event when retrieval is off"
    );
}

#[tokio::test]
async fn grounded_answers_cite_the_tenants_own_documents_only() {
    let app = TestApp::spawn().await;
    let a = Tenant::new(&app, "acme").await;
    let b = Tenant::new(&app, "globex").await;
    let doc_a = a
        .add_text(
            "Reactor manual",
            "The Zorblax reactor in Plant 7 is cooled by liquid argon pumped from tank B.",
        )
        .await;
    let doc_b = b
        .add_text(
            "Cafeteria",
            "The cafeteria in the west wing serves soup on Mondays.",
        )
        .await;
    a.wait(&doc_a).await;
    b.wait(&doc_b).await;

    let body = json!({
        "messages": question("What cools the Zorblax reactor?"),
        "temperature": 0, "max_tokens": 24,
    });
    let (_, events) = stream(&a, body.clone()).await;
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    let sources = first["sources"].as_array().unwrap();
    assert_eq!(sources[0]["document_id"], doc_a.as_str());
    assert_eq!(sources[0]["n"], 1);
    assert!(
        sources[0]["text"]
            .as_str()
            .unwrap()
            .contains("liquid argon")
    );

    let (_, events) = stream(&b, body).await;
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    for s in first["sources"].as_array().unwrap() {
        assert_eq!(
            s["document_id"],
            doc_b.as_str(),
            "another tenant's source leaked"
        );
    }
}

#[tokio::test]
async fn invalid_chats_are_refused_before_any_stream() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    let long = "word ".repeat(5000);
    for messages in [
        json!([]),
        json!([{"role": "robot", "content": "hi"}]),
        json!([{"role": "user", "content": "   "}]),
        json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]),
        json!([{"role": "user", "content": long}]),
    ] {
        for path in ["/api/v1/chat/stream", "/api/v1/chat"] {
            let r = app
                .client
                .post(app.url(path))
                .bearer_auth(&t.key)
                .json(&json!({"messages": messages, "retrieval": {"enabled": false}}))
                .send()
                .await
                .unwrap();
            assert_eq!(error_code(r, 422).await, "validation_failed", "{path}");
        }
    }
    let r = app
        .client
        .post(app.url("/api/v1/chat"))
        .json(&json!({"messages": question("hi")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
