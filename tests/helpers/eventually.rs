//! Waiting for a condition: the one way tests wait, instead of polling loops and
//! sleeps that guess how long something takes.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// What a probe answers: done (with a value), or not yet (with what it saw).
pub trait Observation {
    /// The value a finished wait returns.
    type Done;
    /// The value when done, else what was seen, for the panic message.
    fn into_done(self) -> Result<Self::Done, String>;
}

impl<T> Observation for Option<T> {
    type Done = T;
    fn into_done(self) -> Result<T, String> {
        self.ok_or_else(|| "None".to_owned())
    }
}

impl<T, E: Display> Observation for Result<T, E> {
    type Done = T;
    fn into_done(self) -> Result<T, String> {
        self.map_err(|seen| seen.to_string())
    }
}

/// Calls `probe` until it answers `Some` or `Ok`, and returns that value. Between
/// calls it pauses a little (5 ms, growing to 100 ms). When `timeout` has passed it
/// panics, naming `what` it waited for and the probe's last answer.
pub async fn eventually<F, Fut, O>(timeout: Duration, what: &str, mut probe: F) -> O::Done
where
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
    O: Observation,
{
    let started = Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        // A probe that hangs is cut off at the deadline too.
        let left = timeout.saturating_sub(started.elapsed());
        let seen = match tokio::time::timeout(left.max(pause), probe()).await {
            Ok(answer) => match answer.into_done() {
                Ok(done) => return done,
                Err(seen) => seen,
            },
            Err(_) => "the probe itself did not answer in time".to_owned(),
        };
        if started.elapsed() >= timeout {
            panic!("waited {timeout:?} for {what}; last seen: {seen}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}
