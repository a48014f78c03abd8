//! The HTTP side of the Qdrant store against a fake that records every request and
//! answers as Qdrant's REST API does (what the fake answers is what `wire` expects;
//! the tests in `tests/it/qdrant.rs` run against a real Qdrant).

use std::sync::{Arc, Mutex};

use poem::http::StatusCode;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::{Request, Response};
use serde_json::{Value, json};

use super::*;
use crate::config::Secret;

const DIM: usize = 4;

/// One request the fake saw.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// Path and query.
    path: String,
    api_key: Option<String>,
    body: Value,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    /// Whether the collection exists.
    exists: bool,
    /// The status of the next point request, instead of success.
    fail_next: Option<u16>,
}

/// A fake Qdrant on a port of its own.
struct Fake {
    url: String,
    state: Arc<Mutex<State>>,
}

fn answer(status: u16, body: Value) -> Response {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .content_type("application/json")
        .body(body.to_string())
}

fn respond(state: &mut State, method: &str, path: &str) -> Response {
    let ok = |result: Value| {
        answer(
            200,
            json!({"result": result, "status": "ok", "time": 0.001}),
        )
    };
    if path.starts_with("/collections/c/points")
        && let Some(status) = state.fail_next.take()
    {
        return answer(status, json!({"status": {"error": "it broke"}}));
    }
    match (method, path.split('?').next().unwrap_or_default()) {
        ("GET", "/collections/c") if state.exists => ok(json!({
            "status": "green",
            "points_count": 3,
            "config": {"params": {"vectors": {"size": DIM, "distance": "Cosine"}}},
            "payload_schema": {},
        })),
        ("GET", "/collections/c") => answer(
            404,
            json!({"status": {"error": "Not found: Collection `c` doesn't exist!"}}),
        ),
        ("PUT", "/collections/c") => {
            state.exists = true;
            ok(json!(true))
        }
        ("POST", "/collections/c/points/query") => {
            ok(json!({"points": [{"id": 7, "version": 3, "score": 0.5}]}))
        }
        ("POST", "/collections/c/points/count") => ok(json!({"count": 3})),
        ("POST", "/collections/c/facet") => {
            ok(json!({"hits": [{"value": "d1", "count": 2}, {"value": "d2", "count": 1}]}))
        }
        ("POST", "/collections/c/points/scroll") => ok(json!({
            "points": [{"id": 1, "payload": {"document": "d1"}, "vector": [1.0, 0.0, 0.0, 0.0]}],
            "next_page_offset": null,
        })),
        _ => ok(json!({"operation_id": 1, "status": "completed"})),
    }
}

impl Fake {
    async fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let addr = *acceptor.local_addr()[0].as_socket_addr().unwrap();
        let shared = state.clone();
        let app = poem::endpoint::make(move |req: Request| {
            let state = shared.clone();
            async move {
                let method = req.method().to_string();
                let path = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                let api_key = req
                    .headers()
                    .get("api-key")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let bytes = req.into_body().into_vec().await.unwrap_or_default();
                let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                let mut state = state.lock().unwrap();
                let response = respond(&mut state, &method, &path);
                state.seen.push(Seen {
                    method,
                    path,
                    api_key,
                    body,
                });
                response
            }
        });
        tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
        });
        Self {
            url: format!("http://{addr}"),
            state,
        }
    }

    fn config(&self) -> QdrantConfig {
        QdrantConfig {
            url: Some(self.url.clone()),
            api_key: Some(Secret::new("k3y")),
            collection: "c".into(),
            timeout_ms: 5_000,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        std::mem::take(&mut self.state.lock().unwrap().seen)
    }

    /// Opens the store against the fake, off the runtime.
    async fn open(&self) -> Arc<QdrantVectorStore> {
        let config = self.config();
        let store = tokio::task::spawn_blocking(move || QdrantVectorStore::open(&config, DIM))
            .await
            .unwrap()
            .unwrap();
        self.seen();
        Arc::new(store)
    }
}

/// Runs a store call off the runtime, as callers do.
async fn off<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn tenant() -> TenantId {
    TenantId::parse("0190c1d2-0000-7000-8000-000000000001").unwrap()
}

fn items(n: u64) -> Vec<VectorItem> {
    (0..n)
        .map(|id| VectorItem {
            id,
            vector: vec![0.5; DIM],
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_collection_is_created_with_both_indexes() {
    let fake = Fake::start().await;
    let config = fake.config();
    off(move || QdrantVectorStore::open(&config, DIM))
        .await
        .unwrap();
    let seen = fake.seen();
    let calls: Vec<(&str, &str)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("GET", "/collections/c"),
            ("PUT", "/collections/c"),
            ("GET", "/collections/c"),
            ("PUT", "/collections/c/index?wait=true"),
            ("PUT", "/collections/c/index?wait=true"),
        ]
    );
    assert_eq!(
        seen[1].body["vectors"],
        json!({"size": DIM, "distance": "Cosine"})
    );
    assert_eq!(seen[3].body["field_schema"]["is_tenant"], true);
    assert_eq!(seen[4].body["field_name"], "document");
    assert!(seen.iter().all(|s| s.api_key.as_deref() == Some("k3y")));
}

#[tokio::test(flavor = "multi_thread")]
async fn replacing_a_document_writes_in_batches_then_deletes_the_rest() {
    let fake = Fake::start().await;
    let store = fake.open().await;
    let s = store.clone();
    off(move || s.replace_document(&tenant(), "doc", items(300)))
        .await
        .unwrap();
    let seen = fake.seen();
    let calls: Vec<(&str, &str)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("PUT", "/collections/c/points?wait=true"),
            ("PUT", "/collections/c/points?wait=true"),
            ("POST", "/collections/c/points/delete?wait=true"),
        ]
    );
    let sizes: Vec<usize> = seen[..2]
        .iter()
        .map(|s| s.body["points"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, vec![256, 44]);
    let delete = &seen[2].body["filter"];
    assert_eq!(delete["must"][0]["match"]["value"], tenant().as_str());
    assert_eq!(delete["must"][1]["match"]["value"], "doc");
    assert_eq!(
        delete["must_not"][0]["has_id"].as_array().unwrap().len(),
        300
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_are_filtered_by_tenant_and_answers_are_read() {
    let fake = Fake::start().await;
    let store = fake.open().await;
    let s = store.clone();
    let (hits, count, docs, exported) = off(move || {
        let t = tenant();
        (
            s.search(&t, &[1.0, 0.0, 0.0, 0.0], 5, None).unwrap(),
            s.count(&t).unwrap(),
            s.documents(&t).unwrap(),
            s.export(&t).unwrap(),
        )
    })
    .await;
    assert_eq!(hits, vec![Hit { id: 7, score: 0.5 }]);
    assert_eq!(count, 3);
    assert_eq!(docs, HashSet::from(["d1".to_owned(), "d2".to_owned()]));
    assert_eq!(exported.len(), 1);
    assert_eq!(exported[0].0, "d1");
    for s in fake.seen() {
        let tenant_condition = &s.body["filter"]["must"][0];
        assert_eq!(tenant_condition["key"], "tenant", "{} {}", s.method, s.path);
        assert_eq!(tenant_condition["match"]["value"], tenant().as_str());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_empty_document_filter_asks_nothing() {
    let fake = Fake::start().await;
    let store = fake.open().await;
    let none = HashSet::new();
    let hits = off(move || store.search(&tenant(), &[0.0; DIM], 5, Some(&none)))
        .await
        .unwrap();
    assert!(hits.is_empty());
    assert!(fake.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_are_unavailable_or_storage_errors() {
    let fake = Fake::start().await;
    let store = fake.open().await;

    fake.state.lock().unwrap().fail_next = Some(503);
    let s = store.clone();
    let err = off(move || s.count(&tenant())).await.unwrap_err();
    assert!(matches!(err, VectorError::Unavailable(_)), "{err}");

    fake.state.lock().unwrap().fail_next = Some(400);
    let s = store.clone();
    let err = off(move || s.delete_document(&tenant(), "d"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, VectorError::Storage(m) if m.contains("it broke")),
        "{err}"
    );

    let s = store.clone();
    let err = off(move || s.search(&tenant(), &[0.0; 3], 5, None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, VectorError::Dimension { got: 3, want: DIM }),
        "{err}"
    );

    // Nothing listens: unavailable, at open as later.
    let mut config = fake.config();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    config.url = Some(format!("http://{}", dead.local_addr().unwrap()));
    drop(dead);
    let err = off(move || QdrantVectorStore::open(&config, DIM).map(|_| ()))
        .await
        .unwrap_err();
    assert!(matches!(err, VectorError::Unavailable(_)), "{err}");
}
