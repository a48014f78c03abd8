//! The BERT encoder behind the embedder, written for the CPU.
//!
//! Weights are read from the model's safetensors file through a read-only map (each
//! tensor straight into its layout, no copy of the whole file); matrix products run on
//! `gemm`, candle's own CPU kernel, or, with `embedding.precision = "int8"`, on ragbox's
//! int8 kernel (`int8.rs`), calibrated at load on a few sentences read in f32. What
//! differs from a general tensor library is the data layout: the sequences of a batch
//! are packed end to end with no padding, so the dense layers run once over every real
//! token and attention runs per sequence; and the element-wise steps (bias, GELU,
//! residual, layer norm, softmax) are fused loops that the compiler vectorises, spread
//! over rayon's threads, on buffers reused across layers.

use std::path::Path;

use candle_core::DType;
use candle_core::safetensors::SliceSafetensors;
use half::{bf16, f16};
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

struct Weights<'a> {
    file: SliceSafetensors<'a>,
    prefix: &'static str,
}

impl Weights<'_> {
    /// A tensor's values as f32 (stored as f32, f16 or bf16), with its shape.
    fn get(&self, name: &str) -> LoadResult<(Vec<usize>, Vec<f32>)> {
        self.get_as(name, |v| v)
    }

    /// A tensor's values, each read as f32 and then `convert`ed, with its shape.
    fn get_as<T>(
        &self,
        name: &str,
        convert: impl Fn(f32) -> T,
    ) -> LoadResult<(Vec<usize>, Vec<T>)> {
        let view = self
            .file
            .get(&format!("{}{name}", self.prefix))
            .map_err(|_| format!("tensor {name} is missing"))?;
        let bytes = view.data();
        let values = match DType::try_from(view.dtype()) {
            Ok(DType::F32) => bytes
                .chunks_exact(4)
                .map(|b| convert(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            Ok(DType::F16) => bytes
                .chunks_exact(2)
                .map(|b| convert(f16::from_le_bytes([b[0], b[1]]).to_f32()))
                .collect(),
            Ok(DType::BF16) => bytes
                .chunks_exact(2)
                .map(|b| convert(bf16::from_le_bytes([b[0], b[1]]).to_f32()))
                .collect(),
            _ => {
                return Err(format!(
                    "tensor {name} is stored as {:?}; only f32, f16 and bf16 are read",
                    view.dtype()
                ));
            }
        };
        Ok((view.shape().to_vec(), values))
    }

    fn vec(&self, name: &str, len: usize) -> LoadResult<Vec<f32>> {
        self.vec_as(name, len, |v| v)
    }

    /// [`Self::vec`], each value `convert`ed as it is read.
    fn vec_as<T>(&self, name: &str, len: usize, convert: impl Fn(f32) -> T) -> LoadResult<Vec<T>> {
        let (_, v) = self.get_as(name, convert)?;
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
        let width = n_out * names.len();
        let mut w = vec![0.0f32; n_in * width];
        let mut b = Vec::with_capacity(width);
        for (j, name) in names.iter().enumerate() {
            let (shape, values) = self.get(&format!("{name}.weight"))?;
            if shape != [n_out, n_in] {
                return Err(format!(
                    "{name}.weight has shape {shape:?}, expected [{n_out}, {n_in}]"
                ));
            }
            transpose_into(&mut w, width, j * n_out, &values, n_out, n_in);
            b.extend(self.vec(&format!("{name}.bias"), n_out)?);
        }
        Ok(Dense {
            w: Matrix::F32(w),
            b,
            n_in,
            n_out: width,
        })
    }

    fn norm(&self, name: &str, len: usize) -> LoadResult<Norm> {
        Ok(Norm {
            gamma: self.vec(&format!("{name}.weight"), len)?,
            beta: self.vec(&format!("{name}.bias"), len)?,
        })
    }
}

/// Writes `src` (`rows × cols`, row-major) transposed into the columns `first..first +
/// rows` of `dst` (rows of `width`), a block at a time so that both sides stay in cache.
fn transpose_into(
    dst: &mut [f32],
    width: usize,
    first: usize,
    src: &[f32],
    rows: usize,
    cols: usize,
) {
    const BLOCK: usize = 32;
    for r0 in (0..rows).step_by(BLOCK) {
        for c0 in (0..cols).step_by(BLOCK) {
            for r in r0..(r0 + BLOCK).min(rows) {
                for c in c0..(c0 + BLOCK).min(cols) {
                    dst[c * width + first + r] = src[r * cols + c];
                }
            }
        }
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
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
        let map = super::mapped::map(weights).map_err(err)?;
        let file = SliceSafetensors::new(&map).map_err(err)?;
        let prefix = if file.get("bert.embeddings.word_embeddings.weight").is_ok() {
            "bert."
        } else {
            ""
        };
        let w = Weights { file, prefix };
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
        // The first row: every token is of type 0.
        let (shape, mut token_type) = w.get("embeddings.token_type_embeddings.weight")?;
        token_type.truncate(h);
        if shape.last() != Some(&h) || token_type.len() != h {
            return Err("token type embeddings have the wrong width".into());
        }
        Ok(Self {
            eps: cfg.layer_norm_eps as f32,
            // Straight into f16, without the vocabulary's f32 copy (47 MB) in between.
            word: w.vec_as(
                "embeddings.word_embeddings.weight",
                cfg.vocab_size * h,
                f16::from_f32,
            )?,
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
        // The scores of one job are written whole by the product, so each of rayon's
        // tasks reuses one buffer for them instead of a fresh zeroed one a job.
        let parts: Vec<Result<Vec<f32>, String>> = jobs
            .par_iter()
            .map_init(Vec::new, |scores, &(s, head)| {
                let (start, len) = spans[s];
                let rows = &qkv[start * stride..(start + len) * stride];
                let q = View::rows(&rows[head * d..], stride);
                let k = View::rows(&rows[h + head * d..], stride);
                let v = View::rows(&rows[2 * h + head * d..], stride);
                let scores = sized(scores, len * len);
                matmul(scores, len, q, k.t(), (len, len, d), scale, false, false)?;
                scores.chunks_exact_mut(len).for_each(softmax);
                let mut out = vec![0.0f32; len * d];
                matmul(
                    &mut out,
                    d,
                    View::rows(scores, len),
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

    /// The weights as candle reads the whole file, laid out as the encoder keeps them:
    /// `[out, in]` matrices transposed and set side by side.
    fn read_whole(path: &Path, names: &[&str]) -> Vec<f32> {
        use candle_core::{Device, Tensor};
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
        let ws: Vec<Tensor> = names
            .iter()
            .map(|n| tensors[&format!("{n}.weight")].t().unwrap())
            .collect();
        Tensor::cat(&ws, 1)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn f32s(m: &Matrix) -> &[f32] {
        match m {
            Matrix::F32(w) => w,
            Matrix::Int8(_) => panic!("an f32 layer was expected"),
        }
    }

    #[test]
    fn the_mapped_model_holds_the_weights_candle_reads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
        let text = std::fs::read_to_string(dir.join("config.json"))
            .expect("config.json: run ./install.sh --models-only first");
        let cfg: BertConfig = serde_json::from_str(&text).unwrap();
        let path = dir.join("model.safetensors");
        let encoder = Encoder::load(cfg.clone(), &path).unwrap();
        assert_eq!(encoder.layers.len(), cfg.num_hidden_layers);
        let tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
        let prefix = if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let whole = |name: &str| -> Vec<f32> {
            tensors[&format!("{prefix}{name}")]
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        for (n, layer) in [(0, &encoder.layers[0]), (5, &encoder.layers[5])] {
            let attn = format!("{prefix}encoder.layer.{n}.attention.self");
            let qkv = ["query", "key", "value"].map(|k| format!("{attn}.{k}"));
            let qkv: Vec<&str> = qkv.iter().map(String::as_str).collect();
            assert_eq!(f32s(&layer.qkv.w), read_whole(&path, &qkv), "layer {n} qkv");
            assert_eq!(layer.qkv.n_out, 3 * cfg.hidden_size);
            let down = format!("{prefix}encoder.layer.{n}.output.dense");
            assert_eq!(
                f32s(&layer.down.w),
                read_whole(&path, &[&down]),
                "layer {n} down"
            );
            let up = format!("{prefix}encoder.layer.{n}.intermediate.dense");
            assert_eq!(f32s(&layer.up.w), read_whole(&path, &[&up]), "layer {n} up");
            assert_eq!(
                layer.up.b,
                whole(&format!("encoder.layer.{n}.intermediate.dense.bias"))
            );
            assert_eq!(
                layer.out_norm.gamma,
                whole(&format!("encoder.layer.{n}.output.LayerNorm.weight"))
            );
        }
        let word: Vec<f16> = whole("embeddings.word_embeddings.weight")
            .into_iter()
            .map(f16::from_f32)
            .collect();
        assert!(encoder.word == word, "word embeddings");
        assert_eq!(
            encoder.position,
            whole("embeddings.position_embeddings.weight")
        );
        let token_type = whole("embeddings.token_type_embeddings.weight");
        assert_eq!(encoder.token_type, token_type[..cfg.hidden_size]);
    }

    /// A BERT of width 4 with one layer, every tensor stored as `dtype`, and its config.
    fn tiny(dtype: DType, skip: &str, stretch: &str) -> (BertConfig, tempfile::TempPath) {
        use candle_core::{Device, Tensor};
        let cfg = BertConfig {
            vocab_size: 7,
            hidden_size: 4,
            num_hidden_layers: 1,
            num_attention_heads: 2,
            intermediate_size: 8,
            max_position_embeddings: 5,
            layer_norm_eps: 1e-12,
            hidden_act: "gelu".into(),
        };
        let (h, i) = (4, 8);
        let mut shapes: Vec<(String, Vec<usize>)> = vec![
            ("embeddings.word_embeddings.weight".into(), vec![7, h]),
            ("embeddings.position_embeddings.weight".into(), vec![5, h]),
            ("embeddings.token_type_embeddings.weight".into(), vec![2, h]),
        ];
        let p = "encoder.layer.0";
        for (name, out, inn) in [
            (format!("{p}.attention.self.query"), h, h),
            (format!("{p}.attention.self.key"), h, h),
            (format!("{p}.attention.self.value"), h, h),
            (format!("{p}.attention.output.dense"), h, h),
            (format!("{p}.intermediate.dense"), i, h),
            (format!("{p}.output.dense"), h, i),
        ] {
            shapes.push((format!("{name}.weight"), vec![out, inn]));
            shapes.push((format!("{name}.bias"), vec![out]));
        }
        for norm in [
            "embeddings.LayerNorm".to_owned(),
            format!("{p}.attention.output.LayerNorm"),
            format!("{p}.output.LayerNorm"),
        ] {
            shapes.push((format!("{norm}.weight"), vec![h]));
            shapes.push((format!("{norm}.bias"), vec![h]));
        }
        let mut tensors = std::collections::HashMap::new();
        for (k, (name, mut shape)) in shapes.into_iter().enumerate() {
            if name == skip {
                continue;
            }
            if name == stretch {
                shape[0] += 1;
            }
            let len: usize = shape.iter().product();
            // Values an f16 and a bf16 both hold exactly: multiples of 1/8 below 16.
            let values: Vec<f32> = (0..len)
                .map(|n| ((n * 7 + k * 3) % 97) as f32 / 8.0)
                .collect();
            let t = Tensor::from_vec(values, shape, &Device::Cpu)
                .unwrap()
                .to_dtype(dtype)
                .unwrap();
            tensors.insert(format!("bert.{name}"), t);
        }
        let path = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        candle_core::safetensors::save(&tensors, &path).unwrap();
        (cfg, path)
    }

    #[test]
    fn half_width_files_load_and_bad_ones_are_named() {
        let dense = "encoder.layer.0.intermediate.dense";
        let (cfg, f32_file) = tiny(DType::F32, "", "");
        let reference = Encoder::load(cfg.clone(), &f32_file).unwrap();
        let up = read_whole(&f32_file, &[&format!("bert.{dense}")]);
        assert_eq!(f32s(&reference.layers[0].up.w), up);
        for dtype in [DType::F16, DType::BF16] {
            let (cfg, file) = tiny(dtype, "", "");
            let encoder = Encoder::load(cfg, &file).unwrap();
            assert_eq!(f32s(&encoder.layers[0].up.w), up, "{dtype:?}");
            assert_eq!(
                f32s(&encoder.layers[0].qkv.w),
                f32s(&reference.layers[0].qkv.w)
            );
            assert_eq!(encoder.position, reference.position, "{dtype:?}");
            assert_eq!(encoder.token_type, reference.token_type, "{dtype:?}");
            assert!(encoder.word == reference.word, "{dtype:?}");
        }
        let (cfg, file) = tiny(DType::F32, &format!("{dense}.bias"), "");
        let e = Encoder::load(cfg, &file).err().unwrap();
        assert!(
            e.contains(&format!("tensor {dense}.bias is missing")),
            "{e}"
        );
        let (cfg, file) = tiny(DType::F32, "", &format!("{dense}.weight"));
        let e = Encoder::load(cfg, &file).err().unwrap();
        assert!(e.contains("has shape [9, 4], expected [8, 4]"), "{e}");
        let (cfg, file) = tiny(DType::F64, "", "");
        let e = Encoder::load(cfg, &file).err().unwrap();
        assert!(e.contains("only f32, f16 and bf16 are read"), "{e}");
        let garbage = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        std::fs::write(&garbage, b"not a safetensors file").unwrap();
        assert!(Encoder::load(reference.cfg.clone(), &garbage).is_err());
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
