//! The HTTP surface: one OpenAPI service for every route, Swagger UI at `/docs`,
//! and the middleware stack around it.

pub mod admin;
pub mod agents;
pub mod chat;
pub mod conform;
pub mod documents;
pub mod dto;
pub mod error;
pub mod health;
pub mod jobs;
pub mod limits;
pub mod openai;
pub mod search;
pub mod security;
pub mod serve;
pub mod spec;
pub mod state;
pub mod tenant;
pub mod worker;

use poem::http::{Method, header};
use poem::middleware::Cors;
use poem::{Body, Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use poem_openapi::OpenApiService;

use error::{ApiError, ErrorCode, json_errors};
use state::AppState;

/// The OpenAPI service with every API of ragbox.
#[allow(clippy::type_complexity)]
pub fn openapi(
    state: &AppState,
) -> OpenApiService<
    (
        health::HealthApi,
        admin::AdminApi,
        tenant::TenantApi,
        documents::DocumentsApi,
        search::SearchApi,
        chat::ChatApi,
        agents::AgentsApi,
        limits::LimitsApi,
        jobs::JobsApi,
        openai::OpenAiApi,
    ),
    (),
> {
    OpenApiService::new(
        (
            health::HealthApi::new(state.clone()),
            admin::AdminApi::new(state.clone()),
            tenant::TenantApi::new(state.clone()),
            documents::DocumentsApi::new(state.clone()),
            search::SearchApi::new(state.clone()),
            chat::ChatApi::new(state.clone()),
            agents::AgentsApi::new(state.clone()),
            limits::LimitsApi::new(state.clone()),
            jobs::JobsApi::new(state.clone()),
            openai::OpenAiApi::new(state.clone()),
        ),
        "ragbox",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "Self-hosted multi-tenant RAG appliance. Operator routes under /api/v1/admin take the \
         operator token; tenant routes take a tenant API key (rbx_…) or JWT as a bearer token.",
    )
}

/// The whole application endpoint, with its middleware.
pub fn build(state: AppState) -> impl Endpoint<Output = Response> {
    let api = openapi(&state);
    let raw = api.spec();
    let mut document = spec::exact(&raw);
    let config = &state.core.config;
    let providers: Vec<&str> = config.provider_names().collect();
    spec::declare_runtime(
        &mut document,
        &spec::Runtime {
            media_types: crate::text::extract::MEDIA_TYPES,
            providers: &providers,
            chat_model: &state.models.local,
            embedding_model: &state.models.embedding,
        },
    );
    let allowed = std::sync::Arc::new(
        spec::Allowed::from_spec(&document)
            .with("/openapi.json", &["GET", "HEAD"])
            .with("/docs", &["GET", "HEAD"]),
    );
    let bodies = std::sync::Arc::new(conform::Bodies::from_spec(&document));
    let document = document.to_string();
    // Swagger UI shows the same document /openapi.json serves.
    let docs = api.swagger_ui_html().replace(&raw, &document);
    let routes = Route::new()
        .at(
            "/openapi.json",
            poem::get(poem::endpoint::make_sync(move |_| {
                Response::builder()
                    .content_type("application/json; charset=utf-8")
                    .body(document.clone())
            })),
        )
        .at(
            "/docs",
            poem::get(poem::endpoint::make_sync(move |_| {
                poem::web::Html(docs.clone()).into_response()
            })),
        )
        .nest("/", api);

    let auth_state = state.clone();
    let max_body = state.core.config.server.max_body_bytes;
    let cors = cors(&state);
    let metrics = state.metrics.clone();
    let rate_state = state.clone();
    routes
        .around(move |ep, req| conform::check_body(bodies.clone(), ep, req))
        .around(move |ep, req| rate_limit(rate_state.clone(), ep, req))
        .around(move |ep, req| security::authenticate(auth_state.clone(), ep, req))
        .around(move |ep, req| limit_body(max_body, ep, req))
        .around(move |ep, req| json_errors(allowed.clone(), ep, req))
        .with_if(cors.is_some(), cors.unwrap_or_default())
        .around(move |ep, req| crate::telemetry::observe(metrics.clone(), ep, req))
}

fn cors(state: &AppState) -> Option<Cors> {
    let config = &state.core.config.server.cors;
    if !config.enabled {
        return None;
    }
    let mut cors = Cors::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PATCH,
            Method::PUT,
            Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .allow_header("x-request-id")
        .expose_header("x-request-id")
        .max_age(600);
    for origin in &config.allowed_origins {
        cors = cors.allow_origin(origin.as_str());
    }
    Some(cors)
}

/// Takes each tenant request from its tenant's bucket (after authentication): 429 with
/// `Retry-After` when the bucket is empty; `X-RateLimit-Limit`, `-Remaining` and
/// `-Reset` on every successful tenant answer while a limit is in force. Every answer
/// to a tenant is counted in its series.
async fn rate_limit<E: Endpoint>(state: AppState, ep: E, req: Request) -> poem::Result<Response> {
    let Some((tenant, meter)) = req
        .extensions()
        .get::<crate::auth::AuthContext>()
        .map(|c| (c.tenant.id.clone(), state.metrics.tenants().of(&c.tenant)))
    else {
        return ep.call(req).await.map(IntoResponse::into_response);
    };
    let result = admit(&state, &tenant, ep, req).await;
    let status = match &result {
        Ok(resp) => resp.status(),
        Err(e) => e.status(),
    };
    meter.request(status.as_u16());
    result
}

async fn admit<E: Endpoint>(
    state: &AppState,
    tenant: &crate::domain::TenantId,
    ep: E,
    req: Request,
) -> poem::Result<Response> {
    let decision = state
        .core
        .limiter
        .admit(&state.core, tenant)
        .await
        .map_err(ApiError::from)?;
    let headers = |resp: &mut Response| {
        if decision.limit == 0 {
            return;
        }
        let h = resp.headers_mut();
        h.insert("x-ratelimit-limit", decision.limit.into());
        h.insert("x-ratelimit-remaining", decision.remaining.into());
        h.insert("x-ratelimit-reset", decision.reset_secs.into());
    };
    if !decision.allowed {
        let error = ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "this tenant is over its limit of {} requests per minute",
                decision.limit
            ),
        );
        let mut resp = error::response_for(req.uri().path(), &error);
        headers(&mut resp);
        resp.headers_mut()
            .insert(header::RETRY_AFTER, decision.retry_after_secs.into());
        return Ok(resp);
    }
    let mut resp = ep.call(req).await?.into_response();
    headers(&mut resp);
    Ok(resp)
}

/// Refuses bodies over `max` bytes with 413. A declared `Content-Length` over the limit
/// is refused before anything is read; every other body (chunked, HTTP/2 frames, a
/// length that lies) is counted as it streams to the handler, and the request fails
/// with 413 the moment the count passes the limit. Nothing is buffered here, so the
/// credential check inside runs before a byte of the body is read.
async fn limit_body<E: Endpoint>(max: u64, ep: E, mut req: Request) -> poem::Result<Response> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use futures_util::StreamExt;

    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request body is larger than the limit of {max} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(too_large().into());
    }
    let exceeded = Arc::new(AtomicBool::new(false));
    let flag = exceeded.clone();
    let mut seen = 0u64;
    let counted = req.take_body().into_bytes_stream().map(move |piece| {
        let piece = piece?;
        seen = seen.saturating_add(piece.len() as u64);
        if seen > max {
            flag.store(true, Ordering::Release);
            return Err(std::io::Error::other("request body over the limit"));
        }
        Ok(piece)
    });
    req.set_body(Body::from_bytes_stream(counted));
    let result = ep.call(req).await.map(IntoResponse::into_response);
    if exceeded.load(Ordering::Acquire) {
        return Err(too_large().into());
    }
    result
}
