//! The shared error shape, body limits and request ids.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, TestApp, error_code};

#[tokio::test]
async fn malformed_json_is_400_in_the_shared_shape() {
    let app = TestApp::spawn().await;
    let r = app
        .client
        .post(app.url("/api/v1/admin/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body("{\"slug\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "bad_request");
    // Nothing was created by the bad request.
    let v: serde_json::Value = app
        .admin(Method::GET, "/api/v1/admin/tenants", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["total"], 0);
}

#[tokio::test]
async fn oversize_bodies_are_413() {
    let app = TestApp::builder()
        .config(|c| c.server.max_body_bytes = 1024)
        .start()
        .await;
    let big = json!({"slug": "acme", "system_prompt": "x".repeat(4096)});
    let r = app
        .admin(Method::POST, "/api/v1/admin/tenants", Some(big.clone()))
        .await;
    assert_eq!(error_code(r, 413).await, "payload_too_large");

    // The same, streamed in chunks without a Content-Length.
    let bytes = big.to_string().into_bytes();
    let stream = futures_util::stream::iter(
        bytes
            .chunks(512)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = app
        .client
        .post(app.url("/api/v1/admin/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 413).await, "payload_too_large");

    // A small chunked body still goes through.
    let small = json!({"slug": "acme"}).to_string().into_bytes();
    let stream = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(small)]);
    let r = app
        .client
        .post(app.url("/api/v1/admin/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[tokio::test]
async fn unknown_routes_and_methods_use_the_shared_shape() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let key = app.create_key("acme").await;
    let r = app.tenant_get("/api/v1/nothing-here", &key).await;
    assert_eq!(error_code(r, 404).await, "not_found");
    let r = app
        .client
        .delete(app.url("/api/v1/tenant"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 405).await, "method_not_allowed");
    let r = app
        .client
        .patch(app.url("/api/v1/tenant"))
        .bearer_auth(&key)
        .header("content-type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert!(status == 400 || status == 415, "status {status}");
    error_code(r, status).await;
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let app = TestApp::spawn().await;
    let r = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let r = app
        .client
        .get(app.url("/health/live"))
        .send()
        .await
        .unwrap();
    let generated = r.headers()["x-request-id"].to_str().unwrap();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    // A hostile id is replaced, not echoed.
    let r = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "a b <script>")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "a b <script>");
}

#[tokio::test]
async fn cors_is_off_by_default_and_configurable() {
    let app = TestApp::spawn().await;
    let r = app
        .client
        .get(app.url("/health/live"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    let app = TestApp::builder()
        .config(|c| {
            c.server.cors.enabled = true;
            c.server.cors.allowed_origins = vec!["https://app.example.com".into()];
        })
        .start()
        .await;
    let r = app
        .client
        .request(Method::OPTIONS, app.url("/api/v1/tenant"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let r = app
        .client
        .get(app.url("/health/live"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}
