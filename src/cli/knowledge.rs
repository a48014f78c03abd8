//! `ragbox ingest`, `ragbox search`, `ragbox reindex`. With no server running they open
//! the data dir's stores themselves (ingest then runs the jobs in process). When a
//! `ragbox serve` holds the vector store (one process may), they work through it:
//! ingest queues the documents in the shared database and job queue and the server
//! processes them; search and reindex call the server's HTTP API on `server.bind`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::domain::TenantRef;
use crate::services::documents::{self, NewDocument};
use crate::services::search::{self, Mode, Query};
use crate::services::{Core, Intake, keys, reindex, tenants};
use crate::startup;
use crate::store::documents::Status;

/// `ragbox ingest`.
#[derive(Debug, clap::Args)]
pub struct IngestArgs {
    /// Files and folders (folders are walked recursively).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Tenant id or slug.
    #[arg(long)]
    pub tenant: String,
    /// Queue the documents and return without waiting for processing.
    #[arg(long)]
    pub no_wait: bool,
}

/// `ragbox search`.
#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    /// What to look for.
    pub query: String,
    /// Tenant id or slug.
    #[arg(long)]
    pub tenant: String,
    /// hybrid, vector or keyword.
    #[arg(long, default_value = "hybrid")]
    pub mode: String,
    /// Results.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
}

const ACCEPTED_EXTENSIONS: [&str; 8] =
    ["txt", "text", "md", "markdown", "html", "htm", "pdf", "log"];

/// Every accepted file under the paths, sorted.
pub fn collect_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        if p.is_dir() {
            for entry in std::fs::read_dir(p)? {
                walk(&entry?.path(), out)?;
            }
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| ACCEPTED_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(p.to_path_buf());
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        anyhow::ensure!(p.exists(), "{} does not exist", p.display());
        walk(p, &mut out)?;
    }
    out.sort();
    Ok(out)
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template(&format!("{what} {{bar:40}} {{pos}}/{{len}} {{elapsed}}"))
    {
        bar.set_style(style);
    }
    bar
}

/// Result of an ingestion run.
pub struct IngestSummary {
    /// Documents newly queued.
    pub queued: Vec<String>,
    /// Files whose content the tenant had already.
    pub duplicates: usize,
    /// Files refused, with the reason.
    pub refused: Vec<(PathBuf, String)>,
}

/// Uploads files as documents of a tenant.
pub async fn upload_files(
    k: Intake<'_>,
    tenant: &crate::domain::TenantId,
    files: &[PathBuf],
    show: bool,
) -> anyhow::Result<IngestSummary> {
    let progress = show.then(|| bar(files.len() as u64, "upload"));
    let mut summary = IngestSummary {
        queued: Vec::new(),
        duplicates: 0,
        refused: Vec::new(),
    };
    for file in files {
        let bytes = tokio::fs::read(file).await?;
        let new = NewDocument {
            title: None,
            filename: file.file_name().map(|n| n.to_string_lossy().into_owned()),
            content_type: None,
            metadata: Some(serde_json::Map::from_iter([(
                "path".to_owned(),
                serde_json::Value::String(file.display().to_string()),
            )])),
            bytes,
        };
        match documents::create(k, tenant, new).await {
            Ok((doc, true)) => summary.queued.push(doc.id),
            Ok((_, false)) => summary.duplicates += 1,
            Err(e) => summary.refused.push((file.clone(), e.to_string())),
        }
        if let Some(p) = &progress {
            p.inc(1);
        }
    }
    if let Some(p) = progress {
        p.finish();
    }
    Ok(summary)
}

/// Waits until every document is ready or failed; returns (ready, failed ids).
pub async fn wait_for(
    k: Intake<'_>,
    tenant: &crate::domain::TenantId,
    ids: &[String],
    show: bool,
) -> anyhow::Result<(usize, Vec<(String, String)>)> {
    let progress = show.then(|| bar(ids.len() as u64, "process"));
    let mut pending: Vec<String> = ids.to_vec();
    let mut ready = 0;
    let mut failed = Vec::new();
    while !pending.is_empty() {
        // Documents are processed about in the order they were queued: each round
        // reads them in that order up to the first one still waiting, so a long list
        // costs a few reads a round instead of one per document (which would take CPU
        // from the processing it waits for).
        let mut still = Vec::new();
        let mut rest = pending.into_iter();
        for id in rest.by_ref() {
            let doc = documents::get(k, tenant, &id).await?;
            match doc.status {
                Status::Ready => ready += 1,
                Status::Failed => failed.push((
                    format!("{} ({id})", doc.title),
                    doc.last_error.unwrap_or_default(),
                )),
                _ => {
                    still.push(id);
                    break;
                }
            }
            if let Some(p) = &progress {
                p.inc(1);
            }
        }
        still.extend(rest);
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    if let Some(p) = progress {
        p.finish();
    }
    Ok((ready, failed))
}

/// `ragbox ingest`.
pub async fn ingest(core: Core, args: IngestArgs) -> anyhow::Result<ExitCode> {
    let tenant = tenants::get(&core, &TenantRef::parse(&args.tenant)?).await?;
    let files = collect_files(&args.paths)?;
    anyhow::ensure!(
        !files.is_empty(),
        "no .txt, .md, .html or .pdf files under the given paths"
    );
    let started = Instant::now();
    let Some(vectors) = startup::open_vectors(&core.config).await? else {
        // A server holds the store: queue for it and follow the documents' status.
        eprintln!("a running ragbox server holds the data dir; it processes the documents");
        let queue = startup::open_queue(&core.config).await?;
        let k = Intake {
            core: &core,
            queue: &queue,
        };
        let summary = upload_files(k, &tenant.id, &files, true).await?;
        let failed = if args.no_wait {
            None
        } else {
            Some(wait_for(k, &tenant.id, &summary.queued, true).await?)
        };
        return Ok(report(&summary, failed, started));
    };
    let k = startup::assemble_knowledge(core, None, vectors).await?;
    let summary = upload_files(k.intake(), &tenant.id, &files, true).await?;
    if args.no_wait {
        return Ok(report(&summary, None, started));
    }
    let stop = CancellationToken::new();
    let runner = crate::services::ingest::local_runner(k.clone())?;
    let workers = tokio::spawn(k.queue.clone().run(runner, stop.clone()));
    let outcome = wait_for(k.intake(), &tenant.id, &summary.queued, true).await?;
    stop.cancel();
    let _ = workers.await;
    let vectors = k.vectors.clone();
    tokio::task::spawn_blocking(move || vectors.persist()).await??;
    Ok(report(&summary, Some(outcome), started))
}

/// Prints what an ingest did; failure when anything was refused or failed.
fn report(
    summary: &IngestSummary,
    outcome: Option<(usize, Vec<(String, String)>)>,
    started: Instant,
) -> ExitCode {
    for (path, why) in &summary.refused {
        eprintln!("refused {}: {why}", path.display());
    }
    let Some((ready, failed)) = outcome else {
        println!(
            "queued {}, duplicates {}, refused {}; a running `ragbox serve` processes them",
            summary.queued.len(),
            summary.duplicates,
            summary.refused.len()
        );
        return if summary.refused.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    };
    for (doc, why) in &failed {
        eprintln!("failed {doc}: {why}");
    }
    println!(
        "ready {ready}, failed {}, duplicates {}, refused {} in {:.1} s",
        failed.len(),
        summary.duplicates,
        summary.refused.len(),
        started.elapsed().as_secs_f64()
    );
    if failed.is_empty() && summary.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// One search result as printed.
struct Printed {
    score: f32,
    title: String,
    chunk_index: u64,
    start: u64,
    end: u64,
    text: String,
}

/// `ragbox search`.
pub async fn search(core: Core, args: SearchArgs) -> anyhow::Result<ExitCode> {
    let tenant = tenants::get(&core, &TenantRef::parse(&args.tenant)?).await?;
    let mode = Mode::parse(&args.mode)?;
    let found = match startup::open_vectors(&core.config).await? {
        Some(vectors) => {
            let k = startup::assemble_knowledge(core, None, vectors).await?;
            let query = Query {
                text: args.query,
                top_k: args.top_k,
                mode,
                document_ids: None,
                min_score: None,
            };
            search::search(&k, &tenant.id, query)
                .await?
                .into_iter()
                .map(|f| Printed {
                    score: f.score,
                    title: f.chunk.title,
                    chunk_index: u64::from(f.chunk.chunk_index),
                    start: f.chunk.start,
                    end: f.chunk.end,
                    text: f.chunk.text,
                })
                .collect()
        }
        None => search_through_server(&core, &tenant.id, &args).await?,
    };
    if found.is_empty() {
        eprintln!("no results");
    }
    for (i, f) in found.iter().enumerate() {
        println!(
            "[{}] {:.4}  {} (chunk {}, chars {}-{})",
            i + 1,
            f.score,
            f.title,
            f.chunk_index,
            f.start,
            f.end
        );
        let preview: String = f
            .text
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .take(300)
            .collect();
        println!("    {preview}\n");
    }
    Ok(ExitCode::SUCCESS)
}

/// The running server's base URL, from `server.bind` (a wildcard address means this host).
pub fn server_url(config: &crate::config::Config) -> String {
    let bind = config.server.bind;
    let ip = match bind.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_owned(),
        std::net::IpAddr::V4(ip) => ip.to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
    };
    format!("http://{ip}:{}", bind.port())
}

/// The server's answer when it succeeded; otherwise an error with its status and body
/// (read as text, since an error from a proxy in front of it need not be JSON).
pub async fn succeeded(answer: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = answer.status();
    if status.is_success() {
        return Ok(answer);
    }
    let body = answer.text().await.unwrap_or_default();
    anyhow::bail!("the server answered {status}: {}", body.trim())
}

/// A read-only key of the tenant for talking to the running server; the caller revokes
/// it when done, and it expires after `lifetime` in any case.
pub async fn temporary_read_key(
    core: &Core,
    tenant: &crate::domain::TenantId,
    command: &str,
    lifetime: chrono::Duration,
) -> anyhow::Result<keys::CreatedKey> {
    Ok(keys::create(
        core,
        &TenantRef::Id(tenant.clone()),
        keys::NewKey {
            name: format!("ragbox {command} (CLI, temporary)"),
            scopes: crate::domain::Scopes::from_list(&[crate::domain::Scope::Read]),
            expires_at: Some(core.clock.now() + lifetime),
        },
    )
    .await?)
}

/// Searches through the running server with a read-only key that lives for this call.
async fn search_through_server(
    core: &Core,
    tenant: &crate::domain::TenantId,
    args: &SearchArgs,
) -> anyhow::Result<Vec<Printed>> {
    let tenant_ref = TenantRef::Id(tenant.clone());
    let key = temporary_read_key(core, tenant, "search", chrono::Duration::minutes(5)).await?;
    let answer = reqwest::Client::new()
        .post(format!("{}/api/v1/search", server_url(&core.config)))
        .bearer_auth(&key.secret)
        .json(&serde_json::json!({"query": args.query, "mode": args.mode, "top_k": args.top_k}))
        .send()
        .await;
    let _ = keys::revoke(core, &tenant_ref, &key.key.id).await;
    let answer = answer.map_err(|e| {
        anyhow::anyhow!(
            "the data dir is in use, but no server answers at {}: {e}",
            server_url(&core.config)
        )
    })?;
    let body: serde_json::Value = succeeded(answer).await?.json().await?;
    let results = body["results"].as_array().cloned().unwrap_or_default();
    Ok(results
        .into_iter()
        .map(|r| Printed {
            score: r["score"].as_f64().unwrap_or(0.0) as f32,
            title: r["title"].as_str().unwrap_or_default().to_owned(),
            chunk_index: r["chunk_index"].as_u64().unwrap_or(0),
            start: r["start"].as_u64().unwrap_or(0),
            end: r["end"].as_u64().unwrap_or(0),
            text: r["text"].as_str().unwrap_or_default().to_owned(),
        })
        .collect())
}

/// `ragbox reindex`.
pub async fn reindex(core: Core, tenant: String) -> anyhow::Result<ExitCode> {
    let tenant = tenants::get(&core, &TenantRef::parse(&tenant)?).await?;
    let started = Instant::now();
    let count = match startup::open_vectors(&core.config).await? {
        Some(store) => {
            let done = reindex::reindex(store.clone(), &tenant.id).await?;
            tokio::task::spawn_blocking(move || store.persist()).await??;
            done.vectors
        }
        None => {
            // The server holds the store: ask it, as the operator.
            let token = startup::admin_token(&core.config)?;
            let url = format!(
                "{}/api/v1/admin/tenants/{}/reindex",
                server_url(&core.config),
                tenant.id
            );
            let answer = reqwest::Client::new()
                .post(&url)
                .bearer_auth(token.expose())
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("the data dir is in use, but {url} failed: {e}"))?;
            let body: serde_json::Value = succeeded(answer).await?.json().await?;
            body["vectors"].as_u64().unwrap_or(0) as usize
        }
    };
    println!(
        "rebuilt the index of {count} vectors in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
