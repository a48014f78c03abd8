//! Configuration: one typed tree read from `config.toml`, then `RAGBOX__SECTION__KEY`
//! environment variables, then command-line flags.
//!
//! [`Config`] is the whole tree; each section's type lives with its neighbours:
//! `server` (HTTP server and tenant limits), `auth` (operator token and JWTs),
//! `storage` (data folder and vector index), `search` (hybrid fusion), `ingest` (documents, extraction, chunking),
//! `models` (model files, embedding and local generation), `providers` (upstream
//! generation), `ops` (logging, health probes, jobs), `scale` (Redis, Qdrant, remote workers) and `secret` (redacted strings).
//! `load` reads and merges the sources; `validate` rejects values that make no sense.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod auth;
mod ingest;
mod load;
mod models;
mod ops;
mod providers;
mod scale;
mod search;
mod secret;
mod server;
mod storage;
mod validate;

pub use auth::{AuthConfig, JwtAlgorithm, JwtConfig};
pub use ingest::{ChunkingConfig, DocumentsConfig, ExtractionConfig};
pub use load::{CliOverrides, ConfigError, default_config_paths};
pub use models::{EmbeddingConfig, EmbeddingPrecision, GenerationConfig, ModelsConfig, WeightType};
pub use ops::{HealthConfig, JobsConfig, LogConfig, LogFormat, MetricsConfig};
pub use providers::{LOCAL_PROVIDER, ProviderConfig, ProviderKind};
pub use scale::{QdrantConfig, RedisConfig, WorkerConfig};
pub use search::{Fusion, SearchConfig};
pub use secret::Secret;
pub use server::{CorsConfig, LimitsConfig, ServerConfig};
pub use storage::{IndexConfig, StorageConfig};

/// The whole configuration of one ragbox process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// HTTP server.
    pub server: ServerConfig,
    /// Where ragbox keeps its data.
    pub storage: StorageConfig,
    /// Operator token and tenant credentials.
    pub auth: AuthConfig,
    /// Logging.
    pub log: LogConfig,
    /// Health probes.
    pub health: HealthConfig,
    /// What `/metrics` exports.
    pub metrics: MetricsConfig,
    /// Model files.
    pub models: ModelsConfig,
    /// The embedding model's runtime.
    pub embedding: EmbeddingConfig,
    /// Generation: the default provider and the local model's runtime.
    pub generation: GenerationConfig,
    /// Upstream generation providers by name (`[providers.NAME]`), for agents and as
    /// the default.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// How documents are cut into chunks.
    pub chunking: ChunkingConfig,
    /// Background jobs.
    pub jobs: JobsConfig,
    /// Vector index.
    pub index: IndexConfig,
    /// Hybrid search's fusion.
    pub search: SearchConfig,
    /// Documents.
    pub documents: DocumentsConfig,
    /// Text extraction in a child process with limits.
    pub extraction: ExtractionConfig,
    /// Each tenant's share of the server, unless the operator set its own.
    pub limits: LimitsConfig,
    /// The shared job queue (off unless `url` is set).
    pub redis: RedisConfig,
    /// Vectors in Qdrant (off unless `url` is set).
    pub qdrant: QdrantConfig,
    /// A `ragbox worker` process.
    pub worker: WorkerConfig,
}
