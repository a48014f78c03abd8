//! A llama-architecture decoder over GGUF weights.
//!
//! candle reads the GGUF and lends its kernels (the quantized dot products and their
//! thread pool, and the f32 gemm behind [`super::gemm`]); the forward pass itself works
//! on plain slices in buffers kept between calls, so a decoding step runs no tensor
//! machinery and allocates almost nothing:
//! - matrices that read the same input are fused (query/key/value, gate/up): the input
//!   is quantized once and one dispatch to the pool covers them;
//! - the key/value cache is f16, allocated once for the whole context and written in
//!   place, keys transposed in blocks of positions ([`KvCache`]); a decoding step
//!   attends one query head per pool task with loops the compiler vectorises;
//! - prompts (many rows) multiply through the f32 gemm kernel against tiles of weights
//!   dequantized into a cache-sized buffer, tile by tile across rayon's threads, and
//!   attend per (head, block of rows), each block reading only the positions it may see;
//! - the token embeddings stay in the weight type; a step dequantizes only its own row,
//!   and a model with tied embeddings keeps one copy for both ends.

use std::sync::Mutex;

use candle_core::quantized::k_quants::{
    self, BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K,
    BlockQ6K, BlockQ8_0, GgmlType,
};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Result, Tensor};
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::gemm::{View, matmul};
use super::ops::{add, exp, reduce, sized, softmax};

/// Rows from which a product runs on dequantized f32 weights.
const DENSE_ROWS: usize = 16;

/// Weight rows dequantized at a time for the dense kernel: narrow tiles keep both
/// threads busy on short prompts, wider ones cost less per row on long prompts.
const SMALL_TILE: usize = 32;
const LARGE_TILE: usize = 128;

/// Rows of a prompt that attend together.
const ROW_BLOCK: usize = 64;

fn error(message: impl Into<String>) -> candle_core::Error {
    candle_core::Error::Msg(message.into())
}

macro_rules! weight_types {
    ($($kind:ident => $block:ty),* $(,)?) => {
        /// A matrix's values in one of candle's weight types, row after row.
        enum Blocks {
            $($kind(Vec<$block>),)*
        }

        impl Blocks {
            /// Stores `data` as `dtype`; types without a kernel here are kept as f32.
            fn quantize(dtype: GgmlDType, data: &[f32]) -> Result<Self> {
                match dtype {
                    $(GgmlDType::$kind => Ok(Self::$kind(quantize(data)?)),)*
                    _ => Ok(Self::F32(data.to_vec())),
                }
            }

            fn block_size(&self) -> usize {
                match self {
                    $(Self::$kind(_) => <$block>::BLCK_SIZE,)*
                }
            }

            /// `out[m × n] = x[m × k] · selfᵀ` with candle's quantized kernels.
            fn product(&self, dims: (usize, usize, usize), x: &[f32], out: &mut [f32]) -> Result<()> {
                match self {
                    $(Self::$kind(b) => k_quants::matmul(dims, x, b, out),)*
                }
            }

            /// Dequantizes blocks `range` into `out`.
            fn dequantize(&self, range: std::ops::Range<usize>, out: &mut [f32]) {
                match self {
                    $(Self::$kind(b) => <$block>::to_float(&b[range], out),)*
                }
            }
        }
    };
}

weight_types! {
    F32 => f32,
    F16 => f16,
    Q4_0 => BlockQ4_0,
    Q4_1 => BlockQ4_1,
    Q5_0 => BlockQ5_0,
    Q5_1 => BlockQ5_1,
    Q8_0 => BlockQ8_0,
    Q2K => BlockQ2K,
    Q3K => BlockQ3K,
    Q4K => BlockQ4K,
    Q5K => BlockQ5K,
    Q6K => BlockQ6K,
}

fn quantize<T: GgmlType>(data: &[f32]) -> Result<Vec<T>> {
    if !data.len().is_multiple_of(T::BLCK_SIZE) {
        return Err(error(format!(
            "{} values do not fill blocks of {}",
            data.len(),
            T::BLCK_SIZE
        )));
    }
    let mut blocks: Vec<T> = (0..data.len() / T::BLCK_SIZE).map(|_| T::zeros()).collect();
    T::from_float(data, &mut blocks);
    Ok(blocks)
}

/// A weight matrix `[rows, cols]`: each row is one output's weights.
struct Matrix {
    rows: usize,
    cols: usize,
    blocks: Blocks,
}

impl Matrix {
    /// The rows of `parts` one after the other, as `dtype`; without one, as the parts'
    /// common type (f32 when they differ, which holds every type exactly).
    fn fuse(parts: &[QTensor], dtype: Option<GgmlDType>) -> Result<Self> {
        let mut data = Vec::new();
        let (mut rows, mut cols) = (0, None);
        for part in parts {
            let (r, c) = part.shape().dims2()?;
            if cols.is_some_and(|k| k != c) {
                return Err(error(format!(
                    "fused matrices differ in width: {cols:?} and {c}"
                )));
            }
            cols = Some(c);
            rows += r;
            data.extend(
                part.dequantize(&Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            );
        }
        let cols = cols.ok_or_else(|| error("no matrix to fuse"))?;
        let dtype = dtype.unwrap_or_else(|| {
            let first = parts[0].dtype();
            if parts.iter().all(|p| p.dtype() == first) {
                first
            } else {
                GgmlDType::F32
            }
        });
        // Rows must hold whole blocks; f16 keeps a matrix too narrow for them compact.
        let dtype = if cols.is_multiple_of(dtype.block_size()) {
            dtype
        } else {
            GgmlDType::F16
        };
        let blocks = Blocks::quantize(dtype, &data)?;
        Ok(Self { rows, cols, blocks })
    }

    /// `out[m × rows] = x[m × cols] · selfᵀ`: candle's quantized kernel for a few rows,
    /// the f32 gemm over dequantized tiles of weights from [`DENSE_ROWS`] rows on.
    fn forward(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<()> {
        let (n, k) = (self.rows, self.cols);
        if x.len() != m * k || out.len() != m * n {
            return Err(error(format!(
                "product of {m}×{k} input and {n}×{k} weights got {} inputs and {} outputs",
                x.len(),
                out.len()
            )));
        }
        if m < DENSE_ROWS {
            return self.blocks.product((m, k, n), x, out);
        }
        // Tiles of weight rows, each dequantized into a buffer that stays in cache and
        // multiplied there; the tiles spread over rayon's threads.
        let tile = if m <= 256 { SMALL_TILE } else { LARGE_TILE };
        let per_row = k / self.blocks.block_size();
        let starts: Vec<usize> = (0..n).step_by(tile).collect();
        let parts: Vec<Result<Vec<f32>>> = starts
            .par_iter()
            .map(|&start| {
                let rows = tile.min(n - start);
                TILE.with_borrow_mut(|w| {
                    let w = sized(w, rows * k);
                    self.blocks
                        .dequantize(start * per_row..(start + rows) * per_row, w);
                    let mut part = vec![0.0; m * rows];
                    let (x, w) = (View::rows(x, k), View::rows(w, k).t());
                    matmul(&mut part, rows, x, w, (m, rows, k), 1.0, false, false)
                        .map_err(error)?;
                    Ok(part)
                })
            })
            .collect();
        for (&start, part) in starts.iter().zip(parts) {
            let part = part?;
            let rows = part.len() / m;
            for (dst, src) in out.chunks_exact_mut(n).zip(part.chunks_exact(rows)) {
                dst[start..start + rows].copy_from_slice(src);
            }
        }
        Ok(())
    }

    /// Row `i`, dequantized into `out`.
    fn row(&self, i: usize, out: &mut [f32]) -> Result<()> {
        if i >= self.rows || out.len() != self.cols {
            return Err(error(format!("row {i} is outside {} rows", self.rows)));
        }
        let per_row = self.cols / self.blocks.block_size();
        self.blocks.dequantize(i * per_row..(i + 1) * per_row, out);
        Ok(())
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    /// Query, key and value projections, fused.
    qkv: Matrix,
    output: Matrix,
    ffn_norm: Vec<f32>,
    /// Gate and up projections, fused.
    gate_up: Matrix,
    down: Matrix,
    cache: KvCache,
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

/// Work buffers, kept between calls.
#[derive(Default)]
struct Buffers {
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    attended: Vec<f32>,
    ffn: Vec<f32>,
    act: Vec<f32>,
    scores: Vec<f32>,
}

/// The decoder and its key/value cache.
pub struct Llama {
    shape: Shape,
    embeddings: Matrix,
    /// `None` when the output matrix is the embeddings (tied).
    output: Option<Matrix>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    /// `[context, head_dim / 2]` rotary angles.
    cos: Vec<f32>,
    sin: Vec<f32>,
    context: usize,
    buffers: Buffers,
}

impl Llama {
    /// Builds the model from GGUF tensors that `read` reads by name (`None`: absent),
    /// one at a time, with a cache for `context` tokens; matrices are stored as `dtype`
    /// (as they come when `None`).
    pub fn new(
        shape: Shape,
        mut read: impl FnMut(&str) -> Result<Option<QTensor>>,
        blocks: usize,
        context: usize,
        dtype: Option<GgmlDType>,
    ) -> Result<Self> {
        if !shape.head_dim.is_multiple_of(LANES)
            || shape.kv_heads == 0
            || !shape.heads.is_multiple_of(shape.kv_heads)
        {
            return Err(error(format!("unsupported head shape {shape:?}")));
        }
        let output = match read("output.weight")? {
            Some(t) => Some(Matrix::fuse(&[t], dtype)?),
            None => None, // tied to the embeddings
        };
        let mut take =
            |name: &str| read(name)?.ok_or_else(|| error(format!("tensor {name} is missing")));
        let vector = |t: QTensor| t.dequantize(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>();
        let embeddings = Matrix::fuse(&[take("token_embd.weight")?], dtype)?;
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let mut get = |n: &str| take(&format!("blk.{i}.{n}.weight"));
            let qkv = [get("attn_q")?, get("attn_k")?, get("attn_v")?];
            let gate_up = [get("ffn_gate")?, get("ffn_up")?];
            layers.push(Layer {
                attn_norm: vector(get("attn_norm")?)?,
                qkv: Matrix::fuse(&qkv, dtype)?,
                output: Matrix::fuse(&[get("attn_output")?], dtype)?,
                ffn_norm: vector(get("ffn_norm")?)?,
                gate_up: Matrix::fuse(&gate_up, dtype)?,
                down: Matrix::fuse(&[get("ffn_down")?], dtype)?,
                cache: KvCache::new(shape.kv_heads, context, shape.head_dim),
            });
        }
        let norm = vector(take("output_norm.weight")?)?;
        let half = shape.head_dim / 2;
        let inverse: Vec<f32> = (0..half)
            .map(|i| 1.0 / shape.rope_base.powf(2.0 * i as f32 / shape.head_dim as f32))
            .collect();
        let angles: Vec<f32> = (0..context)
            .flat_map(|p| inverse.iter().map(move |f| p as f32 * f))
            .collect();
        Ok(Self {
            shape,
            embeddings,
            output,
            layers,
            norm,
            cos: angles.iter().map(|a| a.cos()).collect(),
            sin: angles.iter().map(|a| a.sin()).collect(),
            context,
            buffers: Buffers::default(),
        })
    }

    /// Runs `ids` at positions `position..`, whose keys and values join the cache (the
    /// cache beyond `position` is overwritten), and returns the logits of the last one.
    pub fn forward(&mut self, ids: &[u32], position: usize) -> Result<Tensor> {
        let rows = ids.len();
        if rows == 0 || position + rows > self.context {
            return Err(error(format!(
                "{rows} tokens at position {position} do not fit {} tokens of context",
                self.context
            )));
        }
        let s = self.shape;
        let (hd, hidden) = (s.head_dim, s.hidden);
        let (q_width, kv_width) = (s.heads * hd, s.kv_heads * hd);
        let qkv_width = q_width + 2 * kv_width;
        let eps = s.eps as f32;
        let Buffers {
            x,
            h,
            qkv,
            attended,
            ffn,
            act,
            scores,
        } = &mut self.buffers;

        let x = sized(x, rows * hidden);
        for (row, &id) in x.chunks_exact_mut(hidden).zip(ids) {
            self.embeddings.row(id as usize, row)?;
        }
        for layer in &mut self.layers {
            let h = sized(h, rows * hidden);
            rms_norm_rows(x, &layer.attn_norm, eps, h);
            let qkv = sized(qkv, rows * qkv_width);
            layer.qkv.forward(h, rows, qkv)?;
            for (r, row) in qkv.chunks_exact_mut(qkv_width).enumerate() {
                let p = position + r;
                let angles = p * hd / 2..(p + 1) * hd / 2;
                let (cos, sin) = (&self.cos[angles.clone()], &self.sin[angles]);
                // Queries and keys are adjacent: every head of both turns at once.
                rope(&mut row[..q_width + kv_width], hd, cos, sin);
                let (k, v) = row[q_width..].split_at(kv_width);
                for g in 0..s.kv_heads {
                    let head = g * hd..(g + 1) * hd;
                    layer.cache.write(g, p, &k[head.clone()], &v[head]);
                }
            }
            let attended = sized(attended, rows * q_width);
            let cache = &layer.cache;
            if rows == 1 {
                let total = position + 1;
                let scores = sized(scores, s.heads * total);
                attend_one(&s, &qkv[..q_width], cache, total, scores, attended);
            } else {
                attend_rows(&s, qkv, cache, position, rows, attended)?;
            }
            layer.output.forward(attended, rows, h)?;
            add(x, h);

            rms_norm_rows(x, &layer.ffn_norm, eps, h);
            let ff = layer.down.cols;
            let ffn = sized(ffn, rows * 2 * ff);
            layer.gate_up.forward(h, rows, ffn)?;
            let act = sized(act, rows * ff);
            for (a, f) in act.chunks_exact_mut(ff).zip(ffn.chunks_exact(2 * ff)) {
                let (gate, up) = f.split_at(ff);
                for ((a, g), u) in a.iter_mut().zip(gate).zip(up) {
                    *a = g / (1.0 + exp(-g)) * u;
                }
            }
            layer.down.forward(act, rows, h)?;
            add(x, h);
        }
        let h = sized(h, hidden);
        rms_norm_rows(&x[(rows - 1) * hidden..], &self.norm, eps, h);
        let output = self.output.as_ref().unwrap_or(&self.embeddings);
        let mut logits = vec![0.0; output.rows];
        output.forward(h, 1, &mut logits)?;
        Tensor::from_vec(logits, output.rows, &Device::Cpu)
    }
}

/// Positions whose keys are stored together, dimension by dimension.
const KEY_BLOCK: usize = 16;

/// One layer's key/value cache in f16, allocated for the whole context.
///
/// Keys are stored in blocks of [`KEY_BLOCK`] positions, transposed (`[block][dim]
/// [position in block]`), so that a decoding step scores a whole block with vertical
/// multiply-adds; values are stored a position per row (`[position][dim]`), as the
/// weighted sum reads them.
struct KvCache {
    keys: Vec<f16>,
    values: Vec<f16>,
    /// Positions per key/value head, rounded up to whole key blocks.
    positions: usize,
    hd: usize,
}

impl KvCache {
    fn new(kv_heads: usize, context: usize, hd: usize) -> Self {
        let positions = context.div_ceil(KEY_BLOCK) * KEY_BLOCK;
        Self {
            keys: vec![f16::ZERO; kv_heads * positions * hd],
            values: vec![f16::ZERO; kv_heads * positions * hd],
            positions,
            hd,
        }
    }

    fn key_at(&self, g: usize, p: usize, d: usize) -> usize {
        let block = (g * self.positions + p) / KEY_BLOCK;
        (block * self.hd + d) * KEY_BLOCK + p % KEY_BLOCK
    }

    /// Stores the key and value of head `g` at position `p`.
    fn write(&mut self, g: usize, p: usize, key: &[f32], value: &[f32]) {
        for (d, k) in key.iter().enumerate() {
            let at = self.key_at(g, p, d);
            self.keys[at] = f16::from_f32(*k);
        }
        let at = (g * self.positions + p) * self.hd;
        self.values[at..at + self.hd].convert_from_f32_slice(value);
    }

    /// Keys and values of head `g` at positions `..total`, widened to f32, a position
    /// per row.
    fn widened(&self, g: usize, total: usize) -> (Vec<f32>, Vec<f32>) {
        let hd = self.hd;
        let mut keys = vec![0.0; total * hd];
        for (p, row) in keys.chunks_exact_mut(hd).enumerate() {
            for (d, k) in row.iter_mut().enumerate() {
                *k = widen(self.keys[self.key_at(g, p, d)]);
            }
        }
        let at = g * self.positions * hd;
        let mut values = vec![0.0; total * hd];
        self.values[at..at + total * hd].convert_to_f32_slice(&mut values);
        (keys, values)
    }

    /// `scores[t] = scale · q · key[t]` for the positions `..scores.len()` of head `g`.
    fn score(&self, g: usize, q: &[f32], scale: f32, scores: &mut [f32]) {
        let hd = self.hd;
        let blocks = self.keys[g * self.positions * hd..].chunks_exact(hd * KEY_BLOCK);
        for (block, out) in blocks.zip(scores.chunks_mut(KEY_BLOCK)) {
            let mut acc = [0f32; KEY_BLOCK];
            for (keys, q) in block.chunks_exact(KEY_BLOCK).zip(q) {
                for (a, k) in acc.iter_mut().zip(keys) {
                    *a += q * widen(*k);
                }
            }
            for (o, a) in out.iter_mut().zip(acc) {
                *o = a * scale;
            }
        }
    }

    /// `out = Σ weights[t] · value[t]` over the positions `..weights.len()` of head `g`.
    fn mix(&self, g: usize, weights: &[f32], out: &mut [f32]) {
        let hd = self.hd;
        let at = g * self.positions * hd;
        let values = &self.values[at..at + weights.len() * hd];
        for (c, out) in out.chunks_exact_mut(LANES).enumerate() {
            let mut acc = [0f32; LANES];
            for (w, row) in weights.iter().zip(values.chunks_exact(hd)) {
                for (a, v) in acc.iter_mut().zip(&row[c * LANES..(c + 1) * LANES]) {
                    *a += w * widen(*v);
                }
            }
            out.copy_from_slice(&acc);
        }
    }
}

/// Lanes of the decoding step's value sums; head widths are multiples of it.
const LANES: usize = 16;

/// f16 to f32 in plain arithmetic, so that loops over it vectorise: the f16's exponent
/// and mantissa bits, moved into an f32's, read 2^112 too small (subnormals included);
/// infinities and NaN are not expected in the cache.
#[inline(always)]
fn widen(h: f16) -> f32 {
    let bits = u32::from(h.to_bits());
    let magnitude = f32::from_bits((bits & 0x7fff) << 13) * f32::from_bits((127 + 112) << 23);
    f32::from_bits(magnitude.to_bits() | ((bits & 0x8000) << 16))
}

/// Attention of one new token (`q`, every head) over positions `..total`, one query head
/// per task of candle's pool; `scores` holds a row of `total` per head.
fn attend_one(
    s: &Shape,
    q: &[f32],
    cache: &KvCache,
    total: usize,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hd = s.head_dim;
    let rep = s.heads / s.kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let heads: Vec<Mutex<(&mut [f32], &mut [f32])>> = scores
        .chunks_exact_mut(total)
        .zip(out.chunks_exact_mut(hd))
        .map(Mutex::new)
        .collect();
    candle_core::utils::barrier_pool().execute_chunked(s.heads, |range| {
        for head in range {
            if let Ok(mut slot) = heads[head].lock() {
                let (scores, out) = &mut *slot;
                cache.score(head / rep, &q[head * hd..(head + 1) * hd], scale, scores);
                softmax(scores);
                cache.mix(head / rep, scores, out);
            }
        }
    });
}

thread_local! {
    /// A tile of dequantized weights, per rayon thread.
    static TILE: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Causal attention of `rows` new tokens at `position..` (queries in `qkv`'s rows) over
/// the cache, per (head, block of rows) across rayon's threads.
fn attend_rows(
    s: &Shape,
    qkv: &[f32],
    cache: &KvCache,
    position: usize,
    rows: usize,
    out: &mut [f32],
) -> Result<()> {
    let hd = s.head_dim;
    let rep = s.heads / s.kv_heads;
    let stride = (s.heads + 2 * s.kv_heads) * hd;
    let total = position + rows;
    let scale = 1.0 / (hd as f32).sqrt();
    let heads: Vec<(Vec<f32>, Vec<f32>)> =
        (0..s.kv_heads).map(|g| cache.widened(g, total)).collect();
    let jobs: Vec<(usize, usize)> = (0..s.heads)
        .flat_map(|head| (0..rows).step_by(ROW_BLOCK).map(move |r| (head, r)))
        .collect();
    let parts: Vec<Result<Vec<f32>>> = jobs
        .par_iter()
        .map(|&(head, start)| {
            let end = rows.min(start + ROW_BLOCK);
            let (keys, values) = &heads[head / rep];
            // The block's last row sees the most positions.
            let seen = position + end;
            let q = View::rows(&qkv[start * stride + head * hd..], stride);
            let mut scores = vec![0.0f32; (end - start) * seen];
            let keys = View::rows(keys, hd).t();
            matmul(
                &mut scores,
                seen,
                q,
                keys,
                (end - start, seen, hd),
                scale,
                false,
                false,
            )
            .map_err(error)?;
            for (i, row) in scores.chunks_exact_mut(seen).enumerate() {
                let visible = position + start + i + 1;
                softmax(&mut row[..visible]);
                row[visible..].fill(0.0);
            }
            let mut part = vec![0.0f32; (end - start) * hd];
            let (weights, values) = (View::rows(&scores, seen), View::rows(values, hd));
            matmul(
                &mut part,
                hd,
                weights,
                values,
                (end - start, hd, seen),
                1.0,
                false,
                false,
            )
            .map_err(error)?;
            Ok(part)
        })
        .collect();
    let width = s.heads * hd;
    for (&(head, start), part) in jobs.iter().zip(parts) {
        for (i, src) in part?.chunks_exact(hd).enumerate() {
            let at = (start + i) * width + head * hd;
            out[at..at + hd].copy_from_slice(src);
        }
    }
    Ok(())
}

/// Rotates each head of `x` by the angles of its position, pairs interleaved.
fn rope(x: &mut [f32], hd: usize, cos: &[f32], sin: &[f32]) {
    for head in x.chunks_exact_mut(hd) {
        for ((pair, c), s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
            let (a, b) = (pair[0], pair[1]);
            pair[0] = a * c - b * s;
            pair[1] = a * s + b * c;
        }
    }
}

/// `out = x / rms(x) · weight`, row by row.
fn rms_norm_rows(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let n = weight.len();
    for (row, o) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
        let mean = reduce(row, 0.0, |v| v * v, |a, b| a + b) / n as f32;
        let inv = 1.0 / (mean + eps).sqrt();
        for ((o, v), w) in o.iter_mut().zip(row).zip(weight) {
            *o = v * inv * w;
        }
    }
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

    #[test]
    fn widen_matches_half_for_every_finite_value() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            if h.is_finite() {
                assert_eq!(widen(h).to_bits(), h.to_f32().to_bits(), "{bits:#06x}");
            }
        }
    }

    /// Fused parts of different types, multiplied by a few rows (candle's quantized
    /// kernel) and by many (dense tiles, a partial last one): both match the product
    /// with the dequantized weights.
    #[test]
    fn fused_matrices_multiply_alike_on_both_kernels() {
        let cpu = &Device::Cpu;
        let (k, n1, n2) = (64, 150, 47);
        let values = |n: usize, seed: usize| -> Vec<f32> {
            (0..n * k)
                .map(|i| (((i * 37 + seed * 11) % 101) as f32 - 50.0) / 40.0)
                .collect()
        };
        let part = |n: usize, seed: usize, dtype: GgmlDType| {
            let t = Tensor::from_vec(values(n, seed), (n, k), cpu).unwrap();
            QTensor::quantize(&t, dtype).unwrap()
        };
        let parts = [part(n1, 1, GgmlDType::Q4_0), part(n2, 2, GgmlDType::Q8_0)];
        let fused = Matrix::fuse(&parts, None).unwrap();
        assert!(
            matches!(fused.blocks, Blocks::F32(_)),
            "mixed types fuse as f32"
        );
        assert_eq!((fused.rows, fused.cols), (n1 + n2, k));
        // Rows of 64 cannot hold a K-quant's blocks of 256.
        let narrow = Matrix::fuse(&parts[..1], Some(GgmlDType::Q4K)).unwrap();
        assert!(matches!(narrow.blocks, Blocks::F16(_)));
        let mut weights = Vec::new();
        for p in &parts {
            let w = p.dequantize(cpu).unwrap().flatten_all().unwrap();
            weights.extend(w.to_vec1::<f32>().unwrap());
        }
        let mut row = vec![0.0; k];
        fused.row(n1 + 3, &mut row).unwrap();
        assert_eq!(row, weights[(n1 + 3) * k..(n1 + 4) * k]);

        let q4 = Matrix::fuse(&parts[..1], Some(GgmlDType::Q4_0)).unwrap();
        let q4_weights = &weights[..n1 * k];
        for (matrix, w, n) in [(&fused, &weights[..], n1 + n2), (&q4, q4_weights, n1)] {
            for m in [3, DENSE_ROWS + 21] {
                let x: Vec<f32> = (0..m * k).map(|i| ((i % 7) as f32 - 3.0) / 4.0).collect();
                let mut got = vec![0.0; m * n];
                matrix.forward(&x, m, &mut got).unwrap();
                for r in 0..m {
                    for c in 0..n {
                        let want: f32 = (0..k).map(|i| x[r * k + i] * w[c * k + i]).sum();
                        let got = got[r * n + c];
                        // The quantized kernel rounds the input to 8 bits.
                        assert!(
                            (got - want).abs() < 0.05 * (1.0 + want.abs()),
                            "{m} rows: [{r},{c}] {got} vs {want}"
                        );
                    }
                }
            }
        }
        let mut wrong = vec![0.0; 5];
        assert!(
            fused.forward(&row, 1, &mut wrong).is_err(),
            "output size is checked"
        );
    }

    /// Same f32 weights through candle's reference llama and this one: the logits of a
    /// prompt, of the decoding steps after it and of continuations agree.
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
        // Continuations of several rows (the quantized kernel below DENSE_ROWS, the dense
        // one above) attend to the cached prefix and causally among themselves; a fresh
        // short prompt at position 0 overwrites the cache.
        for (rows, position) in [(5, ids.len()), (20, ids.len() + 5), (8, 0)] {
            let chunk: Vec<u32> = (0..rows as u32).map(|i| (i * 331 + 5) % 49_000).collect();
            let input = Tensor::new(chunk.as_slice(), cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap();
            let want = reference
                .forward(&input, position)
                .unwrap()
                .squeeze(0)
                .unwrap();
            let got = ours.forward(&chunk, position).unwrap();
            let (diff, same) = close(&want, &got);
            assert!(
                diff < 1e-3 && same,
                "{rows} rows at {position}: differ by {diff}"
            );
        }
    }
}
