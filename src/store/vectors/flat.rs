//! A tenant's vectors in memory, flat, one slot after another, at the precision the
//! operator chose (`index.precision`): f32 as stored, f16 (half the memory), or int8
//! with one scale per vector (a quarter). Scores against a query are dot products
//! (stored vectors are unit length, so that is their cosine); the quantized forms are
//! scored asymmetrically, the query staying f32, and the store re-scores the best
//! candidates against the exact f32 vectors in sled.

use half::f16;
use half::slice::HalfFloatSliceExt;
use serde::{Deserialize, Serialize};

/// How vectors are kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 4 bytes a dimension; scores are exact.
    #[default]
    F32,
    /// 2 bytes a dimension.
    F16,
    /// 1 byte a dimension and one f32 scale a vector.
    Int8,
}

impl Precision {
    /// `f32`, `f16` or `int8`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Int8 => "int8",
        }
    }

    /// Whether scores from this precision are approximate (and worth re-scoring).
    pub fn is_quantized(self) -> bool {
        self != Self::F32
    }

    /// How many candidates, best by this precision's scores, are re-scored exactly to
    /// answer a top `k`: `k` itself at f32, where scores are exact.
    pub fn candidates(self, k: usize) -> usize {
        if self.is_quantized() {
            (k * 2).max(k + 16)
        } else {
            k
        }
    }
}

/// Lanes summed side by side: wide enough for the compiler to keep several SIMD
/// accumulators in flight (AVX2 or AVX-512 under `target-cpu=native`).
const LANES: usize = 64;

/// The sum of `acc`, halving it in vector-wide steps: a plain left-to-right sum is a
/// chain of 64 dependent scalar adds and costs more than the products themselves.
#[inline(always)]
fn reduce(acc: &[f32; LANES]) -> f32 {
    fn halve<const N: usize, const H: usize>(acc: &[f32; N]) -> [f32; H] {
        let mut out = [0f32; H];
        for i in 0..H {
            out[i] = acc[i] + acc[i + H];
        }
        out
    }
    let a: [f32; 32] = halve(acc);
    let a: [f32; 16] = halve(&a);
    let a: [f32; 8] = halve(&a);
    let a: [f32; 4] = halve(&a);
    let a: [f32; 2] = halve(&a);
    a[0] + a[1]
}

/// The dot product of two f32 slices of equal length.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..LANES {
            acc[i] = x[i].mul_add(y[i], acc[i]);
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    reduce(&acc) + tail
}

/// The dot product of an f32 query and int8 codes (before the vector's scale).
fn dot_i8(q: &[f32], codes: &[i8]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut cq = q.chunks_exact(LANES);
    let mut cc = codes.chunks_exact(LANES);
    for (x, y) in (&mut cq).zip(&mut cc) {
        for i in 0..LANES {
            acc[i] = x[i].mul_add(f32::from(y[i]), acc[i]);
        }
    }
    let tail: f32 = cq
        .remainder()
        .iter()
        .zip(cc.remainder())
        .map(|(x, &y)| x * f32::from(y))
        .sum();
    reduce(&acc) + tail
}

/// The dot product of an f32 query and f16 values, widened a block at a time.
fn dot_f16(q: &[f32], half: &[f16]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut wide = [0f32; LANES];
    let mut cq = q.chunks_exact(LANES);
    let mut ch = half.chunks_exact(LANES);
    for (x, h) in (&mut cq).zip(&mut ch) {
        h.convert_to_f32_slice(&mut wide);
        for i in 0..LANES {
            acc[i] = x[i].mul_add(wide[i], acc[i]);
        }
    }
    let tail: f32 = cq
        .remainder()
        .iter()
        .zip(ch.remainder())
        .map(|(x, h)| x * h.to_f32())
        .sum();
    reduce(&acc) + tail
}

/// Vectors of one width, flat, at one precision.
#[derive(Debug, Clone)]
pub struct FlatVectors {
    dim: usize,
    precision: Precision,
    full: Vec<f32>,
    half: Vec<f16>,
    codes: Vec<i8>,
    scales: Vec<f32>,
    len: usize,
}

impl FlatVectors {
    /// None yet.
    pub fn new(dim: usize, precision: Precision) -> Self {
        Self {
            dim,
            precision,
            full: Vec::new(),
            half: Vec::new(),
            codes: Vec::new(),
            scales: Vec::new(),
            len: 0,
        }
    }

    /// How many vectors.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Their width.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The precision they are kept at.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Room for `more` vectors without reallocating.
    pub fn reserve(&mut self, more: usize) {
        match self.precision {
            Precision::F32 => self.full.reserve(more * self.dim),
            Precision::F16 => self.half.reserve(more * self.dim),
            Precision::Int8 => {
                self.codes.reserve(more * self.dim);
                self.scales.reserve(more);
            }
        }
    }

    /// Appends `v` (`dim` floats) as the last slot.
    pub fn push(&mut self, v: &[f32]) {
        debug_assert_eq!(v.len(), self.dim);
        match self.precision {
            Precision::F32 => self.full.extend_from_slice(v),
            Precision::F16 => self.half.extend(v.iter().map(|&x| f16::from_f32(x))),
            Precision::Int8 => {
                let (scale, codes) = quantize(v);
                self.codes.extend(codes);
                self.scales.push(scale);
            }
        }
        self.len += 1;
    }

    /// Replaces the vector in `slot`.
    pub fn set(&mut self, slot: usize, v: &[f32]) {
        let range = slot * self.dim..(slot + 1) * self.dim;
        match self.precision {
            Precision::F32 => self.full[range].copy_from_slice(v),
            Precision::F16 => self.half[range].convert_from_f32_slice(v),
            Precision::Int8 => {
                let (scale, codes) = quantize(v);
                for (dst, c) in self.codes[range].iter_mut().zip(codes) {
                    *dst = c;
                }
                self.scales[slot] = scale;
            }
        }
    }

    /// Appends the vector in `other`'s `slot` (of the same width and precision).
    pub fn push_from(&mut self, other: &FlatVectors, slot: usize) {
        let range = slot * self.dim..(slot + 1) * self.dim;
        match self.precision {
            Precision::F32 => self.full.extend_from_slice(&other.full[range]),
            Precision::F16 => self.half.extend_from_slice(&other.half[range]),
            Precision::Int8 => {
                self.codes.extend_from_slice(&other.codes[range]);
                self.scales.push(other.scales[slot]);
            }
        }
        self.len += 1;
    }

    /// Overwrites slot `at` with the vector in `other`'s `slot` (of the same width and
    /// precision), as stored: no decoding, no rounding.
    pub fn copy_from(&mut self, at: usize, other: &FlatVectors, slot: usize) {
        let to = at * self.dim..(at + 1) * self.dim;
        let from = slot * self.dim..(slot + 1) * self.dim;
        match self.precision {
            Precision::F32 => self.full[to].copy_from_slice(&other.full[from]),
            Precision::F16 => self.half[to].copy_from_slice(&other.half[from]),
            Precision::Int8 => {
                self.codes[to].copy_from_slice(&other.codes[from]);
                self.scales[at] = other.scales[slot];
            }
        }
    }

    /// The vector in `slot` as f32 (exact at f32, the nearest value otherwise).
    pub fn decode(&self, slot: usize, out: &mut [f32]) {
        let range = slot * self.dim..(slot + 1) * self.dim;
        match self.precision {
            Precision::F32 => out.copy_from_slice(&self.full[range]),
            Precision::F16 => self.half[range].convert_to_f32_slice(out),
            Precision::Int8 => {
                let scale = self.scales[slot];
                for (o, &c) in out.iter_mut().zip(&self.codes[range]) {
                    *o = f32::from(c) * scale;
                }
            }
        }
    }

    /// The score of the vector in `slot` against `query`: their dot product.
    #[inline]
    pub fn score(&self, slot: usize, query: &[f32]) -> f32 {
        let range = slot * self.dim..(slot + 1) * self.dim;
        match self.precision {
            Precision::F32 => dot(&self.full[range], query),
            Precision::F16 => dot_f16(query, &self.half[range]),
            Precision::Int8 => dot_i8(query, &self.codes[range]) * self.scales[slot],
        }
    }

    /// Starts loading the vector in `slot` into the cache, ahead of scoring it.
    #[inline(always)]
    pub fn prefetch(&self, slot: usize) {
        let range = slot * self.dim..(slot + 1) * self.dim;
        match self.precision {
            Precision::F32 => super::prefetch::prefetch(self.full.get(range).unwrap_or(&[]), 2),
            Precision::F16 => super::prefetch::prefetch(self.half.get(range).unwrap_or(&[]), 2),
            Precision::Int8 => super::prefetch::prefetch(self.codes.get(range).unwrap_or(&[]), 2),
        }
    }

    /// Bytes held for the vectors.
    pub fn bytes(&self) -> usize {
        self.full.capacity() * 4
            + self.half.capacity() * 2
            + self.codes.capacity()
            + self.scales.capacity() * 4
    }
}

/// One scale for the vector and its values as int8 codes: the largest magnitude maps
/// to ±127.
fn quantize(v: &[f32]) -> (f32, impl Iterator<Item = i8> + '_) {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let codes = v
        .iter()
        .map(move |x| (x / scale).round().clamp(-127.0, 127.0) as i8);
    (scale, codes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect();
        let n = dot(&v, &v).sqrt();
        v.iter_mut().for_each(|x| *x /= n);
        v
    }

    #[test]
    fn dot_matches_a_plain_sum_for_any_width() {
        for dim in [1, 7, 32, 33, 384, 385] {
            let a = unit(1, dim);
            let b = unit(2, dim);
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-5, "dim {dim}");
        }
    }

    #[test]
    fn each_precision_scores_close_to_the_exact_dot_product() {
        let dim = 384;
        for (precision, tolerance) in [
            (Precision::F32, 1e-6),
            (Precision::F16, 2e-3),
            (Precision::Int8, 2e-2),
        ] {
            let mut flat = FlatVectors::new(dim, precision);
            let vs: Vec<Vec<f32>> = (0..20).map(|i| unit(i + 10, dim)).collect();
            for v in &vs {
                flat.push(v);
            }
            let q = unit(99, dim);
            for (slot, v) in vs.iter().enumerate() {
                let exact = dot(v, &q);
                let got = flat.score(slot, &q);
                assert!(
                    (got - exact).abs() < tolerance,
                    "{precision:?} slot {slot}: {got} vs {exact}"
                );
            }
            // Overwriting a slot and copying it keep the same values.
            flat.set(3, &vs[7]);
            let mut copy = FlatVectors::new(dim, precision);
            copy.push_from(&flat, 3);
            copy.push_from(&flat, 0);
            assert_eq!(copy.len(), 2);
            assert!((copy.score(0, &q) - flat.score(7, &q)).abs() < 1e-6);
            copy.copy_from(1, &flat, 7);
            assert_eq!(copy.score(1, &q), flat.score(7, &q));
            let mut out = vec![0.0; dim];
            flat.decode(7, &mut out);
            assert!((dot(&out, &vs[7]) - 1.0).abs() < tolerance * 2.0);
        }
    }

    #[test]
    fn quantized_forms_take_half_and_about_a_quarter_of_the_memory() {
        let dim = 384;
        let sizes: Vec<usize> = [Precision::F32, Precision::F16, Precision::Int8]
            .into_iter()
            .map(|p| {
                let mut flat = FlatVectors::new(dim, p);
                flat.reserve(1000);
                for i in 0..1000 {
                    flat.push(&unit(i, dim));
                }
                flat.bytes()
            })
            .collect();
        assert_eq!(sizes[0], 1000 * dim * 4);
        assert_eq!(sizes[1], 1000 * dim * 2);
        assert_eq!(sizes[2], 1000 * (dim + 4));
    }
}
