//! A bounds-checked front for `gemm`, the matrix-product kernel that candle itself runs
//! on the CPU. `gemm` takes raw pointers and strides; this module is the only place in
//! ragbox that uses `unsafe`, and it checks every index the kernel can touch before
//! handing the pointers over.
#![allow(unsafe_code)]

/// A read-only matrix: `data[row * rs + col * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> View<'a> {
    /// A row-major matrix with `cols` columns (or a window of a wider one: `rs` > `cols`).
    pub fn rows(data: &'a [f32], rs: usize) -> Self {
        Self { data, rs, cs: 1 }
    }

    /// The same data read as its transpose.
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rs: self.cs,
            cs: self.rs,
        }
    }

    fn reaches(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// Problem sizes at or below this many multiply-adds run on the calling thread.
const SERIAL_WORK: usize = 64 * 64 * 64;

/// `dst[m×n] = (dst if accumulate) + scale · a[m×k] · b[k×n]`, where `dst` is row-major
/// with row stride `dst_rs`. Large products are split across rayon's threads when
/// `parallel` is set. Fails, touching nothing, when a shape does not fit its slice.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    dst: &mut [f32],
    dst_rs: usize,
    a: View<'_>,
    b: View<'_>,
    (m, n, k): (usize, usize, usize),
    scale: f32,
    accumulate: bool,
    parallel: bool,
) -> Result<(), String> {
    let dst_view = View::rows(dst, dst_rs);
    if !dst_view.reaches(m, n) || !a.reaches(m, k) || !b.reaches(k, n) || n > dst_rs.max(1) {
        return Err(format!("matmul shapes do not fit: {m}×{k} · {k}×{n}"));
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let parallelism = if parallel && m * n * k > SERIAL_WORK {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    let signed = |x: usize| x as isize;
    // SAFETY: the checks above prove that every element the kernel reads or writes,
    // `ptr + row * rs + col * cs` for row < rows and col < cols, lies inside its slice;
    // `dst` is borrowed mutably, so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            signed(dst_rs),
            accumulate,
            a.data.as_ptr(),
            signed(a.cs),
            signed(a.rs),
            b.data.as_ptr(),
            signed(b.cs),
            signed(b.rs),
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

/// `a[m×k] · b[k×n]`, both row-major, one sum at a time: the reference of the tests.
#[cfg(test)]
pub(super) fn naive(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_naive_product_plain_transposed_and_accumulated() {
        let (m, n, k) = (37, 29, 70);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let want = naive(&a, &b, m, n, k);

        let mut dst = vec![0.0; m * n];
        matmul(
            &mut dst,
            n,
            View::rows(&a, k),
            View::rows(&b, n),
            (m, n, k),
            1.0,
            false,
            true,
        )
        .unwrap();
        for (x, y) in dst.iter().zip(&want) {
            assert!((x - y).abs() < 1e-3, "{x} vs {y}");
        }

        // b stored transposed (n×k), read through View::t; accumulate onto ones, scaled.
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut dst = vec![1.0; m * n];
        matmul(
            &mut dst,
            n,
            View::rows(&a, k),
            View::rows(&bt, k).t(),
            (m, n, k),
            0.5,
            true,
            false,
        )
        .unwrap();
        for (x, y) in dst.iter().zip(&want) {
            assert!((x - (1.0 + 0.5 * y)).abs() < 1e-3, "{x} vs {y}");
        }
    }

    #[test]
    fn refuses_shapes_that_overrun_a_slice() {
        let a = vec![0.0; 6];
        let b = vec![0.0; 6];
        let mut dst = vec![0.0; 3];
        let err = matmul(
            &mut dst,
            2,
            View::rows(&a, 3),
            View::rows(&b, 2),
            (2, 2, 3),
            1.0,
            false,
            false,
        );
        assert!(err.is_err());
        assert_eq!(dst, vec![0.0; 3]);
    }
}
