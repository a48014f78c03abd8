//! The int8 layers' kernel for CPUs with AVX2 but not AVX-512 VNNI.
//!
//! AVX2's byte product, `vpmaddubsw`, adds its two unsigned-by-signed products in
//! saturating 16 bits, which 2·255·127 overflows; so this kernel sums in `vpmaddwd`
//! instead, two 16-bit products into each 32-bit lane, over operands widened once: the
//! weights at load ([`widen`]: the same panels, each byte as 16 bits) and each input row
//! as it is rounded. A run of four inputs across a panel is then four 256-bit vectors,
//! each four columns × four inputs; `vpmaddwd` against the row's four inputs,
//! broadcast, leaves two partial sums per column, which are added pairwise once a tile's
//! runs are done. The sums are exact integers, the very ones of the VNNI kernel and the
//! portable loop, and are scaled by the portable loop's own function, so all three give
//! the same bits.
#![allow(unsafe_code)]

use std::arch::x86_64::*;

use super::{Int8Matrix, LANES, QUAD, RUN, TILE_COLS, TILE_PANELS, TILE_ROWS, Tile, scale_one};

/// Columns of one 256-bit vector of 32-bit sums, half a panel.
const HALF: usize = LANES / 2;

/// Whether this CPU runs this kernel.
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// The packed weights, each byte widened to 16 bits in place.
pub(super) fn widen(packed: &[i8]) -> Vec<i16> {
    packed.iter().map(|&q| i16::from(q)).collect()
}

/// The tile's sums, written (or added) to `out`, whose row stride is `m.n_out`; `x` is
/// the tile's [`TILE_ROWS`] input rows widened to 16 bits.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile(
    m: &Int8Matrix,
    tile: &Tile<'_>,
    x: &[i16],
    out: &mut [f32],
    accumulate: bool,
) {
    let runs = m.depth / QUAD;
    let first_col = tile.group * TILE_COLS;
    tile.check(m, x.len(), m.wide.len(), out.len());
    let x = x.as_ptr();
    for half in 0..2 * TILE_PANELS {
        let col = first_col + half * HALF;
        if col >= m.n_out {
            break;
        }
        // SAFETY: this half of panel `col / LANES` starts inside `wide`, which holds
        // `runs · RUN` values per panel (checked above).
        let weights = unsafe {
            m.wide
                .as_ptr()
                .add(col / LANES * runs * RUN + (half % 2) * HALF * QUAD)
        };
        let mut sums = [[_mm256_setzero_si256(); 2]; TILE_ROWS];
        for run in 0..runs {
            // SAFETY: each run's half panel is 2 × 16 values from `weights + run · RUN`,
            // and row `r`'s four inputs of the run lie at `x + r · depth + 4 · run`,
            // both inside the slices checked above.
            unsafe {
                let at = weights.add(run * RUN);
                let w = [
                    _mm256_loadu_si256(at.cast()),
                    _mm256_loadu_si256(at.add(HALF / 2 * QUAD).cast()),
                ];
                for (r, sums) in sums.iter_mut().enumerate() {
                    let four = x
                        .add(r * m.depth + run * QUAD)
                        .cast::<i64>()
                        .read_unaligned();
                    let v = _mm256_set1_epi64x(four);
                    for (s, w) in sums.iter_mut().zip(&w) {
                        *s = _mm256_add_epi32(*s, _mm256_madd_epi16(*w, v));
                    }
                }
            }
        }
        // SAFETY: `scales` and `sums` are padded to whole tiles (checked above), so
        // the 8 columns from `col` lie inside both.
        let (scales, col_sums) = unsafe {
            (
                _mm256_loadu_ps(m.scales.as_ptr().add(col)),
                _mm256_loadu_ps(m.sums.as_ptr().add(col)),
            )
        };
        for (r, [a, b]) in sums.iter().enumerate().take(tile.rows) {
            // Lanes of `a` are columns 0, 0, 1, 1 | 2, 2, 3, 3 and of `b` 4, 4, 5, 5 |
            // 6, 6, 7, 7: the pairwise sums come as 0, 1, 4, 5 | 2, 3, 6, 7.
            let s = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(*a, *b));
            let row = &mut out[r * m.n_out..(r + 1) * m.n_out];
            let (step, min) = (tile.steps[r], tile.mins[r]);
            if let Some(slots) = row.get_mut(col..col + HALF) {
                // `scale_one`'s operations in its order, 8 columns at once: the same
                // bits.
                let value = _mm256_mul_ps(
                    _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(s),
                        _mm256_set1_ps(step),
                        _mm256_mul_ps(_mm256_set1_ps(min), col_sums),
                    ),
                    scales,
                );
                let at = slots.as_mut_ptr();
                // SAFETY: `slots` holds the 8 floats read and written.
                unsafe {
                    let value = if accumulate {
                        _mm256_add_ps(_mm256_loadu_ps(at), value)
                    } else {
                        value
                    };
                    _mm256_storeu_ps(at, value);
                }
            } else {
                let mut lanes = [0i32; HALF];
                // SAFETY: `lanes` holds 8 integers.
                unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), s) };
                for (c, (slot, sum)) in row[col..].iter_mut().zip(lanes).enumerate() {
                    scale_one(m, sum, step, min, col + c, slot, accumulate);
                }
            }
        }
    }
}
