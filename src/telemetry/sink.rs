//! Where log lines go. Each is formatted on the thread that logs it and appended to a
//! shared buffer; a thread of its own writes the buffer to stderr, a few milliseconds'
//! worth of lines to a write. A busy server so makes at most a couple of hundred write
//! calls a second instead of one per line, its runtime workers never wait on each
//! other for stderr, and a reader of stderr that falls behind (journald under load, a
//! full pipe to a log shipper) never stalls a worker, nor so the requests it serves.
//! The buffer is bounded: when it is full a line is dropped, and how many were dropped
//! is written with the next batch.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use tracing_subscriber::fmt::MakeWriter;

/// The most bytes waiting to be written.
const PENDING_BYTES: usize = 4 * 1024 * 1024;

/// A buffer that grew past this while the log was busy is not kept once written.
const KEPT_BYTES: usize = 256 * 1024;

/// How long the writer lets lines gather once woken, before it takes them.
const GATHER: Duration = Duration::from_millis(5);

/// How long [`flush`] waits for the writer before giving up on it.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
    /// Lines accepted so far, and of those, lines written (what a flush waits for).
    accepted: u64,
    written: u64,
    /// The writer waits for bytes and must be woken for them.
    asleep: bool,
    /// A flush waits: write without gathering first.
    hurry: bool,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer.
    wake: Condvar,
    /// Wakes flushes, after each write.
    written: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Appends one line, or counts it dropped when the buffer is full.
    fn push(&self, line: &[u8]) {
        let mut pending = self.lock();
        if pending.bytes.len() + line.len() > PENDING_BYTES {
            // The drop is reported with the next write, which this may have to start.
            pending.dropped += 1;
        } else {
            pending.bytes.extend_from_slice(line);
            pending.accepted += 1;
        }
        if pending.asleep {
            pending.asleep = false;
            self.wake.notify_one();
        }
    }
}

/// The writer's loop: sleeps until there are bytes, lets more gather for a moment,
/// takes them all and writes them. Returns once `stop` is set and nothing is left.
fn write_lines(shared: &Shared, mut out: impl Write, gather: Duration, stop: &AtomicBool) {
    let mut spare = Vec::new();
    loop {
        let (accepted, dropped) = {
            let mut pending = shared.lock();
            while pending.bytes.is_empty() && pending.dropped == 0 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                pending.asleep = true;
                pending = shared.wake.wait(pending).unwrap_or_else(|e| e.into_inner());
            }
            if !pending.hurry {
                // Asleep stays false: lines arriving now need not wake anyone.
                pending = shared
                    .wake
                    .wait_timeout(pending, gather)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            std::mem::swap(&mut pending.bytes, &mut spare);
            pending.hurry = false;
            (pending.accepted, std::mem::take(&mut pending.dropped))
        };
        let _ = out.write_all(&spare);
        if dropped > 0 {
            let _ = writeln!(
                out,
                "ragbox: {dropped} log lines dropped: the log's reader did not keep up"
            );
        }
        let _ = out.flush();
        spare.clear();
        if spare.capacity() > KEPT_BYTES {
            spare = Vec::new();
        }
        shared.lock().written = accepted;
        shared.written.notify_all();
    }
}

static SHARED: OnceLock<Option<Arc<Shared>>> = OnceLock::new();

/// The shared buffer, with its writer started on first use; `None` where no thread
/// could be started (lines are then written where they are logged).
fn shared() -> Option<&'static Shared> {
    SHARED
        .get_or_init(|| {
            let shared = Arc::new(Shared::default());
            let theirs = shared.clone();
            std::thread::Builder::new()
                .name("ragbox-log".into())
                .spawn(move || {
                    static NEVER: AtomicBool = AtomicBool::new(false);
                    write_lines(&theirs, std::io::stderr(), GATHER, &NEVER);
                })
                .ok()
                .map(|_| shared)
        })
        .as_deref()
}

/// The log subscriber's writer: one [`Line`] per event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sink;

impl MakeWriter<'_> for Sink {
    type Writer = Line;

    fn make_writer(&self) -> Line {
        Line(Vec::new())
    }
}

/// One event's bytes, appended whole when dropped (so lines never interleave).
pub struct Line(Vec<u8>);

impl Write for Line {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        match shared() {
            Some(shared) => shared.push(&self.0),
            None => {
                let _ = std::io::stderr().write_all(&self.0);
            }
        }
    }
}

/// Waits (up to two seconds) until every line logged so far is written: for the end of
/// the process, whose buffered lines would otherwise be lost.
pub fn flush() {
    let Some(shared) = SHARED.get().and_then(Option::as_deref) else {
        return;
    };
    let deadline = Instant::now() + FLUSH_WAIT;
    let mut pending = shared.lock();
    let target = pending.accepted;
    pending.hurry = true;
    shared.wake.notify_one();
    while pending.written < target {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        pending = shared
            .written
            .wait_timeout(pending, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<Vec<u8>>>);

    impl Write for Out {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text(out: &Out) -> String {
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    fn writer(
        shared: &Arc<Shared>,
        out: &Out,
        stop: &Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<()> {
        let (shared, out, stop) = (shared.clone(), out.clone(), stop.clone());
        std::thread::spawn(move || write_lines(&shared, out, Duration::from_millis(1), &stop))
    }

    fn stop(shared: &Shared, stop: &AtomicBool, writer: std::thread::JoinHandle<()>) {
        stop.store(true, Ordering::Relaxed);
        shared.lock().asleep = false;
        shared.wake.notify_one();
        assert!(writer.join().is_ok(), "the writer ends");
    }

    fn wait_for(out: &Out, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !text(out).contains(needle) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        text(out)
    }

    fn wait_asleep(shared: &Shared) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !shared.lock().asleep && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(
            shared.lock().asleep,
            "the writer sleeps when all is written"
        );
    }

    #[test]
    fn lines_are_written_in_order_and_drops_are_reported() {
        let shared = Arc::new(Shared::default());
        let out = Out::default();
        let halt = Arc::new(AtomicBool::new(false));
        for i in 0..3 {
            shared.push(format!("line {i}\n").as_bytes());
        }
        // A line that does not fit in what is left of the buffer is dropped whole.
        shared.push(&vec![b'x'; PENDING_BYTES]);
        shared.push(b"line 3\n");
        let running = writer(&shared, &out, &halt);
        assert_eq!(
            wait_for(&out, "dropped"),
            "line 0\nline 1\nline 2\nline 3\n\
             ragbox: 1 log lines dropped: the log's reader did not keep up\n",
            "the line that did not fit was dropped, and its drop reported after the batch"
        );
        // Once the writer sleeps again, a new line wakes it.
        wait_asleep(&shared);
        shared.push(b"line 4\n");
        assert!(wait_for(&out, "line 4").ends_with("line 4\n"));
        // So does a line that is only dropped: its drop must still be reported.
        wait_asleep(&shared);
        shared.push(&vec![b'x'; PENDING_BYTES + 1]);
        let tail = "line 4\nragbox: 1 log lines dropped: the log's reader did not keep up\n";
        assert!(
            wait_for(&out, tail).ends_with(tail),
            "the lone drop is reported"
        );
        stop(&shared, &halt, running);
        assert_eq!(
            shared.lock().written,
            5,
            "every accepted line counts as written"
        );
    }
}
