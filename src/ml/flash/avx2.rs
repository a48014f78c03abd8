//! [`super::attend`]'s one pass on CPUs with AVX2 and FMA but no AVX-512 (AMD's Zen 3
//! and before, Intel's client cores): the same tiles of query rows, chunks of keys and
//! running softmax, in vectors of eight lanes. Sixteen registers cannot hold a tile's
//! scores or value sums as AVX-512's thirty-two do, so both live in small arrays that
//! stay in the first-level cache: the kernel scores [`ROWS`] rows against half a
//! chunk's keys at a time, folds each row's scores into its running softmax (the
//! scores become the powers in place), then adds the chunk's weighted values into the
//! tile's sums [`ROWS`] rows and half a head at a time.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::super::ops::EXP_TAYLOR;
use super::{CHUNK, KEY_BLOCK, TILE};

/// Head width the kernel is built for.
const HD: usize = 64;
/// Lanes of a vector.
const LANES: usize = 8;
/// Vectors of a row's scores in a chunk.
const VECS: usize = CHUNK / LANES;
/// Rows, and vectors a row, that a step of either product keeps in registers: 2 × 4
/// sums, 4 operands and a broadcast leave three of the sixteen registers free.
const ROWS: usize = 2;
const STEP: usize = 4;
const _: () = assert!(TILE.is_multiple_of(ROWS));
const _: () = assert!(CHUNK.is_multiple_of(STEP * LANES) && HD.is_multiple_of(STEP * LANES));

/// e^x for each lane, the polynomial of [`super::super::ops::exp`] (as AVX-512's f32
/// kernel takes it); lanes at or below -87 give about 1.6e-38, so masked lanes must be
/// zeroed after. A NaN stays NaN.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn exp(x: __m256) -> __m256 {
    // The constant first: where a lane is NaN, the second operand (the NaN) is kept.
    let x = _mm256_max_ps(
        _mm256_set1_ps(-87.0),
        _mm256_min_ps(_mm256_set1_ps(88.0), x),
    );
    let t = _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
    let f = _mm256_mul_ps(_mm256_sub_ps(t, n), _mm256_set1_ps(std::f32::consts::LN_2));
    let mut p = _mm256_set1_ps(EXP_TAYLOR[0]);
    for c in &EXP_TAYLOR[1..] {
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(*c));
    }
    // 2ⁿ from its exponent bits: after the clamp, n lies in -126..=127.
    let biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
    _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased)))
}

/// The largest of `x`'s lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn lanes_max(x: __m256) -> f32 {
    let x = _mm256_max_ps(x, _mm256_permute2f128_ps::<1>(x, x));
    let x = _mm256_max_ps(x, _mm256_permute_ps::<0b01_00_11_10>(x));
    _mm256_cvtss_f32(_mm256_max_ps(x, _mm256_permute_ps::<0b10_11_00_01>(x)))
}

/// The sum of `x`'s lanes, in lane order.
fn lanes_sum(x: __m256) -> f32 {
    let mut lanes = [0f32; LANES];
    // SAFETY: `lanes` holds eight floats; AVX is present wherever a `__m256` was made.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), x) };
    lanes.iter().sum()
}

/// One tile: the query rows `q` (at most [`TILE`] of [`HD`]) at positions `first..`,
/// over the positions `..=first + rows - 1`.
///
/// # Safety
/// The CPU has AVX2 and FMA; `keys` and `values` hold every position up to the last
/// row's, rounded up to a whole chunk, `out` as many values as `q`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile(q: &[f32], keys: &[f32], values: &[f32], first: usize, out: &mut [f32]) {
    let rows = q.len() / HD;
    debug_assert!((1..=TILE).contains(&rows) && out.len() == q.len());
    let last = first + rows - 1;
    // Short tiles repeat their last row, whose results are dropped.
    let query = |r: usize| &q[r.min(rows - 1) * HD..][..HD];
    let mut high = [f32::NEG_INFINITY; TILE];
    let mut total = [_mm256_setzero_ps(); TILE];
    let mut sums = [[0f32; HD]; TILE];
    // A chunk's scores, a row per query row, then its powers in their place.
    let mut scores = [[0f32; CHUNK]; TILE];
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for start in (0..=last).step_by(CHUNK) {
        // SAFETY: the chunk's key blocks end at `(start + CHUNK) · HD` values, inside
        // `keys` (the caller's bound).
        let kp = unsafe { keys.as_ptr().add(start * HD) };
        for pair in (0..TILE).step_by(ROWS) {
            let qs: [&[f32]; ROWS] = std::array::from_fn(|r| query(pair + r));
            for part in (0..CHUNK).step_by(STEP * LANES) {
                let mut acc = [[_mm256_setzero_ps(); STEP]; ROWS];
                for d in 0..HD {
                    let k: [__m256; STEP] = std::array::from_fn(|v| {
                        let p = part + v * LANES;
                        // SAFETY: position `start + p` of dimension `d` lies inside the
                        // chunk's blocks.
                        unsafe {
                            let at = ((p / KEY_BLOCK) * HD + d) * KEY_BLOCK + p % KEY_BLOCK;
                            _mm256_loadu_ps(kp.add(at))
                        }
                    });
                    for (acc, q) in acc.iter_mut().zip(&qs) {
                        let qd = _mm256_set1_ps(q[d]);
                        for (a, k) in acc.iter_mut().zip(&k) {
                            *a = _mm256_fmadd_ps(qd, *k, *a);
                        }
                    }
                }
                for (row, acc) in scores[pair..pair + ROWS].iter_mut().zip(&acc) {
                    for (v, a) in acc.iter().enumerate() {
                        // SAFETY: eight scores from `part + 8v`, inside the row of 64.
                        unsafe { _mm256_storeu_ps(row.as_mut_ptr().add(part + v * LANES), *a) };
                    }
                }
            }
        }
        // The running softmax: lanes past a row's own position are masked, and where a
        // row's highest score rises, what it summed before is rescaled.
        for (r, row) in scores.iter_mut().enumerate() {
            let own = (first + r).min(last);
            let visible = (own + 1).saturating_sub(start).min(CHUNK);
            let masks: [__m256; VECS] = std::array::from_fn(|v| {
                let left = _mm256_set1_epi32(visible as i32 - (v * LANES) as i32);
                _mm256_castsi256_ps(_mm256_cmpgt_epi32(left, lane))
            });
            let mut highest = _mm256_set1_ps(high[r]);
            for (s, m) in row.chunks_exact(LANES).zip(&masks) {
                // SAFETY: `s` is eight scores.
                let s = unsafe { _mm256_loadu_ps(s.as_ptr()) };
                let s = _mm256_blendv_ps(_mm256_set1_ps(f32::NEG_INFINITY), s, *m);
                highest = _mm256_max_ps(highest, s);
            }
            let new_high = lanes_max(highest);
            let rose = new_high > high[r];
            let new_high = if rose { new_high } else { high[r] };
            let mut sum = _mm256_setzero_ps();
            for (s, m) in row.chunks_exact_mut(LANES).zip(&masks) {
                // SAFETY: `s` is eight scores, replaced by their powers.
                unsafe {
                    let x = _mm256_sub_ps(_mm256_loadu_ps(s.as_ptr()), _mm256_set1_ps(new_high));
                    let p = _mm256_and_ps(exp(x), *m);
                    sum = _mm256_add_ps(sum, p);
                    _mm256_storeu_ps(s.as_mut_ptr(), p);
                }
            }
            // Where the highest did not rise, the rescaling would be by e⁰ = 1 exactly.
            if rose {
                let c = exp(_mm256_set1_ps(high[r] - new_high));
                total[r] = _mm256_fmadd_ps(total[r], c, sum);
                for s in sums[r].chunks_exact_mut(LANES) {
                    // SAFETY: `s` is eight sums.
                    unsafe {
                        _mm256_storeu_ps(
                            s.as_mut_ptr(),
                            _mm256_mul_ps(_mm256_loadu_ps(s.as_ptr()), c),
                        )
                    };
                }
            } else {
                total[r] = _mm256_add_ps(total[r], sum);
            }
            high[r] = new_high;
        }
        // The chunk's values, weighted by the powers, join the sums.
        let seen = (last + 1 - start).min(CHUNK);
        // SAFETY: positions `start..start + seen` are inside `values`.
        let vp = unsafe { values.as_ptr().add(start * HD) };
        for pair in (0..TILE).step_by(ROWS) {
            for part in (0..HD).step_by(STEP * LANES) {
                let mut acc: [[__m256; STEP]; ROWS] = std::array::from_fn(|r| {
                    // SAFETY: eight sums from `part + 8v`, inside the row of 64.
                    std::array::from_fn(|v| unsafe {
                        _mm256_loadu_ps(sums[pair + r].as_ptr().add(part + v * LANES))
                    })
                });
                for t in 0..seen {
                    // SAFETY: position `start + t`'s value row is inside `values`.
                    let v: [__m256; STEP] = std::array::from_fn(|v| unsafe {
                        _mm256_loadu_ps(vp.add(t * HD + part + v * LANES))
                    });
                    for (acc, powers) in acc.iter_mut().zip(&scores[pair..pair + ROWS]) {
                        let w = _mm256_set1_ps(powers[t]);
                        for (a, v) in acc.iter_mut().zip(&v) {
                            *a = _mm256_fmadd_ps(w, *v, *a);
                        }
                    }
                }
                for (row, acc) in sums[pair..pair + ROWS].iter_mut().zip(&acc) {
                    for (v, a) in acc.iter().enumerate() {
                        // SAFETY: as the loads above.
                        unsafe { _mm256_storeu_ps(row.as_mut_ptr().add(part + v * LANES), *a) };
                    }
                }
            }
        }
    }
    for ((out, sums), total) in out.chunks_exact_mut(HD).zip(&sums).zip(total) {
        let inv = 1.0 / lanes_sum(total);
        for (o, s) in out.iter_mut().zip(sums) {
            *o = s * inv;
        }
    }
}
