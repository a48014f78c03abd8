//! `ragbox bench …`: measurements an operator can run on their own machine and data.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use hnsw_rs::prelude::{DistCosine, Hnsw};

use crate::clock::SystemClock;
use crate::config::Config;
use crate::services::tenants::{self, NewTenant};
use crate::startup;
use crate::text::chunker;

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Embedding throughput (passages of ~max-tokens from a text file) and single-query latency.
    Embed {
        /// A UTF-8 text file; it is cut into passages of `--tokens` tokens.
        #[arg(long)]
        file: PathBuf,
        /// Tokens per passage.
        #[arg(long, default_value_t = 200)]
        tokens: usize,
        /// Passages to embed (at most).
        #[arg(long, default_value_t = 1024)]
        passages: usize,
        /// Single queries for the latency figures.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Also write the passages, one JSON string per line, so that another
        /// embedder can be timed on exactly the same texts.
        #[arg(long)]
        save_passages: Option<PathBuf>,
    },
    /// HNSW build time, QPS and recall@k for several `ef`, on `.npy` files
    /// (base and queries float32 [n, d]; truth int32/int64 [nq, >=k]).
    Ann {
        /// Base vectors.
        #[arg(long)]
        base: PathBuf,
        /// Query vectors.
        #[arg(long)]
        queries: PathBuf,
        /// True nearest neighbours (indices into base), best first.
        #[arg(long)]
        truth: PathBuf,
        /// `ef` values to try.
        #[arg(long, value_delimiter = ',', default_value = "16,32,64,128,256")]
        ef: Vec<usize>,
        /// Neighbours per query.
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Links per node.
        #[arg(long, default_value_t = 16)]
        m: usize,
        /// Candidate list while building.
        #[arg(long, default_value_t = 200)]
        ef_construction: usize,
    },
    /// End-to-end ingestion of files into a fresh data dir: documents/s and chunks/s,
    /// beside the raw embedding throughput on the same chunks.
    Ingest {
        /// Files and folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Search latency (vector, keyword, hybrid) and memory at a given number of chunks,
    /// in a scratch data dir: chunk texts are cut from `--file`; their vectors are
    /// synthetic (clustered, normalised) so that large sizes build in minutes.
    Search {
        /// A UTF-8 text file the chunk texts are cut from (cycled as needed).
        #[arg(long)]
        file: PathBuf,
        /// Chunks in the tenant.
        #[arg(long, default_value_t = 100_000)]
        chunks: usize,
        /// Queries per mode.
        #[arg(long, default_value_t = 200)]
        queries: usize,
    },
    /// Prompt processing and decode speed of a GGUF, for each weight type asked, at each
    /// prompt length (the context the new tokens attend to).
    Generate {
        /// The GGUF (default: models.generation_file).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Weight types to load it as.
        #[arg(long, value_delimiter = ',', default_value = "q4_0,original,f16")]
        weights: Vec<String>,
        /// Prompt lengths in tokens.
        #[arg(long, value_delimiter = ',', default_value = "64,1024")]
        prompt_tokens: Vec<usize>,
        /// Tokens to generate after each prompt.
        #[arg(long, default_value_t = 128)]
        new_tokens: usize,
        /// Context window (prompt and new tokens).
        #[arg(long, default_value_t = 2048)]
        context: usize,
    },
}

/// Runs a benchmark.
pub async fn run(config: Config, cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Embed {
            file,
            tokens,
            passages,
            queries,
            save_passages,
        } => {
            let sizes = (tokens, passages, queries);
            embed(&config, &file, sizes, save_passages.as_deref()).await?
        }
        BenchCommand::Ann {
            base,
            queries,
            truth,
            ef,
            k,
            m,
            ef_construction,
        } => {
            tokio::task::spawn_blocking(move || {
                ann(&base, &queries, &truth, &ef, k, m, ef_construction)
            })
            .await??
        }
        BenchCommand::Ingest { paths } => ingest(config, &paths).await?,
        BenchCommand::Search {
            file,
            chunks,
            queries,
        } => search(config, &file, chunks, queries).await?,
        BenchCommand::Generate {
            model,
            weights,
            prompt_tokens,
            new_tokens,
            context,
        } => {
            let model = model.unwrap_or_else(|| config.models.generation_file.clone());
            generate(
                &config,
                &model,
                &weights,
                &prompt_tokens,
                new_tokens,
                context,
            )
            .await?
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

async fn embed(
    config: &Config,
    file: &Path,
    (tokens, passages, queries): (usize, usize, usize),
    save_passages: Option<&Path>,
) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file)?;
    let embedder = startup::load_embedder(config).await?;
    let tokenizer = embedder.tokenizer().clone();
    let chunks = chunker::chunk(&tokenizer, &text, tokens, 0)?;
    let texts: Vec<String> = chunks
        .iter()
        .take(passages)
        .map(|c| c.text.clone())
        .collect();
    let token_count: usize = chunks.iter().take(passages).map(|c| c.tokens + 2).sum();
    anyhow::ensure!(!texts.is_empty(), "the file has no text");
    if let Some(path) = save_passages {
        let mut lines = String::new();
        for t in &texts {
            lines.push_str(&serde_json::to_string(t)?);
            lines.push('\n');
        }
        std::fs::write(path, lines)?;
    }
    // Warm up.
    embedder
        .embed_waiting(texts.iter().take(32).cloned().collect())
        .await?;
    let started = Instant::now();
    embedder.embed_waiting(texts.clone()).await?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "embed throughput: {} passages ({:.0} tokens avg) in {secs:.2} s = {:.1} passages/s, {:.0} tokens/s (batch {})",
        texts.len(),
        token_count as f64 / texts.len() as f64,
        texts.len() as f64 / secs,
        token_count as f64 / secs,
        config.embedding.batch_size
    );
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut latencies = Vec::with_capacity(queries);
    for i in 0..queries {
        let start = (i * 37) % words.len().max(1);
        let query = words
            .iter()
            .cycle()
            .skip(start)
            .take(8)
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        let t = Instant::now();
        embedder.embed_waiting(vec![query]).await?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "single query (8 words) latency over {queries}: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99)
    );
    Ok(())
}

/// A 2-D array read from a `.npy` file, as f32 (floats) or i64 (integers).
struct Npy {
    rows: usize,
    cols: usize,
    floats: Vec<f32>,
    ints: Vec<i64>,
}

fn read_npy(path: &Path) -> anyhow::Result<Npy> {
    let bytes = std::fs::read(path)?;
    anyhow::ensure!(
        bytes.starts_with(b"\x93NUMPY"),
        "{} is not a .npy file",
        path.display()
    );
    let major = bytes[6];
    let (header_len, start) = if major == 1 {
        (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10)
    } else {
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len])?;
    anyhow::ensure!(
        header.contains("'fortran_order': False"),
        "{}: Fortran order is not supported",
        path.display()
    );
    let descr = header
        .split("'descr':")
        .nth(1)
        .and_then(|s| s.split('\'').nth(1))
        .ok_or_else(|| anyhow::anyhow!("{}: no dtype", path.display()))?;
    let shape: Vec<usize> = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(['(', ')']).nth(1))
        .ok_or_else(|| anyhow::anyhow!("{}: no shape", path.display()))?
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    anyhow::ensure!(shape.len() == 2, "{}: expected a 2-D array", path.display());
    let data = &bytes[start + header_len..];
    let mut out = Npy {
        rows: shape[0],
        cols: shape[1],
        floats: Vec::new(),
        ints: Vec::new(),
    };
    match descr {
        "<f4" => {
            out.floats = data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
        "<i4" => {
            out.ints = data
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        "<i8" => {
            out.ints = data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect()
        }
        other => anyhow::bail!(
            "{}: dtype {other} is not supported (use <f4, <i4 or <i8)",
            path.display()
        ),
    }
    Ok(out)
}

fn ann(
    base: &Path,
    queries: &Path,
    truth: &Path,
    efs: &[usize],
    k: usize,
    m: usize,
    ef_c: usize,
) -> anyhow::Result<()> {
    let base = read_npy(base)?;
    let queries = read_npy(queries)?;
    let truth = read_npy(truth)?;
    anyhow::ensure!(
        base.cols == queries.cols,
        "base and queries differ in width"
    );
    anyhow::ensure!(
        truth.rows == queries.rows && truth.cols >= k,
        "truth must be [queries, >= k]"
    );
    let dim = base.cols;
    let started = Instant::now();
    let graph: Hnsw<f32, DistCosine> = Hnsw::new(m, base.rows, 16, ef_c, DistCosine {});
    let items: Vec<(&[f32], usize)> = (0..base.rows)
        .map(|i| (&base.floats[i * dim..(i + 1) * dim], i))
        .collect();
    graph.parallel_insert_slice(&items);
    println!(
        "ann build: {} x {dim} vectors, M {m}, ef_construction {ef_c}: {:.2} s",
        base.rows,
        started.elapsed().as_secs_f64()
    );
    for &ef in efs {
        let started = Instant::now();
        let mut hits = 0usize;
        for q in 0..queries.rows {
            let found = graph.search(&queries.floats[q * dim..(q + 1) * dim], k, ef.max(k));
            let want = &truth.ints[q * truth.cols..q * truth.cols + k];
            hits += found
                .iter()
                .filter(|n| want.contains(&(n.d_id as i64)))
                .count();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "ef {ef:>4}: {:>8.0} QPS (one thread), recall@{k} {:.4}",
            queries.rows as f64 / secs,
            hits as f64 / (queries.rows * k) as f64
        );
    }
    Ok(())
}

async fn ingest(config: Config, paths: &[PathBuf]) -> anyhow::Result<()> {
    let files = super::knowledge::collect_files(paths)?;
    let (dir, core, tenant, k) = scratch(config).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let workers = tokio::spawn(k.queue.clone().run(
        crate::services::ingest::job_handler(k.clone()),
        stop.clone(),
    ));
    let started = Instant::now();
    let summary = super::knowledge::upload_files(k.intake(), &tenant.id, &files, false).await?;
    let uploaded = started.elapsed().as_secs_f64();
    let (ready, failed) =
        super::knowledge::wait_for(k.intake(), &tenant.id, &summary.queued, false).await?;
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = workers.await;
    let t = tenant.id.clone();
    let texts: Vec<String> = core
        .db
        .call(move |c| {
            let mut stmt = c.prepare("SELECT text FROM chunks WHERE tenant_id = ?1")?;
            let rows = stmt.query_map([t.as_str()], |r| r.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await?;
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

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

async fn search(config: Config, file: &Path, total: usize, queries: usize) -> anyhow::Result<()> {
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
    tokio::task::spawn_blocking(move || store.settle()).await?;
    println!(
        "search bench: {total} chunks stored and indexed in {:.1} s; RSS {:.0} MB",
        started.elapsed().as_secs_f64(),
        rss_mb()
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
    println!("RSS after searching: {:.0} MB", rss_mb());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A scratch data dir with a tenant `bench` and the knowledge components opened on it.
async fn scratch(
    mut config: Config,
) -> anyhow::Result<(
    PathBuf,
    crate::services::Core,
    crate::store::tenants::Tenant,
    crate::services::Knowledge,
)> {
    let dir = tempdir()?;
    config.storage.data_dir = dir.clone();
    let core = startup::open_core(config, Arc::new(SystemClock)).await?;
    let tenant = tenants::create(
        &core,
        NewTenant {
            slug: crate::domain::Slug::parse("bench")?,
            name: None,
            system_prompt: None,
            settings: None,
        },
    )
    .await?;
    let k = startup::open_knowledge(core.clone(), None).await?;
    Ok((dir, core, tenant, k))
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ragbox-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Text the benchmark prompts are cut from (any text does: speed does not depend on it).
const PROMPT_TEXT: &str = "The keeper of the lighthouse on the northern island wrote in his \
log every evening: the weather, the ships that passed, the state of the lamp and the oil \
that remained, the birds that rested on the gallery, and the letters he meant to send. ";

async fn generate(
    config: &Config,
    model: &Path,
    weights: &[String],
    prompt_lengths: &[usize],
    new_tokens: usize,
    context: usize,
) -> anyhow::Result<()> {
    use crate::config::WeightType;
    use crate::domain::{Event, Sampling};
    use crate::ml::Generator;
    for name in weights {
        let weight_type: WeightType =
            serde_json::from_value(serde_json::json!(name)).map_err(|_| {
                anyhow::anyhow!("unknown weight type `{name}`: q4_0, original, f16 or f32")
            })?;
        let settings = crate::config::GenerationConfig {
            weights: weight_type,
            context_tokens: context,
            ..config.generation.clone()
        };
        let started = Instant::now();
        let path = model.to_path_buf();
        let generator =
            tokio::task::spawn_blocking(move || Generator::load(&path, &settings)).await??;
        println!(
            "{name}: loaded {} in {:.2} s; RSS {:.0} MB",
            generator.name(),
            started.elapsed().as_secs_f64(),
            rss_mb()
        );
        let text =
            PROMPT_TEXT.repeat(1 + 4 * prompt_lengths.iter().max().copied().unwrap_or(64) / 40);
        let all = generator.tokenize(&text)?;
        for &length in prompt_lengths {
            anyhow::ensure!(
                length + new_tokens < context && length <= all.len(),
                "prompt of {length} tokens and {new_tokens} new ones do not fit a context of {context}"
            );
            let prompt = all[..length].to_vec();
            let sampling = Sampling {
                temperature: 0.0,
                top_p: None,
                seed: 1,
                max_tokens: new_tokens,
                stop: Vec::new(),
                ignore_eos: true,
            };
            let started = Instant::now();
            let mut rx = generator.generate(prompt, sampling)?;
            let mut first = None;
            let mut done = None;
            while let Some(event) = rx.recv().await {
                match event? {
                    Event::Text(_) => {
                        first.get_or_insert_with(|| started.elapsed().as_secs_f64());
                    }
                    Event::Done(usage) => {
                        done = Some((usage, started.elapsed().as_secs_f64()));
                        break;
                    }
                }
            }
            let (usage, total) =
                done.ok_or_else(|| anyhow::anyhow!("generation did not finish"))?;
            let first = first.unwrap_or(total);
            println!(
                "{name}: prompt {length} tokens: first token after {:.1} ms ({:.0} prompt tokens/s); \
                 decode {} tokens at {:.1} tokens/s",
                first * 1000.0,
                length as f64 / first,
                usage.completion_tokens,
                (usage.completion_tokens.saturating_sub(1)) as f64 / (total - first).max(1e-9)
            );
        }
    }
    Ok(())
}
