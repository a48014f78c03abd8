//! Configuration: one typed tree read from `config.toml`, then `RAGBOX__SECTION__KEY`
//! environment variables, then command-line flags.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Paths searched, in order, when `--config` is not given.
pub fn default_config_paths() -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from("config.toml")];
    if let Some(home) = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
    {
        paths.push(home.join("ragbox/config.toml"));
    }
    paths.push(PathBuf::from("/etc/ragbox/config.toml"));
    paths
}

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
    /// Documents.
    pub documents: DocumentsConfig,
    /// Text extraction in a child process with limits.
    pub extraction: ExtractionConfig,
    /// Each tenant's share of the server, unless the operator set its own.
    pub limits: LimitsConfig,
}

/// Per-tenant limits applied to every tenant without limits of its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests per minute (a token bucket holding a minute's worth); 0 for none.
    pub requests_per_minute: u32,
    /// Chats generating at once.
    pub concurrent_generations: u32,
    /// Documents processed at once (at most `jobs.concurrency` run in all).
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

/// Limits on the child process (`ragbox extract`) that reads each document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractionConfig {
    /// The ragbox executable run as `<program> extract`; this one when unset.
    pub program: Option<PathBuf>,
    /// Address space of the child, in MiB; a document that needs more fails.
    pub memory_mb: u64,
    /// CPU seconds the child may use.
    pub cpu_secs: u64,
    /// Wall-clock seconds before the child is killed.
    pub timeout_secs: u64,
    /// Extracted text may be at most this many times the document's size …
    pub max_text_ratio: u64,
    /// … and never more than this many bytes.
    pub max_text_bytes: u64,
}

impl Default for ExtractionConfig {
    fn default() -> Self {
        Self {
            program: None,
            memory_mb: 2048,
            cpu_secs: 60,
            timeout_secs: 120,
            max_text_ratio: 100,
            max_text_bytes: 32 * 1024 * 1024,
        }
    }
}

impl ExtractionConfig {
    /// The most text a document of `input_bytes` may yield: a multiple of its size
    /// (but at least 64 KiB, for small files), never above the absolute maximum.
    pub fn text_cap(&self, input_bytes: u64) -> u64 {
        input_bytes
            .saturating_mul(self.max_text_ratio)
            .max(64 * 1024)
            .min(self.max_text_bytes)
    }
}

/// Where the model files are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Folder with all-MiniLM-L6-v2's `config.json`, `tokenizer.json`, `model.safetensors`.
    pub embedding_dir: PathBuf,
    /// The local generation model: a llama-architecture GGUF file.
    pub generation_file: PathBuf,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            embedding_dir: PathBuf::from("models/all-MiniLM-L6-v2"),
            generation_file: PathBuf::from(
                "models/SmolLM2-135M-Instruct/SmolLM2-135M-Instruct.Q4_1.gguf",
            ),
        }
    }
}

/// Weight type the generator converts the GGUF's matrices to at load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightType {
    /// As stored in the file.
    Original,
    /// 4-bit blocks with a SIMD kernel in candle: the fastest here.
    Q4_0,
    /// Half precision.
    F16,
    /// Full precision.
    F32,
}

/// Generation settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationConfig {
    /// The provider chats use when their agent names none: `local` (the bundled
    /// model) or the name of a `[providers.NAME]` section.
    pub provider: String,
    /// Weight type the matrices are converted to at load.
    pub weights: WeightType,
    /// Requests waiting for the model before new ones get 429.
    pub queue_capacity: usize,
    /// Context window used (prompt and answer), at most the model's own.
    pub context_tokens: usize,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            provider: LOCAL_PROVIDER.to_owned(),
            weights: WeightType::Q4_0,
            queue_capacity: 4,
            context_tokens: 2048,
        }
    }
}

/// The name of the bundled model as a provider.
pub const LOCAL_PROVIDER: &str = "local";

/// The wire protocol of an upstream provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Any server with OpenAI's streaming chat completions (`POST {base_url}/chat/completions`).
    Openai,
    /// Anthropic's Messages API (`POST {base_url}/v1/messages`).
    Anthropic,
}

/// One upstream generation provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProviderConfig {
    /// Wire protocol.
    pub kind: ProviderKind,
    /// Where it answers: for `openai` the URL before `/chat/completions` (often ending
    /// in `/v1`); for `anthropic` the URL before `/v1/messages` (default Anthropic's API).
    pub base_url: Option<String>,
    /// Sent as `Authorization: Bearer` (openai) or `x-api-key` (anthropic). Never logged.
    pub api_key: Option<Secret>,
    /// Model used when the agent names none.
    pub model: String,
    /// Context window (prompt and answer) the sources are fitted into.
    pub context_tokens: usize,
    /// Limit on opening the connection.
    pub connect_timeout_ms: u64,
    /// Limit on the wait for the answer's headers and between two pieces of the stream.
    pub idle_timeout_ms: u64,
    /// `anthropic-version` header (anthropic only).
    pub anthropic_version: String,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        Self {
            kind: ProviderKind::Openai,
            base_url: None,
            api_key: None,
            model: String::new(),
            context_tokens: 8192,
            connect_timeout_ms: 5_000,
            idle_timeout_ms: 60_000,
            anthropic_version: "2023-06-01".into(),
        }
    }
}

impl ProviderConfig {
    /// The base URL without a trailing slash.
    pub fn base(&self) -> String {
        let base = match (&self.base_url, self.kind) {
            (Some(url), _) => url.as_str(),
            (None, ProviderKind::Anthropic) => "https://api.anthropic.com",
            (None, ProviderKind::Openai) => "",
        };
        base.trim_end_matches('/').to_owned()
    }
}

/// Embedding runtime settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingConfig {
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Requests waiting for the model before new ones get 503.
    pub queue_capacity: usize,
    /// Tokens per text; longer texts are truncated (the model was trained with 256).
    pub max_tokens: usize,
}

impl Default for EmbeddingConfig {
    fn default() -> Self {
        Self {
            batch_size: 32,
            queue_capacity: 256,
            max_tokens: 256,
        }
    }
}

/// Chunking settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkingConfig {
    /// Tokens per chunk, at most.
    pub max_tokens: usize,
    /// Tokens shared by neighbouring chunks.
    pub overlap_tokens: usize,
}

impl Default for ChunkingConfig {
    fn default() -> Self {
        Self {
            max_tokens: 200,
            overlap_tokens: 40,
        }
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
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            max_retries: 3,
            retry_delay_secs: 30,
            concurrency: 2,
            heartbeat_secs: 10,
            poll_interval_ms: 200,
        }
    }
}

/// Vector index settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    /// Below this many vectors a tenant is searched exactly (no HNSW).
    pub exact_threshold: usize,
    /// HNSW links per node.
    pub hnsw_m: usize,
    /// HNSW candidate list while building.
    pub hnsw_ef_construction: usize,
    /// HNSW candidate list while searching (at least top_k).
    pub hnsw_ef_search: usize,
    /// Rebuild the HNSW graph once deleted vectors pass this fraction of it.
    pub rebuild_deleted_fraction: f64,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            exact_threshold: 10_000,
            hnsw_m: 16,
            hnsw_ef_construction: 200,
            hnsw_ef_search: 64,
            rebuild_deleted_fraction: 0.2,
        }
    }
}

/// Document settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DocumentsConfig {
    /// Largest document accepted, in bytes (413 above it).
    pub max_bytes: u64,
    /// A document cut into more chunks than this fails.
    pub max_chunks: usize,
}

impl Default for DocumentsConfig {
    fn default() -> Self {
        Self {
            max_bytes: 20 * 1024 * 1024,
            max_chunks: 20_000,
        }
    }
}

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

/// Storage settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory for the SQLite file, the admin token and tenants' files.
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
        }
    }
}

impl StorageConfig {
    /// The SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("ragbox.sqlite")
    }

    /// The file holding the generated operator token.
    pub fn admin_token_path(&self) -> PathBuf {
        self.data_dir.join("admin.token")
    }

    /// The folder of one tenant's files.
    pub fn tenant_dir(&self, tenant_id: &str) -> PathBuf {
        self.data_dir.join("tenants").join(tenant_id)
    }
}

/// Authentication settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Operator token for `/api/v1/admin`; when unset, one is generated into
    /// `<data_dir>/admin.token` at first start.
    pub admin_token: Option<Secret>,
    /// Tenant JWTs; absent means JWTs are not accepted.
    pub jwt: Option<JwtConfig>,
}

/// Which JWT signature algorithm is accepted (exactly one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with `secret`.
    HS256,
    /// RSA PKCS#1 v1.5 SHA-256 with `public_key_file`.
    RS256,
    /// ECDSA P-256 SHA-256 with `public_key_file`.
    ES256,
}

/// JWT verification settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The one algorithm accepted.
    pub algorithm: JwtAlgorithm,
    /// Shared secret, for HS256.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// PEM public key file, for RS256 and ES256.
    #[serde(default)]
    pub public_key_file: Option<PathBuf>,
    /// Required `iss`, when set.
    #[serde(default)]
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    #[serde(default)]
    pub audience: Option<String>,
    /// Claim that names the tenant, by id or slug.
    #[serde(default = "default_tenant_claim")]
    pub tenant_claim: String,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
}

fn default_tenant_claim() -> String {
    "tenant".to_owned()
}

fn default_leeway() -> u64 {
    30
}

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

/// A secret string: never shown by `Debug` or in serialised output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Env values that look like numbers arrive as numbers; a secret is always text.
        let value = serde_json::Value::deserialize(deserializer)?;
        match value {
            serde_json::Value::String(s) => Ok(Secret(s)),
            serde_json::Value::Number(n) => Ok(Secret(n.to_string())),
            _ => Err(serde::de::Error::custom("expected a string")),
        }
    }
}

/// Overrides given on the command line; they win over file and environment.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    /// `--bind`.
    pub bind: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` does not exist.
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    /// A key is unknown or a value has the wrong type.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// The file to read: `explicit` (which must exist), else the first default path
    /// that exists, else none (built-in defaults).
    pub fn find_file(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
        match explicit {
            Some(p) if !p.exists() => Err(ConfigError::Missing(p.to_path_buf())),
            Some(p) => Ok(Some(p.to_path_buf())),
            None => Ok(default_config_paths().into_iter().find(|p| p.exists())),
        }
    }

    /// Loads the configuration: defaults < file < environment < CLI flags.
    pub fn load(file: Option<&Path>, overrides: &CliOverrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(Env::prefixed("RAGBOX__").split("__"));
        let mut config: Config = figment.extract().map_err(describe)?;
        if let Some(bind) = overrides.bind {
            config.server.bind = bind;
        }
        if let Some(dir) = &overrides.data_dir {
            config.storage.data_dir = dir.clone();
        }
        if let Some(format) = overrides.log_format {
            config.log.format = format;
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses a configuration from TOML text alone (no environment), for tests and tools.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(describe)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.chunking.overlap_tokens * 2 > self.chunking.max_tokens
            || self.chunking.max_tokens < 16
        {
            return invalid(
                "chunking.overlap_tokens must be at most half of chunking.max_tokens (>= 16)",
            );
        }
        if self.chunking.max_tokens + 2 > self.embedding.max_tokens {
            return invalid(
                "chunking.max_tokens must leave room for 2 special tokens within embedding.max_tokens",
            );
        }
        if self.embedding.batch_size == 0 || self.embedding.queue_capacity == 0 {
            return invalid(
                "embedding.batch_size and embedding.queue_capacity must be greater than 0",
            );
        }
        if self.embedding.max_tokens > 512 {
            return invalid(
                "embedding.max_tokens must be at most 512 (the model's position limit)",
            );
        }
        if self.jobs.concurrency == 0 || self.jobs.heartbeat_secs == 0 {
            return invalid("jobs.concurrency and jobs.heartbeat_secs must be greater than 0");
        }
        if !(0.0..1.0).contains(&self.index.rebuild_deleted_fraction)
            || self.index.hnsw_m < 2
            || self.index.hnsw_m > 256
        {
            return invalid(
                "index.rebuild_deleted_fraction must be in [0, 1) and index.hnsw_m in 2..=256",
            );
        }
        self.validate_providers()?;
        let x = &self.extraction;
        if x.memory_mb < 64 || x.cpu_secs == 0 || x.timeout_secs == 0 || x.max_text_ratio == 0 {
            return invalid(
                "extraction.memory_mb must be at least 64, and extraction.cpu_secs, timeout_secs and max_text_ratio greater than 0",
            );
        }
        if self.limits.concurrent_generations == 0 || self.limits.concurrent_ingestion_jobs == 0 {
            return invalid(
                "limits.concurrent_generations and limits.concurrent_ingestion_jobs must be greater than 0",
            );
        }
        if self.documents.max_chunks == 0 {
            return invalid("documents.max_chunks must be greater than 0");
        }
        if self.server.max_body_bytes == 0 {
            return invalid("server.max_body_bytes must be greater than 0");
        }
        if self.server.header_read_timeout_secs == 0 || self.server.idle_timeout_secs == 0 {
            return invalid(
                "server.header_read_timeout_secs and server.idle_timeout_secs must be greater than 0",
            );
        }
        if let Some(token) = &self.auth.admin_token
            && token.expose().len() < 16
        {
            return invalid("auth.admin_token must be at least 16 characters");
        }
        if let Some(domain) = &self.server.base_domain
            && (domain.is_empty() || domain.starts_with('.') || domain.contains(':'))
        {
            return invalid("server.base_domain must be a host name like `ragbox.example.com`");
        }
        if let Some(jwt) = &self.auth.jwt {
            match jwt.algorithm {
                JwtAlgorithm::HS256 => match &jwt.secret {
                    Some(s) if s.expose().len() >= 32 => {}
                    _ => {
                        return invalid(
                            "auth.jwt.secret must be set to at least 32 bytes for HS256",
                        );
                    }
                },
                JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
                    if jwt.public_key_file.is_none() {
                        return invalid("auth.jwt.public_key_file must be set for RS256/ES256");
                    }
                }
            }
            if jwt.tenant_claim.is_empty() {
                return invalid("auth.jwt.tenant_claim must not be empty");
            }
        }
        Ok(())
    }
}

impl Config {
    /// Every provider a chat may name: `local` and the configured ones, as a list for
    /// messages ("local, a, b").
    pub fn available_providers(&self) -> String {
        std::iter::once(LOCAL_PROVIDER)
            .chain(self.providers.keys().map(String::as_str))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn validate_providers(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        for (name, p) in &self.providers {
            if name == LOCAL_PROVIDER
                || name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return invalid(format!(
                    "providers.{name}: a provider name is letters, digits, `-` and `_`, and not `{LOCAL_PROVIDER}`"
                ));
            }
            if p.kind == ProviderKind::Openai && p.base_url.is_none() {
                return invalid(format!("providers.{name}.base_url must be set"));
            }
            let base = p.base();
            if !(base.starts_with("http://") || base.starts_with("https://"))
                || reqwest::Url::parse(&base).is_err()
            {
                return invalid(format!(
                    "providers.{name}.base_url must be an http:// or https:// URL"
                ));
            }
            if p.model.trim().is_empty() {
                return invalid(format!("providers.{name}.model must be set"));
            }
            if p.context_tokens < 256 || p.connect_timeout_ms == 0 || p.idle_timeout_ms == 0 {
                return invalid(format!(
                    "providers.{name}: context_tokens must be at least 256 and the timeouts greater than 0"
                ));
            }
        }
        let default = &self.generation.provider;
        if default != LOCAL_PROVIDER && !self.providers.contains_key(default) {
            return invalid(format!(
                "generation.provider `{default}` is neither `{LOCAL_PROVIDER}` nor a [providers.{default}] section"
            ));
        }
        Ok(())
    }
}

fn describe(err: figment::Error) -> ConfigError {
    let messages: Vec<String> = err
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref())
                .map(|s| format!(" (from {s})"))
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", e.kind)
            } else {
                format!("key `{key}`: {}{source}", e.kind)
            }
        })
        .collect();
    ConfigError::Invalid(messages.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[server]\nbindd = \"1.2.3.4:5\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("bindd"), "{text}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = Config::from_toml("[server]\nbind = \"nowhere\"\n").unwrap_err();
        assert!(err.to_string().contains("server.bind"), "{err}");
    }

    #[test]
    fn secrets_are_redacted() {
        let config =
            Config::from_toml("[auth]\nadmin_token = \"super-secret-token-123\"\n").unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("super-secret"), "{debug}");
        let json = serde_json::to_string(&config).unwrap();
        assert!(!json.contains("super-secret"), "{json}");
    }

    #[test]
    fn providers_are_checked_and_their_keys_redacted() {
        let ok = Config::from_toml(
            "[generation]\nprovider = \"up\"\n[providers.up]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:8080/v1/\"\napi_key = \"sk-very-secret\"\nmodel = \"m\"\n",
        )
        .unwrap();
        assert_eq!(ok.providers["up"].base(), "http://127.0.0.1:8080/v1");
        assert!(!format!("{ok:?}").contains("sk-very-secret"));
        let anthropic =
            Config::from_toml("[providers.claude]\nkind = \"anthropic\"\nmodel = \"m\"\n").unwrap();
        assert!(anthropic.providers["claude"].base().starts_with("https://"));
        for (toml, named) in [
            ("[generation]\nprovider = \"nope\"\n", "generation.provider"),
            (
                "[providers.up]\nkind = \"openai\"\nmodel = \"m\"\n",
                "providers.up.base_url",
            ),
            (
                "[providers.up]\nkind = \"openai\"\nbase_url = \"ftp://x\"\nmodel = \"m\"\n",
                "providers.up.base_url",
            ),
            (
                "[providers.up]\nkind = \"anthropic\"\n",
                "providers.up.model",
            ),
            (
                "[providers.local]\nkind = \"anthropic\"\nmodel = \"m\"\n",
                "providers.local",
            ),
        ] {
            let err = Config::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(named), "{toml}: {err}");
        }
    }

    #[test]
    fn hs256_needs_a_long_secret() {
        let err = Config::from_toml("[auth.jwt]\nalgorithm = \"HS256\"\nsecret = \"short\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("auth.jwt.secret"), "{err}");
    }
}
