//! A hint to the CPU to start loading memory that is about to be read: the graph
//! search asks for the next neighbour's vector while it scores the current one, so the
//! load from RAM overlaps the arithmetic instead of stalling it.
//!
//! `unsafe` here (as in the matrix kernel and `memory`) is narrow: `_mm_prefetch` is only a hint.
//! It never reads the memory into the program, cannot fault on any address, and is
//! part of every x86-64 CPU (SSE); the pointer given always comes from a live slice.
#![allow(unsafe_code)]

/// Asks for the cache line holding the start of `data`, and the next `lines - 1`.
#[inline(always)]
pub(super) fn prefetch<T>(data: &[T], lines: usize) {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse"))]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let bytes = std::mem::size_of_val(data);
        let start = data.as_ptr().cast::<i8>();
        for line in 0..lines {
            let offset = line * 64;
            if offset >= bytes {
                break;
            }
            // SAFETY: a prefetch is a hint: it does not access memory as far as the
            // program is concerned and cannot fault; `offset` stays inside `data`.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        }
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse")))]
    let _ = (data, lines);
}
