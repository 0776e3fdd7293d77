//! FHIR R4 resources built from the clinical store's records. Pure functions of the records:
//! every resource here validates against FHIR R4 (crates/server/tests/fhir.rs checks each with
//! a real validator, `scripts/fhir-validator`).
//!
//! FHIR JSON has no empty arrays, objects or strings and no nulls: the builders write what
//! they have and [`prune`] drops what is empty before a resource is answered.

use axum::http::StatusCode;
use medkeeper_hospital::news2::{Acvpu, Parameter, Risk};
use medkeeper_hospital::store::{News2Record, Patient};
use medkeeper_hospital::vitals::{Observation, VitalCode};
use medkeeper_hospital::{Order, OrderState, PatientId, Pool, Transition};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// LOINC's system URI.
pub const LOINC: &str = "http://loinc.org";
/// UCUM's system URI.
pub const UCUM: &str = "http://unitsofmeasure.org";
/// The observation category code system.
const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
/// The v3 observation interpretation code system (the artefact flag: `IND`, indeterminate).
pub const INTERPRETATION: &str =
    "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
/// The qualitative risk code system of RiskAssessment.
const RISK_PROBABILITY: &str = "http://terminology.hl7.org/CodeSystem/risk-probability";
/// The extension carrying a NEWS2 aggregate score on a RiskAssessment (`valueInteger`).
pub const NEWS2_AGGREGATE_EXTENSION: &str = "urn:medkeeper:fhir:news2-aggregate";
/// The extension carrying the NEWS2 clinical risk exactly (`valueCode`: low, low-medium,
/// medium, high), which risk-probability has no codes for.
pub const NEWS2_RISK_EXTENSION: &str = "urn:medkeeper:fhir:news2-risk";
/// What every NEWS2 answer says about itself.
pub const DECISION_SUPPORT: &str = "decision support, not a diagnosis";

/// Drops nulls, empty strings, empty arrays and empty objects, recursively (FHIR JSON allows
/// none of them).
pub fn prune(v: Value) -> Value {
    fn empty(v: &Value) -> bool {
        match v {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        }
    }
    match v {
        Value::Array(a) => Value::Array(a.into_iter().map(prune).filter(|x| !empty(x)).collect()),
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| (k, prune(v)))
                .filter(|(_, v)| !empty(v))
                .collect(),
        ),
        other => other,
    }
}

/// An instant (ms since the epoch) as a FHIR `instant`/`dateTime`: RFC 3339 in UTC with
/// milliseconds. The calendar is the `time` crate's; only the zero-padding is written here
/// (the server's `time` has no formatting feature).
pub fn instant(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// `Patient/<id>`.
pub fn patient_ref(p: &PatientId) -> Value {
    json!({"reference": format!("Patient/{p}")})
}

/// A Patient: demographics (name as text, birth date) and the identifiers known to be its.
pub fn patient(p: &Patient, identifiers: &[(String, String)]) -> Value {
    json!({
        "resourceType": "Patient",
        "id": p.id.as_str(),
        "identifier": identifiers
            .iter()
            .map(|(system, value)| json!({"system": system, "value": value}))
            .collect::<Vec<_>>(),
        "name": [{"text": p.name}],
        "birthDate": p.birth_date,
    })
}

/// The display text of an ACVPU level.
fn acvpu_text(a: Acvpu) -> &'static str {
    match a {
        Acvpu::A => "A: alert",
        Acvpu::C => "C: new confusion",
        Acvpu::V => "V: responds to voice",
        Acvpu::P => "P: responds to pain",
        Acvpu::U => "U: unresponsive",
    }
}

/// An Observation as stored: the normalised value in UCUM (consciousness as a coded ACVPU
/// text, supplemental oxygen as a boolean), status `final`, category `vital-signs`; a value
/// taken for a sensor artefact carries `interpretation` `IND` (indeterminate) with the reason
/// as its text.
pub fn observation(o: &Observation) -> Value {
    let (code, display) = o.code.loinc();
    let mut r = json!({
        "resourceType": "Observation",
        "id": o.id,
        "status": "final",
        "category": [{"coding": [{
            "system": OBSERVATION_CATEGORY, "code": "vital-signs", "display": "Vital Signs"
        }]}],
        "code": {
            "coding": [{"system": LOINC, "code": code, "display": display}],
            "text": display,
        },
        "subject": patient_ref(&o.patient),
        "effectiveDateTime": instant(o.effective_ms),
        "issued": instant(o.received_ms),
        "device": {"display": o.source},
    });
    match o.code {
        VitalCode::Consciousness => {
            let text = Acvpu::from_code(o.value as u8).map_or("unknown", acvpu_text);
            r["valueCodeableConcept"] = json!({"text": text});
        }
        VitalCode::InhaledOxygen => {
            r["code"]["text"] = json!("Supplemental oxygen (true: on oxygen, false: on air)");
            r["valueBoolean"] = json!(o.value >= 0.5);
        }
        c => {
            r["valueQuantity"] = json!({
                "value": o.value, "unit": c.unit(), "system": UCUM, "code": c.unit()
            });
        }
    }
    if let Some(why) = &o.artefact {
        r["interpretation"] = json!([{
            "coding": [{"system": INTERPRETATION, "code": "IND", "display": "Indeterminate"}],
            "text": format!("suspected sensor artefact, not scored: {why}"),
        }]);
    }
    r
}

/// The FHIR risk-probability code nearest a NEWS2 risk (it has no low–medium or medium).
fn risk_probability(r: Risk) -> (&'static str, &'static str) {
    match r {
        Risk::Low => ("low", "Low likelihood"),
        Risk::LowMedium | Risk::Medium => ("moderate", "Moderate likelihood"),
        Risk::High => ("high", "High likelihood"),
    }
}

/// The name of a NEWS2 parameter.
pub fn parameter_name(p: Parameter) -> &'static str {
    match p {
        Parameter::RespirationRate => "respiration_rate",
        Parameter::Spo2 => "spo2",
        Parameter::AirOrOxygen => "air_or_oxygen",
        Parameter::SystolicBp => "systolic_bp",
        Parameter::Pulse => "pulse",
        Parameter::Consciousness => "consciousness",
        Parameter::Temperature => "temperature",
    }
}

/// A RiskAssessment's id: `n2-` and 32 hex digits of the SHA-256 of the patient and moment
/// (stable: a score recomputed for the same moment keeps its id).
pub fn risk_assessment_id(patient: &PatientId, at_ms: i64) -> String {
    let h = Sha256::digest(format!("{patient}|{at_ms}").as_bytes());
    let hex: String = h[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("n2-{hex}")
}

/// A stored NEWS2 score as a RiskAssessment: method NEWS2 (RCP 2017), the clinical risk as
/// `qualitativeRisk` (risk-probability's nearest code; the exact NEWS2 risk as its text and in
/// an extension), the aggregate in `prediction.rationale` and an extension, the observations
/// used as `basis`, the chart's response and monitoring as `mitigation`, and the note
/// "decision support, not a diagnosis".
pub fn risk_assessment(r: &News2Record) -> Value {
    let n = &r.news2;
    let s = &n.score;
    let (code, display) = risk_probability(s.risk);
    let params: Vec<String> = s
        .parameters
        .iter()
        .map(|(p, v)| format!("{} {v}", parameter_name(*p)))
        .collect();
    let missing: Vec<&str> = s.missing.iter().map(|p| parameter_name(*p)).collect();
    let mut rationale = format!(
        "NEWS2 aggregate {} ({}), clinical risk {}",
        s.aggregate,
        params.join(", "),
        s.risk
    );
    if !missing.is_empty() {
        rationale.push_str(&format!(
            "; incomplete, missing or stale: {} (the risk is a lower bound)",
            missing.join(", ")
        ));
    }
    json!({
        "resourceType": "RiskAssessment",
        "id": risk_assessment_id(&n.patient, n.at_ms),
        "extension": [
            {"url": NEWS2_AGGREGATE_EXTENSION, "valueInteger": s.aggregate},
            {"url": NEWS2_RISK_EXTENSION, "valueCode": s.risk.as_str()},
        ],
        "status": "final",
        "method": {"text": "NEWS2 (RCP 2017)"},
        "subject": patient_ref(&n.patient),
        "occurrenceDateTime": instant(n.at_ms),
        "basis": n.basis.iter().map(|id| json!({"reference": format!("Observation/{id}")}))
            .collect::<Vec<_>>(),
        "prediction": [{
            "outcome": {"text": "clinical deterioration"},
            "qualitativeRisk": {
                "coding": [{"system": RISK_PROBABILITY, "code": code, "display": display}],
                "text": s.risk.as_str(),
            },
            "rationale": rationale,
        }],
        "mitigation": format!(
            "{}; monitoring: {}",
            s.risk.response(s.aggregate),
            s.risk.monitoring(s.aggregate)
        ),
        "note": [{"text": format!("NEWS2 is {DECISION_SUPPORT}.")}],
    })
}

/// The FHIR request status of an order (`request-status`): waiting, called or in progress is
/// `active`; completed or reported `completed`; cancelled or a no-show `revoked`.
pub fn request_status(s: OrderState) -> &'static str {
    match s {
        OrderState::Queued | OrderState::Called | OrderState::InProgress => "active",
        OrderState::Completed | OrderState::Reported => "completed",
        OrderState::Cancelled | OrderState::NoShow => "revoked",
    }
}

/// The FHIR task status of an exam (`task-status`): queued `ready`, called `accepted`, in
/// progress `in-progress`, completed and reported `completed`, cancelled `cancelled`, a
/// no-show `failed`.
pub fn task_status(s: OrderState) -> &'static str {
    match s {
        OrderState::Queued => "ready",
        OrderState::Called => "accepted",
        OrderState::InProgress => "in-progress",
        OrderState::Completed | OrderState::Reported => "completed",
        OrderState::Cancelled => "cancelled",
        OrderState::NoShow => "failed",
    }
}

/// The order states a ServiceRequest status search means.
pub fn states_of_request_status(status: &str) -> Option<&'static [OrderState]> {
    Some(match status {
        "active" => &[
            OrderState::Queued,
            OrderState::Called,
            OrderState::InProgress,
        ],
        "completed" => &[OrderState::Completed, OrderState::Reported],
        "revoked" => &[OrderState::Cancelled, OrderState::NoShow],
        // Statuses medkeeper never gives an order.
        "draft" | "on-hold" | "entered-in-error" | "unknown" => &[],
        _ => return None,
    })
}

fn pool_text(p: &Pool) -> String {
    match p {
        Pool::Equipment(k) => format!("{k} exam"),
        Pool::Department(d) => format!("{d} consultation"),
    }
}

/// An order as a ServiceRequest: status by [`request_status`], intent `order`, the priority
/// as ordered (medkeeper's priorities are FHIR's), the pool as the code's text, the
/// capabilities as `orderDetail`, the clinical reason as `reasonCode` text.
pub fn service_request(o: &Order) -> Value {
    json!({
        "resourceType": "ServiceRequest",
        "id": o.id.as_str(),
        "status": request_status(o.state),
        "intent": "order",
        "priority": o.priority.code(),
        "code": {"text": pool_text(&o.pool)},
        "orderDetail": o.capabilities.iter().map(|c| json!({"text": c})).collect::<Vec<_>>(),
        "subject": patient_ref(&o.patient),
        "authoredOn": instant(o.created_ms),
        "performerType": {"text": o.pool.to_string()},
        "reasonCode": [{"text": o.reason}],
    })
}

/// An exam (an order's execution) as a Task: status by [`task_status`], medkeeper's own
/// state as `businessStatus`, the unit or doctor as `owner`, the exam's start and end (from
/// the transitions) as `executionPeriod`.
pub fn task(o: &Order, transitions: &[Transition]) -> Value {
    let at = |s: OrderState| {
        transitions
            .iter()
            .rev()
            .find(|t| t.to == s)
            .map(|t| instant(t.at_ms))
    };
    let business = match o.state {
        OrderState::Reported => "reported: results ready".to_string(),
        s => s.code().to_string(),
    };
    json!({
        "resourceType": "Task",
        "id": o.id.as_str(),
        "basedOn": [{"reference": format!("ServiceRequest/{}", o.id)}],
        "status": task_status(o.state),
        "businessStatus": {"text": business},
        "intent": "order",
        "priority": o.priority.code(),
        "code": {"text": pool_text(&o.pool)},
        "focus": {"reference": format!("ServiceRequest/{}", o.id)},
        "for": patient_ref(&o.patient),
        "executionPeriod": {
            "start": at(OrderState::InProgress),
            "end": at(OrderState::Completed),
        },
        "authoredOn": instant(o.created_ms),
        "lastModified": instant(o.updated_ms),
        "owner": o.assigned.as_ref().map(|u| json!({"display": u})),
    })
}

/// An OperationOutcome for an error answered with `status`: one issue, severity `error`
/// (`fatal` for a 5xx), the issue type of medkeeper's `code`, the code itself in
/// `details.coding` and the message as `details.text` and `diagnostics`.
pub fn operation_outcome(status: StatusCode, code: &str, message: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{
            "severity": if status.is_server_error() { "fatal" } else { "error" },
            "code": super::issue_type(code),
            "details": {
                "coding": [{"system": super::ERROR_CODE_SYSTEM, "code": code}],
                "text": message,
            },
            "diagnostics": message,
        }],
    })
}

/// A search parameter: name, FHIR type, documentation.
pub type SearchParam = (&'static str, &'static str, &'static str);

/// The search parameters each resource type supports, as the CapabilityStatement lists them.
pub const SEARCH_PARAMS: &[(&str, &[SearchParam])] = &[
    (
        "Patient",
        &[(
            "identifier",
            "token",
            "system|value: the patient an identifier (an MRN) is mapped to",
        )],
    ),
    (
        "Observation",
        &[
            (
                "patient",
                "reference",
                "required (a patient token: its own patient)",
            ),
            (
                "code",
                "token",
                "LOINC codes, comma-separated, with or without http://loinc.org|",
            ),
            (
                "date",
                "date",
                "effective time; prefixes eq, ge, le, gt, lt; repeatable",
            ),
        ],
    ),
    (
        "RiskAssessment",
        &[
            (
                "patient",
                "reference",
                "required: the patient's NEWS2 scores",
            ),
            (
                "date",
                "date",
                "occurrence time; prefixes eq, ge, le, gt, lt",
            ),
        ],
    ),
    (
        "ServiceRequest",
        &[
            (
                "patient",
                "reference",
                "the patient's orders (required for a patient token)",
            ),
            ("status", "token", "active, completed, revoked"),
        ],
    ),
];

/// The CapabilityStatement: exactly what this server supports.
pub fn capability_statement(base: &str, date_ms: i64) -> Value {
    let interactions = |rt: &str| -> Vec<&'static str> {
        match rt {
            "Patient" | "ServiceRequest" => vec!["read", "search-type"],
            "Observation" => vec!["read", "search-type", "create"],
            "RiskAssessment" => vec!["search-type"],
            "Task" => vec!["read"],
            _ => vec![],
        }
    };
    let resources: Vec<Value> = [
        "Patient",
        "Observation",
        "RiskAssessment",
        "ServiceRequest",
        "Task",
    ]
    .into_iter()
    .map(|rt| {
        let params = SEARCH_PARAMS
            .iter()
            .find(|(t, _)| *t == rt)
            .map(|(_, ps)| {
                ps.iter()
                    .map(|(name, ty, doc)| json!({"name": name, "type": ty, "documentation": doc}))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        let doc = match rt {
            "Observation" => {
                "Vital signs by LOINC (9279-1, 8867-4, 59408-5, 2708-6, 8310-5, 8480-6 or the \
                     85354-9 panel's systolic component, 3151-8, 3150-0, 67775-7), normalised to \
                     UCUM units; a suspected artefact carries interpretation IND"
            }
            "RiskAssessment" => "NEWS2 scores (RCP 2017): decision support, not a diagnosis",
            "ServiceRequest" => "Orders (exams and consultations)",
            "Task" => "An order's exam and its state",
            _ => "Demographics for staff and the patient's own token",
        };
        json!({
            "type": rt,
            "documentation": doc,
            "interaction": interactions(rt)
                .into_iter()
                .map(|c| json!({"code": c}))
                .collect::<Vec<_>>(),
            "searchParam": params,
        })
    })
    .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": instant(date_ms),
        "publisher": "medkeeper",
        "kind": "instance",
        "software": {"name": "medkeeper", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "medkeeper FHIR R4 facade", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": "JSON only. Every interaction but this one needs a bearer token \
                (Authorization: Bearer mkt_...); roles and patient isolation as in the JSON API \
                (docs/api.md).",
            "security": {
                "cors": false,
                "description": "Bearer tokens issued by medkeeper (POST /api/tokens)",
            },
            "resource": resources,
            "interaction": [{"code": "transaction", "documentation":
                "A Bundle of type transaction whose entries are vital-sign Observations (POST \
                 Observation): stored all or nothing"}],
        }],
    })
}
