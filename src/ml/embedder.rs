//! all-MiniLM-L6-v2 on candle, with the sentence-transformers recipe: mean pooling over
//! the attention mask, L2-normalised, at most `max_tokens` tokens per text.
//!
//! One model thread owns the model. Callers send texts through one of two bounded
//! queues and wait on a oneshot reply: queries (interactive, refused when full) always
//! go ahead of ingestion batches (bulk, which wait for room). The thread merges waiting
//! requests of one kind, sorts their texts by length and runs batches of similar
//! lengths so that little compute goes to padding.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokenizers::Tokenizer;
use tokio::sync::{mpsc, oneshot};

use super::bert::{BertConfig, Encoder, Scratch};
use super::int8;
use super::meters::EmbedMeters;
use crate::config::{EmbeddingConfig, EmbeddingPrecision, ModelsConfig};

/// Width of every embedding.
pub const DIM: usize = 384;

/// Why embedding failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    /// Model files are missing or unreadable; the message names the fix.
    #[error("{0}")]
    Load(String),
    /// The queue is full; retry later.
    #[error("the embedding queue is full")]
    Busy,
    /// The model thread is gone.
    #[error("the embedding model is not running")]
    Stopped,
    /// Tokenisation or the forward pass failed.
    #[error("embedding failed: {0}")]
    Compute(String),
}

/// Vectors, one per text, and the tokens the model read of each.
type Embedded = (Vec<Vec<f32>>, Vec<usize>);

struct Request {
    texts: Vec<String>,
    reply: oneshot::Sender<Result<Embedded, EmbedError>>,
}

/// Text the int8 layers are calibrated on at load: each layer's largest input per
/// channel while the f32 model reads it decides how the layer is rounded. A model's
/// large channels are its own, whatever it reads, so a few kinds of text suffice.
const CALIBRATION: &[&str] = &[
    "Refunds are accepted within 14 days of delivery when the item is unused.",
    "To list files sorted by size, run ls -lS; add -r to put the smallest first.",
    "The server reads its settings from ragbox.toml and the RAGBOX_ environment.",
    "What time does the library open on Saturdays, and is parking free?",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "ERROR 2026-03-01T12:00:03Z connection refused (port 5432); retrying in 5s",
    "Il pleut depuis ce matin, mais nous irons quand même au marché.",
    "fn main() { let total: u64 = (1..=10).sum(); println!(\"{total}\"); }",
];

/// Ingestion requests that may wait for the model at once (each up to a batch).
const BULK_QUEUE: usize = 4;

/// Handle to the embedding model; cheap to clone.
#[derive(Clone)]
pub struct Embedder {
    tx: mpsc::Sender<Request>,
    bulk_tx: mpsc::Sender<Request>,
    tokenizer: Arc<Tokenizer>,
    max_tokens: usize,
    meters: EmbedMeters,
}

/// The model files in a folder.
pub fn model_files(dir: &Path) -> [PathBuf; 3] {
    [
        dir.join("config.json"),
        dir.join("tokenizer.json"),
        dir.join("model.safetensors"),
    ]
}

/// Loads the tokenizer alone (for chunking and counting tokens).
pub fn load_tokenizer(dir: &Path) -> Result<Tokenizer, EmbedError> {
    let path = dir.join("tokenizer.json");
    let mut tokenizer = Tokenizer::from_file(&path)
        .map_err(|e| EmbedError::Load(format!("reading {}: {e}", path.display())))?;
    // The file carries padding and truncation for 128 tokens; ragbox does both itself.
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| EmbedError::Load(e.to_string()))?;
    Ok(tokenizer)
}

struct Model {
    encoder: Encoder,
    scratch: Scratch,
    tokenizer: Arc<Tokenizer>,
    max_tokens: usize,
    batch_size: usize,
    meters: EmbedMeters,
}

impl Embedder {
    /// Loads the model from `models.embedding_dir` and starts its thread.
    pub fn load(models: &ModelsConfig, config: &EmbeddingConfig) -> Result<Self, EmbedError> {
        let started = Instant::now();
        let meters = EmbedMeters::new().map_err(|e| EmbedError::Load(e.to_string()))?;
        let dir = &models.embedding_dir;
        for file in model_files(dir) {
            if !file.is_file() {
                return Err(EmbedError::Load(format!(
                    "embedding model file {} is missing: run `./install.sh --models-only` \
                     (or set models.embedding_dir)",
                    file.display()
                )));
            }
        }
        let [config_path, _, weights_path] = model_files(dir);
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| EmbedError::Load(format!("reading {}: {e}", config_path.display())))?;
        let bert_config: BertConfig = serde_json::from_str(&text)
            .map_err(|e| EmbedError::Load(format!("parsing {}: {e}", config_path.display())))?;
        let mut encoder = Encoder::load(bert_config, &weights_path)
            .map_err(|e| EmbedError::Load(format!("loading {}: {e}", weights_path.display())))?;
        let max_tokens = config.max_tokens.min(encoder.max_positions());
        let tokenizer = Arc::new(load_tokenizer(dir)?);
        if config.precision == EmbeddingPrecision::Int8 {
            let sample = tokenizer
                .encode_batch(CALIBRATION.to_vec(), true)
                .map_err(|e| EmbedError::Load(e.to_string()))?
                .iter()
                .map(|e| truncate(e.get_ids(), max_tokens))
                .collect::<Vec<_>>();
            encoder
                .quantize_int8(&sample)
                .map_err(|e| EmbedError::Load(format!("int8 layers: {e}")))?;
            if int8::Kernel::detect() == int8::Kernel::Portable {
                tracing::warn!(
                    "embedding.precision = \"int8\": this CPU lacks AVX-512 VNNI and AVX2, \
                     so the int8 layers run a portable loop, slower than f32"
                );
            }
        }
        let model = Model {
            encoder,
            scratch: Scratch::default(),
            tokenizer: tokenizer.clone(),
            max_tokens,
            batch_size: config.batch_size,
            meters: meters.clone(),
        };
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let (bulk_tx, bulk_rx) = mpsc::channel(BULK_QUEUE);
        std::thread::Builder::new()
            .name("ragbox-embed".into())
            .spawn(move || model.serve(rx, bulk_rx))
            .map_err(|e| EmbedError::Load(format!("starting the model thread: {e}")))?;
        // The file as read is free now that the weights are in place: back to the system.
        crate::memory::give_back();
        meters.loaded(started.elapsed());
        Ok(Self {
            tx,
            bulk_tx,
            tokenizer,
            max_tokens,
            meters,
        })
    }

    /// The model's series, for a server's registry.
    pub fn meters(&self) -> &EmbedMeters {
        &self.meters
    }

    /// Reads the queues' depths into the series (before each scrape).
    pub fn refresh_meters(&self) {
        let waiting = |tx: &mpsc::Sender<Request>| tx.max_capacity() - tx.capacity();
        self.meters
            .set_depth(waiting(&self.tx), waiting(&self.bulk_tx));
    }

    /// The model's tokenizer (no padding, no truncation).
    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    /// Tokens per text the model sees, special tokens included.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Embeds texts; refuses at once with [`EmbedError::Busy`] when the queue is full.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(self.embed_counting(texts).await?.0)
    }

    /// [`Embedder::embed`], with the tokens the model read (special tokens included,
    /// each text cut at the model's window), all texts together.
    pub async fn embed_counting(
        &self,
        texts: Vec<String>,
    ) -> Result<(Vec<Vec<f32>>, usize), EmbedError> {
        if texts.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Request { texts, reply })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => EmbedError::Busy,
                mpsc::error::TrySendError::Closed(_) => EmbedError::Stopped,
            })?;
        let (vectors, tokens) = rx.await.map_err(|_| EmbedError::Stopped)??;
        Ok((vectors, tokens.iter().sum()))
    }

    /// Whether the model thread is alive (for health checks; costs no model time).
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Embeds texts behind every waiting query, waiting for room in the bulk queue
    /// (background jobs, benchmarks).
    pub async fn embed_waiting(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.bulk_tx
            .send(Request { texts, reply })
            .await
            .map_err(|_| EmbedError::Stopped)?;
        Ok(rx.await.map_err(|_| EmbedError::Stopped)??.0)
    }
}

impl Model {
    fn serve(mut self, mut rx: mpsc::Receiver<Request>, mut bulk: mpsc::Receiver<Request>) {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        else {
            return;
        };
        // Whether the scratch and the freed pages of the last burst are still held.
        let mut holding = false;
        loop {
            // A waiting query always wins over a waiting ingestion batch.
            let next = runtime.block_on(async {
                tokio::select! {
                    biased;
                    Some(r) = rx.recv() => Some(Some((r, true))),
                    Some(r) = bulk.recv() => Some(Some((r, false))),
                    () = tokio::time::sleep(crate::memory::MODEL_IDLE), if holding => Some(None),
                    else => None,
                }
            });
            let Some(next) = next else {
                return;
            };
            let Some((first, interactive)) = next else {
                self.release();
                holding = false;
                continue;
            };
            holding = true;
            // Merge whatever else of the same kind is waiting, up to a few batches' worth.
            let more = if interactive { &mut rx } else { &mut bulk };
            let mut requests = vec![first];
            let mut count = requests[0].texts.len();
            while count < self.batch_size * 4 {
                match more.try_recv() {
                    Ok(r) => {
                        count += r.texts.len();
                        requests.push(r);
                    }
                    Err(_) => break,
                }
            }
            self.answer(requests, interactive);
        }
    }

    /// Hands the scratch of the last burst, and every page freed during it here and on
    /// rayon's threads, back to the system: a burst of ingestion grows the scratch to a
    /// full batch of the longest texts (about 110 MB for 32 texts of 256 tokens), which
    /// a server going quiet should not keep.
    fn release(&mut self) {
        self.scratch = Scratch::default();
        crate::memory::give_back_everywhere();
    }

    fn answer(&mut self, requests: Vec<Request>, interactive: bool) {
        // Callers that gave up are not computed for.
        let requests: Vec<Request> = requests
            .into_iter()
            .filter(|r| !r.reply.is_closed())
            .collect();
        if requests.is_empty() {
            return;
        }
        let texts: Vec<&str> = requests
            .iter()
            .flat_map(|r| r.texts.iter().map(String::as_str))
            .collect();
        let started = Instant::now();
        match self.embed_all(&texts) {
            Ok((mut vectors, mut tokens)) => {
                let read = tokens.iter().sum();
                self.meters
                    .round(interactive, texts.len(), read, started.elapsed());
                for r in requests.into_iter().rev() {
                    let at = vectors.len() - r.texts.len();
                    let mine = (vectors.split_off(at), tokens.split_off(at));
                    let _ = r.reply.send(Ok(mine));
                }
            }
            Err(e) => {
                for r in requests {
                    let _ = r.reply.send(Err(e.clone()));
                }
            }
        }
    }

    fn embed_all(&mut self, texts: &[&str]) -> Result<Embedded, EmbedError> {
        let compute = |e: &dyn std::fmt::Display| EmbedError::Compute(e.to_string());
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| compute(&e))?;
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encodings[i].get_ids().len());
        let mut out = vec![Vec::new(); texts.len()];
        let mut tokens = vec![0; texts.len()];
        for batch in order.chunks(self.batch_size) {
            let rows: Vec<Vec<u32>> = batch
                .iter()
                .map(|&i| truncate(encodings[i].get_ids(), self.max_tokens))
                .collect();
            for (&i, row) in batch.iter().zip(&rows) {
                tokens[i] = row.len();
            }
            self.meters.batch(rows.len());
            let vectors = self.forward(&rows).map_err(|e| compute(&e))?;
            for (&i, v) in batch.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok((out, tokens))
    }

    fn forward(&mut self, rows: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, String> {
        self.encoder.embed(rows, &mut self.scratch)
    }
}

/// Cuts a token sequence to `max` tokens, keeping its closing special token ([SEP]) as
/// sentence-transformers does.
fn truncate(ids: &[u32], max: usize) -> Vec<u32> {
    if ids.len() <= max || max < 2 {
        return ids.to_vec();
    }
    let mut out = ids[..max - 1].to_vec();
    out.extend(ids.last());
    out
}

/// Which kernel runs int8 layers on this CPU.
pub fn int8_kernel() -> &'static str {
    match int8::Kernel::detect() {
        int8::Kernel::Vnni => "AVX-512 VNNI",
        int8::Kernel::Avx2 => "AVX2",
        int8::Kernel::Portable => "portable loop",
    }
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}
