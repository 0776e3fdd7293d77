//! Orders: creation, reading, and the actions that move an order along its states, each
//! audited, with the actor's record stored with the change.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use medkeeper_hospital::orders::{Hospital, NewOrder};
use medkeeper_hospital::store::ExamResult;
use medkeeper_hospital::{Actor, Order, OrderId, PatientId, Priority, Transition};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    ApiResult, St, audit_started, audited, audited_change, change_record, detached, parse_order_id,
};
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Body, PathParams};
use crate::state::{Audit, Outcome, ServerState};
use crate::views;
use Role::{Admin, Doctor, Nurse, Patient as PatientRole, Scheduler, Technician};

/// The longest report text accepted, in bytes.
pub const MAX_REPORT_LEN: usize = 20_000;

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
            outcome: Outcome::Denied,
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
    F: FnOnce(Arc<Hospital>, Order, Actor) -> Fut + Send + 'static,
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
        // The order as read here: the action does not read it again.
        let r = f(h, order.clone(), who.clone()).await;
        let written = who.audit_written();
        audited_change(&st, &caller, action, patient, Some(&id), written, r).await
    })
    .await
    .map(Json)
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
        move |h, order, who| async move {
            Ok(match a {
                Action::Cancel => h.cancel(order, &who).await?,
                Action::Start => h.start(order, &who).await?,
                Action::Complete => h.complete(order, &who).await?,
                Action::NoShow => h.no_show(order, &who).await?,
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
        move |h, order, who| async move { Ok(h.reprioritise(order, body.priority, &who).await?) },
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
        |h, order, who| async move { Ok(h.call(order, body.unit.as_deref(), &who).await?) },
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
        |h, order, who| async move {
            if body.text.trim().is_empty() || body.text.len() > MAX_REPORT_LEN {
                return Err(ApiError::invalid(format!("text: 1-{MAX_REPORT_LEN} bytes")));
            }
            Ok(h.report(order, &body.text, &who).await?)
        },
    )
    .await
}
