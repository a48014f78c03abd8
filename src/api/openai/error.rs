//! The error type of the `/v1` handlers: an [`ApiError`] that the OpenAPI document
//! declares in OpenAI's shape. It becomes the same `poem::Error` as any other, and the
//! error middleware renders every error on `/v1` in OpenAI's shape
//! ([`ApiError::to_openai_response`]).

use poem_openapi::ApiResponse;
use poem_openapi::registry::{MetaMediaType, MetaResponse, MetaResponses, Registry};

use crate::api::error::{ApiError, OpenAiErrorBody};
use crate::auth::AuthError;
use crate::services::ServiceError;

/// An error answered on `/v1`.
#[derive(Debug, Clone)]
pub struct OpenAiError(pub ApiError);

impl OpenAiError {
    /// Names the request field at fault.
    pub fn param(self, param: &'static str) -> Self {
        Self(self.0.at(param))
    }
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl From<ServiceError> for OpenAiError {
    fn from(e: ServiceError) -> Self {
        Self(e.into())
    }
}

impl From<AuthError> for OpenAiError {
    fn from(e: AuthError) -> Self {
        Self(e.into())
    }
}

impl From<OpenAiError> for poem::Error {
    fn from(e: OpenAiError) -> Self {
        e.0.into()
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

impl poem::IntoResponse for OpenAiError {
    fn into_response(self) -> poem::Response {
        self.0.to_openai_response()
    }
}
