//! `TEST_LOG=1`: the servers' logs for the tests that run. In-process servers log
//! through a subscriber that writes to the test harness, so each line is shown with
//! its test (when it fails, or always with `-- --nocapture`); `ragbox` children's
//! stderr is passed on the same way. Without `TEST_LOG`, tests stay quiet.
//!
//! `TEST_LOG=1` logs at `RUST_LOG`'s filter, or `info` without it (as `ragbox serve`
//! does); any other value is itself the filter, e.g. `TEST_LOG=ragbox=debug`.

use std::io::IsTerminal;
use std::sync::Once;

use tracing_subscriber::EnvFilter;

/// The filter `TEST_LOG` asks for, if it asks for logs at all.
fn filter() -> Option<String> {
    let asked = std::env::var("TEST_LOG").ok()?;
    match asked.as_str() {
        "" | "0" => None,
        "1" => Some(std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned())),
        filter => Some(filter.to_owned()),
    }
}

/// Whether `TEST_LOG` asks for logs.
pub fn enabled() -> bool {
    filter().is_some()
}

/// Installs the test subscriber, once per test binary, when `TEST_LOG` asks for it.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if let Some(filter) = filter() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(EnvFilter::new(filter))
                .with_test_writer()
                .with_ansi(std::io::stdout().is_terminal())
                .try_init();
        }
    });
}
