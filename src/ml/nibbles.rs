//! ggml's 4-bit weight types, Q4_0 and Q4_1, read block by block, and the rounding of
//! the inputs they multiply: each input row to 8 bits per block of 32, with the block's
//! scale `e` and its integer sum kept.
//!
//! A row of weights is blocks of 32, each with a scale `d` and an offset `o` (Q4_1: the
//! block's minimum; Q4_0: `-8·d`): a weight is `o + d·q`, `q` in `0..16`. A block of a
//! product then adds `d·e·Σ qⱼ·xⱼ + o·e·Σ xⱼ`: the first term a product of unsigned by
//! signed bytes, the second one multiply-add per block. [`super::panels`] keeps the
//! weights and runs the products.
use half::f16;

/// Weights per block.
pub(super) const BLOCK: usize = 32;

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

/// Input rows rounded to 8 bits per block of 32.
#[derive(Default)]
pub(super) struct Input {
    pub(super) values: Vec<i8>,
    /// Per block: the scale `e`.
    pub(super) scales: Vec<f32>,
    /// Per block: `e · Σ values`.
    pub(super) sums: Vec<f32>,
    /// Per block: `Σ values`.
    pub(super) totals: Vec<i32>,
}

impl Input {
    /// Rounds the `m × k` rows `x`, a prompt's across candle's pool.
    pub(super) fn quantize(&mut self, x: &[f32], m: usize, k: usize) {
        let nb = m * k / BLOCK;
        self.values.resize(m * k, 0);
        self.scales.resize(nb, 0.0);
        self.sums.resize(nb, 0.0);
        self.totals.resize(nb, 0);
        if m == 1 || nb < 2 * PARALLEL_BLOCKS {
            // A decoding step's row, or a few short ones: handing them to other threads
            // costs more than rounding them here.
            round_blocks(
                x,
                &mut self.values,
                &mut self.scales,
                &mut self.sums,
                &mut self.totals,
            );
            return;
        }
        // On candle's pool, whose threads run the product that follows.
        let mut parts: Vec<Part<'_>> = x
            .chunks(PARALLEL_BLOCKS * BLOCK)
            .zip(self.values.chunks_mut(PARALLEL_BLOCKS * BLOCK))
            .zip(self.scales.chunks_mut(PARALLEL_BLOCKS))
            .zip(self.sums.chunks_mut(PARALLEL_BLOCKS))
            .zip(self.totals.chunks_mut(PARALLEL_BLOCKS))
            .collect();
        super::pool::for_each(&mut parts, |_, ((((x, q), e), s), t)| {
            round_blocks(x, q, e, s, t);
        });
    }
}

/// Rounds a run of whole blocks `x` into `q` (see [`round_block`]), with each block's
/// scale, scaled sum and sum, sixteen lanes at a time where the CPU has AVX-512: the
/// same bits either way.
fn round_blocks(x: &[f32], q: &mut [i8], e: &mut [f32], s: &mut [f32], t: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if avx512::round_blocks(x, q, e, s, t) {
        return;
    }
    portable_round_blocks(x, q, e, s, t);
}

/// [`round_blocks`] one block at a time, on any CPU.
fn portable_round_blocks(x: &[f32], q: &mut [i8], e: &mut [f32], s: &mut [f32], t: &mut [i32]) {
    x.chunks_exact(BLOCK)
        .zip(q.chunks_exact_mut(BLOCK))
        .zip(e.iter_mut())
        .zip(s.iter_mut())
        .zip(t.iter_mut())
        .for_each(|((((x, q), e), s), t)| {
            let (scale, sum) = round_block(x, q);
            (*e, *s, *t) = (scale, scale * sum as f32, sum);
        });
}

/// A run of blocks of input and where their rounding goes.
type Part<'a> = (
    (((&'a [f32], &'a mut [i8]), &'a mut [f32]), &'a mut [f32]),
    &'a mut [i32],
);

/// The blocks of input rounded by one task of the pool; a single row, or an input of
/// fewer than twice as many blocks, is rounded on the calling thread.
const PARALLEL_BLOCKS: usize = 128;

/// Rounds one block `x` into `q` (ties to even); returns its scale and `Σ q`. Written
/// so that it compiles to vector code: the largest magnitude is found on the bits,
/// which order as the values do for non-negative floats (a NaN, whose bits sort above
/// every number, makes the block's scale NaN, so it shows in the product instead of
/// vanishing). A block too small for its scale to be a normal float rounds to zeros:
/// its inverse would overflow. The rounding itself is an addition of 1.5·2²³, which
/// leaves the nearest integer (ties to even) in the low bits of the sum: Rust's
/// saturating `as i32` would be compiled one lane at a time.
#[inline(always)]
#[expect(
    clippy::manual_clamp,
    reason = "`clamp` keeps a NaN, whose bits would overflow the sum; `max` drops it"
)]
fn round_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = x.iter().fold(0u32, |a, v| a.max(v.to_bits() & 0x7fff_ffff));
    let scale = f32::from_bits(amax) / 127.0;
    let inverse = inverse(scale);
    let mut sum = 0i32;
    for (q, v) in q.iter_mut().zip(x) {
        let r = to_integer((v * inverse).max(-127.0).min(127.0));
        *q = r as i8;
        sum += r;
    }
    (scale, sum)
}

/// The inverse of a block's scale, or zero where the scale is too small for its inverse
/// to be a float (or is NaN).
#[inline(always)]
fn inverse(scale: f32) -> f32 {
    if scale >= f32::MIN_POSITIVE {
        1.0 / scale
    } else {
        0.0
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{BLOCK, MAGIC, inverse};

    /// [`kernel`] where the CPU has AVX-512 F and BW; returns whether it ran.
    pub(super) fn round_blocks(
        x: &[f32],
        q: &mut [i8],
        scales: &mut [f32],
        sums: &mut [f32],
        totals: &mut [i32],
    ) -> bool {
        if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")) {
            return false;
        }
        // SAFETY: the CPU has AVX-512 F and BW (checked above).
        unsafe { kernel(x, q, scales, sums, totals) };
        true
    }

    /// [`super::round_block`] for each block of `x`, two vectors a block, with the
    /// same operations lane by lane: the largest magnitude on the bits, the product
    /// with the inverse clamped to ±127 (`max` first, whose second operand, -127,
    /// replaces a NaN, as `f32::max` does), and the same rounding addition.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn kernel(
        x: &[f32],
        q: &mut [i8],
        scales: &mut [f32],
        sums: &mut [f32],
        totals: &mut [i32],
    ) {
        let magnitude = _mm512_set1_epi32(0x7fff_ffff);
        let (low, high) = (_mm512_set1_ps(-127.0), _mm512_set1_ps(127.0));
        let (magic, magic_bits) = (
            _mm512_set1_ps(MAGIC),
            _mm512_set1_epi32(MAGIC.to_bits() as i32),
        );
        let blocks = x.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK)).zip(
            scales
                .iter_mut()
                .zip(sums.iter_mut())
                .zip(totals.iter_mut()),
        );
        for ((x, q), ((e, s), t)) in blocks {
            // SAFETY: a block is 32 values and 32 bytes: two vectors in, two halves out.
            unsafe {
                let a = _mm512_castps_si512(_mm512_loadu_ps(x.as_ptr()));
                let b = _mm512_castps_si512(_mm512_loadu_ps(x.as_ptr().add(16)));
                let bits = _mm512_max_epu32(
                    _mm512_and_si512(a, magnitude),
                    _mm512_and_si512(b, magnitude),
                );
                let scale = f32::from_bits(_mm512_reduce_max_epu32(bits)) / 127.0;
                let inv = _mm512_set1_ps(inverse(scale));
                let round = |v: __m512i| {
                    let v = _mm512_mul_ps(_mm512_castsi512_ps(v), inv);
                    let v = _mm512_min_ps(_mm512_max_ps(v, low), high);
                    _mm512_sub_epi32(_mm512_castps_si512(_mm512_add_ps(v, magic)), magic_bits)
                };
                let (a, b) = (round(a), round(b));
                _mm_storeu_si128(q.as_mut_ptr().cast(), _mm512_cvtepi32_epi8(a));
                _mm_storeu_si128(q.as_mut_ptr().add(16).cast(), _mm512_cvtepi32_epi8(b));
                let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(a, b));
                (*e, *s, *t) = (scale, scale * sum as f32, sum);
            }
        }
    }
}

/// 1.5·2²³: sums with any `|v| ≤ 2²²` share its exponent, so their last bit is 1.
const MAGIC: f32 = 12_582_912.0;

/// The integer nearest `v` (ties to even), for `|v| ≤ 2²²`.
#[inline(always)]
fn to_integer(v: f32) -> i32 {
    (v + MAGIC).to_bits() as i32 - MAGIC.to_bits() as i32
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

    /// The rounding by addition gives the integer nearest each value, ties to even,
    /// across the range a block uses.
    #[test]
    fn rounding_by_addition_is_round_ties_even() {
        let steps = (-128 * 64..=128 * 64).map(|i| i as f32 / 64.0);
        let odd = (0..10_000).map(|i| ((i * 7919 % 25_601) as f32 - 12_800.0) / 99.7);
        for v in steps
            .chain(odd)
            .chain([0.5, -0.5, 1.5, -2.5, 126.5, -126.5, -0.0])
        {
            assert_eq!(to_integer(v), v.round_ties_even() as i32, "{v}");
        }
    }

    /// A block with a NaN gets a NaN scale (so the product shows it) and bytes in range.
    #[test]
    fn a_nan_in_a_block_makes_its_scale_nan() {
        let mut x = vec![0.5f32; 2 * BLOCK];
        x[3] = f32::NAN;
        let mut input = Input::default();
        input.quantize(&x, 1, 2 * BLOCK);
        assert!(input.scales[0].is_nan() && input.sums[0].is_nan());
        assert!(input.values.iter().all(|&v| v > i8::MIN));
        assert_eq!(input.values[BLOCK..], [127; BLOCK]);
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

    /// The AVX-512 rounding gives the portable loop's bits: bytes, scales, scaled sums
    /// and sums, for ordinary blocks and for blocks with a NaN, an infinity, tiny
    /// values, signed zeros and ties.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx512_rounding_matches_the_portable_loop() {
        let mut x: Vec<f32> = (0..BLOCK * 40)
            .map(|i| ((i * 7919 % 4001) as f32 - 2000.0) / (1 + i % 97) as f32)
            .collect();
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-40,
            -0.0,
            3e38,
        ];
        for (b, v) in specials.into_iter().enumerate() {
            x[b * BLOCK + 5] = v;
        }
        x[6 * BLOCK..7 * BLOCK].fill(-2e-37);
        x[7 * BLOCK..8 * BLOCK].fill(4e-36);
        // Ties: 127 and 0.5 steps of its scale.
        for (i, v) in x[8 * BLOCK..9 * BLOCK].iter_mut().enumerate() {
            *v = if i == 0 { 127.0 } else { i as f32 - 15.5 };
        }
        let nb = x.len() / BLOCK;
        let run = |simd: bool| {
            let (mut q, mut e, mut s, mut t) = (
                vec![0i8; x.len()],
                vec![0f32; nb],
                vec![0f32; nb],
                vec![0i32; nb],
            );
            if simd {
                if !avx512::round_blocks(&x, &mut q, &mut e, &mut s, &mut t) {
                    return None;
                }
            } else {
                portable_round_blocks(&x, &mut q, &mut e, &mut s, &mut t);
            }
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            Some((q, bits(&e), bits(&s), t))
        };
        let Some(fast) = run(true) else {
            eprintln!("skipped: this CPU lacks AVX-512 F and BW");
            return;
        };
        let slow = run(false).unwrap();
        assert!(f32::from_bits(slow.1[0]).is_nan(), "the NaN block's scale");
        assert_eq!(fast, slow);
    }
}
