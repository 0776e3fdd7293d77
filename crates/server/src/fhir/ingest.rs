//! Vital signs in over FHIR: `POST /fhir/Observation` and `POST /fhir` (a `transaction`
//! Bundle of Observations), each one [`Hospital::ingest`] call — all or nothing.
//!
//! # What is accepted (docs/api.md, *FHIR R4*)
//! An Observation whose `code` has a LOINC coding of a vital sign
//! ([`VitalCode::from_loinc`]: 9279-1, 8867-4, 59408-5, 2708-6, 8310-5, 8480-6, 3151-8,
//! 3150-0, 67775-7) — or the blood pressure panel 85354-9, whose systolic component (8480-6)
//! is taken —, `status` `final`, `amended`, `corrected` or `preliminary`, an
//! `effectiveDateTime` with a time and zone (RFC 3339), a value (`valueQuantity` with a UCUM
//! `code` or a `unit`; for 67775-7 a `valueCodeableConcept` or `valueString` of A/C/V/P/U or
//! their words; for 3151-8/3150-0 also `valueBoolean`), and a subject: `Patient/<id>` or an
//! identifier `{system, value}` mapped with `POST /api/patients/{id}/identifiers`. The source
//! (part of the duplicate key) is `device.reference`, else `meta.source`, else the token's id.
//!
//! A Bundle carries one patient's observations (its audit record names that patient).
//!
//! [`Hospital::ingest`]: medkeeper_hospital::orders::Hospital::ingest

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use medkeeper_hospital::Actor;
use medkeeper_hospital::PatientId;
use medkeeper_hospital::model::now_ms;
use medkeeper_hospital::store::{ClinicalStore, RawMessage};
use medkeeper_hospital::vitals::{Observation, RawObservation, RawValue, Revision, VitalCode};
use serde_json::{Value, json};

use super::resources::{self, LOINC, UCUM};
use super::{ApiResult, Fhir, audited, detached};
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::state::{Audit, Outcome, ServerState};

/// Who may send vital signs: the staff who record them.
pub const INGEST_ROLES: &[Role] = &[Role::Admin, Role::Doctor, Role::Nurse];

/// The LOINC code of the blood pressure panel, whose systolic component is taken.
pub const BP_PANEL: &str = "85354-9";

/// Whose observation: a patient id, or an identifier to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Subject {
    Id(PatientId),
    Identifier(String, String),
}

/// One Observation read, its patient not yet resolved.
#[derive(Debug, Clone)]
struct Parsed {
    subject: Subject,
    code: VitalCode,
    sent_code: String,
    value: RawValue,
    effective_ms: i64,
    source: String,
    revision: Revision,
}

/// Checks the content type and parses the body as a JSON object.
fn json_body(headers: &HeaderMap, body: &Bytes) -> ApiResult<Value> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim();
    if !essence.eq_ignore_ascii_case("application/fhir+json")
        && !essence.eq_ignore_ascii_case("application/json")
    {
        return Err(ApiError::new(
            crate::error::ErrorCode::UnsupportedMediaType,
            "send FHIR JSON: Content-Type: application/fhir+json (or application/json)",
        ));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    Ok(v)
}

/// An RFC 3339 date-time (with seconds and a zone) as ms since the epoch.
pub fn parse_date_time(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

fn invalid(at: &str, m: impl std::fmt::Display) -> ApiError {
    ApiError::invalid(format!("{at}: {m}"))
}

/// The vital sign a `code` CodeableConcept names: its LOINC coding of a vital sign, or the
/// blood pressure panel. Codings of other systems are ignored; a LOINC code that is not a
/// vital sign medkeeper scores is refused.
fn vital_coding(code: &Value, at: &str) -> ApiResult<String> {
    let codings = code["coding"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let loinc: Vec<&str> = codings
        .iter()
        .filter(|c| c["system"].as_str() == Some(LOINC))
        .filter_map(|c| c["code"].as_str())
        .collect();
    if let Some(c) = loinc
        .iter()
        .find(|c| VitalCode::from_loinc(c).is_some() || **c == BP_PANEL)
    {
        return Ok((*c).to_string());
    }
    match loinc.first() {
        Some(c) => Err(invalid(
            at,
            format!(
                "LOINC {c} is not a vital sign medkeeper takes (9279-1, 8867-4, 59408-5, 2708-6, \
                 8310-5, 8480-6, 85354-9, 3151-8, 3150-0, 67775-7)"
            ),
        )),
        None => Err(invalid(
            at,
            "code: no LOINC coding (system http://loinc.org) of a vital sign",
        )),
    }
}

/// The value of an Observation (or a component) for `code`.
fn value_of(o: &Value, code: VitalCode, at: &str) -> ApiResult<RawValue> {
    if let Some(q) = o.get("valueQuantity") {
        let Some(v) = q["value"].as_f64() else {
            return Err(invalid(at, "valueQuantity.value: a number is required"));
        };
        // The UCUM code if the quantity is UCUM-coded, else the unit as written.
        let unit = match (q["system"].as_str(), q["code"].as_str(), q["unit"].as_str()) {
            (Some(UCUM), Some(c), _) => c,
            (None, Some(c), None) => c,
            (_, _, Some(u)) => u,
            (_, Some(c), None) => c,
            (_, None, None) => "",
        };
        return Ok(RawValue::Quantity(v, unit.to_string()));
    }
    if let Some(cc) = o.get("valueCodeableConcept") {
        let codings = cc["coding"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let text = codings
            .iter()
            .flat_map(|c| [c["code"].as_str(), c["display"].as_str()])
            .flatten()
            .chain(cc["text"].as_str())
            .find(|t| {
                code != VitalCode::Consciousness
                    || medkeeper_hospital::news2::Acvpu::parse(t).is_some()
            })
            .or_else(|| cc["text"].as_str())
            .ok_or_else(|| invalid(at, "valueCodeableConcept: no code, display or text"))?;
        return Ok(RawValue::Text(text.to_string()));
    }
    if let Some(s) = o.get("valueString").and_then(Value::as_str) {
        return Ok(RawValue::Text(s.to_string()));
    }
    if let Some(b) = o.get("valueBoolean").and_then(Value::as_bool) {
        return Ok(RawValue::Bool(b));
    }
    Err(invalid(
        at,
        "no value (valueQuantity, valueCodeableConcept, valueString or valueBoolean)",
    ))
}

/// Reads one Observation resource.
fn parse_observation(o: &Value, at: &str, token: &str) -> ApiResult<Parsed> {
    if o["resourceType"].as_str() != Some("Observation") {
        return Err(invalid(at, "resourceType must be Observation"));
    }
    let revision = match o["status"].as_str() {
        Some("final" | "preliminary") => Revision::Original,
        // A correction replaces the value stored for its patient, source, code and time.
        Some("amended" | "corrected") => Revision::Correction,
        Some(s) => {
            return Err(invalid(
                at,
                format!(
                    "status {s:?}: only final, amended, corrected or preliminary values are taken"
                ),
            ));
        }
        None => return Err(invalid(at, "status is required")),
    };
    let sent = vital_coding(&o["code"], at)?;
    // The panel: take its systolic component.
    let (code, sent, holder) = if sent == BP_PANEL {
        let comp = o["component"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| vital_coding(&c["code"], at).is_ok_and(|s| s == "8480-6"))
            .ok_or_else(|| {
                invalid(
                    at,
                    "blood pressure panel 85354-9 without a systolic component (8480-6)",
                )
            })?;
        (VitalCode::SystolicBp, "8480-6".to_string(), comp)
    } else {
        let code = VitalCode::from_loinc(&sent).expect("checked by vital_coding");
        (code, sent, o)
    };
    let value = value_of(holder, code, at)?;
    let effective = o["effectiveDateTime"]
        .as_str()
        .ok_or_else(|| invalid(at, "effectiveDateTime is required"))?;
    let effective_ms = parse_date_time(effective).ok_or_else(|| {
        invalid(
            at,
            format!(
                "effectiveDateTime {effective:?}: an RFC 3339 date-time with seconds and a zone, \
                 e.g. 2024-05-01T10:30:00Z"
            ),
        )
    })?;
    let subject = &o["subject"];
    let subject = if let Some(r) = subject["reference"].as_str() {
        let id = r
            .strip_prefix("Patient/")
            .or_else(|| r.rsplit_once("/Patient/").map(|(_, id)| id))
            .ok_or_else(|| {
                invalid(
                    at,
                    format!("subject.reference {r:?}: expected Patient/<id>"),
                )
            })?;
        Subject::Id(
            id.parse()
                .map_err(|e: medkeeper_hospital::Error| invalid(at, e))?,
        )
    } else if let (Some(system), Some(value)) = (
        subject["identifier"]["system"].as_str(),
        subject["identifier"]["value"].as_str(),
    ) {
        // No identifier holds a control character; NUL would not even reach a PostgreSQL
        // store's look-up.
        if system.chars().chain(value.chars()).any(char::is_control) {
            return Err(invalid(
                at,
                "subject.identifier: control characters (such as NUL) are not taken",
            ));
        }
        Subject::Identifier(system.to_string(), value.to_string())
    } else {
        return Err(invalid(
            at,
            "subject: a reference Patient/<id> or an identifier {system, value} is required",
        ));
    };
    let source = o["device"]["reference"]
        .as_str()
        .or_else(|| o["meta"]["source"].as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or(token);
    if source.len() > 200 || source.chars().any(char::is_control) {
        return Err(invalid(
            at,
            "the source: at most 200 bytes, no control characters",
        ));
    }
    Ok(Parsed {
        subject,
        code,
        sent_code: format!("loinc:{sent}"),
        value,
        effective_ms,
        source: source.to_string(),
        revision,
    })
}

/// The Observations of a body: the resource itself, or a transaction Bundle's entries.
fn observations_of(body: &Value, bundle: bool, token: &str) -> ApiResult<Vec<Parsed>> {
    if !bundle {
        return Ok(vec![parse_observation(body, "Observation", token)?]);
    }
    if body["resourceType"].as_str() != Some("Bundle") {
        return Err(ApiError::invalid(
            "POST /fhir takes a Bundle of type transaction",
        ));
    }
    if body["type"].as_str() != Some("transaction") {
        return Err(ApiError::invalid(format!(
            "Bundle type {}: only transaction is supported",
            body["type"]
        )));
    }
    let entries = body["entry"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if entries.is_empty() {
        return Err(ApiError::invalid("the Bundle has no entries"));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let at = format!("entry {}", i + 1);
            if let Some(req) = e.get("request") {
                let url = req["url"].as_str().unwrap_or("");
                if req["method"].as_str() != Some("POST")
                    || url.trim_end_matches('/') != "Observation"
                {
                    return Err(invalid(
                        &at,
                        "only POST Observation entries are supported in a transaction",
                    ));
                }
            }
            parse_observation(&e["resource"], &at, token)
        })
        .collect()
}

/// Resolves the subjects: identifiers are looked up (404 if unmapped).
async fn resolve(store: &dyn ClinicalStore, parsed: &[Parsed]) -> ApiResult<Vec<PatientId>> {
    let mut out = Vec::with_capacity(parsed.len());
    for p in parsed {
        out.push(match &p.subject {
            Subject::Id(id) => id.clone(),
            Subject::Identifier(system, value) => store
                .patient_by_identifier(system, value)
                .await?
                .ok_or_else(|| {
                    ApiError::not_found(format!(
                        "no patient has the identifier {system}|{value} (map it with POST \
                         /api/patients/{{id}}/identifiers)"
                    ))
                })?,
        });
    }
    Ok(out)
}

/// `POST /fhir/Observation`: one vital-sign Observation. 201 with the Observation as stored
/// (new, or a correction that replaced the stored value), 200 with the one stored before if
/// it was a duplicate (same patient, source, code, effective time and value), 409 if it has
/// another value than the one stored under its key and is not a correction (status
/// `corrected` or `amended`).
#[utoipa::path(post, path = "/fhir/Observation", tag = "fhir", security(("bearer" = [])),
    request_body(content = Object, content_type = "application/fhir+json"),
    responses((status = 201, body = Object), (status = 422, body = Object)))]
pub async fn create_observation(
    State(st): State<Arc<ServerState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    ingest(st, caller, headers, body, false).await
}

/// `POST /fhir`: a transaction Bundle of vital-sign Observations, stored all or nothing; 200
/// with a `transaction-response` Bundle (each entry's status `201 Created`, or `200 OK` for a
/// duplicate); one entry refused refuses the whole Bundle (422, 409 for another value under a
/// stored key that is not a correction) with an OperationOutcome naming the entry.
#[utoipa::path(post, path = "/fhir", tag = "fhir", security(("bearer" = [])),
    request_body(content = Object, content_type = "application/fhir+json"),
    responses((status = 200, body = Object), (status = 422, body = Object)))]
pub async fn transaction(
    State(st): State<Arc<ServerState>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    ingest(st, caller, headers, body, true).await
}

async fn ingest(
    st: Arc<ServerState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
    bundle: bool,
) -> ApiResult<Response> {
    let action = if bundle {
        "fhir.transaction"
    } else {
        "fhir.observation.create"
    };
    detached(async move {
        // Before anything is read: who may send, and what the body is.
        let pre = async {
            caller.require(INGEST_ROLES)?;
            let value = json_body(&headers, &body)?;
            let parsed = observations_of(&value, bundle, &caller.token)?;
            let patients = resolve(st.store().as_ref(), &parsed).await?;
            let first = patients[0].clone();
            if patients.iter().any(|p| *p != first) {
                return Err(ApiError::invalid(
                    "a Bundle carries one patient's observations; send one per patient",
                ));
            }
            Ok((parsed, first))
        }
        .await;
        let (parsed, patient) = match pre {
            Ok(x) => x,
            Err(e) => return audited(&st, &caller, action, None, None, Err(e)).await,
        };
        let record = ServerState::audit_record(Audit {
            caller: &caller,
            action,
            patient: Some(&patient),
            order: None,
            outcome: Outcome::Ok,
            detail: match parsed
                .iter()
                .filter(|p| p.revision == Revision::Correction)
                .count()
            {
                0 => format!("{} observation(s)", parsed.len()),
                c => format!(
                    "{} observation(s), {c} sent as a correction (corrected or amended)",
                    parsed.len()
                ),
            },
        });
        let who = Actor::audited(format!("{}:{}", caller.role, caller.token), record);
        let received_ms = now_ms();
        let raw: Vec<RawObservation> = parsed
            .iter()
            .map(|p| RawObservation {
                patient: patient.clone(),
                code: p.code,
                sent_code: p.sent_code.clone(),
                value: p.value.clone(),
                effective_ms: p.effective_ms,
                source: p.source.clone(),
                revision: p.revision,
            })
            .collect();
        let message = RawMessage {
            format: "fhir".into(),
            source: caller.token.clone(),
            received_ms,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        let r: ApiResult<Vec<Observation>> = async {
            let h = st.hospital()?;
            let done = match h.ingest(&raw, &message, who.clone()).await {
                Err(medkeeper_hospital::Error::ConflictingValue(why)) => {
                    // "observation n" is the Bundle's entry n (or the one Observation).
                    let why = match why.split_once(": ") {
                        Some((n, rest)) if bundle => {
                            format!("{}: {rest}", n.replacen("observation", "entry", 1))
                        }
                        Some((_, rest)) => rest.to_string(),
                        None => why,
                    };
                    return Err(ApiError::conflict(format!(
                        "{why}; nothing stored: a correction of a stored value needs status \
                         corrected or amended"
                    )));
                }
                r => r?,
            };
            Ok(done.observations)
        }
        .await;
        let written = who.audit_written();
        let stored = if written {
            // The change is stored with its record; a failure after it gets its own.
            if let Err(e) = &r {
                st.audit(Audit {
                    caller: &caller,
                    action,
                    patient: Some(&patient),
                    order: None,
                    outcome: Outcome::Failed(e.code),
                    detail: format!("after the change was recorded: {}", e.message),
                })
                .await?;
            }
            r?
        } else {
            audited(&st, &caller, action, Some(&patient), None, r).await?
        };
        Ok(answer(&stored, received_ms, bundle))
    })
    .await
}

/// Written by this message: new, or a correction that replaced the value (a duplicate keeps
/// the time it first arrived).
fn is_new(o: &Observation, received_ms: i64) -> bool {
    o.received_ms == received_ms
}

fn answer(stored: &[Observation], received_ms: i64, bundle: bool) -> Response {
    if !bundle {
        let o = &stored[0];
        let status = if is_new(o, received_ms) {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        let mut r = Fhir(status, resources::observation(o)).into_response();
        if let Ok(v) = format!("Observation/{}", o.id).parse() {
            r.headers_mut().insert(header::LOCATION, v);
        }
        return r;
    }
    let entry: Vec<Value> = stored
        .iter()
        .map(|o| {
            json!({
                "resource": resources::observation(o),
                "response": {
                    "status": if is_new(o, received_ms) { "201 Created" } else { "200 OK" },
                    "location": format!("Observation/{}", o.id),
                    "lastModified": resources::instant(o.received_ms),
                },
            })
        })
        .collect();
    Fhir(
        StatusCode::OK,
        json!({"resourceType": "Bundle", "type": "transaction-response", "entry": entry}),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(code: &str, value: Value) -> Value {
        let mut o = json!({
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code}]},
            "subject": {"reference": "Patient/p-1"},
            "effectiveDateTime": "2024-05-01T10:30:00+02:00",
        });
        for (k, v) in value.as_object().unwrap() {
            o[k] = v.clone();
        }
        o
    }

    #[test]
    fn reads_quantities_panels_and_consciousness() {
        let p = parse_observation(
            &obs(
                "8310-5",
                json!({"valueQuantity": {"value": 100.4, "system": UCUM, "code": "[degF]"}}),
            ),
            "x",
            "t-1",
        )
        .unwrap();
        assert_eq!(p.code, VitalCode::Temperature);
        assert_eq!(p.value, RawValue::Quantity(100.4, "[degF]".into()));
        assert_eq!(p.effective_ms, 1_714_552_200_000);
        assert_eq!(p.source, "t-1");
        let panel = obs(
            BP_PANEL,
            json!({"component": [
                {"code": {"coding": [{"system": LOINC, "code": "8462-4"}]},
                 "valueQuantity": {"value": 80, "unit": "mmHg"}},
                {"code": {"coding": [{"system": LOINC, "code": "8480-6"}]},
                 "valueQuantity": {"value": 16, "system": UCUM, "code": "kPa"}},
            ], "device": {"reference": "Device/m-1"}}),
        );
        let p = parse_observation(&panel, "x", "t-1").unwrap();
        assert_eq!(p.code, VitalCode::SystolicBp);
        assert_eq!(p.value, RawValue::Quantity(16.0, "kPa".into()));
        assert_eq!(p.source, "Device/m-1");
        let c = obs(
            "67775-7",
            json!({"valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct",
                "code": "248234008", "display": "Mentally alert"}], "text": "voice"}}),
        );
        assert_eq!(
            parse_observation(&c, "x", "t").unwrap().value,
            RawValue::Text("voice".into())
        );
        let e = parse_observation(&obs("2339-0", json!({})), "x", "t").unwrap_err();
        assert!(e.message.contains("not a vital sign"), "{e}");
        let mut no_time = obs("8867-4", json!({"valueQuantity": {"value": 70}}));
        no_time["effectiveDateTime"] = json!("2024-05-01");
        assert!(parse_observation(&no_time, "x", "t").is_err());
    }
}
