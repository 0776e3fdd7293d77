//! A patient's vital signs around NEWS2: identifiers (an MRN mapped to the opaque id, so
//! monitors and EHRs can name the patient their way), clinical settings (the SpO2 scale, a
//! clinician's decision; the ward escalations go to), the stored observations, and the NEWS2
//! score now with the last day's trend — **decision support, not a diagnosis**.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use medkeeper_hospital::PatientId;
use medkeeper_hospital::model::now_ms;
use medkeeper_hospital::news2::{Parameter, Risk, SpO2Scale};
use medkeeper_hospital::store::{ObservationQuery, PatientSettings, StoreError};
use medkeeper_hospital::vitals::{Observation, STALE_AFTER_MS, VitalCode, beyond_horizon};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiResult, St, audited, audited_change, detached, parse_patient_id};
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Body, PathParams, QueryParams};
use crate::state::{Audit, Outcome, ServerState};
use Role::{Admin, Doctor, Nurse, Scheduler};

/// What every NEWS2 answer says about itself.
pub const NEWS2_LABEL: &str = "decision support, not a diagnosis";

/// Who may map identifiers: the staff who register patients.
pub const IDENTIFIER_ROLES: &[Role] = &[Admin, Scheduler, Doctor, Nurse];
/// Who may set the SpO2 scale: a clinical decision (scale 2 is for hypercapnic respiratory
/// failure with a prescribed target of 88–92 %).
pub const SCALE_ROLES: &[Role] = &[Admin, Doctor];
/// Who may set the ward.
pub const WARD_ROLES: &[Role] = &[Admin, Scheduler, Nurse, Doctor];

/// The longest identifier system or value, and ward name, in bytes.
pub const MAX_TEXT: usize = 200;

/// Checks an identifier's system or value, or a ward: single-line text
/// ([`crate::text::single_line`]) of 1-[`MAX_TEXT`] bytes, not only spaces.
fn check_text(what: &str, s: &str) -> ApiResult<()> {
    if s.trim().is_empty() || s.len() > MAX_TEXT {
        return Err(ApiError::invalid(format!(
            "{what}: 1-{MAX_TEXT} bytes, not only spaces, no control characters"
        )));
    }
    crate::text::single_line(what, s)
}

/// An identifier to map to a patient.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewIdentifier {
    /// The namespace (a URI, e.g. `urn:oid:1.2.3.4` or the hospital's MRN system).
    pub system: String,
    /// The identifier within it (the MRN).
    pub value: String,
}

async fn require_registered(st: &ServerState, id: &PatientId) -> ApiResult<()> {
    if st.store().patient(id).await?.is_none() {
        return Err(ApiError::not_found(format!(
            "patient {id} is not registered"
        )));
    }
    Ok(())
}

/// Maps an identifier (an MRN) to a patient: 201, or 200 if it already was this patient's;
/// 409 `conflict` if it is another patient's.
#[utoipa::path(post, path = "/api/patients/{id}/identifiers", tag = "patients",
    security(("bearer" = [])), params(("id" = String, Path)), request_body = NewIdentifier,
    responses((status = 201, body = NewIdentifier), (status = 409, body = ErrorBody)))]
pub async fn add_identifier(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Body(body): Body<NewIdentifier>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_patient_id(&id)?;
    detached(async move {
        let action = "patient.identifier";
        let mut written = false;
        let r = async {
            caller.require(IDENTIFIER_ROLES)?;
            check_text("system", &body.system)?;
            check_text("value", &body.value)?;
            require_registered(&st, &id).await?;
            match st
                .store()
                .patient_by_identifier(&body.system, &body.value)
                .await?
            {
                Some(p) if p == id => return Ok((StatusCode::OK, Json(body.clone()))),
                Some(_) => {
                    return Err(ApiError::conflict(format!(
                        "identifier {}|{} belongs to another patient",
                        body.system, body.value
                    )));
                }
                None => {}
            }
            let record = ServerState::audit_record(Audit {
                caller: &caller,
                action,
                patient: Some(&id),
                order: None,
                outcome: Outcome::Ok,
                detail: format!("{}|{}", body.system, body.value),
            });
            match st
                .store()
                .set_identifier(&id, &body.system, &body.value, Some(&record))
                .await
            {
                Ok(()) => {
                    written = true;
                    Ok((StatusCode::CREATED, Json(body.clone())))
                }
                Err(StoreError::Exists(_)) => Err(ApiError::conflict(format!(
                    "identifier {}|{} belongs to another patient",
                    body.system, body.value
                ))),
                Err(e) => Err(e.into()),
            }
        }
        .await;
        audited_change(&st, &caller, action, Some(&id), None, written, r).await
    })
    .await
}

/// A change to a patient's settings; what is absent stays as it is.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsChange {
    /// `scale1` or `scale2` (doctors and admins only).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub spo2_scale: Option<SpO2Scale>,
    /// The ward or department (admin, scheduler, nurse, doctor); `""` clears it.
    #[serde(default)]
    pub ward: Option<String>,
}

/// Sets a patient's SpO2 scale and/or ward. The scale is recorded with who set it and when.
#[utoipa::path(put, path = "/api/patients/{id}/settings", tag = "patients",
    security(("bearer" = [])), params(("id" = String, Path)), request_body = SettingsChange,
    responses((status = 200, body = PatientSettings), (status = 403, body = ErrorBody)))]
pub async fn set_settings(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Body(body): Body<SettingsChange>,
) -> ApiResult<Json<PatientSettings>> {
    let id = parse_patient_id(&id)?;
    detached(async move {
        let action = "patient.settings";
        let mut written = false;
        let r = async {
            if body.spo2_scale.is_none() && body.ward.is_none() {
                caller.require(WARD_ROLES)?;
                return Err(ApiError::bad_request(
                    "nothing to change: spo2_scale or ward",
                ));
            }
            if body.spo2_scale.is_some() {
                caller.require(SCALE_ROLES).map_err(|_| {
                    ApiError::forbidden(format!(
                        "the SpO2 scale is a clinical decision: doctors and admins only, not the \
                         {} role",
                        caller.role
                    ))
                })?;
            }
            if body.ward.is_some() {
                caller.require(WARD_ROLES)?;
            }
            if let Some(w) = body.ward.as_deref().filter(|w| !w.is_empty()) {
                check_text("ward", w)?;
            }
            require_registered(&st, &id).await?;
            let mut s = st.store().patient_settings(&id).await?;
            let mut detail = Vec::new();
            if let Some(scale) = body.spo2_scale {
                detail.push(format!(
                    "spo2_scale {} -> {}",
                    scale_name(s.spo2_scale),
                    scale_name(scale)
                ));
                s.spo2_scale = scale;
                s.scale_set_by = Some(format!("{}:{}", caller.role, caller.token));
                s.scale_set_ms = Some(now_ms());
            }
            if let Some(w) = &body.ward {
                let w = (!w.is_empty()).then(|| w.trim().to_string());
                detail.push(format!(
                    "ward {} -> {}",
                    s.ward.as_deref().unwrap_or("none"),
                    w.as_deref().unwrap_or("none")
                ));
                s.ward = w;
            }
            let record = ServerState::audit_record(Audit {
                caller: &caller,
                action,
                patient: Some(&id),
                order: None,
                outcome: Outcome::Ok,
                detail: detail.join("; "),
            });
            st.store()
                .set_patient_settings(&id, &s, Some(&record))
                .await?;
            written = true;
            Ok(Json(s))
        }
        .await;
        audited_change(&st, &caller, action, Some(&id), None, written, r).await
    })
    .await
}

fn scale_name(s: SpO2Scale) -> &'static str {
    match s {
        SpO2Scale::Scale1 => "scale1",
        SpO2Scale::Scale2 => "scale2",
    }
}

/// Which observations `GET /api/patients/{id}/vitals` lists.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VitalsQuery {
    /// Effective at or after this time, ms since the epoch.
    #[serde(default)]
    pub since_ms: Option<i64>,
    /// Effective at or before this time.
    #[serde(default)]
    pub until_ms: Option<i64>,
    /// Only these codes, comma-separated (`heart_rate,spo2`).
    #[serde(default)]
    pub code: Option<String>,
    /// At most this many (the newest), default 1,000, at most 10,000.
    #[serde(default)]
    pub limit: Option<u32>,
}

/// A patient's observations, oldest effective time first (the newest `limit`): staff, or
/// the patient's own token.
#[utoipa::path(get, path = "/api/patients/{id}/vitals", tag = "patients",
    security(("bearer" = [])), params(("id" = String, Path), VitalsQuery),
    responses((status = 200, body = [Observation]), (status = 403, body = ErrorBody)))]
pub async fn vitals(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
    QueryParams(q): QueryParams<VitalsQuery>,
) -> ApiResult<Json<Vec<Observation>>> {
    let id = parse_patient_id(&id)?;
    let r = async {
        caller.require_staff_or_self(Role::STAFF, &id)?;
        let mut codes = Vec::new();
        for c in q.code.iter().flat_map(|c| c.split(',')) {
            codes.push(VitalCode::parse(c.trim()).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "code {c:?}: one of respiratory_rate, heart_rate, spo2, temperature, \
                     systolic_bp, inhaled_oxygen, consciousness"
                ))
            })?);
        }
        require_registered(&st, &id).await?;
        let found = st
            .store()
            .observations(&ObservationQuery {
                patient: Some(id.clone()),
                codes,
                since_ms: q.since_ms,
                until_ms: q.until_ms,
                limit: Some(q.limit.unwrap_or(1_000).min(10_000)),
            })
            .await?;
        Ok(Json(found))
    }
    .await;
    audited(&st, &caller, "vitals.read", Some(&id), None, r).await
}

/// One parameter's score in the current NEWS2.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ParameterScore {
    /// The parameter (`respiration_rate`, `spo2`, `air_or_oxygen`, `systolic_bp`, `pulse`,
    /// `consciousness`, `temperature`).
    #[schema(value_type = String)]
    pub parameter: Parameter,
    /// Its score, 0–3.
    pub score: u8,
}

/// A parameter without a value in the score's window.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MissingParameter {
    /// The parameter.
    #[schema(value_type = String)]
    pub parameter: Parameter,
    /// When its newest (plausible) value was measured, if ever: then it is stale (older
    /// than the one-hour window), else never observed.
    pub last_ms: Option<i64>,
}

/// The current NEWS2 score.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct News2Current {
    /// The moment scored (now, or the newest observation's effective time if later).
    pub at_ms: i64,
    /// The aggregate of the parameters present.
    pub aggregate: u8,
    /// Each present parameter's score, in chart order.
    pub parameters: Vec<ParameterScore>,
    /// Some parameter scored 3.
    pub red: bool,
    /// The clinical risk (a lower bound when parameters are missing).
    #[schema(value_type = String)]
    pub risk: Risk,
    /// The chart's clinical response.
    pub response: String,
    /// The chart's monitoring frequency.
    pub monitoring: String,
    /// True if every parameter had a fresh value.
    pub complete: bool,
    /// Parameters never observed (no plausible value at all).
    pub missing: Vec<MissingParameter>,
    /// Parameters whose newest value is older than the window (`last_ms` says when).
    pub stale: Vec<MissingParameter>,
    /// The SpO2 scale used.
    #[schema(value_type = String)]
    pub scale: SpO2Scale,
    /// The observations used (ids).
    pub basis: Vec<String>,
}

/// One stored score of the trend.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct News2Point {
    /// The moment scored.
    pub at_ms: i64,
    /// The aggregate.
    pub aggregate: u8,
    /// The clinical risk.
    #[schema(value_type = String)]
    pub risk: Risk,
    /// Whether every parameter was present.
    pub complete: bool,
}

/// A patient's NEWS2: now, and the last 24 hours of stored scores.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct News2View {
    /// The patient.
    #[schema(value_type = String)]
    pub patient: PatientId,
    /// Always "decision support, not a diagnosis".
    pub label: &'static str,
    /// The score now; `null` if the patient was never observed.
    pub current: Option<News2Current>,
    /// Stored scores of the last 24 hours, oldest first.
    pub trend: Vec<News2Point>,
}

/// The vital code a NEWS2 parameter is scored from.
fn vital_of(p: Parameter) -> VitalCode {
    match p {
        Parameter::RespirationRate => VitalCode::RespiratoryRate,
        Parameter::Spo2 => VitalCode::Spo2,
        Parameter::AirOrOxygen => VitalCode::InhaledOxygen,
        Parameter::SystolicBp => VitalCode::SystolicBp,
        Parameter::Pulse => VitalCode::HeartRate,
        Parameter::Consciousness => VitalCode::Consciousness,
        Parameter::Temperature => VitalCode::Temperature,
    }
}

/// The patient's NEWS2 now (each parameter's score, the risk, the chart's response and
/// monitoring, what is missing or stale) and the last 24 h of stored scores: staff, or the
/// patient's own token. Decision support, not a diagnosis.
#[utoipa::path(get, path = "/api/patients/{id}/news2", tag = "patients",
    security(("bearer" = [])), params(("id" = String, Path)),
    responses((status = 200, body = News2View), (status = 403, body = ErrorBody)))]
pub async fn news2(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<News2View>> {
    let id = parse_patient_id(&id)?;
    let r = async {
        caller.require_staff_or_self(Role::STAFF, &id)?;
        require_registered(&st, &id).await?;
        let h = st.hospital()?;
        let current = match h.news2_now(&id).await? {
            None => None,
            Some(n) => {
                let s = &n.score;
                let (mut missing, mut stale) = (Vec::new(), Vec::new());
                for p in &s.missing {
                    // The newest plausible value before the window, if any.
                    let older = st
                        .store()
                        .observations(&ObservationQuery {
                            patient: Some(id.clone()),
                            codes: vec![vital_of(*p)],
                            since_ms: None,
                            until_ms: Some(n.at_ms),
                            limit: Some(50),
                        })
                        .await?;
                    let last_ms = older
                        .iter()
                        .rev()
                        .find(|o| o.artefact.is_none())
                        .map(|o| o.effective_ms);
                    let m = MissingParameter {
                        parameter: *p,
                        last_ms,
                    };
                    match last_ms {
                        Some(t) if t <= n.at_ms - STALE_AFTER_MS => stale.push(m),
                        _ => missing.push(m),
                    }
                }
                Some(News2Current {
                    at_ms: n.at_ms,
                    aggregate: s.aggregate,
                    parameters: s
                        .parameters
                        .iter()
                        .map(|(parameter, score)| ParameterScore {
                            parameter: *parameter,
                            score: *score,
                        })
                        .collect(),
                    red: s.red,
                    risk: s.risk,
                    response: s.risk.response(s.aggregate).to_string(),
                    monitoring: s.risk.monitoring(s.aggregate).to_string(),
                    complete: s.complete(),
                    missing,
                    stale,
                    scale: s.scale,
                    basis: n.basis.clone(),
                })
            }
        };
        let now = h.now_ms();
        let day_ago = now - 24 * 3600 * 1000;
        let trend = st
            .store()
            .news2_scores(&id, day_ago, 1_000)
            .await?
            .into_iter()
            // Not a future reading's score (see the ward view).
            .filter(|r| !beyond_horizon(r.news2.at_ms, now))
            .map(|r| News2Point {
                at_ms: r.news2.at_ms,
                aggregate: r.news2.score.aggregate,
                risk: r.news2.score.risk,
                complete: r.news2.score.complete(),
            })
            .collect();
        Ok(Json(News2View {
            patient: id.clone(),
            label: NEWS2_LABEL,
            current,
            trend,
        }))
    }
    .await;
    audited(&st, &caller, "news2.read", Some(&id), None, r).await
}

/// One monitored patient on the ward view.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WardPatient {
    /// The patient.
    #[schema(value_type = String)]
    pub patient: PatientId,
    /// Their name (staff only see this view).
    pub name: String,
    /// Their ward.
    pub ward: Option<String>,
    /// The clinical risk of the latest stored score.
    #[schema(value_type = String)]
    pub risk: Risk,
    /// Its aggregate.
    pub aggregate: u8,
    /// When it was scored (effective time).
    pub at_ms: i64,
    /// True if every parameter was present and fresh then.
    pub complete: bool,
    /// True if the latest score is older than the staleness window now: new observations are
    /// due.
    pub stale: bool,
    /// The scores of the last 24 hours, oldest first (aggregate and time).
    pub trend: Vec<News2Point>,
}

/// Which ward.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WardQuery {
    /// Only this ward (all monitored patients if absent).
    #[serde(default)]
    pub ward: Option<String>,
}

/// The ward view: every monitored patient (one with a NEWS2 escalation level) with the latest
/// NEWS2, highest risk first — decision support, not a diagnosis.
#[utoipa::path(get, path = "/api/ward", tag = "patients", security(("bearer" = [])),
    params(WardQuery), responses((status = 200, body = [WardPatient])))]
pub async fn ward(
    State(st): St,
    caller: Caller,
    QueryParams(q): QueryParams<WardQuery>,
) -> ApiResult<Json<Vec<WardPatient>>> {
    let r = async {
        caller.require(Role::STAFF)?;
        let h = st.hospital()?;
        let model = h.escalation_model().await?;
        model.settle().await;
        let now = h.now_ms();
        let day_ago = now - 24 * 3600 * 1000;
        let mut rows = Vec::new();
        for name in model.children(medkeeper_hospital::tree::ESCALATIONS) {
            let Ok(p) = name.parse::<PatientId>() else {
                continue;
            };
            let settings = st.store().patient_settings(&p).await?;
            if q.ward.is_some() && settings.ward != q.ward {
                continue;
            }
            let mut scores = st.store().news2_scores(&p, day_ago, 1_000).await?;
            // A score at a time beyond the clock's horizon is a future reading's: shown as
            // the latest, it would hide the real ones and never turn stale.
            scores.retain(|r| !beyond_horizon(r.news2.at_ms, now));
            let Some(last) = scores.last() else {
                continue;
            };
            let patient = st.store().patient(&p).await?;
            rows.push(WardPatient {
                name: patient.map(|x| x.name).unwrap_or_default(),
                ward: settings.ward,
                risk: last.news2.score.risk,
                aggregate: last.news2.score.aggregate,
                at_ms: last.news2.at_ms,
                complete: last.news2.score.complete(),
                stale: last.news2.at_ms <= now - STALE_AFTER_MS,
                trend: scores
                    .iter()
                    .map(|r| News2Point {
                        at_ms: r.news2.at_ms,
                        aggregate: r.news2.score.aggregate,
                        risk: r.news2.score.risk,
                        complete: r.news2.score.complete(),
                    })
                    .collect(),
                patient: p,
            });
        }
        rows.sort_by(|a, b| {
            b.risk
                .cmp(&a.risk)
                .then(b.aggregate.cmp(&a.aggregate))
                .then(a.patient.cmp(&b.patient))
        });
        Ok(Json(rows))
    }
    .await;
    // Names of patients: an access to patient data, audited.
    audited(&st, &caller, "ward.read", None, None, r).await
}
