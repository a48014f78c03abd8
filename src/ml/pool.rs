//! Work spread over candle's spinning pool, the threads the 4-bit products run on, so
//! that the steps between products wake no second pool beside them.

use std::sync::Mutex;

/// `f(i, &mut items[i])` for every item, each on one task of the pool; returns once all
/// are done. Must not be called from inside a task of the pool.
pub(super) fn for_each<T: Send>(items: &mut [T], f: impl Fn(usize, &mut T) + Sync) {
    let slots: Vec<Mutex<&mut T>> = items.iter_mut().map(Mutex::new).collect();
    candle_core::utils::barrier_pool().execute_chunked(slots.len(), |range| {
        for i in range {
            // Each slot is locked by its one task only; a panic in a task is raised
            // on the caller by the pool, so a poisoned lock is never seen.
            if let Ok(mut item) = slots[i].lock() {
                f(i, &mut item);
            }
        }
    });
}
