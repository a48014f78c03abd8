//! The HTTP server's sections: listening, timeouts, CORS, and each tenant's default
//! share of the server.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// HTTP server settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address and port to listen on.
    pub bind: SocketAddr,
    /// When set (e.g. `ragbox.example.com`), `acme.ragbox.example.com` names tenant `acme`
    /// and must agree with the credential.
    pub base_domain: Option<String>,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_body_bytes: u64,
    /// Seconds to let in-flight requests finish after SIGTERM/SIGINT.
    pub shutdown_timeout_secs: u64,
    /// Seconds a client has to send a request's headers (and to start the next request
    /// on a kept-alive connection); slower clients are disconnected.
    pub header_read_timeout_secs: u64,
    /// Seconds without any traffic (and no request being handled) before a connection
    /// is closed.
    pub idle_timeout_secs: u64,
    /// Cross-origin requests from browsers.
    pub cors: CorsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            base_domain: None,
            max_body_bytes: 32 * 1024 * 1024,
            shutdown_timeout_secs: 30,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 60,
            cors: CorsConfig::default(),
        }
    }
}

/// CORS settings; off unless `enabled`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorsConfig {
    /// Answer CORS preflights and add CORS headers.
    pub enabled: bool,
    /// Origins allowed, e.g. `["https://app.example.com"]`; empty means any origin.
    pub allowed_origins: Vec<String>,
}

/// Per-tenant limits applied to every tenant without limits of its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests per minute (a token bucket holding a minute's worth); 0 for none.
    pub requests_per_minute: u32,
    /// Chats generating at once.
    pub concurrent_generations: u32,
    /// Documents extracted and cut at once, and twice as many embedded at once (at
    /// most `jobs.concurrency` jobs run in all).
    pub concurrent_ingestion_jobs: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            requests_per_minute: 6000,
            concurrent_generations: 2,
            concurrent_ingestion_jobs: 1,
        }
    }
}
