//! Running the process: logging, health probes and background jobs.

use serde::{Deserialize, Serialize};

/// Log output settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` for people, `json` for log collectors.
    pub format: LogFormat,
    /// Filter in `RUST_LOG` syntax, e.g. `info` or `ragbox=debug,info`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".to_owned(),
        }
    }
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Health probe settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Milliseconds each health check may take before it counts as failed.
    pub check_timeout_ms: u64,
    /// Milliseconds `/health` and `/health/ready` reuse their last checks.
    pub cache_ms: u64,
    /// Seconds between two requests to an upstream provider's model list.
    pub upstream_probe_secs: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            check_timeout_ms: 2000,
            cache_ms: 5000,
            upstream_probe_secs: 60,
        }
    }
}

/// What `/metrics` exports.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Tenants with series of their own (labelled by slug), the first seen since start;
    /// the rest are counted together as `other`. 0 counts every tenant as `other`.
    pub tenant_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self { tenant_series: 100 }
    }
}

/// Background job settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Retries after the first failure before a document is marked failed.
    pub max_retries: u32,
    /// Seconds between retries.
    pub retry_delay_secs: u64,
    /// Documents processed at once.
    pub concurrency: usize,
    /// Seconds between worker heartbeats; jobs of a worker silent for three
    /// heartbeats (a crashed process) run again.
    pub heartbeat_secs: u64,
    /// Milliseconds between polls for new jobs.
    pub poll_interval_ms: u64,
    /// Job runners in the serving process, each taking `concurrency` documents at
    /// once; 0 leaves every document to `ragbox worker` processes (needs `[redis]`).
    pub local_workers: usize,
    /// Seconds a claimed document may stay `processing` before it is given to another
    /// worker (the one that had it is presumed dead); also how long a queued document
    /// waits before its job is pushed again, in case the queue lost it.
    pub lease_secs: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            max_retries: 3,
            retry_delay_secs: 30,
            concurrency: 2,
            heartbeat_secs: 10,
            poll_interval_ms: 200,
            local_workers: 1,
            lease_secs: 600,
        }
    }
}
