//! # medkeeper-server: the HTTP face of a medkeeper instance
//!
//! An axum [`router`] over a [`ServerState`]: the JSON API (docs/api.md; the OpenAPI 3 document,
//! generated from these handlers, at `/api/openapi.json`), Server-Sent Event streams driven by
//! coordination watches ([`sse`]), bearer tokens with roles ([`auth`]), an audit record of every
//! access to patient data, and the dashboard (plain HTML/CSS/JS embedded in the binary).
//! Its Prometheus metrics are a separate service, [`metrics_router`], meant for a listener of
//! its own ([`metrics`]).
//!
//! ## Limits
//! Every API request has a deadline ([`Limits::request_timeout`], answered 503 `timeout`), a
//! body limit ([`Limits::max_body`], 413), and shares a bound on requests in flight
//! ([`Limits::max_in_flight`]): beyond it new requests are shed at once with 503 `overloaded`
//! rather than queued. Event streams are long-lived, so they are outside the deadline and the
//! in-flight bound and have their own bounds: [`Limits::max_streams`] in all (503 `overloaded`)
//! and [`Limits::max_streams_per_token`] per token (429 `too_many_streams`), so one token
//! cannot take every slot. A stream gives its slot back when its connection is seen closed (at
//! the latest at the second keep-alive write, [`Limits::stream_keep_alive`], after the close).
//!
//! The process around it (sessions, the dispatchers, membership, leadership, shutdown) is
//! `medkeeper serve`, in the binary.

pub mod api;
pub mod auth;
pub mod auth_failures;
mod error;
mod extract;
pub mod fhir;
mod headers;
pub mod hl7;
pub mod metrics;
pub mod mllp;
pub mod proxies;
pub mod sse;
mod state;
mod text;
pub mod views;

use std::sync::Arc;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use utoipa::OpenApi;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};

pub use auth::{Caller, Role, TokenPolicy, issue_token, issue_token_expiring};
pub use auth_failures::FailureLimit;
pub use error::{ApiError, ErrorBody, ErrorCode};
pub use metrics::{EngineFigures, EngineFiguresSource, HistogramFigures, metrics_router};
pub use proxies::TrustedProxies;
pub use state::{Limits, ServerState};
pub use views::MemberInfo;

/// The OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(title = "medkeeper", description = "Hospital resource coordination on the ZooKeeper model. See docs/api.md."),
    paths(
        api::healthz, api::readyz, api::whoami,
        api::pools, api::pool, api::queue, api::set_unit_status, api::history,
        api::create_patient, api::patient,
        api::create_order, api::order, api::reprioritise, api::cancel, api::call, api::start,
        api::complete, api::report, api::no_show,
        api::cluster, api::tree,
        api::create_token, api::tokens, api::token, api::rotate, api::revoke_token, api::audit,
        api::all_events, api::pool_events, api::unit_events, api::patient_events, api::cluster_events,
        api::alarms, api::alarm, api::acknowledge, api::shelve, api::alarm_events,
        api::add_identifier, api::set_settings, api::vitals, api::news2, api::ward,
        fhir::transaction, fhir::create_observation, fhir::metadata, fhir::patient,
        fhir::search_patients, fhir::observation, fhir::search_observations,
        fhir::search_risk_assessments, fhir::service_request, fhir::search_service_requests,
        fhir::task,
    ),
    components(schemas(views::PatientQueueView)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The OpenAPI document as JSON text.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// The event-stream routes: the only ones that take `?access_token=` (see docs/api.md).
pub const STREAM_ROUTES: [&str; 6] = [
    "/api/events",
    "/api/pools/{pool}/events",
    "/api/pools/{pool}/units/{unit}/events",
    "/api/patients/{id}/events",
    "/api/cluster/events",
    "/api/alarms/events",
];

/// The whole HTTP service of one instance.
pub fn router(state: Arc<ServerState>) -> Router {
    let limits = state.limits.clone();
    let api = Router::new()
        .route("/api/whoami", get(api::whoami))
        .route("/api/pools", get(api::pools))
        .route("/api/pools/{pool}", get(api::pool))
        .route("/api/pools/{pool}/queue", get(api::queue))
        .route("/api/history", get(api::history))
        .route(
            "/api/pools/{pool}/units/{unit}/status",
            put(api::set_unit_status),
        )
        .route("/api/patients", post(api::create_patient))
        .route("/api/patients/{id}", get(api::patient))
        .route("/api/patients/{id}/identifiers", post(api::add_identifier))
        .route("/api/patients/{id}/settings", put(api::set_settings))
        .route("/api/patients/{id}/vitals", get(api::vitals))
        .route("/api/patients/{id}/news2", get(api::news2))
        .route("/api/ward", get(api::ward))
        .route("/api/orders", post(api::create_order))
        .route("/api/orders/{id}", get(api::order))
        .route("/api/orders/{id}/priority", post(api::reprioritise))
        .route("/api/orders/{id}/cancel", post(api::cancel))
        .route("/api/orders/{id}/call", post(api::call))
        .route("/api/orders/{id}/start", post(api::start))
        .route("/api/orders/{id}/complete", post(api::complete))
        .route("/api/orders/{id}/report", post(api::report))
        .route("/api/orders/{id}/no-show", post(api::no_show))
        .route("/api/cluster", get(api::cluster))
        .route("/api/tree", get(api::tree))
        .route("/api/tokens", post(api::create_token).get(api::tokens))
        .route(
            "/api/tokens/{id}",
            get(api::token).delete(api::revoke_token),
        )
        .route("/api/tokens/{id}/rotate", post(api::rotate))
        .route("/api/audit", get(api::audit))
        .route("/api/alarms", get(api::alarms))
        .route("/api/alarms/{id}", get(api::alarm))
        .route("/api/alarms/{id}/ack", post(api::acknowledge))
        .route("/api/alarms/{id}/shelve", post(api::shelve))
        .route("/readyz", get(api::readyz))
        .merge(fhir::routes())
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(overload))
                .load_shed()
                // One bound for the whole API: `Router::layer` wraps each route on its own,
                // so a per-service limit would bound each route separately.
                .layer(GlobalConcurrencyLimitLayer::new(limits.max_in_flight))
                .timeout(limits.request_timeout),
        );
    let streams = Router::new()
        .route(STREAM_ROUTES[0], get(api::all_events))
        .route(STREAM_ROUTES[1], get(api::pool_events))
        .route(STREAM_ROUTES[2], get(api::unit_events))
        .route(STREAM_ROUTES[3], get(api::patient_events))
        .route(STREAM_ROUTES[4], get(api::cluster_events))
        .route(STREAM_ROUTES[5], get(api::alarm_events));
    Router::new()
        .merge(api)
        .merge(streams)
        .route("/healthz", get(api::healthz))
        .route("/api/openapi.json", get(openapi))
        .route("/", get(index))
        .route("/patient", get(index))
        .route("/assets/app.js", get(app_js))
        .route("/assets/app.css", get(app_css))
        .route("/favicon.ico", get(favicon))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body))
        .layer(axum::middleware::from_fn(fhir::operation_outcomes))
        .layer(axum::middleware::from_fn(headers::secure))
        .layer(axum::middleware::from_fn_with_state(
            state.http_metrics.clone(),
            metrics::track,
        ))
        .with_state(state)
}

async fn overload(e: tower::BoxError) -> ApiError {
    if e.is::<tower::timeout::error::Elapsed>() {
        ApiError::new(ErrorCode::Timeout, "the request took too long; retry")
    } else if e.is::<tower::load_shed::error::Overloaded>() {
        ApiError::overloaded("too many requests in flight; retry shortly")
    } else {
        ApiError::internal(e.to_string())
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route (see /api/openapi.json)")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not take this method",
    )
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json())
}

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
}

async fn app_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        APP_JS,
    )
}

/// No icon: 204, so browsers stop asking (and the console stays clean).
async fn favicon() -> impl IntoResponse {
    axum::http::StatusCode::NO_CONTENT
}

async fn app_css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        APP_CSS,
    )
}
