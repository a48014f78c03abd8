//! The credential middleware and the security schemes the OpenAPI document names:
//! which paths need which credential, read from the request and checked by
//! [`crate::auth::Authenticator`].

use poem::http::header;
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

use crate::api::error::ApiError;
use crate::api::state::AppState;
use crate::auth::{AuthContext, AuthError, Operator};

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

/// Middleware: every route but the public ones needs the operator token (admin routes)
/// or a tenant credential (all others); deny by default.
pub async fn authenticate<E: Endpoint>(
    state: AppState,
    ep: E,
    mut req: Request,
) -> poem::Result<Response> {
    match realm(req.uri().path()) {
        Realm::Public => {}
        Realm::Operator => {
            let token = bearer(&req).ok_or(AuthError::Missing("the operator token is required"));
            let operator = token
                .and_then(|t| state.auth.operator(t))
                .map_err(ApiError::from)?;
            req.extensions_mut().insert(operator);
        }
        Realm::Tenant => {
            if req.method() == poem::http::Method::OPTIONS {
                // CORS preflights carry no credentials.
                return ep.call(req).await.map(IntoResponse::into_response);
            }
            let Some(token) = bearer(&req).map(str::to_owned) else {
                return Err(ApiError::from(AuthError::Missing(
                    "a tenant API key or JWT is required",
                ))
                .into());
            };
            let host = host(&req);
            let ctx = state
                .auth
                .tenant(&token, host.as_deref())
                .await
                .map_err(ApiError::from)?;
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
}
