//! API errors: a status, a stable code and a message, always answered as JSON.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use medkeeper_coord::Error as CoordError;
use medkeeper_hospital::Error as HospitalError;
use medkeeper_hospital::store::StoreError;
use medkeeper_recipes::Error as RecipeError;
use serde::Serialize;

/// An error answered to an API client: `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable error code (see docs/api.md).
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
}

/// The JSON body of an error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The error inside [`ErrorBody`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable code: `bad_request`, `unauthorized`, `forbidden`, `not_found`,
    /// `illegal_transition`, `conflict`, `payload_too_large`, `unsupported_media_type`,
    /// `invalid`, `too_many_streams`, `overloaded`, `timeout`, `unavailable`, `internal`.
    pub code: String,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 422 `invalid`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    /// 503 `overloaded`.
    pub fn overloaded(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message)
    }

    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500 `internal`.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.code, message = %self.message, "request failed");
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<HospitalError> for ApiError {
    fn from(e: HospitalError) -> ApiError {
        match e {
            HospitalError::NotFound(_) => ApiError::not_found(e.to_string()),
            // The code says "invalid" / "conflict" already; the message is the reason alone.
            HospitalError::Invalid(why) => ApiError::invalid(why),
            HospitalError::IllegalTransition { .. } => {
                ApiError::new(StatusCode::CONFLICT, "illegal_transition", e.to_string())
            }
            HospitalError::Conflict(why) => ApiError::new(StatusCode::CONFLICT, "conflict", why),
            HospitalError::Coord(c) => c.into(),
            HospitalError::Recipe(r) => r.into(),
            HospitalError::Store(s) => s.into(),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<CoordError> for ApiError {
    fn from(e: CoordError) -> ApiError {
        match e {
            CoordError::ConnectionLoss
            | CoordError::SessionExpired
            | CoordError::SessionMoved
            | CoordError::ClientClosed
            | CoordError::Throttled
            | CoordError::OperationTimeout => ApiError::unavailable(format!(
                "the coordination service is not reachable: {e}; retry"
            )),
            CoordError::NoNode => ApiError::not_found(e.to_string()),
            other => ApiError::internal(format!("coordination: {other}")),
        }
    }
}

impl From<RecipeError> for ApiError {
    fn from(e: RecipeError) -> ApiError {
        match e {
            RecipeError::Coord(c) => c.into(),
            other if other.is_session_fatal() => ApiError::unavailable(other.to_string()),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::internal(format!("clinical store: {e}"))
    }
}
