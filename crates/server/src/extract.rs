//! Extractors whose rejections are JSON [`ApiError`]s, and the caller's identity.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::path::ErrorKind;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::state::ServerState;

/// A JSON body; a malformed, mistyped, oversize or non-JSON body is a JSON error, and a
/// string holding a NUL or another control character other than a line break or tab is 422
/// `invalid` naming its field ([`crate::text`]): no store is asked to keep it.
pub struct Body<T>(pub T);

impl<S, T> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        // Read as a JSON value first: serde would build a struct from an array too.
        let value = match axum::Json::<serde_json::Value>::from_request(req, state).await {
            Ok(axum::Json(v)) => v,
            Err(r) => return Err(json_rejection(r)),
        };
        if !value.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        crate::text::json_free_text(&value)?;
        serde_json::from_value(value)
            .map(Body)
            .map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            ErrorCode::PayloadTooLarge,
            "the body is larger than this server accepts",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send the body as Content-Type: application/json",
        ),
        _ => ApiError::bad_request(r.body_text()),
    }
}

/// Path parameters. A segment that does not decode to UTF-8 (`%FF`) is `invalid` (422), like
/// any other malformed name in a path: the handlers check the decoded text themselves.
pub struct PathParams<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathParams(p.0))
            .map_err(path_rejection)
    }
}

fn path_rejection(r: PathRejection) -> ApiError {
    match &r {
        PathRejection::FailedToDeserializePathParams(e) => match e.kind() {
            ErrorKind::InvalidUtf8InPathParam { key } => {
                ApiError::invalid(format!("{key}: the path segment is not UTF-8 text"))
            }
            _ => ApiError::bad_request(r.body_text()),
        },
        _ => ApiError::bad_request(r.body_text()),
    }
}

/// Query parameters. Every value is single-line text ([`crate::text::single_line`]): a NUL,
/// a line break, any other control character or a bidirectional override is 422 `invalid`
/// naming the parameter, before the handler (or a store) sees it.
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let pairs = axum::extract::Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|r: QueryRejection| ApiError::bad_request(r.body_text()))?;
        for (name, value) in &pairs.0 {
            crate::text::single_line("a query parameter's name", name)?;
            crate::text::single_line(name, value)?;
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|r: QueryRejection| ApiError::bad_request(r.body_text()))
    }
}

/// The token a request carries: `Authorization: Bearer T`, or `?access_token=T` (for event
/// streams, which browsers open without headers).
fn bearer(parts: &Parts) -> Result<String, ApiError> {
    if let Some(h) = parts.headers.get(AUTHORIZATION) {
        let h = h
            .to_str()
            .map_err(|_| ApiError::unauthorized("the Authorization header is not text"))?;
        return match h.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => Ok(t.trim().to_string()),
            _ => Err(ApiError::unauthorized(
                "the Authorization header must be `Bearer <token>`",
            )),
        };
    }
    // Only event streams take the token from the query (browsers open them without headers);
    // elsewhere a token in a URL would end up in logs and histories. The route decides, not
    // the path's text (a patient may be called "events").
    let stream = parts
        .extensions
        .get::<MatchedPath>()
        .is_some_and(|m| crate::STREAM_ROUTES.contains(&m.as_str()));
    if stream && let Some(q) = parts.uri.query() {
        for pair in q.split('&') {
            if let Some(t) = pair.strip_prefix("access_token=") {
                return Ok(t.to_string());
            }
        }
    }
    Err(ApiError::unauthorized(
        "no token: send Authorization: Bearer <token>",
    ))
}

/// The client's address, if the server was started with connect info
/// (`into_make_service_with_connect_info`, or `MockConnectInfo` in tests): the TCP peer, or
/// behind a trusted proxy the client its `X-Forwarded-For` names ([`crate::proxies`]).
async fn client_addr(parts: &mut Parts, state: &Arc<ServerState>) -> Option<IpAddr> {
    let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
        .await
        .ok()?;
    Some(
        state
            .limits
            .trusted_proxies
            .client(peer.ip(), &parts.headers),
    )
}

/// Authenticates the request's token, under the limit on failed authentications per client
/// address ([`crate::auth_failures`]).
impl FromRequestParts<Arc<ServerState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ServerState>,
    ) -> Result<Self, ApiError> {
        let addr = client_addr(parts, state).await;
        let token = bearer(parts);
        if let Some(ip) = addr
            && let Some(left) = state.auth_failures.refused(ip, Instant::now())
        {
            // A token this instance knows to be valid passes (no store read); anything else
            // is refused before it is looked up.
            if let Ok(t) = &token
                && let Some(caller) = state.tokens.cached(t)
            {
                return Ok(caller);
            }
            return Err(refused(left));
        }
        let r = match token {
            Ok(t) => state.tokens.authenticate(state.store().as_ref(), &t).await,
            Err(e) => Err(e),
        };
        if let (Err(e), Some(ip)) = (&r, addr)
            && e.is_auth_failure()
            && let Some(refusal) = state.auth_failures.failed(ip, Instant::now())
        {
            state.audit_refusal(&refusal).await;
            return Err(refused(refusal.refuse_for));
        }
        r
    }
}

fn refused(left: Duration) -> ApiError {
    ApiError::rate_limited(
        format!(
            "too many failed authentications from this address; retry in {} s",
            left.as_secs_f64().ceil() as u64
        ),
        left,
    )
}
