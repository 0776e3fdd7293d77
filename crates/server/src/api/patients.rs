//! Patients: registration (names and birth dates checked) and a patient's record.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use medkeeper_hospital::model::now_ms;
use medkeeper_hospital::store::{Patient, StoreError};
use medkeeper_hospital::tree::PatientEntry;
use medkeeper_hospital::{Order, PatientId};
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};
use utoipa::ToSchema;

use super::{ApiResult, St, audited, audited_change, change_record, detached, parse_patient_id};
use crate::auth::{Caller, Role};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Body, PathParams};
use Role::{Admin, Doctor, Nurse, Scheduler};

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
/// letter or digit, and no control characters (NUL, line breaks, escapes), line separators or
/// bidirectional overrides ([`crate::text::single_line`]), which no name has and which would
/// corrupt or disguise logs, exports and labels.
fn check_patient_name(name: &str) -> ApiResult<()> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(ApiError::invalid(format!(
            "name: 1-{MAX_NAME_LEN} bytes, not only spaces"
        )));
    }
    crate::text::single_line("name", name)?;
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
                Err(StoreError::Exists(_)) => Err(ApiError::conflict(format!(
                    "patient {id} is already registered"
                ))),
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
