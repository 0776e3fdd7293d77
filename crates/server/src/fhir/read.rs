//! The FHIR read views: reads and searches over the clinical store, with the JSON API's roles
//! and patient isolation (a patient token sees only its own patient: another patient's record
//! or search is 403, another patient's order or observation 404, as if it did not exist) and
//! an audit record for every access.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use medkeeper_hospital::store::ObservationQuery;
use medkeeper_hospital::vitals::{Observation, VitalCode};
use medkeeper_hospital::{Order, OrderId, OrderState, PatientId};

use super::resources::{self, LOINC};
use super::{ApiResult, Fhir, audited, base_url, searchset};
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::PathParams;
use crate::state::{Audit, Outcome, ServerState};

type St = State<Arc<ServerState>>;
type Params = Query<Vec<(String, String)>>;

/// The most observations one search answers (the newest of those matching).
pub const MAX_OBSERVATIONS: u32 = 1_000;

fn parse_patient(s: &str) -> ApiResult<PatientId> {
    let id = s
        .strip_prefix("Patient/")
        .or_else(|| s.rsplit_once("/Patient/").map(|(_, id)| id))
        .unwrap_or(s);
    id.parse()
        .map_err(|e: medkeeper_hospital::Error| ApiError::invalid(e.to_string()))
}

/// The parameters of a search, refusing any this server does not support (a FHIR server
/// must not silently ignore one). `_format=json` is accepted and ignored.
fn params<'a>(q: &'a [(String, String)], supported: &[&str]) -> ApiResult<Vec<(&'a str, &'a str)>> {
    let mut out = Vec::new();
    for (k, v) in q {
        if k == "_format" && (v.contains("json")) {
            continue;
        }
        // NUL and other control characters are in no identifier, code or date; refused here
        // rather than passed to a store that cannot take them (PostgreSQL refuses NUL).
        if k.chars().chain(v.chars()).any(char::is_control) {
            return Err(ApiError::bad_request(format!(
                "search parameter {k:?}: control characters (such as NUL) are not taken"
            )));
        }
        if !supported.contains(&k.as_str()) {
            return Err(ApiError::bad_request(format!(
                "search parameter {k:?} is not supported here (supported: {})",
                supported.join(", ")
            )));
        }
        out.push((k.as_str(), v.as_str()));
    }
    Ok(out)
}

fn one<'a>(ps: &[(&str, &'a str)], name: &str) -> ApiResult<Option<&'a str>> {
    let mut it = ps.iter().filter(|(k, _)| *k == name);
    let first = it.next().map(|(_, v)| *v);
    if it.next().is_some() {
        return Err(ApiError::bad_request(format!(
            "{name}: give it once (several values: comma-separated)"
        )));
    }
    Ok(first)
}

/// The patient a search is about: the `patient` (or `subject`) parameter; for a patient token
/// its own patient when absent, and only its own. `audited` is set to the patient asked for
/// *before* the caller's right to it is checked, so a refused search is audited under the
/// patient whose data was asked for (`GET /api/audit?patient=` finds the attempt), not the
/// caller's own.
fn search_patient(
    caller: &Caller,
    given: Option<&str>,
    required: bool,
    audited: &mut Option<PatientId>,
) -> ApiResult<Option<PatientId>> {
    let given = given.map(parse_patient).transpose()?;
    if let Some(p) = &given {
        *audited = Some(p.clone());
    }
    match (caller.role, given) {
        (Role::Patient, None) => Ok(caller.patient.clone()),
        (_, Some(p)) => {
            caller.require_staff_or_self(Role::STAFF, &p)?;
            Ok(Some(p))
        }
        (_, None) if required => Err(ApiError::bad_request(
            "the patient search parameter is required (patient=<id>)",
        )),
        (_, None) => {
            caller.require(Role::STAFF)?;
            Ok(None)
        }
    }
}

/// A `date` search value as the range `[from, to]` (ms) it covers: a full date-time is one
/// instant, a date `YYYY-MM-DD` its UTC day.
fn date_range(v: &str) -> ApiResult<(i64, i64)> {
    if let Some(ms) = super::ingest::parse_date_time(v) {
        return Ok((ms, ms));
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(v, format).map_err(|_| {
        ApiError::bad_request(format!(
            "date {v:?}: use YYYY-MM-DD or an RFC 3339 date-time, after a prefix eq, ge, le, gt \
             or lt"
        ))
    })?;
    let start = d.midnight().assume_utc().unix_timestamp() * 1000;
    Ok((start, start + 86_400_000 - 1))
}

/// The `date` parameters (prefixes eq, ge, le, gt, lt; no prefix is eq) as one range.
fn date_bounds(ps: &[(&str, &str)]) -> ApiResult<(Option<i64>, Option<i64>)> {
    let (mut since, mut until): (Option<i64>, Option<i64>) = (None, None);
    let mut lower = |v: i64| since = Some(since.map_or(v, |s: i64| s.max(v)));
    let mut bounds = Vec::new();
    for (_, v) in ps.iter().filter(|(k, _)| *k == "date") {
        let (prefix, rest) = match v.get(..2) {
            Some(p @ ("eq" | "ge" | "le" | "gt" | "lt")) => (p, &v[2..]),
            Some("ne" | "sa" | "eb" | "ap") => {
                return Err(ApiError::bad_request(format!(
                    "date {v:?}: prefixes eq, ge, le, gt and lt are supported"
                )));
            }
            _ => ("eq", *v),
        };
        let (from, to) = date_range(rest)?;
        bounds.push((prefix, from, to));
    }
    for (prefix, from, to) in &bounds {
        match *prefix {
            "ge" => lower(*from),
            "gt" => lower(to + 1),
            "eq" => lower(*from),
            _ => {}
        }
    }
    for (prefix, from, to) in bounds {
        let upper = match prefix {
            "le" | "eq" => Some(to),
            "lt" => Some(from - 1),
            _ => None,
        };
        if let Some(u) = upper {
            until = Some(until.map_or(u, |x| x.min(u)));
        }
    }
    Ok((since, until))
}

/// The vital codes a `code` parameter names (comma-separated, `http://loinc.org|` optional).
fn codes(v: &str) -> ApiResult<Vec<VitalCode>> {
    let mut out = Vec::new();
    for c in v.split(',') {
        let c = c.strip_prefix(&format!("{LOINC}|")).unwrap_or(c);
        let code = VitalCode::from_loinc(c).ok_or_else(|| {
            ApiError::bad_request(format!("code {c:?}: not a vital sign LOINC code kept here"))
        })?;
        out.push(code);
    }
    Ok(out)
}

fn search_url(resource: &str, q: &[(String, String)]) -> String {
    let query: Vec<String> = q.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if query.is_empty() {
        format!("/{resource}")
    } else {
        format!("/{resource}?{}", query.join("&"))
    }
}

/// `GET /fhir/metadata`: the CapabilityStatement (no token needed: it holds no patient data
/// and tells a client how to authenticate).
#[utoipa::path(get, path = "/fhir/metadata", tag = "fhir",
    responses((status = 200, body = Object)))]
pub async fn metadata(State(st): St) -> Fhir {
    Fhir(
        StatusCode::OK,
        resources::capability_statement(&base_url(&st), st.me().started_ms),
    )
}

/// `GET /fhir/Patient/{id}`: staff, or the patient's own token.
#[utoipa::path(get, path = "/fhir/Patient/{id}", tag = "fhir", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Object)))]
pub async fn patient(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<Fhir> {
    let id = parse_patient(&id)?;
    let r = async {
        caller.require_staff_or_self(Role::STAFF, &id)?;
        let p = st
            .store()
            .patient(&id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("Patient/{id} not found")))?;
        Ok(Fhir(StatusCode::OK, resources::patient(&p, &[])))
    }
    .await;
    audited(&st, &caller, "fhir.patient.read", Some(&id), None, r).await
}

/// `GET /fhir/Patient?identifier=system|value`. A patient token finds only its own patient
/// (another's identifier answers an empty result, as an unknown one does).
#[utoipa::path(get, path = "/fhir/Patient", tag = "fhir", security(("bearer" = [])),
    params(("identifier" = String, Query)), responses((status = 200, body = Object)))]
pub async fn search_patients(State(st): St, caller: Caller, Query(q): Params) -> ApiResult<Fhir> {
    let mut found: Option<PatientId> = None;
    let r = async {
        let ps = params(&q, &["identifier"])?;
        let ident = one(&ps, "identifier")?
            .ok_or_else(|| ApiError::bad_request("identifier=system|value is required"))?;
        let (system, value) = ident
            .split_once('|')
            .filter(|(s, v)| !s.is_empty() && !v.is_empty())
            .ok_or_else(|| ApiError::bad_request("identifier: write it system|value"))?;
        let mut hits = Vec::new();
        if let Some(id) = st.store().patient_by_identifier(system, value).await?
            && (caller.role != Role::Patient || caller.patient.as_ref() == Some(&id))
            && let Some(p) = st.store().patient(&id).await?
        {
            found = Some(id);
            hits.push(resources::patient(
                &p,
                &[(system.to_string(), value.to_string())],
            ));
        }
        Ok(Fhir(
            StatusCode::OK,
            searchset(&st, &search_url("Patient", &q), hits),
        ))
    }
    .await;
    let audited_patient = found.or_else(|| caller.patient.clone());
    audited(
        &st,
        &caller,
        "fhir.patient.search",
        audited_patient.as_ref(),
        None,
        r,
    )
    .await
}

/// Finds a stored observation by id. The store has no look-up by id yet: a patient token's
/// own observations are searched, and for staff the newest 10,000 of the hospital.
async fn find_observation(
    st: &ServerState,
    caller: &Caller,
    id: &str,
) -> ApiResult<Option<Observation>> {
    let q = ObservationQuery {
        patient: if caller.role == Role::Patient {
            caller.patient.clone()
        } else {
            None
        },
        limit: Some(10_000),
        ..Default::default()
    };
    Ok(st
        .store()
        .observations(&q)
        .await?
        .into_iter()
        .find(|o| o.id == id))
}

/// `GET /fhir/Observation/{id}`: staff, or the patient's own token (another patient's
/// observation is 404, as one that does not exist).
#[utoipa::path(get, path = "/fhir/Observation/{id}", tag = "fhir", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Object)))]
pub async fn observation(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<Fhir> {
    let mut patient = None;
    let r = async {
        if caller.role != Role::Patient {
            caller.require(Role::STAFF)?;
        }
        let well_formed = id.len() <= 64
            && !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if !well_formed {
            return Err(ApiError::invalid(format!("{id:?} is not a FHIR id")));
        }
        let o = find_observation(&st, &caller, &id)
            .await?
            .filter(|o| caller.role != Role::Patient || caller.patient.as_ref() == Some(&o.patient))
            .ok_or_else(|| ApiError::not_found(format!("Observation/{id} not found")))?;
        patient = Some(o.patient.clone());
        Ok(Fhir(StatusCode::OK, resources::observation(&o)))
    }
    .await;
    let p = patient.or_else(|| caller.patient.clone());
    audited(&st, &caller, "fhir.observation.read", p.as_ref(), None, r).await
}

/// `GET /fhir/Observation?patient=&code=&date=`: a patient's vital signs, oldest first (the
/// newest [`MAX_OBSERVATIONS`]).
#[utoipa::path(get, path = "/fhir/Observation", tag = "fhir", security(("bearer" = [])),
    params(("patient" = String, Query), ("code" = Option<String>, Query),
        ("date" = Option<String>, Query)),
    responses((status = 200, body = Object)))]
pub async fn search_observations(
    State(st): St,
    caller: Caller,
    Query(q): Params,
) -> ApiResult<Fhir> {
    let mut patient = caller.patient.clone();
    let r = async {
        let ps = params(&q, &["patient", "subject", "code", "date"])?;
        let given = one(&ps, "patient")?.or(one(&ps, "subject")?);
        let p = search_patient(&caller, given, true, &mut patient)?.expect("required");
        patient = Some(p.clone());
        let codes = one(&ps, "code")?
            .map(codes)
            .transpose()?
            .unwrap_or_default();
        let (since_ms, until_ms) = date_bounds(&ps)?;
        let found = if since_ms.zip(until_ms).is_some_and(|(s, u)| s > u) {
            Vec::new()
        } else {
            st.store()
                .observations(&ObservationQuery {
                    patient: Some(p),
                    codes,
                    since_ms,
                    until_ms,
                    limit: Some(MAX_OBSERVATIONS),
                })
                .await?
        };
        let hits = found.iter().map(resources::observation).collect();
        Ok(Fhir(
            StatusCode::OK,
            searchset(&st, &search_url("Observation", &q), hits),
        ))
    }
    .await;
    audited(
        &st,
        &caller,
        "fhir.observation.search",
        patient.as_ref(),
        None,
        r,
    )
    .await
}

/// `GET /fhir/RiskAssessment?patient=&date=`: the patient's stored NEWS2 scores, oldest
/// first (the newest 1,000).
#[utoipa::path(get, path = "/fhir/RiskAssessment", tag = "fhir", security(("bearer" = [])),
    params(("patient" = String, Query), ("date" = Option<String>, Query)),
    responses((status = 200, body = Object)))]
pub async fn search_risk_assessments(
    State(st): St,
    caller: Caller,
    Query(q): Params,
) -> ApiResult<Fhir> {
    let mut patient = caller.patient.clone();
    let r = async {
        let ps = params(&q, &["patient", "subject", "date"])?;
        let given = one(&ps, "patient")?.or(one(&ps, "subject")?);
        let p = search_patient(&caller, given, true, &mut patient)?.expect("required");
        patient = Some(p.clone());
        let (since_ms, until_ms) = date_bounds(&ps)?;
        let scores = st
            .store()
            .news2_scores(&p, since_ms.unwrap_or(i64::MIN), 1_000)
            .await?;
        let hits = scores
            .iter()
            .filter(|s| until_ms.is_none_or(|u| s.news2.at_ms <= u))
            .map(resources::risk_assessment)
            .collect();
        Ok(Fhir(
            StatusCode::OK,
            searchset(&st, &search_url("RiskAssessment", &q), hits),
        ))
    }
    .await;
    audited(
        &st,
        &caller,
        "fhir.riskassessment.search",
        patient.as_ref(),
        None,
        r,
    )
    .await
}

/// An order a caller may see: staff any, a patient token only its own. Another patient's
/// order is answered 404, as one that does not exist, and audited as `denied` (as
/// `GET /api/orders/{id}`).
async fn visible_order(
    st: &ServerState,
    caller: &Caller,
    action: &'static str,
    id: &str,
) -> ApiResult<(Order, Vec<medkeeper_hospital::Transition>)> {
    let oid: Option<OrderId> = id.parse().ok();
    let r = async {
        let id: OrderId = id
            .parse()
            .map_err(|e: medkeeper_hospital::Error| ApiError::invalid(e.to_string()))?;
        if caller.role != Role::Patient {
            caller.require(Role::STAFF)?;
        }
        let o = st
            .store()
            .order(&id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("{id} not found")))?;
        if caller.role == Role::Patient && caller.patient.as_ref() != Some(&o.patient) {
            return Ok(Err(o));
        }
        let transitions = st.store().transitions(&id).await?;
        Ok(Ok((o, transitions)))
    }
    .await;
    match r {
        Ok(Err(other)) => {
            st.audit(Audit {
                caller,
                action,
                patient: Some(&other.patient),
                order: Some(&other.id),
                outcome: Outcome::Denied,
                detail: "another patient's order".into(),
            })
            .await?;
            Err(ApiError::not_found(format!("{} not found", other.id)))
        }
        Ok(Ok(x)) => Ok(x),
        Err(e) => {
            audited(
                st,
                caller,
                action,
                caller.patient.as_ref(),
                oid.as_ref(),
                Err(e),
            )
            .await
        }
    }
}

/// `GET /fhir/ServiceRequest/{id}`: an order.
#[utoipa::path(get, path = "/fhir/ServiceRequest/{id}", tag = "fhir", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Object)))]
pub async fn service_request(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<Fhir> {
    let action = "fhir.servicerequest.read";
    let (o, _) = visible_order(&st, &caller, action, &id).await?;
    let r = Ok(Fhir(StatusCode::OK, resources::service_request(&o)));
    audited(&st, &caller, action, Some(&o.patient), Some(&o.id), r).await
}

/// `GET /fhir/ServiceRequest?patient=&status=`: orders, oldest first.
#[utoipa::path(get, path = "/fhir/ServiceRequest", tag = "fhir", security(("bearer" = [])),
    params(("patient" = Option<String>, Query), ("status" = Option<String>, Query)),
    responses((status = 200, body = Object)))]
pub async fn search_service_requests(
    State(st): St,
    caller: Caller,
    Query(q): Params,
) -> ApiResult<Fhir> {
    let mut patient = caller.patient.clone();
    let r = async {
        let ps = params(&q, &["patient", "subject", "status"])?;
        let given = one(&ps, "patient")?.or(one(&ps, "subject")?);
        let p = search_patient(&caller, given, false, &mut patient)?;
        patient.clone_from(&p);
        let mut states: Vec<OrderState> = Vec::new();
        match one(&ps, "status")? {
            None => states.extend(OrderState::ALL),
            Some(list) => {
                for s in list.split(',') {
                    let these = resources::states_of_request_status(s).ok_or_else(|| {
                        ApiError::bad_request(format!("status {s:?} is not a request status"))
                    })?;
                    states.extend_from_slice(these);
                }
            }
        }
        let orders = match &p {
            Some(p) => st.store().orders_of(p).await?,
            None => st.store().orders_in(&states).await?,
        };
        let hits = orders
            .iter()
            .filter(|o| states.contains(&o.state))
            .map(resources::service_request)
            .collect();
        Ok(Fhir(
            StatusCode::OK,
            searchset(&st, &search_url("ServiceRequest", &q), hits),
        ))
    }
    .await;
    audited(
        &st,
        &caller,
        "fhir.servicerequest.search",
        patient.as_ref(),
        None,
        r,
    )
    .await
}

/// `GET /fhir/Task/{id}`: an order's exam and its state.
#[utoipa::path(get, path = "/fhir/Task/{id}", tag = "fhir", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, body = Object)))]
pub async fn task(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<Fhir> {
    let action = "fhir.task.read";
    let (o, transitions) = visible_order(&st, &caller, action, &id).await?;
    let r = Ok(Fhir(StatusCode::OK, resources::task(&o, &transitions)));
    audited(&st, &caller, action, Some(&o.patient), Some(&o.id), r).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_prefixes_make_one_range() {
        let ps = [("date", "ge2024-05-01"), ("date", "lt2024-05-03T00:00:00Z")];
        let (s, u) = date_bounds(&ps).unwrap();
        assert_eq!(s, Some(1_714_521_600_000));
        assert_eq!(u, Some(1_714_694_400_000 - 1));
        let (s, u) = date_bounds(&[("date", "2024-05-01")]).unwrap();
        assert_eq!((s, u), (Some(1_714_521_600_000), Some(1_714_607_999_999)));
        assert!(date_bounds(&[("date", "ne2024-05-01")]).is_err());
        assert!(date_bounds(&[("date", "yesterday")]).is_err());
    }
}
