//! Health, readiness, liveness and metrics.

use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually};

#[tokio::test]
async fn health_is_200_with_every_check() {
    let app = TestApp::spawn().await;
    let r = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v,
        json!({"status": "healthy", "checks": {
            "database": true, "storage": true, "vectors": true, "jobs": true, "embedding": true,
            "generator": true
        }, "generator": "loaded"})
    );
}

#[tokio::test]
async fn health_is_503_when_the_database_is_broken() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    // Really break the file: move the WAL into it, then overwrite its header, as a
    // failing disk would.
    let path = app.dir.path().join("ragbox.sqlite");
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(conn);
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(&[0xAB; 100]).unwrap();
    f.sync_all().unwrap();
    drop(f);

    let r = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "degraded");
    assert_eq!(v["checks"]["database"], false);
    assert_eq!(v["checks"]["storage"], true);
    let r = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    // Liveness only says the process serves.
    let r = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn ready_is_503_until_startup_completes() {
    let (release, gate) = tokio::sync::oneshot::channel::<()>();
    let app = TestApp::builder()
        .gate(async move {
            let _ = gate.await;
        })
        .start_listening()
        .await;
    let r = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["checks"]["startup"], false);
    assert_eq!(v["status"], "degraded");
    let r = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    release.send(()).unwrap();
    app.wait_ready().await;
    let v: Value = app
        .client
        .get(app.url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["checks"]["startup"], true);
}

#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let key = app.create_key("acme").await;
    for _ in 0..3 {
        assert_eq!(app.tenant_get("/api/v1/tenant", &key).await.status(), 200);
    }
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"ragbox_http_requests_total{method="GET",route="/api/v1/tenant",status="200"} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains("ragbox_http_request_duration_seconds_bucket"),
        "{text}"
    );
    // Keys are created under a templated route, never the raw path with the slug.
    assert!(!text.contains("/tenants/acme/"), "{text}");
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let mut app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let key = app.create_key("acme").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let request = app
        .client
        .patch(app.url("/api/v1/tenant"))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(body)
        .send();
    let in_flight = tokio::spawn(request);
    tx.send(Ok(b"{\"system_prompt\": ".to_vec())).await.unwrap();
    // The server has taken the request once it has checked the key: a key's first use
    // is recorded.
    eventually(
        Duration::from_secs(10),
        "the server to take the request",
        || async {
            let keys: Value = app
                .admin(Method::GET, "/api/v1/admin/tenants/acme/keys", None)
                .await
                .json()
                .await
                .unwrap();
            if keys["items"][0]["last_used_at"].is_string() {
                Ok(())
            } else {
                Err(keys)
            }
        },
    )
    .await;

    // Ask the server to stop while the request's body is still arriving.
    let running = app.running.take().unwrap();
    let stopped = tokio::spawn(running.stop());
    eventually(
        Duration::from_secs(10),
        "the server to refuse new connections",
        || async {
            match reqwest::Client::new()
                .get(app.url("/health/live"))
                .send()
                .await
            {
                Ok(r) => Err(format!("a new connection was answered {}", r.status())),
                Err(_) => Ok(()),
            }
        },
    )
    .await;
    tx.send(Ok(b"\"drained\"}".to_vec())).await.unwrap();
    drop(tx);

    let r = in_flight.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["system_prompt"], "drained");
    stopped.await.unwrap().unwrap();
    // Once stopped, new connections are refused.
    assert!(
        app.client
            .get(app.url("/health/live"))
            .send()
            .await
            .is_err()
    );
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
