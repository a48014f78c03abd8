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

/// e^x to about 2e-7 relative error, branch-free so that loops over it vectorise.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * std::f32::consts::LOG2_E;
    let n = (t + 0.5).floor();
    let f = (t - n) * std::f32::consts::LN_2;
    // Horner's rule in fused multiply-adds: half the instructions of separate ones.
    let p = (1.0 / 720.0f32).mul_add(f, 1.0 / 120.0);
    let p = p.mul_add(f, 1.0 / 24.0);
    let p = p.mul_add(f, 1.0 / 6.0);
    let p = p.mul_add(f, 1.0 / 2.0);
    let p = p.mul_add(f, 1.0);
    let p = p.mul_add(f, 1.0);
    // 2^n: with n + 127 + 2^23 as a float, n + 127 sits in the low mantissa bits;
    // shifted up they are the exponent field. (Unlike `as i32`, this vectorises.)
    p * f32::from_bits((n + 8_388_735.0).to_bits() << 23)
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
    fn softmax_sums_to_one_and_keeps_order() {
        let mut row = vec![1.0, 3.0, -2.0, 0.5];
        softmax(&mut row);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(row[1] > row[0] && row[0] > row[3] && row[3] > row[2]);
    }
}
