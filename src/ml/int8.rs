//! Dense layers in 8-bit integers, for the embedder's optional int8 path.
//!
//! Weights are rounded once, at load, to signed bytes with one scale per output column
//! (`w ≈ s_w · q`, `|q| ≤ 127`). Each product rounds its input rows to unsigned bytes
//! spanning the row's own range (`x ≈ m + e · u`, `u` in `0..=255`), the operand order
//! of AVX-512 VNNI's `vpdpbusd` (four unsigned-by-signed byte products added into each
//! 32-bit lane). An output is then `s_w · (e · Σ u·q + m · Σ q)`; `Σ q` per column is
//! known at load.
//!
//! A few input channels of a transformer carry values ten times the others', so one
//! scale per row would leave the rest of the row a handful of levels. Given each
//! channel's largest input seen on sample text, the layer moves half of that spread
//! into the weights (SmoothQuant): channel `k`'s inputs are divided by
//! `f_k = √(max|x_k| / max|w_k|)` as they are rounded and its weights multiplied by it,
//! which leaves the product as it was and both sides' ranges even.
//!
//! The weights are stored in panels of 16 columns. Within a panel, each run of four
//! inputs is 64 bytes: the four weights of column 0, then of column 1, and so on, which
//! is exactly one `vpdpbusd` operand. The kernel keeps a tile of 6 rows × 4 panels (64
//! columns) of sums in 24 registers, broadcasting four input bytes of a row at a time.
//! On CPUs with AMX-INT8, a product of at least [`amx::ROWS`] rows runs on the tiles
//! instead ([`amx::sums_i8`]: the panels are already in the layout `tdpbusd` reads),
//! 32 rows at a time, and the same vector code turns the integer sums into outputs.
//! Rows are split over rayon's threads. CPUs with AVX2 but not AVX-512 VNNI sum the
//! same tiles in 16-bit operands ([`avx2`]), and other CPUs in a portable loop; both
//! compute the very same integer sums.
#![allow(unsafe_code)]

use rayon::prelude::*;

use super::amx;

/// Columns of a panel: one 512-bit vector of 32-bit sums.
const LANES: usize = 16;
/// Inputs summed into each 32-bit lane by one `vpdpbusd`.
const QUAD: usize = 4;
/// Bytes of one run of four inputs across a panel.
const RUN: usize = LANES * QUAD;
/// Rows of the kernel's tile of sums.
const TILE_ROWS: usize = 6;
/// Panels of the kernel's tile of sums.
const TILE_PANELS: usize = 4;
/// Columns of the kernel's tile.
const TILE_COLS: usize = LANES * TILE_PANELS;
/// Largest magnitude of a rounded weight.
const LIMIT: f32 = 127.0;
/// Steps between a row's smallest and largest rounded input.
const STEPS: f32 = 255.0;

#[cfg(target_arch = "x86_64")]
mod avx2;

/// The kernels that sum a tile, all giving the same bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// AVX-512 VNNI: `vpdpbusd` on the bytes as they are.
    Vnni,
    /// AVX2: `vpmaddwd` on operands widened to 16 bits ([`avx2`]).
    Avx2,
    /// One weight at a time.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if vnni() {
                return Kernel::Vnni;
            }
            if avx2::available() {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }
}

/// Whether this CPU runs the AVX-512 VNNI kernel.
pub fn vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A dense layer's weights in signed bytes, `n_in × n_out`.
pub(super) struct Int8Matrix {
    n_in: usize,
    /// Per input channel: `1 / f_k`, applied to the input as it is rounded.
    smoothing: Vec<f32>,
    n_out: usize,
    /// `n_in` rounded up to whole runs of four.
    depth: usize,
    /// Panels of [`LANES`] columns, rounded up to whole tiles of [`TILE_PANELS`];
    /// padding is zero.
    packed: Vec<i8>,
    /// Per column (padded as `packed`): the weights' scale.
    scales: Vec<f32>,
    /// Per column (padded as `packed`): `Σ q`, which each input row's minimum multiplies.
    sums: Vec<f32>,
    /// `packed` widened to 16 bits, for the AVX2 kernel; empty where another runs.
    wide: Vec<i16>,
}

impl Int8Matrix {
    /// Rounds weights stored input-major (`w[i · n_out + j]`), smoothed against
    /// `ranges`, the largest magnitude seen on each input channel (empty: no smoothing).
    pub(super) fn quantize(
        w: &[f32],
        n_in: usize,
        n_out: usize,
        ranges: &[f32],
    ) -> Result<Self, String> {
        if n_in == 0 || n_out == 0 || w.len() != n_in * n_out {
            return Err(format!(
                "{} weights do not make a {n_in} × {n_out} matrix",
                w.len()
            ));
        }
        if !ranges.is_empty() && ranges.len() != n_in {
            return Err(format!("{} input ranges for {n_in} inputs", ranges.len()));
        }
        let factors: Vec<f32> = (0..n_in)
            .map(|i| {
                let x = ranges.get(i).copied().unwrap_or(0.0);
                let row = &w[i * n_out..(i + 1) * n_out];
                let wmax = row.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                let f = (x / wmax).sqrt();
                if f.is_finite() && f > 0.0 { f } else { 1.0 }
            })
            .collect();
        // Weight `i, j` as rounded: smoothed by its input channel's factor.
        let smoothed = |i: usize, j: usize| w[i * n_out + j] * factors[i];
        let depth = n_in.next_multiple_of(QUAD);
        let panels = n_out.div_ceil(TILE_COLS) * TILE_PANELS;
        let cols = panels * LANES;
        let mut scales = vec![0.0f32; cols];
        for (j, scale) in scales.iter_mut().enumerate().take(n_out) {
            let amax = (0..n_in).fold(0.0f32, |a, i| a.max(smoothed(i, j).abs()));
            *scale = amax / LIMIT;
        }
        let mut packed = vec![0i8; panels * (depth / QUAD) * RUN];
        let mut sums = vec![0.0f32; cols];
        for j in 0..n_out {
            let inverse = if scales[j] > 0.0 {
                1.0 / scales[j]
            } else {
                0.0
            };
            let (panel, lane) = (j / LANES, j % LANES);
            for i in 0..n_in {
                let q = (smoothed(i, j) * inverse).round().clamp(-LIMIT, LIMIT) as i8;
                let at = (panel * (depth / QUAD) + i / QUAD) * RUN + lane * QUAD + i % QUAD;
                packed[at] = q;
                sums[j] += f32::from(q);
            }
        }
        #[cfg(target_arch = "x86_64")]
        let wide = match Kernel::detect() {
            Kernel::Avx2 => avx2::widen(&packed),
            _ => Vec::new(),
        };
        #[cfg(not(target_arch = "x86_64"))]
        let wide = Vec::new();
        Ok(Self {
            n_in,
            smoothing: factors.iter().map(|f| 1.0 / f).collect(),
            n_out,
            depth,
            packed,
            scales,
            sums,
            wide,
        })
    }

    /// `dst[rows × n_out] = (dst if accumulate) + src[rows × n_in] · W`; `src` is
    /// rounded into `x`, which is kept from one product to the next.
    pub(super) fn product(
        &self,
        dst: &mut [f32],
        src: &[f32],
        rows: usize,
        accumulate: bool,
        x: &mut Int8Rows,
    ) -> Result<(), String> {
        if src.len() < rows * self.n_in || dst.len() < rows * self.n_out {
            return Err(format!(
                "int8 product does not fit: {rows} rows of {} into {} outputs, weights {} × {}",
                src.len(),
                dst.len(),
                self.n_in,
                self.n_out
            ));
        }
        if rows == 0 {
            return Ok(());
        }
        let tiles =
            rows >= amx::ROWS && self.depth.is_multiple_of(amx::I8_STEP) && amx::int8_available();
        let pad = if tiles { amx::ROWS } else { TILE_ROWS };
        let kernel = match Kernel::detect() {
            Kernel::Avx2 if self.wide.is_empty() => Kernel::Portable,
            kernel => kernel,
        };
        x.quantize(
            &src[..rows * self.n_in],
            rows,
            self.n_in,
            &self.smoothing,
            pad,
        );
        if kernel == Kernel::Avx2 {
            x.widen();
        }
        let x = &*x;
        let dst = &mut dst[..rows * self.n_out];
        #[cfg(target_arch = "x86_64")]
        if tiles {
            self.product_on_tiles(dst, x, accumulate);
            return Ok(());
        }
        // Enough tasks for every thread, each a whole number of tiles.
        let tasks = rayon::current_num_threads() * 4;
        let per_task = rows
            .div_ceil(tasks)
            .next_multiple_of(TILE_ROWS)
            .clamp(TILE_ROWS, 8 * TILE_ROWS);
        dst.par_chunks_mut(per_task * self.n_out)
            .enumerate()
            .for_each(|(t, out)| {
                let first = t * per_task;
                let rows = out.len() / self.n_out;
                for group in 0..self.scales.len() / TILE_COLS {
                    for start in (0..rows).step_by(TILE_ROWS) {
                        let tile = Tile {
                            x: &x.values[(first + start) * self.depth..][..TILE_ROWS * self.depth],
                            steps: &x.steps[first + start..][..TILE_ROWS],
                            mins: &x.mins[first + start..][..TILE_ROWS],
                            group,
                            rows: (rows - start).min(TILE_ROWS),
                        };
                        let out = &mut out[start * self.n_out..];
                        match kernel {
                            #[cfg(target_arch = "x86_64")]
                            // SAFETY: `vnni()` found AVX-512 F, BW and VNNI on this CPU;
                            // the kernel checks every length it relies on.
                            Kernel::Vnni => unsafe { avx512::tile(self, &tile, out, accumulate) },
                            #[cfg(target_arch = "x86_64")]
                            Kernel::Avx2 => {
                                let x = &x.wide[(first + start) * self.depth..];
                                // SAFETY: `Kernel::detect` found AVX2 and FMA on this
                                // CPU; the kernel checks every length it relies on.
                                unsafe { avx2::tile(self, &tile, x, out, accumulate) };
                            }
                            _ => portable_tile(self, &tile, out, accumulate),
                        }
                    }
                }
            });
        Ok(())
    }
}

impl Int8Matrix {
    /// [`Self::product`] on AMX tiles, 32 rows a task: the tiles' integer sums, a
    /// pair of panels at a time, scaled into `dst` as the vector kernel scales its own.
    #[cfg(target_arch = "x86_64")]
    fn product_on_tiles(&self, dst: &mut [f32], x: &Int8Rows, accumulate: bool) {
        let panels = self.scales.len() / LANES;
        dst.par_chunks_mut(amx::ROWS * self.n_out)
            .enumerate()
            .for_each(|(t, out)| {
                let first = t * amx::ROWS;
                let rows = &x.values[first * self.depth..][..amx::ROWS * self.depth];
                let (steps, mins) = (&x.steps[first..], &x.mins[first..]);
                amx::sums_i8(rows, self.depth, &self.packed, panels, |panel, sums| {
                    // SAFETY: `amx::int8_available` found AVX-512 F and BW on this CPU;
                    // the function checks every length it relies on.
                    unsafe { avx512::scale_pair(self, sums, panel, steps, mins, out, accumulate) };
                });
            });
    }
}

/// Input rows rounded to bytes: reused from one product to the next.
#[derive(Default)]
pub(super) struct Int8Rows {
    /// `depth` bytes per row, rows padded to whole tiles.
    values: Vec<u8>,
    /// Per row (padded as `values`): the step `e` between levels.
    steps: Vec<f32>,
    /// Per row (padded as `values`): the minimum `m`, level 0.
    mins: Vec<f32>,
    /// `values` widened to 16 bits, for the AVX2 kernel.
    wide: Vec<i16>,
}

impl Int8Rows {
    /// Rounds `rows` rows of `n_in` values (row-major), each channel multiplied by its
    /// `smoothing`, to 256 levels spanning the row; zero rows pad them to a multiple of
    /// `pad`.
    fn quantize(&mut self, x: &[f32], rows: usize, n_in: usize, smoothing: &[f32], pad: usize) {
        assert!(
            x.len() == rows * n_in && smoothing.len() == n_in,
            "input of the wrong size"
        );
        let depth = n_in.next_multiple_of(QUAD);
        let padded = rows.next_multiple_of(pad);
        // The real rows are written whole below (each row's bytes past `n_in` zeroed
        // there), so only the padding rows are cleared here, not the whole buffer.
        self.values.resize(padded * depth, 0);
        self.values[rows * depth..].fill(0);
        self.steps.resize(padded, 0.0);
        self.steps[rows..].fill(0.0);
        self.mins.resize(padded, 0.0);
        self.mins[rows..].fill(0.0);
        self.values
            .par_chunks_mut(depth)
            .zip(self.steps.par_iter_mut().zip(self.mins.par_iter_mut()))
            .zip(x.par_chunks(n_in.max(1)))
            .for_each(|((q, (step, min)), x)| {
                q[n_in..].fill(0);
                let (lo, hi) = smoothed_range(x, smoothing);
                *min = lo;
                *step = (hi - lo) / STEPS;
                let inverse = if hi > lo { STEPS / (hi - lo) } else { 0.0 };
                for ((q, v), f) in q.iter_mut().zip(x).zip(smoothing) {
                    *q = level((v * f - lo) * inverse);
                }
            });
    }

    /// Copies the rounded rows into `wide`, a value in 16 bits, spread over rayon's
    /// threads.
    fn widen(&mut self) {
        const PART: usize = 1 << 14;
        self.wide.resize(self.values.len(), 0);
        let parts = self
            .wide
            .par_chunks_mut(PART)
            .zip(self.values.par_chunks(PART));
        parts.for_each(|(wide, values)| {
            for (w, &v) in wide.iter_mut().zip(values) {
                *w = i16::from(v);
            }
        });
    }
}

/// The smallest and largest of `x[i] · smoothing[i]`, NaNs skipped; (∞, -∞) if none.
/// Eight running minima and maxima, merged at the end, so that the loop vectorises
/// (`f32::min` in one fold does not); the extremes are the same values either way.
/// Each bound is `f32::min`/`max` of itself and the value, which compiles to a min, a
/// max and a blend a vector; written as `if v < lo { v } else { lo }` (the same
/// result, a NaN never replacing a bound) LLVM turned the loop into a chain of lane
/// shuffles five times as slow, and a fifth of the int8 pass on AVX-512.
fn smoothed_range(x: &[f32], smoothing: &[f32]) -> (f32, f32) {
    const WAYS: usize = 8;
    let mut lo = [f32::INFINITY; WAYS];
    let mut hi = [f32::NEG_INFINITY; WAYS];
    let (mut xs, mut fs) = (x.chunks_exact(WAYS), smoothing.chunks_exact(WAYS));
    for (x, f) in (&mut xs).zip(&mut fs) {
        for i in 0..WAYS {
            let v = x[i] * f[i];
            // A NaN never replaces a bound: `min` and `max` return the other operand.
            lo[i] = lo[i].min(v);
            hi[i] = hi[i].max(v);
        }
    }
    let tail = xs
        .remainder()
        .iter()
        .zip(fs.remainder())
        .map(|(v, f)| v * f);
    let (lo, hi) = (
        lo.into_iter().fold(f32::INFINITY, f32::min),
        hi.into_iter().fold(f32::NEG_INFINITY, f32::max),
    );
    tail.fold((lo, hi), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// `y` rounded half away from zero and clamped to `0..=STEPS`, as a byte; NaN gives 0.
/// The same as `y.round().clamp(0.0, STEPS) as u8`, in operations that vectorise:
/// `y - trunc(y)` is exact below 2²³, where every positive tie rounds up, and above
/// it `y` is a whole number; a whole number up to 255 plus 2²³ holds itself in the
/// low bits of its mantissa.
#[inline(always)]
fn level(y: f32) -> u8 {
    let t = y.trunc();
    let r = if y - t >= 0.5 { t + 1.0 } else { t };
    let r = if r > 0.0 { r.min(STEPS) } else { 0.0 };
    (r + 8_388_608.0).to_bits() as u8
}

/// One tile's operands: [`TILE_ROWS`] input rows (the last ones may be padding) and the
/// group of [`TILE_PANELS`] panels it covers.
struct Tile<'a> {
    x: &'a [u8],
    steps: &'a [f32],
    mins: &'a [f32],
    group: usize,
    /// Rows to write, at most [`TILE_ROWS`].
    rows: usize,
}

impl Tile<'_> {
    /// Panics unless the tile's rows lie inside an input of `x` values (of `m.depth`
    /// each), its panels inside `weights` values (of `m`'s layout), and its rows inside
    /// an output of `out` values, as the kernels' loads and stores need.
    fn check(&self, m: &Int8Matrix, x: usize, weights: usize, out: usize) {
        let first_col = self.group * TILE_COLS;
        assert!(
            x >= TILE_ROWS * m.depth
                && self.steps.len() >= TILE_ROWS
                && self.mins.len() >= TILE_ROWS
                && (1..=TILE_ROWS).contains(&self.rows)
                && weights >= (first_col / LANES + TILE_PANELS) * (m.depth / QUAD) * RUN
                && m.scales.len() >= first_col + TILE_COLS
                && m.sums.len() >= first_col + TILE_COLS
                && first_col < m.n_out
                && out >= self.rows * m.n_out,
            "inconsistent operands"
        );
    }
}

/// The kernel's sums, one weight at a time.
fn portable_tile(m: &Int8Matrix, tile: &Tile<'_>, out: &mut [f32], accumulate: bool) {
    let runs = m.depth / QUAD;
    for r in 0..tile.rows {
        let x = &tile.x[r * m.depth..(r + 1) * m.depth];
        for col in tile.group * TILE_COLS..((tile.group + 1) * TILE_COLS).min(m.n_out) {
            let panel = &m.packed[col / LANES * runs * RUN..][..runs * RUN];
            let lane = col % LANES;
            let mut sum = 0i32;
            for (run, xs) in panel.chunks_exact(RUN).zip(x.chunks_exact(QUAD)) {
                for (w, v) in run[lane * QUAD..][..QUAD].iter().zip(xs) {
                    sum += i32::from(*w) * i32::from(*v);
                }
            }
            let slot = &mut out[r * m.n_out + col];
            scale_one(m, sum, tile.steps[r], tile.mins[r], col, slot, accumulate);
        }
    }
}

/// Output column `col` of a row from its integer sum and the row's rounding (`step`,
/// `min`): `s_w · (e · sum + m · Σ q)`, written to `slot` or added to it.
fn scale_one(
    m: &Int8Matrix,
    sum: i32,
    step: f32,
    min: f32,
    col: usize,
    slot: &mut f32,
    accumulate: bool,
) {
    let value = (sum as f32).mul_add(step, min * m.sums[col]) * m.scales[col];
    *slot = if accumulate { *slot + value } else { value };
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Int8Matrix, LANES, QUAD, RUN, TILE_COLS, TILE_PANELS, TILE_ROWS, Tile, amx};

    /// The tile's sums, written (or added) to `out`, whose row stride is `m.n_out`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn tile(m: &Int8Matrix, tile: &Tile<'_>, out: &mut [f32], accumulate: bool) {
        let runs = m.depth / QUAD;
        let first_col = tile.group * TILE_COLS;
        tile.check(m, tile.x.len(), m.packed.len(), out.len());
        let mut sums = [[_mm512_setzero_si512(); TILE_PANELS]; TILE_ROWS];
        // SAFETY: the group's first panel is inside `packed`, checked above.
        let panels = unsafe { m.packed.as_ptr().add(first_col / LANES * runs * RUN) };
        let x = tile.x.as_ptr();
        for run in 0..runs {
            // SAFETY: panel `p` of the group holds `runs · RUN` bytes from
            // `panels + p · runs · RUN`, and row `r`'s input `depth` bytes from
            // `x + r · depth`; both were checked above.
            unsafe {
                let mut w = [_mm512_setzero_si512(); TILE_PANELS];
                for (p, w) in w.iter_mut().enumerate() {
                    *w = _mm512_loadu_si512(panels.add((p * runs + run) * RUN).cast());
                }
                for (r, sums) in sums.iter_mut().enumerate() {
                    let four = x
                        .add(r * m.depth + run * QUAD)
                        .cast::<i32>()
                        .read_unaligned();
                    let v = _mm512_set1_epi32(four);
                    for (s, w) in sums.iter_mut().zip(&w) {
                        *s = _mm512_dpbusd_epi32(*s, v, *w);
                    }
                }
            }
        }
        for (r, sums) in sums.iter().enumerate().take(tile.rows) {
            let row = &mut out[r * m.n_out..(r + 1) * m.n_out];
            for (p, s) in sums.iter().enumerate() {
                let col = first_col + p * LANES;
                if col >= m.n_out {
                    break;
                }
                scale(m, *s, tile.steps[r], tile.mins[r], col, row, accumulate);
            }
        }
    }

    /// Rows `0..out.len() / n_out` of one pair of panels' sums (from `panel`, see
    /// [`amx::sums_i8`]), scaled into `out` (or added to it) as [`tile`] does with its
    /// registers.
    ///
    /// # Safety
    /// The CPU has AVX-512 F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn scale_pair(
        m: &Int8Matrix,
        sums: &amx::PairSums,
        panel: usize,
        steps: &[f32],
        mins: &[f32],
        out: &mut [f32],
        accumulate: bool,
    ) {
        let rows = out.len() / m.n_out;
        assert!(
            rows <= amx::ROWS && steps.len() >= rows && mins.len() >= rows,
            "inconsistent operands"
        );
        for (r, row) in out.chunks_exact_mut(m.n_out).enumerate() {
            for p in 0..2 {
                let col = (panel + p) * LANES;
                if col >= m.n_out {
                    break;
                }
                // SAFETY: lanes `16·p..16·p + 16` of row `r < 32` lie inside `sums`.
                let s = unsafe {
                    _mm512_loadu_si512(sums.as_ptr().add(r * 2 * LANES + p * LANES).cast())
                };
                scale(m, s, steps[r], mins[r], col, row, accumulate);
            }
        }
    }

    /// Columns `col..col + 16` of one output `row` (those below `n_out`) from their
    /// integer sums `s` and the row's rounding (`step`, `min`): `s_w · (e · s + m · Σ q)`,
    /// written or added.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn scale(
        m: &Int8Matrix,
        s: __m512i,
        step: f32,
        min: f32,
        col: usize,
        row: &mut [f32],
        accumulate: bool,
    ) {
        assert!(
            col < m.n_out
                && row.len() == m.n_out
                && m.scales.len() >= col + LANES
                && m.sums.len() >= col + LANES,
            "inconsistent operands"
        );
        let mask: __mmask16 = if m.n_out - col >= LANES {
            u16::MAX
        } else {
            (1u16 << (m.n_out - col)) - 1
        };
        // SAFETY: columns `col..col + 16` are inside the padded scales and sums; the
        // row is touched only under `mask`, whose lanes are below `n_out` (checked
        // above).
        unsafe {
            let sums = _mm512_mul_ps(
                _mm512_set1_ps(min),
                _mm512_loadu_ps(m.sums.as_ptr().add(col)),
            );
            let scale = _mm512_loadu_ps(m.scales.as_ptr().add(col));
            let v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_set1_ps(step), sums);
            let mut v = _mm512_mul_ps(v, scale);
            let at = row.as_mut_ptr().add(col);
            if accumulate {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, at));
            }
            _mm512_mask_storeu_ps(at, mask, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::gemm::naive;
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((((i * 7919 + seed * 104_729) % 2003) as f32) - 1001.0) / 500.0)
            .collect()
    }

    /// Worst error of `m`'s product over the f32 one, relative to `Σ|x|·max|w|` per row.
    fn worst_error(m: &Int8Matrix, x: &[f32], w: &[f32], shape: (usize, usize, usize)) -> f32 {
        let (rows, n_in, n_out) = shape;
        let want = naive(x, w, rows, n_out, n_in);
        let mut got = vec![0.0; rows * n_out];
        m.product(&mut got, x, rows, false, &mut Int8Rows::default())
            .unwrap();
        let wmax = w.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        let mut worst = 0.0f32;
        for r in 0..rows {
            let size: f32 = x[r * n_in..(r + 1) * n_in]
                .iter()
                .map(|v| v.abs())
                .sum::<f32>()
                * wmax;
            for j in 0..n_out {
                worst = worst.max((got[r * n_out + j] - want[r * n_out + j]).abs() / size);
            }
        }
        worst
    }

    /// Odd shapes: a partial run of four inputs, a partial panel and tile of columns,
    /// a partial tile of rows, more rows than one task; added onto the output or not.
    #[test]
    fn product_matches_f32_within_the_rounding() {
        for (rows, n_in, n_out) in [(1, 5, 3), (7, 37, 70), (61, 130, 129)] {
            let w = values(n_in * n_out, 1);
            let x = values(rows * n_in, 2);
            let m = Int8Matrix::quantize(&w, n_in, n_out, &[]).unwrap();
            let worst = worst_error(&m, &x, &w, (rows, n_in, n_out));
            assert!(worst < 0.01, "{rows}×{n_in}×{n_out}: {worst}");
            let mut once = vec![0.0; rows * n_out];
            let mut rounded = Int8Rows::default();
            m.product(&mut once, &x, rows, false, &mut rounded).unwrap();
            let mut added = vec![1.0; rows * n_out];
            m.product(&mut added, &x, rows, true, &mut rounded).unwrap();
            for (a, g) in added.iter().zip(&once) {
                assert!(
                    (a - 1.0 - g).abs() <= 1e-4 * (1.0 + g.abs()),
                    "accumulated {a} vs {g}"
                );
            }
        }
    }

    /// An input channel forty times the others' costs the rest of the row its levels;
    /// smoothing against the channels' ranges wins them back (the error's root mean
    /// square falls by about half here).
    #[test]
    fn smoothing_takes_an_outlier_channel_off_the_rounding() {
        let (rows, n_in, n_out) = (12, 64, 48);
        let w = values(n_in * n_out, 5);
        let mut x = values(rows * n_in, 6);
        for row in x.chunks_exact_mut(n_in) {
            row[3] *= 40.0;
        }
        let mut ranges = vec![0.0f32; n_in];
        for row in x.chunks_exact(n_in) {
            for (r, v) in ranges.iter_mut().zip(row) {
                *r = r.max(v.abs());
            }
        }
        let plain = Int8Matrix::quantize(&w, n_in, n_out, &[]).unwrap();
        let smoothed = Int8Matrix::quantize(&w, n_in, n_out, &ranges).unwrap();
        let want = naive(&x, &w, rows, n_out, n_in);
        let rms_error = |m: &Int8Matrix| {
            let mut got = vec![0.0; rows * n_out];
            m.product(&mut got, &x, rows, false, &mut Int8Rows::default())
                .unwrap();
            let squares: f32 = got.iter().zip(&want).map(|(a, b)| (a - b) * (a - b)).sum();
            (squares / got.len() as f32).sqrt()
        };
        let (before, after) = (rms_error(&plain), rms_error(&smoothed));
        assert!(after < before / 1.5, "smoothed {after}, plain {before}");
        assert!(Int8Matrix::quantize(&w, n_in, n_out, &ranges[1..]).is_err());
    }

    /// The AVX-512 VNNI kernel gives exactly the portable loop's outputs, tile by tile
    /// (a partial last panel, a partial tile of rows, added onto the output).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_vnni_kernel_agrees_with_the_portable_loop() {
        if !vnni() {
            eprintln!("skipped: this CPU lacks AVX-512 VNNI");
            return;
        }
        let (rows, n_in, n_out) = (13, 70, 150);
        let (m, x, mut rounded) = case((rows, n_in, n_out), 3, TILE_ROWS);
        let slow = by_tiles(&m, &rounded, rows, |_, tile, out| {
            portable_tile(&m, tile, out, true)
        });
        // SAFETY: `vnni()` found the features; the operands are a product's own.
        let fast = by_tiles(&m, &rounded, rows, |_, tile, out| unsafe {
            avx512::tile(&m, tile, out, true)
        });
        assert_eq!(fast, slow);
        // And the whole product runs that kernel.
        let mut whole = vec![0.5; rows * n_out];
        m.product(&mut whole, &x, rows, true, &mut rounded).unwrap();
        assert_eq!(whole, fast);
    }

    /// The AVX2 kernel gives exactly the portable loop's outputs, tile by tile (a
    /// partial last panel and half panel, a partial tile of rows, a partial run of
    /// four inputs, added onto the output); where it is this CPU's kernel, the whole
    /// product runs it.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_kernel_agrees_with_the_portable_loop() {
        if !avx2::available() {
            eprintln!("skipped: this CPU lacks AVX2");
            return;
        }
        for (rows, n_in, n_out) in [(13, 70, 150), (7, 384, 92)] {
            let (mut m, x, mut rounded) = case((rows, n_in, n_out), 4, TILE_ROWS);
            if m.wide.is_empty() {
                m.wide = avx2::widen(&m.packed);
            }
            assert_eq!(m.wide.len(), m.packed.len());
            rounded.widen();
            let slow = by_tiles(&m, &rounded, rows, |_, tile, out| {
                portable_tile(&m, tile, out, true)
            });
            let fast = by_tiles(&m, &rounded, rows, |start, tile, out| {
                let x = &rounded.wide[start * m.depth..];
                // SAFETY: `avx2::available()` found the features; the operands are a
                // product's own.
                unsafe { avx2::tile(&m, tile, x, out, true) }
            });
            assert_eq!(fast, slow, "{rows}×{n_in}×{n_out}");
            if Kernel::detect() == Kernel::Avx2 {
                let mut whole = vec![0.5; rows * n_out];
                m.product(&mut whole, &x, rows, true, &mut rounded).unwrap();
                assert_eq!(whole, fast, "{rows}×{n_in}×{n_out}, whole product");
            }
        }
    }

    #[test]
    fn reused_rows_hold_no_bytes_of_the_last_product() {
        let smoothing = vec![1.0f32; 70];
        let mut rows = Int8Rows::default();
        // Many wider rows first, with bytes where the next product's padding falls.
        let big: Vec<f32> = (0..17 * 72).map(|i| (i % 5) as f32 + 100.0).collect();
        rows.quantize(&big, 17, 72, &[1.0; 72], 6);
        assert!(rows.values.chunks(72).take(17).any(|r| r[70..] != [0, 0]));
        assert_eq!(rows.values.len(), 18 * 72);
        let mut fresh = Int8Rows::default();
        let small = values(5 * 70, 3);
        rows.quantize(&small, 5, 70, &smoothing, 6);
        fresh.quantize(&small, 5, 70, &smoothing, 6);
        assert_eq!(rows.values, fresh.values);
        assert_eq!(rows.steps, fresh.steps);
        assert_eq!(rows.mins, fresh.mins);
        assert_eq!(rows.values.len(), 6 * 72);
        assert!(
            rows.values[5 * 72..].iter().all(|&b| b == 0),
            "the padding row"
        );
        assert!(
            rows.values.chunks(72).all(|r| r[70..] == [0, 0]),
            "each row's bytes past its inputs"
        );
        assert_eq!((rows.steps[5], rows.mins[5]), (0.0, 0.0));
    }

    /// The vectorised rounding gives the bytes of `round().clamp() as u8` for ties,
    /// values either side of them, negatives, the clamp's edges, huge values, the
    /// infinities and NaN; and the vectorised range the fold's extremes.
    #[test]
    fn the_rounding_and_range_match_the_plain_formulas() {
        let mut ys = vec![
            -0.0,
            0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MAX,
            -f32::MAX,
            8_388_608.0,
            16_777_215.0,
            1e30,
            255.5,
            254.5,
            -0.5,
            -1.5,
        ];
        for k in -300..600 {
            let y = k as f32 * 0.5;
            ys.extend([y, y.next_up(), y.next_down()]);
        }
        ys.extend((0..100_000).map(|i| i as f32 * 0.003_1 - 20.0));
        for y in ys {
            let want = y.round().clamp(0.0, STEPS) as u8;
            assert_eq!(level(y), want, "{y:e}");
        }
        for n in [0, 1, 7, 8, 9, 37, 384] {
            let mut x = values(n, n + 11);
            let f = values(n, n + 12);
            if n > 9 {
                x[5] = f32::NAN;
            }
            let want = x
                .iter()
                .zip(&f)
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), (v, f)| {
                    (lo.min(v * f), hi.max(v * f))
                });
            assert_eq!(smoothed_range(&x, &f), want, "{n} values");
        }
    }

    /// Weights of `n_in × n_out` rounded, `rows` rows of input, and those rounded (padded
    /// to a multiple of `pad` rows).
    fn case(
        shape: (usize, usize, usize),
        seed: usize,
        pad: usize,
    ) -> (Int8Matrix, Vec<f32>, Int8Rows) {
        let (rows, n_in, n_out) = shape;
        let m = Int8Matrix::quantize(&values(n_in * n_out, seed), n_in, n_out, &[]).unwrap();
        let x = values(rows * n_in, seed + 1);
        let mut rounded = Int8Rows::default();
        rounded.quantize(&x, rows, n_in, &m.smoothing, pad);
        (m, x, rounded)
    }

    /// `rows` rows of 0.5, plus the product of `rounded` (rounded for the tiles of
    /// [`TILE_ROWS`] rows) tile by tile by `kernel`, which is given each tile's first
    /// row.
    fn by_tiles(
        m: &Int8Matrix,
        rounded: &Int8Rows,
        rows: usize,
        kernel: impl Fn(usize, &Tile<'_>, &mut [f32]),
    ) -> Vec<f32> {
        let mut out = vec![0.5; rows * m.n_out];
        for group in 0..m.scales.len() / TILE_COLS {
            for start in (0..rows).step_by(TILE_ROWS) {
                let tile = Tile {
                    x: &rounded.values[start * m.depth..][..TILE_ROWS * m.depth],
                    steps: &rounded.steps[start..][..TILE_ROWS],
                    mins: &rounded.mins[start..][..TILE_ROWS],
                    group,
                    rows: (rows - start).min(TILE_ROWS),
                };
                kernel(start, &tile, &mut out[start * m.n_out..]);
            }
        }
        out
    }

    /// On AMX-INT8 tiles, the integer sums are exactly the weights' and inputs', and a
    /// product (a whole group of 32 rows and a partial one, a partial last panel,
    /// added onto the output) gives exactly the portable loop's outputs.
    #[test]
    fn the_amx_product_agrees_with_the_portable_loop() {
        if !amx::int8_available() {
            eprintln!("skipped: this CPU or process cannot use AMX-INT8 tiles");
            return;
        }
        let (rows, n_in, n_out) = (45, 128, 150);
        let (m, x, mut rounded) = case((rows, n_in, n_out), 5, amx::ROWS);
        let (panels, runs) = (m.scales.len() / LANES, m.depth / QUAD);
        let mut pairs = Vec::new();
        amx::sums_i8(
            &rounded.values,
            m.depth,
            &m.packed,
            panels,
            |panel, sums| {
                pairs.push(panel);
                for (r, c) in (0..amx::ROWS).flat_map(|r| (0..2 * LANES).map(move |c| (r, c))) {
                    let col = panel * LANES + c;
                    let weights = &m.packed[col / LANES * runs * RUN..][..runs * RUN];
                    let want: i32 = (0..m.depth)
                        .map(|k| {
                            let w = weights[k / QUAD * RUN + col % LANES * QUAD + k % QUAD];
                            i32::from(rounded.values[r * m.depth + k]) * i32::from(w)
                        })
                        .sum();
                    assert_eq!(sums[r * 2 * LANES + c], want, "row {r}, column {col}");
                }
            },
        );
        assert_eq!(pairs, (0..panels).step_by(2).collect::<Vec<_>>());
        let mut whole = vec![0.5; rows * n_out];
        m.product(&mut whole, &x, rows, true, &mut rounded).unwrap();
        rounded.quantize(&x, rows, n_in, &m.smoothing, TILE_ROWS);
        let slow = by_tiles(&m, &rounded, rows, |_, tile, out| {
            portable_tile(&m, tile, out, true)
        });
        assert_eq!(whole, slow);
    }

    #[test]
    fn mismatched_shapes_are_refused() {
        assert!(Int8Matrix::quantize(&[0.0; 5], 2, 3, &[]).is_err());
        let m = Int8Matrix::quantize(&[0.5; 6], 2, 3, &[]).unwrap();
        let mut rounded = Int8Rows::default();
        assert!(
            m.product(&mut [0.0; 6], &[1.0; 3], 2, false, &mut rounded)
                .is_err()
        );
        assert!(
            m.product(&mut [0.0; 5], &[1.0; 4], 2, false, &mut rounded)
                .is_err()
        );
        let mut out = [0.0; 6];
        m.product(&mut out, &[1.0; 4], 2, false, &mut rounded)
            .unwrap();
        assert!(out.iter().all(|v| (v - 1.0).abs() < 0.01), "{out:?}");
    }
}
