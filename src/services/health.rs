//! Health checks: each touches its component for real, under a timeout, so that a
//! hung dependency reports failure instead of hanging the probe. The HTTP probes read
//! them through [`HealthCache`]: unauthenticated callers cannot make ragbox work (or
//! pay an upstream) more than the cache allows.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Core, Knowledge};
use crate::store::Db;
use crate::store::vectors::Backend;

/// The result of one check.
#[derive(Debug, Clone)]
pub struct Check {
    /// Component name, e.g. `database`.
    pub name: &'static str,
    /// Whether it works.
    pub ok: bool,
    /// What was seen, for logs and `ragbox check`.
    pub detail: String,
}

async fn timed<F>(name: &'static str, timeout: Duration, f: F) -> Check
where
    F: FnOnce() -> Result<String, String> + Send + 'static,
{
    timed_async(name, timeout, async move {
        tokio::task::spawn_blocking(f)
            .await
            .unwrap_or_else(|e| Err(format!("check panicked: {e}")))
    })
    .await
}

/// Runs every check: the stores always, the knowledge components and the generator
/// when given. The generator check is the default provider's: the bundled model's
/// thread, or a request to the upstream's model list.
pub async fn run(
    core: &Core,
    knowledge: Option<&Knowledge>,
    generator: Option<(&crate::ml::Generator, &crate::llm::Upstreams)>,
) -> Vec<Check> {
    run_with(core, knowledge, generator, None).await
}

async fn probe_upstream(timeout: Duration, upstream: &crate::llm::Upstream) -> Check {
    let upstream = upstream.clone();
    let check = timed_async("generator", timeout, async move { upstream.probe().await }).await;
    if !check.ok {
        tracing::warn!(check = "generator", detail = %check.detail, "the default provider does not answer");
    }
    check
}

async fn run_with(
    core: &Core,
    knowledge: Option<&Knowledge>,
    generator: Option<(&crate::ml::Generator, &crate::llm::Upstreams)>,
    upstream_probes: Option<&HealthCache>,
) -> Vec<Check> {
    let timeout = Duration::from_millis(core.config.health.check_timeout_ms);
    let db_path = core.db.path().to_path_buf();
    let data_dir = core.config.storage.data_dir.clone();
    let database = timed("database", timeout, move || {
        Db::probe(&db_path)
            .map(|v| format!("schema version {v}"))
            .map_err(|e| e.to_string())
    });
    let storage = timed("storage", timeout, move || {
        let probe = data_dir.join(".health-probe");
        std::fs::write(&probe, b"ok")
            .and_then(|_| std::fs::remove_file(&probe))
            .map(|_| format!("{} writable", data_dir.display()))
            .map_err(|e| format!("{} not writable: {e}", data_dir.display()))
    });
    let (database, storage) = tokio::join!(database, storage);
    let mut checks = vec![database, storage];
    if let Some(k) = knowledge {
        let vectors = k.vectors.clone();
        let queue = k.queue.clone();
        let embedder = k.embedder.clone();
        // A round trip to the store: named after Qdrant when the vectors live there.
        let vectors_check = match vectors.backend() {
            Backend::Local => "vectors",
            Backend::Qdrant => "qdrant",
        };
        let (v, q, e) = tokio::join!(
            timed(vectors_check, timeout, move || vectors
                .check()
                .map_err(|e| e.to_string())),
            timed_async("jobs", timeout, async move {
                queue
                    .pending()
                    .await
                    .map(|n| format!("{n} unfinished"))
                    .map_err(|e| e.to_string())
            }),
            // The model thread's life, not a forward pass: a probe never takes a place
            // in the queue that tenants' searches use.
            timed_async("embedding", timeout, async move {
                if embedder.is_running() {
                    Ok(format!("{}-d vectors", crate::ml::embedder::DIM))
                } else {
                    Err("the embedding thread has stopped".to_owned())
                }
            }),
        );
        checks.extend([v, q, e]);
        if let Some(redis) = k.queue.redis().cloned() {
            checks.push(
                timed_async("redis", timeout, async move {
                    redis
                        .ping()
                        .await
                        .map(|_| "answers".to_owned())
                        .map_err(|e| e.to_string())
                })
                .await,
            );
        }
    }
    let upstream = generator.map(|(_, u)| u.route(None));
    if let Some(Ok(Some(upstream))) = upstream {
        let check = match upstream_probes {
            Some(cache) => cache.upstream(timeout, &upstream).await,
            None => probe_upstream(timeout, &upstream).await,
        };
        checks.push(check);
    } else if let Some((g, _)) = generator {
        // A busy generator is healthy, and so is one still loading (its requests wait
        // in the queue); a failed load or a stopped model thread is not.
        let state = g.load_state();
        checks.push(if let crate::ml::generator::LoadState::Failed(why) = state {
            tracing::warn!(check = "generator", error = %why, "the generation model did not load");
            Check {
                name: "generator",
                ok: false,
                detail: format!("{} failed to load: {why}", g.name()),
            }
        } else if g.is_running() {
            let loaded = match state {
                crate::ml::generator::LoadState::Ready { secs } => {
                    format!("loaded in {secs:.2} s")
                }
                _ => "loading; requests wait for it".to_owned(),
            };
            Check {
                name: "generator",
                ok: true,
                detail: format!(
                    "{} {loaded}, {} tokens of context",
                    g.name(),
                    g.context_tokens()
                ),
            }
        } else {
            tracing::warn!(check = "generator", "the generator thread has stopped");
            Check {
                name: "generator",
                ok: false,
                detail: "the generator thread has stopped".into(),
            }
        });
    }
    checks
}

async fn timed_async<F>(name: &'static str, timeout: Duration, f: F) -> Check
where
    F: std::future::Future<Output = Result<String, String>>,
{
    let (ok, detail) = match tokio::time::timeout(timeout, f).await {
        Ok(Ok(detail)) => (true, detail),
        Ok(Err(e)) => (false, e),
        Err(_) => (
            false,
            format!("no answer within {} ms", timeout.as_millis()),
        ),
    };
    if !ok {
        tracing::warn!(check = name, %detail, "health check failed");
    }
    Check { name, ok, detail }
}

/// The checks as the HTTP probes see them: computed at most once per `ttl` (callers in
/// between get the last result; one probe runs at a time, the others wait for it), and
/// an upstream provider asked at most once per `upstream_ttl`.
pub struct HealthCache {
    ttl: Duration,
    upstream_ttl: Duration,
    last: tokio::sync::Mutex<Option<(Instant, Vec<Check>)>>,
    upstream: Mutex<Option<(Instant, Check)>>,
}

impl HealthCache {
    /// A cache keeping results for `ttl`, upstream answers for `upstream_ttl`.
    pub fn new(ttl: Duration, upstream_ttl: Duration) -> Self {
        Self {
            ttl,
            upstream_ttl,
            last: tokio::sync::Mutex::new(None),
            upstream: Mutex::new(None),
        }
    }

    /// The checks, fresh enough.
    pub async fn get(
        &self,
        core: &Core,
        knowledge: &Knowledge,
        generator: (&crate::ml::Generator, &crate::llm::Upstreams),
    ) -> Vec<Check> {
        let mut last = self.last.lock().await;
        if let Some((at, checks)) = last.as_ref()
            && at.elapsed() < self.ttl
        {
            return checks.clone();
        }
        let checks = run_with(core, Some(knowledge), Some(generator), Some(self)).await;
        *last = Some((Instant::now(), checks.clone()));
        checks
    }

    async fn upstream(&self, timeout: Duration, upstream: &crate::llm::Upstream) -> Check {
        if let Ok(cached) = self.upstream.lock()
            && let Some((at, check)) = cached.as_ref()
            && at.elapsed() < self.upstream_ttl
        {
            return check.clone();
        }
        let check = probe_upstream(timeout, upstream).await;
        if let Ok(mut cached) = self.upstream.lock() {
            *cached = Some((Instant::now(), check.clone()));
        }
        check
    }
}
