//! Upstream providers: Anthropic's Messages API against a local server that replays
//! the documented stream format, and the OpenAI-compatible provider against llama.cpp's
//! own server (built by `scripts/llama_server_venv.sh`) serving the same GGUF.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::{Data, Json};
use poem::{EndpointExt, Request, Response, Route, handler};
use ragbox::config::{Config, ProviderConfig, ProviderKind, Secret};
use serde_json::{Value, json};

use crate::chat::{question, sse_data, stream};
use crate::helpers::{TestApp, error_code};
use crate::knowledge::Tenant;

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
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, std::io::Error>(c.into_bytes())
        })
        .chain(
            futures_util::stream::once(async move {
                if stall {
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
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

async fn chat_stream(t: &Tenant<'_>, body: Value) -> reqwest::Response {
    t.post("/api/v1/chat/stream", &body).await
}

async fn create_agent(t: &Tenant<'_>, body: Value) -> reqwest::Response {
    t.post("/api/v1/agents", &body).await
}

/// `/health`'s generator check is `ok`, and the status follows it (200 or 503).
async fn assert_generator_check(app: &TestApp, ok: bool) {
    let r = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), if ok { 200 } else { 503 });
    let health: Value = r.json().await.unwrap();
    assert_eq!(health["checks"]["generator"], ok, "{health}");
}

fn parsed(events: &[String]) -> Vec<Value> {
    events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect()
}

fn joined_text(events: &[Value]) -> String {
    events.iter().filter_map(|e| e["text"].as_str()).collect()
}

#[tokio::test]
async fn anthropic_answers_through_an_agent_from_its_documented_stream() {
    let replay = Replay::start(Script::Answer).await;
    let provider = replay.provider();
    let app = TestApp::spawn_with(|c: &mut Config| {
        c.providers.insert("claude".into(), provider);
    })
    .await;
    let t = Tenant::new(&app, "acme").await;
    let doc = t
        .add_text(
            "Refund policy",
            "Refunds are accepted within 14 days of purchase.",
        )
        .await;
    t.wait(&doc).await;

    let r = create_agent(&t, json!({"name": "x", "provider": "nope"})).await;
    let message = error_code(r, 422).await;
    assert_eq!(message, "validation_failed");
    let r = create_agent(
        &t,
        json!({"name": "support", "provider": "claude", "model": "claude-x",
               "system_prompt": "You are Acme's support assistant."}),
    )
    .await;
    assert_eq!(r.status(), 201);
    let agent: Value = r.json().await.unwrap();
    assert_eq!(agent["provider"], "claude");

    let body = json!({"agent_id": agent["id"], "messages": question("How long do refunds take?")});
    let (_, events) = stream(&t, body.clone()).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let events = parsed(&events);
    assert_eq!(events[0]["sources"][0]["document_id"], doc.as_str());
    assert_eq!(joined_text(&events[1..]), "Hello from Claude [1].");

    // What Anthropic would have received.
    let seen = replay.seen();
    let (headers, sent) = &seen[0];
    assert_eq!(headers["x-api-key"], ANTHROPIC_KEY);
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert_eq!(sent["model"], "claude-x");
    assert_eq!(sent["stream"], true);
    let system = sent["system"].as_str().unwrap();
    assert!(
        system.starts_with("You are Acme's support assistant."),
        "{system}"
    );
    assert!(system.contains("[1] Refund policy\nRefunds are accepted within 14 days"));
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": "How long do refunds take?"}])
    );
    assert!(sent["max_tokens"].as_u64().unwrap() > 0);

    // The whole answer as JSON, with the usage Anthropic reported.
    let r = t.post("/api/v1/chat", &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["text"], "Hello from Claude [1].");
    assert_eq!(v["usage"]["prompt_tokens"], 25);
    assert_eq!(v["usage"]["completion_tokens"], 15);
    assert_eq!(v["usage"]["finish_reason"], "stop");
}

#[tokio::test]
async fn upstream_refusals_failures_and_silence_are_clean_errors() {
    let replay = Replay::start(Script::Refuse).await;
    let mut claude = replay.provider();
    claude.idle_timeout_ms = 300;
    let gone = ProviderConfig {
        kind: ProviderKind::Openai,
        base_url: Some(format!("{}/v1", dead_url())),
        model: "m".into(),
        ..ProviderConfig::default()
    };
    let app = TestApp::spawn_with(|c: &mut Config| {
        c.providers.insert("claude".into(), claude);
        c.providers.insert("gone".into(), gone);
    })
    .await;
    let t = Tenant::new(&app, "acme").await;
    let claude = create_agent(&t, json!({"name": "c", "provider": "claude"})).await;
    let claude: Value = claude.json().await.unwrap();
    let gone = create_agent(&t, json!({"name": "g", "provider": "gone"})).await;
    let gone: Value = gone.json().await.unwrap();
    let ask = |agent: &Value| json!({"agent_id": agent["id"], "messages": question("Hi?")});

    // Refused before the stream: 502 naming the provider and its status, no key.
    let r = chat_stream(&t, ask(&claude)).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "upstream_error");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("`claude` answered 401"), "{message}");
    assert!(message.contains("invalid x-api-key"), "{message}");
    assert!(!message.contains(ANTHROPIC_KEY));

    // Down: 502 too.
    let r = chat_stream(&t, ask(&gone)).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`gone`") && message.contains("unreachable"),
        "{message}"
    );

    // Failing mid-stream: the text so far, an error event, then [DONE].
    replay.set(Script::FailMidway);
    let r = chat_stream(&t, ask(&claude)).await;
    assert_eq!(r.status(), 200);
    let events = sse_data(&r.text().await.unwrap());
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let events = parsed(&events);
    assert_eq!(joined_text(&events), "Hel");
    let error = &events.last().unwrap()["error"];
    assert_eq!(error["code"], "upstream_error");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("overloaded_error: Overloaded"),
        "{error}"
    );

    // Silent past the idle timeout: an error event, not a hung stream.
    replay.set(Script::Stall);
    let r = chat_stream(&t, ask(&claude)).await;
    assert_eq!(r.status(), 200);
    let events = sse_data(&r.text().await.unwrap());
    let events = parsed(&events);
    let error = &events.last().unwrap()["error"];
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("no data within 300 ms"),
        "{error}"
    );
}

#[tokio::test]
async fn health_checks_the_default_upstream_and_chats_use_it() {
    let replay = Replay::start(Script::Answer).await;
    let provider = replay.provider();
    let app = TestApp::spawn_with(|c: &mut Config| {
        c.providers.insert("claude".into(), provider);
        c.generation.provider = "claude".into();
    })
    .await;
    assert_generator_check(&app, true).await;

    // Without an agent, a chat goes to the default provider.
    let t = Tenant::new(&app, "acme").await;
    let (_, events) = stream(
        &t,
        json!({"messages": question("Hi?"), "retrieval": {"enabled": false}}),
    )
    .await;
    assert_eq!(joined_text(&parsed(&events)), "Hello from Claude [1].");
    assert_eq!(replay.seen().len(), 1);

    // An upstream that does not answer fails the check.
    drop(replay);
    let down = ProviderConfig {
        base_url: Some(dead_url()),
        ..ProviderConfig::default()
    };
    let down = ProviderConfig {
        kind: ProviderKind::Anthropic,
        model: "m".into(),
        ..down
    };
    let app = TestApp::start(
        |c: &mut Config| {
            c.providers.insert("claude".into(), down);
            c.generation.provider = "claude".into();
        },
        None,
    )
    .await;
    assert_generator_check(&app, false).await;
}

/// llama.cpp's OpenAI-compatible server on the bundled GGUF, stopped when dropped.
pub struct LlamaServer {
    child: std::process::Child,
    pub base: String,
}

impl LlamaServer {
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
        let mut child = std::process::Command::new(python)
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(&model)
            .args(["--host", "127.0.0.1", "--port", &port])
            .args(["--n_ctx", "2048", "--n_threads", "2", "--verbose", "false"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}/v1");
        let client = reqwest::Client::new();
        for _ in 0..1200 {
            if let Ok(r) = client.get(format!("{base}/models")).send().await
                && r.status() == 200
            {
                return Self { child, base };
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("llama.cpp's server exited: {status}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = child.kill();
        panic!("llama.cpp's server did not answer within 120 s");
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn openai_compatible_provider_streams_from_llama_cpp_server() {
    let llama = LlamaServer::start().await;
    let provider = ProviderConfig {
        kind: ProviderKind::Openai,
        base_url: Some(llama.base.clone()),
        model: "smollm2".into(),
        context_tokens: 2048,
        ..ProviderConfig::default()
    };
    let app = TestApp::spawn_with(|c: &mut Config| {
        c.providers.insert("llama".into(), provider);
        c.generation.provider = "llama".into();
    })
    .await;
    assert_generator_check(&app, true).await;

    let t = Tenant::new(&app, "acme").await;
    let doc = t
        .add_text(
            "Reactor manual",
            "The Zorblax reactor in Plant 7 is cooled by liquid argon pumped from tank B.",
        )
        .await;
    t.wait(&doc).await;

    // Streamed, grounded: sources first, then llama.cpp's text, then [DONE].
    let (_, events) = stream(
        &t,
        json!({"messages": question("What cools the Zorblax reactor?"),
               "temperature": 0, "max_tokens": 32}),
    )
    .await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let events = parsed(&events);
    assert_eq!(events[0]["sources"][0]["document_id"], doc.as_str());
    assert!(
        events[1..].iter().all(|e| e["text"].is_string()),
        "{events:?}"
    );
    assert!(!joined_text(&events[1..]).trim().is_empty());

    // The same model answers a plain question the way the bundled model does.
    let (_, events) = stream(
        &t,
        json!({"messages": question("What is the capital of France?"),
               "retrieval": {"enabled": false}, "temperature": 0, "max_tokens": 24}),
    )
    .await;
    let text = joined_text(&parsed(&events));
    assert!(text.contains("Paris"), "{text}");

    // max_tokens reaches the server: the answer is cut, and says so.
    let r = t
        .post(
            "/api/v1/chat",
            &json!({"messages": question("Tell me a long story about a dragon."),
                      "retrieval": {"enabled": false}, "temperature": 0, "max_tokens": 3}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["usage"]["finish_reason"], "length", "{v}");
    assert!(
        v["usage"]["completion_tokens"].as_u64().unwrap() <= 3,
        "{v}"
    );
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0, "{v}");

    // The server stops: health says so and chats get a clean 502.
    drop(llama);
    assert_generator_check(&app, false).await;
    let r = chat_stream(&t, json!({"messages": question("Hi?")})).await;
    assert_eq!(error_code(r, 502).await, "upstream_error");
}
