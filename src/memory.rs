//! Memory given back to the system when a burst of work is over.
//!
//! The binary allocates through mimalloc (`src/main.rs`), which keeps freed pages of a
//! thread for reuse and returns them only as that thread allocates again. A thread that
//! goes quiet after a burst (a model that just loaded, a model thread after a wave of
//! requests) would hold its peak for good; [`give_back`] returns its free pages now.
//! Where mimalloc is not the allocator (the library's tests), it touches only
//! mimalloc's own empty heap.
//!
//! `unsafe` here is one call across the C boundary into the allocator that is already
//! linked (the `mimalloc` crate builds it): a function with no pointer arguments, no
//! return value and no preconditions.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::ffi::{c_int, c_long};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the embedding model's thread waits for more work before it lets go what
/// its last burst grew (batch buffers) and gives its free pages back: long enough that
/// a burst of requests reuses them, short enough that an idle server holds little
/// beyond the weights. The generation model's thread waits `generation.keep_warm_secs`
/// instead: its buffers cost a chat's first token more to grow back.
pub const MODEL_IDLE: Duration = Duration::from_secs(2);

/// `mi_option_purge_delay` in the `mi_option_t` of the mimalloc that `mimalloc` builds
/// (v3): milliseconds before the free pages of a thread are returned (default 1000),
/// counted only while that thread goes on allocating.
const PURGE_DELAY: c_int = 15;

unsafe extern "C" {
    /// mimalloc's `mi_collect`: frees the calling thread's unused pages (and, forced,
    /// those of threads that ended) back to the OS.
    fn mi_collect(force: bool);
    fn mi_option_get(option: c_int) -> c_long;
    fn mi_option_set(option: c_int, value: c_long);
}

/// mimalloc's purge delay now, in milliseconds.
pub fn purge_delay_ms() -> i64 {
    // SAFETY: reads one option by its index; no pointers, no preconditions.
    unsafe { mi_option_get(PURGE_DELAY) }
}

fn set_purge_delay(ms: c_long) {
    // SAFETY: sets one option by its index; mimalloc reads it at each purge.
    unsafe { mi_option_set(PURGE_DELAY, ms) }
}

/// While the models load, every page freed is returned at once: loading frees
/// several times what it keeps (files as read, weights before conversion), on threads
/// that then go quiet and would otherwise keep those pages. Dropping the guard puts
/// the delay back (serving allocates and frees all the time; returning at once there
/// costs page faults).
/// Guards may overlap (servers started side by side): the first sets the delay to 0,
/// the last puts back the one it found.
#[must_use = "the delay is back when this is dropped"]
pub struct PurgeAtOnce(());

/// Guards alive, and the delay the first one found.
static GUARDS: Mutex<(usize, c_long)> = Mutex::new((0, 0));

/// Purges at once until the returned guard drops.
pub fn purge_at_once() -> PurgeAtOnce {
    let mut guards = GUARDS.lock().unwrap_or_else(|e| e.into_inner());
    if guards.0 == 0 {
        // SAFETY: as in `purge_delay_ms`.
        guards.1 = unsafe { mi_option_get(PURGE_DELAY) };
        set_purge_delay(0);
    }
    guards.0 += 1;
    PurgeAtOnce(())
}

impl Drop for PurgeAtOnce {
    fn drop(&mut self) {
        let mut guards = GUARDS.lock().unwrap_or_else(|e| e.into_inner());
        guards.0 -= 1;
        if guards.0 == 0 {
            set_purge_delay(guards.1);
        }
    }
}

/// Returns the calling thread's free memory to the system. Costs a walk over the
/// thread's heap: call it when work is over, not per request.
pub fn give_back() {
    // SAFETY: mi_collect takes no pointers and may be called from any thread at any
    // time; it only releases pages that hold no live allocation.
    unsafe { mi_collect(true) }
}

/// Least time between two [`give_back_when_parked`] walks of one thread's heap.
const PARKED_EVERY: Duration = Duration::from_secs(1);

/// For a runtime's worker as it parks (runs out of work): [`give_back`], at most once
/// every [`PARKED_EVERY`] on each thread. Workers that served a burst and then went
/// quiet return what the burst freed; under load, where workers park all the time,
/// the walk runs at most once a second on each.
pub fn give_back_when_parked() {
    thread_local! {
        static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    if LAST.with(|last| due(last, Instant::now())) {
        give_back();
    }
}

/// Whether a walk last made at `last` may run again at `now`; if so, `now` is the last.
fn due(last: &Cell<Option<Instant>>, now: Instant) -> bool {
    let due = last
        .get()
        .is_none_or(|t| now.saturating_duration_since(t) >= PARKED_EVERY);
    if due {
        last.set(Some(now));
    }
    due
}

/// [`give_back`] on the calling thread and on every thread of rayon's pool (which the
/// models' kernels allocate on).
pub fn give_back_everywhere() {
    give_back();
    rayon::broadcast(|_| give_back());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_thread_walks_its_heap_at_most_once_a_second() {
        let last = Cell::new(None);
        let start = Instant::now();
        assert!(due(&last, start), "the first park walks");
        assert!(!due(&last, start + Duration::from_millis(999)));
        assert_eq!(
            last.get(),
            Some(start),
            "a skipped park keeps the last walk"
        );
        assert!(due(&last, start + PARKED_EVERY));
        assert!(!due(
            &last,
            start + PARKED_EVERY + Duration::from_millis(500)
        ));
        assert!(due(
            &last,
            start + 2 * PARKED_EVERY + Duration::from_millis(1)
        ));
    }

    #[test]
    fn the_option_index_is_the_purge_delay_and_the_guard_restores_it() {
        // The bundled mimalloc's purge delay is 1000 ms by default (no other option of
        // its has that default): index 15 is that option.
        let before = purge_delay_ms();
        assert_eq!(before, 1000);
        let first = purge_at_once();
        let second = purge_at_once();
        assert_eq!(purge_delay_ms(), 0);
        drop(first);
        assert_eq!(purge_delay_ms(), 0, "another guard is still alive");
        drop(second);
        assert_eq!(purge_delay_ms(), before);
    }
}
