//! Row operations shared by the models, written so that the compiler vectorises them.

/// Lanes of the hand-split reductions: wide enough for AVX-512, so the compiler can
/// keep one accumulator per lane instead of summing in order.
const LANES: usize = 16;

/// Folds `map(x)` over a row with `combine` (associative), one accumulator per lane.
pub(super) fn reduce(
    row: &[f32],
    init: f32,
    map: impl Fn(f32) -> f32,
    combine: impl Fn(f32, f32) -> f32,
) -> f32 {
    let mut acc = [init; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a = combine(*a, map(*x));
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .fold(init, |a, x| combine(a, map(*x)));
    acc.iter().fold(tail, |a, x| combine(a, *x))
}

/// Resizes a buffer to `len` values, reusing its memory.
pub(super) fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len, 0.0);
    &mut buf[..]
}

/// `row += other`, element by element.
pub(super) fn add(row: &mut [f32], other: &[f32]) {
    for (v, o) in row.iter_mut().zip(other) {
        *v += o;
    }
}

pub(super) fn sum(row: &[f32]) -> f32 {
    reduce(row, 0.0, |x| x, |a, b| a + b)
}

pub(super) fn softmax(row: &mut [f32]) {
    let (_, total) = exp_shifted(row);
    let inv = 1.0 / total;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// `row[i] = e^(row[i] - max)`, the softmax before its division; returns the row's
/// `max` and the sum of the new values, so that partial rows can be merged.
pub(super) fn exp_shifted(row: &mut [f32]) -> (f32, f32) {
    // A plain comparison, unlike `f32::max`, needs no NaN check a lane. (A NaN in the
    // row makes the row NaN either way.)
    let max = reduce(
        row,
        f32::NEG_INFINITY,
        |x| x,
        |a, b| if a > b { a } else { b },
    );
    // The powers and their sum in one pass, the sum taken lane by lane as `sum` does.
    let mut acc = [0.0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (a, v) in acc.iter_mut().zip(c.iter_mut()) {
            *v = exp(*v - max);
            *a += *v;
        }
    }
    let mut tail = 0.0;
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        tail += *v;
    }
    (max, acc.iter().fold(tail, |a, x| a + x))
}

/// The Taylor polynomial of e^f to degree 6, highest power first: [`exp`]'s, and the
/// f32 attention kernels' in [`super::flash`], so that all give the same bits.
pub(super) const EXP_TAYLOR: [f32; 7] = [
    1.0 / 720.0,
    1.0 / 120.0,
    1.0 / 24.0,
    1.0 / 6.0,
    0.5,
    1.0,
    1.0,
];

/// e^x to about 2e-7 relative error, branch-free so that loops over it vectorise.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E;
    let n = (t + 0.5).floor();
    let f = (t - n) * std::f32::consts::LN_2;
    // Horner's rule in fused multiply-adds: half the instructions of separate ones.
    let mut p = EXP_TAYLOR[0];
    for c in &EXP_TAYLOR[1..] {
        p = p.mul_add(f, *c);
    }
    // 2^n: with n + 127 + 2^23 as a float, n + 127 sits in the low mantissa bits;
    // shifted up they are the exponent field. (Unlike `as i32`, this vectorises.)
    p * f32::from_bits((n + 8_388_735.0).to_bits() << 23)
}

/// `out = silu(gate) · up` lane by lane, `silu(g) = g / (1 + e^-g)`: the activation
/// of a feed-forward block, as the scalar loop (which the compiler vectorises) with
/// [`exp`]. `quick` (a long prompt whose pass runs partly in bf16 already) allows the
/// AVX-512 kernel instead, where the CPU has it (`avx512::silu_mul`): sixteen lanes at
/// a time, within 6e-6 of the exact activation, but not the scalar loop's bits, which
/// a short prompt's or a decoding step's answer keeps.
pub(super) fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32], quick: bool) {
    assert!(
        gate.len() == out.len() && up.len() == out.len(),
        "silu_mul: slices of different lengths"
    );
    #[cfg(target_arch = "x86_64")]
    let done = if quick {
        avx512::silu_mul(gate, up, out)
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = {
        let _ = quick;
        0
    };
    for ((a, g), u) in out[done..].iter_mut().zip(&gate[done..]).zip(&up[done..]) {
        *a = g / (1.0 + exp(-g)) * u;
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::flash::avx512::quick_exp;

    /// [`super::silu_mul`] on the slices' whole vectors where the CPU has AVX-512 F;
    /// returns how many lanes it wrote (none elsewhere).
    pub(super) fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) -> usize {
        if !std::is_x86_feature_detected!("avx512f") {
            return 0;
        }
        let done = out.len() / 16 * 16;
        assert!(gate.len() >= done && up.len() >= done);
        // SAFETY: AVX-512 F is present (checked above); the three slices are cut to
        // `done` values, a whole number of vectors.
        unsafe { vectors(&gate[..done], &up[..done], &mut out[..done]) };
        done
    }

    /// [`silu_mul`] on whole vectors: `e^-g` by the long prompt's softmax's exponential (its
    /// argument held at or below 88, where e^x is still finite), and `1 / (1 + e^-g)`
    /// as `vrcp14ps` (14 bits) sharpened by one Newton step (`r·(2 - d·r)`, about 28
    /// bits, past f32's 24), instead of a division, which the cores run at a fraction of
    /// their multiply rate.
    ///
    /// # Safety
    /// The CPU has AVX-512 F; the slices hold the same whole number of vectors.
    #[target_feature(enable = "avx512f")]
    unsafe fn vectors(gate: &[f32], up: &[f32], out: &mut [f32]) {
        let (one, two, top) = (
            _mm512_set1_ps(1.0),
            _mm512_set1_ps(2.0),
            _mm512_set1_ps(88.0),
        );
        for i in (0..out.len()).step_by(16) {
            // SAFETY: `i + 16` ≤ each slice's length (whole vectors, the caller's promise).
            unsafe {
                let g = _mm512_loadu_ps(gate.as_ptr().add(i));
                let u = _mm512_loadu_ps(up.as_ptr().add(i));
                let minus = _mm512_sub_ps(_mm512_setzero_ps(), g);
                // The constant first: a NaN lane keeps its NaN.
                let d = _mm512_add_ps(one, quick_exp(_mm512_min_ps(top, minus)));
                let r = _mm512_rcp14_ps(d);
                let r = _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, two));
                _mm512_storeu_ps(
                    out.as_mut_ptr().add(i),
                    _mm512_mul_ps(_mm512_mul_ps(g, r), u),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_the_standard_library() {
        for i in -2000..=2000 {
            let x = i as f32 / 25.0;
            let want = x.exp();
            let got = exp(x);
            // Range reduction in f32 loses a little more for large |x|.
            let tolerance = if x.abs() <= 10.0 { 1e-6 } else { 1e-5 };
            assert!(
                (got - want).abs() <= want * tolerance,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert!(exp(-1000.0) < 1e-37);
        assert!(exp(1000.0).is_finite());
    }

    #[test]
    fn silu_mul_matches_the_exact_activation() {
        // Gates over ±100 (and the tail past whole vectors), the extremes, and a NaN.
        let mut gate: Vec<f32> = (-2000..=2000).map(|i| i as f32 / 20.0).collect();
        gate.extend([1e30, -1e30, 0.0, -0.0, f32::NAN]);
        let up: Vec<f32> = (0..gate.len())
            .map(|i| 0.5 + (i % 7) as f32 / 4.0)
            .collect();
        let mut out = vec![0.0; gate.len()];
        silu_mul(&gate, &up, &mut out, true);
        let mut exact = vec![0.0; gate.len()];
        silu_mul(&gate, &up, &mut exact, false);
        for ((g, u), (got, e)) in gate.iter().zip(&up).zip(out.iter().zip(&exact)) {
            // Without `quick`, the scalar loop's own bits.
            let scalar = g / (1.0 + exp(-g)) * u;
            assert!(e.to_bits() == scalar.to_bits() || (e.is_nan() && scalar.is_nan()));
            let (g64, u64) = (f64::from(*g), f64::from(*u));
            let want = g64 / (1.0 + (-g64).exp()) * u64;
            if g.is_nan() {
                assert!(got.is_nan(), "silu({g}) = {got}");
                continue;
            }
            // Within the exponential's 5e-6; below -88, where e^-g is held at e⁸⁸, as
            // small as `g·e⁻⁸⁸` instead of zero.
            let err = (f64::from(*got) - want).abs();
            assert!(
                err <= 6e-6 * want.abs() + 1e-37 * g64.abs(),
                "silu({g}) · {u} = {got}, want {want}"
            );
        }
    }

    #[test]
    fn softmax_sums_to_one_and_keeps_order() {
        let mut row = vec![1.0, 3.0, -2.0, 0.5];
        softmax(&mut row);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(row[1] > row[0] && row[0] > row[3] && row[3] > row[2]);
    }
}
