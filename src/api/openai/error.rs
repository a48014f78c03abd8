//! Errors on `/v1` in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`,
//! with the statuses OpenAI's SDKs map to their exception classes. The code is the one
//! of the shared error table; an invalid request is 400 here, as OpenAI answers it.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::ApiResponse;
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, Registry};
use poem_openapi::types::ToJSON;

use super::types::{OpenAiErrorBody, OpenAiErrorDetail};
use crate::api::error::{ApiError, ErrorCode};
use crate::auth::AuthError;
use crate::services::ServiceError;

/// Whether a path is on the OpenAI-compatible surface.
pub fn is_openai_path(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// An error answered on `/v1`.
#[derive(Debug, Clone)]
pub struct OpenAiError {
    error: ApiError,
    param: Option<&'static str>,
}

impl OpenAiError {
    /// Names the request field at fault.
    pub fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }
}

/// OpenAI's status, body and extra headers for an error of the shared table.
pub fn openai_body(error: &ApiError, param: Option<&str>) -> (StatusCode, OpenAiErrorBody) {
    let (status, code) = error.code.parts();
    let (status, kind) = match error.code {
        ErrorCode::ValidationFailed | ErrorCode::BadRequest => {
            (StatusCode::BAD_REQUEST, "invalid_request_error")
        }
        ErrorCode::MissingCredentials | ErrorCode::InvalidTenant | ErrorCode::InvalidAdminToken => {
            (status, "authentication_error")
        }
        ErrorCode::InsufficientScope => (status, "permission_error"),
        ErrorCode::NotFound => (status, "not_found_error"),
        ErrorCode::RateLimited => (status, "rate_limit_error"),
        _ if status.is_server_error() => (status, "server_error"),
        _ => (status, "invalid_request_error"),
    };
    let code = if error.code == ErrorCode::NotFound && param == Some("model") {
        "model_not_found"
    } else {
        code
    };
    let body = OpenAiErrorBody {
        error: OpenAiErrorDetail {
            message: error.message.clone(),
            kind: kind.to_owned(),
            param: param.map(str::to_owned),
            code: code.to_owned(),
        },
    };
    (status, body)
}

/// The whole response for an error of the shared table on `/v1`: OpenAI's status and
/// body, with the shared response's headers (`WWW-Authenticate`, `Retry-After`).
pub fn render(error: &ApiError, param: Option<&str>) -> Response {
    let (status, body) = openai_body(error, param);
    let mut resp = error.to_response();
    resp.set_status(status);
    resp.set_body(body.to_json_string());
    resp
}

impl OpenAiError {
    fn response(&self) -> Response {
        render(&self.error, self.param)
    }
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        Self { error, param: None }
    }
}

impl From<ServiceError> for OpenAiError {
    fn from(e: ServiceError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<AuthError> for OpenAiError {
    fn from(e: AuthError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        self.response()
    }
}

impl std::fmt::Display for OpenAiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for OpenAiError {}

impl poem::error::ResponseError for OpenAiError {
    fn status(&self) -> StatusCode {
        openai_body(&self.error, self.param).0
    }

    fn as_response(&self) -> Response {
        self.response()
    }
}

impl ApiResponse for OpenAiError {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "Error, in OpenAI's shape; the status says which.",
                status: None,
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: "application/json; charset=utf-8",
                    schema: <OpenAiErrorBody as poem_openapi::types::Type>::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        <OpenAiErrorBody as poem_openapi::types::Type>::register(registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_openai_types_and_statuses() {
        let (s, b) = openai_body(&ApiError::invalid("bad"), None);
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(b.error.kind, "invalid_request_error");
        assert_eq!(b.error.code, "validation_failed");
        let (s, b) = openai_body(&ApiError::not_found("no such model"), Some("model"));
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(b.error.code, "model_not_found");
        assert_eq!(b.error.param.as_deref(), Some("model"));
        let (s, b) = openai_body(&ApiError::new(ErrorCode::InvalidTenant, "who"), None);
        assert_eq!(
            (s, b.error.kind.as_str()),
            (StatusCode::UNAUTHORIZED, "authentication_error")
        );
        let (s, b) = openai_body(&ApiError::new(ErrorCode::RateLimited, "slow"), None);
        assert_eq!(
            (s, b.error.kind.as_str()),
            (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error")
        );
    }
}
