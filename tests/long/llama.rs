//! The OpenAI-compatible provider against llama.cpp's own server (built by
//! `scripts/llama_server_venv.sh`) serving the bundled GGUF.

use ragbox::config::{Config, ProviderConfig, ProviderKind};
use serde_json::{Value, json};

use crate::helpers::chat::{chat_stream, joined_text, parsed, question, stream};
use crate::helpers::upstream::{LlamaServer, assert_generator_check};
use crate::helpers::{Tenant, TestApp, error_code};
use crate::one_at_a_time;

#[tokio::test]
async fn openai_compatible_provider_streams_from_llama_cpp_server() {
    let _alone = one_at_a_time().lock().await;
    let llama = LlamaServer::start().await;
    let provider = ProviderConfig {
        kind: ProviderKind::Openai,
        base_url: Some(llama.base.clone()),
        model: "smollm2".into(),
        context_tokens: 2048,
        ..ProviderConfig::default()
    };
    let app = TestApp::builder()
        .config(|c: &mut Config| {
            c.providers.insert("llama".into(), provider);
            c.generation.provider = "llama".into();
        })
        .start()
        .await;
    assert_generator_check(&app, true).await;

    let t = Tenant::new(&app, "acme").await;
    let doc = t
        .add_text(
            "Reactor manual",
            "The Zorblax reactor in Plant 7 is cooled by liquid argon pumped from tank B.",
        )
        .await;
    t.wait(&doc).await;

    // Streamed, grounded: sources first, then llama.cpp's text, then [DONE].
    let (_, events) = stream(
        &t,
        json!({"messages": question("What cools the Zorblax reactor?"),
               "temperature": 0, "max_tokens": 32}),
    )
    .await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let events = parsed(&events);
    assert_eq!(events[0]["sources"][0]["document_id"], doc.as_str());
    assert!(
        events[1..].iter().all(|e| e["text"].is_string()),
        "{events:?}"
    );
    assert!(!joined_text(&events[1..]).trim().is_empty());

    // The same model answers a plain question the way the bundled model does.
    let (_, events) = stream(
        &t,
        json!({"messages": question("What is the capital of France?"),
               "retrieval": {"enabled": false}, "temperature": 0, "max_tokens": 24}),
    )
    .await;
    let text = joined_text(&parsed(&events));
    assert!(text.contains("Paris"), "{text}");

    // max_tokens reaches the server: the answer is cut, and says so.
    let r = t
        .post(
            "/api/v1/chat",
            &json!({"messages": question("Tell me a long story about a dragon."),
                      "retrieval": {"enabled": false}, "temperature": 0, "max_tokens": 3}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["usage"]["finish_reason"], "length", "{v}");
    assert!(
        v["usage"]["completion_tokens"].as_u64().unwrap() <= 3,
        "{v}"
    );
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{v}");

    // The server stops: health says so and chats get a clean 502.
    drop(llama);
    assert_generator_check(&app, false).await;
    let r = chat_stream(&t, json!({"messages": question("Hi?")})).await;
    assert_eq!(error_code(r, 502).await, "upstream_error");
}
