//! A tenant runs a bounded number of generations at once: a long streamed answer (400
//! tokens of the local model) holds its one place.

use serde_json::json;

use crate::helpers::chat::question;
use crate::helpers::{Tenant, TestApp, error_code};
use crate::one_at_a_time;

#[tokio::test]
async fn a_tenant_runs_a_bounded_number_of_generations_at_once() {
    let _alone = one_at_a_time().lock().await;
    let app = TestApp::spawn().await;
    let a = Tenant::new(&app, "alpha").await;
    let b = Tenant::new(&app, "beta").await;
    let r = app
        .admin(
            reqwest::Method::PUT,
            "/api/v1/admin/tenants/alpha/limits",
            Some(json!({"concurrent_generations": 1})),
        )
        .await;
    assert_eq!(r.status(), 200);
    // A long answer holds alpha's one place while it streams.
    let long = json!({
        "messages": question("Write a long story about a lighthouse keeper."),
        "retrieval": {"enabled": false},
        "max_tokens": 400,
        "temperature": 0.0,
    });
    let first = a
        .app
        .client
        .post(app.url("/api/v1/chat/stream"))
        .bearer_auth(&a.key)
        .json(&long)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let second = a.post("/api/v1/chat", &long).await;
    assert_eq!(error_code(second, 429).await, "rate_limited");
    // Another tenant is not held back by alpha's stream.
    let other = b
        .post(
            "/api/v1/chat",
            &json!({"messages": question("Hi"), "retrieval": {"enabled": false}, "max_tokens": 4}),
        )
        .await;
    assert_eq!(other.status(), 200);
    // Once alpha's stream ends, its place is free again.
    let _ = first.text().await.unwrap();
    let again = a
        .post(
            "/api/v1/chat",
            &json!({"messages": question("Hi"), "retrieval": {"enabled": false}, "max_tokens": 4}),
        )
        .await;
    assert_eq!(again.status(), 200);
}
