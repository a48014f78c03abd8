//! `ragbox bench …`: measurements an operator can run on their own machine and data.
//! This file holds the command, its arguments and the helpers the benchmarks share;
//! each benchmark has a file of its own.

mod ann;
mod embed;
mod generate;
mod ingest;
mod search;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use crate::clock::SystemClock;
use crate::config::{Config, EmbeddingPrecision};
use crate::services::tenants::{self, NewTenant};
use crate::startup;
use crate::store::vectors::Precision;

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
        /// Precisions of the dense layers (`f32`, `int8`), each loaded once and timed
        /// in turn; every one after the first is compared with the first (cosine of
        /// the vectors, recall@10 of the queries over the passages).
        #[arg(long, value_delimiter = ',', value_parser = parse_embedding_precision)]
        precision: Vec<EmbeddingPrecision>,
        /// Throughput rounds, the precisions alternating within each.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
        rounds: u32,
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
        /// Threads building the graph.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Vector precisions to measure, each in turn (`f32`, `f16`, `int8`).
        #[arg(long, value_delimiter = ',', default_value = "f32", value_parser = parse_precision)]
        precision: Vec<Precision>,
    },
    /// End-to-end ingestion of files into a fresh data dir: documents/s and chunks/s,
    /// beside the raw embedding throughput on the same chunks.
    Ingest {
        /// Files and folders.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Rounds, each a fresh data dir ingested and then its chunks embedded raw, so
        /// that the ratio is read against a rate measured minutes apart, not an hour.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
        rounds: u32,
        /// Also embed the same chunks a document at a time (as ingestion hands them over).
        #[arg(long)]
        per_document: bool,
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
        /// Other tenants, each with as many chunks, stored (and their keyword indexes
        /// built) beside the one searched.
        #[arg(long, default_value_t = 0)]
        others: usize,
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
            precision,
            rounds,
        } => {
            let sizes = (tokens, passages, queries);
            let precisions = if precision.is_empty() {
                vec![config.embedding.precision]
            } else {
                precision
            };
            let run = embed::EmbedRun {
                file: &file,
                sizes,
                save_passages: save_passages.as_deref(),
                precisions: &precisions,
                rounds: rounds as usize,
            };
            embed::run(&config, run).await?
        }
        BenchCommand::Ann {
            base,
            queries,
            truth,
            ef,
            k,
            m,
            ef_construction,
            threads,
            precision,
        } => {
            tokio::task::spawn_blocking(move || {
                ann::run(ann::AnnRun {
                    base: &base,
                    queries: &queries,
                    truth: &truth,
                    efs: &ef,
                    k,
                    m,
                    ef_construction,
                    threads,
                    precisions: &precision,
                })
            })
            .await??
        }
        BenchCommand::Ingest {
            paths,
            rounds,
            per_document,
        } => ingest::run(config, &paths, rounds, per_document).await?,
        BenchCommand::Search {
            file,
            chunks,
            queries,
            others,
        } => search::run(config, &file, chunks, queries, others).await?,
        BenchCommand::Generate {
            model,
            weights,
            prompt_tokens,
            new_tokens,
            context,
        } => {
            let model = model.unwrap_or_else(|| config.models.generation_file.clone());
            generate::run(
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

fn parse_embedding_precision(s: &str) -> Result<EmbeddingPrecision, String> {
    match s {
        "f32" => Ok(EmbeddingPrecision::F32),
        "int8" => Ok(EmbeddingPrecision::Int8),
        other => Err(format!("{other}: expected f32 or int8")),
    }
}

fn parse_precision(s: &str) -> Result<Precision, String> {
    match s {
        "f32" => Ok(Precision::F32),
        "f16" => Ok(Precision::F16),
        "int8" => Ok(Precision::Int8),
        other => Err(format!("{other}: expected f32, f16 or int8")),
    }
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

/// CPU seconds this process and its waited-for children have used (Linux; 0 elsewhere).
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat").map_or(0.0, |stat| stat_secs(&stat, 4))
}

/// The first `fields` CPU times of a `/proc/…/stat` line (user, system, then the
/// children's), summed, in seconds.
fn stat_secs(stat: &str, fields: usize) -> f64 {
    // Fields after the command's closing parenthesis; utime is the 14th field overall.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: f64 = rest
        .split_whitespace()
        .skip(11)
        .take(fields)
        .filter_map(|f| f.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// CPU seconds used so far by this process's threads, summed per thread name with
/// trailing digits and dashes dropped (`rayon-3` and `rayon-0` count as `rayon`).
fn cpu_by_thread() -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue;
        };
        let name = comm
            .trim()
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-' || c == '#')
            .to_owned();
        *out.entry(name).or_insert(0.0) += stat_secs(&stat, 2);
    }
    out
}

/// The CPU seconds each thread group used between two readings of [`cpu_by_thread`],
/// largest first, as one line.
fn cpu_spent(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> String {
    let mut spent: Vec<(&str, f64)> = after
        .iter()
        .map(|(name, &t)| (name.as_str(), t - before.get(name).copied().unwrap_or(0.0)))
        .filter(|(_, t)| *t >= 0.05)
        .collect();
    spent.sort_by(|a, b| b.1.total_cmp(&a.1));
    spent
        .iter()
        .map(|(name, t)| format!("{name} {t:.1} s"))
        .collect::<Vec<_>>()
        .join(", ")
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
    // Benchmarks measure the local store, and a scratch installation must never open the
    // real one's Qdrant collection: at start it would drop every tenant it does not know.
    config.qdrant.url = None;
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
