//! The local text generator: any llama-architecture GGUF (SmolLM2-135M-Instruct by
//! default) on ragbox's own decoder ([`super::llama`]) with candle's kernels.
//!
//! The tokenizer is built from the GGUF's own metadata (byte-level BPE: tokens and
//! merges) and prompts are rendered from its own chat template. The matrices are stored
//! at load as `generation.weights` (Q4_0 by default: the shipped file's Q4_1 has no SIMD
//! kernel in candle). One model thread owns the model; requests wait in a bounded
//! queue (full → [`GenError::Busy`]) and stream their text back through a channel. When
//! the receiver goes away (the client disconnected), generation stops at the next token.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::Device;
use candle_core::quantized::{GgmlDType, gguf_file};
use candle_transformers::generation::{LogitsProcessor, Sampling as Sampler};
use tokenizers::Tokenizer;
use tokio::sync::mpsc;

use super::llama::{Llama, Shape};
use crate::config::{GenerationConfig, WeightType};
use crate::domain::{Event, FinishReason, GenError, Message, Sampling, Usage};

fn compute(e: impl std::fmt::Display) -> GenError {
    GenError::Compute(e.to_string())
}

fn load_error(path: &Path) -> impl Fn(candle_core::Error) -> GenError + '_ {
    move |e| GenError::Load(format!("loading {}: {e}", path.display()))
}

struct Job {
    prompt: Vec<u32>,
    sampling: Sampling,
    events: mpsc::Sender<Result<Event, GenError>>,
}

/// Handle to the generator; cheap to clone.
#[derive(Clone)]
pub struct Generator {
    tx: mpsc::Sender<Job>,
    shared: Arc<Shared>,
}

struct Shared {
    tokenizer: Tokenizer,
    template: minijinja::Environment<'static>,
    bos: Option<String>,
    eos: Option<String>,
    add_bos: Option<u32>,
    context: usize,
    name: String,
    tokens: Arc<AtomicU64>,
}

/// A chat template for GGUFs that carry none: ChatML.
const CHATML: &str = "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

impl Generator {
    /// Loads a GGUF and starts the model thread.
    pub fn load(path: &Path, config: &GenerationConfig) -> Result<Self, GenError> {
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
        let tokenizer = gguf_tokenizer(&content).map_err(|e| {
            GenError::Load(format!("building the tokenizer of {}: {e}", path.display()))
        })?;
        let md = &content.metadata;
        let text = |key: &str| md.get(key).and_then(|v| v.to_string().ok()).cloned();
        let number = |key: &str| md.get(key).and_then(|v| v.to_u32().ok());
        let token_text = |key: &str| number(key).and_then(|id| tokenizer.id_to_token(id));
        let context_length = md
            .iter()
            .find(|(k, _)| k.ends_with(".context_length"))
            .and_then(|(_, v)| v.to_u32().ok())
            .unwrap_or(2048) as usize;
        let mut template = minijinja::Environment::new();
        template.add_function(
            "raise_exception",
            |msg: String| -> Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        let source = text("tokenizer.chat_template").unwrap_or_else(|| CHATML.to_owned());
        template
            .add_template_owned("chat", source)
            .map_err(|e| GenError::Load(format!("the GGUF's chat template: {e}")))?;
        let add_bos = md
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false)
            .then(|| number("tokenizer.ggml.bos_token_id"))
            .flatten();
        let mut stops: Vec<u32> = number("tokenizer.ggml.eos_token_id").into_iter().collect();
        for special in ["<|im_end|>", "<|endoftext|>", "<|eot_id|>", "</s>"] {
            stops.extend(tokenizer.token_to_id(special));
        }
        let shared = Shared {
            bos: token_text("tokenizer.ggml.bos_token_id"),
            eos: token_text("tokenizer.ggml.eos_token_id"),
            tokenizer,
            template,
            add_bos,
            context: context_length.min(config.context_tokens),
            name: path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default(),
            tokens: Arc::default(),
        };
        let weights = load_weights(content, &mut file, config.weights, shared.context)
            .map_err(load_error(path))?;
        let model = Model {
            weights,
            stops,
            tokenizer: shared.tokenizer.clone(),
            context: shared.context,
            tokens: shared.tokens.clone(),
        };
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        std::thread::Builder::new()
            .name("ragbox-generate".into())
            .spawn(move || model.serve(rx))
            .map_err(|e| GenError::Load(format!("starting the generator thread: {e}")))?;
        Ok(Self {
            tx,
            shared: Arc::new(shared),
        })
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
        let template = self.shared.template.get_template("chat").map_err(compute)?;
        template
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => self.shared.bos.clone().unwrap_or_default(),
                eos_token => self.shared.eos.clone().unwrap_or_default(),
            })
            .map_err(|e| GenError::Compute(format!("rendering the chat template: {e}")))
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
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => GenError::Busy,
                mpsc::error::TrySendError::Closed(_) => GenError::Stopped,
            })?;
        Ok(rx)
    }

    /// Tokens generated since load (all requests).
    pub fn tokens_generated(&self) -> u64 {
        self.shared.tokens.load(Ordering::Relaxed)
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

struct Model {
    weights: Llama,
    stops: Vec<u32>,
    tokenizer: Tokenizer,
    context: usize,
    tokens: Arc<AtomicU64>,
}

impl Model {
    fn serve(mut self, mut rx: mpsc::Receiver<Job>) {
        while let Some(job) = rx.blocking_recv() {
            if job.events.is_closed() {
                continue; // the client left while the job was queued
            }
            let events = job.events.clone();
            if let Err(e) = self.run(job) {
                let _ = events.blocking_send(Err(e));
            }
        }
    }

    fn run(&mut self, job: Job) -> Result<(), GenError> {
        let Job {
            prompt,
            sampling,
            events,
        } = job;
        let sampler = if sampling.temperature <= 0.0 {
            Sampler::ArgMax
        } else {
            match sampling.top_p {
                Some(p) if p > 0.0 && p < 1.0 => Sampler::TopP {
                    p,
                    temperature: sampling.temperature,
                },
                _ => Sampler::All {
                    temperature: sampling.temperature,
                },
            }
        };
        let mut picker = LogitsProcessor::from_sampling(sampling.seed, sampler);
        let mut logits = self.weights.forward(&prompt, 0).map_err(compute)?;
        let mut position = prompt.len();
        let mut out = TextStream::new(&sampling.stop);
        let mut generated: Vec<u32> = Vec::new();
        // Text of generated[..folded]: decoding only the tokens after it keeps each step's
        // work flat instead of growing with the answer.
        let (mut folded, mut folded_text) = (0usize, String::new());
        let finish = loop {
            if generated.len() >= sampling.max_tokens || position >= self.context {
                break FinishReason::Length;
            }
            let next = picker.sample(&logits).map_err(compute)?;
            if self.stops.contains(&next) && !sampling.ignore_eos {
                break FinishReason::Stop;
            }
            generated.push(next);
            self.tokens.fetch_add(1, Ordering::Relaxed);
            let tail = self
                .tokenizer
                .decode(&generated[folded..], true)
                .map_err(compute)?;
            let text = format!("{folded_text}{tail}");
            // Byte-level pieces concatenate, so a tail that ends on a whole character
            // can be folded into the prefix.
            if generated.len() - folded >= 8 && !tail.ends_with('\u{FFFD}') {
                folded = generated.len();
                folded_text.clone_from(&text);
            }
            let (piece, stopped) = out.advance(&text);
            if !piece.is_empty() && events.blocking_send(Ok(Event::Text(piece))).is_err() {
                return Ok(()); // the receiver is gone: stop here
            }
            if stopped {
                break FinishReason::Stop;
            }
            logits = self.weights.forward(&[next], position).map_err(compute)?;
            position += 1;
        };
        if finish == FinishReason::Length {
            let piece = out.flush();
            if !piece.is_empty() && events.blocking_send(Ok(Event::Text(piece))).is_err() {
                return Ok(());
            }
        }
        let _ = events.blocking_send(Ok(Event::Done(Usage {
            prompt_tokens: prompt.len(),
            completion_tokens: generated.len(),
            finish_reason: finish,
        })));
        Ok(())
    }
}

/// Turns the decoded text so far into new pieces: holds back an incomplete UTF-8
/// character and anything that may be the start of a stop sequence, and cuts the text
/// at the first stop sequence.
struct TextStream<'a> {
    stops: &'a [String],
    sent: usize,
    held: String,
}

impl<'a> TextStream<'a> {
    fn new(stops: &'a [String]) -> Self {
        Self {
            stops,
            sent: 0,
            held: String::new(),
        }
    }

    /// The next piece to send, and whether a stop sequence was reached.
    fn advance(&mut self, text: &str) -> (String, bool) {
        let text = text.trim_end_matches('\u{FFFD}');
        if let Some(at) = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            let piece = text.get(self.sent..at).unwrap_or_default().to_owned();
            self.sent = at.max(self.sent);
            return (piece, true);
        }
        // Keep back the longest tail that could begin a stop sequence.
        let mut keep = 0;
        for stop in self.stops {
            for (i, _) in stop.char_indices().skip(1) {
                if text.ends_with(&stop[..i]) {
                    keep = keep.max(i);
                }
            }
        }
        let end = text.len() - keep;
        let piece = text.get(self.sent..end).unwrap_or_default().to_owned();
        self.held = text[end..].to_owned();
        self.sent = self.sent.max(end);
        (piece, false)
    }

    /// What was held back, at the end of generation.
    fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

/// Reads a GGUF's weights, converting matrices to `weights` where asked.
pub(crate) fn load_weights(
    content: gguf_file::Content,
    file: &mut std::fs::File,
    weights: WeightType,
    context: usize,
) -> candle_core::Result<Llama> {
    let target = match weights {
        WeightType::Original => None,
        WeightType::Q4_0 => Some(GgmlDType::Q4_0),
        WeightType::F16 => Some(GgmlDType::F16),
        WeightType::F32 => Some(GgmlDType::F32),
    };
    let md = &content.metadata;
    let get = |key: &str| {
        md.get(&format!("llama.{key}"))
            .ok_or_else(|| candle_core::Error::Msg(format!("llama.{key} is missing")))
    };
    let heads = get("attention.head_count")?.to_u32()? as usize;
    let hidden = get("embedding_length")?.to_u32()? as usize;
    let shape = Shape {
        heads,
        kv_heads: get("attention.head_count_kv")
            .and_then(|v| v.to_u32())
            .map_or(heads, |v| v as usize),
        head_dim: hidden / heads,
        hidden,
        eps: f64::from(get("attention.layer_norm_rms_epsilon")?.to_f32()?),
        rope_base: get("rope.freq_base")
            .and_then(|v| v.to_f32())
            .unwrap_or(10_000.0),
    };
    let blocks = get("block_count")?.to_u32()? as usize;
    let read = |name: &str| {
        if content.tensor_infos.contains_key(name) {
            content.tensor(file, name, &Device::Cpu).map(Some)
        } else {
            Ok(None)
        }
    };
    Llama::new(shape, read, blocks, context, target)
}

/// Builds a byte-level BPE tokenizer from `tokenizer.ggml.*` metadata.
fn gguf_tokenizer(content: &gguf_file::Content) -> Result<Tokenizer, String> {
    let md = &content.metadata;
    let model = md
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
        .unwrap_or("");
    if model != "gpt2" {
        return Err(format!(
            "tokenizer model `{model}` is not supported (byte-level BPE, `gpt2`, is)"
        ));
    }
    let strings = |key: &str| -> Result<Vec<String>, String> {
        md.get(key)
            .ok_or_else(|| format!("{key} is missing"))?
            .to_vec()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|v| v.to_string().cloned().map_err(|e| e.to_string()))
            .collect()
    };
    let tokens = strings("tokenizer.ggml.tokens")?;
    let merges = strings("tokenizer.ggml.merges")?;
    let types: Vec<i32> = match md.get("tokenizer.ggml.token_type").map(|v| v.to_vec()) {
        Some(Ok(list)) => list.iter().map(|v| v.to_i32().unwrap_or(1)).collect(),
        _ => Vec::new(),
    };
    let vocab: HashMap<&str, usize> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    // Control (3) and user-defined (4) tokens are matched whole, never split.
    let added: Vec<serde_json::Value> = types
        .iter()
        .enumerate()
        .filter(|(_, t)| **t == 3 || **t == 4)
        .map(|(id, t)| {
            serde_json::json!({
                "id": id, "content": tokens[id], "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": *t == 3,
            })
        })
        .collect();
    let pre = md
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
        .unwrap_or("default");
    let byte_level = serde_json::json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true,
    });
    // SmolLM's pre-tokenizer splits digits one by one before the byte-level split.
    let pre_tokenizer = if pre == "smollm" {
        serde_json::json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level,
        ]})
    } else {
        byte_level.clone()
    };
    let spec = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": null,
        "decoder": byte_level,
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null,
            "continuing_subword_prefix": null, "end_of_word_suffix": null,
            "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges,
        },
    });
    spec.to_string()
        .parse::<Tokenizer>()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stream_cuts_at_stop_sequences_and_holds_their_prefixes() {
        let stops = vec!["\nUser:".to_owned()];
        let mut s = TextStream::new(&stops);
        assert_eq!(s.advance("Hello"), ("Hello".into(), false));
        assert_eq!(s.advance("Hello world\nUs"), (" world".into(), false));
        assert_eq!(s.advance("Hello world\nUser: hi"), ("".into(), true));
        let mut s = TextStream::new(&stops);
        s.advance("a\nU");
        assert_eq!(s.flush(), "\nU");
    }

    #[test]
    fn text_stream_waits_for_whole_characters() {
        let mut s = TextStream::new(&[]);
        assert_eq!(s.advance("caf\u{FFFD}"), ("caf".into(), false));
        assert_eq!(s.advance("café"), ("é".into(), false));
    }
}
