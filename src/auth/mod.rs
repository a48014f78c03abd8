//! Who is calling: the operator (admin token) or exactly one tenant (API key or JWT,
//! checked against the subdomain). Resolved once by middleware and put on the request.

pub mod jwt;

use poem::http::header;
use poem::{Endpoint, Request, Response};
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;
use subtle::ConstantTimeEq;

use crate::domain::{Scope, Scopes, TenantRef};
use crate::error::{ApiError, ErrorCode};
use crate::services::keys::{self, KeyRefusal};
use crate::services::{ServiceError, tenants};
use crate::startup::AppState;
use crate::store::tenants::Tenant;

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

/// The caller of a tenant route, attached to the request by [`authenticate`].
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
    /// 403 unless the credential has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.scopes.contains(scope) {
            Ok(())
        } else {
            Err(ApiError::new(
                ErrorCode::InsufficientScope,
                format!("this credential lacks the `{}` scope", scope.as_str()),
            ))
        }
    }
}

/// Marks a request made with the operator token.
#[derive(Debug, Clone, Copy)]
pub struct Operator;

/// A tenant API key (`rbx_…`) or, when `[auth.jwt]` is configured, a JWT naming the tenant.
#[derive(SecurityScheme)]
#[oai(
    rename = "TenantKey",
    ty = "bearer",
    bearer_format = "rbx_… API key or JWT",
    checker = "resolved_tenant"
)]
pub struct TenantAuth(pub AuthContext);

async fn resolved_tenant(req: &Request, _: Bearer) -> Option<AuthContext> {
    req.extensions().get::<AuthContext>().cloned()
}

/// The operator token: `auth.admin_token`, or the one generated into `<data_dir>/admin.token`.
#[derive(SecurityScheme)]
#[oai(rename = "AdminToken", ty = "bearer", checker = "resolved_operator")]
pub struct AdminAuth(pub Operator);

async fn resolved_operator(req: &Request, _: Bearer) -> Option<Operator> {
    req.extensions().get::<Operator>().copied()
}

/// Which credential a path needs.
#[derive(Debug, PartialEq, Eq)]
enum Realm {
    Public,
    Operator,
    Tenant,
}

fn realm(path: &str) -> Realm {
    let public = matches!(
        path,
        "/health" | "/health/live" | "/health/ready" | "/metrics" | "/openapi.json"
    ) || path == "/docs"
        || path.starts_with("/docs/");
    if public {
        Realm::Public
    } else if path == "/api/v1/admin" || path.starts_with("/api/v1/admin/") {
        Realm::Operator
    } else {
        Realm::Tenant
    }
}

fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn host(req: &Request) -> Option<String> {
    let raw = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => raw,
    };
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

/// The tenant slug that the Host header names under `base_domain`, if any.
pub fn subdomain_slug(host: &str, base_domain: &str) -> Result<Option<String>, ApiError> {
    let base = base_domain.trim_end_matches('.').to_ascii_lowercase();
    if host == base {
        return Ok(None);
    }
    match host
        .strip_suffix(&base)
        .and_then(|rest| rest.strip_suffix('.'))
    {
        Some(label) if !label.is_empty() && !label.contains('.') => Ok(Some(label.to_owned())),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidTenant,
            "the host names no tenant under the base domain",
        )),
        None => Ok(None),
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidTenant, message)
}

/// Resolves the tenant behind a bearer token and the request's host.
pub async fn resolve_tenant(
    state: &AppState,
    token: &str,
    host: Option<&str>,
) -> Result<AuthContext, ApiError> {
    let ctx = if keys::looks_like_key(token) {
        match keys::authenticate(&state.core, token).await? {
            Ok((key, tenant)) => AuthContext {
                tenant,
                scopes: key.scopes,
                credential: Credential::ApiKey { id: key.id },
            },
            Err(KeyRefusal::Unknown) => return Err(unauthorized("unknown API key")),
            Err(KeyRefusal::Revoked) => return Err(unauthorized("API key revoked")),
            Err(KeyRefusal::Expired) => return Err(unauthorized("API key expired")),
        }
    } else if let Some(verifier) = &state.jwt {
        let claims = verifier
            .verify(token, state.core.clock.now())
            .map_err(|e| unauthorized(&e.0))?;
        let tenant_ref = TenantRef::parse(&claims.tenant)
            .map_err(|_| unauthorized("token names no known tenant"))?;
        let tenant = match tenants::get(&state.core, &tenant_ref).await {
            Ok(t) => t,
            Err(ServiceError::NotFound(_)) => {
                return Err(unauthorized("token names no known tenant"));
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
        return Err(unauthorized("not a ragbox API key"));
    };
    if let (Some(base), Some(host)) = (&state.core.config.server.base_domain, host)
        && let Some(slug) = subdomain_slug(host, base)?
        && slug != ctx.tenant.slug.as_str()
    {
        return Err(unauthorized(
            "the credential belongs to another tenant than the subdomain",
        ));
    }
    Ok(ctx)
}

/// Middleware: every route but the public ones needs the operator token (admin routes)
/// or a tenant credential (all others); deny by default.
pub async fn authenticate<E: Endpoint>(
    state: AppState,
    ep: E,
    mut req: Request,
) -> poem::Result<Response> {
    use poem::IntoResponse;
    match realm(req.uri().path()) {
        Realm::Public => {}
        Realm::Operator => {
            let Some(token) = bearer(&req) else {
                return Err(ApiError::new(
                    ErrorCode::MissingCredentials,
                    "the operator token is required",
                )
                .into());
            };
            let expected = state.admin_token.expose().as_bytes();
            if !bool::from(token.as_bytes().ct_eq(expected)) {
                return Err(
                    ApiError::new(ErrorCode::InvalidAdminToken, "invalid operator token").into(),
                );
            }
            req.extensions_mut().insert(Operator);
        }
        Realm::Tenant => {
            if req.method() == poem::http::Method::OPTIONS {
                // CORS preflights carry no credentials.
                return ep.call(req).await.map(IntoResponse::into_response);
            }
            let Some(token) = bearer(&req).map(str::to_owned) else {
                return Err(ApiError::new(
                    ErrorCode::MissingCredentials,
                    "a tenant API key or JWT is required",
                )
                .into());
            };
            let host = host(&req);
            let ctx = resolve_tenant(&state, &token, host.as_deref()).await?;
            tracing::Span::current().record("tenant", ctx.tenant.slug.as_str());
            req.extensions_mut().insert(ctx);
        }
    }
    ep.call(req).await.map(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realms() {
        assert_eq!(realm("/health"), Realm::Public);
        assert_eq!(realm("/health/ready"), Realm::Public);
        assert_eq!(realm("/docs"), Realm::Public);
        assert_eq!(realm("/docs/index.js"), Realm::Public);
        assert_eq!(realm("/api/v1/admin/tenants"), Realm::Operator);
        assert_eq!(realm("/api/v1/administrator"), Realm::Tenant);
        assert_eq!(realm("/api/v1/tenant"), Realm::Tenant);
        assert_eq!(realm("/anything"), Realm::Tenant);
    }

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
