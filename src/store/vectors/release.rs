//! Letting go of sled's lock file: dropping the store waits until sled's background
//! threads have released it, so that this process can open the store again at once.

use std::path::PathBuf;

/// How long dropping the store waits for sled to let go of its lock file.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits, when the store is dropped, until sled's background threads have let go of
/// the database's lock file. They hold it a little past the `Db` itself (longer on a
/// busy machine), and until then this process cannot open the store again.
pub(super) struct LockRelease(pub(super) PathBuf);

impl Drop for LockRelease {
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + RELEASE_WAIT;
        loop {
            let Ok(file) = std::fs::File::open(&self.0) else {
                return;
            };
            match file.try_lock() {
                Err(std::fs::TryLockError::WouldBlock) => {}
                // Taken (and let go with `file`), or locks do not work here at all.
                _ => return,
            }
            if std::time::Instant::now() >= deadline {
                tracing::warn!(path = %self.0.display(), "the vector store's lock is still held");
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_waits_until_the_lock_file_is_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        // Another holder of the lock, as sled's background threads are after `Db` is
        // dropped: it lets go a little later, on a thread of its own.
        let holder = std::fs::File::create(&path).unwrap();
        holder.lock().unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(holder);
        });
        drop(LockRelease(path.clone()));
        // The lock is free as soon as the drop returns.
        let file = std::fs::File::open(&path).unwrap();
        assert!(
            file.try_lock().is_ok(),
            "drop returned while the lock was held"
        );
        releaser.join().unwrap();
    }
}
