//! `ragbox bench embed`: embedding throughput on passages cut from a text file, and
//! the latency of single short queries, per precision of the dense layers; precisions
//! after the first are compared with it on the same texts.

use std::path::Path;
use std::time::Instant;

use super::percentile;
use crate::config::{Config, EmbeddingPrecision};
use crate::ml::Embedder;
use crate::ml::embedder::cosine;
use crate::startup;
use crate::text::chunker;

pub(super) struct EmbedRun<'a> {
    pub file: &'a Path,
    /// Tokens per passage, passages, single queries.
    pub sizes: (usize, usize, usize),
    pub save_passages: Option<&'a Path>,
    pub precisions: &'a [EmbeddingPrecision],
    pub rounds: usize,
}

/// What one precision gave.
struct Measured {
    precision: EmbeddingPrecision,
    embedder: Embedder,
    passages: Vec<Vec<f32>>,
    queries: Vec<Vec<f32>>,
}

pub(super) async fn run(config: &Config, run: EmbedRun<'_>) -> anyhow::Result<()> {
    let (tokens, passages, queries) = run.sizes;
    let text = std::fs::read_to_string(run.file)?;
    let mut measured = Vec::new();
    for &precision in run.precisions {
        let mut config = config.clone();
        config.embedding.precision = precision;
        let embedder = startup::load_embedder(&config).await?;
        measured.push(Measured {
            precision,
            embedder,
            passages: Vec::new(),
            queries: Vec::new(),
        });
    }
    let Some(first) = measured.first() else {
        anyhow::bail!("no precision to measure");
    };
    let tokenizer = first.embedder.tokenizer().clone();
    let chunks = chunker::chunk(&tokenizer, &text, tokens, 0)?;
    let texts: Vec<String> = chunks
        .iter()
        .take(passages)
        .map(|c| c.text.clone())
        .collect();
    let token_count: usize = chunks.iter().take(passages).map(|c| c.tokens + 2).sum();
    anyhow::ensure!(!texts.is_empty(), "the file has no text");
    if let Some(path) = run.save_passages {
        let mut lines = String::new();
        for t in &texts {
            lines.push_str(&serde_json::to_string(t)?);
            lines.push('\n');
        }
        std::fs::write(path, lines)?;
    }
    for m in &measured {
        // Warm up.
        m.embedder
            .embed_waiting(texts.iter().take(32).cloned().collect())
            .await?;
    }
    if run.precisions.contains(&EmbeddingPrecision::Int8) {
        println!("int8 layers run on: {}", crate::ml::embedder::int8_kernel());
    }
    for round in 1..=run.rounds {
        for m in &mut measured {
            let started = Instant::now();
            m.passages = m.embedder.embed_waiting(texts.clone()).await?;
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{:?} round {round}: embed throughput: {} passages ({:.0} tokens avg) in {secs:.2} s = {:.1} passages/s, {:.0} tokens/s (batch {})",
                m.precision,
                texts.len(),
                token_count as f64 / texts.len() as f64,
                texts.len() as f64 / secs,
                token_count as f64 / secs,
                config.embedding.batch_size
            );
        }
    }
    // Queries spread over the whole file, not only the passages' first pages.
    let words: Vec<&str> = text.split_whitespace().collect();
    let query_texts: Vec<String> = (0..queries)
        .map(|i| {
            let start = i * words.len() / queries.max(1);
            let query: Vec<&str> = words.iter().cycle().skip(start).take(8).copied().collect();
            query.join(" ")
        })
        .collect();
    for m in &mut measured {
        let mut latencies = Vec::with_capacity(queries);
        for query in &query_texts {
            let t = Instant::now();
            let mut v = m.embedder.embed_waiting(vec![query.clone()]).await?;
            latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            m.queries.append(&mut v);
        }
        latencies.sort_by(f64::total_cmp);
        println!(
            "{:?}: single query (8 words) latency over {queries}: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms",
            m.precision,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.95),
            percentile(&latencies, 0.99)
        );
    }
    let reference = &measured[0];
    for m in &measured[1..] {
        let spread = |ours: &[Vec<f32>], theirs: &[Vec<f32>]| {
            let cosines: Vec<f32> = ours.iter().zip(theirs).map(|(a, b)| cosine(a, b)).collect();
            let least = cosines.iter().copied().fold(f32::INFINITY, f32::min);
            let mean = cosines.iter().sum::<f32>() / cosines.len().max(1) as f32;
            format!("least {least:.4}, mean {mean:.5}")
        };
        let recall = recall_at(10, reference, m);
        println!(
            "{:?} against {:?}: cosine of the {} passages: {}; of the {} queries: {}; recall@10 of the queries over the passages: {recall:.3}",
            m.precision,
            reference.precision,
            m.passages.len(),
            spread(&m.passages, &reference.passages),
            m.queries.len(),
            spread(&m.queries, &reference.queries),
        );
    }
    Ok(())
}

/// The share of each query's `k` nearest passages by `reference`'s vectors that `other`'s
/// vectors also rank in their `k` nearest (exact search, both sides).
fn recall_at(k: usize, reference: &Measured, other: &Measured) -> f64 {
    let nearest = |query: &[f32], passages: &[Vec<f32>]| {
        let mut scored: Vec<(f32, usize)> = passages
            .iter()
            .enumerate()
            .map(|(i, p)| (cosine(query, p), i))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored
            .into_iter()
            .take(k)
            .map(|(_, i)| i)
            .collect::<Vec<_>>()
    };
    let mut found = 0;
    let mut wanted = 0;
    for (q_ref, q_other) in reference.queries.iter().zip(&other.queries) {
        let truth = nearest(q_ref, &reference.passages);
        let got = nearest(q_other, &other.passages);
        wanted += truth.len();
        found += truth.iter().filter(|i| got.contains(i)).count();
    }
    found as f64 / wanted.max(1) as f64
}
