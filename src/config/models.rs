//! The bundled models: where their files are and how the embedding and local
//! generation models run.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::LOCAL_PROVIDER;

/// Where the model files are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Folder with all-MiniLM-L6-v2's `config.json`, `tokenizer.json`, `model.safetensors`.
    pub embedding_dir: PathBuf,
    /// The local generation model: a llama-architecture GGUF file.
    pub generation_file: PathBuf,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            embedding_dir: PathBuf::from("models/all-MiniLM-L6-v2"),
            generation_file: PathBuf::from(
                "models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
            ),
        }
    }
}

/// Weight type the generator converts the GGUF's matrices to at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightType {
    /// As stored in the file.
    Original,
    /// 4-bit blocks with a SIMD kernel in candle: the fastest here.
    Q4_0,
    /// Half precision.
    F16,
    /// Full precision.
    F32,
}

/// Generation settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationConfig {
    /// The provider chats use when their agent names none: `local` (the bundled
    /// model) or the name of a `[providers.NAME]` section.
    pub provider: String,
    /// Weight type the matrices are converted to at load.
    pub weights: WeightType,
    /// Requests waiting for the model before new ones get 429.
    pub queue_capacity: usize,
    /// Context window used (prompt and answer), at most the model's own.
    pub context_tokens: usize,
    /// Seconds the bundled model keeps its key/value cache and work buffers after its
    /// last answer before it gives their memory back (about 80 MB after a 1,024-token
    /// prompt). The next chat within this time finds them in place; after it, they grow
    /// anew, page by page, which on a virtual machine costs a 1,024-token prompt's first
    /// token up to 150 ms more. 0 gives them back after every answer.
    pub keep_warm_secs: u64,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            provider: LOCAL_PROVIDER.to_owned(),
            weights: WeightType::Q4_0,
            queue_capacity: 4,
            context_tokens: 2048,
            keep_warm_secs: 30,
        }
    }
}

/// Embedding runtime settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingConfig {
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Requests waiting for the model before new ones get 503.
    pub queue_capacity: usize,
    /// Tokens per text; longer texts are truncated (the model was trained with 256).
    pub max_tokens: usize,
    /// Arithmetic of the dense layers: `f32`, or `int8` (AVX-512 VNNI where the CPU has
    /// it).
    pub precision: EmbeddingPrecision,
}

/// Arithmetic of the embedder's dense layers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingPrecision {
    /// Full precision: the reference.
    #[default]
    F32,
    /// Weights and each layer's input rounded to 8 bits, products summed in integers.
    Int8,
}

impl Default for EmbeddingConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            queue_capacity: 256,
            max_tokens: 256,
            precision: EmbeddingPrecision::F32,
        }
    }
}
