//! Pools and their units: views, the queue with estimated waits, a unit's status.

use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use medkeeper_hospital::UnitStatus;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{ApiResult, St, audit_started, audited, detached};
use crate::auth::{Caller, Role};
use crate::error::ErrorBody;
use crate::extract::{Body, PathParams};
use crate::views::{self, PoolView};
use Role::{Admin, Scheduler, Technician};

/// Every pool with its units and queue length.
#[utoipa::path(get, path = "/api/pools", tag = "resources", security(("bearer" = [])),
    responses((status = 200, body = Vec<PoolView>), (status = 403, body = ErrorBody)))]
pub async fn pools(State(st): St, caller: Caller) -> ApiResult<Json<Vec<PoolView>>> {
    // Units name the patients inside them: audited like a queue.
    let r = async {
        caller.require(Role::STAFF)?;
        let h = st.hospital()?;
        let mut out = Vec::new();
        for p in &h.config().pools {
            out.push(views::pool(&h, &p.pool, false).await?);
        }
        Ok(Json(out))
    }
    .await;
    audited(&st, &caller, "pools.read", None, None, r).await
}

/// One pool.
#[utoipa::path(get, path = "/api/pools/{pool}", tag = "resources", security(("bearer" = [])),
    params(("pool" = String, Path, description = "kind or department, e.g. MRI")),
    responses((status = 200, body = PoolView), (status = 404, body = ErrorBody)))]
pub async fn pool(
    State(st): St,
    caller: Caller,
    PathParams(name): PathParams<String>,
) -> ApiResult<Json<PoolView>> {
    let r = async {
        caller.require(Role::STAFF)?;
        let h = st.hospital()?;
        let p = views::resolve_pool(&h, &name)?;
        Ok(Json(views::pool(&h, &p, false).await?))
    }
    .await;
    audited(&st, &caller, "pools.read", None, None, r).await
}

/// A pool's waiting orders in dispatch order, with estimated waits.
#[utoipa::path(get, path = "/api/pools/{pool}/queue", tag = "resources", security(("bearer" = [])),
    params(("pool" = String, Path, description = "kind or department")),
    responses((status = 200, body = Vec<Object>), (status = 404, body = ErrorBody)))]
pub async fn queue(
    State(st): St,
    caller: Caller,
    PathParams(name): PathParams<String>,
) -> ApiResult<impl IntoResponse> {
    let r = async {
        caller.require(Role::STAFF)?;
        let h = st.hospital()?;
        let p = views::resolve_pool(&h, &name)?;
        Ok(Json(h.queue_view(&p).await?))
    }
    .await;
    audited(&st, &caller, "queue.read", None, None, r).await
}

/// A unit's new status.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetStatus {
    /// `available`, `maintenance` or `offline`.
    pub status: UnitStatus,
}

/// Puts a unit into maintenance or offline, or back to available.
#[utoipa::path(put, path = "/api/pools/{pool}/units/{unit}/status", tag = "resources",
    security(("bearer" = [])), request_body = SetStatus,
    params(("pool" = String, Path, description = "kind or department"), ("unit" = String, Path)),
    responses((status = 200, body = Object), (status = 409, body = ErrorBody)))]
pub async fn set_unit_status(
    State(st): St,
    caller: Caller,
    PathParams((name, unit)): PathParams<(String, String)>,
    Body(body): Body<SetStatus>,
) -> ApiResult<impl IntoResponse> {
    detached(async move {
        let r = async {
            caller.require(&[Admin, Scheduler, Technician])?;
            let h = st.hospital()?;
            let p = views::resolve_pool(&h, &name)?;
            audit_started(&st, &caller, "unit.status", None, None).await?;
            h.set_unit_status(&p, &unit, body.status).await?;
            Ok(Json(views::unit(&h, &p, &unit).await?))
        }
        .await;
        audited(&st, &caller, "unit.status", None, None, r).await
    })
    .await
}
