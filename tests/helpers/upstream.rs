//! Stand-ins for the upstream providers ragbox talks to: a local server that replays
//! Anthropic's documented stream format, llama.cpp's own OpenAI-compatible server
//! (built by `scripts/llama_server_venv.sh`) on the bundled GGUF, and an address
//! nothing listens on.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::{Data, Json};
use poem::{EndpointExt, Request, Response, Route, handler};
use ragbox::config::{Config, ProviderConfig, ProviderKind, Secret};
use serde_json::{Value, json};

use super::eventually;
use super::server::TestApp;

pub const ANTHROPIC_KEY: &str = "sk-ant-test-0123456789-never-logged";

/// What the replay server does with the next `POST /v1/messages`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Script {
    /// A whole answer: "Hello from Claude [1]." in the documented event sequence.
    Answer,
    /// 401 with Anthropic's error body.
    Refuse,
    /// One piece of text, then an `error` event (overloaded).
    FailMidway,
    /// `message_start`, then silence.
    Stall,
}

#[derive(Clone)]
struct ReplayState {
    script: Arc<Mutex<Script>>,
    seen: Arc<Mutex<Vec<(poem::http::HeaderMap, Value)>>>,
}

/// A local stand-in for Anthropic's API that replays its documented stream format.
pub struct Replay {
    pub base: String,
    state: ReplayState,
    server: tokio::task::JoinHandle<()>,
}

fn event(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

fn message_start() -> String {
    event(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": "msg_replay_1", "type": "message", "role": "assistant", "content": [],
            "model": "claude-replay", "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 1}}}),
    )
}

fn text_delta(text: &str) -> String {
    event(
        "content_block_delta",
        json!({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": text}}),
    )
}

fn authorized(req: &Request) -> bool {
    req.headers()
        .get("x-api-key")
        .is_some_and(|k| k == ANTHROPIC_KEY)
}

fn unauthorized() -> Response {
    Response::builder()
        .status(poem::http::StatusCode::UNAUTHORIZED)
        .content_type("application/json")
        .body(
            json!({"type": "error", "error": {"type": "authentication_error",
                   "message": "invalid x-api-key"}})
            .to_string(),
        )
}

#[handler]
async fn messages(req: &Request, body: Json<Value>, state: Data<&ReplayState>) -> Response {
    state
        .seen
        .lock()
        .unwrap()
        .push((req.headers().clone(), body.0));
    let script = *state.script.lock().unwrap();
    if script == Script::Refuse || !authorized(req) {
        return unauthorized();
    }
    let mut chunks: Vec<String> = vec![message_start()];
    match script {
        Script::Answer => {
            chunks.push(event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}),
            ));
            chunks.push(event("ping", json!({"type": "ping"})));
            let second = text_delta(" from Claude [1].");
            // One event split across two writes, as TCP may deliver it.
            let (a, b) = second.split_at(30);
            chunks.extend([text_delta("Hello"), a.to_owned(), b.to_owned()]);
            chunks.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ));
            chunks.push(event(
                "message_delta",
                json!({"type": "message_delta",
                       "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                       "usage": {"output_tokens": 15}}),
            ));
            chunks.push(event("message_stop", json!({"type": "message_stop"})));
        }
        Script::FailMidway => {
            chunks.push(text_delta("Hel"));
            chunks.push(event(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error",
                       "message": "Overloaded"}}),
            ));
        }
        Script::Stall | Script::Refuse => {}
    }
    let stall = script == Script::Stall;
    let body = futures_util::stream::iter(chunks)
        .then(|c| async move {
            // Part of the replay: events arrive apart, as from a remote server.
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, std::io::Error>(c.into_bytes())
        })
        .chain(
            futures_util::stream::once(async move {
                if stall {
                    // The behaviour under test: an upstream that goes silent.
                    tokio::time::sleep(Duration::from_secs(60)).await;
                }
                Ok(Vec::new())
            })
            .filter(|_| async move { false }),
        );
    Response::builder()
        .content_type("text/event-stream")
        .body(poem::Body::from_bytes_stream(body))
}

#[handler]
async fn models(req: &Request) -> Response {
    if !authorized(req) {
        return unauthorized();
    }
    Response::builder().content_type("application/json").body(
        json!({"data": [{"type": "model", "id": "claude-replay"}], "has_more": false}).to_string(),
    )
}

impl Replay {
    pub async fn start(script: Script) -> Self {
        let state = ReplayState {
            script: Arc::new(Mutex::new(script)),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let acceptor = TcpListener::bind("127.0.0.1:0")
            .into_acceptor()
            .await
            .unwrap();
        let addr = acceptor.local_addr()[0].as_socket_addr().copied().unwrap();
        let app = Route::new()
            .at("/v1/messages", poem::post(messages))
            .at("/v1/models", poem::get(models))
            .data(state.clone());
        let server = tokio::spawn(async move {
            let _ = poem::Server::new_with_acceptor(acceptor).run(app).await;
        });
        Self {
            base: format!("http://{addr}"),
            state,
            server,
        }
    }

    pub fn set(&self, script: Script) {
        *self.state.script.lock().unwrap() = script;
    }

    /// Headers and bodies of the messages requests so far.
    pub fn seen(&self) -> Vec<(poem::http::HeaderMap, Value)> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The provider section that points at this server.
    pub fn provider(&self) -> ProviderConfig {
        ProviderConfig {
            kind: ProviderKind::Anthropic,
            base_url: Some(self.base.clone()),
            api_key: Some(Secret::new(ANTHROPIC_KEY)),
            model: "claude-default".into(),
            idle_timeout_ms: 2_000,
            ..ProviderConfig::default()
        }
    }
}

impl Drop for Replay {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A loopback address nothing listens on.
pub fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

/// `/health`'s generator check is `ok`, and the status follows it (200 or 503).
pub async fn assert_generator_check(app: &TestApp, ok: bool) {
    let r = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), if ok { 200 } else { 503 });
    let health: Value = r.json().await.unwrap();
    assert_eq!(health["checks"]["generator"], ok, "{health}");
}

/// llama.cpp's OpenAI-compatible server on the bundled GGUF, stopped when dropped.
pub struct LlamaServer {
    child: std::process::Child,
    pub base: String,
}

impl LlamaServer {
    /// Starts the server and waits until it lists its model.
    pub async fn start() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = std::env::var_os("RAGBOX_TEST_LLAMA_PYTHON")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".venv-llama/bin/python"));
        assert!(
            python.exists(),
            "{} is missing: run scripts/llama_server_venv.sh first (.ci/run does)",
            python.display()
        );
        let model = root.join(Config::default().models.generation_file);
        let port = dead_url().rsplit(':').next().unwrap().to_owned();
        let stderr = if super::log::enabled() {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        };
        let child = std::process::Command::new(python)
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(&model)
            .args(["--host", "127.0.0.1", "--port", &port])
            .args(["--n_ctx", "2048", "--n_threads", "2", "--verbose", "false"])
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        // Made before the wait, so that a failed wait kills the child as it unwinds.
        let mut server = Self {
            child,
            base: format!("http://127.0.0.1:{port}/v1"),
        };
        let client = reqwest::Client::new();
        let listing = format!("{}/models", server.base);
        eventually(
            Duration::from_secs(120),
            "llama.cpp's server to list its model",
            || {
                if let Some(status) = server.child.try_wait().unwrap() {
                    panic!("llama.cpp's server exited: {status}");
                }
                let listed = client.get(&listing).send();
                async move {
                    match listed.await {
                        Ok(r) if r.status() == 200 => Ok(()),
                        Ok(r) => Err(format!("status {}", r.status())),
                        Err(e) => Err(e.to_string()),
                    }
                }
            },
        )
        .await;
        server
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
