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
//!
//! CPUs with AVX2 and FMA but no AVX-512 run the same pass in vectors of eight lanes
//! ([`avx2`]), with the tile's scores and sums in the first-level cache instead of
//! registers.
//!
//! On CPUs with AVX-512 BF16, [`attend_bf16`] runs the same pass on bf16 pairs:
//! `vdpbf16ps` multiplies two pairs of bf16 and adds both products to an f32 lane, so
//! an instruction does twice the multiply-adds of an f32 one. Its keys pair two
//! dimensions of one position in a lane (`[block][dim / 2][position in block][2]`), its
//! values two positions of one dimension (`[position / 2][dim][2]`), and the queries
//! and each chunk's powers are rounded to bf16 in the kernel.
#![allow(unsafe_code)]

/// Positions per key block: one vector of f32.
pub(super) const KEY_BLOCK: usize = 16;
/// Keys scored at a time by a tile: four vectors per row.
pub(super) const CHUNK: usize = 4 * KEY_BLOCK;
/// Query rows per tile.
const TILE: usize = 6;

#[cfg(target_arch = "x86_64")]
mod avx2;

/// Whether this CPU runs the kernel, for heads of width `hd`: on AVX-512, or in
/// vectors of eight on AVX2 with FMA ([`avx2`]).
pub(super) fn available(hd: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        hd == 64 && (avx512() || avx2())
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
    // SAFETY: AVX-512 F, or else AVX2 and FMA, are present (`available`).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        let tile: TileKernel<f32> = if avx512() { avx512::tile } else { avx2::tile };
        by_tiles(q, keys, values, hd, first, out, tile)
    };
}

/// Whether this CPU has AVX-512 F, which every kernel here but [`avx2`]'s needs.
#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    std::is_x86_feature_detected!("avx512f")
}

/// Whether this CPU runs [`avx2`]'s kernel.
#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// A kernel's tile: query rows, keys, values, the first row's position, the output.
#[cfg(target_arch = "x86_64")]
type TileKernel<T> = unsafe fn(&[f32], &[T], &[T], usize, &mut [f32]);

/// `tile` over the tiles of `q`'s rows, once the operands are known to cover every
/// position the rows see.
///
/// # Safety
/// This CPU runs `tile`, which reads `keys` and `values` up to the last row's position
/// rounded up to a whole chunk, and writes as many values of `out` as its `q` has.
#[cfg(target_arch = "x86_64")]
unsafe fn by_tiles<T>(
    q: &[f32],
    keys: &[T],
    values: &[T],
    hd: usize,
    first: usize,
    out: &mut [f32],
    tile: TileKernel<T>,
) {
    let rows = q.len() / hd;
    let reach = (first + rows).div_ceil(CHUNK) * CHUNK * hd;
    assert!(
        q.len() == rows * hd
            && out.len() == q.len()
            && keys.len() >= reach
            && values.len() >= reach,
        "inconsistent attention operands"
    );
    for (t, (q, out)) in q
        .chunks(TILE * hd)
        .zip(out.chunks_mut(TILE * hd))
        .enumerate()
    {
        // SAFETY: the CPU runs `tile` (the caller's promise); the tile's rows and
        // every position it reads are inside the slices, checked above.
        unsafe { tile(q, keys, values, first + t * TILE, out) };
    }
}

/// Whether this CPU runs [`attend_bf16`] for heads of width `hd`: AVX-512 with BF16.
pub(super) fn bf16_available(hd: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        available(hd)
            && avx512()
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = hd;
        false
    }
}

/// Whether [`attend_bf16`] is the faster kernel on this CPU, not only one it runs.
/// AMD's Zen 4 issues `vdpbf16ps` at the rate of its 512-bit FMAs, so pairs double
/// the multiply-adds a cycle (a 1,024-token prompt's attention took 131–134 ms against
/// 211–241 in f32). Intel's cores issue it at half the rate of their two FMA pipes
/// (4.1–4.3 against 8.3 G a second a core on a Sapphire Rapids–kind Xeon), so pairs
/// multiply no faster there and their conversions cost (273–310 against 167–240 ms).
pub(super) fn bf16_pays(hd: usize) -> bool {
    bf16_available(hd) && amd()
}

/// Whether the CPU is AMD's (CPUID leaf 0's vendor string).
fn amd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: CPUID leaf 0 is present on every x86-64 CPU.
        #[allow(unused_unsafe)]
        let id = unsafe { std::arch::x86_64::__cpuid(0) };
        let vendor = [id.ebx, id.edx, id.ecx].map(u32::to_le_bytes).concat();
        vendor == b"AuthenticAMD"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs [`attend_f16`] for heads of width `hd`: AVX-512 with FP16
/// (Intel's Sapphire Rapids and later).
pub(super) fn f16_available(hd: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        available(hd)
            && avx512()
            && std::is_x86_feature_detected!("avx512bw")
            && std::is_x86_feature_detected!("avx512fp16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = hd;
        false
    }
}

/// The words pairs of keys and values are made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Words {
    /// bf16, rounded to nearest (ties to even), for [`attend_bf16`] and AMX.
    Bf16,
    /// The cache's own f16, for [`attend_f16`].
    F16,
}

impl Words {
    /// Whether this CPU makes and reads such pairs for heads of 64.
    fn available(self) -> bool {
        match self {
            Words::Bf16 => bf16_available(64),
            Words::F16 => f16_available(64),
        }
    }
}

/// Keys of one head, from the cache's f16 blocks (`[block][dim][position in block]`)
/// into the pairs [`attend_bf16`] and [`attend_f16`] read:
/// `[block][dim / 2][position in block][dim % 2]`, in `words`. `src` and `dst` hold the
/// same whole number of blocks.
///
/// # Panics
/// When `words` are not available on this CPU, or the slices disagree.
pub(super) fn pair_keys(src: &[half::f16], dst: &mut [u16], words: Words) {
    assert!(
        words.available(),
        "no {words:?} attention kernel for this CPU"
    );
    let block = KEY_BLOCK * 64;
    assert!(
        src.len() == dst.len() && src.len().is_multiple_of(block),
        "inconsistent key blocks"
    );
    // SAFETY: the CPU has AVX-512 F and BW, and BF16 where the words are bf16
    // (checked above); the lengths are whole blocks, checked above.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        match words {
            Words::Bf16 => bf16::pair_keys::<true>(src, dst),
            Words::F16 => bf16::pair_keys::<false>(src, dst),
        }
    };
}

/// Values of one head, a position per row of 64 dims (`src`, an even number of rows),
/// into the pairs [`attend_bf16`] and [`attend_f16`] read:
/// `[position / 2][dim][position % 2]`, in `words`.
///
/// # Panics
/// When `words` are not available on this CPU, or the slices disagree.
pub(super) fn pair_values(src: &[half::f16], dst: &mut [u16], words: Words) {
    assert!(
        words.available(),
        "no {words:?} attention kernel for this CPU"
    );
    assert!(
        src.len() == dst.len() && src.len().is_multiple_of(2 * 64),
        "inconsistent values"
    );
    // SAFETY: as in `pair_keys`.
    #[cfg(target_arch = "x86_64")]
    unsafe {
        match words {
            Words::Bf16 => bf16::pair_values::<true>(src, dst),
            Words::F16 => bf16::pair_values::<false>(src, dst),
        }
    };
}

/// [`attend`] in f16 pairs (AVX-512 FP16, `vfmadd231ph`: 32 multiply-adds an
/// instruction, twice f32's), on CPUs that have it but whose `vdpbf16ps` is slow
/// (Intel's, see [`bf16_pays`]). Keys and values come paired by [`pair_keys`] and
/// [`pair_values`] in [`Words::F16`], as the cache keeps them; the queries and each
/// chunk's powers are rounded to f16. A lane sums one half of a pair's products in
/// f16: over the 32 pairs of a head's dimensions for a score, over the 32 pairs of a
/// chunk's positions for a weighted sum of values; the halves are then added and
/// widened, and the chunks' sums are summed in f32, as the softmax is. Each sum in f16
/// carries 11 significant bits over at most 32 terms.
///
/// # Panics
/// When [`f16_available`] is false for `hd`, or a slice is shorter than the shapes say.
pub(super) fn attend_f16(
    q: &[f32],
    keys: &[u16],
    values: &[u16],
    hd: usize,
    first: usize,
    out: &mut [f32],
) {
    assert!(
        f16_available(hd),
        "no f16 attention kernel for this CPU and head width"
    );
    // SAFETY: AVX-512 F, BW and FP16 are present (`f16_available`).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        by_tiles(q, keys, values, hd, first, out, halves::tile)
    };
}

/// [`attend`] with every product in bf16 pairs (AVX-512 BF16, `vdpbf16ps`: twice the
/// multiply-adds of f32 an instruction), summed in f32: the queries are rounded to
/// bf16 per tile, the keys and values come paired by [`pair_keys`] and
/// [`pair_values`], and the softmax's powers are rounded to bf16 before they weight
/// the values (their sum, which divides, stays f32). Each rounding is to 8 significant
/// bits, far finer than the 4-bit weights the model runs this for.
///
/// # Panics
/// When [`bf16_available`] is false for `hd`, or a slice is shorter than the shapes say.
pub(super) fn attend_bf16(
    q: &[f32],
    keys: &[u16],
    values: &[u16],
    hd: usize,
    first: usize,
    out: &mut [f32],
) {
    assert!(
        bf16_available(hd),
        "no bf16 attention kernel for this CPU and head width"
    );
    // SAFETY: AVX-512 F, BW and BF16 are present (`bf16_available`).
    #[cfg(target_arch = "x86_64")]
    unsafe {
        by_tiles(q, keys, values, hd, first, out, bf16::tile)
    };
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    use super::super::ops::EXP_TAYLOR;
    use super::{CHUNK, KEY_BLOCK, TILE};

    /// Head width the kernel is built for, and its vectors.
    const HD: usize = 64;
    const VECS: usize = HD / 16;
    /// Key blocks per chunk.
    const BLOCKS: usize = CHUNK / KEY_BLOCK;

    /// e^x for each lane, the polynomial of [`super::super::ops::exp`]; lanes at or
    /// below -87 give about 1.6e-38, so masked lanes must be zeroed after. The f32
    /// kernel's, so that a short prompt's answer does not move with [`quick_exp`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(in crate::ml) fn exp(x: __m512) -> __m512 {
        // The constant first: where a lane is NaN, the second operand (the NaN) is kept,
        // so a NaN shows in the output as the scalar `exp` lets it.
        let x = _mm512_max_ps(
            _mm512_set1_ps(-87.0),
            _mm512_min_ps(_mm512_set1_ps(88.0), x),
        );
        let t = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
        let f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(std::f32::consts::LN_2));
        let mut p = _mm512_set1_ps(EXP_TAYLOR[0]);
        for c in &EXP_TAYLOR[1..] {
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(*c));
        }
        _mm512_scalef_ps(p, n)
    }

    /// e^x for each lane up to 88, within 5e-6 of it relative, for the paths whose
    /// numbers are bf16-rounded already (a long prompt's, see `Llama::forward`); lanes
    /// at or below -87 give about 1.6e-38, so masked lanes must be zeroed after, and
    /// lanes above 88 are not bounded: a softmax's arguments (scores less their
    /// highest) are at most 0 wherever they are not masked, and
    /// [`super::super::ops::silu_mul`] holds its own at 88. A NaN stays NaN.
    ///
    /// With `n` the nearest integer to `x·log₂e` and `f = x - n·ln 2` (one fused
    /// multiply-add, `|f| ≤ ln 2 / 2`), e^x is `2ⁿ·e^f`. Here e^f is of degree 4: the
    /// Taylor polynomial of degree 5 with its fifth power traded for the lower powers
    /// that best match it over `|f| ≤ ln 2 / 2` (Chebyshev's economisation), which keeps
    /// the error near that of degree 5. Nine instructions, against thirteen for the
    /// degree-6 polynomial this replaced; the softmax's powers are rounded to bf16 (2⁻⁹)
    /// or summed in f32 beside an error this small.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(in crate::ml) fn quick_exp(x: __m512) -> __m512 {
        // The constant first: where a lane is NaN, the second operand (the NaN) is kept.
        let x = _mm512_max_ps(_mm512_set1_ps(-87.0), x);
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let f = _mm512_fnmadd_ps(n, _mm512_set1_ps(std::f32::consts::LN_2), x);
        let mut p = _mm512_set1_ps(EXP_POLY[0]);
        for c in &EXP_POLY[1..] {
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(*c));
        }
        _mm512_scalef_ps(p, n)
    }

    /// [`quick_exp`]'s polynomial in `f`, highest power first. With `a = ln 2 / 2`, the
    /// fifth power of the Taylor series is replaced by `(20a²f³ - 5a⁴f) / 16` (from the
    /// Chebyshev polynomial T₅), which moves `a²/96` onto `f³` and takes `a⁴/384` off
    /// `f`.
    const EXP_POLY: [f32; 5] = [
        1.0 / 24.0,
        1.0 / 6.0 + A * A / 96.0,
        0.5,
        1.0 - A * A * A * A / 384.0,
        1.0,
    ];
    const A: f32 = std::f32::consts::LN_2 / 2.0;

    /// The largest of `x`'s lanes, in every lane, without leaving the vector unit.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(in crate::ml) fn lanes_max(x: __m512) -> __m512 {
        // Halves of 256 bits, then quarters of 128, then pairs, then neighbours.
        let x = _mm512_max_ps(x, _mm512_shuffle_f32x4::<0b01_00_11_10>(x, x));
        let x = _mm512_max_ps(x, _mm512_shuffle_f32x4::<0b10_11_00_01>(x, x));
        let x = _mm512_max_ps(x, _mm512_permute_ps::<0b01_00_11_10>(x));
        _mm512_max_ps(x, _mm512_permute_ps::<0b10_11_00_01>(x))
    }

    /// Folds the chunk at `$start`'s scores (`$scores[row][block]`) into a tile's
    /// running softmax: each row's highest score so far (`$high`, in every lane) and
    /// sums of powers (`$total`, lane by lane), whose weighted sums of values (`$sums`)
    /// are rescaled wherever the highest rose. Lanes past a row's own position are
    /// masked; each block's powers go to `$store` as `$p`. A macro, not a function, so
    /// that the kernels' arrays stay in registers: as an inlined function this fold
    /// made the f32 kernel 15–20% slower.
    macro_rules! fold_chunk {
        (
            $scores:ident at $start:expr, rows $first:expr, $last:expr;
            $high:ident, $total:ident, $sums:ident; $exp:ident;
            |$r:ident, $b:ident, $p:ident| $store:expr
        ) => {{
            let mut rescale = [_mm512_setzero_ps(); TILE];
            let mut rose = [true; TILE];
            for $r in 0..TILE {
                let own = ($first + $r).min($last);
                let mut visible = [0u16; BLOCKS];
                let mut highest = $high[$r];
                for (b, v) in visible.iter_mut().enumerate() {
                    // The block's lanes up to the row's own position, counted in
                    // integers (no vector instruction is spent on the mask).
                    let seen = (own + 1)
                        .saturating_sub($start + b * KEY_BLOCK)
                        .min(KEY_BLOCK);
                    *v = ((1u32 << seen) - 1) as __mmask16;
                    highest = _mm512_mask_max_ps(highest, *v, highest, $scores[$r][b]);
                }
                // The highest rises only where a lane of this chunk passed it; where
                // none did, the lanes' largest is the highest as it was.
                rose[$r] = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(highest, $high[$r]) != 0;
                let new_high = if rose[$r] {
                    lanes_max(highest)
                } else {
                    $high[$r]
                };
                let mut sum = _mm512_setzero_ps();
                for ($b, v) in visible.iter().enumerate() {
                    let $p =
                        _mm512_maskz_mov_ps(*v, $exp(_mm512_sub_ps($scores[$r][$b], new_high)));
                    sum = _mm512_add_ps(sum, $p);
                    $store;
                }
                // Where the highest did not rise, the rescaling would be by e⁰ = 1
                // exactly, and is skipped; after a row's first chunks it seldom rises.
                if rose[$r] {
                    rescale[$r] = $exp(_mm512_sub_ps($high[$r], new_high));
                    $total[$r] = _mm512_fmadd_ps($total[$r], rescale[$r], sum);
                } else {
                    $total[$r] = _mm512_add_ps($total[$r], sum);
                }
                $high[$r] = new_high;
            }
            for ((s, c), rose) in $sums.iter_mut().zip(rescale).zip(rose) {
                if rose {
                    for s in s.iter_mut() {
                        *s = _mm512_mul_ps(*s, c);
                    }
                }
            }
        }};
    }
    pub(super) use fold_chunk;

    /// Each row's weighted sums over its sum of powers, into `out`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) fn finish(total: [__m512; TILE], sums: [[__m512; VECS]; TILE], out: &mut [f32]) {
        for (r, out) in out.chunks_exact_mut(HD).enumerate() {
            let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(total[r]));
            for (c, o) in out.chunks_exact_mut(16).enumerate() {
                // SAFETY: `o` is sixteen values.
                unsafe { _mm512_storeu_ps(o.as_mut_ptr(), _mm512_mul_ps(sums[r][c], inv)) };
            }
        }
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
        let mut high = [_mm512_set1_ps(f32::NEG_INFINITY); TILE];
        let mut total = [_mm512_setzero_ps(); TILE];
        let mut sums = [[_mm512_setzero_ps(); VECS]; TILE];
        let mut powers = [[0f32; CHUNK]; TILE];
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
            // The running softmax, then the chunk's values, weighted, join the sums.
            fold_chunk!(scores at start, rows first, last; high, total, sums; exp; |r, b, p| {
                // SAFETY: a block's sixteen powers fit its place in the row.
                unsafe { _mm512_storeu_ps(powers[r].as_mut_ptr().add(b * KEY_BLOCK), p) }
            });
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
        finish(total, sums, out);
    }
}

#[cfg(target_arch = "x86_64")]
mod bf16 {
    use std::arch::x86_64::*;

    use half::f16;

    use super::avx512::{finish, fold_chunk, lanes_max, quick_exp};
    use super::{CHUNK, KEY_BLOCK, TILE};

    const HD: usize = 64;
    const VECS: usize = HD / 16;
    const BLOCKS: usize = CHUNK / KEY_BLOCK;
    /// Pairs of dimensions in a head (and positions in a chunk).
    const PAIRS: usize = HD / 2;

    /// Word `2i` from word `i` and word `2i + 1` from word `16 + i`: two vectors'
    /// lanes, side by side, interleaved into pairs.
    const INTERLEAVE: [u16; 32] = {
        let mut idx = [0u16; 32];
        let mut i = 0;
        while i < 16 {
            idx[2 * i] = i as u16;
            idx[2 * i + 1] = 16 + i as u16;
            i += 1;
        }
        idx
    };

    /// `a` and `b` rounded to bf16 and interleaved: `a₀ b₀ a₁ b₁ …`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    fn pairs(a: __m512, b: __m512) -> __m512i {
        // SAFETY: a vector of bf16 is one of 16-bit words.
        let both: __m512i = unsafe { std::mem::transmute(_mm512_cvtne2ps_pbh(b, a)) };
        interleave(both)
    }

    /// The sixteen words of each half of `both`, interleaved: `a₀ b₀ a₁ b₁ …` from
    /// `a` in the low half and `b` in the high one.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn interleave(both: __m512i) -> __m512i {
        // SAFETY: `INTERLEAVE` is 64 bytes.
        let idx = unsafe { _mm512_loadu_si512(INTERLEAVE.as_ptr().cast()) };
        _mm512_permutexvar_epi16(idx, both)
    }

    /// Sixteen f16 at `p`, widened.
    ///
    /// # Safety
    /// Sixteen values are readable at `p`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn widen(p: *const f16) -> __m512 {
        // SAFETY: as the caller promises.
        unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
    }

    /// The sixteen f16 at `a` and at `b` as pairs: rounded to bf16 where `ROUND`,
    /// else as they are.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BW, and BF16 where `ROUND`; sixteen values are
    /// readable at `a` and at `b`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn paired<const ROUND: bool>(a: *const f16, b: *const f16) -> __m512i {
        // SAFETY: as the caller promises.
        unsafe {
            if ROUND {
                return rounded_pairs(a, b);
            }
            let low = _mm512_castsi256_si512(_mm256_loadu_si256(a.cast()));
            interleave(_mm512_inserti64x4::<1>(low, _mm256_loadu_si256(b.cast())))
        }
    }

    /// [`pairs`] of the sixteen f16 at `a` and at `b`.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and BF16; sixteen values are readable at `a` and `b`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn rounded_pairs(a: *const f16, b: *const f16) -> __m512i {
        // SAFETY: as the caller promises.
        unsafe { pairs(widen(a), widen(b)) }
    }

    /// # Safety
    /// The CPU has AVX-512 F and BW, and BF16 where `ROUND`; the slices are as
    /// [`super::pair_keys`] checks.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn pair_keys<const ROUND: bool>(src: &[f16], dst: &mut [u16]) {
        for (src, dst) in src
            .chunks_exact(KEY_BLOCK * HD)
            .zip(dst.chunks_exact_mut(KEY_BLOCK * HD))
        {
            for d in 0..PAIRS {
                // SAFETY: dims `2d` and `2d + 1` of the block are 16 values each,
                // and their pairs the 32 words at `d · 32`, inside the block; the
                // CPU is as the caller promises.
                unsafe {
                    let a = src.as_ptr().add(2 * d * KEY_BLOCK);
                    let v = paired::<ROUND>(a, a.add(KEY_BLOCK));
                    _mm512_storeu_si512(dst.as_mut_ptr().add(d * 32).cast(), v);
                }
            }
        }
    }

    /// # Safety
    /// The CPU has AVX-512 F and BW, and BF16 where `ROUND`; the slices are as
    /// [`super::pair_values`] checks.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn pair_values<const ROUND: bool>(src: &[f16], dst: &mut [u16]) {
        for (src, dst) in src.chunks_exact(2 * HD).zip(dst.chunks_exact_mut(2 * HD)) {
            for c in 0..VECS {
                // SAFETY: dims `16c..16c + 16` of both positions, and their 32 words
                // at `c · 32`, lie inside the pair; the CPU is as the caller promises.
                unsafe {
                    let a = src.as_ptr().add(c * 16);
                    let v = paired::<ROUND>(a, a.add(HD));
                    _mm512_storeu_si512(dst.as_mut_ptr().add(c * 32).cast(), v);
                }
            }
        }
    }

    /// A vector of bf16 pairs, as `vdpbf16ps` takes it.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn bh(v: __m512i) -> __m512bh {
        // SAFETY: both are 64 bytes of plain bits.
        unsafe { std::mem::transmute(v) }
    }

    /// One tile, as [`super::avx512::tile`] but in bf16 pairs.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and BF16; `keys` and `values` hold every position up
    /// to the last row's, rounded up to a whole chunk, `out` as many values as `q`.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn tile(
        q: &[f32],
        keys: &[u16],
        values: &[u16],
        first: usize,
        out: &mut [f32],
    ) {
        let rows = q.len() / HD;
        debug_assert!((1..=TILE).contains(&rows) && out.len() == q.len());
        let last = first + rows - 1;
        // The tile's queries in bf16, a pair of dimensions a word; short tiles repeat
        // their last row, whose results are dropped.
        let mut qb = [[0u32; PAIRS]; TILE];
        for (r, qb) in qb.iter_mut().enumerate() {
            let at = r.min(rows - 1) * HD;
            for h in 0..2 {
                // SAFETY: the row's 64 values are inside `q`; `qb` holds 32 pairs.
                unsafe {
                    let lo = _mm512_loadu_ps(q.as_ptr().add(at + 32 * h));
                    let hi = _mm512_loadu_ps(q.as_ptr().add(at + 32 * h + 16));
                    let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                    _mm512_storeu_si512(qb.as_mut_ptr().add(16 * h).cast(), v);
                }
            }
        }
        let mut high = [_mm512_set1_ps(f32::NEG_INFINITY); TILE];
        let mut total = [_mm512_setzero_ps(); TILE];
        let mut sums = [[_mm512_setzero_ps(); VECS]; TILE];
        // Each row's powers of the chunk in bf16, a pair of positions a word.
        let mut powers = [[0u32; CHUNK / 2]; TILE];
        for start in (0..=last).step_by(CHUNK) {
            let mut scores = [[_mm512_setzero_ps(); BLOCKS]; TILE];
            // SAFETY: the chunk's blocks end at `(start + CHUNK) · HD` words, inside
            // `keys` (the caller's bound).
            unsafe {
                let kp = keys.as_ptr().add(start * HD);
                for d in 0..PAIRS {
                    let mut k = [_mm512_setzero_si512(); BLOCKS];
                    for (b, k) in k.iter_mut().enumerate() {
                        *k = _mm512_loadu_si512(kp.add(b * KEY_BLOCK * HD + d * 32).cast());
                    }
                    for (s, qb) in scores.iter_mut().zip(&qb) {
                        let qd = bh(_mm512_set1_epi32(qb[d] as i32));
                        for (s, k) in s.iter_mut().zip(&k) {
                            *s = _mm512_dpbf16_ps(*s, qd, bh(*k));
                        }
                    }
                }
            }
            // The powers in bf16, a block's sixteen into its half of a pair's words: an
            // even block waits for the odd one after it.
            let mut even = _mm512_setzero_ps();
            fold_chunk!(scores at start, rows first, last; high, total, sums; quick_exp; |r, b, p| {
                if b % 2 == 0 {
                    even = p;
                } else {
                    // SAFETY: 32 powers, 16 pairs, fit the row's place for them.
                    unsafe {
                        let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(p, even));
                        _mm512_storeu_si512(powers[r].as_mut_ptr().add(16 * (b / 2)).cast(), v);
                    }
                }
            });
            // Pairs of positions; an odd last one is paired with a masked (zero) power.
            let seen = (last + 1 - start).min(CHUNK).div_ceil(2);
            // SAFETY: the pairs of positions `start..start + 2 · seen` are inside
            // `values` (whole chunks, the caller's bound).
            unsafe {
                let vp = values.as_ptr().add(start * HD);
                for t in 0..seen {
                    let mut v = [_mm512_setzero_si512(); VECS];
                    for (c, v) in v.iter_mut().enumerate() {
                        *v = _mm512_loadu_si512(vp.add(t * 2 * HD + c * 32).cast());
                    }
                    for (s, p) in sums.iter_mut().zip(&powers) {
                        let w = bh(_mm512_set1_epi32(p[t] as i32));
                        for (s, v) in s.iter_mut().zip(&v) {
                            *s = _mm512_dpbf16_ps(*s, w, bh(*v));
                        }
                    }
                }
            }
        }
        finish(total, sums, out);
    }
}

#[cfg(target_arch = "x86_64")]
mod halves {
    use std::arch::x86_64::*;

    use super::avx512::{finish, fold_chunk, lanes_max, quick_exp};
    use super::{CHUNK, KEY_BLOCK, TILE};

    const HD: usize = 64;
    const VECS: usize = HD / 16;
    const BLOCKS: usize = CHUNK / KEY_BLOCK;
    /// Pairs of dimensions in a head (and positions in a chunk).
    const PAIRS: usize = HD / 2;
    /// Rounding to nearest, ties to even, without exceptions.
    const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

    /// Sixteen pairs of f16 sums (`a₀ b₀ a₁ b₁ …`), each pair added, widened to f32.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512fp16")]
    fn pair_sums(v: __m512h) -> __m512 {
        let odd = _mm512_srli_epi32::<16>(_mm512_castph_si512(v));
        let sum = _mm512_add_ph(v, _mm512_castsi512_ph(odd));
        _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_castph_si512(sum)))
    }

    /// A pair of f16, in every pair of lanes.
    #[inline]
    #[target_feature(enable = "avx512f,avx512fp16")]
    fn broadcast(pair: u32) -> __m512h {
        _mm512_castsi512_ph(_mm512_set1_epi32(pair as i32))
    }

    /// One tile, as [`super::avx512::tile`] but in f16 pairs.
    ///
    /// # Safety
    /// The CPU has AVX-512 F, BW and FP16; `keys` and `values` hold every position up
    /// to the last row's, rounded up to a whole chunk, `out` as many values as `q`.
    #[target_feature(enable = "avx512f,avx512bw,avx512fp16")]
    pub(super) unsafe fn tile(
        q: &[f32],
        keys: &[u16],
        values: &[u16],
        first: usize,
        out: &mut [f32],
    ) {
        let rows = q.len() / HD;
        debug_assert!((1..=TILE).contains(&rows) && out.len() == q.len());
        let last = first + rows - 1;
        // The tile's queries in f16, a pair of dimensions a word; short tiles repeat
        // their last row, whose results are dropped.
        let mut qh = [[0u32; PAIRS]; TILE];
        for (r, qh) in qh.iter_mut().enumerate() {
            let at = r.min(rows - 1) * HD;
            for c in 0..VECS {
                // SAFETY: the row's 64 values are inside `q`; `qh` holds 32 pairs.
                unsafe {
                    let v = _mm512_loadu_ps(q.as_ptr().add(at + 16 * c));
                    let h = _mm512_cvtps_ph::<NEAREST>(v);
                    _mm256_storeu_si256(qh.as_mut_ptr().add(8 * c).cast(), h);
                }
            }
        }
        let mut high = [_mm512_set1_ps(f32::NEG_INFINITY); TILE];
        let mut total = [_mm512_setzero_ps(); TILE];
        let mut sums = [[_mm512_setzero_ps(); VECS]; TILE];
        // Each row's powers of the chunk in f16, a pair of positions a word.
        let mut powers = [[0u32; CHUNK / 2]; TILE];
        for start in (0..=last).step_by(CHUNK) {
            // Per row and key block: each lane pair's halves of sixteen scores.
            let mut parts = [[_mm512_setzero_ph(); BLOCKS]; TILE];
            // SAFETY: the chunk's blocks end at `(start + CHUNK) · HD` words, inside
            // `keys` (the caller's bound).
            unsafe {
                let kp = keys.as_ptr().add(start * HD);
                for d in 0..PAIRS {
                    let mut k = [_mm512_setzero_ph(); BLOCKS];
                    for (b, k) in k.iter_mut().enumerate() {
                        let at = kp.add(b * KEY_BLOCK * HD + d * 32);
                        *k = _mm512_castsi512_ph(_mm512_loadu_si512(at.cast()));
                    }
                    for (s, qh) in parts.iter_mut().zip(&qh) {
                        let qd = broadcast(qh[d]);
                        for (s, k) in s.iter_mut().zip(&k) {
                            *s = _mm512_fmadd_ph(qd, *k, *s);
                        }
                    }
                }
            }
            let mut scores = [[_mm512_setzero_ps(); BLOCKS]; TILE];
            for (s, p) in scores.iter_mut().zip(&parts) {
                for (s, p) in s.iter_mut().zip(p) {
                    *s = pair_sums(*p);
                }
            }
            fold_chunk!(scores at start, rows first, last; high, total, sums; quick_exp; |r, b, p| {
                // SAFETY: a block's sixteen powers, eight pairs, fit the row's place.
                unsafe {
                    let h = _mm512_cvtps_ph::<NEAREST>(p);
                    _mm256_storeu_si256(powers[r].as_mut_ptr().add(8 * b).cast(), h);
                }
            });
            // Pairs of positions; an odd last one is paired with a masked (zero) power.
            let seen = (last + 1 - start).min(CHUNK).div_ceil(2);
            let mut parts = [[_mm512_setzero_ph(); VECS]; TILE];
            // SAFETY: the pairs of positions `start..start + 2 · seen` are inside
            // `values` (whole chunks, the caller's bound).
            unsafe {
                let vp = values.as_ptr().add(start * HD);
                for t in 0..seen {
                    let mut v = [_mm512_setzero_ph(); VECS];
                    for (c, v) in v.iter_mut().enumerate() {
                        let at = vp.add(t * 2 * HD + c * 32);
                        *v = _mm512_castsi512_ph(_mm512_loadu_si512(at.cast()));
                    }
                    for (s, p) in parts.iter_mut().zip(&powers) {
                        let w = broadcast(p[t]);
                        for (s, v) in s.iter_mut().zip(&v) {
                            *s = _mm512_fmadd_ph(w, *v, *s);
                        }
                    }
                }
            }
            for (s, p) in sums.iter_mut().zip(&parts) {
                for (s, p) in s.iter_mut().zip(p) {
                    *s = _mm512_add_ps(*s, pair_sums(*p));
                }
            }
        }
        finish(total, sums, out);
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

    /// Prompts of every shape the tiles meet: from the start, after a cached prefix,
    /// a partial chunk and tile, rows across chunks.
    const CASES: [(usize, usize); 7] = [
        (0, 1),
        (0, 7),
        (0, 64),
        (5, 13),
        (63, 2),
        (70, 50),
        (100, 92),
    ];

    /// Three chunks of keys and values, each rounded by `round`, and a source of
    /// queries.
    fn operands(round: impl Fn(f32) -> f32) -> (Vec<Vec<f32>>, Vec<Vec<f32>>, impl FnMut() -> f32) {
        let hd = 64;
        let mut next = noise(7, 4.0);
        let positions = 3 * CHUNK;
        let rows = |next: &mut dyn FnMut() -> f32| -> Vec<Vec<f32>> {
            (0..positions)
                .map(|_| (0..hd).map(|_| round(next())).collect())
                .collect()
        };
        let keys = rows(&mut next);
        let values = rows(&mut next);
        (keys, values, next)
    }

    /// The cache's key layout: blocks of [`KEY_BLOCK`] positions, transposed.
    fn blocked<T: Copy + Default>(keys: &[Vec<T>]) -> Vec<T> {
        let hd = keys[0].len();
        let mut out = vec![T::default(); keys.len() * hd];
        for (p, k) in keys.iter().enumerate() {
            for (d, k) in k.iter().enumerate() {
                out[((p / KEY_BLOCK) * hd + d) * KEY_BLOCK + p % KEY_BLOCK] = *k;
            }
        }
        out
    }

    #[test]
    fn the_vector_exp_is_within_its_bound_where_a_softmax_uses_it() {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::*;
            if !std::is_x86_feature_detected!("avx512f") {
                return;
            }
            let run = |x: &[f32]| -> Vec<f32> {
                let mut out = vec![0f32; 16];
                // SAFETY: AVX-512 F is present (checked above); both hold 16 lanes.
                unsafe {
                    let v = avx512::quick_exp(_mm512_loadu_ps(x.as_ptr()));
                    _mm512_storeu_ps(out.as_mut_ptr(), v);
                }
                out
            };
            // Every x from -87 to 0 in steps of 1/64, and the ends of each step's
            // reduced range (x·log₂e halfway between integers).
            let mut xs: Vec<f32> = (0..=87 * 64).map(|i| -(i as f32) / 64.0).collect();
            xs.extend((0..=125).map(|n| -((n as f32 + 0.5) * std::f32::consts::LN_2)));
            xs.retain(|x| *x >= -87.0);
            check_exp(16, run, &xs, 6e-6);
        }
    }

    /// `exp`, `width` lanes at a time, against f64's e^x over `xs`: within `bound`
    /// relative; below the range a tiny positive number; a NaN stays NaN.
    fn check_exp(width: usize, exp: impl Fn(&[f32]) -> Vec<f32>, xs: &[f32], bound: f64) {
        let mut worst = 0f64;
        for x in xs.chunks(width) {
            let mut lanes = vec![0f32; width];
            lanes[..x.len()].copy_from_slice(x);
            for (x, got) in lanes.iter().zip(exp(&lanes)) {
                let want = f64::from(*x).exp();
                worst = worst.max((f64::from(got) - want).abs() / want);
            }
        }
        assert!(worst < bound, "relative error {worst:e}");
        let mut lanes = vec![-1000.0f32; width];
        lanes[3] = f32::NAN;
        lanes[5] = f32::NEG_INFINITY;
        let out = exp(&lanes);
        assert!(out[3].is_nan());
        for (i, v) in out.iter().enumerate().filter(|(i, _)| *i != 3) {
            assert!(*v > 0.0 && *v < 2e-38, "lane {i}: {v}");
        }
    }

    /// The AVX2 kernel's e^x is within 6e-6 of it relative from -87 to 88 (as the scalar
    /// [`super::super::ops::exp`], it rounds `x·log₂e` to f32 before taking its
    /// fraction, a few millionths where |x| is large), gives a tiny positive number
    /// below, and keeps a NaN.
    #[test]
    fn the_avx2_exp_is_within_its_bound() {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::*;
            if !super::avx2() {
                eprintln!("skipped: this CPU has no AVX2 with FMA");
                return;
            }
            let run = |x: &[f32]| -> Vec<f32> {
                let mut out = vec![0f32; 8];
                // SAFETY: AVX2 and FMA are present (checked above); both hold 8 lanes.
                unsafe {
                    let v = avx2::exp(_mm256_loadu_ps(x.as_ptr()));
                    _mm256_storeu_ps(out.as_mut_ptr(), v);
                }
                out
            };
            let xs: Vec<f32> = (0..=175 * 64).map(|i| i as f32 / 64.0 - 87.0).collect();
            check_exp(8, run, &xs, 6e-6);
        }
    }

    /// The f32 tile kernels this CPU runs: AVX-512's, AVX2's, or both.
    fn f32_kernels() -> Vec<(&'static str, TileKernel<f32>)> {
        let mut kernels: Vec<(&'static str, TileKernel<f32>)> = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if super::avx512() {
                kernels.push(("AVX-512", avx512::tile));
            }
            if super::avx2() {
                kernels.push(("AVX2", avx2::tile));
            }
        }
        kernels
    }

    /// Every f32 kernel this CPU runs, and [`attend`]'s choice among them.
    #[test]
    fn matches_plain_attention_at_every_offset() {
        let hd = 64;
        let kernels = f32_kernels();
        if kernels.is_empty() {
            eprintln!("skipped: this CPU has neither AVX-512 nor AVX2 with FMA");
            return;
        }
        assert!(available(hd));
        let (keys, values, mut next) = operands(|x| x);
        let (blocked, rows_flat) = (blocked(&keys), values.concat());
        for (first, rows) in CASES {
            let q: Vec<f32> = (0..rows * hd).map(|_| next()).collect();
            let want = reference(&q, &keys, &values, first);
            let mut chosen = vec![0.0; q.len()];
            attend(&q, &blocked, &rows_flat, hd, first, &mut chosen);
            let mut outputs = vec![("attend", chosen)];
            for &(name, tile) in &kernels {
                let mut got = vec![0.0; q.len()];
                // SAFETY: the CPU runs `tile` (listed by `f32_kernels`); the operands
                // cover three chunks, more than every case reads.
                unsafe { by_tiles(&q, &blocked, &rows_flat, hd, first, &mut got, tile) };
                outputs.push((name, got));
            }
            for (name, got) in &outputs {
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() < 1e-4,
                        "{name}: first {first}, rows {rows}, at {i}: {g} vs {w}"
                    );
                }
            }
        }
    }

    /// A kernel over paired keys and values, as the tests call it.
    type PairKernel = fn(&[f32], &[u16], &[u16], usize, &mut [f32]);
    /// How a pair's words round: a value to its word, a word to its value, and a
    /// query as the kernel rounds it.
    type Rounding = (fn(f32) -> u16, fn(u16) -> f32, fn(f32) -> f32);

    /// `kernels`, fed the cache's f16 keys and values through [`pair_keys`] and
    /// [`pair_values`] in `words`, against plain attention on the same operands as the
    /// words hold them (`word`, then `value`) and the queries rounded by `query`: each
    /// output within `bound`. The pairs themselves are checked word by word.
    fn pairs_match_plain_attention(
        words: Words,
        (word, value, query): Rounding,
        kernels: &[(&str, PairKernel)],
        bound: f32,
    ) {
        use half::f16;
        let hd = 64;
        let (keys, values, mut next) = operands(|x| x);
        let halves = |rows: &[Vec<f32>]| -> Vec<Vec<f16>> {
            rows.iter()
                .map(|r| r.iter().map(|&x| f16::from_f32(x)).collect())
                .collect()
        };
        let mut paired_keys = vec![0u16; keys.len() * hd];
        pair_keys(&blocked(&halves(&keys)), &mut paired_keys, words);
        let mut paired_values = vec![0u16; values.len() * hd];
        pair_values(&halves(&values).concat(), &mut paired_values, words);
        for (p, d) in [(0, 0), (1, 0), (0, 1), (17, 63), (100, 33), (191, 62)] {
            let (block, i) = (p / KEY_BLOCK, p % KEY_BLOCK);
            let k = paired_keys[((block * hd / 2 + d / 2) * KEY_BLOCK + i) * 2 + d % 2];
            assert_eq!(k, word(keys[p][d]), "{words:?} key {p} {d}");
            assert_eq!(
                paired_values[(p / 2 * hd + d) * 2 + p % 2],
                word(values[p][d])
            );
        }
        let round = |rows: &[Vec<f32>]| -> Vec<Vec<f32>> {
            rows.iter()
                .map(|r| r.iter().map(|&x| value(word(x))).collect())
                .collect()
        };
        let (keys, values) = (round(&keys), round(&values));
        for ((name, kernel), (first, rows)) in kernels
            .iter()
            .flat_map(|k| CASES.iter().map(move |&c| (k, c)))
        {
            let q: Vec<f32> = (0..rows * hd).map(|_| next()).collect();
            let mut got = vec![0.0; q.len()];
            kernel(&q, &paired_keys, &paired_values, first, &mut got);
            let rounded: Vec<f32> = q.iter().map(|&x| query(x)).collect();
            let want = reference(&rounded, &keys, &values, first);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() < bound,
                    "{name}: first {first}, rows {rows}, at {i}: {g} vs {w}"
                );
            }
        }
    }

    /// The bf16 kernels (pairs, and AMX tiles where the CPU has them) against plain
    /// attention on the operands rounded to bf16: what is left is the powers'
    /// rounding to bf16 (a part in 512 of each weight), within 1% of the values' reach
    /// of ±2.
    #[test]
    fn bf16_pairs_match_plain_attention_on_rounded_operands() {
        use half::{bf16, f16};
        if !bf16_available(64) {
            eprintln!("skipped: this CPU has no AVX-512 BF16");
            return;
        }
        let mut kernels: Vec<(&str, PairKernel)> = vec![("pairs", |q, k, v, first, out| {
            attend_bf16(q, k, v, 64, first, out)
        })];
        if super::super::amx::available() {
            kernels.push(("AMX tiles", super::super::amx::attend));
        }
        let word = |x: f32| bf16::from_f32(f16::from_f32(x).to_f32()).to_bits();
        let value = |w: u16| bf16::from_bits(w).to_f32();
        let query = |x: f32| bf16::from_f32(x).to_f32();
        pairs_match_plain_attention(Words::Bf16, (word, value, query), &kernels, 0.02);
    }

    /// The f16 kernel against plain attention on the cache's f16 operands and the
    /// queries rounded to f16: what is left is each score's and each chunk's weighted
    /// sums in f16 (11 significant bits over 32 terms) and the powers' rounding, within
    /// 3% of the values' reach of ±2.
    #[test]
    fn f16_pairs_match_plain_attention_on_rounded_operands() {
        use half::f16;
        if !f16_available(64) {
            eprintln!("skipped: this CPU has no AVX-512 FP16");
            return;
        }
        let kernels: [(&str, PairKernel); 1] = [("f16 pairs", |q, k, v, first, out| {
            attend_f16(q, k, v, 64, first, out)
        })];
        let word = |x: f32| f16::from_f32(x).to_bits();
        let value = |w: u16| f16::from_bits(w).to_f32();
        let query = |x: f32| f16::from_f32(x).to_f32();
        pairs_match_plain_attention(Words::F16, (word, value, query), &kernels, 0.06);
    }
}
