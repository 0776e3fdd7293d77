//! The history the dashboard's charts draw (issue 16): each pool's units and queue as the
//! cluster's leader sampled them ([`medkeeper_hospital::history`]), with the hospital file's
//! waiting targets to draw the waits against. No patient data: not audited.

use axum::Json;
use axum::extract::State;
use medkeeper_hospital::history;
use medkeeper_hospital::model::now_ms;
use medkeeper_hospital::store::{POOL_SAMPLES_MAX, PoolSample};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiResult, St};
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::extract::QueryParams;
use crate::views;

/// The span asked for when `since` is left out: the last hour.
const DEFAULT_SPAN_MS: i64 = 3_600_000;

/// Which samples (`GET /api/history`).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Only this pool (`MRI`, or `equipment:MRI` / `department:cardiology`); all if absent.
    pub pool: Option<String>,
    /// From this time, ms since the epoch (inclusive). Default: an hour before `until`.
    pub since: Option<i64>,
    /// Until this time, ms since the epoch (exclusive). Default: now. At most 7 days after
    /// `since` (samples are kept for 7 days).
    pub until: Option<i64>,
}

/// The waiting target of each priority, ms (the hospital file's `[targets]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct TargetsMs {
    /// stat.
    pub stat: i64,
    /// asap.
    pub asap: i64,
    /// urgent.
    pub urgent: i64,
    /// routine.
    pub routine: i64,
}

/// The charts' history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryView {
    /// The span, as asked for or defaulted: `since_ms <= at_ms < until_ms`.
    pub since_ms: i64,
    /// Its end (exclusive).
    pub until_ms: i64,
    /// The waiting target of each priority.
    pub targets_ms: TargetsMs,
    /// The samples, oldest first, then by pool. A gap is time with no leader sampling.
    pub samples: Vec<PoolSample>,
    /// True if the span held more samples than one answer carries (50,000): these are the
    /// newest. Ask for a shorter span or one pool.
    pub truncated: bool,
}

/// Each pool's utilisation and queue over a span (one sample a minute, from the cluster's
/// leader, kept 7 days), with the waiting targets.
#[utoipa::path(get, path = "/api/history", tag = "resources", security(("bearer" = [])),
    params(HistoryQuery),
    responses((status = 200, body = HistoryView), (status = 400, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn history(
    State(st): St,
    caller: Caller,
    QueryParams(q): QueryParams<HistoryQuery>,
) -> ApiResult<Json<HistoryView>> {
    caller.require(Role::STAFF)?;
    let until = q.until.unwrap_or_else(now_ms);
    let since = q
        .since
        .unwrap_or_else(|| until.saturating_sub(DEFAULT_SPAN_MS));
    let keep = history::KEEP.as_millis() as i64;
    if since < 0 || until < 0 {
        return Err(ApiError::bad_request(
            "since and until are times in ms since the epoch, not negative",
        ));
    }
    if since >= until {
        return Err(ApiError::bad_request(format!(
            "since ({since}) must be before until ({until})"
        )));
    }
    if until - since > keep {
        return Err(ApiError::bad_request(format!(
            "at most 7 days at a time (samples are kept for 7 days); asked for {} h",
            (until - since) / 3_600_000
        )));
    }
    let h = st.hospital()?;
    let pool = q
        .pool
        .as_deref()
        .map(|name| views::resolve_pool(&h, name))
        .transpose()?;
    let samples = st.store().pool_samples(since, until, pool.as_ref()).await?;
    let t = history::targets_ms(&h).map(|(_, ms)| ms);
    Ok(Json(HistoryView {
        since_ms: since,
        until_ms: until,
        targets_ms: TargetsMs {
            stat: t[0],
            asap: t[1],
            urgent: t[2],
            routine: t[3],
        },
        truncated: samples.len() >= POOL_SAMPLES_MAX as usize,
        samples,
    }))
}
