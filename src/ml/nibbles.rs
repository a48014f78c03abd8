//! ggml's 4-bit weight types, Q4_0 and Q4_1, in a layout of ragbox's own, multiplied by
//! AVX2 kernels: candle has none for Q4_1 and runs Q4_0 a block at a time.
//!
//! A row of weights is blocks of 32, each with a scale `d` and an offset `o` (Q4_1: the
//! block's minimum; Q4_0: `-8·d`): a weight is `o + d·q`, `q` in `0..16`. The blocks of a
//! row go in pairs, 32 bytes each: byte `j` holds weight `j` of the pair's first block in
//! its low nibble and weight `j` of the second in its high one, so one load and two masks
//! give both blocks' weights in order.
//!
//! A product first rounds each input row to 8 bits per block of 32 (scale `e`, integer
//! sum `s`). A block then adds `d·e·Σ qⱼ·xⱼ + o·e·s`: the first term is a product of
//! unsigned by signed bytes (`vpmaddubsw`), the second one short vector loop per row.
//! Output rows are split over candle's spinning pool in groups of four, which share each
//! load of the input.
#![allow(unsafe_code)]

use half::f16;
use rayon::prelude::*;

/// Weights per block.
pub(super) const BLOCK: usize = 32;
/// Bytes of a pair of blocks.
const PAIR: usize = BLOCK;
/// Output rows computed together.
const GROUP: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Offset `-8·d`.
    Q4_0,
    /// Offset stored per block.
    Q4_1,
}

/// Q4_0's offset, in units of its block's scale `d`: its weights are `d·(q - 8)`.
pub(super) const Q4_0_OFFSET: f32 = -8.0;

impl Kind {
    /// Bytes of one of ggml's blocks of this type.
    fn ggml_bytes(self) -> usize {
        match self {
            Kind::Q4_0 => 2 + BLOCK / 2,
            Kind::Q4_1 => 4 + BLOCK / 2,
        }
    }

    /// ggml's blocks of this type (`d` as f16, Q4_1's `m` as f16, 16 bytes of weights)
    /// of a `rows × cols` matrix, row after row; refused unless `bytes` holds exactly
    /// the matrix's blocks.
    pub(super) fn blocks(
        self,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<impl Iterator<Item = GgmlBlock<'_>>, String> {
        let per_row = cols / BLOCK;
        let size = self.ggml_bytes();
        if !cols.is_multiple_of(BLOCK) || bytes.len() != rows * per_row * size {
            return Err(format!(
                "{} bytes for {rows}×{cols} {self:?} weights",
                bytes.len()
            ));
        }
        let half = |b: &[u8]| f16::from_le_bytes([b[0], b[1]]);
        Ok(bytes
            .chunks_exact(size)
            .enumerate()
            .map(move |(i, block)| GgmlBlock {
                row: i / per_row,
                j: i % per_row,
                d: half(block),
                m: (self == Kind::Q4_1).then(|| half(&block[2..])),
                qs: &block[size - BLOCK / 2..],
            }))
    }
}

/// One of ggml's 4-bit blocks.
pub(super) struct GgmlBlock<'a> {
    pub(super) row: usize,
    /// Which block of the row.
    pub(super) j: usize,
    pub(super) d: f16,
    /// Q4_1's offset; Q4_0 has none.
    pub(super) m: Option<f16>,
    /// Weight `t` in the low nibble of byte `t`, weight `t + 16` in its high one.
    pub(super) qs: &'a [u8],
}

/// A `[rows, cols]` matrix of 4-bit weights.
pub(super) struct Nibbles {
    kind: Kind,
    rows: usize,
    cols: usize,
    /// `d` of every block, row after row.
    scales: Vec<f16>,
    /// Q4_1's offsets, as `scales`; empty for Q4_0.
    offsets: Vec<f16>,
    /// `cols / 2` bytes per row, in pairs of blocks.
    packed: Vec<u8>,
}

impl Nibbles {
    /// Whether rows of `cols` weights are whole pairs of blocks, as this layout needs.
    pub(super) fn fits(cols: usize) -> bool {
        cols > 0 && cols.is_multiple_of(2 * BLOCK)
    }

    /// Reads ggml's blocks of `kind` (see [`Kind::blocks`]).
    pub(super) fn from_ggml(
        kind: Kind,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<Self, String> {
        if !Self::fits(cols) {
            return Err(format!("rows of {cols} are not whole pairs of blocks"));
        }
        let blocks = kind.blocks(rows, cols, bytes)?;
        let mut m = Self {
            kind,
            rows,
            cols,
            scales: Vec::with_capacity(rows * cols / BLOCK),
            offsets: Vec::new(),
            packed: vec![0; rows * cols / 2],
        };
        for block in blocks {
            m.scales.push(block.d);
            m.offsets.extend(block.m);
            let pair = &mut m.packed[block.row * cols / 2 + block.j / 2 * PAIR..][..PAIR];
            let shift = 4 * (block.j % 2);
            for (t, &q) in block.qs.iter().enumerate() {
                pair[t] |= (q & 0xF) << shift;
                pair[t + BLOCK / 2] |= (q >> 4) << shift;
            }
        }
        Ok(m)
    }

    fn per_row(&self) -> usize {
        self.cols / BLOCK
    }

    /// `(d, o)` of block `b` (counted over all rows).
    fn block(&self, b: usize) -> (f32, f32) {
        let d = self.scales[b].to_f32();
        let o = match self.kind {
            Kind::Q4_0 => Q4_0_OFFSET * d,
            Kind::Q4_1 => self.offsets[b].to_f32(),
        };
        (d, o)
    }

    /// Blocks `range` (counted over all rows, as ggml's are) as f32, into `out`.
    pub(super) fn dequantize(&self, range: std::ops::Range<usize>, out: &mut [f32]) {
        let per_row = self.per_row();
        for (b, out) in range.zip(out.chunks_exact_mut(BLOCK)) {
            let (row, j) = (b / per_row, b % per_row);
            let pair = &self.packed[row * self.cols / 2 + j / 2 * PAIR..][..PAIR];
            let shift = 4 * (j % 2);
            let (d, o) = self.block(b);
            for (v, &q) in out.iter_mut().zip(pair) {
                *v = o + d * f32::from((q >> shift) & 0xF);
            }
        }
    }

    /// `out[m × rows] = x[m × cols] · selfᵀ`, the input rounded to 8 bits per block.
    pub(super) fn product(&self, x: &[f32], m: usize, out: &mut [f32]) -> Result<(), String> {
        let (n, k) = (self.rows, self.cols);
        if x.len() != m * k || out.len() != m * n {
            return Err(format!(
                "product of {m}×{k} input and {n}×{k} weights got {} inputs and {} outputs",
                x.len(),
                out.len()
            ));
        }
        INPUT.with_borrow_mut(|input| {
            input.quantize(x, m, k);
            let input = &*input;
            let out = Shared(out.as_mut_ptr());
            let groups = n.div_ceil(GROUP);
            candle_core::utils::barrier_pool().execute_chunked(groups, |range| {
                SCRATCH.with_borrow_mut(|scratch| {
                    scratch.resize(GROUP * self.per_row(), 0.0);
                    let mut dots = [0.0f32; GROUP];
                    for g in range {
                        let first = g * GROUP;
                        let count = GROUP.min(n - first);
                        for r in 0..m {
                            self.dots(first, count, input, r, scratch, &mut dots);
                            for (c, &v) in dots[..count].iter().enumerate() {
                                // SAFETY: `r < m` and `first + c < n`, so the index lies
                                // in `out` (its length was checked above); the pool hands
                                // each group to one worker, and no two groups share an
                                // output.
                                unsafe { out.write(r * n + first + c, v) };
                            }
                        }
                    }
                })
            });
        });
        Ok(())
    }

    /// Rows `first..first + count` (`count` ≤ [`GROUP`]) times input row `r`; `scratch`
    /// holds [`GROUP`] rows' worth of per-block values.
    fn dots(
        &self,
        first: usize,
        count: usize,
        input: &Input,
        r: usize,
        scratch: &mut [f32],
        dots: &mut [f32; GROUP],
    ) {
        let nb = self.per_row();
        let block_range = first * nb..(first + count) * nb;
        let rows = Rows {
            packed: &self.packed[first * self.cols / 2..(first + count) * self.cols / 2],
            scales: &self.scales[block_range.clone()],
            offsets: if self.kind == Kind::Q4_1 {
                &self.offsets[block_range]
            } else {
                &[]
            },
            count,
            cols: self.cols,
        };
        let row = input.row(r);
        #[cfg(target_arch = "x86_64")]
        if simd() {
            // SAFETY: the CPU has AVX2, FMA and F16C (checked at run time); `Rows`
            // and `Row` are consistent slices (checked inside before any load).
            return unsafe { avx2::dots(&rows, &row, scratch, dots) };
        }
        portable_dots(&rows, &row, dots);
    }
}

/// Whether this CPU runs the AVX2 kernels (this module's and [`super::panels`]'s).
#[cfg(target_arch = "x86_64")]
pub(super) fn simd() -> bool {
    std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
}

/// A raw output pointer shared by the pool's workers, each writing its own elements.
struct Shared(*mut f32);
// SAFETY: the workers write disjoint elements (see `Nibbles::product`), and the caller
// holds `out` mutably until the pool returns.
unsafe impl Sync for Shared {}

impl Shared {
    /// # Safety
    /// `i` is inside the output, and no other thread touches element `i` meanwhile.
    unsafe fn write(&self, i: usize, v: f32) {
        // SAFETY: as the caller promises.
        unsafe { *self.0.add(i) = v };
    }
}

thread_local! {
    /// The input of a product, rounded, on the thread that calls it.
    static INPUT: std::cell::RefCell<Input> = std::cell::RefCell::default();
    /// Per-block values of a group of rows, on each worker of the pool.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Input rows rounded to 8 bits per block of 32.
#[derive(Default)]
pub(super) struct Input {
    pub(super) cols: usize,
    pub(super) values: Vec<i8>,
    /// Per block: the scale `e`.
    pub(super) scales: Vec<f32>,
    /// Per block: `e · Σ values`.
    pub(super) sums: Vec<f32>,
    /// Per block: `Σ values`.
    pub(super) totals: Vec<i32>,
}

/// One input row of an [`Input`].
struct Row<'a> {
    values: &'a [i8],
    scales: &'a [f32],
    sums: &'a [f32],
}

impl Input {
    /// Rounds the `m × k` rows `x`, a prompt's across rayon's threads.
    pub(super) fn quantize(&mut self, x: &[f32], m: usize, k: usize) {
        self.cols = k;
        let nb = m * k / BLOCK;
        self.values.resize(m * k, 0);
        self.scales.resize(nb, 0.0);
        self.sums.resize(nb, 0.0);
        self.totals.resize(nb, 0);
        let round = |((((x, q), e), s), t): BlockOut<'_>| {
            let (scale, sum) = round_block(x, q);
            (*e, *s, *t) = (scale, scale * sum as f32, sum);
        };
        if m == 1 || nb < 2 * PARALLEL_BLOCKS {
            // A decoding step's row, or a few short ones: handing them to other threads
            // costs more than rounding them here.
            x.chunks_exact(BLOCK)
                .zip(self.values.chunks_exact_mut(BLOCK))
                .zip(&mut self.scales)
                .zip(&mut self.sums)
                .zip(&mut self.totals)
                .for_each(round);
            return;
        }
        x.par_chunks_exact(BLOCK)
            .zip(self.values.par_chunks_exact_mut(BLOCK))
            .zip(self.scales.par_iter_mut())
            .zip(self.sums.par_iter_mut())
            .zip(self.totals.par_iter_mut())
            .with_min_len(PARALLEL_BLOCKS)
            .for_each(round);
    }

    fn row(&self, r: usize) -> Row<'_> {
        let (k, nb) = (self.cols, self.cols / BLOCK);
        Row {
            values: &self.values[r * k..(r + 1) * k],
            scales: &self.scales[r * nb..(r + 1) * nb],
            sums: &self.sums[r * nb..(r + 1) * nb],
        }
    }
}

/// One block of input and where its rounding goes: values, scale, scaled sum, sum.
type BlockOut<'a> = (
    (((&'a [f32], &'a mut [i8]), &'a mut f32), &'a mut f32),
    &'a mut i32,
);

/// The fewest blocks of input rounded by one rayon task; a single row, or an input of
/// fewer than twice as many blocks, is rounded on the calling thread.
const PARALLEL_BLOCKS: usize = 128;

/// Rounds one block `x` into `q` (ties to even); returns its scale and `Σ q`. Written
/// so that it compiles to vector code: the largest magnitude is found on the bits,
/// which order as the values do for non-negative floats (a NaN, whose bits sort above
/// every number, makes the block's scale NaN, so it shows in the product instead of
/// vanishing). A block too small for its scale to be a normal float rounds to zeros:
/// its inverse would overflow.
#[inline(always)]
fn round_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = x.iter().fold(0u32, |a, v| a.max(v.to_bits() & 0x7fff_ffff));
    let scale = f32::from_bits(amax) / 127.0;
    let inverse = if scale >= f32::MIN_POSITIVE {
        1.0 / scale
    } else {
        0.0
    };
    let mut sum = 0i32;
    for (q, v) in q.iter_mut().zip(x) {
        let r = (v * inverse).round_ties_even().clamp(-127.0, 127.0) as i32;
        *q = r as i8;
        sum += r;
    }
    (scale, sum)
}

/// `count` consecutive weight rows of a [`Nibbles`].
struct Rows<'a> {
    packed: &'a [u8],
    scales: &'a [f16],
    offsets: &'a [f16],
    count: usize,
    cols: usize,
}

impl Rows<'_> {
    /// Offset of block `b` of row `i`.
    fn offset(&self, i: usize, b: usize) -> f32 {
        let nb = self.cols / BLOCK;
        if self.offsets.is_empty() {
            Q4_0_OFFSET * self.scales[i * nb + b].to_f32()
        } else {
            self.offsets[i * nb + b].to_f32()
        }
    }
}

/// The same sums as the AVX2 kernel, one weight at a time.
fn portable_dots(w: &Rows<'_>, x: &Row<'_>, dots: &mut [f32; GROUP]) {
    let nb = w.cols / BLOCK;
    for (i, dot) in dots.iter_mut().enumerate().take(w.count) {
        let packed = &w.packed[i * w.cols / 2..(i + 1) * w.cols / 2];
        let mut total = 0.0f32;
        for b in 0..nb {
            let pair = &packed[b / 2 * PAIR..][..PAIR];
            let shift = 4 * (b % 2);
            let values = &x.values[b * BLOCK..(b + 1) * BLOCK];
            let integer: i32 = pair
                .iter()
                .zip(values)
                .map(|(&q, &v)| i32::from((q >> shift) & 0xF) * i32::from(v))
                .sum();
            let d = w.scales[i * nb + b].to_f32();
            total += d * x.scales[b] * integer as f32 + w.offset(i, b) * x.sums[b];
        }
        *dot = total;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{BLOCK, GROUP, PAIR, Q4_0_OFFSET, Row, Rows};

    /// Horizontal sum of eight lanes.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn sum8(v: __m256) -> f32 {
        let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let quarter = _mm_add_ps(half, _mm_movehl_ps(half, half));
        _mm_cvtss_f32(_mm_add_ss(quarter, _mm_movehdup_ps(quarter)))
    }

    /// Per block of row `i`: `d·e` into `scaled`; returns `Σ o·e·s` over the row.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `w` and `x` are consistent (see [`dots`]).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn prologue(w: &Rows<'_>, i: usize, x: &Row<'_>, scaled: &mut [f32]) -> f32 {
        let nb = w.cols / BLOCK;
        let scales = &w.scales[i * nb..(i + 1) * nb];
        let offsets = if w.offsets.is_empty() {
            scales
        } else {
            &w.offsets[i * nb..(i + 1) * nb]
        };
        let mut acc = _mm256_setzero_ps();
        let whole = nb - nb % 8;
        for b in (0..whole).step_by(8) {
            // SAFETY: `b + 8 <= nb`, the length of every slice read here.
            unsafe {
                let d = _mm256_cvtph_ps(_mm_loadu_si128(scales.as_ptr().add(b).cast()));
                let o = _mm256_cvtph_ps(_mm_loadu_si128(offsets.as_ptr().add(b).cast()));
                let e = _mm256_loadu_ps(x.scales.as_ptr().add(b));
                let s = _mm256_loadu_ps(x.sums.as_ptr().add(b));
                _mm256_storeu_ps(scaled.as_mut_ptr().add(b), _mm256_mul_ps(d, e));
                acc = _mm256_fmadd_ps(o, s, acc);
            }
        }
        let mut total = sum8(acc);
        for b in whole..nb {
            scaled[b] = scales[b].to_f32() * x.scales[b];
            total += offsets[b].to_f32() * x.sums[b];
        }
        if w.offsets.is_empty() {
            Q4_0_OFFSET * total
        } else {
            total
        }
    }

    /// Rows `0..w.count` of `w` times `x`, into `dots`.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dots(
        w: &Rows<'_>,
        x: &Row<'_>,
        scratch: &mut [f32],
        dots: &mut [f32; GROUP],
    ) {
        let (k, count) = (w.cols, w.count);
        let nb = k / BLOCK;
        assert!(
            count <= GROUP
                && nb.is_multiple_of(2)
                && scratch.len() >= GROUP * nb
                && w.packed.len() == count * k / 2
                && w.scales.len() == count * nb
                && (w.offsets.is_empty() || w.offsets.len() == count * nb)
                && x.values.len() == k
                && x.scales.len() == nb
                && x.sums.len() == nb,
            "inconsistent operands"
        );
        let mut offsets = [0.0f32; GROUP];
        let mut scaled: [&mut [f32]; GROUP] = Default::default();
        for (i, (chunk, s)) in scratch.chunks_exact_mut(nb).zip(&mut scaled).enumerate() {
            if i < count {
                // SAFETY: the lengths were checked above.
                offsets[i] = unsafe { prologue(w, i, x, chunk) };
            }
            *s = chunk;
        }
        let low = _mm256_set1_epi8(0xF);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); GROUP];
        let xp = x.values.as_ptr();
        for p in 0..nb / 2 {
            // SAFETY: pair `p` of the input is bytes `64p..64p + 64` of `k`, and of
            // weight row `i` bytes `i·k/2 + 32p..+32` of `count·k/2`; the scale
            // indices `2p, 2p + 1` are below `nb`.
            unsafe {
                let xa = _mm256_loadu_si256(xp.add(2 * p * BLOCK).cast());
                let xb = _mm256_loadu_si256(xp.add((2 * p + 1) * BLOCK).cast());
                for i in 0..count {
                    let v = _mm256_loadu_si256(w.packed.as_ptr().add(i * k / 2 + p * PAIR).cast());
                    let wa = _mm256_and_si256(v, low);
                    let wb = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
                    let ia = _mm256_madd_epi16(_mm256_maddubs_epi16(wa, xa), ones);
                    let ib = _mm256_madd_epi16(_mm256_maddubs_epi16(wb, xb), ones);
                    let s = scaled[i].as_ptr();
                    acc[i] = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(ia),
                        _mm256_broadcast_ss(&*s.add(2 * p)),
                        acc[i],
                    );
                    acc[i] = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(ib),
                        _mm256_broadcast_ss(&*s.add(2 * p + 1)),
                        acc[i],
                    );
                }
            }
        }
        for i in 0..count {
            dots[i] = sum8(acc[i]) + offsets[i];
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    use super::*;

    /// `rows × cols` values rounded by candle's quantizer to `dtype`: the values as
    /// ggml's blocks hold them, and the blocks.
    pub(in crate::ml) fn ggml(
        dtype: GgmlDType,
        rows: usize,
        cols: usize,
        seed: usize,
    ) -> (Vec<f32>, QTensor) {
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((((i * 7919 + seed * 104_729) % 2003) as f32) - 1001.0) / 700.0)
            .collect();
        let t = Tensor::from_vec(values, (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, dtype).unwrap();
        let back = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap();
        (back.to_vec1().unwrap(), q)
    }

    /// `product` of each number of input rows in `ms` against the f32 product with
    /// `weights` (`n × k`): every output is written and within 1% of `Σ|x·w|`, the
    /// input's 8-bit rounding; an output of the wrong size is refused.
    pub(in crate::ml) fn check_product(
        label: &str,
        weights: &[f32],
        (n, k): (usize, usize),
        ms: &[usize],
        product: impl Fn(&[f32], usize, &mut [f32]) -> Result<(), String>,
    ) {
        for &m in ms {
            let x: Vec<f32> = (0..m * k)
                .map(|i| (((i * 31) % 97) as f32 - 48.0) / 17.0)
                .collect();
            let mut got = vec![f32::NAN; m * n];
            product(&x, m, &mut got).unwrap();
            for r in 0..m {
                for c in 0..n {
                    let want: f32 = (0..k).map(|i| x[r * k + i] * weights[c * k + i]).sum();
                    let scale: f32 = (0..k)
                        .map(|i| (x[r * k + i] * weights[c * k + i]).abs())
                        .sum();
                    let got = got[r * n + c];
                    assert!(
                        (got - want).abs() <= 0.01 * scale,
                        "{label} {m} rows [{r},{c}]: {got} vs {want}"
                    );
                }
            }
        }
        let mut wrong = vec![0.0; n + 1];
        assert!(product(&vec![0.0; k], 1, &mut wrong).is_err(), "{label}");
    }

    /// The layout holds exactly ggml's values, and the product (AVX2 where the CPU has
    /// it, else the portable loop) matches the f32 product of those values within the
    /// input's 8-bit rounding, for both types, a partial last group and several rows.
    #[test]
    fn product_matches_the_dequantized_weights() {
        for (dtype, kind) in [(GgmlDType::Q4_0, Kind::Q4_0), (GgmlDType::Q4_1, Kind::Q4_1)] {
            let (n, k) = (11, 64 * 5);
            let (weights, q) = ggml(dtype, n, k, 3);
            let nibbles = Nibbles::from_ggml(kind, n, k, &q.data().unwrap()).unwrap();
            let mut back = vec![0.0; n * k];
            nibbles.dequantize(0..n * k / BLOCK, &mut back);
            assert_eq!(back, weights, "{kind:?} values");
            let mut tail = vec![0.0; 3 * BLOCK];
            nibbles.dequantize(20..23, &mut tail);
            assert_eq!(tail, weights[20 * BLOCK..23 * BLOCK], "{kind:?} window");

            check_product(
                &format!("{kind:?}"),
                &weights,
                (n, k),
                &[1, 3],
                |x, m, out| nibbles.product(x, m, out),
            );
        }
    }

    /// The AVX2 kernel and the portable loop compute the same sums.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_kernel_agrees_with_the_portable_loop() {
        if !simd() {
            eprintln!("skipped: this CPU lacks AVX2, FMA or F16C");
            return;
        }
        for (dtype, kind) in [(GgmlDType::Q4_0, Kind::Q4_0), (GgmlDType::Q4_1, Kind::Q4_1)] {
            // 9 pairs of blocks per row: the prologue's vector loop and its tail.
            let (n, k) = (7, 64 * 9);
            let (_, q) = ggml(dtype, n, k, 5);
            let nibbles = Nibbles::from_ggml(kind, n, k, &q.data().unwrap()).unwrap();
            let x: Vec<f32> = (0..k).map(|i| ((i * 13) % 29) as f32 - 14.0).collect();
            let mut input = Input::default();
            input.quantize(&x, 1, k);
            for (first, count) in [(0, 4), (4, 3)] {
                let (mut fast, mut slow) = ([0.0; GROUP], [0.0; GROUP]);
                let mut scratch = vec![0.0; GROUP * k / BLOCK];
                let nb = k / BLOCK;
                let range = first * nb..(first + count) * nb;
                let rows = Rows {
                    packed: &nibbles.packed[first * k / 2..(first + count) * k / 2],
                    scales: &nibbles.scales[range.clone()],
                    offsets: if kind == Kind::Q4_1 {
                        &nibbles.offsets[range]
                    } else {
                        &[]
                    },
                    count,
                    cols: k,
                };
                // SAFETY: `simd()` said the CPU has the features.
                unsafe { avx2::dots(&rows, &input.row(0), &mut scratch, &mut fast) };
                portable_dots(&rows, &input.row(0), &mut slow);
                for (a, b) in fast.iter().zip(&slow) {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{kind:?}: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// A prompt's rows, rounded across threads, give the bytes, scales and sums of each
    /// row rounded alone; blocks of tiny values round to zeros or to 127, never to
    /// overflowed bytes, and the sums are the bytes' sums.
    #[test]
    fn rounding_is_the_same_across_threads_and_safe_for_tiny_blocks() {
        let (m, k) = (9, 64 * 15);
        let mut x: Vec<f32> = (0..m * k)
            .map(|i| (((i * 7) % 23) as f32 - 11.0) / 3.0)
            .collect();
        x[..BLOCK].fill(1e-40);
        x[BLOCK..2 * BLOCK].fill(-2e-37);
        // Its scale is just normal, its inverse near the largest float.
        x[2 * BLOCK..3 * BLOCK].fill(4e-36);
        let mut all = Input::default();
        all.quantize(&x, m, k);
        assert!(
            m * k / BLOCK >= 2 * PARALLEL_BLOCKS,
            "the parallel path runs"
        );
        let mut one = Input::default();
        for r in 0..m {
            one.quantize(&x[r * k..(r + 1) * k], 1, k);
            let nb = k / BLOCK;
            assert_eq!(one.values, all.values[r * k..(r + 1) * k], "row {r}");
            assert_eq!(one.scales, all.scales[r * nb..(r + 1) * nb], "row {r}");
            assert_eq!(one.totals, all.totals[r * nb..(r + 1) * nb], "row {r}");
        }
        for (b, q) in all.values.chunks_exact(BLOCK).enumerate() {
            let sum: i32 = q.iter().map(|&v| i32::from(v)).sum();
            assert_eq!(all.totals[b], sum, "block {b}");
            assert!(q.iter().all(|&v| v > i8::MIN), "block {b}");
        }
        assert!(all.values[..2 * BLOCK].iter().all(|&v| v == 0));
        assert!(all.values[2 * BLOCK..3 * BLOCK].iter().all(|&v| v == 127));
    }

    #[test]
    fn malformed_blocks_are_refused() {
        assert!(Nibbles::from_ggml(Kind::Q4_0, 2, 64, &[0; 18 * 3]).is_err());
        assert!(Nibbles::from_ggml(Kind::Q4_1, 1, 32, &[0; 20]).is_err());
    }
}
