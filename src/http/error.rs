/*!
The one place where errors become HTTP responses.

Every error body is JSON: `{"error": "<what was wrong and what to do>"}`, plus `field` or
`parameter` when one input is at fault. Server-side failures answer a generic message and are
logged in full; their details never reach the client.
*/

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::access::Refusal;
use crate::http::auth::Refused;
use crate::http::body::BodyError;

/// An error on its way to an HTTP client.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed: 400.
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
        /// The JSON field or query parameter at fault, if one is.
        field: Option<String>,
    },
    /// Missing or wrong credentials of a source (its secret, signature or write key): 401.
    #[error("{0}")]
    Unauthorized(String),
    /// Refused by the access rules: 401 without a valid token, 403 with one lacking the role.
    #[error("{0}")]
    Denied(Refusal),
    /// The client did not send its request in time: 408.
    #[error("{0}")]
    Timeout(String),
    /// What the request names does not exist: 404.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be done in the state things are in (and retrying will not help): 409.
    #[error("{0}")]
    Conflict(String),
    /// Body or batch over a limit: 413.
    #[error("{0}")]
    TooLarge(String),
    /// Unsupported `Content-Encoding`: 415.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// sluice is over a limit of its own and asks the client to come back: 503 with `Retry-After`.
    #[error("{message}")]
    Unavailable {
        /// Why.
        message: String,
        /// Seconds for `Retry-After`.
        retry_after_secs: u64,
    },
    /// Something failed on our side: 500, details only in the log.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    /// A 400 naming the field or parameter at fault.
    pub fn bad_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        AppError::BadRequest { message: message.into(), field: Some(field.into()) }
    }

    /// A 400 about the request as a whole.
    pub fn bad_request(message: impl Into<String>) -> Self {
        AppError::BadRequest { message: message.into(), field: None }
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AppError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            AppError::Denied(refusal) if refusal.is_forbidden() => StatusCode::FORBIDDEN,
            AppError::Denied(_) => StatusCode::UNAUTHORIZED,
            AppError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<BodyError> for AppError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge { .. } | BodyError::DecompressedTooLarge { .. } => AppError::TooLarge(e.to_string()),
            BodyError::UnsupportedEncoding(_) => AppError::UnsupportedMediaType(e.to_string()),
            BodyError::CorruptGzip { .. } | BodyError::Read(_) => AppError::bad_request(e.to_string()),
            BodyError::Timeout(_) => AppError::Timeout(e.to_string()),
            BodyError::Busy { .. } => AppError::Unavailable { message: e.to_string(), retry_after_secs: 1 },
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            AppError::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "request failed");
                json!({"error": "internal error; the details are in sluice's log"})
            }
            AppError::BadRequest { message, field: Some(field) } => json!({"error": message, "field": field}),
            AppError::Denied(refusal) => json!({"error": refusal.to_string(), "role": refusal.role().as_str()}),
            other => json!({"error": other.to_string()}),
        };
        let mut response = (status, Json(body)).into_response();
        let refused = match &self {
            AppError::Denied(refusal) => Some(refusal.reason()),
            AppError::Unauthorized(_) => Some("bad_credentials"),
            _ => None,
        };
        if let Some(reason) = refused {
            response.extensions_mut().insert(Refused(reason));
            if status == StatusCode::UNAUTHORIZED {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"sluice\""));
            }
        }
        if let AppError::Unavailable { retry_after_secs, .. } = self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    async fn body(e: AppError) -> (StatusCode, serde_json::Value, Option<String>) {
        let r = e.into_response();
        let status = r.status();
        let retry = r.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap(), retry)
    }

    #[tokio::test]
    async fn client_errors_name_the_field_and_server_errors_hide_details() {
        let (s, b, _) = body(AppError::bad_field("from", "parameter `from`: bad")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(b, json!({"error": "parameter `from`: bad", "field": "from"}));
        let (s, b, _) = body(AppError::Internal(anyhow::anyhow!("secret path /etc/x"))).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!b.to_string().contains("secret"));
    }

    #[tokio::test]
    async fn unavailable_carries_retry_after() {
        let (s, _, retry) = body(AppError::Unavailable { message: "busy".into(), retry_after_secs: 7 }).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("7"));
    }
}
