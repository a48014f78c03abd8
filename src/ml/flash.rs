//! Causal attention of a prompt's rows in one pass over the keys and values, on
//! AVX-512: a tile of query rows scores a chunk of [`CHUNK`] keys in registers, folds
//! the chunk into a running softmax (each row's highest score so far and its sum of
//! powers, rescaling what was summed before when the highest rises), and adds the
//! chunk's values weighted by those powers into the tile's sums. The scores never
//! leave the first-level cache, and no pass runs over a whole row of them.
//!
//! Keys come as the cache keeps them, widened to f32: blocks of [`KEY_BLOCK`]
//! positions, transposed (`[block][dim][position in block]`), so that one vector holds
//! one dimension of sixteen keys and a row's scores against them are one multiply-add
//! a dimension. Values come a position per row. Tiles are [`TILE`] rows of one query
//! head, and the tile's value sums stay in registers (`TILE × head_dim / 16` of them)
//! while a chunk's values are added.
#![allow(unsafe_code)]

/// Positions per key block: one vector of f32.
pub(super) const KEY_BLOCK: usize = 16;
/// Keys scored at a time by a tile: four vectors per row.
pub(super) const CHUNK: usize = 4 * KEY_BLOCK;
/// Query rows per tile.
const TILE: usize = 6;

/// Whether this CPU runs the kernel, for heads of width `hd`.
pub(super) fn available(hd: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        hd == 64 && std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = hd;
        false
    }
}

/// `out` (`q.len() / hd` rows of `hd`) = causal attention of the query rows `q` at
/// positions `first..` over the keys and values at positions `..first + rows`: row `i`
/// sees positions `..=first + i`. The queries come scaled already. `keys` and `values`
/// hold at least that many positions rounded up to whole chunks, in the layouts above.
///
/// # Panics
/// When [`available`] is false for `hd`, or a slice is shorter than the shapes say.
pub(super) fn attend(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    hd: usize,
    first: usize,
    out: &mut [f32],
) {
    assert!(
        available(hd),
        "no attention kernel for this CPU and head width"
    );
    let rows = q.len() / hd;
    let reach = (first + rows).div_ceil(CHUNK) * CHUNK * hd;
    assert!(
        q.len() == rows * hd
            && out.len() == q.len()
            && keys.len() >= reach
            && values.len() >= reach,
        "inconsistent attention operands"
    );
    #[cfg(target_arch = "x86_64")]
    for (t, (q, out)) in q
        .chunks(TILE * hd)
        .zip(out.chunks_mut(TILE * hd))
        .enumerate()
    {
        // SAFETY: AVX-512 F is present (`available`); the tile's rows and every
        // position it reads are inside the slices, checked above.
        unsafe { avx512::tile(q, keys, values, first + t * TILE, out) };
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{CHUNK, KEY_BLOCK, TILE};

    /// Head width the kernel is built for, and its vectors.
    const HD: usize = 64;
    const VECS: usize = HD / 16;
    /// Key blocks per chunk.
    const BLOCKS: usize = CHUNK / KEY_BLOCK;

    /// e^x for each lane, the polynomial of [`super::super::ops::exp`]; lanes at or
    /// below -87 give about 1.6e-38, so masked lanes must be zeroed after.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp(x: __m512) -> __m512 {
        // The constant first: where a lane is NaN, the second operand (the NaN) is kept,
        // so a NaN shows in the output as the scalar `exp` lets it.
        let x = _mm512_max_ps(
            _mm512_set1_ps(-87.0),
            _mm512_min_ps(_mm512_set1_ps(88.0), x),
        );
        let t = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
        let f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(std::f32::consts::LN_2));
        let mut p = _mm512_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    /// The largest of `x`'s lanes, in every lane, without leaving the vector unit.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn lanes_max(x: __m512) -> __m512 {
        // Halves of 256 bits, then quarters of 128, then pairs, then neighbours.
        let x = _mm512_max_ps(x, _mm512_shuffle_f32x4::<0b01_00_11_10>(x, x));
        let x = _mm512_max_ps(x, _mm512_shuffle_f32x4::<0b10_11_00_01>(x, x));
        let x = _mm512_max_ps(x, _mm512_permute_ps::<0b01_00_11_10>(x));
        _mm512_max_ps(x, _mm512_permute_ps::<0b10_11_00_01>(x))
    }

    /// One tile: the query rows `q` (at most [`TILE`] of [`HD`]) at positions
    /// `first..`, over the positions `..=first + rows - 1`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F; `keys` and `values` hold every position up to the last
    /// row's, rounded up to a whole chunk, `out` as many values as `q`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tile(
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        first: usize,
        out: &mut [f32],
    ) {
        let rows = q.len() / HD;
        debug_assert!((1..=TILE).contains(&rows) && out.len() == q.len());
        let last = first + rows - 1;
        // Short tiles repeat their last row, whose results are dropped.
        let row = |r: usize| r.min(rows - 1) * HD;
        // Each row's highest score so far in every lane, and its sums of powers lane
        // by lane (added across lanes at the end).
        let mut high = [_mm512_set1_ps(f32::NEG_INFINITY); TILE];
        let mut total = [_mm512_setzero_ps(); TILE];
        let mut sums = [[_mm512_setzero_ps(); VECS]; TILE];
        let mut powers = [[0f32; CHUNK]; TILE];
        let lane = _mm512_setr_ps(
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
        );
        let qp = q.as_ptr();
        for start in (0..=last).step_by(CHUNK) {
            // Scores of the tile's rows against the chunk's keys.
            let mut scores = [[_mm512_setzero_ps(); BLOCKS]; TILE];
            // SAFETY: the chunk's blocks end at `(start + CHUNK) · HD` values, inside
            // `keys` (the caller's bound); rows index inside `q`.
            unsafe {
                let kp = keys.as_ptr().add(start * HD);
                for d in 0..HD {
                    let mut k = [_mm512_setzero_ps(); BLOCKS];
                    for (b, k) in k.iter_mut().enumerate() {
                        *k = _mm512_loadu_ps(kp.add((b * HD + d) * KEY_BLOCK));
                    }
                    for (r, s) in scores.iter_mut().enumerate() {
                        let qd = _mm512_set1_ps(*qp.add(row(r) + d));
                        for (s, k) in s.iter_mut().zip(&k) {
                            *s = _mm512_fmadd_ps(qd, *k, *s);
                        }
                    }
                }
            }
            // The running softmax: lanes past a row's own position are masked.
            let mut rescale = [_mm512_setzero_ps(); TILE];
            for r in 0..TILE {
                let own = (first + r).min(last);
                let mut visible = [0u16; BLOCKS];
                let mut highest = high[r];
                for (b, v) in visible.iter_mut().enumerate() {
                    let seen = own as f32 - (start + b * KEY_BLOCK) as f32;
                    *v = _mm512_cmp_ps_mask::<_CMP_LE_OQ>(lane, _mm512_set1_ps(seen));
                    highest = _mm512_mask_max_ps(highest, *v, highest, scores[r][b]);
                }
                let new_high = lanes_max(highest);
                let mut sum = _mm512_setzero_ps();
                for (b, v) in visible.iter().enumerate() {
                    let p = exp(_mm512_sub_ps(scores[r][b], new_high));
                    let p = _mm512_maskz_mov_ps(*v, p);
                    sum = _mm512_add_ps(sum, p);
                    // SAFETY: a block's sixteen powers fit its place in the row.
                    unsafe { _mm512_storeu_ps(powers[r].as_mut_ptr().add(b * KEY_BLOCK), p) };
                }
                rescale[r] = exp(_mm512_sub_ps(high[r], new_high));
                total[r] = _mm512_fmadd_ps(total[r], rescale[r], sum);
                high[r] = new_high;
            }
            // The chunk's values, weighted, join the sums.
            for (s, c) in sums.iter_mut().zip(rescale) {
                for s in s.iter_mut() {
                    *s = _mm512_mul_ps(*s, c);
                }
            }
            let seen = (last + 1 - start).min(CHUNK);
            // SAFETY: positions `start..start + seen` are inside `values`.
            unsafe {
                let vp = values.as_ptr().add(start * HD);
                for t in 0..seen {
                    let mut v = [_mm512_setzero_ps(); VECS];
                    for (c, v) in v.iter_mut().enumerate() {
                        *v = _mm512_loadu_ps(vp.add(t * HD + c * 16));
                    }
                    for (s, p) in sums.iter_mut().zip(&powers) {
                        let w = _mm512_set1_ps(p[t]);
                        for (s, v) in s.iter_mut().zip(&v) {
                            *s = _mm512_fmadd_ps(w, *v, *s);
                        }
                    }
                }
            }
        }
        for (r, out) in out.chunks_exact_mut(HD).enumerate() {
            let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(total[r]));
            for (c, o) in out.chunks_exact_mut(16).enumerate() {
                // SAFETY: `o` is sixteen values.
                unsafe { _mm512_storeu_ps(o.as_mut_ptr(), _mm512_mul_ps(sums[r][c], inv)) };
            }
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Values spread evenly over `±spread / 2`, the same for the same seed.
    pub(in crate::ml) fn noise(mut seed: u64, spread: f32) -> impl FnMut() -> f32 {
        move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * spread
        }
    }

    /// Plain causal attention in f64, from keys a position per row.
    fn reference(q: &[f32], keys: &[Vec<f32>], values: &[Vec<f32>], first: usize) -> Vec<f32> {
        let hd = keys[0].len();
        let mut out = Vec::new();
        for (i, q) in q.chunks_exact(hd).enumerate() {
            let seen = first + i + 1;
            let scores: Vec<f64> = keys[..seen]
                .iter()
                .map(|k| k.iter().zip(q).map(|(a, b)| f64::from(a * b)).sum())
                .collect();
            let high = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let powers: Vec<f64> = scores.iter().map(|s| (s - high).exp()).collect();
            let total: f64 = powers.iter().sum();
            for d in 0..hd {
                let v: f64 = powers
                    .iter()
                    .zip(values)
                    .map(|(p, v)| p * f64::from(v[d]))
                    .sum();
                out.push((v / total) as f32);
            }
        }
        out
    }

    #[test]
    fn matches_plain_attention_at_every_offset() {
        let hd = 64;
        if !available(hd) {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        }
        let mut next = noise(7, 4.0);
        let positions = 3 * CHUNK;
        let keys: Vec<Vec<f32>> = (0..positions)
            .map(|_| (0..hd).map(|_| next()).collect())
            .collect();
        let values: Vec<Vec<f32>> = (0..positions)
            .map(|_| (0..hd).map(|_| next()).collect())
            .collect();
        // The cache's layouts: blocks of keys transposed, values a position per row.
        let mut blocked = vec![0.0; positions * hd];
        for (p, k) in keys.iter().enumerate() {
            for (d, k) in k.iter().enumerate() {
                blocked[((p / KEY_BLOCK) * hd + d) * KEY_BLOCK + p % KEY_BLOCK] = *k;
            }
        }
        let rows_flat: Vec<f32> = values.concat();
        for (first, rows) in [
            (0, 1),
            (0, 7),
            (0, 64),
            (5, 13),
            (63, 2),
            (70, 50),
            (100, 92),
        ] {
            let q: Vec<f32> = (0..rows * hd).map(|_| next()).collect();
            let mut got = vec![0.0; q.len()];
            attend(&q, &blocked, &rows_flat, hd, first, &mut got);
            let want = reference(&q, &keys, &values, first);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() < 1e-4,
                    "first {first}, rows {rows}, at {i}: {g} vs {w}"
                );
            }
        }
    }
}
