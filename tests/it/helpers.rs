//! Shared test helpers: start a server, make admin calls, create tenants and keys.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use ragbox::clock::ManualClock;
use ragbox::config::Config;
use ragbox::startup::{self, Hooks, Running};
use reqwest::{Client, Method, Response};
use serde_json::{Value, json};
use tempfile::TempDir;

pub const ADMIN_TOKEN: &str = "test-operator-token-0123456789";

/// The model folder of this checkout (fetched by `./install.sh --models-only`).
pub fn model_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2")
}

/// One embedding model for all in-process servers of the test binary.
pub fn shared_embedder() -> ragbox::ml::Embedder {
    static EMBEDDER: std::sync::OnceLock<ragbox::ml::Embedder> = std::sync::OnceLock::new();
    EMBEDDER
        .get_or_init(|| {
            let config = Config::default();
            let models = ragbox::config::ModelsConfig {
                embedding_dir: model_dir(),
                ..Default::default()
            };
            ragbox::ml::Embedder::load(&models, &config.embedding)
                .expect("embedding model: run ./install.sh --models-only first")
        })
        .clone()
}

/// One generation model for all in-process servers of the test binary.
pub fn shared_generator() -> ragbox::ml::Generator {
    static GENERATOR: std::sync::OnceLock<ragbox::ml::Generator> = std::sync::OnceLock::new();
    GENERATOR
        .get_or_init(|| {
            let config = Config::default();
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(&config.models.generation_file);
            ragbox::ml::Generator::load(&path, &config.generation)
                .expect("generation model: run ./install.sh --models-only first")
        })
        .clone()
}

/// A running server with its own data dir and a clock the test controls.
pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub clock: ManualClock,
    pub dir: TempDir,
    pub running: Option<Running>,
}

/// A config for tests: loopback port 0, fresh data dir, known operator token.
pub fn test_config(dir: &TempDir) -> Config {
    let mut config = Config::from_toml(&format!(
        "[server]\nbind = \"127.0.0.1:0\"\n[storage]\ndata_dir = \"{}\"\n[auth]\nadmin_token = \"{ADMIN_TOKEN}\"\n",
        dir.path().display()
    ))
    .unwrap();
    config.log.level = "warn".into();
    config.models.embedding_dir = model_dir();
    config.jobs.poll_interval_ms = 50;
    // In-process servers run inside the test binary: extraction children are ragbox.
    config.extraction.program = Some(env!("CARGO_BIN_EXE_ragbox").into());
    // Tests look at each component's state as it changes: no cached probes.
    config.health.cache_ms = 0;
    config.health.upstream_probe_secs = 0;
    // The test clock stands still, so buckets would never refill: no request rate limit
    // unless a test sets one.
    config.limits.requests_per_minute = 0;
    config
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let app = Self::start(tweak, None).await;
        app.wait_ready().await;
        app
    }

    /// Starts without waiting for readiness; `gate` holds startup open until it resolves.
    pub async fn start(
        tweak: impl FnOnce(&mut Config),
        gate: Option<BoxFuture<'static, ()>>,
    ) -> Self {
        Self::start_with_embedder(tweak, gate, shared_embedder()).await
    }

    /// As `start`, with an embedder of the test's own (other queue settings).
    pub async fn start_with_embedder(
        tweak: impl FnOnce(&mut Config),
        gate: Option<BoxFuture<'static, ()>>,
        embedder: ragbox::ml::Embedder,
    ) -> Self {
        Self::start_with_models(tweak, gate, embedder, shared_generator()).await
    }

    /// As `start`, with models of the test's own (other queue settings, counters no
    /// other test moves).
    pub async fn start_with_models(
        tweak: impl FnOnce(&mut Config),
        gate: Option<BoxFuture<'static, ()>>,
        embedder: ragbox::ml::Embedder,
        generator: ragbox::ml::Generator,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&dir);
        tweak(&mut config);
        let clock = ManualClock::new();
        let running = startup::start(
            config,
            Hooks {
                clock: Some(Arc::new(clock.clone())),
                before_ready: gate,
                embedder: Some(embedder),
                generator: Some(generator),
            },
        )
        .await
        .unwrap();
        Self {
            base: format!("http://{}", running.addr),
            client: Client::new(),
            clock,
            dir,
            running: Some(running),
        }
    }

    /// Polls `/health/ready` until it answers 200.
    pub async fn wait_ready(&self) {
        for _ in 0..500 {
            if let Ok(r) = self.client.get(self.url("/health/ready")).send().await
                && r.status() == 200
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("server never became ready");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Response {
        let mut req = self
            .client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        req.send().await.unwrap()
    }

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

    pub async fn create_key(&self, tenant: &str) -> String {
        let v = self.create_key_with(tenant, json!({"name": "test"})).await;
        v["key"].as_str().unwrap().to_owned()
    }

    /// GET as a tenant.
    pub async fn tenant_get(&self, path: &str, token: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await.unwrap();
        }
    }
}

/// Asserts the shared error shape and returns the code.
pub async fn error_code(r: Response, status: u16) -> String {
    assert_eq!(r.status(), status, "status");
    let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/json"), "content type {ct}");
    let v: Value = r.json().await.unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 1, "only `error` at the top: {v}");
    let err = v["error"].as_object().unwrap();
    assert_eq!(err.len(), 2, "code and message only: {v}");
    assert!(!err["message"].as_str().unwrap().is_empty());
    err["code"].as_str().unwrap().to_owned()
}

/// A PDF of numbered objects with a correct cross-reference table.
pub fn pdf_of(objects: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n", i + 1).into_bytes());
        out.extend(body);
        out.extend(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).into_bytes());
    for o in offsets {
        out.extend(format!("{o:010} 00000 n \n").into_bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .into_bytes(),
    );
    out
}

/// An embedding model whose queue holds one request of one text: a burst fills it.
pub fn tiny_queue_embedder() -> ragbox::ml::Embedder {
    let mut settings = Config::default().embedding;
    settings.queue_capacity = 1;
    settings.batch_size = 1;
    let models = ragbox::config::ModelsConfig {
        embedding_dir: model_dir(),
        ..Default::default()
    };
    ragbox::ml::Embedder::load(&models, &settings).unwrap()
}
