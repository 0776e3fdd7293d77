//! The HTTP JSON API's handlers. The route table and the role matrix are in docs/api.md; each
//! handler checks its roles first, and every access to patient data is audited
//! ([`ServerState::audit`]) with its outcome.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};
use medkeeper_hospital::model::{now_ms, validate_name};
use medkeeper_hospital::orders::{Hospital, NewOrder};
use medkeeper_hospital::store::{
    AuditQuery, AuditRecord, ExamResult, Patient, StoreError, TokenRecord,
};
use medkeeper_hospital::tree::PatientEntry;
use medkeeper_hospital::{Actor, Order, OrderId, PatientId, Priority, Transition, UnitStatus};
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Caller, Role, issue_token_audited};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Body, PathParams, QueryParams};
use crate::sse::Topic;
use crate::state::{Audit, ServerState};
use crate::views::{self, ClusterView, PatientQueueView, PoolView, TreeNode};

type St = State<Arc<ServerState>>;
type ApiResult<T> = Result<T, ApiError>;

use Role::{Admin, Doctor, Nurse, Patient as PatientRole, Scheduler, Technician};

/// The longest report text accepted, in bytes.
pub const MAX_REPORT_LEN: usize = 20_000;

fn parse_order_id(s: &str) -> ApiResult<OrderId> {
    s.parse()
        .map_err(|e: medkeeper_hospital::Error| ApiError::invalid(e.to_string()))
}

fn parse_patient_id(s: &str) -> ApiResult<PatientId> {
    s.parse()
        .map_err(|e: medkeeper_hospital::Error| ApiError::invalid(e.to_string()))
}

/// The audit outcome of a result.
fn outcome<T>(r: &ApiResult<T>) -> (&'static str, String) {
    match r {
        Ok(_) => ("ok", String::new()),
        Err(e) if e.status == StatusCode::FORBIDDEN => ("denied", e.message.clone()),
        Err(e) => (e.code, e.message.clone()),
    }
}

/// The audit record a change asked for by `caller` carries into the store (outcome `ok`):
/// written with the change, in its transaction (see [`medkeeper_hospital::Actor`]).
fn change_record(
    caller: &Caller,
    action: &'static str,
    patient: Option<&PatientId>,
    order: Option<&OrderId>,
) -> AuditRecord {
    ServerState::audit_record(Audit {
        caller,
        action,
        patient,
        order,
        outcome: "ok",
        detail: String::new(),
    })
}

/// Records that `caller` starts `action`, before a change whose first write is in the
/// coordination tree (a unit's status, a manual call, a re-prioritisation): the store cannot
/// take that write's audit record in the same transaction, so the trail says beforehand who
/// started it; the outcome follows as its own record (or, for a call, with the store's
/// write). After a crash in between, a `started` record without an outcome is what is left.
async fn audit_started(
    st: &ServerState,
    caller: &Caller,
    action: &'static str,
    patient: Option<&PatientId>,
    order: Option<&OrderId>,
) -> ApiResult<()> {
    st.audit(Audit {
        caller,
        action,
        patient,
        order,
        outcome: "started",
        detail: String::new(),
    })
    .await
}

/// Like [`audited`], for a change whose audit record may already have been stored with it
/// (`written`): then a success needs no other record, and a failure after it (the change was
/// made, something after it failed) gets its own record saying so.
async fn audited_change<T>(
    st: &ServerState,
    caller: &Caller,
    action: &'static str,
    patient: Option<&PatientId>,
    order: Option<&OrderId>,
    written: bool,
    r: ApiResult<T>,
) -> ApiResult<T> {
    if !written {
        return audited(st, caller, action, patient, order, r).await;
    }
    if let Err(e) = &r {
        st.audit(Audit {
            caller,
            action,
            patient,
            order,
            outcome: e.code,
            detail: format!("after the change was recorded: {}", e.message),
        })
        .await?;
    }
    r
}

/// Records `r`'s outcome and passes it on.
async fn audited<T>(
    st: &ServerState,
    caller: &Caller,
    action: &'static str,
    patient: Option<&PatientId>,
    order: Option<&OrderId>,
    r: ApiResult<T>,
) -> ApiResult<T> {
    let (out, detail) = outcome(&r);
    st.audit(Audit {
        caller,
        action,
        patient,
        order,
        outcome: out,
        detail,
    })
    .await?;
    r
}

// --- health ---------------------------------------------------------------------------------

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

// --- who am I ---------------------------------------------------------------------------------

/// The caller's token.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// The token's id.
    pub token: String,
    /// Its role.
    pub role: Role,
    /// The patient, for a patient token.
    pub patient: Option<PatientId>,
    /// The instance that answered.
    pub instance: String,
}

/// The caller's identity.
#[utoipa::path(get, path = "/api/whoami", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub async fn whoami(State(st): St, caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        token: caller.token,
        role: caller.role,
        patient: caller.patient,
        instance: st.me().id.clone(),
    })
}

// --- pools and units --------------------------------------------------------------------------

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

// --- patients -------------------------------------------------------------------------------

/// A new patient.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPatient {
    /// The opaque id to use; a fresh one if absent.
    #[serde(default)]
    pub id: Option<PatientId>,
    /// Display name (clinical store only).
    pub name: String,
    /// Birth date, `YYYY-MM-DD`: a real calendar date from 1900-01-01 to today.
    #[serde(default)]
    pub birth_date: Option<String>,
}

/// The longest patient name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 200;

/// The earliest birth date accepted: an earlier one is a typing mistake, not a patient.
pub const EARLIEST_BIRTH_DATE: Date = time::macros::date!(1900 - 01 - 01);

/// Checks a patient's name (already trimmed): 1-[`MAX_NAME_LEN`] bytes with at least one
/// letter or digit, and no control characters (NUL, line breaks, escapes), which no name has
/// and which would corrupt logs, exports and labels.
fn check_patient_name(name: &str) -> ApiResult<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(ApiError::invalid(format!(
            "name: 1-{MAX_NAME_LEN} bytes, not only spaces"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name: control characters (NUL, tab, line breaks, escapes) are not allowed",
        ));
    }
    if !name.chars().any(char::is_alphanumeric) {
        return Err(ApiError::invalid("name: at least one letter or digit"));
    }
    Ok(())
}

/// Checks a birth date: a real calendar date (no 31 February, 29 February only in leap
/// years) written `YYYY-MM-DD`, from [`EARLIEST_BIRTH_DATE`] to today. "Today" is the date
/// in the easternmost time zone (UTC+14), so a newborn is never in the future wherever the
/// hospital is.
fn check_birth_date(s: &str, now_ms: i64) -> ApiResult<()> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    // `[year]` also takes a sign: exactly ten characters, starting with a digit.
    if s.len() != 10 || !s.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(ApiError::invalid(format!(
            "birth_date {s:?}: use YYYY-MM-DD, e.g. 1970-01-31"
        )));
    }
    let date = Date::parse(s, format).map_err(|e| {
        ApiError::invalid(format!(
            "birth_date {s:?} is not a calendar date ({e}); use YYYY-MM-DD"
        ))
    })?;
    if date < EARLIEST_BIRTH_DATE {
        return Err(ApiError::invalid(format!(
            "birth_date {s:?} is before {EARLIEST_BIRTH_DATE}"
        )));
    }
    const EASTERNMOST_S: i64 = 14 * 3600;
    let today = OffsetDateTime::from_unix_timestamp(now_ms.div_euclid(1000) + EASTERNMOST_S)
        .map_or(Date::MAX, |t| t.date());
    if date > today {
        return Err(ApiError::invalid(format!(
            "birth_date {s:?} is in the future"
        )));
    }
    Ok(())
}

/// Registers a patient (demographics stay in the clinical store).
#[utoipa::path(post, path = "/api/patients", tag = "patients", security(("bearer" = [])),
    request_body = NewPatient,
    responses((status = 201, body = Object), (status = 422, body = ErrorBody)))]
pub async fn create_patient(
    State(st): St,
    caller: Caller,
    Body(body): Body<NewPatient>,
) -> ApiResult<impl IntoResponse> {
    let id = body.id.clone().unwrap_or_else(PatientId::generate);
    detached(async move {
        let r = async {
            caller.require(&[Admin, Scheduler, Doctor, Nurse])?;
            let name = body.name.trim();
            check_patient_name(name)?;
            if let Some(d) = &body.birth_date {
                check_birth_date(d, now_ms())?;
            }
            let p = Patient {
                id: id.clone(),
                name: name.to_string(),
                birth_date: body.birth_date.clone(),
            };
            let record = change_record(&caller, "patient.create", Some(&id), None);
            match st.store().insert_patient(&p, Some(&record)).await {
                Ok(()) => Ok((StatusCode::CREATED, Json(p))),
                Err(StoreError::Exists(_)) => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("patient {id} is already registered"),
                )),
                Err(e) => Err(e.into()),
            }
        }
        .await;
        let written = r.is_ok();
        audited_change(&st, &caller, "patient.create", Some(&id), None, written, r).await
    })
    .await
}

/// A patient's record, orders and own queue entries.
#[derive(Debug, Serialize, ToSchema)]
pub struct PatientRecord {
    /// Demographics, if registered.
    #[schema(value_type = Option<Object>)]
    pub patient: Option<Patient>,
    /// Orders, oldest first.
    pub orders: Vec<Order>,
    /// What the patient sees: position, estimated wait, called to, results ready.
    pub queue: Vec<PatientEntry>,
}

/// A patient: staff, or the patient's own token.
#[utoipa::path(get, path = "/api/patients/{id}", tag = "patients", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = PatientRecord), (status = 403, body = ErrorBody)))]
pub async fn patient(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<PatientRecord>> {
    let id = parse_patient_id(&id)?;
    let r = async {
        caller.require_staff_or_self(Role::STAFF, &id)?;
        let h = st.hospital()?;
        let patient = st.store().patient(&id).await?;
        let orders = st.store().orders_of(&id).await?;
        let queue = h.patient_view(&id).await?;
        if patient.is_none() && orders.is_empty() && queue.is_empty() {
            return Err(ApiError::not_found(format!("patient {id} not found")));
        }
        Ok(Json(PatientRecord {
            patient,
            orders,
            queue,
        }))
    }
    .await;
    audited(&st, &caller, "patient.read", Some(&id), None, r).await
}

// --- orders ---------------------------------------------------------------------------------

/// A new order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    /// The patient's opaque id.
    pub patient: PatientId,
    /// The kind or department (`MRI`, `cardiology`).
    pub pool: String,
    /// FHIR priority.
    pub priority: Priority,
    /// Capabilities the unit must have.
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// The clinical reason (clinical store only).
    #[serde(default)]
    pub reason: String,
}

/// Orders an exam: stored, then queued by priority.
#[utoipa::path(post, path = "/api/orders", tag = "orders", security(("bearer" = [])),
    request_body = CreateOrder,
    responses((status = 201, body = Order), (status = 422, body = ErrorBody)))]
pub async fn create_order(
    State(st): St,
    caller: Caller,
    Body(body): Body<CreateOrder>,
) -> ApiResult<impl IntoResponse> {
    detached(async move {
        let patient = body.patient.clone();
        // The record names the order once the store gives it its id.
        let who = Actor::audited(
            actor(&caller),
            change_record(&caller, "order.create", Some(&patient), None),
        );
        let r = async {
            caller.require(&[Admin, Scheduler, Doctor])?;
            if st.store().patient(&body.patient).await?.is_none() {
                return Err(ApiError::not_found(format!(
                    "patient {} is not registered (POST /api/patients first)",
                    body.patient
                )));
            }
            let h = st.hospital()?;
            let pool = views::resolve_pool(&h, &body.pool)?;
            let new = NewOrder {
                patient: body.patient,
                pool,
                capabilities: body.capabilities,
                priority: body.priority,
                reason: body.reason,
            };
            let order = h.create_order(new, &who).await?;
            Ok(order)
        }
        .await;
        let order = r.as_ref().ok().map(|o| o.id.clone());
        let r = audited_change(
            &st,
            &caller,
            "order.create",
            Some(&patient),
            order.as_ref(),
            who.audit_written(),
            r,
        )
        .await?;
        Ok((StatusCode::CREATED, Json(r)))
    })
    .await
}

/// The history's actor for a caller: `<role>:<token id>`.
fn actor(caller: &Caller) -> String {
    format!("{}:{}", caller.role, caller.token)
}

/// An order with its history and results.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderRecord {
    /// The order.
    pub order: Order,
    /// Its transitions, oldest first.
    pub transitions: Vec<Transition>,
    /// Its results, once reported.
    #[schema(value_type = Option<Object>)]
    pub result: Option<ExamResult>,
}

/// Loads an order for `caller`: a patient token sees only its own (others are `not_found`,
/// audited as denied).
async fn load_order(
    st: &ServerState,
    caller: &Caller,
    h: &Hospital,
    id: &OrderId,
    action: &'static str,
) -> ApiResult<Order> {
    let order = match h.order(id).await {
        Ok(o) => o,
        Err(e) => {
            let e = ApiError::from(e);
            return audited(st, caller, action, None, Some(id), Err(e)).await;
        }
    };
    if caller.role == PatientRole && caller.patient.as_ref() != Some(&order.patient) {
        st.audit(Audit {
            caller,
            action,
            patient: Some(&order.patient),
            order: Some(id),
            outcome: "denied",
            detail: "another patient's order".into(),
        })
        .await?;
        return Err(ApiError::not_found(format!("order {id} not found")));
    }
    Ok(order)
}

/// An order: staff, or the patient's own token.
#[utoipa::path(get, path = "/api/orders/{id}", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = OrderRecord), (status = 404, body = ErrorBody)))]
pub async fn order(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<OrderRecord>> {
    let id = parse_order_id(&id)?;
    caller.require(&[Admin, Scheduler, Doctor, Nurse, Technician, PatientRole])?;
    let h = st.hospital()?;
    let order = load_order(&st, &caller, &h, &id, "order.read").await?;
    let r = async {
        Ok(OrderRecord {
            transitions: st.store().transitions(&id).await?,
            result: st.store().result(&id).await?,
            order: order.clone(),
        })
    }
    .await;
    audited(
        &st,
        &caller,
        "order.read",
        Some(&order.patient),
        Some(&id),
        r,
    )
    .await
    .map(Json)
}

/// What an order action does.
#[derive(Debug, Clone, Copy)]
enum Action {
    Cancel,
    Start,
    Complete,
    NoShow,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Cancel => "order.cancel",
            Action::Start => "order.start",
            Action::Complete => "order.complete",
            Action::NoShow => "order.no-show",
        }
    }

    fn roles(self) -> &'static [Role] {
        match self {
            Action::Cancel => &[Admin, Scheduler, Doctor],
            Action::Start => &[Admin, Doctor, Nurse, Technician],
            Action::Complete => &[Admin, Doctor, Technician],
            Action::NoShow => &[Admin, Scheduler, Nurse, Technician],
        }
    }
}

/// Runs an order action: roles first, then the order (for the audit's patient), then the
/// action, audited — to the end, in a task of its own ([`detached`]). The action gets the
/// [`Actor`] carrying its audit record, which the store writes with the change; an action
/// whose first write is in the coordination tree (`tree_first`) is preceded by a `started`
/// record ([`audit_started`]).
async fn order_action<F, Fut>(
    st: &Arc<ServerState>,
    caller: &Caller,
    id: &str,
    action: &'static str,
    roles: &'static [Role],
    tree_first: bool,
    f: F,
) -> ApiResult<Json<Order>>
where
    F: FnOnce(Arc<Hospital>, OrderId, Actor) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ApiResult<Order>> + Send + 'static,
{
    let id = parse_order_id(id)?;
    let (st, caller) = (st.clone(), caller.clone());
    detached(async move {
        if let Err(e) = caller.require(roles) {
            return audited(&st, &caller, action, None, Some(&id), Err(e)).await;
        }
        let h = st.hospital()?;
        let order = load_order(&st, &caller, &h, &id, action).await?;
        let patient = Some(&order.patient);
        if tree_first {
            audit_started(&st, &caller, action, patient, Some(&id)).await?;
        }
        let who = Actor::audited(
            actor(&caller),
            change_record(&caller, action, patient, Some(&id)),
        );
        let r = f(h, id.clone(), who.clone()).await;
        let written = who.audit_written();
        audited_change(&st, &caller, action, patient, Some(&id), written, r).await
    })
    .await
    .map(Json)
}

/// Runs a write and its audit record to the end in a task of its own: a client that goes away,
/// or a request past its deadline, must not leave a change without its audit record (or a call
/// decided in the tree but not recorded in the store until the reconciler finds it). The client
/// may then not learn the outcome (503 `timeout`), as with any lost reply.
async fn detached<T: Send + 'static>(
    f: impl std::future::Future<Output = ApiResult<T>> + Send + 'static,
) -> ApiResult<T> {
    tokio::spawn(f)
        .await
        .map_err(|e| ApiError::internal(format!("the request's task failed: {e}")))?
}

async fn simple_action(
    st: &Arc<ServerState>,
    caller: &Caller,
    id: &str,
    a: Action,
) -> ApiResult<Json<Order>> {
    order_action(
        st,
        caller,
        id,
        a.name(),
        a.roles(),
        false,
        move |h, id, who| async move {
            Ok(match a {
                Action::Cancel => h.cancel(&id, &who).await?,
                Action::Start => h.start(&id, &who).await?,
                Action::Complete => h.complete(&id, &who).await?,
                Action::NoShow => h.no_show(&id, &who).await?,
            })
        },
    )
    .await
}

/// Cancels an order (queued, called or in progress); a held unit is freed.
#[utoipa::path(post, path = "/api/orders/{id}/cancel", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Order), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<Order>> {
    simple_action(&st, &caller, &id, Action::Cancel).await
}

/// The called patient has arrived: the exam starts.
#[utoipa::path(post, path = "/api/orders/{id}/start", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Order), (status = 409, body = ErrorBody)))]
pub async fn start(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<Order>> {
    simple_action(&st, &caller, &id, Action::Start).await
}

/// The exam is done: the unit is freed.
#[utoipa::path(post, path = "/api/orders/{id}/complete", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Order), (status = 409, body = ErrorBody)))]
pub async fn complete(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<Order>> {
    simple_action(&st, &caller, &id, Action::Complete).await
}

/// The called patient did not come (no-show or re-queue, per the hospital's policy).
#[utoipa::path(post, path = "/api/orders/{id}/no-show", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = Order), (status = 409, body = ErrorBody)))]
pub async fn no_show(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<Order>> {
    simple_action(&st, &caller, &id, Action::NoShow).await
}

/// A new priority.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPriority {
    /// `routine`, `urgent`, `asap` or `stat`.
    pub priority: Priority,
}

/// Re-prioritises a queued order.
#[utoipa::path(post, path = "/api/orders/{id}/priority", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = SetPriority,
    responses((status = 200, body = Order), (status = 409, body = ErrorBody)))]
pub async fn reprioritise(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Body(body): Body<SetPriority>,
) -> ApiResult<Json<Order>> {
    order_action(
        &st,
        &caller,
        &id,
        "order.priority",
        &[Admin, Scheduler, Doctor, Nurse],
        true,
        move |h, id, who| async move { Ok(h.reprioritise(&id, body.priority, &who).await?) },
    )
    .await
}

/// Which unit to call to.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CallTo {
    /// The unit or doctor; any free compatible one if absent.
    #[serde(default)]
    pub unit: Option<String>,
}

/// Calls a queued order now, out of the queue's order (a scheduler's override).
#[utoipa::path(post, path = "/api/orders/{id}/call", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = CallTo,
    responses((status = 200, body = Order), (status = 409, body = ErrorBody)))]
pub async fn call(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Body(body): Body<CallTo>,
) -> ApiResult<Json<Order>> {
    order_action(
        &st,
        &caller,
        &id,
        "order.call",
        &[Admin, Scheduler, Technician],
        true,
        |h, id, who| async move { Ok(h.call(&id, body.unit.as_deref(), &who).await?) },
    )
    .await
}

/// A report.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// The report text.
    pub text: String,
}

/// Reports a completed exam's results: results ready.
#[utoipa::path(post, path = "/api/orders/{id}/report", tag = "orders", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = Report,
    responses((status = 200, body = Order), (status = 409, body = ErrorBody)))]
pub async fn report(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Body(body): Body<Report>,
) -> ApiResult<Json<Order>> {
    order_action(
        &st,
        &caller,
        &id,
        "order.report",
        &[Admin, Doctor],
        false,
        |h, id, who| async move {
            if body.text.trim().is_empty() || body.text.len() > MAX_REPORT_LEN {
                return Err(ApiError::invalid(format!("text: 1-{MAX_REPORT_LEN} bytes")));
            }
            Ok(h.report(&id, &body.text, &who).await?)
        },
    )
    .await
}

// --- cluster and tree -----------------------------------------------------------------------

/// Live instances and the leader.
#[utoipa::path(get, path = "/api/cluster", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, body = ClusterView)))]
pub async fn cluster(State(st): St, caller: Caller) -> ApiResult<Json<ClusterView>> {
    caller.require(Role::STAFF)?;
    let h = st.hospital()?;
    Ok(Json(views::cluster(&st, &h).await?))
}

/// Which subtree to show.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TreeQuery {
    /// The node (default `/medical`).
    #[serde(default)]
    pub path: Option<String>,
    /// Levels to expand (default 1, at most 8).
    #[serde(default)]
    pub depth: Option<u32>,
}

/// A read-only view of the coordination tree (admins).
#[utoipa::path(get, path = "/api/tree", tag = "cluster", security(("bearer" = [])),
    params(TreeQuery), responses((status = 200, body = TreeNode)))]
pub async fn tree(
    State(st): St,
    caller: Caller,
    QueryParams(q): QueryParams<TreeQuery>,
) -> ApiResult<Json<TreeNode>> {
    caller.require(&[Admin])?;
    let h = st.hospital()?;
    let path = q
        .path
        .unwrap_or_else(|| medkeeper_hospital::tree::ROOT.to_string());
    let depth = q.depth.unwrap_or(1).min(views::TREE_MAX_DEPTH);
    let r = views::tree_node(h.session().as_ref(), &path, depth).await;
    // The tree holds patient ids (never PHI); reading it is audited like a queue.
    audited(&st, &caller, "tree.read", None, None, r)
        .await
        .map(Json)
}

// --- tokens and audit -----------------------------------------------------------------------

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// The role.
    pub role: Role,
    /// The patient, for a patient token.
    #[serde(default)]
    pub patient: Option<PatientId>,
    /// A label for people (who or what holds it).
    #[serde(default)]
    pub label: String,
}

/// A created token: the only time its text is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedToken {
    /// The token's public id.
    pub id: String,
    /// The bearer token.
    pub token: String,
    /// Its role.
    pub role: Role,
    /// Its patient.
    pub patient: Option<PatientId>,
    /// Its label.
    pub label: String,
}

/// Creates a token (admins).
#[utoipa::path(post, path = "/api/tokens", tag = "auth", security(("bearer" = [])),
    request_body = NewToken, responses((status = 201, body = IssuedToken)))]
pub async fn create_token(
    State(st): St,
    caller: Caller,
    Body(body): Body<NewToken>,
) -> ApiResult<impl IntoResponse> {
    detached(async move {
        let patient = body.patient.clone();
        let r = match caller.require(&[Admin]) {
            Ok(()) => {
                let record = change_record(&caller, "token.create", patient.as_ref(), None);
                let store = st.store().as_ref();
                issue_token_audited(store, body.role, body.patient, &body.label, Some(&record))
                    .await
            }
            Err(e) => Err(e),
        };
        let written = r.is_ok();
        let r = audited_change(
            &st,
            &caller,
            "token.create",
            patient.as_ref(),
            None,
            written,
            r,
        )
        .await?;
        let (rec, token) = r;
        Ok((
            StatusCode::CREATED,
            Json(IssuedToken {
                id: rec.id,
                token,
                role: body.role,
                patient: rec.patient,
                label: rec.label,
            }),
        ))
    })
    .await
}

/// A token as listed (never its text or hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    /// Its public id.
    pub id: String,
    /// Its role.
    pub role: String,
    /// Its patient.
    pub patient: Option<PatientId>,
    /// Its label.
    pub label: String,
    /// When created.
    pub created_ms: i64,
    /// When revoked.
    pub revoked_ms: Option<i64>,
}

impl From<TokenRecord> for TokenInfo {
    fn from(t: TokenRecord) -> TokenInfo {
        TokenInfo {
            id: t.id,
            role: t.role,
            patient: t.patient,
            label: t.label,
            created_ms: t.created_ms,
            revoked_ms: t.revoked_ms,
        }
    }
}

/// Lists tokens (admins).
#[utoipa::path(get, path = "/api/tokens", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Vec<TokenInfo>)))]
pub async fn tokens(State(st): St, caller: Caller) -> ApiResult<Json<Vec<TokenInfo>>> {
    caller.require(&[Admin])?;
    let all = st.store().tokens().await?;
    Ok(Json(all.into_iter().map(TokenInfo::from).collect()))
}

/// Revokes a token (admins).
#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<StatusCode> {
    let record = change_record(&caller, "token.revoke", None, None);
    let r = async {
        caller.require(&[Admin])?;
        validate_name("token id", &id)?;
        if st
            .store()
            .revoke_token(&id, now_ms(), Some(&record))
            .await?
        {
            st.tokens.clear();
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(ApiError::not_found(format!(
                "token {id:?} not found or already revoked"
            )))
        }
    }
    .await;
    let written = r.is_ok();
    audited_change(&st, &caller, "token.revoke", None, None, written, r).await
}

/// The audit log (admins).
#[utoipa::path(get, path = "/api/audit", tag = "auth", security(("bearer" = [])),
    params(AuditQuery), responses((status = 200, body = Vec<Object>)))]
pub async fn audit(
    State(st): St,
    caller: Caller,
    QueryParams(query): QueryParams<AuditQuery>,
) -> ApiResult<Json<Vec<AuditRecord>>> {
    caller.require(&[Admin])?;
    Ok(Json(st.store().audit(&query).await?))
}

// --- event streams --------------------------------------------------------------------------

type BoxedEvents = std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>;
type EventStream = Sse<axum::response::sse::KeepAliveStream<BoxedEvents>>;

/// Streams a topic's views (see [`crate::sse`]).
fn stream(st: &Arc<ServerState>, caller: &Caller, topic: Topic) -> ApiResult<EventStream> {
    stream_many(st, caller, vec![topic])
}

/// Streams the views of several topics on one connection (a browser holds only six
/// connections to a server, and an open stream holds one).
fn stream_many(
    st: &Arc<ServerState>,
    caller: &Caller,
    topics: Vec<Topic>,
) -> ApiResult<EventStream> {
    let slot = st.streams.take(&caller.token)?;
    let each: Vec<BoxedEvents> = topics.into_iter().map(|t| topic_events(st, t)).collect();
    // The token is checked again every CACHE_TTL: a revoked token's streams end.
    let (state, hash) = (Arc::downgrade(st), caller.hash.clone());
    let revoked = async move {
        loop {
            tokio::time::sleep(crate::auth::CACHE_TTL).await;
            let Some(st) = state.upgrade() else { return };
            if let Err(e) = st
                .tokens
                .authenticate_hash(st.store().as_ref(), &hash)
                .await
                && e.code == "unauthorized"
            {
                return;
            }
        }
    };
    let merged = futures_util::stream::select_all(each)
        .take_until(Box::pin(revoked))
        .map(move |ev| {
            // The stream holds its slot among the open streams for as long as it lives.
            let _slot = &slot;
            ev
        });
    // A short keep-alive also bounds how long a closed connection that hyper does not see
    // closed holds its slot (see `StreamSlots`).
    Ok(Sse::new(Box::pin(merged) as BoxedEvents)
        .keep_alive(KeepAlive::new().interval(st.limits.stream_keep_alive)))
}

/// One topic's views as events: the current one first, then every change, until shutdown.
fn topic_events(st: &Arc<ServerState>, topic: Topic) -> BoxedEvents {
    let sub = st.hub.subscribe(st, topic.clone());
    let name = topic.event();
    let mut rx = sub.rx.clone();
    rx.mark_changed();
    let end = Box::pin(st.shutting_down());
    Box::pin(futures_util::stream::unfold(
        (rx, sub, end),
        move |(mut rx, sub, mut end)| async move {
            loop {
                tokio::select! {
                    r = rx.changed() => r.ok()?,
                    _ = &mut end => return None,
                }
                let v = rx.borrow_and_update().clone();
                if let Some(v) = v {
                    let ev = Event::default().event(name).data(&*v);
                    return Some((Ok(ev), (rx, sub, end)));
                }
            }
        },
    ))
}

/// Every pool's live view (event `pool`, one per pool and change) and the cluster's (event
/// `cluster`) on one stream: what a dashboard needs, on one connection.
#[utoipa::path(get, path = "/api/events", tag = "streams", security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream")))]
pub async fn all_events(State(st): St, caller: Caller) -> ApiResult<EventStream> {
    let r = async {
        caller.require(Role::STAFF)?;
        let h = st.hospital()?;
        let mut topics: Vec<Topic> = h
            .config()
            .pools
            .iter()
            .map(|p| Topic::Pool(p.pool.clone()))
            .collect();
        topics.push(Topic::Cluster);
        stream_many(&st, &caller, topics)
    }
    .await;
    audited(&st, &caller, "queue.stream", None, None, r).await
}

/// Live view of a pool: units and queue (event `pool`).
#[utoipa::path(get, path = "/api/pools/{pool}/events", tag = "streams", security(("bearer" = [])),
    params(("pool" = String, Path)), responses((status = 200, content_type = "text/event-stream")))]
pub async fn pool_events(
    State(st): St,
    caller: Caller,
    PathParams(name): PathParams<String>,
) -> ApiResult<EventStream> {
    let r = async {
        caller.require(Role::STAFF)?;
        let h = st.hospital()?;
        let p = views::resolve_pool(&h, &name)?;
        stream(&st, &caller, Topic::Pool(p))
    }
    .await;
    audited(&st, &caller, "queue.stream", None, None, r).await
}

/// Live view of one unit (event `unit`).
#[utoipa::path(get, path = "/api/pools/{pool}/units/{unit}/events", tag = "streams",
    security(("bearer" = [])), params(("pool" = String, Path), ("unit" = String, Path)),
    responses((status = 200, content_type = "text/event-stream")))]
pub async fn unit_events(
    State(st): St,
    caller: Caller,
    PathParams((name, unit)): PathParams<(String, String)>,
) -> ApiResult<EventStream> {
    let r = async {
        caller.require(Role::STAFF)?;
        let h = st.hospital()?;
        let p = views::resolve_pool(&h, &name)?;
        views::unit(&h, &p, &unit).await?;
        stream(&st, &caller, Topic::Unit(p, unit))
    }
    .await;
    audited(&st, &caller, "unit.stream", None, None, r).await
}

/// Live view of a patient's own exams (event `patient`): staff, or the patient's own token.
#[utoipa::path(get, path = "/api/patients/{id}/events", tag = "streams", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, content_type = "text/event-stream")))]
pub async fn patient_events(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<EventStream> {
    let id = parse_patient_id(&id)?;
    let r = async {
        caller.require_staff_or_self(Role::STAFF, &id)?;
        // As `GET /api/patients/{id}`: a patient nobody registered or ordered for is unknown.
        if st.store().patient(&id).await?.is_none() && st.store().orders_of(&id).await?.is_empty() {
            return Err(ApiError::not_found(format!("patient {id} not found")));
        }
        stream(&st, &caller, Topic::Patient(id.clone()))
    }
    .await;
    audited(&st, &caller, "patient.stream", Some(&id), None, r).await
}

/// Live view of the cluster (event `cluster`).
#[utoipa::path(get, path = "/api/cluster/events", tag = "streams", security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream")))]
pub async fn cluster_events(State(st): St, caller: Caller) -> ApiResult<EventStream> {
    caller.require(Role::STAFF)?;
    stream(&st, &caller, Topic::Cluster)
}

/// The patient's queue view type, for the OpenAPI document.
pub type PatientStreamView = PatientQueueView;
