//! `ragbox ingest`, `ragbox search`, `ragbox reindex`. They open the data dir's stores
//! themselves, so they need the server to be stopped (the vector store is opened by
//! one process at a time); with the server running, use the HTTP API.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::domain::TenantRef;
use crate::services::documents::{self, NewDocument};
use crate::services::search::{self, Mode, Query};
use crate::services::{Core, Knowledge, tenants};
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
    k: &Knowledge,
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
    k: &Knowledge,
    tenant: &crate::domain::TenantId,
    ids: &[String],
    show: bool,
) -> anyhow::Result<(usize, Vec<(String, String)>)> {
    let progress = show.then(|| bar(ids.len() as u64, "process"));
    let mut pending: Vec<String> = ids.to_vec();
    let mut ready = 0;
    let mut failed = Vec::new();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let doc = documents::get(k, tenant, &id).await?;
            match doc.status {
                Status::Ready => ready += 1,
                Status::Failed => failed.push((
                    format!("{} ({id})", doc.title),
                    doc.last_error.unwrap_or_default(),
                )),
                _ => {
                    still.push(id);
                    continue;
                }
            }
            if let Some(p) = &progress {
                p.inc(1);
            }
        }
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
    let k = startup::open_knowledge(core, None).await?;
    let started = Instant::now();
    let summary = upload_files(&k, &tenant.id, &files, true).await?;
    for (path, why) in &summary.refused {
        eprintln!("refused {}: {why}", path.display());
    }
    if args.no_wait {
        println!(
            "queued {}, duplicates {}, refused {}; a running `ragbox serve` processes them",
            summary.queued.len(),
            summary.duplicates,
            summary.refused.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let stop = CancellationToken::new();
    let workers = tokio::spawn(
        k.queue
            .clone()
            .run(std::sync::Arc::new(k.clone()), stop.clone()),
    );
    let (ready, failed) = wait_for(&k, &tenant.id, &summary.queued, true).await?;
    stop.cancel();
    let _ = workers.await;
    let vectors = k.vectors.clone();
    tokio::task::spawn_blocking(move || vectors.persist()).await??;
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
    Ok(if failed.is_empty() && summary.refused.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `ragbox search`.
pub async fn search(core: Core, args: SearchArgs) -> anyhow::Result<ExitCode> {
    let tenant = tenants::get(&core, &TenantRef::parse(&args.tenant)?).await?;
    let mode = match args.mode.as_str() {
        "hybrid" => Mode::Hybrid,
        "vector" => Mode::Vector,
        "keyword" => Mode::Keyword,
        other => anyhow::bail!("unknown mode `{other}`: use hybrid, vector or keyword"),
    };
    let k = startup::open_knowledge(core, None).await?;
    let found = search::search(
        &k,
        &tenant.id,
        Query {
            text: args.query,
            top_k: args.top_k,
            mode,
            document_ids: None,
            min_score: None,
        },
    )
    .await?;
    if found.is_empty() {
        eprintln!("no results");
    }
    for (i, f) in found.iter().enumerate() {
        println!(
            "[{}] {:.4}  {} (chunk {}, chars {}-{})",
            i + 1,
            f.score,
            f.chunk.title,
            f.chunk.chunk_index,
            f.chunk.start,
            f.chunk.end
        );
        let preview: String = f
            .chunk
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

/// `ragbox reindex`.
pub async fn reindex(core: Core, tenant: String) -> anyhow::Result<ExitCode> {
    let tenant = tenants::get(&core, &TenantRef::parse(&tenant)?).await?;
    let data_dir = core.config.storage.data_dir.clone();
    let index = core.config.index.clone();
    let started = Instant::now();
    let count = tokio::task::spawn_blocking(move || -> anyhow::Result<usize> {
        use crate::store::vectors::{LocalVectorStore, VectorStore};
        let store = LocalVectorStore::open(&data_dir, crate::ml::embedder::DIM, index)?;
        let n = store.rebuild(&tenant.id)?;
        store.persist()?;
        Ok(n)
    })
    .await??;
    println!(
        "rebuilt the index of {count} vectors in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
