//! The local text generator: any llama-architecture GGUF (SmolLM2-135M-Instruct by
//! default) on ragbox's own decoder ([`super::llama`]) with candle's kernels.
//!
//! The tokenizer is built from the GGUF's own metadata (`tokenizer`) and prompts are
//! rendered from its own chat template (`template`). The matrices are stored at load
//! as `generation.weights` (Q4_0 by default: the shipped file's Q4_1 has no SIMD kernel
//! in candle). One model thread (`model`) owns the model; requests wait in a bounded
//! queue (full → [`GenError::Busy`]) and stream their text back through a channel. When
//! the receiver goes away (the client disconnected), generation stops at the next token.
//!
//! [`Generator::start`] returns once the GGUF's metadata and tokenizer are read; the
//! model thread then converts the weights itself, and requests queued meanwhile wait
//! for it ([`Generator::load_state`] says where it is).

mod model;
mod penalty;
mod stream;
mod template;
mod tokenizer;

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use candle_core::quantized::gguf_file;
use tokenizers::Tokenizer;
use tokio::sync::mpsc;

use super::meters::GenMeters;
use crate::config::GenerationConfig;
use crate::domain::{Event, GenError, Message, Sampling};
use model::{Job, Model};
use template::ChatTemplate;

pub(crate) use model::load_weights;

/// Context length when the GGUF does not give one.
const DEFAULT_CONTEXT: usize = 2048;

/// Texts of the tokens that end a turn in the common chat formats, besides the GGUF's
/// own end-of-sequence token.
const END_OF_TURN: [&str; 4] = ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>"];

fn compute(e: impl std::fmt::Display) -> GenError {
    GenError::Compute(e.to_string())
}

fn load_error(path: &Path) -> impl Fn(candle_core::Error) -> GenError + '_ {
    move |e| GenError::Load(format!("loading {}: {e}", path.display()))
}

/// Handle to the generator; cheap to clone.
#[derive(Clone)]
pub struct Generator {
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

/// What the handles share: everything but the model itself.
struct Shared {
    tokenizer: Tokenizer,
    template: ChatTemplate,
    add_bos: Option<u32>,
    context: usize,
    name: String,
    load: Mutex<LoadState>,
    loaded: Condvar,
    meters: GenMeters,
}

/// Where the model's weights are.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadState {
    /// The model thread is reading and converting them; requests wait in the queue.
    Loading,
    /// In place, after this many seconds of loading.
    Ready {
        /// Seconds from the thread's start to the weights in place.
        secs: f64,
    },
    /// They could not be loaded (the message says why); requests are refused.
    Failed(String),
}

impl Shared {
    fn set_load(&self, state: LoadState) {
        *self.load.lock().unwrap_or_else(|e| e.into_inner()) = state;
        self.loaded.notify_all();
    }
}

impl Generator {
    /// Loads a GGUF and starts the model thread; returns with the weights in place.
    pub fn load(path: &Path, config: &GenerationConfig) -> Result<Self, GenError> {
        let generator = Self::start(path, config)?;
        generator.wait_loaded()?;
        Ok(generator)
    }

    /// Reads a GGUF's metadata and tokenizer and starts the model thread, which loads
    /// the weights before it takes the first request. Requests may be queued at once.
    pub fn start(path: &Path, config: &GenerationConfig) -> Result<Self, GenError> {
        if !path.is_file() {
            return Err(GenError::Load(format!(
                "generation model {} is missing: run `./install.sh --models-only` \
                 (or set models.generation_file)",
                path.display()
            )));
        }
        let mut file = std::fs::File::open(path)
            .map_err(|e| GenError::Load(format!("opening {}: {e}", path.display())))?;
        let content = gguf_file::Content::read(&mut file).map_err(load_error(path))?;
        let tokenizer = tokenizer::gguf_tokenizer(&content).map_err(|e| {
            GenError::Load(format!("building the tokenizer of {}: {e}", path.display()))
        })?;
        let meta = Metadata(&content.metadata);
        let token_text = |key: &str| meta.number(key).and_then(|id| tokenizer.id_to_token(id));
        let template = ChatTemplate::new(
            meta.text("tokenizer.chat_template"),
            token_text("tokenizer.ggml.bos_token_id"),
            token_text("tokenizer.ggml.eos_token_id"),
        )?;
        let add_bos = meta
            .flag("tokenizer.ggml.add_bos_token")
            .then(|| meta.number("tokenizer.ggml.bos_token_id"))
            .flatten();
        let mut stops: Vec<u32> = meta
            .number("tokenizer.ggml.eos_token_id")
            .into_iter()
            .collect();
        stops.extend(END_OF_TURN.iter().filter_map(|t| tokenizer.token_to_id(t)));
        let shared = Shared {
            tokenizer,
            template,
            add_bos,
            context: meta.context_length().min(config.context_tokens),
            name: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            load: Mutex::new(LoadState::Loading),
            loaded: Condvar::new(),
            meters: GenMeters::new().map_err(compute)?,
        };
        let shared = Arc::new(shared);
        let (tx, mut rx) = mpsc::channel::<Job>(config.queue_capacity.max(1));
        let (mine, path, weights) = (shared.clone(), path.to_path_buf(), config.weights);
        let keep_warm = std::time::Duration::from_secs(config.keep_warm_secs);
        std::thread::Builder::new()
            .name("ragbox-generate".into())
            .spawn(move || {
                let started = Instant::now();
                let loaded = load_weights(content, &mut file, weights, mine.context)
                    .map_err(|e| format!("loading {}: {e}", path.display()));
                match loaded {
                    Ok(weights) => {
                        let secs = started.elapsed().as_secs_f64();
                        tracing::info!(model = %mine.name, secs, "generation model loaded");
                        // The conversion's scratch is free now: back to the system.
                        crate::memory::give_back_everywhere();
                        mine.meters.loaded(secs);
                        mine.set_load(LoadState::Ready { secs });
                        let model = Model {
                            weights,
                            stops,
                            tokenizer: mine.tokenizer.clone(),
                            context: mine.context,
                            meters: mine.meters.clone(),
                            keep_warm,
                        };
                        model.serve(rx);
                    }
                    Err(message) => {
                        tracing::error!(error = %message, "the generation model could not be loaded");
                        mine.set_load(LoadState::Failed(message.clone()));
                        // What was queued while it loaded hears why.
                        while let Some(job) = rx.blocking_recv() {
                            let _ = job.events.blocking_send(Err(GenError::Load(message.clone())));
                        }
                    }
                }
            })
            .map_err(|e| GenError::Load(format!("starting the generator thread: {e}")))?;
        // Building the tokenizer from the metadata left its scratch free on this thread.
        crate::memory::give_back();
        Ok(Self { tx, shared })
    }

    /// Where the weights are: loading, in place, or failed.
    pub fn load_state(&self) -> LoadState {
        self.shared
            .load
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Blocks until the weights are in place (or failed to load).
    pub fn wait_loaded(&self) -> Result<(), GenError> {
        let mut state = self.shared.load.lock().unwrap_or_else(|e| e.into_inner());
        while *state == LoadState::Loading {
            state = self
                .shared
                .loaded
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        match &*state {
            LoadState::Failed(message) => Err(GenError::Load(message.clone())),
            _ => Ok(()),
        }
    }

    /// The model's name (its file name without extension).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Tokens the model attends to (prompt and answer together).
    pub fn context_tokens(&self) -> usize {
        self.shared.context
    }

    /// Tokens of a text (without special tokens added).
    pub fn count_tokens(&self, text: &str) -> usize {
        self.shared
            .tokenizer
            .encode(text, false)
            .map(|e| e.len())
            .unwrap_or_else(|_| text.len() / 3)
    }

    /// The prompt for a conversation, from the GGUF's chat template, ready for the
    /// assistant's answer.
    pub fn render(&self, messages: &[Message]) -> Result<String, GenError> {
        self.shared.template.render(messages)
    }

    /// Token ids of a rendered prompt.
    pub fn tokenize(&self, prompt: &str) -> Result<Vec<u32>, GenError> {
        let encoding = self
            .shared
            .tokenizer
            .encode(prompt, false)
            .map_err(compute)?;
        let mut ids: Vec<u32> = self.shared.add_bos.into_iter().collect();
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// Starts generating; refuses at once with [`GenError::Busy`] when the queue is
    /// full. Text arrives on the returned channel, then one [`Event::Done`]. Dropping
    /// the receiver stops the generation.
    pub fn generate(
        &self,
        prompt: Vec<u32>,
        sampling: Sampling,
    ) -> Result<mpsc::Receiver<Result<Event, GenError>>, GenError> {
        if let LoadState::Failed(message) = self.load_state() {
            return Err(GenError::Load(message));
        }
        if prompt.is_empty() {
            return Err(GenError::TooLong("the prompt is empty".into()));
        }
        if prompt.len() >= self.shared.context {
            return Err(GenError::TooLong(format!(
                "the prompt has {} tokens; the model's context holds {}",
                prompt.len(),
                self.shared.context
            )));
        }
        let (events, rx) = mpsc::channel(64);
        self.tx
            .try_send(Job {
                prompt,
                sampling,
                events,
                queued: Instant::now(),
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => GenError::Busy,
                mpsc::error::TrySendError::Closed(_) => GenError::Stopped,
            })?;
        Ok(rx)
    }

    /// Bytes the model's key/value cache and work buffers held after its last answer,
    /// or 0 once it gave them back (`generation.keep_warm_secs` later).
    pub fn held_bytes(&self) -> usize {
        self.shared.meters.held()
    }

    /// Tokens generated since load (all requests).
    pub fn tokens_generated(&self) -> u64 {
        self.shared.meters.tokens_generated()
    }

    /// The model's series, for a server's registry.
    pub fn meters(&self) -> &GenMeters {
        &self.shared.meters
    }

    /// Reads the queue's depth into the series (before each scrape).
    pub fn refresh_meters(&self) {
        self.shared
            .meters
            .set_depth(self.tx.max_capacity() - self.tx.capacity());
    }

    /// Whether the model thread is running.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Whether the queue has room for another request now.
    pub fn has_room(&self) -> bool {
        self.tx.capacity() > 0
    }
}

/// Typed reads of a GGUF's metadata; a missing or mistyped key reads as absent.
struct Metadata<'a>(&'a std::collections::HashMap<String, gguf_file::Value>);

impl Metadata<'_> {
    fn text(&self, key: &str) -> Option<String> {
        self.0.get(key).and_then(|v| v.to_string().ok()).cloned()
    }

    fn number(&self, key: &str) -> Option<u32> {
        self.0.get(key).and_then(|v| v.to_u32().ok())
    }

    fn flag(&self, key: &str) -> bool {
        self.0
            .get(key)
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false)
    }

    /// `<architecture>.context_length`, whatever the architecture's name.
    fn context_length(&self) -> usize {
        self.0
            .iter()
            .find(|(k, _)| k.ends_with(".context_length"))
            .and_then(|(_, v)| v.to_u32().ok())
            .map_or(DEFAULT_CONTEXT, |n| n as usize)
    }
}
