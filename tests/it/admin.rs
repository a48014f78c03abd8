//! The operator plane and tenant isolation.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code};

#[tokio::test]
async fn each_key_sees_only_its_own_tenant() {
    let app = TestApp::spawn().await;
    let a = app.create_tenant("alpha").await;
    let b = app.create_tenant("beta").await;
    let key_a = app.create_key("alpha").await;
    let key_b = app.create_key(b["id"].as_str().unwrap()).await;

    let me_a: Value = app
        .tenant_get("/api/v1/tenant", &key_a)
        .await
        .json()
        .await
        .unwrap();
    let me_b: Value = app
        .tenant_get("/api/v1/tenant", &key_b)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me_a["id"], a["id"]);
    assert_eq!(me_a["slug"], "alpha");
    assert_eq!(me_b["id"], b["id"]);
    assert_eq!(me_b["slug"], "beta");

    // A tenant key is not an operator token.
    let r = app
        .client
        .get(app.url("/api/v1/admin/tenants"))
        .bearer_auth(&key_a)
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_admin_token");
    app.stop().await;
}

#[tokio::test]
async fn admin_routes_need_the_operator_token() {
    let app = TestApp::spawn().await;
    let r = app
        .client
        .get(app.url("/api/v1/admin/tenants"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"ragbox\"");
    assert_eq!(error_code(r, 401).await, "missing_credentials");
    let r = app
        .client
        .get(app.url("/api/v1/admin/tenants"))
        .bearer_auth("not-the-operator-token")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_admin_token");
}

#[tokio::test]
async fn tenant_crud() {
    let app = TestApp::spawn().await;
    let created = app.create_tenant("acme").await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["name"], "ACME");
    assert_eq!(created["settings"], json!({}));

    // Duplicate slug: 409; a slug off the declared pattern, or a missing field: 400.
    let r = app
        .admin(
            Method::POST,
            "/api/v1/admin/tenants",
            Some(json!({"slug": "acme"})),
        )
        .await;
    assert_eq!(error_code(r, 409).await, "conflict");
    let r = app
        .admin(
            Method::POST,
            "/api/v1/admin/tenants",
            Some(json!({"slug": "Not OK"})),
        )
        .await;
    assert_eq!(error_code(r, 400).await, "bad_request");
    let r = app
        .admin(
            Method::POST,
            "/api/v1/admin/tenants",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(error_code(r, 400).await, "bad_request");

    // Get by id and by slug.
    for r in [&id, "acme"] {
        let v: Value = app
            .admin(Method::GET, &format!("/api/v1/admin/tenants/{r}"), None)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["id"], id.as_str());
    }

    // Update.
    let r = app
        .admin(
            Method::PATCH,
            "/api/v1/admin/tenants/acme",
            Some(json!({"system_prompt": "Be brief.", "settings": {"tier": "gold"}})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["system_prompt"], "Be brief.");
    assert_eq!(v["settings"]["tier"], "gold");
    assert_eq!(v["name"], "ACME");

    // List.
    app.create_tenant("zeta").await;
    let v: Value = app
        .admin(Method::GET, "/api/v1/admin/tenants?limit=1", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["total"], 2);
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    assert_eq!(v["items"][0]["slug"], "acme");
    let r = app
        .admin(Method::GET, "/api/v1/admin/tenants?limit=0", None)
        .await;
    assert_eq!(error_code(r, 400).await, "bad_request");

    // Delete removes the tenant and its keys.
    let key = app.create_key("acme").await;
    assert_eq!(app.tenant_get("/api/v1/tenant", &key).await.status(), 200);
    let r = app
        .admin(Method::DELETE, "/api/v1/admin/tenants/acme", None)
        .await;
    assert_eq!(r.status(), 204);
    let r = app
        .admin(Method::GET, &format!("/api/v1/admin/tenants/{id}"), None)
        .await;
    assert_eq!(error_code(r, 404).await, "not_found");
    let r = app.tenant_get("/api/v1/tenant", &key).await;
    assert_eq!(error_code(r, 401).await, "invalid_tenant");
    let r = app
        .admin(Method::DELETE, "/api/v1/admin/tenants/acme", None)
        .await;
    assert_eq!(error_code(r, 404).await, "not_found");
}

#[tokio::test]
async fn keys_are_listed_without_secrets() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let created = app
        .create_key_with("acme", json!({"name": "ci", "scopes": ["read"]}))
        .await;
    let secret = created["key"].as_str().unwrap();
    assert!(secret.starts_with("rbx_"));
    assert!(
        secret.len() >= 4 + 43,
        "32 random bytes, base64url: {secret}"
    );
    assert!(secret.starts_with(created["prefix"].as_str().unwrap()));
    assert_eq!(created["scopes"], json!(["read"]));

    let r = app
        .admin(Method::GET, "/api/v1/admin/tenants/acme/keys", None)
        .await;
    let text = r.text().await.unwrap();
    assert!(!text.contains(secret), "list must never hold the secret");
    let v: Value = serde_json::from_str(&text).unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert!(items[0].get("key").is_none());
    assert_eq!(items[0]["name"], "ci");

    // Validation: a blank name and an unknown scope break the declared schema (400).
    let r = app
        .admin(
            Method::POST,
            "/api/v1/admin/tenants/acme/keys",
            Some(json!({"name": " "})),
        )
        .await;
    assert_eq!(error_code(r, 400).await, "bad_request");
    // A past expiry makes a key that never works.
    let r = app
        .admin(
            Method::POST,
            "/api/v1/admin/tenants/acme/keys",
            Some(json!({"name": "old", "expires_at": "2001-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(r.status(), 201);
    let expired: Value = r.json().await.unwrap();
    let r = app
        .tenant_get("/api/v1/tenant", expired["key"].as_str().unwrap())
        .await;
    assert_eq!(r.status(), 401);
    let r = app
        .admin(
            Method::POST,
            "/api/v1/admin/tenants/acme/keys",
            Some(json!({"name": "x", "scopes": ["admin"]})),
        )
        .await;
    assert_eq!(error_code(r, 400).await, "bad_request");
    let r = app
        .admin(
            Method::POST,
            "/api/v1/admin/tenants/nobody/keys",
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(error_code(r, 404).await, "not_found");
}

#[tokio::test]
async fn a_key_cannot_be_revoked_through_another_tenant() {
    let app = TestApp::spawn().await;
    app.create_tenant("alpha").await;
    app.create_tenant("beta").await;
    let created = app.create_key_with("alpha", json!({"name": "k"})).await;
    let id = created["id"].as_str().unwrap();
    let r = app
        .admin(
            Method::POST,
            &format!("/api/v1/admin/tenants/beta/keys/{id}/revoke"),
            None,
        )
        .await;
    assert_eq!(error_code(r, 404).await, "not_found");
    let key = created["key"].as_str().unwrap();
    assert_eq!(app.tenant_get("/api/v1/tenant", key).await.status(), 200);
}
