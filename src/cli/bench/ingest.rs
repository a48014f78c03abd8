//! `ragbox bench ingest`: end-to-end ingestion of files into a scratch data dir, beside
//! the raw embedding throughput on the same chunks, for one or more rounds.

use std::path::PathBuf;
use std::time::Instant;

use super::{cpu_by_thread, cpu_secs, cpu_spent, scratch};
use crate::cli::knowledge;
use crate::config::Config;
use crate::store::chunks;

pub(super) async fn run(
    config: Config,
    paths: &[PathBuf],
    rounds: u32,
    per_document: bool,
) -> anyhow::Result<()> {
    let files = knowledge::collect_files(paths)?;
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        if rounds > 1 {
            println!("round {round} of {rounds}");
        }
        ratios.push(one_round(config.clone(), &files, per_document).await?);
    }
    if rounds > 1 {
        ratios.sort_by(f64::total_cmp);
        let list: Vec<String> = ratios
            .iter()
            .map(|r| format!("{:.0}%", 100.0 * r))
            .collect();
        println!(
            "ingest against raw embedding over {rounds} rounds: median {:.0}%, mean {:.0}% (each: {})",
            100.0 * ratios[ratios.len() / 2],
            100.0 * ratios.iter().sum::<f64>() / ratios.len() as f64,
            list.join(", ")
        );
    }
    Ok(())
}

/// Ingests `files` into a fresh scratch data dir, then embeds the same chunks raw;
/// returns ingestion's rate as a fraction of the raw rate.
async fn one_round(config: Config, files: &[PathBuf], per_document: bool) -> anyhow::Result<f64> {
    let (dir, core, tenant, k) = scratch(config).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let runner = crate::services::ingest::local_runner(k.clone())?;
    let workers = tokio::spawn(k.queue.clone().run(runner, stop.clone()));
    let (started, cpu, threads) = (Instant::now(), cpu_secs(), cpu_by_thread());
    let summary = knowledge::upload_files(k.intake(), &tenant.id, files, false).await?;
    let uploaded = started.elapsed().as_secs_f64();
    let (ready, failed) =
        knowledge::wait_for(k.intake(), &tenant.id, &summary.queued, false).await?;
    let secs = started.elapsed().as_secs_f64();
    let ingest_cpu = cpu_secs() - cpu;
    let ingest_threads = cpu_spent(&threads, &cpu_by_thread());
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
    let (started, cpu, threads) = (Instant::now(), cpu_secs(), cpu_by_thread());
    k.embedder.embed_waiting(texts.clone()).await?;
    let raw = started.elapsed().as_secs_f64();
    println!(
        "CPU time (this process and its extraction children): ingest {ingest_cpu:.1} s, raw embedding {:.1} s",
        cpu_secs() - cpu
    );
    println!("  by thread, ingest: {ingest_threads}");
    println!(
        "  by thread, raw embedding: {}",
        cpu_spent(&threads, &cpu_by_thread())
    );
    let ratio = raw / secs;
    println!(
        "raw embedding of the same {} chunks: {raw:.2} s = {:.1} chunks/s; ingest reaches {:.0}% of it",
        texts.len(),
        texts.len() as f64 / raw,
        100.0 * ratio
    );
    if per_document {
        embed_per_document(&core, &k, &tenant.id, texts.len()).await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ratio)
}

/// The same chunks a document at a time, as ingestion hands them to the model.
async fn embed_per_document(
    core: &crate::services::Core,
    k: &crate::services::Knowledge,
    tenant: &crate::domain::TenantId,
    count: usize,
) -> anyhow::Result<()> {
    let t = tenant.clone();
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
        count as f64 / per_document
    );
    Ok(())
}
