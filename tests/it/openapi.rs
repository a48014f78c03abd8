//! The OpenAPI contract and Swagger UI.

use serde_json::Value;

use crate::helpers::TestApp;

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/openapi.json");

/// Compares `/openapi.json` with the committed snapshot, so that contract changes are
/// deliberate. Run with `RAGBOX_UPDATE_SNAPSHOTS=1` to accept a change.
#[tokio::test]
async fn openapi_matches_the_snapshot() {
    let app = TestApp::spawn().await;
    let r = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spec: Value = r.json().await.unwrap();
    let pretty = serde_json::to_string_pretty(&spec).unwrap() + "\n";
    if std::env::var_os("RAGBOX_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(SNAPSHOT, &pretty).unwrap();
    }
    let expected = std::fs::read_to_string(SNAPSHOT)
        .expect("snapshot missing: run with RAGBOX_UPDATE_SNAPSHOTS=1");
    let expected: Value = serde_json::from_str(&expected).unwrap();
    assert!(
        expected == spec,
        "OpenAPI changed; review and run with RAGBOX_UPDATE_SNAPSHOTS=1 to accept:\n{pretty}"
    );
}

#[tokio::test]
async fn every_non_public_operation_declares_its_security_and_error_shape() {
    let app = TestApp::spawn().await;
    let spec: Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemes = spec["components"]["securitySchemes"].as_object().unwrap();
    assert!(schemes.contains_key("TenantKey"));
    assert!(schemes.contains_key("AdminToken"));
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if path.starts_with("/health") || path == "/metrics" {
                continue;
            }
            let security = op["security"]
                .as_array()
                .unwrap_or_else(|| panic!("{method} {path} has no security"));
            let name = security[0].as_object().unwrap().keys().next().unwrap();
            let want = if path.starts_with("/api/v1/admin") {
                "AdminToken"
            } else {
                "TenantKey"
            };
            assert_eq!(name, want, "{method} {path}");
            assert!(
                op["responses"]["default"].is_object(),
                "{method} {path} lacks the error response"
            );
        }
    }
}

#[tokio::test]
async fn swagger_ui_works_offline() {
    let app = TestApp::spawn().await;
    let r = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("SwaggerUIBundle"),
        "the UI's code is served inline"
    );
    assert!(!html.contains("<script src=\"http"), "no CDN scripts");
    assert!(
        !html.contains("<link rel=\"stylesheet\" href=\"http"),
        "no CDN styles"
    );
}
