//! Who is calling: the operator (admin token) or exactly one tenant (API key or JWT,
//! checked against the subdomain). HTTP-free: the API's middleware hands the bearer
//! token and host here and turns an [`AuthError`] into its answer.

pub mod jwt;

use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::domain::{Scope, Scopes, TenantRef};
use crate::services::keys::{self, KeyRefusal};
use crate::services::{Core, ServiceError, tenants};
use crate::store::tenants::Tenant;

use jwt::JwtVerifier;

/// Why a caller was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credential was presented; the message says which one is needed.
    #[error("{0}")]
    Missing(&'static str),
    /// The credential names no usable tenant (or another tenant than the host).
    #[error("{0}")]
    InvalidTenant(String),
    /// The operator token is wrong.
    #[error("invalid operator token")]
    InvalidAdminToken,
    /// The credential lacks a scope.
    #[error("this credential lacks the `{}` scope", .0.as_str())]
    InsufficientScope(Scope),
    /// Looking the credential up failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

/// How the tenant proved itself.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A tenant API key.
    ApiKey {
        /// The key's id.
        id: String,
    },
    /// A JWT.
    Jwt {
        /// Its `sub`.
        subject: Option<String>,
    },
}

/// The caller of a tenant route, attached to the request by the API's middleware.
#[derive(Debug, Clone)]
pub struct AuthContext {
    /// The tenant.
    pub tenant: Tenant,
    /// What the credential may do.
    pub scopes: Scopes,
    /// The credential.
    pub credential: Credential,
}

impl AuthContext {
    /// Refused unless the credential has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), AuthError> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(AuthError::InsufficientScope(scope))
        }
    }
}

/// Marks a request made with the operator token.
#[derive(Debug, Clone, Copy)]
pub struct Operator;

/// Checks credentials: the operator token, tenant API keys and, when configured, JWTs.
pub struct Authenticator {
    core: Core,
    jwt: Option<JwtVerifier>,
    admin_token: Secret,
    /// Resolved keys (`auth.key_cache`).
    keys: Option<keys::KeyCache>,
}

impl Authenticator {
    /// An authenticator over the tenants and keys in `core`.
    pub fn new(core: Core, jwt: Option<JwtVerifier>, admin_token: Secret) -> Self {
        let keys = core.config.auth.key_cache.then(keys::KeyCache::default);
        Self {
            core,
            jwt,
            admin_token,
            keys,
        }
    }

    /// Accepts exactly the operator token (compared in constant time).
    pub fn operator(&self, token: &str) -> Result<Operator, AuthError> {
        let expected = self.admin_token.expose().as_bytes();
        if bool::from(token.as_bytes().ct_eq(expected)) {
            Ok(Operator)
        } else {
            Err(AuthError::InvalidAdminToken)
        }
    }

    /// Resolves the tenant behind a bearer token and the request's host.
    pub async fn tenant(&self, token: &str, host: Option<&str>) -> Result<AuthContext, AuthError> {
        let refused = |m: &str| AuthError::InvalidTenant(m.to_owned());
        let ctx = if keys::looks_like_key(token) {
            match keys::authenticate(&self.core, self.keys.as_ref(), token).await? {
                Ok((key, tenant)) => AuthContext {
                    tenant,
                    scopes: key.scopes,
                    credential: Credential::ApiKey { id: key.id },
                },
                Err(KeyRefusal::Unknown) => return Err(refused("unknown API key")),
                Err(KeyRefusal::Revoked) => return Err(refused("API key revoked")),
                Err(KeyRefusal::Expired) => return Err(refused("API key expired")),
            }
        } else if let Some(verifier) = &self.jwt {
            let claims = verifier
                .verify(token, self.core.clock.now())
                .map_err(|e| refused(&e.0))?;
            let tenant_ref = TenantRef::parse(&claims.tenant)
                .map_err(|_| refused("token names no known tenant"))?;
            let tenant = match tenants::get(&self.core, &tenant_ref).await {
                Ok(t) => t,
                Err(ServiceError::NotFound(_)) => {
                    return Err(refused("token names no known tenant"));
                }
                Err(e) => return Err(e.into()),
            };
            AuthContext {
                tenant,
                scopes: claims.scopes,
                credential: Credential::Jwt {
                    subject: claims.subject,
                },
            }
        } else {
            return Err(refused("not a ragbox API key"));
        };
        if let (Some(base), Some(host)) = (&self.core.config.server.base_domain, host)
            && let Some(slug) = subdomain_slug(host, base)?
            && slug != ctx.tenant.slug.as_str()
        {
            return Err(refused(
                "the credential belongs to another tenant than the subdomain",
            ));
        }
        Ok(ctx)
    }
}

/// The tenant slug that the host names under `base_domain`, if any.
pub fn subdomain_slug(host: &str, base_domain: &str) -> Result<Option<String>, AuthError> {
    let base = base_domain.trim_end_matches('.').to_ascii_lowercase();
    if host == base {
        return Ok(None);
    }
    match host
        .strip_suffix(&base)
        .and_then(|rest| rest.strip_suffix('.'))
    {
        Some(label) if !label.is_empty() && !label.contains('.') => Ok(Some(label.to_owned())),
        Some(_) => Err(AuthError::InvalidTenant(
            "the host names no tenant under the base domain".into(),
        )),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdomains() {
        let base = "ragbox.example.com";
        assert_eq!(
            subdomain_slug("acme.ragbox.example.com", base).unwrap(),
            Some("acme".into())
        );
        assert_eq!(subdomain_slug("ragbox.example.com", base).unwrap(), None);
        assert_eq!(subdomain_slug("127.0.0.1", base).unwrap(), None);
        assert_eq!(subdomain_slug("xragbox.example.com", base).unwrap(), None);
        assert!(subdomain_slug("a.b.ragbox.example.com", base).is_err());
    }
}
