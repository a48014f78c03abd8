//! Upstream providers: Anthropic's Messages API against a local server that replays
//! the documented stream format (the OpenAI-compatible provider against llama.cpp's
//! own server is a long test, in `tests/long`).

use ragbox::config::{Config, ProviderConfig, ProviderKind};
use serde_json::{Value, json};

use crate::helpers::chat::{chat_stream, joined_text, parsed, question, sse_data, stream};
use crate::helpers::upstream::{ANTHROPIC_KEY, Replay, Script, assert_generator_check, dead_url};
use crate::helpers::{Tenant, TestApp, error_code};

async fn create_agent(t: &Tenant<'_>, body: Value) -> reqwest::Response {
    t.post("/api/v1/agents", &body).await
}

#[tokio::test]
async fn anthropic_answers_through_an_agent_from_its_documented_stream() {
    let replay = Replay::start(Script::Answer).await;
    let provider = replay.provider();
    let app = TestApp::builder()
        .config(|c: &mut Config| {
            c.providers.insert("claude".into(), provider);
        })
        .start()
        .await;
    let t = Tenant::new(&app, "acme").await;
    let doc = t
        .add_text(
            "Refund policy",
            "Refunds are accepted within 14 days of purchase.",
        )
        .await;
    t.wait(&doc).await;

    let r = create_agent(&t, json!({"name": "x", "provider": "nope"})).await;
    let message = error_code(r, 422).await;
    assert_eq!(message, "validation_failed");
    let r = create_agent(
        &t,
        json!({"name": "support", "provider": "claude", "model": "claude-x",
               "system_prompt": "You are Acme's support assistant."}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let agent: Value = r.json().await.unwrap();
    assert_eq!(agent["provider"], "claude");

    let body = json!({"agent_id": agent["id"], "messages": question("How long do refunds take?")});
    let (_, events) = stream(&t, body.clone()).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let events = parsed(&events);
    assert_eq!(events[0]["sources"][0]["document_id"], doc.as_str());
    assert_eq!(joined_text(&events[1..]), "Hello from Claude [1].");

    // What Anthropic would have received.
    let seen = replay.seen();
    let (headers, sent) = &seen[0];
    assert_eq!(headers["x-api-key"], ANTHROPIC_KEY);
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert_eq!(sent["model"], "claude-x");
    assert_eq!(sent["stream"], true);
    let system = sent["system"].as_str().unwrap();
    assert!(
        system.starts_with("You are Acme's support assistant."),
        "{system}"
    );
    assert!(system.contains("[1] Refund policy\nRefunds are accepted within 14 days"));
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "How long do refunds take?"}])
    );
    assert!(sent["max_tokens"].as_u64().unwrap() > 0);

    // The whole answer as JSON, with the usage Anthropic reported.
    let r = t.post("/api/v1/chat", &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["text"], "Hello from Claude [1].");
    assert_eq!(v["usage"]["prompt_tokens"], 25);
    assert_eq!(v["usage"]["completion_tokens"], 15);
    assert_eq!(v["usage"]["finish_reason"], "stop");
}

#[tokio::test]
async fn upstream_refusals_failures_and_silence_are_clean_errors() {
    let replay = Replay::start(Script::Refuse).await;
    let mut claude = replay.provider();
    claude.idle_timeout_ms = 300;
    let gone = ProviderConfig {
        kind: ProviderKind::Openai,
        base_url: Some(format!("{}/v1", dead_url())),
        model: "m".into(),
        ..ProviderConfig::default()
    };
    let app = TestApp::builder()
        .config(|c: &mut Config| {
            c.providers.insert("claude".into(), claude);
            c.providers.insert("gone".into(), gone);
        })
        .start()
        .await;
    let t = Tenant::new(&app, "acme").await;
    let claude = create_agent(&t, json!({"name": "c", "provider": "claude"})).await;
    let claude: Value = claude.json().await.unwrap();
    let gone = create_agent(&t, json!({"name": "g", "provider": "gone"})).await;
    let gone: Value = gone.json().await.unwrap();
    let ask = |agent: &Value| json!({"agent_id": agent["id"], "messages": question("Hi?")});

    // Refused before the stream: 502 naming the provider and its status, no key.
    let r = chat_stream(&t, ask(&claude)).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_error");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("`claude` answered 401"), "{message}");
    assert!(message.contains("invalid x-api-key"), "{message}");
    assert!(!message.contains(ANTHROPIC_KEY));

    // Down: 502 too.
    let r = chat_stream(&t, ask(&gone)).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`gone`") && message.contains("unreachable"),
        "{message}"
    );

    // Failing mid-stream: the text so far, an error event, then [DONE].
    replay.set(Script::FailMidway);
    let r = chat_stream(&t, ask(&claude)).await;
    assert_eq!(r.status(), 200);
    let events = sse_data(&r.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let events = parsed(&events);
    assert_eq!(joined_text(&events), "Hel");
    let error = &events.last().unwrap()["error"];
    assert_eq!(error["code"], "upstream_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("overloaded_error: Overloaded"),
        "{error}"
    );

    // Silent past the idle timeout: an error event, not a hung stream.
    replay.set(Script::Stall);
    let r = chat_stream(&t, ask(&claude)).await;
    assert_eq!(r.status(), 200);
    let events = sse_data(&r.text().await.unwrap());
    let events = parsed(&events);
    let error = &events.last().unwrap()["error"];
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("no data within 300 ms"),
        "{error}"
    );
}

#[tokio::test]
async fn health_checks_the_default_upstream_and_chats_use_it() {
    let replay = Replay::start(Script::Answer).await;
    let provider = replay.provider();
    let app = TestApp::builder()
        .config(|c: &mut Config| {
            c.providers.insert("claude".into(), provider);
            c.generation.provider = "claude".into();
        })
        .start()
        .await;
    assert_generator_check(&app, true).await;

    // Without an agent, a chat goes to the default provider.
    let t = Tenant::new(&app, "acme").await;
    let (_, events) = stream(
        &t,
        json!({"messages": question("Hi?"), "retrieval": {"enabled": false}}),
    )
    .await;
    assert_eq!(joined_text(&parsed(&events)), "Hello from Claude [1].");
    assert_eq!(replay.seen().len(), 1);

    // An upstream that does not answer fails the check.
    drop(replay);
    let down = ProviderConfig {
        base_url: Some(dead_url()),
        ..ProviderConfig::default()
    };
    let down = ProviderConfig {
        kind: ProviderKind::Anthropic,
        model: "m".into(),
        ..down
    };
    let app = TestApp::builder()
        .config(|c: &mut Config| {
            c.providers.insert("claude".into(), down);
            c.generation.provider = "claude".into();
        })
        .start_listening()
        .await;
    assert_generator_check(&app, false).await;
}
