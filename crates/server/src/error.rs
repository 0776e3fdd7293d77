//! API errors: a stable code (which decides the status) and a message, always answered as
//! JSON. A 4xx message says what to fix; a 5xx carries no internal detail: an `internal`
//! error's detail goes to the log under a reference the answer quotes.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use medkeeper_coord::Error as CoordError;
use medkeeper_hospital::Error as HospitalError;
use medkeeper_hospital::store::StoreError;
use medkeeper_recipes::Error as RecipeError;
use rand::TryRngCore;
use serde::Serialize;

/// A stable error code, answered as its snake_case name (the table in docs/api.md). Each code
/// has one HTTP status ([`ErrorCode::status`]): a client may branch on either.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: malformed JSON, a wrong type, a missing or unknown field, a bad query.
    BadRequest,
    /// 401: no token, an unknown or revoked token.
    Unauthorized,
    /// 401: the token has expired (ask for a new one: a rotation's successor, or a fresh one).
    TokenExpired,
    /// 403: the role may not do this.
    Forbidden,
    /// 404: no such thing (or route).
    NotFound,
    /// 405: the route does not take this method.
    MethodNotAllowed,
    /// 409: the order's state does not allow it.
    IllegalTransition,
    /// 409: someone else changed the same thing meanwhile, or it is busy.
    Conflict,
    /// 413: the body is too large.
    PayloadTooLarge,
    /// 415: the body is not JSON.
    UnsupportedMediaType,
    /// 422: well-formed but invalid values.
    Invalid,
    /// 429: the token holds its most open event streams.
    TooManyStreams,
    /// 429: too many failed authentications from the client's address lately; the answer's
    /// `Retry-After` says when to try again.
    RateLimited,
    /// 503: too many requests or streams; retry later.
    Overloaded,
    /// 503: the request took longer than its deadline.
    Timeout,
    /// 503: no connected coordination session.
    Unavailable,
    /// 500: a bug or a failed store; the detail is in the server's log, not the answer.
    Internal,
}

impl ErrorCode {
    /// The code as answered (and recorded in the audit log).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::IllegalTransition => "illegal_transition",
            ErrorCode::Conflict => "conflict",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::Invalid => "invalid",
            ErrorCode::TooManyStreams => "too_many_streams",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status answered with this code.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Unauthorized | ErrorCode::TokenExpired => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::IllegalTransition | ErrorCode::Conflict => StatusCode::CONFLICT,
            ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::Invalid => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::TooManyStreams | ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Overloaded | ErrorCode::Timeout | ErrorCode::Unavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered to an API client: `{"error": {"code": ..., "message": ...}}`, with the
/// code's status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The stable error code (see docs/api.md); it decides the HTTP status.
    pub code: ErrorCode,
    /// What went wrong, for people. For [`ErrorCode::Internal`] only a reference to the
    /// server's log entry, which holds the detail.
    pub message: String,
    /// For [`ErrorCode::RateLimited`]: when to try again, answered as `Retry-After` (seconds).
    pub(crate) retry_after: Option<std::time::Duration>,
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
    /// A stable code (see [`ErrorCode`]).
    pub code: ErrorCode,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    /// An error with this code (and its status) and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 429 `rate_limited`, to be tried again after `retry_after` (`Retry-After`, in whole
    /// seconds, rounded up).
    pub fn rate_limited(message: impl Into<String>, retry_after: std::time::Duration) -> ApiError {
        ApiError {
            retry_after: Some(retry_after),
            ..ApiError::new(ErrorCode::RateLimited, message)
        }
    }

    /// True for a refused token (none, malformed, unknown, revoked, expired): what counts as a
    /// failed authentication.
    pub fn is_auth_failure(&self) -> bool {
        matches!(self.code, ErrorCode::Unauthorized | ErrorCode::TokenExpired)
    }

    /// The HTTP status: the code's.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }

    /// 400 `bad_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::BadRequest, message)
    }

    /// 401 `unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unauthorized, message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Forbidden, message)
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }

    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Conflict, message)
    }

    /// 422 `invalid`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Invalid, message)
    }

    /// 503 `overloaded`.
    pub fn overloaded(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Overloaded, message)
    }

    /// 503 `unavailable`.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Unavailable, message)
    }

    /// 500 `internal`. The `detail` (a store's or a library's error text, which may name
    /// files, tables or nodes) is logged with `tracing::error!` under a fresh reference; the
    /// client gets only the reference, to quote when asking what happened.
    pub fn internal(detail: impl fmt::Display) -> ApiError {
        let reference = reference();
        tracing::error!(reference = %reference, detail = %detail, "internal error");
        ApiError::new(
            ErrorCode::Internal,
            format!("internal error; see the server log, reference {reference}"),
        )
    }
}

/// A reference for one internal error: 16 hex digits, random (a counter if the OS has no
/// randomness to give).
fn reference() -> String {
    static FALLBACK: AtomicU64 = AtomicU64::new(0);
    let n = rand::rngs::OsRng
        .try_next_u64()
        .unwrap_or_else(|_| FALLBACK.fetch_add(1, Ordering::Relaxed));
    format!("{n:016x}")
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // An internal error's detail was logged when it was made.
        if self.status().is_server_error() && self.code != ErrorCode::Internal {
            tracing::warn!(code = %self.code, reason = %self.message, "request failed");
        }
        let status = self.status();
        let retry_after = self.retry_after;
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if let Some(after) = retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.max(1).into());
        }
        resp
    }
}

impl From<HospitalError> for ApiError {
    fn from(e: HospitalError) -> ApiError {
        match e {
            HospitalError::NotFound(_) => ApiError::not_found(e.to_string()),
            // The code says "invalid" / "conflict" already; the message is the reason alone.
            HospitalError::Invalid(why) => ApiError::invalid(why),
            HospitalError::IllegalTransition { .. } => {
                ApiError::new(ErrorCode::IllegalTransition, e.to_string())
            }
            HospitalError::Conflict(why) | HospitalError::ConflictingValue(why) => {
                ApiError::conflict(why)
            }
            HospitalError::Coord(c) => c.into(),
            HospitalError::Recipe(r) => r.into(),
            HospitalError::Store(s) => s.into(),
            other => ApiError::internal(other),
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
            other => ApiError::internal(format_args!("coordination: {other}")),
        }
    }
}

impl From<RecipeError> for ApiError {
    fn from(e: RecipeError) -> ApiError {
        match e {
            RecipeError::Coord(c) => c.into(),
            other if other.is_session_fatal() => ApiError::unavailable(other.to_string()),
            other => ApiError::internal(other),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            // Nothing was written: the client may retry (503 with Retry-After).
            // The detail (host, database) is logged, not answered.
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "clinical store unavailable");
                ApiError {
                    retry_after: Some(std::time::Duration::from_secs(1)),
                    ..ApiError::unavailable("the clinical store is not reachable; retry")
                }
            }
            // A value the store cannot hold (a NUL that slipped past the API's checks): the
            // request's fault, answered without the database's wording.
            StoreError::Invalid(_) => {
                tracing::warn!(error = %e, "clinical store refused a value");
                ApiError::invalid(
                    "a text value holds a character the clinical store cannot keep \
                     (a NUL or another control character)",
                )
            }
            e => ApiError::internal(format_args!("clinical store: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [ErrorCode; 17] = [
        ErrorCode::BadRequest,
        ErrorCode::Unauthorized,
        ErrorCode::TokenExpired,
        ErrorCode::RateLimited,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::IllegalTransition,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::Invalid,
        ErrorCode::TooManyStreams,
        ErrorCode::Overloaded,
        ErrorCode::Timeout,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    #[test]
    fn codes_are_answered_by_their_snake_case_names() {
        for code in ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::Value::from(code.as_str())
            );
        }
    }

    #[test]
    fn internal_detail_stays_out_of_the_message() {
        let e = ApiError::internal("clinical store: disk I/O error at /var/lib/x.sqlite");
        assert_eq!(e.code, ErrorCode::Internal);
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!e.message.contains("sqlite"), "{}", e.message);
        assert!(e.message.contains("reference"), "{}", e.message);
    }

    #[test]
    fn an_unreachable_store_is_a_503_to_retry_without_its_address() {
        let e: ApiError = StoreError::Unavailable(
            "cannot connect to PostgreSQL at 10.0.0.5:5432/medkeeper: connection refused".into(),
        )
        .into();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.message.contains("10.0.0.5"), "{}", e.message);
        let resp = e.into_response();
        assert_eq!(resp.headers()[axum::http::header::RETRY_AFTER], "1");
        // Any other store failure stays a 500.
        let e: ApiError = StoreError::Backend("constraint".into()).into();
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        // A value the store refuses is the request's fault.
        let e: ApiError = StoreError::Invalid("22021".into()).into();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
