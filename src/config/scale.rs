//! Scaling out: Redis for the job queue, `ragbox worker` processes, Qdrant for vectors.
//! Each is off until its URL is set.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::Secret;

/// The shared job queue. When `url` is set, document jobs go through Redis instead of
/// the embedded SQLite queue, and `ragbox worker` processes can take them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[:password@]host:port[/db]`; unset keeps jobs in SQLite. May hold a
    /// password, so it is redacted like a secret.
    pub url: Option<Secret>,
    /// Prefix of every key ragbox writes, so that several installations can share one
    /// Redis.
    pub prefix: String,
}

impl RedisConfig {
    /// The URL when Redis is on.
    pub fn url(&self) -> Option<&str> {
        self.url
            .as_ref()
            .map(Secret::expose)
            .filter(|u| !u.is_empty())
    }
}

/// Vectors in Qdrant instead of the embedded sled + HNSW store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QdrantConfig {
    /// Qdrant's REST address, e.g. `http://10.0.0.7:6333`; unset keeps vectors local.
    pub url: Option<String>,
    /// Sent as the `api-key` header when set.
    pub api_key: Option<Secret>,
    /// The one collection holding every tenant's vectors (each point carries its
    /// tenant, and every query filters on it).
    pub collection: String,
    /// Milliseconds a request to Qdrant may take.
    pub timeout_ms: u64,
}

impl Default for QdrantConfig {
    fn default() -> Self {
        Self {
            url: None,
            api_key: None,
            collection: "ragbox_chunks".to_owned(),
            timeout_ms: 10_000,
        }
    }
}

impl QdrantConfig {
    /// The URL when Qdrant is on.
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref().filter(|u| !u.is_empty())
    }
}

/// A `ragbox worker` process: where it reports and which serving node it works for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// Address of the worker's own `/health/live`, `/health/ready` and `/metrics`.
    pub bind: SocketAddr,
    /// Base URL of the serving node the results go to, e.g. `http://10.0.0.5:8080`.
    pub server_url: String,
    /// Seconds a worker keeps trying to reach the serving node before it gives a job
    /// back.
    pub server_retry_secs: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 9090)),
            server_url: "http://127.0.0.1:8080".to_owned(),
            server_retry_secs: 30,
        }
    }
}
