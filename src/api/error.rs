//! One error type for the HTTP API: every error, ours or poem's, leaves as
//! `{"error": {"code", "message"}}` with the status from one table.

use poem::http::{StatusCode, header};
use poem::{IntoResponse, Response};
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, Registry};
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Object};

use crate::auth::AuthError;
use crate::domain::InvalidInput;
use crate::services::ServiceError;
use crate::store::StoreError;

/// The body of every error response.
#[derive(Debug, Clone, Object, serde::Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// Machine-readable code and human-readable message.
#[derive(Debug, Clone, Object, serde::Deserialize)]
pub struct ErrorDetail {
    /// Stable code, e.g. `invalid_tenant`, `not_found`, `validation_failed`.
    pub code: String,
    /// What happened, for people.
    pub message: String,
}

/// Every kind of error the API answers with, and its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 400: the request could not be parsed.
    BadRequest,
    /// 401: no credential was given.
    MissingCredentials,
    /// 401: the credential names no usable tenant.
    InvalidTenant,
    /// 401: the operator token is wrong.
    InvalidAdminToken,
    /// 403: the credential lacks the scope.
    InsufficientScope,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 409: it exists already, or the server's state does not allow it (a reindex
    /// when the vector store keeps no local index).
    Conflict,
    /// 413.
    PayloadTooLarge,
    /// 415.
    UnsupportedMediaType,
    /// 422: well-formed but invalid.
    ValidationFailed,
    /// 429.
    RateLimited,
    /// 500: details only in the log.
    Internal,
    /// 503.
    Unavailable,
    /// 502: an upstream generation provider refused or failed.
    UpstreamFailed,
    /// 500: the local model failed; also the code of an error inside a chat stream
    /// that started already.
    GenerationFailed,
}

impl ErrorCode {
    /// The HTTP status and the stable code string.
    pub fn parts(self) -> (StatusCode, &'static str) {
        use ErrorCode::*;
        match self {
            BadRequest => (StatusCode::BAD_REQUEST, "bad_request"),
            MissingCredentials => (StatusCode::UNAUTHORIZED, "missing_credentials"),
            InvalidTenant => (StatusCode::UNAUTHORIZED, "invalid_tenant"),
            InvalidAdminToken => (StatusCode::UNAUTHORIZED, "invalid_admin_token"),
            InsufficientScope => (StatusCode::FORBIDDEN, "insufficient_scope"),
            NotFound => (StatusCode::NOT_FOUND, "not_found"),
            MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Conflict => (StatusCode::CONFLICT, "conflict"),
            PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ValidationFailed => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
            Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            UpstreamFailed => (StatusCode::BAD_GATEWAY, "upstream_error"),
            GenerationFailed => (StatusCode::INTERNAL_SERVER_ERROR, "generation_failed"),
        }
    }
}

impl ErrorCode {
    /// The stable code string, as it appears in `{"error": {"code": …}}`.
    pub fn as_str(self) -> &'static str {
        self.parts().1
    }

    /// The code of a generation that fails after its stream started.
    pub fn of_generation(e: &crate::domain::GenError) -> Self {
        match e {
            crate::domain::GenError::Upstream { .. } => Self::UpstreamFailed,
            _ => Self::GenerationFailed,
        }
    }
}

/// `Retry-After` on 503 and 429 answers, in seconds.
pub const RETRY_AFTER_SECS: &str = "1";

/// An error answered to a client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// Which error.
    pub code: ErrorCode,
    /// Message shown to the client.
    pub message: String,
    /// The request field at fault, when one is (OpenAI's `param`).
    pub param: Option<&'static str>,
}

impl ApiError {
    /// An error with a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            param: None,
        }
    }

    /// Names the request field at fault.
    pub fn at(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    /// 404 for a named thing.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, what)
    }

    /// 422.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ValidationFailed, message)
    }

    /// 500; the cause goes to the log, never to the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(ErrorCode::Internal, "internal error; see the server log")
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code.parts().0
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.parts().1.to_owned(),
                message: self.message.clone(),
            },
        }
    }

    /// The full response, with `WWW-Authenticate` on 401.
    pub fn to_response(&self) -> Response {
        let body = self.body().to_json_string();
        let mut builder = Response::builder()
            .status(self.status())
            .content_type("application/json; charset=utf-8");
        if self.status() == StatusCode::UNAUTHORIZED {
            let challenge = match self.code {
                ErrorCode::MissingCredentials => "Bearer realm=\"ragbox\"",
                _ => "Bearer realm=\"ragbox\", error=\"invalid_token\"",
            };
            builder = builder.header(header::WWW_AUTHENTICATE, challenge);
        }
        if matches!(self.code, ErrorCode::Unavailable | ErrorCode::RateLimited) {
            // Queues drain in well under a second; clients that honour it come back soon.
            builder = builder.header(header::RETRY_AFTER, RETRY_AFTER_SECS);
        }
        builder.body(body)
    }

    /// Maps any poem error (parse errors, 404/405 from routing, ...) into our shape.
    pub fn from_poem(err: &poem::Error) -> Self {
        if let Some(api) = err.downcast_ref::<ApiError>() {
            return api.clone();
        }
        let status = err.status();
        let code = match status {
            StatusCode::BAD_REQUEST => ErrorCode::BadRequest,
            StatusCode::UNAUTHORIZED => ErrorCode::MissingCredentials,
            StatusCode::FORBIDDEN => ErrorCode::InsufficientScope,
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => ErrorCode::ValidationFailed,
            StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
            StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
            s if s.is_client_error() => ErrorCode::BadRequest,
            _ => return Self::internal(err),
        };
        let message = match code {
            ErrorCode::NotFound => "no such route".to_owned(),
            ErrorCode::MethodNotAllowed => "method not allowed on this route".to_owned(),
            _ => err.to_string(),
        };
        Self::new(code, message)
    }
}

#[cfg(test)]
mod openai_tests {
    use super::*;

    #[test]
    fn codes_map_to_openai_types_and_statuses() {
        let (s, b) = ApiError::invalid("bad").openai_body();
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(b.error.kind, "invalid_request_error");
        assert_eq!(b.error.code, "validation_failed");
        let (s, b) = ApiError::not_found("no such model")
            .at("model")
            .openai_body();
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(b.error.code, "model_not_found");
        assert_eq!(b.error.param.as_deref(), Some("model"));
        let (s, b) = ApiError::new(ErrorCode::InvalidTenant, "who").openai_body();
        assert_eq!(
            (s, b.error.kind.as_str()),
            (StatusCode::UNAUTHORIZED, "authentication_error")
        );
        let (s, b) = ApiError::new(ErrorCode::RateLimited, "slow").openai_body();
        assert_eq!(
            (s, b.error.kind.as_str()),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error")
        );
        assert!(is_openai_path("/v1/models") && !is_openai_path("/v10"));
    }
}

impl poem::error::ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        ApiError::status(self)
    }

    fn as_response(&self) -> Response {
        self.to_response()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.to_response()
    }
}

impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "Error, in the shared shape; the status says which.",
                status: None,
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: "application/json; charset=utf-8",
                    schema: <ErrorBody as poem_openapi::types::Type>::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        <ErrorBody as poem_openapi::types::Type>::register(registry);
    }
}

impl From<InvalidInput> for ApiError {
    fn from(err: InvalidInput) -> Self {
        Self::invalid(err.0)
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Busy => Self::new(ErrorCode::Unavailable, "database busy; retry"),
            other => Self::internal(&other),
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::NotFound(m) => Self::new(ErrorCode::NotFound, m),
            ServiceError::Conflict(m) => Self::new(ErrorCode::Conflict, m),
            ServiceError::Invalid(m) => Self::new(ErrorCode::ValidationFailed, m),
            ServiceError::Store(e) => e.into(),
            ServiceError::Io(e) => Self::internal(&e),
            ServiceError::TooLarge(m) => Self::new(ErrorCode::PayloadTooLarge, m),
            ServiceError::Unsupported(m) => Self::new(ErrorCode::UnsupportedMediaType, m),
            ServiceError::Busy(m) => Self::new(ErrorCode::Unavailable, m),
            ServiceError::RateLimited(m) => Self::new(ErrorCode::RateLimited, m),
            ServiceError::Upstream(m) => Self::new(ErrorCode::UpstreamFailed, m),
            ServiceError::Internal(m) => Self::internal(&m),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        let code = match &err {
            AuthError::Service(_) => {
                return match err {
                    AuthError::Service(e) => e.into(),
                    other => Self::internal(&other),
                };
            }
            AuthError::Missing(_) => ErrorCode::MissingCredentials,
            AuthError::InvalidTenant(_) => ErrorCode::InvalidTenant,
            AuthError::InvalidAdminToken => ErrorCode::InvalidAdminToken,
            AuthError::InsufficientScope(_) => ErrorCode::InsufficientScope,
        };
        Self::new(code, err.to_string())
    }
}

/// OpenAI's error detail.
#[derive(Debug, Clone, Object, serde::Deserialize)]
pub struct OpenAiErrorDetail {
    /// What happened, for people.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `rate_limit_error` or `server_error`.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    /// Stable code (`model_not_found`, `validation_failed`, …).
    pub code: String,
}

/// OpenAI's error body, the shape of every error on `/v1`.
#[derive(Debug, Clone, Object, serde::Deserialize)]
pub struct OpenAiErrorBody {
    /// The error.
    pub error: OpenAiErrorDetail,
}

/// Whether a path is on the OpenAI-compatible surface.
pub fn is_openai_path(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

impl ApiError {
    /// OpenAI's status and body for this error: the code of the table, the type and
    /// status OpenAI's SDKs map to their exceptions (an invalid request is 400 there).
    pub fn openai_body(&self) -> (StatusCode, OpenAiErrorBody) {
        let (status, code) = self.code.parts();
        let (status, kind) = match self.code {
            ErrorCode::ValidationFailed | ErrorCode::BadRequest => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            ErrorCode::MissingCredentials
            | ErrorCode::InvalidTenant
            | ErrorCode::InvalidAdminToken => (status, "authentication_error"),
            ErrorCode::InsufficientScope => (status, "permission_error"),
            ErrorCode::NotFound => (status, "not_found_error"),
            ErrorCode::RateLimited => (status, "rate_limit_error"),
            _ if status.is_server_error() => (status, "server_error"),
            _ => (status, "invalid_request_error"),
        };
        let code = if self.code == ErrorCode::NotFound && self.param == Some("model") {
            "model_not_found"
        } else {
            code
        };
        let body = OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: self.message.clone(),
                kind: kind.to_owned(),
                param: self.param.map(str::to_owned),
                code: code.to_owned(),
            },
        };
        (status, body)
    }

    /// The whole response in OpenAI's shape, with the shared response's headers
    /// (`WWW-Authenticate`, `Retry-After`).
    pub fn to_openai_response(&self) -> Response {
        let (status, body) = self.openai_body();
        let mut resp = self.to_response();
        resp.set_status(status);
        resp.set_body(body.to_json_string());
        resp
    }
}

/// The response for an error on `path`: OpenAI's shape on the OpenAI-compatible
/// routes, the shared shape everywhere else.
pub fn response_for(path: &str, error: &ApiError) -> Response {
    if is_openai_path(path) {
        return error.to_openai_response();
    }
    error.to_response()
}

/// Turns every error that reaches the top of the app into its JSON shape (see
/// [`response_for`]), keeping the route pattern for metrics.
/// A 405 gets `Allow`, listing what the path takes.
pub async fn json_errors<E: poem::Endpoint>(
    allowed: std::sync::Arc<crate::api::spec::Allowed>,
    ep: E,
    req: poem::Request,
) -> poem::Result<Response> {
    let path = req.uri().path().to_owned();
    let allow = |resp: &mut Response| {
        if resp.status() == StatusCode::METHOD_NOT_ALLOWED
            && let Some(methods) = allowed.methods(&path)
            && let Ok(value) = poem::http::HeaderValue::from_str(&methods)
        {
            resp.headers_mut().insert(header::ALLOW, value);
        }
    };
    match ep.call(req).await {
        Ok(resp) => {
            let mut resp = resp.into_response();
            allow(&mut resp);
            Ok(resp)
        }
        Err(err) => {
            let pattern = err.data::<poem::PathPattern>().cloned();
            let mut resp = response_for(&path, &ApiError::from_poem(&err));
            allow(&mut resp);
            if let Some(pattern) = pattern {
                resp.set_data(pattern);
            }
            Ok(resp)
        }
    }
}
