//! Tenants and their keys: created through the operator API, then used through a
//! `Tenant` handle that calls the tenant API with its key.

use std::time::Duration;

use reqwest::multipart::{Form, Part};
use reqwest::{Client, Method, Response};
use serde_json::{Value, json};

use super::eventually;
use super::server::TestApp;

impl TestApp {
    /// Creates a tenant named after its slug (in capitals); returns it.
    pub async fn create_tenant(&self, slug: &str) -> Value {
        let r = self
            .admin(
                Method::POST,
                "/api/v1/admin/tenants",
                Some(json!({"slug": slug, "name": slug.to_uppercase()})),
            )
            .await;
        assert_eq!(r.status(), 201, "create tenant {slug}");
        r.json().await.unwrap()
    }

    /// Creates a key and returns the whole response (secret in `key`).
    pub async fn create_key_with(&self, tenant: &str, body: Value) -> Value {
        let r = self
            .admin(
                Method::POST,
                &format!("/api/v1/admin/tenants/{tenant}/keys"),
                Some(body),
            )
            .await;
        assert_eq!(r.status(), 201, "create key for {tenant}");
        r.json().await.unwrap()
    }

    /// Creates a key with every scope and returns its secret.
    pub async fn create_key(&self, tenant: &str) -> String {
        let v = self.create_key_with(tenant, json!({"name": "test"})).await;
        v["key"].as_str().unwrap().to_owned()
    }
}

/// A tenant of a test server and a key of it.
pub struct Tenant<'a> {
    pub app: &'a TestApp,
    pub key: String,
}

impl Tenant<'_> {
    /// Creates the tenant and a key for it.
    pub async fn new<'a>(app: &'a TestApp, slug: &str) -> Tenant<'a> {
        app.create_tenant(slug).await;
        Tenant {
            app,
            key: app.create_key(slug).await,
        }
    }

    /// Uploads a file as multipart, with `{"source": "test"}` as its metadata.
    pub async fn upload(&self, name: &str, mime: &str, bytes: Vec<u8>) -> Response {
        let part = Part::bytes(bytes)
            .file_name(name.to_owned())
            .mime_str(mime)
            .unwrap();
        self.app
            .client
            .post(self.app.url("/api/v1/documents/upload"))
            .bearer_auth(&self.key)
            .multipart(
                Form::new()
                    .part("file", part)
                    .text("metadata", r#"{"source": "test"}"#),
            )
            .send()
            .await
            .unwrap()
    }

    /// Creates the agent `support`: temperature 0, retrieval of the top 2 chunks.
    pub async fn support_agent(&self) {
        let r = self
            .post(
                "/api/v1/agents",
                &json!({"name": "support", "system_prompt": "You answer from the sources.",
                        "temperature": 0, "retrieval": {"top_k": 2}}),
            )
            .await;
        assert_eq!(r.status(), 201);
    }

    /// Adds a text document; returns its id.
    pub async fn add_text(&self, title: &str, text: &str) -> String {
        let r = self
            .post("/api/v1/documents", &json!({"title": title, "text": text}))
            .await;
        assert_eq!(r.status(), 202);
        r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn get(&self, path: &str) -> Response {
        self.app.tenant_get(path, &self.key).await
    }

    /// POSTs `body` as JSON with the tenant's key.
    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.app
            .client
            .post(self.app.url(path))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Waits until a document is ready or failed; returns it.
    pub async fn wait(&self, id: &str) -> Value {
        wait_document(&self.app.client, &self.app.base, &self.key, id).await
    }

    /// Searches the top 5 in `mode`; returns the results.
    pub async fn search(&self, query: &str, mode: &str) -> Vec<Value> {
        let r = self
            .post(
                "/api/v1/search",
                &json!({"query": query, "mode": mode, "top_k": 5}),
            )
            .await;
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.unwrap()["results"]
            .as_array()
            .unwrap()
            .clone()
    }
}

/// Waits until the document `id` of the server at `base` is ready or failed; returns
/// it.
pub async fn wait_document(client: &Client, base: &str, key: &str, id: &str) -> Value {
    let url = format!("{base}/api/v1/documents/{id}");
    let what = format!("document {id} to be ready or failed");
    eventually(Duration::from_secs(120), &what, || async {
        let v = get_json(client, &url, key).await;
        if v["status"] == "ready" || v["status"] == "failed" {
            Ok(v)
        } else {
            Err(v)
        }
    })
    .await
}

/// GETs `url` with `token` and returns the body as JSON.
pub async fn get_json(client: &Client, url: impl reqwest::IntoUrl, token: &str) -> Value {
    client
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}
