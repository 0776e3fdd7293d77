//! Liveness and readiness: what a load balancer or orchestrator asks.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::St;

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, body = Object)))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({"status": "ok"}))
}

/// Readiness: a connected coordination session and an answering clinical store.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, body = Object), (status = 503, body = Object)))]
pub async fn readyz(State(st): St) -> impl IntoResponse {
    let session = st.session_connected();
    let store = st.store().tokens().await.is_ok();
    let status = if session && store {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({
            "ready": session && store,
            "session": if session { "connected" } else { "not connected" },
            "store": if store { "ok" } else { "failing" },
        })),
    )
}
