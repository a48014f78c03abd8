//! A llama-architecture decoder over GGUF weights, on candle tensors.
//!
//! Two things make it faster than candle's own `quantized_llama` on this model:
//! - the key/value cache is allocated once for the whole context and written in place,
//!   and grouped-query attention reads it directly (the query heads that share a
//!   key/value head are stacked as rows), so a decoding step copies nothing that grows
//!   with the context;
//! - prompts (many rows at once) multiply against weights dequantized to f32 for the
//!   call, through the f32 gemm kernel, instead of the quantized row-by-row dot products
//!   that suit single-token decoding.

use std::collections::HashMap;
use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};

/// Type of the key/value cache: half the bytes of f32 to read at every step.
const CACHE: DType = DType::F16;

/// Rows from which a product runs on dequantized f32 weights.
const DENSE_ROWS: usize = 16;

/// A weight matrix: quantized for decoding, dequantized on the fly for prompts.
struct Linear {
    quantized: QMatMul,
    raw: Arc<QTensor>,
}

impl Linear {
    fn new(t: QTensor) -> Result<Self> {
        let raw = Arc::new(t);
        Ok(Self {
            quantized: QMatMul::from_arc(raw.clone())?,
            raw,
        })
    }

    /// `x` is `[rows, in]`; the result `[rows, out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.dim(0)? >= DENSE_ROWS {
            let w = self.raw.dequantize(&Device::Cpu)?;
            x.matmul(&w.t()?)
        } else {
            self.quantized.forward(x)
        }
    }
}

struct Layer {
    attn_norm: Tensor,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
    /// `[kv_heads, context, head_dim]`, written in place.
    k_cache: Tensor,
    v_cache: Tensor,
}

/// The model's shape, read from the GGUF metadata.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (fewer with grouped-query attention).
    pub kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// Hidden width.
    pub hidden: usize,
    /// RMS norm epsilon.
    pub eps: f64,
    /// Rotary base frequency.
    pub rope_base: f32,
}

/// The decoder and its key/value cache.
pub struct Llama {
    shape: Shape,
    embeddings: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    output: Linear,
    cos: Tensor,
    sin: Tensor,
    context: usize,
}

impl Llama {
    /// Builds the model from named GGUF tensors, with a cache for `context` tokens.
    pub fn new(
        shape: Shape,
        mut tensors: HashMap<String, QTensor>,
        blocks: usize,
        context: usize,
    ) -> Result<Self> {
        let mut take = |name: &str| {
            tensors
                .remove(name)
                .ok_or_else(|| candle_core::Error::Msg(format!("tensor {name} is missing")))
        };
        let cpu = &Device::Cpu;
        let embedded = take("token_embd.weight")?;
        let embeddings = embedded.dequantize(cpu)?;
        let output = match take("output.weight") {
            Ok(t) => t,
            Err(_) => embedded, // tied to the embeddings
        };
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let mut linear = |n: &str| Linear::new(take(&format!("blk.{i}.{n}.weight"))?);
            let (wq, wk, wv, wo) = (
                linear("attn_q")?,
                linear("attn_k")?,
                linear("attn_v")?,
                linear("attn_output")?,
            );
            let (gate, up, down) = (linear("ffn_gate")?, linear("ffn_up")?, linear("ffn_down")?);
            let cache = || Tensor::zeros((shape.kv_heads, context, shape.head_dim), CACHE, cpu);
            layers.push(Layer {
                attn_norm: take(&format!("blk.{i}.attn_norm.weight"))?.dequantize(cpu)?,
                ffn_norm: take(&format!("blk.{i}.ffn_norm.weight"))?.dequantize(cpu)?,
                wq,
                wk,
                wv,
                wo,
                gate,
                up,
                down,
                k_cache: cache()?,
                v_cache: cache()?,
            });
        }
        let norm = take("output_norm.weight")?.dequantize(cpu)?;
        let half = shape.head_dim / 2;
        let inverse: Vec<f32> = (0..half)
            .map(|i| 1.0 / shape.rope_base.powf(2.0 * i as f32 / shape.head_dim as f32))
            .collect();
        let angles: Vec<f32> = (0..context)
            .flat_map(|p| inverse.iter().map(move |f| p as f32 * f))
            .collect();
        let angles = Tensor::from_vec(angles, (context, half), cpu)?;
        Ok(Self {
            shape,
            embeddings,
            layers,
            norm,
            output: Linear::new(output)?,
            cos: angles.cos()?,
            sin: angles.sin()?,
            context,
        })
    }

    /// Runs `ids` at positions `position..`, whose keys and values join the cache (the
    /// cache beyond `position` is overwritten), and returns the logits of the last one.
    pub fn forward(&mut self, ids: &[u32], position: usize) -> Result<Tensor> {
        let rows = ids.len();
        if rows == 0 || position + rows > self.context {
            return Err(candle_core::Error::Msg(format!(
                "{rows} tokens at position {position} do not fit {} tokens of context",
                self.context
            )));
        }
        let cpu = &Device::Cpu;
        let s = self.shape;
        let total = position + rows;
        let rep = s.heads / s.kv_heads;
        let scale = 1.0 / (s.head_dim as f64).sqrt();
        let ids = Tensor::new(ids, cpu)?;
        let mut x = self.embeddings.index_select(&ids, 0)?;
        let cos = self.cos.narrow(0, position, rows)?;
        let sin = self.sin.narrow(0, position, rows)?;
        let mask = (rows > 1)
            .then(|| causal_mask(rows, position))
            .transpose()?;

        for layer in &self.layers {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, s.eps as f32)?;
            // [rows, heads * dim] → [heads, rows, dim], rotated.
            let heads = |t: Tensor, n: usize| -> Result<Tensor> {
                let t = t
                    .reshape((rows, n, s.head_dim))?
                    .transpose(0, 1)?
                    .contiguous()?
                    .unsqueeze(0)?;
                Ok(t)
            };
            let q = heads(layer.wq.forward(&h)?, s.heads)?;
            let k = heads(layer.wk.forward(&h)?, s.kv_heads)?;
            let v = layer
                .wv
                .forward(&h)?
                .reshape((rows, s.kv_heads, s.head_dim))?
                .transpose(0, 1)?
                .contiguous()?;
            let q = candle_nn::rotary_emb::rope_i(&q, &cos, &sin)?.squeeze(0)?;
            let k = candle_nn::rotary_emb::rope_i(&k, &cos, &sin)?.squeeze(0)?;
            layer.k_cache.slice_set(&k.to_dtype(CACHE)?, 1, position)?;
            layer.v_cache.slice_set(&v.to_dtype(CACHE)?, 1, position)?;
            // Prompts compute attention in f32 (the f16 product is slow for many rows);
            // a decoding step reads the f16 cache as it is.
            let work = if rows > 1 { DType::F32 } else { CACHE };
            let keys = layer.k_cache.narrow(1, 0, total)?.to_dtype(work)?;
            let values = layer.v_cache.narrow(1, 0, total)?.to_dtype(work)?;

            // The query heads sharing a key/value head become rows of one product.
            let q = q
                .reshape((s.kv_heads, rep * rows, s.head_dim))?
                .to_dtype(work)?;
            let mut scores = (q.matmul(&keys.t()?)?.to_dtype(DType::F32)? * scale)?;
            if let Some(mask) = &mask {
                scores = scores
                    .reshape((s.kv_heads, rep, rows, total))?
                    .broadcast_add(mask)?
                    .reshape((s.kv_heads, rep * rows, total))?;
            }
            let weights = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(work)?;
            let attended = weights
                .matmul(&values)?
                .to_dtype(DType::F32)?
                .reshape((s.heads, rows, s.head_dim))?
                .transpose(0, 1)?
                .reshape((rows, s.hidden))?;
            x = (x + layer.wo.forward(&attended)?)?;

            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, s.eps as f32)?;
            let gated =
                (candle_nn::ops::silu(&layer.gate.forward(&h)?)? * layer.up.forward(&h)?)?;
            x = (x + layer.down.forward(&gated)?)?;
        }
        let last = x.narrow(0, rows - 1, 1)?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, s.eps as f32)?;
        self.output.forward(&last)?.squeeze(0)?.to_dtype(DType::F32)
    }
}

/// `[rows, position + rows]`: 0 where row `r` (at position `position + r`) may look,
/// minus infinity after it.
fn causal_mask(rows: usize, position: usize) -> Result<Tensor> {
    let total = position + rows;
    let mask: Vec<f32> = (0..rows)
        .flat_map(|r| {
            (0..total).map(move |t| {
                if t > position + r {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (rows, total), &Device::Cpu)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::path::Path;

    use candle_core::quantized::{GgmlDType, gguf_file};
    use candle_transformers::models::quantized_llama::ModelWeights;

    use super::*;
    use crate::config::{Config, WeightType};

    fn close(a: &Tensor, b: &Tensor) -> (f32, bool) {
        let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
        let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        let argmax = |v: &[f32]| {
            v.iter()
                .enumerate()
                .max_by(|x, y| x.1.total_cmp(y.1))
                .map(|(i, _)| i)
        };
        (diff / scale, argmax(&a) == argmax(&b))
    }

    /// Same f32 weights through candle's reference llama and this one: the logits of a
    /// prompt and of the decoding steps after it agree.
    #[test]
    fn logits_match_candles_reference_llama() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(Config::default().models.generation_file);
        let cpu = &Device::Cpu;
        let mut file = std::fs::File::open(&path).expect("run ./install.sh --models-only");
        let content = gguf_file::Content::read(&mut file).unwrap();
        let mut tensors = Vec::new();
        for name in content.tensor_infos.keys() {
            let t = content.tensor(&mut file, name, cpu).unwrap();
            let t = QTensor::quantize(&t.dequantize(cpu).unwrap(), GgmlDType::F32).unwrap();
            tensors.push((name.clone(), t));
        }
        let metadata: Vec<(&str, &gguf_file::Value)> = content
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let mut buffer = Cursor::new(Vec::new());
        gguf_file::write(&mut buffer, &metadata, &refs).unwrap();
        drop(tensors);
        buffer.set_position(0);
        let written = gguf_file::Content::read(&mut buffer).unwrap();
        let mut reference = ModelWeights::from_gguf(written, &mut buffer, cpu).unwrap();

        let mut file = std::fs::File::open(&path).unwrap();
        let content = gguf_file::Content::read(&mut file).unwrap();
        let mut ours =
            crate::ml::generator::load_weights(content, &mut file, WeightType::F32, 256).unwrap();

        // A prompt long enough for the dense path, then decoding steps.
        let mut ids: Vec<u32> = (1..40u32).map(|i| (i * 7919) % 49_000 + 10).collect();
        let prompt = Tensor::new(ids.as_slice(), cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let want = reference.forward(&prompt, 0).unwrap().squeeze(0).unwrap();
        let got = ours.forward(&ids, 0).unwrap();
        let (diff, same) = close(&want, &got);
        assert!(diff < 1e-3 && same, "prompt logits differ by {diff}");
        for step in 0..4 {
            let next = (step * 1013 + 77) as u32;
            let position = ids.len();
            ids.push(next);
            let input = Tensor::new(&[next], cpu).unwrap().unsqueeze(0).unwrap();
            let want = reference
                .forward(&input, position)
                .unwrap()
                .squeeze(0)
                .unwrap();
            let got = ours.forward(&[next], position).unwrap();
            let (diff, same) = close(&want, &got);
            assert!(diff < 1e-3 && same, "step {step}: logits differ by {diff}");
        }
    }
}
