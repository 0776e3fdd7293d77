//! Shared by the server's fuzz tests (issue 19; `fuzz_api.rs`, `fuzz_fhir.rs`, `fuzz_hl7.rs`):
//! a seeded random source and budget (`MEDKEEPER_FUZZ_SECONDS`, `MEDKEEPER_FUZZ_CASES`,
//! `MEDKEEPER_FUZZ_SEED`, set by `scripts/fuzz`), an in-process server driven through the
//! router with `tower::ServiceExt::oneshot`, and a JSON mutator.

#![allow(dead_code)] // each fuzz binary uses a different part

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use medkeeper_coord::Session;
use medkeeper_embedded::{Engine, EngineConfig, SessionOptions};
use medkeeper_hospital::config::{self, HospitalConfig};
use medkeeper_hospital::model::now_ms;
use medkeeper_hospital::orders::Hospital;
use medkeeper_hospital::store::{ClinicalStore, SqliteStore};
use medkeeper_server::{Limits, MemberInfo, Role, ServerState, issue_token};
use serde_json::{Value, json};
use tower::ServiceExt;

pub use medkeeper_testkit::fuzz::{Budget, Rng};

/// Counts outcomes by name and prints them at the end.
#[derive(Default)]
pub struct Tally(pub BTreeMap<String, u64>);

impl Tally {
    pub fn add(&mut self, what: impl Into<String>) {
        *self.0.entry(what.into()).or_default() += 1;
    }
}

/// One instance in process: the embedded engine, the demo hospital, a SQLite store, the
/// router; an admin token, a patient and a queued order to aim requests at.
pub struct InProcess {
    pub app: axum::Router,
    pub store: Arc<dyn ClinicalStore>,
    pub admin: String,
    pub patient: String,
    pub order: String,
    _engine: Engine,
    _dir: tempfile::TempDir,
}

/// An answer: status and body text.
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub text: String,
}

impl InProcess {
    pub async fn start() -> InProcess {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = EngineConfig::new(dir.path().join("coord"));
        cfg.segment_size = 4 * 1024 * 1024;
        let engine = Engine::open(cfg).unwrap();
        let session: Arc<dyn Session> = Arc::new(
            engine
                .connect(SessionOptions {
                    timeout: Duration::from_secs(30),
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
        let state = ServerState::new(
            MemberInfo {
                id: "fuzz".into(),
                url: "http://127.0.0.1:1/".into(),
                started_ms: now_ms(),
            },
            store.clone(),
            Limits::default(),
        );
        state.set_hospital(Some(hospital));
        let app = medkeeper_server::router(state);
        let (_, admin) = issue_token(store.as_ref(), Role::Admin, None, "fuzz")
            .await
            .unwrap();
        let mut s = InProcess {
            app,
            store,
            admin,
            patient: String::new(),
            order: String::new(),
            _engine: engine,
            _dir: dir,
        };
        let p = s
            .json(
                "POST",
                "/api/patients",
                json!({"name": "Ann Example", "birth_date": "1970-01-31"}),
            )
            .await;
        s.patient = p["id"].as_str().expect("a patient id").to_string();
        let o = s
            .json(
                "POST",
                "/api/orders",
                json!({"patient": s.patient, "pool": "MRI", "priority": "routine", "reason": "fuzz"}),
            )
            .await;
        s.order = o["id"].as_str().expect("an order id").to_string();
        s
    }

    /// A JSON request with the admin token that must succeed; its JSON answer.
    pub async fn json(&self, method: &str, path: &str, body: Value) -> Value {
        let a = self
            .send(
                method,
                path,
                Some("application/json"),
                serde_json::to_vec(&body).unwrap(),
            )
            .await;
        assert!(a.status < 300, "{method} {path}: {} {}", a.status, a.text);
        serde_json::from_str(&a.text).unwrap()
    }

    /// One request through the router, with the admin token. An event stream's body is not
    /// read.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Answer {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.admin));
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        let request = b.body(Body::from(body)).unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if content_type.starts_with("text/event-stream") {
            return Answer {
                status,
                content_type,
                text: String::new(),
            };
        }
        let bytes = tokio::time::timeout(
            Duration::from_secs(30),
            axum::body::to_bytes(response.into_body(), 16 << 20),
        )
        .await
        .expect("the body within 30 s")
        .unwrap_or_default();
        Answer {
            status,
            content_type,
            text: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }
}

/// Values that stress input handling: wrong types, extremes, odd text.
pub fn awkward(rng: &mut Rng) -> Value {
    match rng.below(24) {
        0 => Value::Null,
        1 => json!(true),
        2 => json!(-1),
        3 => json!(0),
        4 => json!(i64::MAX),
        5 => json!(i64::MIN),
        6 => json!(u64::MAX),
        7 => json!(1e308),
        8 => json!(-0.5),
        9 => json!(""),
        10 => json!(" "),
        11 => json!("x".repeat([64, 65, 256, 4096, 70_000][rng.below(5) as usize])),
        12 => json!("患者\u{0}\u{202e}é"),
        13 => json!("../../medical"),
        14 => json!("/medical/resources"),
        15 => json!("%00"),
        16 => json!([]),
        17 => json!({}),
        18 => json!(["a", 1, null]),
        19 => json!("1970-02-30"),
        20 => json!("9999-12-31"),
        21 => json!("stat"),
        22 => json!("MRI"),
        _ => {
            // Deep nesting.
            let mut v = json!(1);
            for _ in 0..[10, 100, 200][rng.below(3) as usize] {
                v = json!([v]);
            }
            v
        }
    }
}

/// Mutates `v` in place: a key removed, added or renamed, a value replaced (anywhere in the
/// tree), an array grown or emptied.
pub fn mutate_json(v: &mut Value, rng: &mut Rng) -> String {
    // Choose a random path (as a JSON pointer), then change what it points at.
    let mut pointer = String::new();
    let mut at: &Value = v;
    for _ in 0..rng.below(4) {
        let next = match at {
            Value::Object(m) if !m.is_empty() => {
                let k = m.keys().nth(rng.below(m.len() as u64) as usize).unwrap();
                pointer.push_str(&format!("/{}", k.replace('~', "~0").replace('/', "~1")));
                &m[k]
            }
            Value::Array(a) if !a.is_empty() => {
                let i = rng.below(a.len() as u64) as usize;
                pointer.push_str(&format!("/{i}"));
                &a[i]
            }
            _ => break,
        };
        at = next;
    }
    let path = format!("${pointer}");
    let node = v.pointer_mut(&pointer).expect("the chosen path exists");
    match (rng.below(5), &mut *node) {
        (0, Value::Object(m)) if !m.is_empty() => {
            let k = m
                .keys()
                .nth(rng.below(m.len() as u64) as usize)
                .unwrap()
                .clone();
            m.remove(&k);
            format!("remove {path}.{k}")
        }
        (1, Value::Object(m)) => {
            let k =
                ["id", "__proto__", "", "resourceType", "extra", "patient"][rng.below(6) as usize];
            m.insert(k.to_string(), awkward(rng));
            format!("add {path}.{k}")
        }
        (2, Value::Array(a)) => {
            if rng.below(2) == 0 {
                a.clear();
                format!("empty {path}")
            } else {
                let copy = a.first().cloned().unwrap_or(Value::Null);
                for _ in 0..[2, 50][rng.below(2) as usize] {
                    a.push(copy.clone());
                }
                format!("grow {path}")
            }
        }
        _ => {
            *node = awkward(rng);
            format!("replace {path}")
        }
    }
}

/// Byte-level damage to a serialised body.
pub fn mutate_bytes(b: &mut Vec<u8>, rng: &mut Rng) -> String {
    if b.is_empty() {
        b.push(b'{');
        return "a lone {".into();
    }
    let at = rng.below(b.len() as u64) as usize;
    match rng.below(4) {
        0 => {
            b[at] ^= 1 << rng.below(8);
            format!("flip a bit at {at}")
        }
        1 => {
            b.truncate(at);
            format!("truncate at {at}")
        }
        2 => {
            let c = *rng.pick(b"{}[]\",:0\\\xff\x00");
            b.insert(at, c);
            format!("insert {c:#x} at {at}")
        }
        _ => {
            let n = (1 + rng.below(8) as usize).min(b.len() - at);
            b.drain(at..at + n);
            format!("delete {n} bytes at {at}")
        }
    }
}

/// A content type for a JSON body: mostly right, sometimes not.
pub fn content_type(rng: &mut Rng, right: &'static str) -> Option<&'static str> {
    match rng.below(10) {
        0 => None,
        1 => Some("text/plain"),
        2 => Some("application/json; charset=utf-16"),
        3 => Some("application/fhir+json"),
        _ => Some(right),
    }
}

/// A replacement for an id in a path: odd, long, encoded.
pub fn awkward_segment(rng: &mut Rng) -> String {
    match rng.below(9) {
        0 => "%00".into(),
        1 => "..".into(),
        2 => "%2e%2e".into(),
        3 => "%2Fmedical".into(),
        4 => "a".repeat(300),
        5 => "%E6%82%A3%E8%80%85".into(),
        6 => "x%20y".into(),
        7 => "-1".into(),
        _ => "nonexistent".into(),
    }
}
