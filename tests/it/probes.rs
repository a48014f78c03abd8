//! Probes cost little and give nothing away: cached health, no tenant queue used, an
//! upstream asked at most once a minute; upstream redirects are not followed. (That a
//! tenant runs a bounded number of generations at once is a long test, in
//! `tests/long`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::Data;
use poem::{EndpointExt, Request, Response, Route, handler};
use ragbox::config::{ProviderConfig, ProviderKind, Secret};
use serde_json::json;

use crate::helpers::chat::question;
use crate::helpers::{Tenant, TestApp};

/// Counts the requests a stand-in upstream receives, and where.
#[derive(Clone, Default)]
struct Seen {
    models: Arc<AtomicUsize>,
    redirected: Arc<AtomicUsize>,
    with_key: Arc<AtomicUsize>,
}

#[handler]
fn model_list(seen: Data<&Seen>) -> Response {
    seen.models.fetch_add(1, Ordering::SeqCst);
    Response::builder()
        .content_type("application/json")
        .body(json!({"object": "list", "data": [{"id": "m", "object": "model"}]}).to_string())
}

/// Answers every chat with a redirect to `/elsewhere`, which records whether the key
/// came along.
#[handler]
fn redirect() -> Response {
    Response::builder()
        .status(poem::http::StatusCode::TEMPORARY_REDIRECT)
        .header("location", "/elsewhere")
        .finish()
}

#[handler]
fn elsewhere(req: &Request, seen: Data<&Seen>) -> Response {
    seen.redirected.fetch_add(1, Ordering::SeqCst);
    if req.headers().contains_key("authorization") {
        seen.with_key.fetch_add(1, Ordering::SeqCst);
    }
    Response::builder().body("{}")
}

async fn stand_in(seen: Seen) -> String {
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
    let app = Route::new()
        .at("/v1/models", poem::get(model_list))
        .at("/v1/chat/completions", poem::post(redirect))
        .at("/elsewhere", poem::get(elsewhere).post(elsewhere))
        .data(seen);
    tokio::spawn(async move {
        let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
    });
    format!("http://{addr}/v1")
}

fn provider(base: &str) -> ProviderConfig {
    ProviderConfig {
        kind: ProviderKind::Openai,
        base_url: Some(base.to_owned()),
        api_key: Some(Secret::new("sk-stand-in-secret-key")),
        model: "m".into(),
        idle_timeout_ms: 2_000,
        ..ProviderConfig::default()
    }
}

#[tokio::test]
async fn health_is_cached_and_asks_a_paid_upstream_once_a_minute() {
    let seen = Seen::default();
    let base = stand_in(seen.clone()).await;
    let app = TestApp::builder()
        .config(|c| {
            c.providers.insert("up".into(), provider(&base));
            c.generation.provider = "up".into();
            c.health.cache_ms = 0;
            c.health.upstream_probe_secs = 60;
        })
        .start()
        .await;
    for _ in 0..5 {
        let r = app.client.get(app.url("/health")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        seen.models.load(Ordering::SeqCst),
        1,
        "the upstream was asked again"
    );

    // With a cache, concurrent probes share one run of the checks.
    let seen = Seen::default();
    let base = stand_in(seen.clone()).await;
    let app = TestApp::builder()
        .config(|c| {
            c.providers.insert("up".into(), provider(&base));
            c.generation.provider = "up".into();
            c.health.cache_ms = 60_000;
            c.health.upstream_probe_secs = 0;
        })
        .start()
        .await;
    let probes = (0..20).map(|_| app.client.get(app.url("/health")).send());
    for r in futures_util::future::join_all(probes).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    let r = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        seen.models.load(Ordering::SeqCst),
        1,
        "probes ran the checks again"
    );
}

#[tokio::test]
async fn health_stays_healthy_while_tenants_fill_the_embedding_queue() {
    let embedder = crate::helpers::tiny_queue_embedder();
    let app = TestApp::builder().embedder(embedder).start().await;
    let t = Tenant::new(&app, "acme").await;
    let long = "the quick brown fox jumps over the lazy dog ".repeat(20);
    let searches = (0..48).map(|i| {
        app.client
            .post(app.url("/api/v1/search"))
            .bearer_auth(&t.key)
            .json(&json!({"query": format!("{i} {long}"), "mode": "vector"}))
            .send()
    });
    let probes = (0..8).map(|_| app.client.get(app.url("/health")).send());
    let (searched, probed) = tokio::join!(
        futures_util::future::join_all(searches),
        futures_util::future::join_all(probes)
    );
    let busy = searched
        .into_iter()
        .filter(|r| r.as_ref().unwrap().status() == 503)
        .count();
    assert!(busy > 0, "the burst never filled the queue");
    for r in probed {
        assert_eq!(
            r.unwrap().status(),
            200,
            "a probe waited in the tenants' queue"
        );
    }
}

#[tokio::test]
async fn an_upstream_redirect_is_not_followed_with_the_key() {
    let seen = Seen::default();
    let base = stand_in(seen.clone()).await;
    let app = TestApp::builder()
        .config(|c| {
            c.providers.insert("up".into(), provider(&base));
            c.generation.provider = "up".into();
        })
        .start()
        .await;
    let t = Tenant::new(&app, "acme").await;
    let r = t
        .post(
            "/api/v1/chat",
            &json!({"messages": question("Hello?"), "retrieval": {"enabled": false}}),
        )
        .await;
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("307"), "{body}");
    assert!(
        !body.contains("127.0.0.1"),
        "the URL reached the answer: {body}"
    );
    assert_eq!(
        seen.redirected.load(Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
    assert_eq!(seen.with_key.load(Ordering::SeqCst), 0);
}
