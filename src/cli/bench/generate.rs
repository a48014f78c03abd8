//! `ragbox bench generate`: prompt processing and decode speed of a GGUF, for each
//! weight type and prompt length asked.

use std::path::Path;
use std::time::Instant;

use super::rss_mb;
use crate::config::Config;

/// Text the benchmark prompts are cut from (any text does: speed does not depend on it).
const PROMPT_TEXT: &str = "The keeper of the lighthouse on the northern island wrote in his \
log every evening: the weather, the ships that passed, the state of the lamp and the oil \
that remained, the birds that rested on the gallery, and the letters he meant to send. ";

pub(super) async fn run(
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
                frequency_penalty: None,
                presence_penalty: None,
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
