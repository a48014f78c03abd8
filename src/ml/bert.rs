//! The BERT encoder behind the embedder, written for the CPU.
//!
//! Weights are read with candle from the model's safetensors file; matrix products run on
//! `gemm`, candle's own CPU kernel, or, with `embedding.precision = "int8"`, on ragbox's
//! int8 kernel (`int8.rs`), calibrated at load on a few sentences read in f32. What
//! differs from a general tensor library is the data layout: the sequences of a batch
//! are packed end to end with no padding, so the dense layers run once over every real
//! token and attention runs per sequence; and the element-wise steps (bias, GELU,
//! residual, layer norm, softmax) are fused loops that the compiler vectorises, spread
//! over rayon's threads, on buffers reused across layers.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use half::f16;
use rayon::prelude::*;
use serde::Deserialize;

use super::gemm::{View, matmul};
use super::int8::{Int8Matrix, Int8Rows};
use super::ops::{add, exp, reduce, sized, softmax, sum};

/// The fields of a BERT `config.json` the encoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
}

fn default_eps() -> f64 {
    1e-12
}

fn default_act() -> String {
    "gelu".into()
}

/// A dense layer.
struct Dense {
    w: Matrix,
    b: Vec<f32>,
    n_in: usize,
    n_out: usize,
}

/// A dense layer's weights.
enum Matrix {
    /// Stored input-major (`in × out`, row-major).
    F32(Vec<f32>),
    /// Rounded to bytes, multiplied in integers.
    Int8(Int8Matrix),
}

impl Dense {
    /// Rounds f32 weights to int8, smoothed against the layer's input `ranges`.
    fn quantize_int8(&mut self, ranges: &[f32]) -> LoadResult<()> {
        if let Matrix::F32(w) = &self.w {
            self.w = Matrix::Int8(Int8Matrix::quantize(w, self.n_in, self.n_out, ranges)?);
        }
        Ok(())
    }
}

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Layer {
    /// Query, key and value in one product: `hidden × 3·hidden`.
    qkv: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    up: Dense,
    down: Dense,
    out_norm: Norm,
}

/// Working buffers of a forward pass, kept between batches so that large blocks are
/// not handed back to the OS and faulted in again each time.
#[derive(Default)]
pub struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    inner: Vec<f32>,
    inputs: Inputs,
}

impl Scratch {
    /// Lets go of buffers held for a batch more than four times the size of the next
    /// one (a burst of long texts before short queries), so that they are not kept for
    /// as long as the short batches go on. Batches of similar sizes reuse them.
    fn fit(&mut self, values: usize) {
        if self.x.capacity() > 4 * values.max(KEEP_ALWAYS) {
            self.x = Vec::new();
            self.qkv = Vec::new();
            self.ctx = Vec::new();
            self.inner = Vec::new();
            self.inputs.rounded = Int8Rows::default();
        }
    }
}

/// Values of the hidden state (half a MB) below which the scratch is never let go.
const KEEP_ALWAYS: usize = 1 << 17;

/// What the dense layers keep of their inputs.
#[derive(Default)]
struct Inputs {
    /// The input of an int8 layer, rounded to bytes.
    rounded: Int8Rows,
    /// While calibrating: each f32 layer's largest input magnitude per channel, one
    /// entry per call in the order of the forward pass.
    ranges: Option<Vec<Vec<f32>>>,
}

/// A loaded encoder.
pub struct Encoder {
    cfg: BertConfig,
    eps: f32,
    /// The vocabulary's rows in f16 (half the memory; each row is read once per token
    /// and summed before a layer norm, where f16's rounding is far below the model's).
    word: Vec<f16>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm: Norm,
    layers: Vec<Layer>,
}

type LoadResult<T> = Result<T, String>;

struct Weights {
    tensors: HashMap<String, Tensor>,
    prefix: &'static str,
}

impl Weights {
    fn get(&self, name: &str) -> LoadResult<&Tensor> {
        self.tensors
            .get(&format!("{}{name}", self.prefix))
            .ok_or_else(|| format!("tensor {name} is missing"))
    }

    fn vec(&self, name: &str, len: usize) -> LoadResult<Vec<f32>> {
        let t = self.get(name)?;
        let v = flat(t)?;
        if v.len() != len {
            return Err(format!(
                "tensor {name} has {} values, expected {len}",
                v.len()
            ));
        }
        Ok(v)
    }

    /// A linear layer stored `[out, in]` (PyTorch's layout), returned as `in × out`.
    fn dense(&self, name: &str, n_in: usize, n_out: usize) -> LoadResult<Dense> {
        self.dense_of(&[name], n_in, n_out)
    }

    /// Several linear layers over the same input, side by side in one `in × Σout`.
    fn dense_of(&self, names: &[&str], n_in: usize, n_out: usize) -> LoadResult<Dense> {
        let mut ws = Vec::new();
        let mut b = Vec::new();
        for name in names {
            let w = self.get(&format!("{name}.weight"))?;
            if w.dims() != [n_out, n_in] {
                return Err(format!(
                    "{name}.weight has shape {:?}, expected [{n_out}, {n_in}]",
                    w.dims()
                ));
            }
            ws.push(w.t().map_err(err)?);
            b.extend(self.vec(&format!("{name}.bias"), n_out)?);
        }
        let w = Tensor::cat(&ws, 1).map_err(err)?;
        Ok(Dense {
            w: Matrix::F32(flat(&w)?),
            b,
            n_in,
            n_out: n_out * names.len(),
        })
    }

    fn norm(&self, name: &str, len: usize) -> LoadResult<Norm> {
        Ok(Norm {
            gamma: self.vec(&format!("{name}.weight"), len)?,
            beta: self.vec(&format!("{name}.bias"), len)?,
        })
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn flat(t: &Tensor) -> LoadResult<Vec<f32>> {
    t.to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(err)
}

impl Encoder {
    /// Reads the weights of a BERT model (with or without the `bert.` name prefix).
    pub fn load(cfg: BertConfig, weights: &Path) -> LoadResult<Self> {
        if cfg.hidden_act != "gelu" {
            return Err(format!(
                "activation {} is not supported (only gelu)",
                cfg.hidden_act
            ));
        }
        if cfg.num_attention_heads == 0 || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err("hidden_size must be a multiple of num_attention_heads".into());
        }
        let tensors = candle_core::safetensors::load(weights, &Device::Cpu).map_err(err)?;
        let prefix = if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let w = Weights { tensors, prefix };
        let h = cfg.hidden_size;
        let i = cfg.intermediate_size;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for n in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{n}");
            let attn = format!("{p}.attention.self");
            layers.push(Layer {
                qkv: w.dense_of(
                    &[
                        &format!("{attn}.query"),
                        &format!("{attn}.key"),
                        &format!("{attn}.value"),
                    ],
                    h,
                    h,
                )?,
                attn_out: w.dense(&format!("{p}.attention.output.dense"), h, h)?,
                attn_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                up: w.dense(&format!("{p}.intermediate.dense"), h, i)?,
                down: w.dense(&format!("{p}.output.dense"), i, h)?,
                out_norm: w.norm(&format!("{p}.output.LayerNorm"), h)?,
            });
        }
        let token_type = w.get("embeddings.token_type_embeddings.weight")?;
        let token_type = flat(&token_type.get(0).map_err(err)?)?;
        if token_type.len() != h {
            return Err("token type embeddings have the wrong width".into());
        }
        Ok(Self {
            eps: cfg.layer_norm_eps as f32,
            word: w
                .vec("embeddings.word_embeddings.weight", cfg.vocab_size * h)?
                .iter()
                .map(|&x| f16::from_f32(x))
                .collect(),
            position: w.vec(
                "embeddings.position_embeddings.weight",
                cfg.max_position_embeddings * h,
            )?,
            token_type,
            embed_norm: w.norm("embeddings.LayerNorm", h)?,
            layers,
            cfg,
        })
    }

    /// Turns every dense layer into int8, each smoothed against the largest inputs its
    /// channels see while the f32 model reads `sample` (a few sentences of token ids).
    pub fn quantize_int8(&mut self, sample: &[Vec<u32>]) -> LoadResult<()> {
        let mut scratch = Scratch::default();
        scratch.inputs.ranges = Some(Vec::new());
        self.forward(sample, &mut scratch)?;
        let ranges = scratch.inputs.ranges.take().unwrap_or_default();
        if ranges.len() != 4 * self.layers.len() {
            return Err("calibration saw no f32 layers".into());
        }
        for (layer, ranges) in self.layers.iter_mut().zip(ranges.chunks_exact(4)) {
            layer.qkv.quantize_int8(&ranges[0])?;
            layer.attn_out.quantize_int8(&ranges[1])?;
            layer.up.quantize_int8(&ranges[2])?;
            layer.down.quantize_int8(&ranges[3])?;
        }
        Ok(())
    }

    /// Most tokens one sequence may have.
    pub fn max_positions(&self) -> usize {
        self.cfg.max_position_embeddings
    }

    /// Mean-pooled, L2-normalised embeddings of each token sequence.
    pub fn embed(&self, seqs: &[Vec<u32>], scratch: &mut Scratch) -> Result<Vec<Vec<f32>>, String> {
        let hidden = self.forward(seqs, scratch)?;
        let h = self.cfg.hidden_size;
        let mut out = Vec::with_capacity(seqs.len());
        let mut start = 0;
        for seq in seqs {
            let rows = &hidden[start * h..(start + seq.len()) * h];
            start += seq.len();
            let mut v = vec![0.0f32; h];
            for row in rows.chunks_exact(h) {
                for (acc, x) in v.iter_mut().zip(row) {
                    *acc += x;
                }
            }
            let count = seq.len().max(1) as f32;
            v.iter_mut().for_each(|x| *x /= count);
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|x| *x /= norm);
            out.push(v);
        }
        Ok(out)
    }

    /// The last hidden state of every token, sequences packed end to end (`Σlen × hidden`).
    pub fn forward<'s>(
        &self,
        seqs: &[Vec<u32>],
        scratch: &'s mut Scratch,
    ) -> Result<&'s [f32], String> {
        let h = self.cfg.hidden_size;
        let total: usize = seqs.iter().map(Vec::len).sum();
        for seq in seqs {
            if seq.is_empty() || seq.len() > self.cfg.max_position_embeddings {
                return Err(format!(
                    "sequence of {} tokens (1 to {} allowed)",
                    seq.len(),
                    self.cfg.max_position_embeddings
                ));
            }
            if let Some(id) = seq.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
                return Err(format!("token id {id} is outside the vocabulary"));
            }
        }
        let spans: Vec<(usize, usize)> = seqs
            .iter()
            .scan(0, |start, s| {
                let span = (*start, s.len());
                *start += s.len();
                Some(span)
            })
            .collect();

        scratch.fit(total * h);
        // Embeddings: word + position + token type 0, then layer norm.
        let Scratch {
            x,
            qkv,
            ctx,
            inner,
            inputs,
        } = scratch;
        let x = sized(x, total * h);
        let qkv = sized(qkv, total * 3 * h);
        let ctx = sized(ctx, total * h);
        let inner = sized(inner, total * self.cfg.intermediate_size);
        let mut row = 0;
        for seq in seqs {
            for (pos, &id) in seq.iter().enumerate() {
                let dst = &mut x[row * h..(row + 1) * h];
                let word = &self.word[id as usize * h..(id as usize + 1) * h];
                let position = &self.position[pos * h..(pos + 1) * h];
                for (((d, w), p), t) in dst.iter_mut().zip(word).zip(position).zip(&self.token_type)
                {
                    *d = w.to_f32() + p + t;
                }
                row += 1;
            }
        }
        par_rows(x, h, |r| layer_norm(r, &self.embed_norm, self.eps));

        for layer in &self.layers {
            dense(qkv, x, &layer.qkv, total, false, inputs)?;
            par_rows(qkv, 3 * h, |r| add(r, &layer.qkv.b));
            self.attention(qkv, &spans, ctx)?;
            // x = norm(x + ctx·W + b)
            dense(x, ctx, &layer.attn_out, total, true, inputs)?;
            par_rows(x, h, |r| {
                add(r, &layer.attn_out.b);
                layer_norm(r, &layer.attn_norm, self.eps);
            });
            dense(inner, x, &layer.up, total, false, inputs)?;
            par_rows(inner, layer.up.n_out, |r| {
                for (v, b) in r.iter_mut().zip(&layer.up.b) {
                    *v = gelu(*v + b);
                }
            });
            dense(x, inner, &layer.down, total, true, inputs)?;
            par_rows(x, h, |r| {
                add(r, &layer.down.b);
                layer_norm(r, &layer.out_norm, self.eps);
            });
        }
        Ok(x)
    }

    /// Scaled dot-product attention of every head of every sequence, into `ctx`.
    fn attention(
        &self,
        qkv: &[f32],
        spans: &[(usize, usize)],
        ctx: &mut [f32],
    ) -> Result<(), String> {
        let h = self.cfg.hidden_size;
        let heads = self.cfg.num_attention_heads;
        let d = h / heads;
        let scale = 1.0 / (d as f32).sqrt();
        let stride = 3 * h;
        let jobs: Vec<(usize, usize)> = (0..spans.len())
            .flat_map(|s| (0..heads).map(move |head| (s, head)))
            .collect();
        let parts: Vec<Result<Vec<f32>, String>> = jobs
            .par_iter()
            .map(|&(s, head)| {
                let (start, len) = spans[s];
                let rows = &qkv[start * stride..(start + len) * stride];
                let q = View::rows(&rows[head * d..], stride);
                let k = View::rows(&rows[h + head * d..], stride);
                let v = View::rows(&rows[2 * h + head * d..], stride);
                let mut scores = vec![0.0f32; len * len];
                matmul(
                    &mut scores,
                    len,
                    q,
                    k.t(),
                    (len, len, d),
                    scale,
                    false,
                    false,
                )?;
                scores.chunks_exact_mut(len).for_each(softmax);
                let mut out = vec![0.0f32; len * d];
                matmul(
                    &mut out,
                    d,
                    View::rows(&scores, len),
                    v,
                    (len, d, len),
                    1.0,
                    false,
                    false,
                )?;
                Ok(out)
            })
            .collect();
        for (&(s, head), part) in jobs.iter().zip(parts) {
            let part = part?;
            let (start, len) = spans[s];
            for (r, src) in part.chunks_exact(d).enumerate().take(len) {
                let at = (start + r) * h + head * d;
                ctx[at..at + d].copy_from_slice(src);
            }
        }
        Ok(())
    }
}

/// `dst[rows × out] = (dst if accumulate) + src[rows × in] · W`.
fn dense(
    dst: &mut [f32],
    src: &[f32],
    layer: &Dense,
    rows: usize,
    accumulate: bool,
    inputs: &mut Inputs,
) -> Result<(), String> {
    match &layer.w {
        Matrix::F32(w) => {
            if let Some(ranges) = &mut inputs.ranges {
                let mut range = vec![0.0f32; layer.n_in];
                for row in src.chunks_exact(layer.n_in).take(rows) {
                    for (r, v) in range.iter_mut().zip(row) {
                        *r = r.max(v.abs());
                    }
                }
                ranges.push(range);
            }
            matmul(
                dst,
                layer.n_out,
                View::rows(src, layer.n_in),
                View::rows(w, layer.n_out),
                (rows, layer.n_out, layer.n_in),
                1.0,
                accumulate,
                true,
            )
        }
        Matrix::Int8(w) => w.product(dst, src, rows, accumulate, &mut inputs.rounded),
    }
}

/// Runs `f` on each row of a row-major matrix, rows spread over rayon's threads.
fn par_rows(data: &mut [f32], width: usize, f: impl Fn(&mut [f32]) + Sync) {
    let rows = data.len() / width.max(1);
    let per_task = (rows / (rayon::current_num_threads() * 4)).max(8);
    data.par_chunks_mut(width * per_task)
        .for_each(|block| block.chunks_exact_mut(width).for_each(&f));
}

fn layer_norm(row: &mut [f32], norm: &Norm, eps: f32) {
    let n = row.len() as f32;
    let mean = sum(row) / n;
    let var = reduce(row, 0.0, |x| (x - mean) * (x - mean), |a, b| a + b) / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in row.iter_mut().zip(&norm.gamma).zip(&norm.beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

/// erf(x) to 1.5e-7 absolute error (Abramowitz and Stegun 7.1.26).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152 + t * 1.061_405_4))));
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// GELU as BERT defines it: x · Φ(x), with the exact normal CDF.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scratch_lets_a_burst_go_and_reuses_itself_for_like_batches() {
        let mut scratch = Scratch::default();
        // A full batch of long texts: 32 × 256 rows of 384.
        let burst = 32 * 256 * 384;
        sized(&mut scratch.x, burst);
        sized(&mut scratch.inner, burst * 4);
        scratch.fit(burst / 3);
        assert!(
            scratch.x.capacity() >= burst,
            "a batch a third as large reuses it"
        );
        assert!(scratch.inner.capacity() >= burst * 4);
        scratch.fit(burst / 5);
        assert_eq!(
            scratch.x.capacity(),
            0,
            "a batch a fifth as large lets it go"
        );
        assert_eq!(scratch.inner.capacity(), 0);
        // Below the floor nothing is let go, however small the next batch.
        sized(&mut scratch.x, KEEP_ALWAYS);
        scratch.fit(1);
        assert!(scratch.x.capacity() >= KEEP_ALWAYS);
    }

    #[test]
    fn erf_matches_tables() {
        // erf values from tables, to 7 places.
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_9),
            (1.0, 0.842_700_8),
            (2.0, 0.995_322_3),
            (-1.5, -0.966_105_1),
        ] {
            assert!(
                (erf(x) - want).abs() < 3e-7,
                "erf({x}) = {}, want {want}",
                erf(x)
            );
        }
    }

    #[test]
    fn layer_norm_centres_and_scales() {
        // 37 values: two full lanes of 16 and a tail.
        let norm = Norm {
            gamma: vec![1.0; 37],
            beta: vec![0.0; 37],
        };
        let mut row: Vec<f32> = (0..37).map(|i| (i * i) as f32 / 10.0).collect();
        layer_norm(&mut row, &norm, 1e-12);
        assert!(row.iter().sum::<f32>().abs() < 1e-4);
        let var = row.iter().map(|v| v * v).sum::<f32>() / 37.0;
        assert!((var - 1.0).abs() < 1e-4, "variance {var}");
    }
}
