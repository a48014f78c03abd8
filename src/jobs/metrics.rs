//! The job metrics every process exports: queue depth, jobs in flight, job durations
//! and failures.

use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, Opts, Registry};

/// Series of one process's job runners.
#[derive(Clone)]
pub struct JobMetrics {
    depth: IntGauge,
    in_flight: IntGauge,
    duration: Histogram,
    finished: IntCounterVec,
}

/// Counts a job as in flight until dropped.
pub struct InFlight(IntGauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl JobMetrics {
    /// Makes the series and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self::unregistered()?;
        registry.register(Box::new(metrics.depth.clone()))?;
        registry.register(Box::new(metrics.in_flight.clone()))?;
        registry.register(Box::new(metrics.duration.clone()))?;
        registry.register(Box::new(metrics.finished.clone()))?;
        Ok(metrics)
    }

    /// The series, counted but not exported (CLI commands that run jobs).
    pub fn unregistered() -> Result<Self, prometheus::Error> {
        Ok(Self {
            depth: IntGauge::new(
                "jobs_queue_depth",
                "Document jobs waiting in the queue (read at each scrape)",
            )?,
            in_flight: IntGauge::new("jobs_in_flight", "Document jobs running in this process")?,
            duration: Histogram::with_opts(
                HistogramOpts::new(
                    "job_duration_seconds",
                    "Time one document job took in this process",
                )
                .buckets(vec![
                    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
                ]),
            )?,
            finished: IntCounterVec::new(
                Opts::new(
                    "jobs_finished_total",
                    "Document jobs this process ran, by outcome (ok, or error: the job could not run)",
                ),
                &["outcome"],
            )?,
        })
    }

    /// Counts a job as started; it is in flight until the guard drops.
    pub fn started(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// Counts a finished job.
    pub fn finished(&self, took: Duration, ok: bool) {
        self.duration.observe(took.as_secs_f64());
        self.finished
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Sets the queue depth just read.
    pub fn set_depth(&self, depth: i64) {
        self.depth.set(depth);
    }
}
