//! Chat through the real server and the real local model.

use std::time::Duration;

use ragbox::ml::Generator;
use serde_json::{Value, json};

use crate::helpers::chat::{question, stream};
use crate::helpers::models::{generation_file, own_generator};
use crate::helpers::{Tenant, TestApp, error_code, eventually};

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
        let r = t.post("/api/v1/chat", &body).await;
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
    for messages in [
        json!([]),
        json!([{"role": "robot", "content": "hi"}]),
        json!([{"role": "user", "content": 7}]),
    ] {
        for path in ["/api/v1/chat/stream", "/api/v1/chat"] {
            let r = t
                .post(
                    path,
                    &json!({"messages": messages, "retrieval": {"enabled": false}}),
                )
                .await;
            assert_eq!(error_code(r, 400).await, "bad_request", "{path}");
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

#[tokio::test]
async fn a_client_that_hangs_up_stops_its_generation() {
    // A generator of its own, so no other test moves its token counter.
    let generator = own_generator();
    let app = TestApp::builder()
        .generator(generator.clone())
        .start()
        .await;
    let t = Tenant::new(&app, "acme").await;
    let body = json!({
        "messages": question("Count from 1 to 500, one number per line."),
        "retrieval": {"enabled": false}, "temperature": 0, "max_tokens": 1000,
    });
    let mut r = t.post("/api/v1/chat/stream", &body).await;
    assert_eq!(r.status(), 200);
    // Read until 20 pieces of text have arrived, then hang up.
    let mut received = String::new();
    while received.matches("\"text\"").count() < 20 {
        let chunk = r.chunk().await.unwrap().expect("the answer ended early");
        received.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!received.contains("[DONE]"), "the answer ended by itself");
    drop(r);
    let at_hangup = generator.tokens_generated();
    // Wait until the counter stops moving.
    let last = eventually(
        Duration::from_secs(20),
        "the generation to stop after the hang-up",
        || async {
            let before = generator.tokens_generated();
            // What "stopped" means: no token for 200 ms (one takes far less).
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = generator.tokens_generated();
            if now == before {
                Ok(now)
            } else {
                Err(format!("{} tokens in 200 ms", now - before))
            }
        },
    )
    .await;
    let after = last - at_hangup;
    eprintln!("{after} tokens after the hang-up, {last} in all");
    assert!(
        after <= 4,
        "{after} tokens generated after the client hung up"
    );
    assert!(last < 200, "the answer ran to {last} tokens");
    // The model is free again: the next chat gets its whole (short) answer.
    let r = t
        .post(
            "/api/v1/chat",
            &json!({"messages": question("Say hi."), "retrieval": {"enabled": false},
                      "temperature": 0, "max_tokens": 4}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn chat_waits_for_a_model_still_loading_and_gets_503_from_one_that_failed() {
    let settings = ragbox::config::Config::default().generation;
    let ask = json!({
        "messages": question("Say hi."), "temperature": 0, "max_tokens": 4,
        "retrieval": {"enabled": false},
    });
    // Ready does not wait for the weights; a request on them does.
    let loading = Generator::start(&generation_file(), &settings).unwrap();
    let app = TestApp::builder().generator(loading).start().await;
    let (status, ready) = app.public_json("/health/ready").await;
    assert_eq!(status, 200);
    let state = ready["generator"].as_str().unwrap();
    assert!(state == "loading" || state == "loaded", "{ready}");
    let t = Tenant::new(&app, "acme").await;
    let r = t.post("/api/v1/chat", &ask).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert!(!answer["text"].as_str().unwrap().is_empty(), "{answer}");

    // Weights that cannot be read: the server stays up, says why, and refuses with 503.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(generation_file()).unwrap();
    let cut = dir.path().join("cut.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() * 9 / 10]).unwrap();
    let broken = Generator::start(&cut, &settings).unwrap();
    let waiting = broken.clone();
    assert!(
        tokio::task::spawn_blocking(move || waiting.wait_loaded())
            .await
            .unwrap()
            .is_err()
    );
    let app = TestApp::builder().generator(broken).start_listening().await;
    let t = Tenant::new(&app, "acme").await;
    let r = t.post("/api/v1/chat", &ask).await;
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_code(r, 503).await, "unavailable");
    let (status, ready) = app.public_json("/health/ready").await;
    assert_eq!(status, 503);
    assert_eq!(ready["generator"], "failed", "{ready}");
    assert_eq!(ready["checks"]["generator"], false, "{ready}");
}
