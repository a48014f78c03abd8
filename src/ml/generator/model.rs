//! The model thread: it owns the decoder, takes queued jobs one at a time, and streams
//! each answer back piece by piece until it ends or its receiver goes away.

use std::time::{Duration, Instant};

use candle_core::quantized::{GgmlDType, gguf_file};
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling as Sampler};
use tokenizers::Tokenizer;
use tokio::sync::mpsc;

use super::compute;
use super::penalty::Penalties;
use super::stream::TextStream;
use crate::config::WeightType;
use crate::domain::{Event, FinishReason, GenError, Sampling, Usage};
use crate::ml::llama::{Llama, Shape};
use crate::ml::meters::GenMeters;

/// A request waiting in the queue: its prompt, how to sample, and where its answer goes.
pub(super) struct Job {
    pub(super) prompt: Vec<u32>,
    pub(super) sampling: Sampling,
    pub(super) events: mpsc::Sender<Result<Event, GenError>>,
    /// When it entered the queue (its time to first token counts from here).
    pub(super) queued: Instant,
}

/// What the model thread owns.
pub(super) struct Model {
    /// The decoder.
    pub(super) weights: Llama,
    /// Tokens that end a turn.
    pub(super) stops: Vec<u32>,
    /// For turning generated ids back into text.
    pub(super) tokenizer: Tokenizer,
    /// Tokens the model attends to.
    pub(super) context: usize,
    /// The series the thread keeps.
    pub(super) meters: GenMeters,
    /// How long after the last answer the cache and buffers stay
    /// (`generation.keep_warm_secs`).
    pub(super) keep_warm: Duration,
}

impl Model {
    /// Answers jobs one at a time until the queue closes; [`Model::keep_warm`] after
    /// the last one, lets the memory its answers grew go (the key/value cache and work
    /// buffers).
    pub(super) fn serve(mut self, mut rx: mpsc::Receiver<Job>) {
        // A clock for the idle timer (without one, nothing is released).
        let clock = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build();
        // Whether a cache and buffers grown by an answer are still held.
        let mut holding = false;
        loop {
            let next = match &clock {
                Ok(clock) if holding => {
                    // The timer is made inside the clock's context.
                    let keep = self.keep_warm;
                    clock.block_on(async { tokio::time::timeout(keep, rx.recv()).await })
                }
                _ => Ok(rx.blocking_recv()),
            };
            let job = match next {
                Ok(Some(job)) => job,
                Ok(None) => return, // the queue closed
                Err(_idle) => {
                    self.weights.release();
                    crate::memory::give_back_everywhere();
                    self.meters.set_held(self.weights.held_bytes());
                    holding = false;
                    continue;
                }
            };
            if job.events.is_closed() {
                continue; // the client left while the job was queued
            }
            holding = true;
            let events = job.events.clone();
            let _running = self.meters.running();
            let answered = self.run(job);
            self.meters.set_held(self.weights.held_bytes());
            if let Err(e) = answered {
                self.meters.finished("error", 0, Duration::ZERO);
                let _ = events.blocking_send(Err(e));
            }
        }
    }

    /// Generates one answer into its channel; returns early, without error, when the
    /// receiver is gone.
    fn run(&mut self, job: Job) -> Result<(), GenError> {
        let Job {
            prompt,
            sampling,
            events,
            queued,
        } = job;
        let mut picker = LogitsProcessor::from_sampling(sampling.seed, sampler(&sampling));
        let started = Instant::now();
        let mut logits = self.weights.forward(&prompt, 0).map_err(compute)?;
        let prompt_took = started.elapsed();
        let mut first: Option<Instant> = None;
        let meters = self.meters.clone();
        let cancelled = |generated: usize, first: Option<Instant>| {
            let decoding = first.map(|t| t.elapsed()).unwrap_or_default();
            meters.finished("cancelled", generated, decoding);
            Ok(())
        };
        let mut position = prompt.len();
        let mut out = TextStream::new(&self.tokenizer, &sampling.stop);
        let mut generated = 0usize;
        let mut penalties = Penalties::new(
            sampling.frequency_penalty.unwrap_or(0.0),
            sampling.presence_penalty.unwrap_or(0.0),
        );
        let finish = loop {
            if generated >= sampling.max_tokens || position >= self.context {
                break FinishReason::Length;
            }
            if penalties.active() {
                let mut values = logits.to_vec1::<f32>().map_err(compute)?;
                penalties.apply(&mut values);
                let n = values.len();
                logits = Tensor::from_vec(values, n, &Device::Cpu).map_err(compute)?;
            }
            let next = picker.sample(&logits).map_err(compute)?;
            if first.is_none() {
                first = Some(Instant::now());
                self.meters
                    .prompt(prompt.len(), prompt_took, queued.elapsed());
            }
            penalties.record(next);
            if self.stops.contains(&next) && !sampling.ignore_eos {
                break FinishReason::Stop;
            }
            generated += 1;
            self.meters.token();
            let (piece, stopped) = out.step(next)?;
            if !piece.is_empty() && events.blocking_send(Ok(Event::Text(piece))).is_err() {
                return cancelled(generated, first); // the receiver is gone: stop here
            }
            if stopped {
                break FinishReason::Stop;
            }
            logits = self.weights.forward(&[next], position).map_err(compute)?;
            position += 1;
        };
        // Text held back as a possible start of a stop sequence is part of the answer
        // when it ends any other way (end of turn, token limit); after a stop sequence
        // nothing is held.
        let piece = out.flush();
        if !piece.is_empty() && events.blocking_send(Ok(Event::Text(piece))).is_err() {
            return cancelled(generated, first);
        }
        let decoding = first.map(|t| t.elapsed()).unwrap_or_default();
        self.meters.finished(finish.as_str(), generated, decoding);
        // Before the end is sent, so that whoever reads the answer's end reads this too.
        self.meters.set_held(self.weights.held_bytes());
        let _ = events.blocking_send(Ok(Event::Done(Usage {
            prompt_tokens: prompt.len(),
            completion_tokens: generated,
            finish_reason: finish,
        })));
        Ok(())
    }
}

/// Temperatures below this sample as greedy: dividing logits by less overflows the
/// softmax, and the distribution is one token already.
const MIN_TEMPERATURE: f64 = 1e-3;

/// The sampler `sampling` asks for: greedy at temperature 0 (or below
/// [`MIN_TEMPERATURE`]), nucleus when `top_p` is below 1, else the whole distribution.
fn sampler(sampling: &Sampling) -> Sampler {
    let temperature = sampling.temperature;
    if temperature.is_nan() || temperature < MIN_TEMPERATURE || temperature.is_infinite() {
        return Sampler::ArgMax;
    }
    match sampling.top_p {
        // Nothing but the likeliest token is inside a nucleus this small (and the
        // sampler's f32 would read it as 0 and keep no token at all).
        Some(p) if p < 1e-6 => Sampler::ArgMax,
        Some(p) if p < 1.0 => Sampler::TopP { p, temperature },
        _ => Sampler::All { temperature },
    }
}

/// Reads a GGUF's weights, converting matrices to `weights` where asked.
pub(crate) fn load_weights<R: std::io::Read + std::io::Seek>(
    content: gguf_file::Content,
    file: &mut R,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sampling(temperature: f64, top_p: Option<f64>) -> Sampling {
        Sampling {
            temperature,
            top_p,
            seed: 1,
            max_tokens: 1,
            stop: vec![],
            ignore_eos: false,
            frequency_penalty: None,
            presence_penalty: None,
        }
    }

    #[test]
    fn extreme_settings_sample_a_token_instead_of_failing() {
        let logits = Tensor::new(&[1.0f32, 30.0, -5.0, 2.0], &Device::Cpu).unwrap();
        for (t, p) in [
            (2.2250738585072014e-308, Some(0.79)),
            (1e-300, None),
            (0.0, Some(0.5)),
            (0.7, Some(0.0)),
            (0.7, Some(1e-300)),
            (2.0, Some(1.0)),
        ] {
            let s = sampling(t, p);
            let mut picker = LogitsProcessor::from_sampling(1, sampler(&s));
            let token = picker.sample(&logits).unwrap();
            assert!(token < 4, "temperature {t}, top_p {p:?}");
        }
    }
}
