//! `ragbox bench ingest`: end-to-end ingestion of files into a scratch data dir, beside
//! the raw embedding throughput on the same chunks.

use std::path::PathBuf;
use std::time::Instant;

use super::{cpu_secs, scratch};
use crate::cli::knowledge;
use crate::config::Config;
use crate::store::chunks;

pub(super) async fn run(config: Config, paths: &[PathBuf]) -> anyhow::Result<()> {
    let files = knowledge::collect_files(paths)?;
    let (dir, core, tenant, k) = scratch(config).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let runner = crate::services::ingest::local_runner(k.clone())?;
    let workers = tokio::spawn(k.queue.clone().run(runner, stop.clone()));
    let (started, cpu) = (Instant::now(), cpu_secs());
    let summary = knowledge::upload_files(k.intake(), &tenant.id, &files, false).await?;
    let uploaded = started.elapsed().as_secs_f64();
    let (ready, failed) =
        knowledge::wait_for(k.intake(), &tenant.id, &summary.queued, false).await?;
    let secs = started.elapsed().as_secs_f64();
    let ingest_cpu = cpu_secs() - cpu;
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
    let (started, cpu) = (Instant::now(), cpu_secs());
    k.embedder.embed_waiting(texts.clone()).await?;
    let raw = started.elapsed().as_secs_f64();
    println!(
        "CPU time (this process and its extraction children): ingest {ingest_cpu:.1} s, raw embedding {:.1} s",
        cpu_secs() - cpu
    );
    println!(
        "raw embedding of the same {} chunks: {raw:.2} s = {:.1} chunks/s; ingest reaches {:.0}% of it",
        texts.len(),
        texts.len() as f64 / raw,
        100.0 * (texts.len() as f64 / secs) / (texts.len() as f64 / raw)
    );
    // The same chunks a document at a time, as ingestion hands them to the model.
    let t = tenant.id.clone();
    let by_document: Vec<Vec<String>> = core
        .db
        .call(move |c| {
            let mut stmt = c.prepare(
                "SELECT document_id, text FROM chunks WHERE tenant_id = ?1
                 ORDER BY document_id, chunk_index",
            )?;
            let rows = stmt.query_map([t.as_str()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            let mut out: Vec<(String, Vec<String>)> = Vec::new();
            for row in rows {
                let (d, text) = row?;
                match out.last_mut() {
                    Some((last, texts)) if *last == d => texts.push(text),
                    _ => out.push((d, vec![text])),
                }
            }
            Ok(out.into_iter().map(|(_, t)| t).collect())
        })
        .await?;
    let started = Instant::now();
    for texts in by_document {
        k.embedder.embed_waiting(texts).await?;
    }
    let per_document = started.elapsed().as_secs_f64();
    println!(
        "the same chunks embedded a document at a time: {per_document:.2} s = {:.1} chunks/s",
        texts.len() as f64 / per_document
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
