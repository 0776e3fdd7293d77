//! The FHIR R4 facade (docs/api.md, *FHIR R4*) and the patient vital-sign routes, in process
//! over real components (the embedded coordination engine, the demo hospital, a SQLite
//! clinical store, the axum router on a loopback port), driven by a blocking HTTP client.
//!
//! Every resource the server answers is written to a file and checked at the end by a real
//! FHIR R4 validator (`scripts/fhir-validator`: PyPI fhir.resources 6.1.0, R4 4.0.1), after
//! checking that the validator refuses a broken resource. Without the script the validation
//! is skipped with a message (everything else still runs).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use medkeeper_coord::Session;
use medkeeper_embedded::{Engine, EngineConfig, SessionOptions};
use medkeeper_hospital::PatientId;
use medkeeper_hospital::config::{self, HospitalConfig};
use medkeeper_hospital::model::now_ms;
use medkeeper_hospital::orders::{Hospital, NewOrder};
use medkeeper_hospital::store::{
    AuditQuery, ClinicalStore, ObservationQuery, Patient, SqliteStore,
};
use medkeeper_hospital::{OrderState, Pool, Priority};
use medkeeper_server::{Limits, MemberInfo, Role, ServerState, issue_token};
use serde_json::{Value, json};

struct Server {
    base: String,
    agent: ureq::Agent,
    store: Arc<dyn ClinicalStore>,
    hospital: Arc<Hospital>,
    _engine: Engine,
    _dir: tempfile::TempDir,
}

#[derive(Debug)]
struct Resp {
    status: u16,
    content_type: String,
    json: Value,
    text: String,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = EngineConfig::new(dir.path().join("coord"));
        cfg.segment_size = 4 * 1024 * 1024;
        let engine = Engine::open(cfg).unwrap();
        let session: Arc<dyn Session> = Arc::new(
            engine
                .connect(SessionOptions {
                    timeout: Duration::from_secs(10),
                })
                .await,
        );
        let hospital_config = HospitalConfig::demo();
        config::load(session.as_ref(), &hospital_config)
            .await
            .unwrap();
        let store: Arc<dyn ClinicalStore> =
            Arc::new(SqliteStore::open(dir.path().join("clinical.sqlite")).unwrap());
        let hospital = Arc::new(Hospital::new(session, store.clone(), hospital_config).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = ServerState::new(
            MemberInfo {
                id: "fhir-test".into(),
                url: format!("{base}/"),
                started_ms: now_ms(),
            },
            store.clone(),
            Limits::default(),
        );
        state.set_hospital(Some(hospital.clone()));
        let app = medkeeper_server::router(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(20)))
                .build(),
        );
        Server {
            base,
            agent,
            store,
            hospital,
            _engine: engine,
            _dir: dir,
        }
    }

    async fn token(&self, role: Role, patient: Option<&PatientId>) -> String {
        issue_token(self.store.as_ref(), role, patient.cloned(), "fhir test")
            .await
            .unwrap()
            .1
    }

    async fn patient(&self, name: &str) -> PatientId {
        let id = PatientId::generate();
        self.store
            .upsert_patient(&Patient {
                id: id.clone(),
                name: name.into(),
                birth_date: Some("1950-03-04".into()),
            })
            .await
            .unwrap();
        id
    }

    /// A request; `body` is sent as `content_type` when given.
    async fn req(
        &self,
        method: &'static str,
        path: &str,
        token: Option<&str>,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Resp {
        let agent = self.agent.clone();
        let url = format!("{}{path}", self.base);
        let auth = token.map(|t| format!("Bearer {t}"));
        tokio::task::spawn_blocking(move || {
            let mut b = ureq::http::Request::builder().method(method).uri(&url);
            if let Some(a) = &auth {
                b = b.header("authorization", a);
            }
            let result = match body {
                Some((ct, bytes)) => agent.run(b.header("content-type", ct).body(bytes).unwrap()),
                None if method == "GET" => agent.run(b.body(()).unwrap()),
                None => agent.run(b.body(Vec::new()).unwrap()),
            };
            let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
            let status = resp.status().as_u16();
            let content_type = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let text = resp.body_mut().read_to_string().unwrap();
            let json = serde_json::from_str(&text).unwrap_or(Value::Null);
            Resp {
                status,
                content_type,
                json,
                text,
            }
        })
        .await
        .unwrap()
    }

    async fn get(&self, path: &str, token: &str) -> Resp {
        self.req("GET", path, Some(token), None).await
    }

    async fn post_fhir(&self, path: &str, token: &str, body: &Value) -> Resp {
        self.req(
            "POST",
            path,
            Some(token),
            Some(("application/fhir+json", serde_json::to_vec(body).unwrap())),
        )
        .await
    }

    async fn json(&self, method: &'static str, path: &str, token: &str, body: Value) -> Resp {
        self.req(
            method,
            path,
            Some(token),
            Some(("application/json", serde_json::to_vec(&body).unwrap())),
        )
        .await
    }
}

/// Resources to validate, written to files as they come.
struct Collected {
    dir: tempfile::TempDir,
    files: Vec<(PathBuf, String)>,
}

impl Collected {
    fn new() -> Collected {
        Collected {
            dir: tempfile::tempdir().unwrap(),
            files: Vec::new(),
        }
    }

    /// Keeps `r`'s body for validation (asserting it is FHIR JSON).
    fn keep(&mut self, what: &str, r: &Resp) {
        assert!(
            r.content_type.starts_with("application/fhir+json"),
            "{what}: content type {:?}: {}",
            r.content_type,
            r.text
        );
        let path = self
            .dir
            .path()
            .join(format!("{:03}.json", self.files.len()));
        std::fs::write(&path, &r.text).unwrap();
        self.files.push((path, what.to_string()));
    }
}

fn validator() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fhir-validator");
    p.exists().then_some(p)
}

/// Runs the validator over `files`; returns each file's line.
fn validate(script: &Path, files: &[PathBuf]) -> (bool, String) {
    let out = std::process::Command::new(script)
        .arg("check")
        .args(files)
        .output()
        .expect("run scripts/fhir-validator");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn loinc(code: &str) -> Value {
    json!({"coding": [{"system": "http://loinc.org", "code": code}]})
}

fn at(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A vital-sign Observation of `patient` at `ms`.
fn vital(patient: &PatientId, code: &str, value: Value, ms: i64) -> Value {
    let mut o = json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system":
            "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": loinc(code),
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": at(ms),
        "device": {"reference": "Device/monitor-7"},
    });
    for (k, v) in value.as_object().unwrap() {
        o[k] = v.clone();
    }
    o
}

fn quantity(v: f64, ucum: &str) -> Value {
    json!({"valueQuantity": {"value": v, "unit": ucum, "system": "http://unitsofmeasure.org",
        "code": ucum}})
}

fn transaction(entries: Vec<Value>) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": entries
            .into_iter()
            .enumerate()
            .map(|(i, r)| json!({
                "fullUrl": format!("urn:uuid:00000000-0000-4000-8000-{i:012}"),
                "resource": r,
                "request": {"method": "POST", "url": "Observation"},
            }))
            .collect::<Vec<_>>(),
    })
}

/// The issue code and medkeeper error code of an OperationOutcome answer.
fn outcome(r: &Resp) -> (String, String) {
    assert_eq!(r.json["resourceType"], "OperationOutcome", "{}", r.text);
    let issue = &r.json["issue"][0];
    (
        issue["code"].as_str().unwrap_or("").to_string(),
        issue["details"]["coding"][0]["code"]
            .as_str()
            .unwrap_or("")
            .to_string(),
    )
}

async fn count_observations(s: &Server, p: &PatientId) -> usize {
    s.store
        .observations(&ObservationQuery {
            patient: Some(p.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fhir_ingestion_views_isolation_and_audit() {
    let started = Instant::now();
    let s = Server::start().await;
    let mut keep = Collected::new();
    let ann = s.patient("Ann Example").await;
    let bob = s.patient("Bob Other").await;
    let admin = s.token(Role::Admin, None).await;
    let nurse = s.token(Role::Nurse, None).await;
    let doctor = s.token(Role::Doctor, None).await;
    let scheduler = s.token(Role::Scheduler, None).await;
    let ann_tok = s.token(Role::Patient, Some(&ann)).await;
    let t0 = now_ms() - 10 * 60 * 1000;

    // An identifier (MRN) for Ann, through the JSON API; mapping it again is 200, to another
    // patient 409.
    let mrn = json!({"system": "urn:oid:1.2.3.4.5", "value": "MRN-0042"});
    let path = format!("/api/patients/{ann}/identifiers");
    assert_eq!(s.json("POST", &path, &nurse, mrn.clone()).await.status, 201);
    assert_eq!(s.json("POST", &path, &nurse, mrn.clone()).await.status, 200);
    let r = s
        .json(
            "POST",
            &format!("/api/patients/{bob}/identifiers"),
            &nurse,
            mrn.clone(),
        )
        .await;
    assert_eq!(
        (r.status, r.json["error"]["code"].as_str()),
        (409, Some("conflict"))
    );

    // 1. One Observation: 100.4 °F stored as 38 °C, in UCUM.
    let temp = vital(&ann, "8310-5", quantity(100.4, "[degF]"), t0);
    let r = s.post_fhir("/fhir/Observation", &nurse, &temp).await;
    assert_eq!(r.status, 201, "{}", r.text);
    keep.keep("created Observation", &r);
    let temp_id = r.json["id"].as_str().unwrap().to_string();
    let v = &r.json["valueQuantity"];
    assert!((v["value"].as_f64().unwrap() - 38.0).abs() < 1e-9, "{v}");
    assert_eq!(
        (v["code"].as_str(), v["system"].as_str()),
        (Some("Cel"), Some("http://unitsofmeasure.org"))
    );
    assert_eq!(r.json["status"], "final");
    // The same again: a duplicate, stored once, answered 200 with the same id.
    let r = s.post_fhir("/fhir/Observation", &nurse, &temp).await;
    assert_eq!(
        (r.status, r.json["id"].as_str()),
        (200, Some(temp_id.as_str())),
        "{}",
        r.text
    );
    assert_eq!(count_observations(&s, &ann).await, 1);
    // `application/json` is taken too; the subject by identifier.
    let mut hr = vital(&ann, "8867-4", quantity(72.0, "/min"), t0 + 1000);
    hr["subject"] = json!({"identifier": mrn});
    let r = s.json("POST", "/fhir/Observation", &nurse, hr).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["subject"]["reference"], format!("Patient/{ann}"));

    // 2. A transaction Bundle, all or nothing: with one impossible value nothing is stored.
    let t1 = t0 + 60_000;
    let mut entries = vec![
        vital(&ann, "9279-1", quantity(18.0, "/min"), t1),
        vital(&ann, "59408-5", quantity(0.97, "1"), t1),
        vital(&ann, "3151-8", quantity(0.0, "L/min"), t1),
        vital(
            &ann,
            "85354-9",
            json!({"component": [
                {"code": loinc("8480-6"), "valueQuantity": {"value": 16, "unit": "kPa",
                    "system": "http://unitsofmeasure.org", "code": "kPa"}},
                {"code": loinc("8462-4"), "valueQuantity": {"value": 80, "unit": "mm[Hg]",
                    "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            ]}),
            t1,
        ),
        vital(
            &ann,
            "67775-7",
            json!({"valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct",
                "code": "248234008", "display": "Alert"}], "text": "A"}}),
            t1,
        ),
        vital(&ann, "8867-4", quantity(300.0, "/min"), t1), // an artefact: stored, not scored
    ];
    let mut broken = entries.clone();
    broken.push(vital(&ann, "59408-5", quantity(104.0, "%"), t1 + 1));
    let before = count_observations(&s, &ann).await;
    let r = s.post_fhir("/fhir", &nurse, &transaction(broken)).await;
    assert_eq!(r.status, 422, "{}", r.text);
    keep.keep("422 OperationOutcome", &r);
    assert_eq!(outcome(&r), ("processing".into(), "invalid".into()));
    assert!(r.text.contains("impossible"), "{}", r.text);
    assert_eq!(count_observations(&s, &ann).await, before, "nothing stored");
    entries.push(vital(&ann, "8310-5", quantity(37.0, "Cel"), t1));
    let bundle = transaction(entries);
    let r = s.post_fhir("/fhir", &nurse, &bundle).await;
    assert_eq!(r.status, 200, "{}", r.text);
    keep.keep("transaction-response", &r);
    assert_eq!(r.json["type"], "transaction-response");
    let stored = r.json["entry"].as_array().unwrap();
    assert_eq!(stored.len(), 7);
    assert!(
        stored
            .iter()
            .all(|e| e["response"]["status"] == "201 Created")
    );
    let spo2 = &stored[1]["resource"]["valueQuantity"];
    assert!(
        (spo2["value"].as_f64().unwrap() - 97.0).abs() < 1e-9,
        "{spo2}"
    );
    let bp = &stored[3]["resource"];
    assert_eq!(bp["code"]["coding"][0]["code"], "8480-6");
    assert!((bp["valueQuantity"]["value"].as_f64().unwrap() - 120.01).abs() < 0.01);
    assert_eq!(stored[2]["resource"]["valueBoolean"], false);
    let artefact = &stored[5]["resource"];
    assert_eq!(
        artefact["interpretation"][0]["coding"][0]["code"], "IND",
        "{artefact}"
    );
    let artefact_id = artefact["id"].as_str().unwrap().to_string();
    // Sent again: every entry a duplicate.
    let r = s.post_fhir("/fhir", &nurse, &bundle).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.json["entry"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["response"]["status"] == "200 OK"),
        "{}",
        r.text
    );
    assert_eq!(count_observations(&s, &ann).await, before + 7);

    // 3. Refusals, all OperationOutcomes: unknown patient 404, unmapped identifier 404, a
    // non-vital code 422, malformed JSON 400, no token 401, a scheduler 403, another media
    // type 415, an unknown route 404.
    let ghost = PatientId::generate();
    let r = s
        .post_fhir(
            "/fhir/Observation",
            &nurse,
            &vital(&ghost, "8867-4", quantity(70.0, "/min"), t1),
        )
        .await;
    assert_eq!(
        (r.status, outcome(&r).0.as_str()),
        (404, "not-found"),
        "{}",
        r.text
    );
    keep.keep("404 OperationOutcome", &r);
    let mut unmapped = vital(&ann, "8867-4", quantity(70.0, "/min"), t1);
    unmapped["subject"] = json!({"identifier": {"system": "urn:oid:1.2.3.4.5", "value": "NOPE"}});
    assert_eq!(
        s.post_fhir("/fhir/Observation", &nurse, &unmapped)
            .await
            .status,
        404
    );
    let r = s
        .post_fhir(
            "/fhir/Observation",
            &nurse,
            &vital(&ann, "2339-0", quantity(5.0, "mmol/L"), t1),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("not a vital sign"), "{}", r.text);
    let r = s
        .req(
            "POST",
            "/fhir/Observation",
            Some(&nurse),
            Some(("application/fhir+json", b"{nope".to_vec())),
        )
        .await;
    assert_eq!(
        (r.status, outcome(&r).1.as_str()),
        (400, "bad_request"),
        "{}",
        r.text
    );
    let r = s
        .req("GET", &format!("/fhir/Patient/{ann}"), None, None)
        .await;
    assert_eq!(
        (r.status, outcome(&r).0.as_str()),
        (401, "login"),
        "{}",
        r.text
    );
    keep.keep("401 OperationOutcome", &r);
    let r = s.post_fhir("/fhir/Observation", &scheduler, &temp).await;
    assert_eq!(
        (r.status, outcome(&r).0.as_str()),
        (403, "forbidden"),
        "{}",
        r.text
    );
    let r = s
        .req(
            "POST",
            "/fhir/Observation",
            Some(&nurse),
            Some(("text/plain", b"{}".to_vec())),
        )
        .await;
    assert_eq!(r.status, 415, "{}", r.text);
    outcome(&r);
    let r = s.get("/fhir/Encounter/e-1", &admin).await;
    assert_eq!(
        (r.status, outcome(&r).0.as_str()),
        (404, "not-found"),
        "{}",
        r.text
    );
    assert_eq!(count_observations(&s, &ann).await, before + 7);

    // 4. The views, each validated below.
    let r = s.get("/fhir/metadata", "").await;
    assert_eq!(r.status, 200, "{}", r.text);
    keep.keep("CapabilityStatement", &r);
    assert_eq!(r.json["fhirVersion"], "4.0.1");
    let r = s.get(&format!("/fhir/Patient/{ann}"), &doctor).await;
    assert_eq!(
        (r.status, r.json["birthDate"].as_str()),
        (200, Some("1950-03-04")),
        "{}",
        r.text
    );
    keep.keep("Patient", &r);
    let r = s
        .get(
            "/fhir/Patient?identifier=urn:oid:1.2.3.4.5|MRN-0042",
            &nurse,
        )
        .await;
    assert_eq!(r.json["total"], 1, "{}", r.text);
    assert_eq!(r.json["entry"][0]["resource"]["id"], ann.as_str());
    keep.keep("Patient searchset", &r);
    let r = s.get(&format!("/fhir/Observation/{temp_id}"), &nurse).await;
    assert_eq!(r.status, 200, "{}", r.text);
    keep.keep("Observation", &r);
    let r = s
        .get(&format!("/fhir/Observation/{artefact_id}"), &nurse)
        .await;
    keep.keep("artefact Observation", &r);
    let r = s
        .get(
            &format!("/fhir/Observation?patient={ann}&code=http://loinc.org|8867-4"),
            &nurse,
        )
        .await;
    assert_eq!(r.json["total"], 2, "{}", r.text);
    keep.keep("Observation searchset by code", &r);
    let r = s
        .get(
            &format!("/fhir/Observation?patient={ann}&date=ge{}", at(t1)),
            &nurse,
        )
        .await;
    assert_eq!(r.json["total"], 7, "{}", r.text);
    let r = s
        .get(
            &format!("/fhir/Observation?patient={ann}&date=lt{}", at(t1)),
            &nurse,
        )
        .await;
    assert_eq!(r.json["total"], 2, "{}", r.text);
    keep.keep("Observation searchset by date", &r);
    let r = s
        .get(&format!("/fhir/Observation?patient={ann}&foo=1"), &nurse)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = s
        .get(&format!("/fhir/RiskAssessment?patient={ann}"), &doctor)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    keep.keep("RiskAssessment searchset", &r);
    let ras = r.json["entry"].as_array().unwrap();
    let latest = &ras.last().unwrap()["resource"];
    assert_eq!(latest["method"]["text"], "NEWS2 (RCP 2017)");
    assert!(
        latest["note"][0]["text"]
            .as_str()
            .unwrap()
            .contains("not a diagnosis")
    );
    assert_eq!(latest["basis"].as_array().unwrap().len(), 7, "{latest}");
    // Orders: a ServiceRequest and a Task.
    let order = s
        .hospital
        .create_order(
            NewOrder {
                patient: ann.clone(),
                pool: Pool::Equipment("CT".into()),
                capabilities: vec![],
                priority: Priority::Urgent,
                reason: "fhir test".into(),
            },
            "test",
        )
        .await
        .unwrap();
    s.hospital.call(&order.id, None, "test").await.unwrap();
    let r = s
        .get(&format!("/fhir/ServiceRequest/{}", order.id), &nurse)
        .await;
    assert_eq!(
        (r.json["status"].as_str(), r.json["priority"].as_str()),
        (Some("active"), Some("urgent")),
        "{}",
        r.text
    );
    keep.keep("ServiceRequest", &r);
    let r = s
        .get(
            &format!("/fhir/ServiceRequest?patient={ann}&status=active"),
            &nurse,
        )
        .await;
    assert_eq!(r.json["total"], 1, "{}", r.text);
    keep.keep("ServiceRequest searchset", &r);
    let r = s.get(&format!("/fhir/Task/{}", order.id), &nurse).await;
    assert_eq!(r.json["status"], "accepted", "{}", r.text);
    keep.keep("Task", &r);
    let r = s
        .get(
            &format!("/fhir/ServiceRequest?patient={ann}&status=completed"),
            &nurse,
        )
        .await;
    assert_eq!(r.json["total"], 0, "{}", r.text);
    keep.keep("empty searchset", &r);

    // 5. Patient isolation: Ann's token sees Ann, never Bob.
    assert_eq!(
        s.get(&format!("/fhir/Patient/{ann}"), &ann_tok)
            .await
            .status,
        200
    );
    let r = s.get(&format!("/fhir/Patient/{bob}"), &ann_tok).await;
    assert_eq!(
        (r.status, outcome(&r).0.as_str()),
        (403, "forbidden"),
        "{}",
        r.text
    );
    keep.keep("403 OperationOutcome", &r);
    assert_eq!(
        s.get(&format!("/fhir/Observation?patient={bob}"), &ann_tok)
            .await
            .status,
        403
    );
    assert_eq!(
        s.get(&format!("/fhir/RiskAssessment?patient={bob}"), &ann_tok)
            .await
            .status,
        403
    );
    // NUL in a search parameter: refused as a bad request (a PostgreSQL store answered 500).
    let r = s
        .get(
            "/fhir/Patient?identifier=urn:oid:1.2.3.4.5%00|MRN-0042",
            &nurse,
        )
        .await;
    assert_eq!(
        (r.status, outcome(&r).1.as_str()),
        (400, "bad_request"),
        "{}",
        r.text
    );
    assert!(r.text.contains("control characters"), "{}", r.text);
    let r = s
        .get(
            &format!("/fhir/Observation?patient={ann}&code=8867-4%00"),
            &nurse,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let own = s.get("/fhir/Observation", &ann_tok).await;
    assert_eq!(own.json["total"], 9, "{}", own.text);
    let bob_order = s
        .hospital
        .create_order(
            NewOrder {
                patient: bob.clone(),
                pool: Pool::Equipment("CT".into()),
                capabilities: vec![],
                priority: Priority::Routine,
                reason: "other".into(),
            },
            "test",
        )
        .await
        .unwrap();
    assert_eq!(
        s.get(&format!("/fhir/ServiceRequest/{}", bob_order.id), &ann_tok)
            .await
            .status,
        404
    );
    assert_eq!(
        s.get(&format!("/fhir/Task/{}", bob_order.id), &ann_tok)
            .await
            .status,
        404
    );
    assert_eq!(
        s.get(&format!("/fhir/Task/{}", order.id), &ann_tok)
            .await
            .status,
        200
    );
    let r = s.get("/fhir/ServiceRequest", &ann_tok).await;
    assert_eq!(r.json["total"], 1, "{}", r.text);
    let r = s
        .get(
            "/fhir/Patient?identifier=urn:oid:1.2.3.4.5|MRN-0042",
            &ann_tok,
        )
        .await;
    assert_eq!(r.json["total"], 1, "{}", r.text);
    let bob_tok = s.token(Role::Patient, Some(&bob)).await;
    let r = s
        .get(
            "/fhir/Patient?identifier=urn:oid:1.2.3.4.5|MRN-0042",
            &bob_tok,
        )
        .await;
    assert_eq!(
        r.json["total"], 0,
        "another's identifier finds nothing: {}",
        r.text
    );
    assert_eq!(
        s.get(&format!("/fhir/Observation/{temp_id}"), &bob_tok)
            .await
            .status,
        404
    );

    // 6. Audit: the ingestion and the reads, with their patients and outcomes.
    let audit = s
        .store
        .audit(&AuditQuery {
            patient: Some(ann.clone()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    let has = |action: &str, outcome: &str| {
        audit
            .iter()
            .any(|a| a.action == action && a.outcome == outcome)
    };
    for (action, outcome) in [
        ("fhir.observation.create", "ok"),
        ("fhir.transaction", "ok"),
        ("fhir.transaction", "invalid"),
        ("fhir.patient.read", "ok"),
        ("fhir.patient.search", "ok"),
        ("fhir.observation.read", "ok"),
        ("fhir.observation.search", "ok"),
        ("fhir.riskassessment.search", "ok"),
        ("fhir.servicerequest.read", "ok"),
        ("fhir.task.read", "ok"),
        ("patient.identifier", "ok"),
    ] {
        assert!(
            has(action, outcome),
            "no audit record {action} {outcome}: {audit:#?}"
        );
    }
    let bob_audit = s
        .store
        .audit(&AuditQuery {
            patient: Some(bob.clone()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        bob_audit
            .iter()
            .any(|a| a.action == "fhir.patient.read" && a.outcome == "denied"),
        "{bob_audit:#?}"
    );
    assert!(
        bob_audit
            .iter()
            .any(|a| a.action == "fhir.task.read" && a.outcome == "denied"),
        "{bob_audit:#?}"
    );
    // A patient token's search for another patient's data is audited under the patient asked
    // for (as the JSON routes do), not under the caller: `GET /api/audit?patient=bob` finds it.
    for action in ["fhir.observation.search", "fhir.riskassessment.search"] {
        assert!(
            bob_audit
                .iter()
                .any(|a| a.action == action && a.outcome == "denied"),
            "no denied {action} under {bob}: {bob_audit:#?}"
        );
        assert!(
            !audit
                .iter()
                .any(|a| a.action == action && a.outcome == "denied"),
            "a denied {action} under the caller {ann}: {audit:#?}"
        );
    }

    // 7. Everything kept validates against FHIR R4 with a real validator, which refuses a
    // broken resource.
    match validator() {
        None => eprintln!("SKIPPED FHIR validation: scripts/fhir-validator is absent"),
        Some(script) => {
            let st = std::process::Command::new(&script)
                .arg("install")
                .status()
                .expect("run scripts/fhir-validator install");
            assert!(st.success(), "scripts/fhir-validator install failed");
            let broken = keep.dir.path().join("broken.json");
            let mut bad =
                serde_json::from_str::<Value>(&std::fs::read_to_string(&keep.files[0].0).unwrap())
                    .unwrap();
            bad["status"] = json!("done");
            bad["valueQuantity"]["value"] = json!("thirty-eight");
            std::fs::write(&broken, bad.to_string()).unwrap();
            let (ok, out) = validate(&script, std::slice::from_ref(&broken));
            assert!(
                !ok && out.contains("invalid"),
                "the validator took a broken resource: {out}"
            );
            let files: Vec<PathBuf> = keep.files.iter().map(|(p, _)| p.clone()).collect();
            let (ok, out) = validate(&script, &files);
            let named: Vec<String> = out
                .lines()
                .map(|l| {
                    keep.files
                        .iter()
                        .find(|(p, _)| l.starts_with(&*p.to_string_lossy()))
                        .map_or(l.to_string(), |(_, what)| format!("{what}: {l}"))
                })
                .collect();
            assert!(ok, "not valid FHIR R4:\n{}", named.join("\n"));
            eprintln!("{} resources valid FHIR R4", files.len());
        }
    }
    eprintln!("fhir test: {:?}", started.elapsed());
    let _ = OrderState::Queued;
}

/// The probe's finding: an Observation dated 2999 (or year 0000) was taken (201), and from
/// then on the patient's NEWS2 was computed at its time — `current` frozen at "low", the real
/// readings "stale", the ward showing it fresh — so a deteriorating patient raised no alarm.
/// Refused now (422, saying why); and one a store already holds is ignored by the views.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn future_dated_observations_are_refused_and_never_freeze_news2() {
    use medkeeper_hospital::news2::SpO2Scale;
    use medkeeper_hospital::store::{News2Record, RawMessage};
    use medkeeper_hospital::vitals::{self, Observation, VitalCode};

    let s = Server::start().await;
    let ann = s.patient("Ann Example").await;
    let nurse = s.token(Role::Nurse, None).await;
    let hr = |at: &str| {
        let mut o = vital(&ann, "8867-4", quantity(70.0, "/min"), 0);
        o["effectiveDateTime"] = json!(at);
        o
    };
    for (at, why) in [
        ("2999-01-01T00:00:00Z", "days after this server's clock"),
        ("0000-01-01T00:00:00Z", "before 1900-01-01"),
    ] {
        let r = s.post_fhir("/fhir/Observation", &nurse, &hr(at)).await;
        assert_eq!(r.status, 422, "{at}: {}", r.text);
        assert_eq!(outcome(&r), ("processing".into(), "invalid".into()));
        assert!(r.text.contains(why), "{at}: {}", r.text);
        // In a Bundle: the whole transaction refused.
        let bundle = transaction(vec![
            vital(&ann, "9279-1", quantity(16.0, "/min"), now_ms() - 60_000),
            hr(at),
        ]);
        let r = s.post_fhir("/fhir", &nurse, &bundle).await;
        assert_eq!(r.status, 422, "{at}: {}", r.text);
        assert!(
            r.text.contains("entry 2") || r.text.contains("observation 2"),
            "{}",
            r.text
        );
    }
    assert_eq!(count_observations(&s, &ann).await, 0);

    // A store that already holds a 2999 reading and its score (taken before this check).
    let future = 32_503_593_600_000; // 2999-12-31T00:00:00Z
    let stored = s
        .store
        .insert_observations(
            &[Observation {
                id: String::new(),
                patient: ann.clone(),
                code: VitalCode::HeartRate,
                value: 70.0,
                effective_ms: future,
                received_ms: now_ms(),
                source: "Device/wrong-clock".into(),
                artefact: None,
            }],
            &RawMessage {
                format: "fhir".into(),
                source: "test".into(),
                received_ms: now_ms(),
                body: "{}".into(),
            },
            None,
        )
        .await
        .unwrap();
    s.store
        .insert_news2(&News2Record {
            news2: vitals::news2_at(&ann, future, &stored, SpO2Scale::Scale1),
            computed_ms: now_ms(),
        })
        .await
        .unwrap();

    // The patient deteriorates: RR 30, SpO2 85, HR 140, SBP 85, T 39.5.
    let t = now_ms() - 60_000;
    let bundle = transaction(vec![
        vital(&ann, "9279-1", quantity(30.0, "/min"), t),
        vital(&ann, "59408-5", quantity(85.0, "%"), t),
        vital(&ann, "3151-8", quantity(0.0, "L/min"), t),
        vital(&ann, "8480-6", quantity(85.0, "mm[Hg]"), t),
        vital(&ann, "8867-4", quantity(140.0, "/min"), t),
        vital(&ann, "67775-7", json!({"valueString": "A"}), t),
        vital(&ann, "8310-5", quantity(39.5, "Cel"), t),
    ]);
    let r = s.post_fhir("/fhir", &nurse, &bundle).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.get(&format!("/api/patients/{ann}/news2"), &nurse).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let c = &r.json["current"];
    assert!(c["at_ms"].as_i64().unwrap() < future, "{c}");
    assert_eq!(
        (c["risk"].as_str(), c["complete"].as_bool()),
        (Some("high"), Some(true)),
        "{c}"
    );
    assert_eq!(c["stale"], json!([]), "{c}");
    assert!(
        r.json["trend"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["at_ms"].as_i64().unwrap() < future),
        "{}",
        r.text
    );
    let r = s.get("/api/ward", &nurse).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let row = r
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["patient"] == ann.as_str())
        .unwrap_or_else(|| panic!("{ann} not on the ward: {}", r.text));
    assert_eq!(
        (row["risk"].as_str(), row["stale"].as_bool()),
        (Some("high"), Some(false)),
        "{row}"
    );
    assert!(row["at_ms"].as_i64().unwrap() < future, "{row}");
}

/// The probe's finding: `status: "corrected"` with a new value answered 200 with the old one
/// and changed nothing, and a Bundle of two heart rates (60, 150) at one time answered both
/// "201 Created" with 60 — the 150 dropped silently. Now the same value again is a duplicate
/// (200), a correction replaces the value (seen by NEWS2 and the history, audited), and
/// another value that is not a correction is 409, a Bundle holding one refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrections_replace_and_other_values_are_refused() {
    let s = Server::start().await;
    let ann = s.patient("Ann Example").await;
    let nurse = s.token(Role::Nurse, None).await;
    // Whole seconds, as effectiveDateTime carries them.
    let t = (now_ms() - 120_000) / 1000 * 1000;
    let hr = |v: f64, status: &str, at: i64| {
        let mut o = vital(&ann, "8867-4", quantity(v, "/min"), at);
        o["status"] = json!(status);
        o
    };
    let values = |s: &Server| {
        let (store, ann) = (s.store.clone(), ann.clone());
        async move {
            store
                .observations(&ObservationQuery {
                    patient: Some(ann),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_iter()
                .map(|o| (o.effective_ms, o.value))
                .collect::<Vec<_>>()
        }
    };
    let r = s
        .post_fhir("/fhir/Observation", &nurse, &hr(60.0, "final", t))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let id = r.json["id"].as_str().unwrap().to_string();
    // Another value, not a correction: 409 saying how to correct, nothing changed.
    let r = s
        .post_fhir("/fhir/Observation", &nurse, &hr(150.0, "final", t))
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(outcome(&r), ("conflict".into(), "conflict".into()));
    assert!(r.text.contains("corrected or amended"), "{}", r.text);
    assert!(
        r.text.contains("60") && r.text.contains("150"),
        "{}",
        r.text
    );
    // The same value again: a duplicate, 200.
    let r = s
        .post_fhir("/fhir/Observation", &nurse, &hr(60.0, "final", t))
        .await;
    assert_eq!(
        (r.status, r.json["id"].as_str()),
        (200, Some(id.as_str())),
        "{}",
        r.text
    );
    assert_eq!(values(&s).await, [(t, 60.0)]);
    // A correction: the value replaced in place (same id), seen by NEWS2 and the history.
    let r = s
        .post_fhir("/fhir/Observation", &nurse, &hr(150.0, "corrected", t))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.json["id"], id.as_str());
    assert_eq!(r.json["valueQuantity"]["value"], 150.0, "{}", r.text);
    assert_eq!(values(&s).await, [(t, 150.0)]);
    let r = s.get(&format!("/api/patients/{ann}/news2"), &nurse).await;
    assert!(
        r.json["current"]["parameters"]
            .as_array()
            .unwrap()
            .contains(&json!({"parameter": "pulse", "score": 3})),
        "{}",
        r.text
    );
    let r = s.get(&format!("/api/patients/{ann}/vitals"), &nurse).await;
    assert_eq!(r.json[0]["value"], 150.0, "{}", r.text);
    // Sent again: a duplicate now.
    let r = s
        .post_fhir("/fhir/Observation", &nurse, &hr(150.0, "amended", t))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // A Bundle of two heart rates at one time: refused whole, naming the entry; with the
    // second an amendment, the second wins.
    let t2 = t + 60_000;
    let bundle = |second: &str| {
        transaction(vec![
            vital(&ann, "9279-1", quantity(18.0, "/min"), t2),
            hr(60.0, "final", t2),
            hr(150.0, second, t2),
        ])
    };
    let r = s.post_fhir("/fhir", &nurse, &bundle("final")).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("entry 3"), "{}", r.text);
    assert_eq!(
        values(&s).await,
        [(t, 150.0)],
        "nothing of the Bundle stored"
    );
    let r = s.post_fhir("/fhir", &nurse, &bundle("amended")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let e = r.json["entry"].as_array().unwrap();
    assert_eq!(e[1]["resource"]["id"], e[2]["resource"]["id"]);
    assert_eq!(
        e[2]["resource"]["valueQuantity"]["value"], 150.0,
        "{}",
        r.text
    );
    let mut v = values(&s).await;
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    assert_eq!(v, [(t, 150.0), (t2, 18.0), (t2, 150.0)]);

    // Audited: the refusals as conflicts, the corrections said to be ones.
    let audit = s
        .store
        .audit(&AuditQuery {
            patient: Some(ann.clone()),
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.action == "fhir.observation.create" && a.outcome == "conflict"),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|a| a.action == "fhir.transaction" && a.outcome == "conflict"),
        "{audit:#?}"
    );
    assert!(
        audit.iter().any(|a| a.action == "fhir.observation.create"
            && a.outcome == "ok"
            && a.detail.contains("1 sent as a correction")),
        "{audit:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_vitals_settings_and_news2() {
    let s = Server::start().await;
    let ann = s.patient("Ann Example").await;
    let bob = s.patient("Bob Other").await;
    let admin = s.token(Role::Admin, None).await;
    let nurse = s.token(Role::Nurse, None).await;
    let doctor = s.token(Role::Doctor, None).await;
    let ann_tok = s.token(Role::Patient, Some(&ann)).await;
    let settings = format!("/api/patients/{ann}/settings");

    // The SpO2 scale is a doctor's (or admin's) decision, recorded with who and when.
    let r = s
        .json("PUT", &settings, &nurse, json!({"spo2_scale": "scale2"}))
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = s
        .json("PUT", &settings, &nurse, json!({"ward": "ward-7"}))
        .await;
    assert_eq!(
        (r.status, r.json["ward"].as_str()),
        (200, Some("ward-7")),
        "{}",
        r.text
    );
    let r = s
        .json("PUT", &settings, &doctor, json!({"spo2_scale": "scale2"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["spo2_scale"], "scale2");
    assert!(
        r.json["scale_set_by"]
            .as_str()
            .unwrap()
            .starts_with("doctor:")
    );
    assert!(r.json["scale_set_ms"].as_i64().is_some());
    assert_eq!(r.json["ward"], "ward-7", "the ward stays");
    let r = s
        .json("PUT", &settings, &doctor, json!({"spo2_scale": "scale3"}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let audit = s
        .store
        .audit(&AuditQuery {
            patient: Some(ann.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        audit.iter().any(|a| a.action == "patient.settings"
            && a.outcome == "ok"
            && a.role == "doctor"
            && a.detail.contains("scale1 -> scale2")),
        "{audit:#?}"
    );
    assert!(
        audit
            .iter()
            .any(|a| a.action == "patient.settings" && a.outcome == "denied")
    );

    // No observation yet: no current score.
    let r = s.get(&format!("/api/patients/{ann}/news2"), &nurse).await;
    assert_eq!(
        (r.status, &r.json["current"]),
        (200, &Value::Null),
        "{}",
        r.text
    );
    assert_eq!(r.json["label"], "decision support, not a diagnosis");

    // A respiratory rate of 26 (3), SpO2 96 % on oxygen on scale 2 (2 + 2), pulse 120 (2):
    // everything else missing.
    let now = now_ms();
    let bundle = transaction(vec![
        vital(&ann, "9279-1", quantity(26.0, "/min"), now - 60_000),
        vital(&ann, "59408-5", quantity(96.0, "%"), now - 60_000),
        vital(&ann, "3150-0", quantity(40.0, "%"), now - 60_000),
        vital(&ann, "8867-4", quantity(120.0, "/min"), now - 60_000),
        // Stale: two hours old.
        vital(&ann, "8310-5", quantity(37.0, "Cel"), now - 2 * 3_600_000),
    ]);
    let r = s.post_fhir("/fhir", &nurse, &bundle).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = s.get(&format!("/api/patients/{ann}/news2"), &ann_tok).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let c = &r.json["current"];
    assert_eq!(c["aggregate"], 9, "{c}");
    assert_eq!(c["risk"], "high");
    assert_eq!(c["scale"], "scale2");
    assert_eq!(c["monitoring"], "continuous monitoring of vital signs");
    assert!(
        c["response"]
            .as_str()
            .unwrap()
            .contains("emergency assessment")
    );
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|m| m["parameter"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&c["stale"]), ["temperature"], "{c}");
    assert_eq!(
        names(&c["missing"]),
        ["systolic_bp", "consciousness"],
        "{c}"
    );
    assert!(!r.json["trend"].as_array().unwrap().is_empty());

    // Vitals, filtered by code and time; patient isolation.
    let r = s
        .get(
            &format!("/api/patients/{ann}/vitals?code=heart_rate,spo2"),
            &nurse,
        )
        .await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(2), "{}", r.text);
    let r = s
        .get(
            &format!("/api/patients/{ann}/vitals?until_ms={}", now - 3_600_000),
            &ann_tok,
        )
        .await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(1), "{}", r.text);
    let r = s
        .get(&format!("/api/patients/{ann}/vitals?code=pulse"), &nurse)
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        s.get(&format!("/api/patients/{bob}/vitals"), &ann_tok)
            .await
            .status,
        403
    );
    assert_eq!(
        s.get(&format!("/api/patients/{bob}/news2"), &ann_tok)
            .await
            .status,
        403
    );
    let ghost = PatientId::generate();
    assert_eq!(
        s.get(&format!("/api/patients/{ghost}/news2"), &admin)
            .await
            .status,
        404
    );
}
