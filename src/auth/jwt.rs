//! Tenant JWTs: one configured algorithm, `exp` required, `iss`/`aud` when configured.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::config::{JwtAlgorithm, JwtConfig};
use crate::domain::{Scope, Scopes};

/// Checks tokens against the configured key and rules.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    tenant_claim: String,
    leeway: i64,
}

/// What a valid token says.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// The tenant claim's value (an id or a slug).
    pub tenant: String,
    /// `sub`, if any.
    pub subject: Option<String>,
    /// Scopes from `scope` or `scopes`; read+write when both are absent, none when malformed.
    pub scopes: Scopes,
}

/// Why a token was refused; the message is safe to show.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct JwtRefusal(pub String);

impl JwtVerifier {
    /// Builds a verifier from configuration, reading the public key file if any.
    pub fn from_config(config: &JwtConfig) -> anyhow::Result<Self> {
        use anyhow::Context;
        let (algorithm, key) = match config.algorithm {
            JwtAlgorithm::HS256 => {
                let secret = config
                    .secret
                    .as_ref()
                    .context("auth.jwt.secret is required for HS256")?;
                (
                    Algorithm::HS256,
                    DecodingKey::from_secret(secret.expose().as_bytes()),
                )
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
                let path = config
                    .public_key_file
                    .as_ref()
                    .context("auth.jwt.public_key_file is required")?;
                let pem = std::fs::read(path).with_context(|| {
                    format!("reading auth.jwt.public_key_file {}", path.display())
                })?;
                if config.algorithm == JwtAlgorithm::RS256 {
                    let key = DecodingKey::from_rsa_pem(&pem)
                        .context("auth.jwt.public_key_file is not an RSA public key PEM")?;
                    (Algorithm::RS256, key)
                } else {
                    let key = DecodingKey::from_ec_pem(&pem)
                        .context("auth.jwt.public_key_file is not an EC public key PEM")?;
                    (Algorithm::ES256, key)
                }
            }
        };
        let mut validation = Validation::new(algorithm);
        // A configured issuer or audience is a required claim: a token without it is
        // refused, not waved through.
        let mut required = vec!["exp"];
        if config.issuer.is_some() {
            required.push("iss");
        }
        if config.audience.is_some() {
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        // Expiry is checked against ragbox's own (injectable) clock below.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        match &config.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Self {
            key,
            validation,
            tenant_claim: config.tenant_claim.clone(),
            leeway: i64::try_from(config.leeway_secs).unwrap_or(i64::MAX),
        })
    }

    /// Verifies a token's signature and claims at time `now`.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<VerifiedToken, JwtRefusal> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| JwtRefusal(format!("invalid token: {e}")))?;
        let claims = data.claims;
        let now = now.timestamp();
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(|| JwtRefusal("token has no numeric `exp`".into()))?;
        if exp + self.leeway <= now {
            return Err(JwtRefusal("token expired".into()));
        }
        if let Some(nbf) = claims.get("nbf").and_then(Value::as_i64)
            && nbf - self.leeway > now
        {
            return Err(JwtRefusal("token not valid yet".into()));
        }
        let tenant = claims
            .get(&self.tenant_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| JwtRefusal(format!("token has no `{}` claim", self.tenant_claim)))?
            .to_owned();
        Ok(VerifiedToken {
            tenant,
            subject: claims.get("sub").and_then(Value::as_str).map(str::to_owned),
            scopes: scopes_of(&claims),
        })
    }
}

/// Scopes from `scope` (a space-separated string) or `scopes` (an array of strings);
/// read and write when neither is present. Names ragbox does not know are ignored (a
/// token may carry other services' scopes), but a claim of the wrong shape grants
/// nothing at all: a token whose grant cannot be read is not read-only, it is powerless.
fn scopes_of(claims: &Map<String, Value>) -> Scopes {
    let none = Scopes::from_list(&[]);
    let (scope, scopes) = (claims.get("scope"), claims.get("scopes"));
    if scope.is_none() && scopes.is_none() {
        return Scopes::ALL;
    }
    let mut names: Vec<&str> = Vec::new();
    match scope {
        None => {}
        Some(Value::String(s)) => names.extend(s.split_whitespace()),
        Some(_) => return none,
    }
    match scopes {
        None => {}
        Some(Value::Array(items)) => {
            for item in items {
                let Some(name) = item.as_str() else {
                    return none;
                };
                names.push(name);
            }
        }
        Some(_) => return none,
    }
    Scopes::from_list(
        &names
            .into_iter()
            .take(64)
            .filter_map(|n| Scope::parse(n).ok())
            .collect::<Vec<_>>(),
    )
}
