//! The OpenAI-compatible `/v1` surface through the real server and models: shapes,
//! streaming, citations, embeddings, errors and tenant isolation.

use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::chat::sse_data;
use crate::helpers::{Tenant, TestApp};

/// The bundled model's name as `/v1/models` lists it.
async fn local_model(t: &Tenant<'_>) -> String {
    let models: Value = t.get("/v1/models").await.json().await.unwrap();
    models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == "chat")
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .expect("a chat model is listed")
}

/// The OpenAI error of a response that must have `status`.
async fn openai_error(r: reqwest::Response, status: u16) -> Value {
    assert_eq!(r.status(), status);
    let body: Value = r.json().await.unwrap();
    let e = &body["error"];
    assert!(e["message"].is_string() && e["type"].is_string(), "{body}");
    assert!(e.get("param").is_some() && e["code"].is_string(), "{body}");
    e.clone()
}

#[tokio::test]
async fn models_lists_the_tenants_agents_and_the_base_models_only_to_it() {
    let app = TestApp::spawn().await;
    let acme = Tenant::new(&app, "acme").await;
    let other = Tenant::new(&app, "other").await;
    acme.support_agent().await;

    let r = acme.get("/v1/models").await;
    assert_eq!(r.status(), 200);
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["object"], "list");
    let data = list["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids[0], "support", "agents come first: {ids:?}");
    assert!(ids.contains(&"all-MiniLM-L6-v2"), "{ids:?}");
    for m in data {
        assert_eq!(m["object"], "model");
        assert!(m["created"].as_i64().unwrap() > 1_600_000_000);
    }
    assert_eq!(data[0]["owned_by"], "acme");

    let theirs: Value = other.get("/v1/models").await.json().await.unwrap();
    assert!(
        !theirs["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["id"] == "support"),
        "another tenant's agent is not listed: {theirs}"
    );
    // Nor can it be named.
    let r = other
        .post(
            "/v1/chat/completions",
            &json!({"model": "support", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    let e = openai_error(r, 404).await;
    assert_eq!(e["code"], "model_not_found");
    assert_eq!(e["param"], "model");
    assert_eq!(e["type"], "not_found_error");
}

#[tokio::test]
async fn a_completion_has_openais_shape_and_the_stream_assembles_to_it() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    let model = local_model(&t).await;
    let body = json!({
        "model": model,
        "messages": [{"role": "developer", "content": "Be brief."},
                     {"role": "user", "content": [{"type": "text", "text": "What is the capital of France?"}]}],
        "temperature": 0, "max_tokens": 16, "seed": -3, "user": "ignored-field",
    });
    let r = t.post("/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let whole: Value = r.json().await.unwrap();
    assert!(whole["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["model"], model);
    let choice = &whole["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(choice["message"]["refusal"].is_null());
    assert_eq!(choice["message"]["annotations"], json!([]));
    let text = choice["message"]["content"].as_str().unwrap();
    assert!(text.contains("Paris"), "{whole}");
    assert!(["stop", "length"].contains(&choice["finish_reason"].as_str().unwrap()));
    let usage = &whole["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    assert!(usage["completion_tokens"].as_u64().unwrap() <= 16);
    assert_eq!(
        whole["ragbox"]["sources"],
        json!([]),
        "base models do not retrieve"
    );

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let r = t.post("/v1/chat/completions", &streamed).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let events = sse_data(&r.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let id = chunks[0]["id"].clone();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], id, "one id per answer");
    }
    let (tally, answer) = chunks.split_last().unwrap();
    assert_eq!(tally["choices"], json!([]), "usage comes alone, last");
    assert_eq!(
        tally["usage"], *usage,
        "the stream counts as the whole answer does"
    );
    for c in answer {
        assert!(c["usage"].is_null(), "usage is null before the last chunk");
    }
    let (last, text_chunks) = answer.split_last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], choice["finish_reason"]);
    assert!(
        text_chunks
            .iter()
            .all(|c| c["choices"][0]["finish_reason"].is_null())
    );
    let assembled: String = answer
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(
        assembled, text,
        "greedy: the streamed answer is the whole one"
    );

    // Without stream_options there is no usage at all.
    streamed["stream_options"] = json!({"include_usage": false});
    let events = sse_data(
        &t.post("/v1/chat/completions", &streamed)
            .await
            .text()
            .await
            .unwrap(),
    );
    for e in &events[..events.len() - 1] {
        let c: Value = serde_json::from_str(e).unwrap();
        assert!(c.get("usage").is_none(), "{c}");
        assert_eq!(c["choices"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn a_grounded_answer_cites_the_chunks_it_rests_on() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    let fact = "The Zorbulon reactor on the island of Kelvara produces blue steam \
                every Tuesday at noon.";
    let filler = "Office hours are nine to five. The cafeteria serves soup daily.";
    let doc = t.add_text("Kelvara facts", fact).await;
    let other = t.add_text("Office", filler).await;
    t.wait(&doc).await;
    t.wait(&other).await;
    t.support_agent().await;

    let body = json!({
        "model": "support",
        "messages": [{"role": "user", "content": "What does the Zorbulon reactor on Kelvara produce?"}],
        "temperature": 0, "max_tokens": 48,
    });
    let whole: Value = t
        .post("/v1/chat/completions", &body)
        .await
        .json()
        .await
        .unwrap();
    let message = &whole["choices"][0]["message"];
    let text = message["content"].as_str().unwrap();
    let sources = whole["ragbox"]["sources"].as_array().unwrap();
    assert!(
        sources.iter().any(|s| s["document_id"] == doc.as_str()
            && s["text"].as_str().unwrap().contains("Zorbulon")),
        "the fact's chunk was given to the model: {whole}"
    );
    let annotations = message["annotations"].as_array().unwrap();
    assert!(
        !annotations.is_empty(),
        "the answer cites something: {whole}"
    );
    let chars: Vec<char> = text.chars().collect();
    for a in annotations {
        assert_eq!(a["type"], "url_citation");
        let c = &a["url_citation"];
        let (start, end) = (
            c["start_index"].as_u64().unwrap() as usize,
            c["end_index"].as_u64().unwrap() as usize,
        );
        assert!(start < end && end <= chars.len(), "{a} in {text:?}");
        let url = c["url"].as_str().unwrap();
        assert!(
            url.starts_with(&app.url("/api/v1/documents/")),
            "{url} names this server"
        );
        assert_eq!(c["title"], "Kelvara facts", "{whole}");
        // The URL resolves to the cited chunk, which holds the span's words.
        let r = app
            .client
            .get(url)
            .bearer_auth(&t.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let chunk: Value = r.json().await.unwrap();
        assert_eq!(chunk["document_id"], doc.as_str());
        let span: String = chars[start..end].iter().collect::<String>().to_lowercase();
        let chunk_text = chunk["text"].as_str().unwrap().to_lowercase();
        let shared = span
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() >= 4 && chunk_text.contains(w))
            .count();
        assert!(shared >= 1, "the span {span:?} rests on {chunk_text:?}");
    }

    // The streamed answer carries the same citations on its closing chunk.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = sse_data(
        &t.post("/v1/chat/completions", &streamed)
            .await
            .text()
            .await
            .unwrap(),
    );
    let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(
        last["choices"][0]["delta"]["annotations"],
        message["annotations"]
    );
    assert_eq!(last["ragbox"]["sources"], whole["ragbox"]["sources"]);

    // Another tenant cannot read the cited chunk.
    let stranger = Tenant::new(&app, "stranger").await;
    let url = annotations[0]["url_citation"]["url"].as_str().unwrap();
    let r = app
        .client
        .get(url)
        .bearer_auth(&stranger.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn embeddings_come_as_floats_or_base64_with_usage() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    let one: Value = t
        .post(
            "/v1/embeddings",
            &json!({"model": "all-MiniLM-L6-v2", "input": "hello world"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["object"], "list");
    assert_eq!(one["model"], "all-MiniLM-L6-v2");
    assert_eq!(one["data"][0]["object"], "embedding");
    let v: Vec<f32> = serde_json::from_value(one["data"][0]["embedding"].clone()).unwrap();
    assert_eq!(v.len(), 384);
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3);
    // [CLS] hello world [SEP]
    assert_eq!(one["usage"]["prompt_tokens"], 4);
    assert_eq!(one["usage"]["total_tokens"], 4);

    let batch: Value = t
        .post(
            "/v1/embeddings",
            &json!({"model": "all-MiniLM-L6-v2", "input": ["a cat", "hello world"],
                    "encoding_format": "base64"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let data = batch["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data[1]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    assert_eq!(decoded.len(), 384);
    for (a, b) in decoded.iter().zip(&v) {
        assert!((a - b).abs() < 1e-5, "batching changes no vector");
    }

    let e = openai_error(
        t.post(
            "/v1/embeddings",
            &json!({"model": "text-embedding-3-small", "input": "x"}),
        )
        .await,
        404,
    )
    .await;
    assert_eq!(e["code"], "model_not_found");
    let e = openai_error(
        t.post(
            "/v1/embeddings",
            &json!({"model": "all-MiniLM-L6-v2", "input": [[1, 2, 3]]}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(e["type"], "invalid_request_error");
    let e = openai_error(
        t.post(
            "/v1/embeddings",
            &json!({"model": "all-MiniLM-L6-v2", "input": ["a", 5]}),
        )
        .await,
        400,
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("input[1]"), "{e}");
    openai_error(
        t.post(
            "/v1/embeddings",
            &json!({"model": "all-MiniLM-L6-v2", "input": []}),
        )
        .await,
        400,
    )
    .await;
}

#[tokio::test]
async fn errors_on_v1_come_in_openais_shape() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    let r = app.client.get(app.url("/v1/models")).send().await.unwrap();
    let e = openai_error(r, 401).await;
    assert_eq!(e["type"], "authentication_error");
    let r = app
        .client
        .get(app.url("/v1/models"))
        .bearer_auth("rbx_not_a_key")
        .send()
        .await
        .unwrap();
    openai_error(r, 401).await;

    let model = local_model(&t).await;
    let e = openai_error(
        t.post(
            "/v1/chat/completions",
            &json!({"model": model, "messages": [{"role": "user", "content": "hi"}],
                    "temperature": 5}),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(e["type"], "invalid_request_error");
    openai_error(
        t.post(
            "/v1/chat/completions",
            &json!({"model": model, "messages": [{"role": "tool", "content": "hi"}]}),
        )
        .await,
        400,
    )
    .await;
    openai_error(
        t.post(
            "/v1/chat/completions",
            &json!({"model": model, "messages": [], "n": 1}),
        )
        .await,
        400,
    )
    .await;

    // A method the path does not take: 405 with Allow.
    let r = app
        .client
        .delete(app.url("/v1/models"))
        .bearer_auth(&t.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    openai_error(r, 405).await;
}

#[tokio::test]
async fn the_default_frequency_penalty_keeps_a_greedy_answer_from_looping() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    let model = local_model(&t).await;
    let question = json!([{"role": "user", "content": "List the days of the week."}]);
    let mondays = |text: &str| text.to_lowercase().matches("monday").count();
    let ask = |penalty: Option<f32>| {
        let mut body = json!({"model": model, "messages": question, "temperature": 0,
                              "max_tokens": 120});
        if let Some(p) = penalty {
            body["frequency_penalty"] = json!(p);
        }
        let t = &t;
        async move {
            let r: Value = t
                .post("/v1/chat/completions", &body)
                .await
                .json()
                .await
                .unwrap();
            r["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    // Without a penalty the bundled model, greedy, goes round the week again.
    let looping = ask(Some(0.0)).await;
    assert!(mondays(&looping) >= 2, "{looping:?}");
    // The default penalty ends the list where the week ends, on both chat APIs.
    let default = ask(None).await;
    assert_eq!(mondays(&default), 1, "{default:?}");
    let r: Value = t
        .post(
            "/api/v1/chat",
            &json!({"messages": question, "temperature": 0, "max_tokens": 120,
                    "retrieval": {"enabled": false}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let native = r["text"].as_str().unwrap();
    assert_eq!(mondays(native), 1, "{native:?}");
    assert_eq!(native, default, "the same default on both APIs");
}

#[tokio::test]
async fn a_conversation_longer_than_the_context_is_cut_not_refused() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    let model = local_model(&t).await;
    let ask = |messages: Value| {
        let body = json!({"model": model, "messages": messages, "temperature": 0,
                          "max_tokens": 12});
        let t = &t;
        async move {
            let r = t.post("/v1/chat/completions", &body).await;
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let question = json!({"role": "user", "content": "What is the capital of France?"});
    let short = ask(json!([question])).await;
    assert_eq!(short["ragbox"]["truncated"], false);
    // 5,000 words of old conversation cannot fit 2,048 tokens: the oldest turns go, the
    // question stays and is answered.
    let long = ask(json!([
        {"role": "user", "content": "word ".repeat(5000)},
        {"role": "assistant", "content": "Noted."},
        question,
    ]))
    .await;
    assert_eq!(long["ragbox"]["truncated"], true);
    let answer = long["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(answer.contains("Paris"), "{answer}");
    assert!(long["usage"]["prompt_tokens"].as_u64().unwrap() < 2048);
    // A conversation may end with any speaker: the model continues it.
    let continued = ask(json!([question, {"role": "assistant", "content": "The capital"}])).await;
    assert!(continued["choices"][0]["message"]["content"].is_string());
}
