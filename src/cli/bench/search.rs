//! `ragbox bench search`: search latency (vector, keyword, hybrid) and memory at a
//! given number of chunks with synthetic vectors, in a scratch data dir, optionally with
//! other tenants of the same size beside the one searched.

use std::path::Path;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{percentile, rss_mb, scratch};
use crate::config::Config;
use crate::domain::TenantId;
use crate::ml::embedder::DIM;
use crate::services::{Core, Knowledge};
use crate::store::chunks::{self as chunk_rows, NewChunk};
use crate::store::documents::{self as rows, Document, Status};
use crate::store::vectors::VectorItem;
use crate::text::chunker;

pub(super) async fn run(
    config: Config,
    file: &Path,
    total: usize,
    queries: usize,
    others: usize,
) -> anyhow::Result<()> {
    use crate::services::search::{Mode, Query};
    use crate::services::tenants::{self, NewTenant};

    let text = std::fs::read_to_string(file)?;
    let (dir, core, tenant, k) = scratch(config).await?;
    let pieces = chunker::chunk(k.embedder.tokenizer(), &text, 200, 0)?;
    anyhow::ensure!(!pieces.is_empty(), "the file has no text");
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let centers: Vec<Vec<f32>> = (0..1000)
        .map(|_| unit((0..DIM).map(|_| rng.random::<f32>() - 0.5).collect()))
        .collect();
    let started = Instant::now();
    fill(&core, &k, &tenant.id, &pieces, &centers, total, &mut rng).await?;
    let mut neighbours = Vec::with_capacity(others);
    for i in 0..others {
        let other = tenants::create(
            &core,
            NewTenant {
                slug: crate::domain::Slug::parse(&format!("other-{i}"))?,
                name: None,
                system_prompt: None,
                settings: None,
            },
        )
        .await?;
        fill(&core, &k, &other.id, &pieces, &centers, total, &mut rng).await?;
        neighbours.push(other.id);
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
        "search bench: {total} chunks in each of {} tenants stored and indexed in {:.1} s; RSS {:.0} MB",
        others + 1,
        started.elapsed().as_secs_f64(),
        rss_mb()
    );
    // A tenant's keyword index is built at its first keyword search (as after a start).
    let first = |id: TenantId| {
        let k = k.clone();
        async move {
            let query = Query {
                text: "first".into(),
                top_k: 10,
                mode: Mode::Keyword,
                document_ids: None,
                min_score: None,
            };
            crate::services::search::search(&k, &id, query).await
        }
    };
    let t = Instant::now();
    first(tenant.id.clone()).await?;
    println!(
        "first keyword search (builds the keyword index): {:.0} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    for id in &neighbours {
        first(id.clone()).await?;
    }
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
    let mib = |id: &TenantId| core.db.keywords().memory_bytes(id) as f64 / (1024.0 * 1024.0);
    println!(
        "RSS after searching: {:.0} MB; keyword indexes {:.1} MiB (this tenant's {:.1} MiB)",
        rss_mb(),
        mib(&tenant.id) + neighbours.iter().map(mib).sum::<f64>(),
        mib(&tenant.id)
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// Stores `total` chunks cut from `pieces` in a tenant, in documents of 100, each with a
/// vector near one of `centers`.
async fn fill(
    core: &Core,
    k: &Knowledge,
    tenant: &TenantId,
    pieces: &[chunker::Chunk],
    centers: &[Vec<f32>],
    total: usize,
    rng: &mut StdRng,
) -> anyhow::Result<()> {
    let per_doc = 100;
    for d in 0..total.div_ceil(per_doc) {
        let now = chrono::Utc::now();
        let doc = Document {
            id: uuid::Uuid::now_v7().to_string(),
            tenant_id: tenant.clone(),
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
        let t = tenant.clone();
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
                let v = c
                    .iter()
                    .map(|x| x + 0.15 * (rng.random::<f32>() - 0.5))
                    .collect();
                VectorItem {
                    id,
                    vector: unit(v),
                }
            })
            .collect();
        let (store, t, id) = (k.vectors.clone(), tenant.clone(), doc.id.clone());
        tokio::task::spawn_blocking(move || store.replace_document(&t, &id, items)).await??;
    }
    Ok(())
}
