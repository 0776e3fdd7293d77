//! A FHIR R4 (4.0.1) facade over the clinical store, JSON only (docs/api.md, *FHIR R4*).
//!
//! - **Ingestion** ([`ingest`]): `POST /fhir/Observation` (one vital-sign Observation) and
//!   `POST /fhir` (a `transaction` Bundle of Observations, all or nothing) become one
//!   [`Hospital::ingest`](medkeeper_hospital::orders::Hospital::ingest) call each, with the
//!   raw JSON kept as the message (`format` `fhir`).
//! - **Read views** ([`read`]): Patient, Observation, RiskAssessment (NEWS2 scores),
//!   ServiceRequest (orders), Task (an exam's state) and the CapabilityStatement, built by
//!   [`resources`] from the store's records. Same tokens, roles, patient isolation and audit as
//!   the JSON API.
//!
//! Every error on a `/fhir` route — a handler's, a refused token, an unknown route, a body over
//! the limit, a timeout — is answered as an `OperationOutcome` with the same status: the
//! handlers return [`ApiError`]s like the rest of the API and [`operation_outcomes`], a
//! middleware around the whole router, rewrites the JSON error bodies of `/fhir` paths. The
//! stable error code stays in the outcome (`issue.details.coding`, system
//! [`ERROR_CODE_SYSTEM`]).

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use medkeeper_hospital::{OrderId, PatientId};
use serde_json::{Value, json};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::state::{Audit, Outcome, ServerState};

pub mod ingest;
pub mod read;
pub mod resources;

pub use ingest::*;
pub use read::*;

/// The media type of FHIR JSON, as answered.
pub const FHIR_JSON: &str = "application/fhir+json; fhirVersion=4.0";

/// The code system of medkeeper's own error codes inside an `OperationOutcome`.
pub const ERROR_CODE_SYSTEM: &str = "urn:medkeeper:error-code";

type ApiResult<T> = Result<T, ApiError>;

/// The `/fhir` routes. Merged into the API's router, so they share its limits (deadline,
/// requests in flight); [`operation_outcomes`] goes around the whole router.
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/fhir", post(transaction))
        .route("/fhir/metadata", get(metadata))
        .route(
            "/fhir/Observation",
            post(create_observation).get(search_observations),
        )
        .route("/fhir/Observation/{id}", get(observation))
        .route("/fhir/Patient", get(search_patients))
        .route("/fhir/Patient/{id}", get(patient))
        .route("/fhir/RiskAssessment", get(search_risk_assessments))
        .route("/fhir/ServiceRequest", get(search_service_requests))
        .route("/fhir/ServiceRequest/{id}", get(service_request))
        .route("/fhir/Task/{id}", get(task))
        .route("/fhir/{*rest}", any(unsupported))
}

async fn unsupported() -> ApiError {
    ApiError::not_found(
        "this FHIR interaction is not supported here (see GET /fhir/metadata for what is)",
    )
}

/// A FHIR resource answered with a status, as `application/fhir+json`.
pub struct Fhir(pub StatusCode, pub Value);

impl IntoResponse for Fhir {
    fn into_response(self) -> Response {
        let mut r = (self.0, resources::prune(self.1).to_string()).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        r
    }
}

/// True for `/fhir` and the paths under it.
fn is_fhir_path(path: &str) -> bool {
    path == "/fhir" || path.starts_with("/fhir/")
}

/// Middleware: the JSON error body of a `/fhir` answer becomes an `OperationOutcome`, same
/// status. Other paths, and successful answers, pass untouched.
pub async fn operation_outcomes(req: Request, next: Next) -> Response {
    let fhir = is_fhir_path(req.uri().path());
    let resp = next.run(req).await;
    let is_json_error = resp.status().is_client_error() || resp.status().is_server_error();
    let is_api_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !fhir || !is_json_error || !is_api_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    // An error body is small; anything larger is not one of ours.
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let parsed: Option<(String, String)> =
        serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
            Some((
                v["error"]["code"].as_str()?.to_string(),
                v["error"]["message"].as_str()?.to_string(),
            ))
        });
    let Some((code, message)) = parsed else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let outcome = resources::operation_outcome(parts.status, &code, &message);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(outcome.to_string()))
}

/// The issue type (`OperationOutcome.issue.code`, required binding `issue-type`) of an error.
pub fn issue_type(code: &str) -> &'static str {
    match code {
        "bad_request" => "structure",
        "unauthorized" => "login",
        "token_expired" => "expired",
        "forbidden" => "forbidden",
        "not_found" => "not-found",
        "method_not_allowed" | "unsupported_media_type" => "not-supported",
        "illegal_transition" | "conflict" => "conflict",
        "payload_too_large" => "too-costly",
        "invalid" => "processing",
        "too_many_streams" | "rate_limited" | "overloaded" => "throttled",
        "timeout" => "timeout",
        "unavailable" => "transient",
        _ => "exception",
    }
}

/// Records an access's outcome in the audit trail and passes it on (as `api::audited`).
async fn audited<T>(
    st: &ServerState,
    caller: &Caller,
    action: &'static str,
    patient: Option<&PatientId>,
    order: Option<&OrderId>,
    r: ApiResult<T>,
) -> ApiResult<T> {
    let (outcome, detail) = match &r {
        Ok(_) => (Outcome::Ok, String::new()),
        Err(e) if e.code == ErrorCode::Forbidden => (Outcome::Denied, e.message.clone()),
        Err(e) => (Outcome::Failed(e.code), e.message.clone()),
    };
    st.audit(Audit {
        caller,
        action,
        patient,
        order,
        outcome,
        detail,
    })
    .await?;
    r
}

/// Runs a write and its audit record to the end whatever the client does (as
/// `api::detached`).
async fn detached<T: Send + 'static>(
    f: impl std::future::Future<Output = ApiResult<T>> + Send + 'static,
) -> ApiResult<T> {
    tokio::spawn(f)
        .await
        .map_err(|e| ApiError::internal(format!("the request's task failed: {e}")))?
}

/// The base URL of this server's FHIR endpoint (`http://host:port/fhir`), for `fullUrl`s.
fn base_url(st: &ServerState) -> String {
    format!("{}/fhir", st.me().url.trim_end_matches('/'))
}

/// A `searchset` Bundle of `resources` (each with `resourceType` and `id`).
fn searchset(st: &ServerState, self_url: &str, resources: Vec<Value>) -> Value {
    let base = base_url(st);
    let entry: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let full = format!(
                "{base}/{}/{}",
                r["resourceType"].as_str().unwrap_or(""),
                r["id"].as_str().unwrap_or("")
            );
            json!({"fullUrl": full, "resource": r, "search": {"mode": "match"}})
        })
        .collect();
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "total": entry.len(),
        "link": [{"relation": "self", "url": format!("{base}{self_url}")}],
        "entry": entry,
    })
}
