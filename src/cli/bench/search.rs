//! `ragbox bench search`: search latency (vector, keyword, hybrid) and memory at a
//! given number of chunks with synthetic vectors, in a scratch data dir.

use std::path::Path;
use std::time::Instant;

use super::{percentile, rss_mb, scratch};
use crate::config::Config;
use crate::text::chunker;

pub(super) async fn run(
    config: Config,
    file: &Path,
    total: usize,
    queries: usize,
) -> anyhow::Result<()> {
    use crate::services::search::{Mode, Query};
    use crate::store::chunks::{self as chunk_rows, NewChunk};
    use crate::store::documents::{self as rows, Document, Status};
    use crate::store::vectors::VectorItem;
    use rand::{Rng, SeedableRng};

    let text = std::fs::read_to_string(file)?;
    let (dir, core, tenant, k) = scratch(config).await?;
    let pieces = chunker::chunk(k.embedder.tokenizer(), &text, 200, 0)?;
    anyhow::ensure!(!pieces.is_empty(), "the file has no text");
    let dim = crate::ml::embedder::DIM;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let centers: Vec<Vec<f32>> = (0..1000)
        .map(|_| {
            let v: Vec<f32> = (0..dim).map(|_| rng.random::<f32>() - 0.5).collect();
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.into_iter().map(|x| x / n).collect()
        })
        .collect();
    let started = Instant::now();
    let per_doc = 100;
    for d in 0..total.div_ceil(per_doc) {
        let now = chrono::Utc::now();
        let doc = Document {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: tenant.id.clone(),
            title: format!("synthetic {d}"),
            media_type: "text/plain".into(),
            filename: None,
            metadata: Default::default(),
            content_hash: format!("{d:064x}"),
            bytes: 0,
            status: Status::Ready,
            attempts: 1,
            last_error: None,
            chunk_count: 0,
            created_at: now,
            updated_at: now,
            processed_at: Some(now),
        };
        let chunks: Vec<NewChunk> = (0..per_doc.min(total - d * per_doc))
            .map(|i| {
                let p = &pieces[(d * per_doc + i) % pieces.len()];
                NewChunk {
                    index: i,
                    text: p.text.clone(),
                    start: p.start,
                    end: p.end,
                    tokens: p.tokens,
                }
            })
            .collect();
        let (row, id) = (doc.clone(), doc.id.clone());
        let t = tenant.id.clone();
        let ids = core
            .db
            .call(move |c| {
                rows::insert_or_existing(c, &row)?;
                chunk_rows::replace_chunks(c, &t, &id, &chunks)
            })
            .await?
            .unwrap_or_default();
        let items: Vec<VectorItem> = ids
            .into_iter()
            .map(|id| {
                let c = &centers[rng.random_range(0..centers.len())];
                let mut v: Vec<f32> = c
                    .iter()
                    .map(|x| x + 0.15 * (rng.random::<f32>() - 0.5))
                    .collect();
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter_mut().for_each(|x| *x /= n);
                VectorItem { id, vector: v }
            })
            .collect();
        let (store, t, id) = (k.vectors.clone(), tenant.id.clone(), doc.id.clone());
        tokio::task::spawn_blocking(move || store.replace_document(&t, &id, items)).await??;
    }
    // The graph is built in the background; measure against it, not the exact scan.
    let store = k.vectors.clone();
    tokio::task::spawn_blocking(move || {
        if let Some(index) = store.maintenance() {
            index.settle();
        }
    })
    .await?;
    println!(
        "search bench: {total} chunks stored and indexed in {:.1} s; RSS {:.0} MB",
        started.elapsed().as_secs_f64(),
        rss_mb()
    );
    // The tenant's keyword index is built at its first keyword search (as after a start).
    let t = Instant::now();
    crate::services::search::search(
        &k,
        &tenant.id,
        Query {
            text: "first".into(),
            top_k: 10,
            mode: Mode::Keyword,
            document_ids: None,
            min_score: None,
        },
    )
    .await?;
    println!(
        "first keyword search (builds the keyword index): {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    let words: Vec<&str> = text.split_whitespace().collect();
    for (name, mode) in [
        ("vector", Mode::Vector),
        ("keyword", Mode::Keyword),
        ("hybrid", Mode::Hybrid),
    ] {
        let mut lat = Vec::with_capacity(queries);
        for i in 0..queries {
            let start = (i * 101) % words.len().max(1);
            let q = words
                .iter()
                .cycle()
                .skip(start)
                .take(6)
                .copied()
                .collect::<Vec<_>>()
                .join(" ");
            let t = Instant::now();
            crate::services::search::search(
                &k,
                &tenant.id,
                Query {
                    text: q,
                    top_k: 10,
                    mode,
                    document_ids: None,
                    min_score: None,
                },
            )
            .await?;
            lat.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        lat.sort_by(f64::total_cmp);
        println!(
            "{name:>7}: p50 {:.2} ms, p99 {:.2} ms over {queries} queries (top 10, query embedding included)",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99)
        );
    }
    println!(
        "RSS after searching: {:.0} MB; keyword index {:.1} MiB",
        rss_mb(),
        core.db.keywords().memory_bytes(&tenant.id) as f64 / (1024.0 * 1024.0)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
