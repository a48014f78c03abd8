//! The server under test: the real one, started in-process on `127.0.0.1:0` with a
//! fresh data dir and a clock the test controls, through the same startup code as
//! `ragbox serve`.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use ragbox::clock::ManualClock;
use ragbox::config::Config;
use ragbox::ml::{Embedder, Generator};
use ragbox::startup::{self, Hooks, Running};
use reqwest::{Client, Method, Response};
use serde_json::Value;
use tempfile::TempDir;

use super::models::{model_dir, shared_embedder, shared_generator};

/// The operator token of every test server.
pub const ADMIN_TOKEN: &str = "test-operator-token-0123456789";

/// A config for tests: loopback port 0, the given data dir, known operator token.
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

/// A running server with its own data dir and a clock the test controls.
pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub clock: ManualClock,
    pub dir: TempDir,
    pub running: Option<Running>,
}

/// A change to the test config.
type Tweak<'a> = Box<dyn FnOnce(&mut Config) + 'a>;

/// How a test server is made: `TestApp::builder()`, then what differs from the
/// defaults, then `start()`.
#[must_use]
pub struct TestAppBuilder<'a> {
    tweaks: Vec<Tweak<'a>>,
    embedder: Option<Embedder>,
    generator: Option<Generator>,
    gate: Option<BoxFuture<'static, ()>>,
}

impl<'a> TestAppBuilder<'a> {
    /// Changes the config (on top of [`test_config`]).
    pub fn config(mut self, tweak: impl FnOnce(&mut Config) + 'a) -> Self {
        self.tweaks.push(Box::new(tweak));
        self
    }

    /// An embedding model of the test's own instead of the shared one.
    pub fn embedder(mut self, embedder: Embedder) -> Self {
        self.embedder = Some(embedder);
        self
    }

    /// A generation model of the test's own instead of the shared one.
    pub fn generator(mut self, generator: Generator) -> Self {
        self.generator = Some(generator);
        self
    }

    /// Holds startup open until `gate` resolves: the server listens but is not ready.
    /// Start such a server with [`Self::start_listening`].
    pub fn gate(mut self, gate: impl Future<Output = ()> + Send + 'static) -> Self {
        self.gate = Some(gate.boxed());
        self
    }

    /// Starts the server and waits until `/health/ready` answers 200.
    pub async fn start(self) -> TestApp {
        let app = self.start_listening().await;
        app.wait_ready().await;
        app
    }

    /// Starts the server and returns as soon as it listens, ready or not.
    pub async fn start_listening(self) -> TestApp {
        super::log::init();
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(&dir);
        for tweak in self.tweaks {
            tweak(&mut config);
        }
        let clock = ManualClock::new();
        let hooks = Hooks {
            clock: Some(Arc::new(clock.clone())),
            before_ready: self.gate,
            embedder: Some(self.embedder.unwrap_or_else(shared_embedder)),
            generator: Some(self.generator.unwrap_or_else(shared_generator)),
        };
        let running = startup::start(config, hooks).await.unwrap();
        TestApp {
            base: format!("http://{}", running.addr),
            client: Client::new(),
            clock,
            dir,
            running: Some(running),
        }
    }
}

impl TestApp {
    /// A server to configure before it starts.
    pub fn builder<'a>() -> TestAppBuilder<'a> {
        TestAppBuilder {
            tweaks: Vec::new(),
            embedder: None,
            generator: None,
            gate: None,
        }
    }

    /// A server with the test defaults, ready: `TestApp::builder().start()`.
    pub async fn spawn() -> Self {
        Self::builder().start().await
    }

    /// Waits until `/health/ready` answers 200.
    pub async fn wait_ready(&self) {
        wait_ready(&self.base).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A call with the operator token, with `body` as JSON if given.
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

    /// GET without credentials (probes, docs), its status and JSON body.
    pub async fn public_json(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// GET with a tenant's key or token.
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

/// Waits until the server at `base` answers `/health/ready` with 200.
pub async fn wait_ready(base: &str) {
    let client = Client::new();
    let url = format!("{base}/health/ready");
    super::eventually(
        Duration::from_secs(30),
        "the server to be ready",
        || async {
            match client.get(&url).send().await {
                Ok(r) if r.status() == 200 => Ok(()),
                Ok(r) => Err(format!("status {}", r.status())),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
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
