//! Tenant resolution: API keys, JWTs, subdomains and scopes.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ragbox::config::{JwtAlgorithm, JwtConfig, Secret};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_code};

const JWT_SECRET: &str = "an-hs256-secret-that-is-long-enough-0123";

fn hs256_config(audience: Option<&str>) -> JwtConfig {
    JwtConfig {
        algorithm: JwtAlgorithm::HS256,
        secret: Some(Secret::new(JWT_SECRET)),
        public_key_file: None,
        issuer: Some("https://issuer.test".into()),
        audience: audience.map(str::to_owned),
        tenant_claim: "tenant".into(),
        leeway_secs: 0,
    }
}

fn sign(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn claims(tenant: &str, exp_from_now: i64) -> Value {
    json!({
        "sub": "user-1",
        "tenant": tenant,
        "iss": "https://issuer.test",
        "aud": "ragbox",
        "exp": chrono::Utc::now().timestamp() + exp_from_now,
    })
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn a_revoked_key_fails_on_the_very_next_request() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let created = app.create_key_with("acme", json!({"name": "k"})).await;
    let key = created["key"].as_str().unwrap();
    assert_eq!(app.tenant_get("/api/v1/tenant", key).await.status(), 200);

    let id = created["id"].as_str().unwrap();
    let r = app
        .admin(
            Method::POST,
            &format!("/api/v1/admin/tenants/acme/keys/{id}/revoke"),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["revoked_at"].is_string());

    let r = app.tenant_get("/api/v1/tenant", key).await;
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"ragbox\", error=\"invalid_token\""
    );
    assert_eq!(error_code(r, 401).await, "invalid_tenant");
}

#[tokio::test]
async fn an_expired_key_is_refused() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let expires = chrono::Utc::now() + chrono::Duration::hours(1);
    let created = app
        .create_key_with(
            "acme",
            json!({"name": "short", "expires_at": expires.to_rfc3339()}),
        )
        .await;
    let key = created["key"].as_str().unwrap();
    assert_eq!(app.tenant_get("/api/v1/tenant", key).await.status(), 200);
    app.clock.advance(chrono::Duration::hours(2));
    let r = app.tenant_get("/api/v1/tenant", key).await;
    assert_eq!(error_code(r, 401).await, "invalid_tenant");
}

#[tokio::test]
async fn unknown_and_malformed_credentials_are_refused() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    for token in ["rbx_doesnotexist", "garbage", ""] {
        let r = app.tenant_get("/api/v1/tenant", token).await;
        assert_eq!(r.status(), 401, "token {token:?}");
    }
    let r = app
        .client
        .get(app.url("/api/v1/tenant"))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 401).await, "missing_credentials");
}

#[tokio::test]
async fn the_subdomain_must_agree_with_the_key() {
    let app = TestApp::builder()
        .config(|c| c.server.base_domain = Some("ragbox.test".into()))
        .start()
        .await;
    app.create_tenant("alpha").await;
    app.create_tenant("beta").await;
    let key = app.create_key("alpha").await;
    let get = |host: &'static str| {
        app.client
            .get(app.url("/api/v1/tenant"))
            .header("host", host)
            .bearer_auth(&key)
            .send()
    };
    assert_eq!(get("alpha.ragbox.test").await.unwrap().status(), 200);
    assert_eq!(get("ALPHA.ragbox.test:8080").await.unwrap().status(), 200);
    assert_eq!(get("ragbox.test").await.unwrap().status(), 200);
    let r = get("beta.ragbox.test").await.unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_tenant");
    let r = get("x.alpha.ragbox.test").await.unwrap();
    assert_eq!(error_code(r, 401).await, "invalid_tenant");
}

#[tokio::test]
async fn a_read_key_cannot_write() {
    let app = TestApp::spawn().await;
    app.create_tenant("acme").await;
    let read = app
        .create_key_with("acme", json!({"name": "ro", "scopes": ["read"]}))
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let write = app.create_key("acme").await;
    let patch = |key: &str| {
        app.client
            .patch(app.url("/api/v1/tenant"))
            .bearer_auth(key)
            .json(&json!({"system_prompt": "changed"}))
            .send()
    };
    assert_eq!(app.tenant_get("/api/v1/tenant", &read).await.status(), 200);
    let r = patch(&read).await.unwrap();
    assert_eq!(error_code(r, 403).await, "insufficient_scope");
    let r = patch(&write).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["system_prompt"], "changed");
    // The refused write changed nothing: the later write is what is stored.
    let v: Value = app
        .tenant_get("/api/v1/tenant", &read)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["system_prompt"], "changed");
}

#[tokio::test]
async fn jwt_hs256() {
    let app = TestApp::builder()
        .config(|c| c.auth.jwt = Some(hs256_config(Some("ragbox"))))
        .start()
        .await;
    let acme = app.create_tenant("acme").await;
    app.create_tenant("other").await;

    // Valid, by slug and by id.
    for tenant in ["acme", acme["id"].as_str().unwrap()] {
        let token = sign(&claims(tenant, 300), JWT_SECRET);
        let r = app.tenant_get("/api/v1/tenant", &token).await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["slug"], "acme");
    }

    // Expired.
    let r = app
        .tenant_get("/api/v1/tenant", &sign(&claims("acme", -60), JWT_SECRET))
        .await;
    assert_eq!(error_code(r, 401).await, "invalid_tenant");

    // Wrong signature.
    let forged = sign(
        &claims("acme", 300),
        "a-different-secret-that-is-long-enough-99",
    );
    let r = app.tenant_get("/api/v1/tenant", &forged).await;
    assert_eq!(error_code(r, 401).await, "invalid_tenant");

    // alg: none, unsigned.
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let body = b64(claims("acme", 300).to_string().as_bytes());
    for token in [format!("{header}.{body}."), format!("{header}.{body}")] {
        let r = app.tenant_get("/api/v1/tenant", &token).await;
        assert_eq!(error_code(r, 401).await, "invalid_tenant");
    }

    // Wrong audience; wrong issuer; no exp.
    let mut c = claims("acme", 300);
    c["aud"] = json!("someone-else");
    let r = app
        .tenant_get("/api/v1/tenant", &sign(&c, JWT_SECRET))
        .await;
    assert_eq!(error_code(r, 401).await, "invalid_tenant");
    let mut c = claims("acme", 300);
    c["iss"] = json!("https://evil.test");
    let r = app
        .tenant_get("/api/v1/tenant", &sign(&c, JWT_SECRET))
        .await;
    assert_eq!(error_code(r, 401).await, "invalid_tenant");
    let mut c = claims("acme", 300);
    c.as_object_mut().unwrap().remove("exp");
    let r = app
        .tenant_get("/api/v1/tenant", &sign(&c, JWT_SECRET))
        .await;
    assert_eq!(error_code(r, 401).await, "invalid_tenant");

    // Unknown tenant claim value; missing tenant claim.
    let r = app
        .tenant_get("/api/v1/tenant", &sign(&claims("nobody", 300), JWT_SECRET))
        .await;
    assert_eq!(error_code(r, 401).await, "invalid_tenant");
    let mut c = claims("acme", 300);
    c.as_object_mut().unwrap().remove("tenant");
    let r = app
        .tenant_get("/api/v1/tenant", &sign(&c, JWT_SECRET))
        .await;
    assert_eq!(error_code(r, 401).await, "invalid_tenant");

    // A configured issuer and audience are required claims: absent → 401.
    for claim in ["iss", "aud"] {
        let mut c = claims("acme", 300);
        c.as_object_mut().unwrap().remove(claim);
        let r = app
            .tenant_get("/api/v1/tenant", &sign(&c, JWT_SECRET))
            .await;
        assert_eq!(
            error_code(r, 401).await,
            "invalid_tenant",
            "without {claim}"
        );
    }

    // A malformed scope claim grants nothing: not even read.
    for (claim, value) in [
        ("scope", json!(["read"])),
        ("scope", json!(7)),
        ("scopes", json!("read write")),
        ("scopes", json!([1, "write"])),
    ] {
        let mut c = claims("acme", 300);
        c[claim] = value.clone();
        let token = sign(&c, JWT_SECRET);
        let r = app
            .client
            .patch(app.url("/api/v1/tenant"))
            .bearer_auth(&token)
            .json(&json!({"name": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(r, 403).await,
            "insufficient_scope",
            "{claim}: {value}"
        );
        let r = app.tenant_get("/api/v1/tenant", &token).await;
        assert_eq!(
            error_code(r, 403).await,
            "insufficient_scope",
            "{claim}: {value}"
        );
    }

    // A read-only token cannot write.
    let mut c = claims("acme", 300);
    c["scope"] = json!("read");
    let r = app
        .client
        .patch(app.url("/api/v1/tenant"))
        .bearer_auth(sign(&c, JWT_SECRET))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 403).await, "insufficient_scope");
}

#[tokio::test]
async fn jwt_of_another_algorithm_is_refused() {
    let app = TestApp::builder()
        .config(|c| c.auth.jwt = Some(hs256_config(None)))
        .start()
        .await;
    app.create_tenant("acme").await;
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwt-es256-private.pem"
    ))
    .unwrap();
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::ES256),
        &claims("acme", 300),
        &EncodingKey::from_ec_pem(&pem).unwrap(),
    )
    .unwrap();
    let r = app.tenant_get("/api/v1/tenant", &token).await;
    assert_eq!(error_code(r, 401).await, "invalid_tenant");
}

#[tokio::test]
async fn jwt_es256_with_a_public_key_file() {
    let public = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwt-es256-public.pem"
    );
    let app = TestApp::builder()
        .config(|c| {
            c.auth.jwt = Some(JwtConfig {
                algorithm: JwtAlgorithm::ES256,
                secret: None,
                public_key_file: Some(public.into()),
                issuer: None,
                audience: None,
                tenant_claim: "org".into(),
                leeway_secs: 0,
            })
        })
        .start()
        .await;
    app.create_tenant("acme").await;
    let pem = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/jwt-es256-private.pem"
    ))
    .unwrap();
    let key = EncodingKey::from_ec_pem(&pem).unwrap();
    let c = json!({"org": "acme", "exp": chrono::Utc::now().timestamp() + 300});
    let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &c, &key).unwrap();
    let r = app.tenant_get("/api/v1/tenant", &token).await;
    assert_eq!(r.status(), 200);
    // An HS256 token signed with the public key's text (the classic confusion attack).
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(&std::fs::read(public).unwrap()),
    )
    .unwrap();
    let r = app.tenant_get("/api/v1/tenant", &confused).await;
    assert_eq!(error_code(r, 401).await, "invalid_tenant");
}
