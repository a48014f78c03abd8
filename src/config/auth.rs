//! The `[auth]` section: the operator token and how tenant JWTs are verified.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Secret;

/// Authentication settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Operator token for `/api/v1/admin`; when unset, one is generated into
    /// `<data_dir>/admin.token` at first start.
    pub admin_token: Option<Secret>,
    /// Tenant JWTs; absent means JWTs are not accepted.
    pub jwt: Option<JwtConfig>,
    /// Keep resolved API keys in memory, checked on every request against a counter
    /// that every change to keys and tenants moves (so revocation, also by another
    /// process, holds on the next request). Off: every request reads its key.
    pub key_cache: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            admin_token: None,
            jwt: None,
            key_cache: true,
        }
    }
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
