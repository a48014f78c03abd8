//! The HTTP surface: one OpenAPI service for every route, Swagger UI at `/docs`,
//! and the middleware stack around it.

pub mod admin;
pub mod agents;
pub mod chat;
pub mod documents;
pub mod dto;
pub mod health;
pub mod search;
pub mod tenant;

use poem::http::{Method, header};
use poem::middleware::Cors;
use poem::{Body, Endpoint, EndpointExt, IntoResponse, Request, Response, Route};
use poem_openapi::OpenApiService;

use crate::error::{ApiError, ErrorCode, json_errors};
use crate::startup::AppState;

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
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let routes = Route::new()
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .nest("/", api);

    let auth_state = state.clone();
    let max_body = state.core.config.server.max_body_bytes;
    let cors = cors(&state);
    let metrics = state.metrics.clone();
    routes
        .around(move |ep, req| crate::auth::authenticate(auth_state.clone(), ep, req))
        .around(move |ep, req| limit_body(max_body, ep, req))
        .around(json_errors)
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

/// Refuses bodies over `max` bytes with 413, whether announced by `Content-Length` or
/// streamed in chunks.
async fn limit_body<E: Endpoint>(max: u64, ep: E, mut req: Request) -> poem::Result<Response> {
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
    match declared {
        Some(len) if len > max => return Err(too_large().into()),
        Some(_) => {}
        None if req.headers().contains_key(header::TRANSFER_ENCODING) => {
            use tokio::io::AsyncReadExt;
            let mut buf = Vec::new();
            let mut reader = req.take_body().into_async_read().take(max + 1);
            reader
                .read_to_end(&mut buf)
                .await
                .map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("reading body: {e}")))?;
            if buf.len() as u64 > max {
                return Err(too_large().into());
            }
            req.set_body(Body::from(buf));
        }
        None => {}
    }
    ep.call(req).await.map(IntoResponse::into_response)
}
