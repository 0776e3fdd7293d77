//! Alarms (issue 14): the active ones and their history, acknowledging and shelving, and
//! their event stream. Alarms carry no patient data; patients never see them.
//!
//! Who may do what: every staff role reads them and acknowledges them (a technician
//! acknowledges the scanner that is down, a nurse the wait); shelving — silencing an alarm for
//! a while — is for admins and schedulers (charge nurses). Each acknowledgement or shelving
//! is stored as an alarm event with an audit record in one store transaction (by the acting
//! token: actor `<role>:<token id>`), and the request's outcome is audited as well.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use medkeeper_hospital::Actor;
use medkeeper_hospital::alarms::{self, AlarmNode, AlarmState};
use medkeeper_hospital::orders::Hospital;
use medkeeper_hospital::store::{AlarmEvent, AlarmQuery};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiResult, St, audited, change_record, detached, stream};
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Body, PathParams, QueryParams};
use crate::sse::Topic;
use Role::{Admin, Scheduler};

/// An alarm as the API shows it: its node and where it is in its life now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AlarmView {
    /// The alarm.
    #[serde(flatten)]
    pub alarm: AlarmNode,
    /// raised, acknowledged, shelved or cleared.
    pub state: AlarmState,
}

impl AlarmView {
    /// The view of `alarm`, with staff's notes from the clinical store (the node has none).
    async fn of(h: &Hospital, alarm: AlarmNode) -> ApiResult<AlarmView> {
        let alarm = alarms::with_notes(h, alarm).await?;
        Ok(AlarmView {
            state: alarm.state(h.now_ms()),
            alarm,
        })
    }
}

/// The active alarms, highest priority first.
pub async fn active_views(h: &Hospital) -> ApiResult<Vec<AlarmView>> {
    let mut views = Vec::new();
    for a in alarms::active(h).await? {
        views.push(AlarmView::of(h, a).await?);
    }
    Ok(views)
}

/// The alarms page.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlarmsView {
    /// Active alarms, highest priority first, then oldest first.
    pub active: Vec<AlarmView>,
    /// The newest alarm events (every transition of every alarm), newest first.
    pub history: Vec<AlarmEvent>,
}

/// Which history to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlarmsQuery {
    /// Events at or after this time, ms since the epoch.
    #[serde(default)]
    pub since_ms: Option<i64>,
    /// At most this many events (default 100, at most 10,000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Active alarms and the newest alarm events.
#[utoipa::path(get, path = "/api/alarms", tag = "alarms", security(("bearer" = [])),
    params(AlarmsQuery), responses((status = 200, body = AlarmsView)))]
pub async fn alarms(
    State(st): St,
    caller: Caller,
    QueryParams(q): QueryParams<AlarmsQuery>,
) -> ApiResult<Json<AlarmsView>> {
    caller.require(Role::STAFF)?;
    let h = st.hospital()?;
    let query = AlarmQuery {
        alarm: None,
        since_ms: q.since_ms,
        limit: q.limit,
    };
    Ok(Json(AlarmsView {
        active: active_views(&h).await?,
        history: alarms::history(&h, &query).await?,
    }))
}

/// One alarm: as it is now if active, and its events (oldest first).
#[derive(Debug, Serialize, ToSchema)]
pub struct AlarmRecord {
    /// The alarm while it is active; `null` once cleared.
    pub active: Option<AlarmView>,
    /// Its events, oldest first.
    pub events: Vec<AlarmEvent>,
}

/// One alarm and its history.
#[utoipa::path(get, path = "/api/alarms/{id}", tag = "alarms", security(("bearer" = [])),
    params(("id" = String, Path, description = "<rule>@<scope>@<episode>")),
    responses((status = 200, body = AlarmRecord), (status = 404, body = ErrorBody)))]
pub async fn alarm(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<AlarmRecord>> {
    caller.require(Role::STAFF)?;
    alarms::parse_id(&id)?;
    let h = st.hospital()?;
    let active = match alarms::active(&h).await?.into_iter().find(|a| a.id == id) {
        Some(a) => Some(AlarmView::of(&h, a).await?),
        None => None,
    };
    let query = AlarmQuery {
        alarm: Some(id.clone()),
        since_ms: None,
        limit: Some(medkeeper_hospital::store::AUDIT_MAX_LIMIT),
    };
    let events = alarms::history(&h, &query).await?;
    if active.is_none() && events.is_empty() {
        return Err(ApiError::not_found(format!("no alarm {id}")));
    }
    Ok(Json(AlarmRecord { active, events }))
}

/// An acknowledgement.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Acknowledge {
    /// A note (at most 500 characters; kept in the clinical store, not in the coordination
    /// tree).
    #[serde(default)]
    pub note: String,
}

/// Acknowledges an active alarm (body `{}` or `{"note": "..."}`). Acknowledging it again
/// answers it as it is.
#[utoipa::path(post, path = "/api/alarms/{id}/ack", tag = "alarms", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = Acknowledge,
    responses((status = 200, body = AlarmView), (status = 404, body = ErrorBody)))]
pub async fn acknowledge(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Body(body): Body<Acknowledge>,
) -> ApiResult<Json<AlarmView>> {
    let note = body.note;
    detached(async move {
        let r = async {
            caller.require(Role::STAFF)?;
            let h = st.hospital()?;
            let who = actor(&caller, "alarm.ack");
            let a = alarms::acknowledge(&h, &id, who, &note).await?;
            Ok(Json(AlarmView::of(&h, a).await?))
        }
        .await;
        audited(&st, &caller, "alarm.ack", None, None, r).await
    })
    .await
}

/// A shelving.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Shelve {
    /// How long: `30m`, `2h` (at most 24 h).
    #[serde(rename = "for")]
    pub duration: String,
    /// Why (required; at most 500 characters; kept in the clinical store).
    pub reason: String,
}

/// Shelves an active alarm: not delivered nor escalated until the time is up.
#[utoipa::path(post, path = "/api/alarms/{id}/shelve", tag = "alarms", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = Shelve,
    responses((status = 200, body = AlarmView), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)))]
pub async fn shelve(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Body(body): Body<Shelve>,
) -> ApiResult<Json<AlarmView>> {
    detached(async move {
        let r = async {
            caller.require(&[Admin, Scheduler])?;
            let duration: Duration = medkeeper_hospital::config::parse_duration(&body.duration)
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "for {:?}: use a duration such as 30m or 2h",
                        body.duration
                    ))
                })?;
            let h = st.hospital()?;
            let who = actor(&caller, "alarm.shelve");
            let a = alarms::shelve(&h, &id, who, duration, &body.reason).await?;
            Ok(Json(AlarmView::of(&h, a).await?))
        }
        .await;
        audited(&st, &caller, "alarm.shelve", None, None, r).await
    })
    .await
}

/// The alarm events' actor: `<role>:<token id>`, with the caller's role.
fn actor(caller: &Caller, action: &'static str) -> Actor {
    Actor::audited(
        format!("{}:{}", caller.role, caller.token),
        change_record(caller, action, None, None),
    )
}

/// The active alarms as they change (event `alarms`: the whole list, highest priority first),
/// starting with the current list.
#[utoipa::path(get, path = "/api/alarms/events", tag = "streams", security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream")))]
pub async fn alarm_events(
    State(st): St,
    caller: Caller,
) -> ApiResult<impl axum::response::IntoResponse> {
    caller.require(Role::STAFF)?;
    stream(&st, &caller, Topic::Alarms)
}
