//! `ragbox bench embed`: embedding throughput on passages cut from a text file, and
//! the latency of single short queries.

use std::path::Path;
use std::time::Instant;

use super::percentile;
use crate::config::Config;
use crate::startup;
use crate::text::chunker;

pub(super) async fn run(
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
