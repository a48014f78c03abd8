//! f16 to f32, sixteen values at a time: one F16C instruction per eight where the build
//! targets a CPU that has it (ragbox builds for the CPU it runs on), else plain
//! arithmetic that the compiler vectorises.
#![allow(unsafe_code)]

use half::f16;

/// Values widened per call.
pub(super) const WIDTH: usize = 16;

/// `src` as f32.
#[inline(always)]
pub(super) fn widen16(src: &[f16; WIDTH]) -> [f32; WIDTH] {
    #[cfg(all(
        target_arch = "x86_64",
        target_feature = "avx",
        target_feature = "f16c"
    ))]
    {
        use std::arch::x86_64::{_mm_loadu_si128, _mm256_cvtph_ps, _mm256_storeu_ps};
        let mut out = [0f32; WIDTH];
        // SAFETY: the build targets CPUs with AVX and F16C (checked at compile time);
        // both loads read 8 of the 16 values of `src`, both stores write 8 of `out`.
        unsafe {
            let p = src.as_ptr();
            let lo = _mm256_cvtph_ps(_mm_loadu_si128(p.cast()));
            let hi = _mm256_cvtph_ps(_mm_loadu_si128(p.add(8).cast()));
            _mm256_storeu_ps(out.as_mut_ptr(), lo);
            _mm256_storeu_ps(out.as_mut_ptr().add(8), hi);
        }
        out
    }
    #[cfg(not(all(
        target_arch = "x86_64",
        target_feature = "avx",
        target_feature = "f16c"
    )))]
    {
        src.map(widen)
    }
}

/// f16 to f32 in plain arithmetic, so that loops over it vectorise: the f16's exponent
/// and mantissa bits, moved into an f32's, read 2^112 too small (subnormals included);
/// infinities and NaN are not expected in the cache.
#[inline(always)]
pub(super) fn widen(h: f16) -> f32 {
    let bits = u32::from(h.to_bits());
    let magnitude = f32::from_bits((bits & 0x7fff) << 13) * f32::from_bits((127 + 112) << 23);
    f32::from_bits(magnitude.to_bits() | ((bits & 0x8000) << 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widen_matches_half_for_every_finite_value() {
        let finite: Vec<f16> = (0..=u16::MAX)
            .map(f16::from_bits)
            .filter(|h| h.is_finite())
            .collect();
        for h in &finite {
            assert_eq!(
                widen(*h).to_bits(),
                h.to_f32().to_bits(),
                "{:#06x}",
                h.to_bits()
            );
        }
        for chunk in finite.chunks_exact(WIDTH) {
            let block: [f16; WIDTH] = chunk.try_into().unwrap();
            let wide = widen16(&block);
            for (w, h) in wide.iter().zip(chunk) {
                assert_eq!(w.to_bits(), h.to_f32().to_bits(), "{:#06x}", h.to_bits());
            }
        }
    }
}
