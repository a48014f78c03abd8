//! Model files read through a read-only memory map, so that a loader takes each
//! tensor's bytes from the page cache straight into its own layout instead of first
//! copying the whole file into memory.

#![allow(unsafe_code)]

use std::path::Path;

/// Maps `path` read-only, for the length of one load.
pub(crate) fn map(path: &Path) -> std::io::Result<memmap2::Mmap> {
    let file = std::fs::File::open(path)?;
    // SAFETY: the map is only read, and only while a model loads. Only a file truncated
    // in place meanwhile could fault; `install.sh` replaces model files by renaming a
    // finished copy over them, which leaves the mapped file whole.
    unsafe { memmap2::Mmap::map(&file) }
}
