//! The models' own series: how deep their queues are, how big the embedder's batches
//! are, how fast each model runs, how long the first token takes and how long the
//! weights took to load.
//!
//! Each model handle owns its series (created unregistered with the model, so every
//! process that loads one counts) and each server registers them in its registry; the
//! queue depths are read from the queues at each scrape.

use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{
    Counter, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

/// Buckets for rates in tokens per second (a slow CPU to a fast one).
const RATE_BUCKETS: [f64; 12] = [
    5.0, 10.0, 25.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0, 12800.0,
];

fn register_all(registry: &Registry, all: Vec<Box<dyn Collector>>) -> prometheus::Result<()> {
    for c in all {
        registry.register(c)?;
    }
    Ok(())
}

/// The embedding model's series.
#[derive(Clone)]
pub struct EmbedMeters {
    depth: IntGaugeVec,
    texts: IntCounterVec,
    tokens: IntCounter,
    busy: Counter,
    batch: Histogram,
    rate: Histogram,
    load: Gauge,
}

impl EmbedMeters {
    /// The series, counted from now, exported nowhere yet.
    pub fn new() -> prometheus::Result<Self> {
        Ok(Self {
            depth: IntGaugeVec::new(
                Opts::new(
                    "embed_queue_depth",
                    "Embedding requests waiting for the model, by queue (query: searches \
                     and /v1/embeddings; bulk: ingestion), read at each scrape",
                ),
                &["queue"],
            )?,
            texts: IntCounterVec::new(
                Opts::new("embed_texts_total", "Texts embedded, by queue"),
                &["queue"],
            )?,
            tokens: IntCounter::new(
                "embed_tokens_total",
                "Tokens the embedding model read (special tokens included)",
            )?,
            busy: Counter::new(
                "embed_busy_seconds_total",
                "Seconds the embedding model spent computing (tokens_total / this is its \
                 rate while busy)",
            )?,
            batch: Histogram::with_opts(
                HistogramOpts::new(
                    "embed_batch_texts",
                    "Texts in each forward pass of the embedding model",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
            )?,
            rate: Histogram::with_opts(
                HistogramOpts::new(
                    "embed_tokens_per_second",
                    "Tokens per second of each round of the embedding model (the requests \
                     merged from one queue)",
                )
                .buckets(RATE_BUCKETS.to_vec()),
            )?,
            load: Gauge::new(
                "embed_model_load_seconds",
                "Seconds the embedding model took to load",
            )?,
        })
    }

    /// Exports the series in `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        register_all(
            registry,
            vec![
                Box::new(self.depth.clone()),
                Box::new(self.texts.clone()),
                Box::new(self.tokens.clone()),
                Box::new(self.busy.clone()),
                Box::new(self.batch.clone()),
                Box::new(self.rate.clone()),
                Box::new(self.load.clone()),
            ],
        )
    }

    pub(crate) fn loaded(&self, took: Duration) {
        self.load.set(took.as_secs_f64());
    }

    pub(crate) fn set_depth(&self, query: usize, bulk: usize) {
        self.depth.with_label_values(&["query"]).set(query as i64);
        self.depth.with_label_values(&["bulk"]).set(bulk as i64);
    }

    pub(crate) fn batch(&self, texts: usize) {
        self.batch.observe(texts as f64);
    }

    /// One round of the model: `texts` texts of `tokens` tokens from one queue.
    pub(crate) fn round(&self, interactive: bool, texts: usize, tokens: usize, took: Duration) {
        let queue = if interactive { "query" } else { "bulk" };
        self.texts.with_label_values(&[queue]).inc_by(texts as u64);
        self.tokens.inc_by(tokens as u64);
        let secs = took.as_secs_f64();
        self.busy.inc_by(secs);
        if secs > 0.0 && tokens > 0 {
            self.rate.observe(tokens as f64 / secs);
        }
    }
}

/// The generation model's series.
#[derive(Clone)]
pub struct GenMeters {
    depth: IntGauge,
    active: IntGauge,
    tokens: IntCounterVec,
    prompt_tokens: IntCounter,
    completion_tokens: IntCounter,
    answers: IntCounterVec,
    first_token: Histogram,
    prompt_rate: Histogram,
    decode_rate: Histogram,
    load: Gauge,
    held: IntGauge,
}

impl GenMeters {
    /// The series, counted from now, exported nowhere yet.
    pub fn new() -> prometheus::Result<Self> {
        let tokens = IntCounterVec::new(
            Opts::new(
                "generate_tokens_total",
                "Tokens of the bundled model, by kind (prompt: read; completion: generated)",
            ),
            &["kind"],
        )?;
        Ok(Self {
            prompt_tokens: tokens.with_label_values(&["prompt"]),
            completion_tokens: tokens.with_label_values(&["completion"]),
            tokens,
            depth: IntGauge::new(
                "generate_queue_depth",
                "Generations waiting for the bundled model, read at each scrape",
            )?,
            active: IntGauge::new(
                "generate_active",
                "Generations the bundled model is running now (0 or 1)",
            )?,
            answers: IntCounterVec::new(
                Opts::new(
                    "generate_answers_total",
                    "Generations of the bundled model, by how they ended (stop, length, \
                     cancelled: the client left, error)",
                ),
                &["finish"],
            )?,
            first_token: Histogram::with_opts(
                HistogramOpts::new(
                    "generate_time_to_first_token_seconds",
                    "From a generation entering the queue to its first token (queue wait \
                     and prompt together)",
                )
                .buckets(vec![
                    0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
                ]),
            )?,
            prompt_rate: Histogram::with_opts(
                HistogramOpts::new(
                    "generate_prompt_tokens_per_second",
                    "Prompt tokens per second of each generation's prompt pass",
                )
                .buckets(RATE_BUCKETS.to_vec()),
            )?,
            decode_rate: Histogram::with_opts(
                HistogramOpts::new(
                    "generate_decode_tokens_per_second",
                    "Generated tokens per second of each generation after its first token",
                )
                .buckets(RATE_BUCKETS.to_vec()),
            )?,
            load: Gauge::new(
                "generate_model_load_seconds",
                "Seconds the generation model's weights took to load",
            )?,
            held: IntGauge::new(
                "generate_held_bytes",
                "Bytes the bundled model's key/value cache and work buffers hold between \
                 answers (0 once given back, generation.keep_warm_secs after the last one)",
            )?,
        })
    }

    /// Exports the series in `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        register_all(
            registry,
            vec![
                Box::new(self.depth.clone()),
                Box::new(self.active.clone()),
                Box::new(self.tokens.clone()),
                Box::new(self.answers.clone()),
                Box::new(self.first_token.clone()),
                Box::new(self.prompt_rate.clone()),
                Box::new(self.decode_rate.clone()),
                Box::new(self.load.clone()),
                Box::new(self.held.clone()),
            ],
        )
    }

    pub(crate) fn loaded(&self, secs: f64) {
        self.load.set(secs);
    }

    pub(crate) fn set_depth(&self, waiting: usize) {
        self.depth.set(waiting as i64);
    }

    pub(crate) fn set_held(&self, bytes: usize) {
        self.held.set(bytes as i64);
    }

    /// What the model thread last reported in [`GenMeters::set_held`].
    pub(crate) fn held(&self) -> usize {
        usize::try_from(self.held.get()).unwrap_or(0)
    }

    /// Counts a generation as running until the guard drops.
    pub(crate) fn running(&self) -> Running {
        self.active.inc();
        Running(self.active.clone())
    }

    /// The prompt pass of `tokens` tokens took `took`; the first token came `waited`
    /// after the request was queued.
    pub(crate) fn prompt(&self, tokens: usize, took: Duration, waited: Duration) {
        self.prompt_tokens.inc_by(tokens as u64);
        if !took.is_zero() {
            self.prompt_rate.observe(tokens as f64 / took.as_secs_f64());
        }
        self.first_token.observe(waited.as_secs_f64());
    }

    /// One generated token.
    pub(crate) fn token(&self) {
        self.completion_tokens.inc();
    }

    /// Tokens generated since load.
    pub(crate) fn tokens_generated(&self) -> u64 {
        self.completion_tokens.get()
    }

    /// A generation ended as `finish` after `tokens` tokens, the ones after the first
    /// taking `decoding`.
    pub(crate) fn finished(&self, finish: &str, tokens: usize, decoding: Duration) {
        self.answers.with_label_values(&[finish]).inc();
        if tokens > 1 && !decoding.is_zero() {
            self.decode_rate
                .observe((tokens - 1) as f64 / decoding.as_secs_f64());
        }
    }
}

/// A running generation, counted in `generate_active` until dropped.
pub(crate) struct Running(IntGauge);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.dec();
    }
}
