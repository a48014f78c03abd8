//! `/metrics` as Prometheus reads it: it parses, the models' and tenants' series move
//! when searches and chats run, tenant labels stay bounded, and the shipped Grafana
//! dashboard asks only for series ragbox exports.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::chat::question;
use crate::helpers::models::own_generator;
use crate::helpers::prometheus::{Scrape, parse};
use crate::helpers::{Tenant, TestApp};

async fn scrape(app: &TestApp) -> Scrape {
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    parse(&text).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"))
}

/// Every `ragbox_…` metric name an expression of the dashboard reads.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .expect("the dashboard is JSON");
    assert!(dashboard["title"].is_string() && dashboard["uid"].is_string());
    let mut names = BTreeSet::new();
    let mut exprs = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            exprs += 1;
            let mut rest = expr;
            while let Some(at) = rest.find("ragbox_") {
                let tail = &rest[at..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.insert(tail[..end].to_owned());
                rest = &tail[end..];
            }
        }
    }
    assert!(exprs >= 20, "only {exprs} queries");
    names
}

#[tokio::test]
async fn model_and_tenant_series_move_when_a_search_a_chat_and_an_embedding_run() {
    // A generator of its own: its series move by this test's chat alone.
    let app = TestApp::builder().generator(own_generator()).start().await;
    let t = Tenant::new(&app, "acme").await;
    let id = t
        .add_text(
            "Returns",
            "Customers may return any unused item within 30 days for a full refund.",
        )
        .await;
    assert_eq!(t.wait(&id).await["status"], "ready");
    let before = scrape(&app).await;
    assert!(before.value("ragbox_embed_model_load_seconds") > 0.0);
    assert!(before.value("ragbox_generate_model_load_seconds") > 0.0);
    for gauge in [
        r#"ragbox_embed_queue_depth{queue="query"}"#,
        r#"ragbox_embed_queue_depth{queue="bulk"}"#,
        "ragbox_generate_queue_depth",
        "ragbox_generate_active",
    ] {
        assert!(before.samples.contains_key(gauge), "{gauge} missing");
    }
    assert_eq!(
        before.value("ragbox_generate_time_to_first_token_seconds_count"),
        0.0
    );

    assert!(
        !t.search("how long do I have to return an item", "hybrid")
            .await
            .is_empty()
    );
    let r = t
        .post(
            "/api/v1/chat",
            &json!({"messages": question("Can I return an item?"), "temperature": 0,
                    "max_tokens": 8}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let chat: Value = r.json().await.unwrap();
    let (prompt, completion) = (
        chat["usage"]["prompt_tokens"].as_f64().unwrap(),
        chat["usage"]["completion_tokens"].as_f64().unwrap(),
    );
    assert!(prompt > 20.0 && completion >= 1.0, "{chat}");
    let r = t
        .post(
            "/v1/embeddings",
            &json!({"model": "all-MiniLM-L6-v2", "input": ["hello world", "refunds"]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let embedded = r.json::<Value>().await.unwrap()["usage"]["prompt_tokens"]
        .as_f64()
        .unwrap();

    let after = scrape(&app).await;
    let moved = |series: &str| after.value(series) - before.value(series);
    // The embedder (shared with other tests' servers) moved at least by this test's
    // query texts: the search's and the chat's questions and the two inputs.
    assert!(moved(r#"ragbox_embed_texts_total{queue="query"}"#) >= 4.0);
    assert!(moved("ragbox_embed_tokens_total") >= embedded);
    assert!(moved("ragbox_embed_batch_texts_count") >= 3.0);
    assert!(moved("ragbox_embed_busy_seconds_total") > 0.0);
    assert!(moved("ragbox_embed_tokens_per_second_count") >= 3.0);
    // The generator is this test's alone: exactly one answer, with the chat's tokens.
    assert_eq!(
        moved("ragbox_generate_time_to_first_token_seconds_count"),
        1.0
    );
    assert!(moved("ragbox_generate_time_to_first_token_seconds_sum") > 0.0);
    assert_eq!(moved("ragbox_generate_prompt_tokens_per_second_count"), 1.0);
    assert_eq!(
        moved(r#"ragbox_generate_tokens_total{kind="prompt"}"#),
        prompt
    );
    assert_eq!(
        moved(r#"ragbox_generate_tokens_total{kind="completion"}"#),
        completion
    );
    assert_eq!(after.sum("ragbox_generate_answers_total"), 1.0);
    if completion > 1.0 {
        assert_eq!(moved("ragbox_generate_decode_tokens_per_second_count"), 1.0);
    }
    assert_eq!(after.value("ragbox_generate_active"), 0.0);
    // The answer's cache and buffers stay for the next chat (30 s by default).
    assert!(after.value("ragbox_generate_held_bytes") > 0.0);
    // The tenant's own series.
    assert_eq!(
        after.value(r#"ragbox_tenant_tokens_total{kind="prompt",tenant="acme"}"#),
        prompt
    );
    assert_eq!(
        after.value(r#"ragbox_tenant_tokens_total{kind="completion",tenant="acme"}"#),
        completion
    );
    assert_eq!(
        after.value(r#"ragbox_tenant_tokens_total{kind="embedding",tenant="acme"}"#),
        embedded
    );
    assert!(moved(r#"ragbox_tenant_requests_total{class="2xx",tenant="acme"}"#) >= 3.0);

    // Every series the shipped dashboard asks for is one ragbox exports.
    for name in dashboard_metrics() {
        assert!(
            after.has(&name),
            "the dashboard reads {name}, which /metrics lacks"
        );
    }
}

#[tokio::test]
async fn tenants_past_the_label_bound_count_as_other_and_errors_count_by_class() {
    let app = TestApp::builder()
        .config(|c| c.metrics.tenant_series = 1)
        .start()
        .await;
    let first = Tenant::new(&app, "first").await;
    assert_eq!(first.get("/api/v1/tenant").await.status(), 200);
    for slug in ["second", "third"] {
        let t = Tenant::new(&app, slug).await;
        assert_eq!(t.get("/api/v1/tenant").await.status(), 200);
        assert_eq!(t.get("/api/v1/documents/nope").await.status(), 404);
    }
    let after = scrape(&app).await;
    assert_eq!(
        after.value(r#"ragbox_tenant_requests_total{class="2xx",tenant="first"}"#),
        1.0
    );
    assert_eq!(
        after.value(r#"ragbox_tenant_requests_total{class="2xx",tenant="other"}"#),
        2.0
    );
    assert_eq!(
        after.value(r#"ragbox_tenant_requests_total{class="4xx",tenant="other"}"#),
        2.0
    );
    let labelled: BTreeSet<&str> = after
        .samples
        .keys()
        .filter_map(|k| k.split("tenant=\"").nth(1))
        .filter_map(|v| v.split('"').next())
        .collect();
    assert_eq!(labelled, BTreeSet::from(["first", "other"]));
}

#[test]
fn the_test_parser_refuses_what_the_format_does_not_allow() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",b=\"q\\\"\"} 3\n\
                # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n";
    let scrape = parse(good).unwrap();
    assert_eq!(scrape.value("a_total{b=\"q\"\",x=\"1\"}"), 3.0);
    assert_eq!(scrape.value("h_count"), 2.0);
    for bad in [
        "b 1\n",                        // no family declared
        "# TYPE c counter\nc -1\n",     // a negative counter
        "# TYPE c counter\nc{x=1} 1\n", // an unquoted label
        "# TYPE c counter\nc one\n",    // not a number
        "# TYPE c counter\nc 1\nc 2\n", // a series twice
        "# TYPE c nonsense\n",          // an unknown type
        "# TYPE 9c counter\n",          // a bad name
    ] {
        assert!(parse(bad).is_err(), "{bad:?} parsed");
    }
}
