//! `ragbox bench ingest`: end-to-end ingestion of files into a scratch data dir, beside
//! the raw embedding throughput on the same chunks.

use std::path::PathBuf;
use std::time::Instant;

use super::scratch;
use crate::cli::knowledge;
use crate::config::Config;
use crate::store::chunks;

pub(super) async fn run(config: Config, paths: &[PathBuf]) -> anyhow::Result<()> {
    let files = knowledge::collect_files(paths)?;
    let (dir, core, tenant, k) = scratch(config).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let runner = crate::services::ingest::local_runner(k.clone())?;
    let workers = tokio::spawn(k.queue.clone().run(runner, stop.clone()));
    let started = Instant::now();
    let summary = knowledge::upload_files(k.intake(), &tenant.id, &files, false).await?;
    let uploaded = started.elapsed().as_secs_f64();
    let (ready, failed) =
        knowledge::wait_for(k.intake(), &tenant.id, &summary.queued, false).await?;
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = workers.await;
    let t = tenant.id.clone();
    let texts: Vec<String> = core.db.call(move |c| chunks::texts(c, &t)).await?;
    println!(
        "ingest: {} files ({} duplicates, {} refused) -> {ready} ready, {} failed, {} chunks in {secs:.2} s (uploads {uploaded:.2} s)",
        files.len(),
        summary.duplicates,
        summary.refused.len(),
        failed.len(),
        texts.len()
    );
    println!(
        "ingest rate: {:.1} documents/s, {:.1} chunks/s",
        ready as f64 / secs,
        texts.len() as f64 / secs
    );
    let started = Instant::now();
    k.embedder.embed_waiting(texts.clone()).await?;
    let raw = started.elapsed().as_secs_f64();
    println!(
        "raw embedding of the same {} chunks: {raw:.2} s = {:.1} chunks/s; ingest reaches {:.0}% of it",
        texts.len(),
        texts.len() as f64 / raw,
        100.0 * (texts.len() as f64 / secs) / (texts.len() as f64 / raw)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
