//! The HTTP API (docs/api.md) in process, over real components: the embedded coordination
//! engine in a temporary directory, the demo hospital, a SQLite clinical store, and the axum
//! router on a loopback port, driven by a blocking HTTP client (ureq) from blocking threads.
//!
//! No dispatcher runs here, so orders stay queued until they are called by hand
//! (`POST /api/orders/{id}/call`) — or by the one dispatch round a `/metrics` test runs.
//!
//! Several tests collect every mismatch before failing ([`Problems`]), so one run shows all of
//! them.

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::{Duration, Instant};

use medkeeper_coord::Session;
use medkeeper_embedded::{Engine, EngineConfig, SessionOptions};
use medkeeper_hospital::config::{self, HospitalConfig};
use medkeeper_hospital::dispatch::Dispatcher;
use medkeeper_hospital::model::now_ms;
use medkeeper_hospital::orders::{Hospital, NewOrder};
use medkeeper_hospital::store::{
    AuditQuery, AuditRecord, ClinicalStore, Patient, PoolSample, SqliteStore, StoreError,
};
use medkeeper_hospital::{Order, OrderId, OrderState, PatientId, Pool, Priority, UnitStatus};
use medkeeper_server::{
    EngineFigures, HistogramFigures, Limits, MemberInfo, Role, ServerState, issue_token,
};
use medkeeper_testkit::store::{HookedStore, StoreHooks};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

// --- the server under test ------------------------------------------------------------------

/// One instance: engine, store, hospital, and the HTTP server on a loopback port.
struct Server {
    base: String,
    agent: ureq::Agent,
    store: Arc<dyn ClinicalStore>,
    hospital: Arc<Hospital>,
    state: Arc<ServerState>,
    // Dropped last: the engine shuts down, then the directory goes.
    _engine: Engine,
    _dir: tempfile::TempDir,
}

/// A token: its public id and its text.
#[derive(Debug, Clone)]
struct Tok {
    id: String,
    token: String,
}

/// A request body.
#[derive(Debug, Clone)]
enum Payload {
    /// No body.
    None,
    /// JSON, with `Content-Type: application/json`.
    Json(Value),
    /// These bytes, with this content type (none if `None`).
    Raw(Vec<u8>, Option<&'static str>),
}

/// An answer: status, content type, and the body as JSON (`Null` if not JSON, or not read
/// because it is an event stream).
#[derive(Debug)]
struct Resp {
    status: u16,
    content_type: String,
    json: Value,
    text: String,
}

impl Resp {
    fn is_stream(&self) -> bool {
        self.content_type.starts_with("text/event-stream")
    }

    /// The error code if the body is exactly `{"error":{"code":..,"message":..}}`, with a
    /// non-empty code and message; otherwise what is wrong with it.
    fn error_code(&self) -> Result<&str, String> {
        let bad = || {
            format!(
                "not an error body {{\"error\":{{\"code\",\"message\"}}}} (status {}, content \
                 type {:?}): {}",
                self.status, self.content_type, self.text
            )
        };
        let obj = self.json.as_object().ok_or_else(bad)?;
        if obj.len() != 1 {
            return Err(bad());
        }
        let e = obj
            .get("error")
            .and_then(Value::as_object)
            .ok_or_else(bad)?;
        if e.len() != 2 {
            return Err(bad());
        }
        let code = e.get("code").and_then(Value::as_str).ok_or_else(bad)?;
        let message = e.get("message").and_then(Value::as_str).ok_or_else(bad)?;
        if code.is_empty() || message.is_empty() || !self.content_type.contains("json") {
            return Err(bad());
        }
        Ok(code)
    }

    /// Ok if this is an error answer with one of `statuses` and `code`.
    fn expect_error(&self, statuses: &[u16], code: &str) -> Result<(), String> {
        let got = self.error_code()?;
        if statuses.contains(&self.status) && got == code {
            Ok(())
        } else {
            Err(format!(
                "expected {statuses:?} {code}, got {} {got}: {}",
                self.status, self.text
            ))
        }
    }
}

/// Mismatches collected so that a test reports all of them at once.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn check(&mut self, what: impl std::fmt::Display, r: Result<(), String>) {
        if let Err(e) = r {
            self.0.push(format!("{what}: {e}"));
        }
    }

    fn ensure(&mut self, what: impl std::fmt::Display, ok: bool, detail: impl std::fmt::Display) {
        if !ok {
            self.0.push(format!("{what}: {detail}"));
        }
    }

    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} problem(s):\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

fn agent(timeout: Option<Duration>) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(timeout)
            .build(),
    )
}

/// Sends one request (blocking). `auth` is the whole `Authorization` header. An event
/// stream's body is not read: the response is dropped, closing the connection.
fn send_blocking(
    agent: &ureq::Agent,
    url: &str,
    method: &str,
    auth: Option<&str>,
    payload: Payload,
) -> Resp {
    let mut b = ureq::http::Request::builder().method(method).uri(url);
    if let Some(a) = auth {
        b = b.header("authorization", a);
    }
    let result = match payload {
        Payload::None if matches!(method, "POST" | "PUT") => agent.run(b.body(Vec::new()).unwrap()),
        Payload::None => agent.run(b.body(()).unwrap()),
        Payload::Json(v) => agent.run(
            b.header("content-type", "application/json")
                .body(serde_json::to_vec(&v).unwrap())
                .unwrap(),
        ),
        Payload::Raw(bytes, ct) => {
            if let Some(ct) = ct {
                b = b.header("content-type", ct);
            }
            agent.run(b.body(bytes).unwrap())
        }
    };
    let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if content_type.starts_with("text/event-stream") {
        return Resp {
            status,
            content_type,
            json: Value::Null,
            text: String::new(),
        };
    }
    let text = resp
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("{method} {url}: reading the body: {e}"));
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        content_type,
        json,
        text,
    }
}

/// A live event stream: `(event, data)` pairs as they arrive.
struct Events {
    rx: mpsc::UnboundedReceiver<(String, Value)>,
}

impl Events {
    /// The next event, within `within`.
    async fn next(&mut self, within: Duration) -> (String, Value) {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no event within {within:?}"))
            .expect("the event stream ended")
    }

    /// The first event (from now on) that `pred` accepts, within `within`.
    async fn until(
        &mut self,
        within: Duration,
        mut pred: impl FnMut(&str, &Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let (name, data) = tokio::time::timeout(left, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no matching event within {within:?}"))
                .expect("the event stream ended");
            if pred(&name, &data) {
                return data;
            }
        }
    }
}

/// Reads Server-Sent Events line by line and forwards them until the stream ends or nobody
/// listens.
fn forward_events(body: ureq::Body, tx: mpsc::UnboundedSender<(String, Value)>) {
    let reader = BufReader::new(body.into_reader());
    let mut event = String::new();
    let mut data = String::new();
    for line in reader.lines() {
        let Ok(line) = line else { return };
        if line.is_empty() {
            if !data.is_empty() {
                let v = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("event {event:?} data is not JSON ({e}): {data}"));
                if tx.send((std::mem::take(&mut event), v)).is_err() {
                    return;
                }
            }
            event.clear();
            data.clear();
        } else if let Some(rest) = line.strip_prefix("event:") {
            event = rest.trim_start().to_string();
        } else if let Some(rest) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(rest.strip_prefix(' ').unwrap_or(rest));
        }
        // Comments (`: keep-alive`) and other fields are ignored.
    }
}

impl Server {
    async fn start() -> Server {
        Server::start_with(|store| Arc::new(store)).await
    }

    /// A server whose clinical store is `wrap` of the SQLite store.
    async fn start_with(wrap: impl FnOnce(SqliteStore) -> Arc<dyn ClinicalStore>) -> Server {
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
        let mut hospital_config = HospitalConfig::demo();
        // An alarm that holds whenever an evaluator looks: nothing dispatches XRAY here.
        hospital_config.alarms = HospitalConfig::parse(&format!(
            "{}\n[[alarm]]\nname = \"xray-undispatched\"\nsignal = \"dispatchers\"\n\
             pool = \"XRAY\"\nraise = 0\nclear = 1\npriority = \"high\"\n",
            HospitalConfig::DEMO_TOML
        ))
        .unwrap()
        .alarms
        .into_iter()
        .filter(|r| r.name == "xray-undispatched")
        .collect();
        config::load(session.as_ref(), &hospital_config)
            .await
            .unwrap();
        let store = wrap(SqliteStore::open(dir.path().join("clinical.sqlite")).unwrap());
        let hospital = Arc::new(Hospital::new(session, store.clone(), hospital_config).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let state = ServerState::new(
            MemberInfo {
                id: "api-test".into(),
                url: format!("{base}/"),
                started_ms: now_ms(),
            },
            store.clone(),
            Limits::default(),
        );
        state.set_hospital(Some(hospital.clone()));
        let app = medkeeper_server::router(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Server {
            base,
            agent: agent(Some(Duration::from_secs(20))),
            store,
            hospital,
            state,
            _engine: engine,
            _dir: dir,
        }
    }

    /// A request with a bearer token (or none).
    async fn req(&self, method: &'static str, path: &str, token: Option<&str>, p: Payload) -> Resp {
        self.req_auth(method, path, token.map(|t| format!("Bearer {t}")), p)
            .await
    }

    /// A request with this `Authorization` header (or none).
    async fn req_auth(
        &self,
        method: &'static str,
        path: &str,
        auth: Option<String>,
        p: Payload,
    ) -> Resp {
        let agent = self.agent.clone();
        let url = format!("{}{path}", self.base);
        tokio::task::spawn_blocking(move || send_blocking(&agent, &url, method, auth.as_deref(), p))
            .await
            .unwrap()
    }

    /// A JSON request with a token; the body's absence is `Value::Null`.
    async fn call(&self, method: &'static str, path: &str, tok: &Tok, body: Value) -> Resp {
        let p = if body.is_null() {
            Payload::None
        } else {
            Payload::Json(body)
        };
        self.req(method, path, Some(&tok.token), p).await
    }

    /// Like [`call`](Server::call), asserting the status; returns the JSON body.
    async fn ok(
        &self,
        method: &'static str,
        path: &str,
        tok: &Tok,
        body: Value,
        status: u16,
    ) -> Value {
        let r = self.call(method, path, tok, body.clone()).await;
        assert_eq!(
            r.status, status,
            "{method} {path} {body} answered {}: {}",
            r.status, r.text
        );
        r.json
    }

    /// Opens an event stream (`path` carries `?access_token=`), waiting for its headers.
    /// Returns the status and content type, and the events if it is a stream.
    async fn events(&self, path: &str) -> (u16, String, Option<Events>) {
        let url = format!("{}{path}", self.base);
        let (head_tx, head_rx) = oneshot::channel();
        std::thread::spawn(move || {
            let agent = agent(None);
            let resp = agent
                .get(&url)
                .call()
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            let status = resp.status().as_u16();
            let ct = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let (tx, rx) = mpsc::unbounded_channel();
            let stream = status == 200 && ct.starts_with("text/event-stream");
            let _ = head_tx.send((status, ct, stream.then_some(rx)));
            if stream {
                forward_events(resp.into_body(), tx);
            }
        });
        let (status, ct, rx) = tokio::time::timeout(Duration::from_secs(10), head_rx)
            .await
            .expect("no stream headers within 10 s")
            .expect("the stream thread failed");
        (status, ct, rx.map(|rx| Events { rx }))
    }

    /// A token issued straight into the store.
    async fn token(&self, role: Role, patient: Option<&PatientId>) -> Tok {
        let (rec, token) = issue_token(self.store.as_ref(), role, patient.cloned(), "api test")
            .await
            .unwrap();
        Tok { id: rec.id, token }
    }

    /// A patient registered straight into the store.
    async fn patient(&self, name: &str) -> PatientId {
        let id = PatientId::generate();
        self.store
            .upsert_patient(&Patient {
                id: id.clone(),
                name: name.into(),
                birth_date: None,
            })
            .await
            .unwrap();
        id
    }

    /// An order of `patient` in equipment `kind`, brought to `state` through the hospital.
    async fn order(&self, patient: &PatientId, kind: &str, state: OrderState) -> Order {
        let h = &self.hospital;
        let o = h
            .create_order(
                NewOrder {
                    patient: patient.clone(),
                    pool: Pool::Equipment(kind.into()),
                    capabilities: vec![],
                    priority: Priority::Routine,
                    reason: "fixture".into(),
                },
                "test:fixture",
            )
            .await
            .unwrap();
        let steps: &[OrderState] = match state {
            OrderState::Queued => &[],
            OrderState::Called => &[OrderState::Called],
            OrderState::InProgress => &[OrderState::Called, OrderState::InProgress],
            OrderState::Completed => &[
                OrderState::Called,
                OrderState::InProgress,
                OrderState::Completed,
            ],
            other => panic!("no fixture for {other:?}"),
        };
        for s in steps {
            match s {
                OrderState::Called => h.call(&o.id, None, "test:fixture").await.unwrap(),
                OrderState::InProgress => h.start(&o.id, "test:fixture").await.unwrap(),
                _ => h.complete(&o.id, "test:fixture").await.unwrap(),
            };
        }
        self.stored(&o.id).await
    }

    async fn stored(&self, id: &OrderId) -> Order {
        self.store
            .order(id)
            .await
            .unwrap()
            .expect("the order exists")
    }

    async fn unit_status(&self, kind: &str, unit: &str) -> UnitStatus {
        self.hospital
            .units(&Pool::Equipment(kind.into()))
            .await
            .unwrap()
            .into_iter()
            .find(|u| u.name == unit)
            .unwrap()
            .node
            .status
    }
}

fn ids(v: &Value, key: &str) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e[key].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The routes docs/api.md names (`` `METHOD /path` `` in backticks; `POST/GET` is two), as
/// `(lowercase method, path without query)`, without the dashboard and the OpenAPI document.
fn documented_routes() -> std::collections::BTreeSet<(String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut out = std::collections::BTreeSet::new();
    for (i, quoted) in text.split('`').enumerate() {
        if i % 2 == 0 {
            continue;
        }
        let Some((methods, route)) = quoted.split_once(' ') else {
            continue;
        };
        if !route.starts_with('/')
            || !methods
                .split('/')
                .all(|m| ["GET", "POST", "PUT", "DELETE", "PATCH"].contains(&m))
        {
            continue;
        }
        let route = route.split('?').next().unwrap();
        if route == "/" || route.starts_with("/assets") || route == "/api/openapi.json" {
            continue;
        }
        for m in methods.split('/') {
            out.insert((m.to_lowercase(), route.to_string()));
        }
    }
    assert!(out.len() > 20, "docs/api.md names only {out:?}");
    out
}

// --- 1. the role matrix ---------------------------------------------------------------------

/// The callers of the matrix, in the order of its columns.
const WHO: [&str; 7] = [
    "admin",
    "scheduler",
    "doctor",
    "nurse",
    "technician",
    "patient(own)",
    "patient(other)",
];

/// What a route needs before each call, and how "nothing changed" is checked when refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fixture {
    /// Read-only: the shared queued order of the own patient.
    Shared,
    /// A fresh order of the own patient (CT) in this state.
    Order(OrderState),
    /// A patient id nobody has registered (`{fresh}` in the body).
    FreshPatient,
    /// Counts the own patient's orders.
    NewOrder,
    /// Counts the tokens.
    NewToken,
    /// A fresh nurse token to revoke (`{token}` in the path).
    RevokeToken,
    /// A fresh nurse token to rotate (`{token}` in the path): the tokens are counted.
    RotateToken,
    /// MRI-2 is available; the call puts it into maintenance.
    UnitStatus,
    /// An active alarm (`{alarm}` in the path): its events count is what changes.
    Alarm,
    /// The identifier `urn:matrix|{fresh}` is mapped to nobody; the call maps it.
    Identifier,
    /// The own patient's settings are reset to the defaults; the call changes them.
    Settings,
}

/// The role matrix of docs/api.md, one row per route. Access columns as [`WHO`]: `y` allowed
/// (never 401/403), `-` 403 `forbidden`, `n` 404 `not_found` (another patient's order is
/// hidden). `{patient}` is the own patient, `{order}` the fixture order, `{token}` a token id,
/// `{fresh}` an unregistered patient id.
#[rustfmt::skip]
const MATRIX: &[(&str, &str, &str, Fixture, &str)] = &[
    //                                          A S D N T P p
    ("GET", "/api/whoami",                       "yyyyyyy", Fixture::Shared, ""),
    ("GET", "/api/pools",                        "yyyyy--", Fixture::Shared, ""),
    ("GET", "/api/pools/MRI",                    "yyyyy--", Fixture::Shared, ""),
    ("GET", "/api/pools/MRI/queue",              "yyyyy--", Fixture::Shared, ""),
    ("GET", "/api/history",                      "yyyyy--", Fixture::Shared, ""),
    ("GET", "/api/history?pool=MRI",             "yyyyy--", Fixture::Shared, ""),
    ("GET", "/api/pools/MRI/events",             "yyyyy--", Fixture::Shared, ""),
    ("GET", "/api/pools/MRI/units/MRI-1/events", "yyyyy--", Fixture::Shared, ""),
    ("PUT", "/api/pools/MRI/units/MRI-2/status", "yy--y--", Fixture::UnitStatus,
        r#"{"status":"maintenance"}"#),
    ("POST", "/api/patients",                    "yyyy---", Fixture::FreshPatient,
        r#"{"name":"Matrix Patient","id":"{fresh}","birth_date":"1970-01-31"}"#),
    ("GET", "/api/patients/{patient}",           "yyyyyy-", Fixture::Shared, ""),
    ("GET", "/api/patients/{patient}/events",    "yyyyyy-", Fixture::Shared, ""),
    ("POST", "/api/orders",                      "yyy----", Fixture::NewOrder,
        r#"{"patient":"{patient}","pool":"CT","priority":"routine","reason":"matrix"}"#),
    ("GET", "/api/orders/{order}",               "yyyyyyn", Fixture::Shared, ""),
    ("POST", "/api/orders/{order}/priority",     "yyyy---", Fixture::Order(OrderState::Queued),
        r#"{"priority":"stat"}"#),
    ("POST", "/api/orders/{order}/cancel",       "yyy----", Fixture::Order(OrderState::Queued), ""),
    ("POST", "/api/orders/{order}/call",         "yy--y--", Fixture::Order(OrderState::Queued), "{}"),
    ("POST", "/api/orders/{order}/start",        "y-yyy--", Fixture::Order(OrderState::Called), ""),
    ("POST", "/api/orders/{order}/complete",     "y-y-y--", Fixture::Order(OrderState::InProgress), ""),
    ("POST", "/api/orders/{order}/report",       "y-y----", Fixture::Order(OrderState::Completed),
        r#"{"text":"matrix report"}"#),
    ("POST", "/api/orders/{order}/no-show",      "yy-yy--", Fixture::Order(OrderState::Called), ""),
    ("GET", "/api/cluster",                      "yyyyy--", Fixture::Shared, ""),
    ("GET", "/api/cluster/events",               "yyyyy--", Fixture::Shared, ""),
    ("GET", "/api/events",                       "yyyyy--", Fixture::Shared, ""),
    ("GET", "/api/tree",                         "y------", Fixture::Shared, ""),
    ("GET", "/api/tree?path=/medical&depth=2",   "y------", Fixture::Shared, ""),
    ("POST", "/api/tokens",                      "y------", Fixture::NewToken,
        r#"{"role":"nurse","label":"matrix"}"#),
    ("GET", "/api/tokens",                       "y------", Fixture::Shared, ""),
    ("DELETE", "/api/tokens/{token}",            "y------", Fixture::RevokeToken, ""),
    ("GET", "/api/tokens/{token}",               "y------", Fixture::RevokeToken, ""),
    ("POST", "/api/tokens/{token}/rotate",       "y------", Fixture::RotateToken, r#"{"overlap":"5m"}"#),
    ("GET", "/api/audit",                        "y------", Fixture::Shared, ""),
    ("GET", "/api/alarms",                       "yyyyy--", Fixture::Alarm, ""),
    ("GET", "/api/alarms/{alarm}",               "yyyyy--", Fixture::Alarm, ""),
    ("GET", "/api/alarms/events",                "yyyyy--", Fixture::Alarm, ""),
    ("POST", "/api/alarms/{alarm}/ack",          "yyyyy--", Fixture::Alarm, r#"{"note":"matrix"}"#),
    ("POST", "/api/alarms/{alarm}/shelve",       "yy-----", Fixture::Alarm,
        r#"{"for":"5m","reason":"matrix"}"#),
    ("POST", "/api/patients/{patient}/identifiers", "yyyy---", Fixture::Identifier,
        r#"{"system":"urn:matrix","value":"{fresh}"}"#),
    ("PUT", "/api/patients/{patient}/settings",  "y-y----", Fixture::Settings,
        r#"{"spo2_scale":"scale2"}"#),
    ("PUT", "/api/patients/{patient}/settings",  "yyyy---", Fixture::Settings,
        r#"{"ward":"ward-{fresh}"}"#),
    ("GET", "/api/patients/{patient}/vitals",    "yyyyyy-", Fixture::Shared, ""),
    ("GET", "/api/patients/{patient}/news2",     "yyyyyy-", Fixture::Shared, ""),
    ("GET", "/api/ward",                         "yyyyy--", Fixture::Shared, ""),
];

/// The id of the alarm [`Fixture::Alarm`] made sure of last.
static ALARM_ID: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

impl Server {
    /// Makes sure the test alarm is active (one evaluator pass) and returns it.
    async fn alarm(&self) -> medkeeper_hospital::alarms::AlarmNode {
        medkeeper_hospital::alarms::Evaluator::new(self.hospital.clone(), "api-test")
            .evaluate()
            .await
            .unwrap();
        let a = medkeeper_hospital::alarms::active(&self.hospital)
            .await
            .unwrap()
            .into_iter()
            .find(|a| a.rule == "xray-undispatched")
            .expect("the test alarm is active");
        a.id.clone_into(&mut ALARM_ID.lock().unwrap());
        a
    }
}

fn method(m: &str) -> &'static str {
    match m {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        other => panic!("method {other}"),
    }
}

fn fill(
    template: &str,
    patient: &PatientId,
    order: &OrderId,
    token: &str,
    fresh: &PatientId,
) -> String {
    template
        .replace("{alarm}", &ALARM_ID.lock().unwrap())
        .replace("{patient}", patient.as_str())
        .replace("{order}", order.as_str())
        .replace("{token}", token)
        .replace("{fresh}", fresh.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_matrix_over_every_endpoint() {
    let started = Instant::now();
    let s = Server::start().await;
    let own = s.patient("Own Patient").await;
    let other = s.patient("Other Patient").await;
    let tokens = [
        s.token(Role::Admin, None).await,
        s.token(Role::Scheduler, None).await,
        s.token(Role::Doctor, None).await,
        s.token(Role::Nurse, None).await,
        s.token(Role::Technician, None).await,
        s.token(Role::Patient, Some(&own)).await,
        s.token(Role::Patient, Some(&other)).await,
    ];
    let shared = s.order(&own, "CT", OrderState::Queued).await;
    let mut p = Problems::default();
    let mut calls = 0;

    // The matrix covers every authenticated route of docs/api.md.
    let in_matrix: std::collections::BTreeSet<(String, String)> = MATRIX
        .iter()
        .map(|(m, template, ..)| {
            let route = template.split('?').next().unwrap();
            let generic: Vec<&str> = route
                .split('/')
                .map(|seg| match seg {
                    "MRI" => "{pool}",
                    "MRI-1" | "MRI-2" => "{unit}",
                    "{patient}" | "{order}" | "{token}" | "{alarm}" => "{id}",
                    other => other,
                })
                .collect();
            (m.to_lowercase(), generic.join("/"))
        })
        .collect();
    for (m, route) in documented_routes() {
        if route.starts_with("/api/") && !in_matrix.contains(&(m.clone(), route.clone())) {
            p.0.push(format!(
                "{} {route} is in docs/api.md but not in this test's MATRIX",
                m.to_uppercase()
            ));
        }
    }

    for &(m, template, access, fixture, body) in MATRIX {
        assert_eq!(
            access.len(),
            WHO.len(),
            "{m} {template}: one column per caller"
        );
        let sse = template.ends_with("/events");
        for (col, who) in WHO.iter().enumerate() {
            let expect = access.as_bytes()[col];
            let tok = &tokens[col];
            // The fixture.
            let fresh = PatientId::generate();
            let mut revoke = String::new();
            let order = match fixture {
                Fixture::Order(state) => s.order(&own, "CT", state).await,
                Fixture::RevokeToken | Fixture::RotateToken => {
                    revoke = s.token(Role::Nurse, None).await.id;
                    shared.clone()
                }
                _ => shared.clone(),
            };
            let before_alarm = match fixture {
                Fixture::Alarm => Some(s.alarm().await),
                _ => None,
            };
            if fixture == Fixture::Settings {
                s.store
                    .set_patient_settings(&own, &Default::default(), None)
                    .await
                    .unwrap();
            }
            let before_order = s.stored(&order.id).await;
            let before_orders = s.store.orders_of(&own).await.unwrap().len();
            let before_tokens = s.store.tokens().await.unwrap().len();
            let path = fill(template, &own, &order.id, &revoke, &fresh);
            let payload = if body.is_empty() {
                Payload::None
            } else {
                Payload::Json(
                    serde_json::from_str(&fill(body, &own, &order.id, &revoke, &fresh)).unwrap(),
                )
            };
            let r = s.req(method(m), &path, Some(&tok.token), payload).await;
            calls += 1;
            let what = format!("{m} {template} as {who}");
            match expect {
                b'y' => {
                    let ok = if sse {
                        r.status == 200 && r.is_stream()
                    } else {
                        (200..300).contains(&r.status) || r.status == 409
                    };
                    p.ensure(
                        &what,
                        ok,
                        format_args!(
                            "allowed, but answered {} ({}): {}",
                            r.status, r.content_type, r.text
                        ),
                    );
                }
                b'-' | b'n' => {
                    let (status, code) = if expect == b'-' {
                        (403, "forbidden")
                    } else {
                        (404, "not_found")
                    };
                    p.check(&what, r.expect_error(&[status], code));
                    // Nothing changed.
                    let unchanged = match fixture {
                        Fixture::Shared | Fixture::Order(_) => {
                            s.stored(&order.id).await == before_order
                        }
                        Fixture::RevokeToken => s
                            .store
                            .tokens()
                            .await
                            .unwrap()
                            .iter()
                            .any(|t| t.id == revoke && t.revoked_ms.is_none()),
                        Fixture::FreshPatient => s.store.patient(&fresh).await.unwrap().is_none(),
                        Fixture::NewOrder => {
                            s.store.orders_of(&own).await.unwrap().len() == before_orders
                        }
                        Fixture::NewToken | Fixture::RotateToken => {
                            s.store.tokens().await.unwrap().len() == before_tokens
                        }
                        Fixture::UnitStatus => {
                            s.unit_status("MRI", "MRI-2").await == UnitStatus::Available
                        }
                        Fixture::Alarm => {
                            s.alarm().await.next_seq == before_alarm.as_ref().unwrap().next_seq
                        }
                        Fixture::Identifier => s
                            .store
                            .patient_by_identifier("urn:matrix", fresh.as_str())
                            .await
                            .unwrap()
                            .is_none(),
                        Fixture::Settings => {
                            s.store.patient_settings(&own).await.unwrap() == Default::default()
                        }
                    };
                    p.ensure(&what, unchanged, "refused, but something changed");
                }
                other => panic!("bad matrix cell {}", other as char),
            }
            // Clean up what the call may have done.
            if let Fixture::Order(_) = fixture {
                let _ = s.hospital.cancel(&order.id, "test:cleanup").await;
            }
            if fixture == Fixture::NewOrder
                && let Some(id) = r.json["id"].as_str()
            {
                let _ = s
                    .hospital
                    .cancel(&id.parse().unwrap(), "test:cleanup")
                    .await;
            }
            if fixture == Fixture::UnitStatus {
                let _ = s
                    .hospital
                    .set_unit_status(
                        &Pool::Equipment("MRI".into()),
                        "MRI-2",
                        UnitStatus::Available,
                    )
                    .await;
            }
        }
    }
    // The shared order is untouched by all that.
    assert_eq!(s.stored(&shared.id).await.state, OrderState::Queued);

    // Without a usable token, every route is 401 `unauthorized`.
    let revoked = s.token(Role::Admin, None).await;
    assert!(
        s.store
            .revoke_token(&revoked.id, now_ms(), None)
            .await
            .unwrap()
    );
    let unknown = format!("mkt_{}", "0".repeat(64));
    let auths: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("a malformed token", Some("Bearer mkt_1234".into())),
        (
            "a token without the prefix",
            Some(format!("Bearer {}", "a".repeat(68))),
        ),
        ("an unknown token", Some(format!("Bearer {unknown}"))),
        ("a revoked token", Some(format!("Bearer {}", revoked.token))),
        ("basic auth", Some("Basic YWRtaW46YWRtaW4=".into())),
        ("an empty bearer", Some("Bearer ".into())),
    ];
    for &(m, template, _, _, body) in MATRIX {
        let fresh = PatientId::generate();
        let path = fill(template, &own, &shared.id, &tokens[0].id, &fresh);
        for (name, auth) in &auths {
            let payload = if body.is_empty() {
                Payload::None
            } else {
                Payload::Json(
                    serde_json::from_str(&fill(body, &own, &shared.id, "", &fresh)).unwrap(),
                )
            };
            let r = s.req_auth(method(m), &path, auth.clone(), payload).await;
            calls += 1;
            p.check(
                format!("{m} {template} with {name}"),
                r.expect_error(&[401], "unauthorized"),
            );
        }
        if template.ends_with("/events") {
            let sep = if path.contains('?') { '&' } else { '?' };
            for (name, t) in [
                ("?access_token= revoked", revoked.token.as_str()),
                ("?access_token= unknown", unknown.as_str()),
                ("?access_token= malformed", "nope"),
            ] {
                let r = s
                    .req(
                        "GET",
                        &format!("{path}{sep}access_token={t}"),
                        None,
                        Payload::None,
                    )
                    .await;
                calls += 1;
                p.check(
                    format!("{m} {template} with {name}"),
                    r.expect_error(&[401], "unauthorized"),
                );
            }
        }
    }
    // Still nothing happened to the patient's data, and the admin token still works.
    assert_eq!(s.stored(&shared.id).await.state, OrderState::Queued);
    assert_eq!(
        s.store.patient(&own).await.unwrap().unwrap().name,
        "Own Patient"
    );
    let who = s
        .ok("GET", "/api/whoami", &tokens[0], Value::Null, 200)
        .await;
    assert_eq!(who["role"], "admin");

    // `?access_token=` is for event streams only (docs/api.md: every other route needs the
    // `Authorization` header), so a valid token there does not authenticate a JSON route.
    // Each call gets its own queued order and token to aim at, in case it is let through.
    for &(m, template, _, _, body) in MATRIX {
        if template.ends_with("/events") {
            continue;
        }
        let fresh = PatientId::generate();
        let probe = s.order(&own, "CT", OrderState::Queued).await;
        let victim = s.token(Role::Nurse, None).await;
        let path = fill(template, &own, &probe.id, &victim.id, &fresh);
        let sep = if path.contains('?') { '&' } else { '?' };
        let payload = if body.is_empty() {
            Payload::None
        } else {
            Payload::Json(serde_json::from_str(&fill(body, &own, &probe.id, "", &fresh)).unwrap())
        };
        let r = s
            .req(
                method(m),
                &format!("{path}{sep}access_token={}", tokens[0].token),
                None,
                payload,
            )
            .await;
        calls += 1;
        p.check(
            format!("{m} {template} with a valid admin token in ?access_token="),
            r.expect_error(&[401], "unauthorized"),
        );
        let _ = s.hospital.cancel(&probe.id, "test:cleanup").await;
        let _ = s
            .hospital
            .set_unit_status(
                &Pool::Equipment("MRI".into()),
                "MRI-2",
                UnitStatus::Available,
            )
            .await;
    }
    eprintln!("role matrix: {calls} requests in {:?}", started.elapsed());
    p.finish();
}

// --- 2. an order's whole life ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_through_the_api() {
    let s = Server::start().await;
    let admin = s.token(Role::Admin, None).await;
    let scheduler = s.token(Role::Scheduler, None).await;
    let doctor = s.token(Role::Doctor, None).await;
    let nurse = s.token(Role::Nurse, None).await;
    let tech = s.token(Role::Technician, None).await;

    let patient = s
        .ok(
            "POST",
            "/api/patients",
            &scheduler,
            json!({"name": "Ada Lovelace", "birth_date": "1985-12-10"}),
            201,
        )
        .await;
    let pid = patient["id"].as_str().unwrap().to_string();
    assert!(pid.starts_with("p-"), "{patient}");
    assert_eq!(patient["name"], "Ada Lovelace");
    let ptok = s.token(Role::Patient, Some(&pid.parse().unwrap())).await;

    let order = s
        .ok(
            "POST",
            "/api/orders",
            &doctor,
            json!({"patient": pid, "pool": "MRI", "priority": "urgent",
                   "capabilities": ["contrast"], "reason": "headaches"}),
            201,
        )
        .await;
    let oid = order["id"].as_str().unwrap().to_string();
    assert_eq!(order["state"], "queued", "{order}");
    assert_eq!(order["patient"], pid.as_str());
    assert_eq!(order["pool"], json!({"pool": "equipment", "name": "MRI"}));
    assert_eq!(order["priority"], "urgent");
    assert_eq!(order["capabilities"], json!(["contrast"]));
    assert_eq!(order["assigned"], Value::Null);

    let queue = s
        .ok("GET", "/api/pools/MRI/queue", &nurse, Value::Null, 200)
        .await;
    assert_eq!(ids(&queue, "order"), [oid.as_str()], "{queue}");
    assert_eq!(queue[0]["position"], 1);
    assert_eq!(queue[0]["patient"], pid.as_str());
    let pool = s
        .ok("GET", "/api/pools/MRI", &nurse, Value::Null, 200)
        .await;
    assert_eq!(pool["queue_length"], 1, "{pool}");

    // Re-prioritised while queued.
    let o = s
        .ok(
            "POST",
            &format!("/api/orders/{oid}/priority"),
            &nurse,
            json!({"priority": "stat"}),
            200,
        )
        .await;
    assert_eq!(o["priority"], "stat");
    assert_eq!(o["state"], "queued");

    let o = s
        .ok(
            "POST",
            &format!("/api/orders/{oid}/call"),
            &tech,
            json!({"unit": "MRI-1"}),
            200,
        )
        .await;
    assert_eq!(o["state"], "called", "{o}");
    assert_eq!(o["assigned"], "MRI-1");
    let queue = s
        .ok("GET", "/api/pools/MRI/queue", &nurse, Value::Null, 200)
        .await;
    assert_eq!(queue, json!([]));
    let pool = s
        .ok("GET", "/api/pools/MRI", &nurse, Value::Null, 200)
        .await;
    let mri1 = pool["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "MRI-1")
        .unwrap()
        .clone();
    assert_eq!(mri1["status"], "in-use", "{pool}");
    assert_eq!(mri1["order"], oid.as_str());

    // MRI-1 is busy: another order cannot be called to it, nor can its status be set.
    let someone = s.patient("Someone Waiting").await;
    let second = s
        .ok(
            "POST",
            "/api/orders",
            &doctor,
            json!({"patient": someone, "pool": "MRI", "priority": "routine"}),
            201,
        )
        .await;
    let second = second["id"].as_str().unwrap().to_string();
    let r = s
        .call(
            "POST",
            &format!("/api/orders/{second}/call"),
            &scheduler,
            json!({"unit": "MRI-1"}),
        )
        .await;
    r.expect_error(&[409], "conflict").unwrap();
    assert_eq!(
        s.stored(&second.parse().unwrap()).await.state,
        OrderState::Queued
    );
    let r = s
        .call(
            "PUT",
            "/api/pools/MRI/units/MRI-1/status",
            &tech,
            json!({"status": "maintenance"}),
        )
        .await;
    r.expect_error(&[409], "conflict").unwrap();
    assert_eq!(s.unit_status("MRI", "MRI-1").await, UnitStatus::InUse);
    let o2 = s
        .ok(
            "POST",
            &format!("/api/orders/{second}/cancel"),
            &scheduler,
            Value::Null,
            200,
        )
        .await;
    assert_eq!(o2["state"], "cancelled");

    // Re-prioritising is for queued orders only.
    let r = s
        .call(
            "POST",
            &format!("/api/orders/{oid}/priority"),
            &scheduler,
            json!({"priority": "routine"}),
        )
        .await;
    r.expect_error(&[409], "illegal_transition").unwrap();

    let o = s
        .ok(
            "POST",
            &format!("/api/orders/{oid}/start"),
            &nurse,
            Value::Null,
            200,
        )
        .await;
    assert_eq!(o["state"], "in-progress");
    let o = s
        .ok(
            "POST",
            &format!("/api/orders/{oid}/complete"),
            &tech,
            Value::Null,
            200,
        )
        .await;
    assert_eq!(o["state"], "completed");
    let o = s
        .ok(
            "POST",
            &format!("/api/orders/{oid}/report"),
            &doctor,
            json!({"text": "No abnormality detected."}),
            200,
        )
        .await;
    assert_eq!(o["state"], "reported");

    let rec = s
        .ok(
            "GET",
            &format!("/api/orders/{oid}"),
            &admin,
            Value::Null,
            200,
        )
        .await;
    assert_eq!(rec["order"]["state"], "reported", "{rec}");
    assert_eq!(rec["order"]["priority"], "stat");
    assert_eq!(rec["order"]["assigned"], "MRI-1");
    let t = rec["transitions"].as_array().unwrap();
    let got: Vec<(Value, Value, Value)> = t
        .iter()
        .map(|t| (t["from"].clone(), t["to"].clone(), t["actor"].clone()))
        .collect();
    let a = |tok: &Tok, role: &str| json!(format!("{role}:{}", tok.id));
    assert_eq!(
        got,
        vec![
            (Value::Null, json!("queued"), a(&doctor, "doctor")),
            (json!("queued"), json!("called"), a(&tech, "technician")),
            (json!("called"), json!("in-progress"), a(&nurse, "nurse")),
            (
                json!("in-progress"),
                json!("completed"),
                a(&tech, "technician")
            ),
            (json!("completed"), json!("reported"), a(&doctor, "doctor")),
        ],
        "{rec}"
    );
    assert_eq!(t[1]["unit"], "MRI-1");
    let at: Vec<i64> = t.iter().map(|t| t["at_ms"].as_i64().unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "{at:?}");
    assert_eq!(rec["result"]["text"], "No abnormality detected.");
    assert_eq!(rec["result"]["actor"], a(&doctor, "doctor"));
    assert_eq!(rec["result"]["order"], oid.as_str());

    // The unit is free again.
    let pool = s
        .ok("GET", "/api/pools/MRI", &nurse, Value::Null, 200)
        .await;
    let mri1 = pool["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "MRI-1")
        .unwrap()
        .clone();
    assert_eq!(mri1["status"], "available", "{pool}");

    // What the patient sees.
    let mine = s
        .ok(
            "GET",
            &format!("/api/patients/{pid}"),
            &ptok,
            Value::Null,
            200,
        )
        .await;
    assert_eq!(mine["patient"]["name"], "Ada Lovelace", "{mine}");
    assert_eq!(ids(&mine["orders"], "id"), [oid.as_str()]);
    let entry = mine["queue"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["order"] == oid.as_str())
        .unwrap_or_else(|| panic!("no queue entry for {oid}: {mine}"))
        .clone();
    assert_eq!(entry["results_ready"], true, "{mine}");
    assert_eq!(entry["state"], "reported");
    let own_order = s
        .ok(
            "GET",
            &format!("/api/orders/{oid}"),
            &ptok,
            Value::Null,
            200,
        )
        .await;
    assert_eq!(own_order["result"]["text"], "No abnormality detected.");

    // A reported order cannot be cancelled, and nothing changes trying.
    let r = s
        .call(
            "POST",
            &format!("/api/orders/{oid}/cancel"),
            &doctor,
            Value::Null,
        )
        .await;
    r.expect_error(&[409], "illegal_transition").unwrap();
    let again = s
        .ok(
            "GET",
            &format!("/api/orders/{oid}"),
            &admin,
            Value::Null,
            200,
        )
        .await;
    assert_eq!(again["order"], rec["order"]);
    assert_eq!(again["transitions"], rec["transitions"]);
    assert_eq!(again["result"], rec["result"]);
    // Nor reported twice, nor started again.
    let r = s
        .call(
            "POST",
            &format!("/api/orders/{oid}/report"),
            &doctor,
            json!({"text": "second opinion"}),
        )
        .await;
    r.expect_error(&[409], "illegal_transition").unwrap();
    let r = s
        .call(
            "POST",
            &format!("/api/orders/{oid}/start"),
            &nurse,
            Value::Null,
        )
        .await;
    r.expect_error(&[409], "illegal_transition").unwrap();
    let again = s
        .ok(
            "GET",
            &format!("/api/orders/{oid}"),
            &admin,
            Value::Null,
            200,
        )
        .await;
    assert_eq!(again, rec, "a refused transition changed the order");
}

// --- 3. bad input -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_4xx_and_changes_nothing() {
    let s = Server::start().await;
    let admin = s.token(Role::Admin, None).await;
    let doctor = s.token(Role::Doctor, None).await;
    let mut p = Problems::default();

    // What the test creates deliberately: one patient, one order (CT).
    let patient = s
        .ok(
            "POST",
            "/api/patients",
            &admin,
            json!({"name": "Deliberate"}),
            201,
        )
        .await;
    let pid = patient["id"].as_str().unwrap().to_string();
    let order = s
        .ok(
            "POST",
            "/api/orders",
            &doctor,
            json!({"patient": pid, "pool": "CT", "priority": "routine"}),
            201,
        )
        .await;
    let oid = order["id"].as_str().unwrap().to_string();

    let json_ct = Some("application/json");
    // (what, method, path, token, payload, statuses, code)
    type Case = (
        &'static str,
        &'static str,
        String,
        Tok,
        Payload,
        Vec<u16>,
        &'static str,
    );
    let raw = |s: &str, ct| Payload::Raw(s.as_bytes().to_vec(), ct);
    let big = format!(r#"{{"name":"{}","id":"p-big"}}"#, "x".repeat(70 * 1024));
    let (a, d) = (&admin, &doctor);
    #[rustfmt::skip]
    let cases: Vec<Case> = vec![
        ("malformed JSON", "POST", "/api/patients".into(), a.clone(),
            raw(r#"{"name": "Trunc"#, json_ct), vec![400], "bad_request"),
        ("malformed JSON (order)", "POST", "/api/orders".into(), d.clone(),
            raw("not json at all", json_ct), vec![400], "bad_request"),
        ("trailing garbage", "POST", "/api/patients".into(), a.clone(),
            raw(r#"{"name":"X","id":"p-trailing"} junk"#, json_ct), vec![400], "bad_request"),
        ("a wrong type", "POST", "/api/orders".into(), d.clone(),
            Payload::Json(json!({"patient": pid, "pool": "MRI", "priority": 5})), vec![400], "bad_request"),
        ("a wrong type (name)", "POST", "/api/patients".into(), a.clone(),
            Payload::Json(json!({"name": 42, "id": "p-wrongtype"})), vec![400], "bad_request"),
        ("an unknown field", "POST", "/api/patients".into(), a.clone(),
            Payload::Json(json!({"name": "X", "id": "p-unknownfield", "ssn": "123"})), vec![400], "bad_request"),
        ("an unknown field (order)", "POST", "/api/orders".into(), d.clone(),
            Payload::Json(json!({"patient": pid, "pool": "MRI", "priority": "stat", "room": 4})), vec![400], "bad_request"),
        ("a missing field", "POST", "/api/orders".into(), d.clone(),
            Payload::Json(json!({"patient": pid, "pool": "MRI"})), vec![400], "bad_request"),
        ("a missing name", "POST", "/api/patients".into(), a.clone(),
            Payload::Json(json!({"id": "p-noname"})), vec![400], "bad_request"),
        ("a JSON array for an object", "POST", "/api/orders".into(), d.clone(),
            Payload::Json(json!([pid, "MRI", "stat"])), vec![400], "bad_request"),
        ("no content type", "POST", "/api/patients".into(), a.clone(),
            raw(r#"{"name":"X","id":"p-nocontenttype"}"#, None), vec![415], "unsupported_media_type"),
        ("text/plain", "POST", "/api/orders".into(), d.clone(),
            raw(&format!(r#"{{"patient":"{pid}","pool":"MRI","priority":"stat"}}"#), Some("text/plain")),
            vec![415], "unsupported_media_type"),
        ("a form", "POST", format!("/api/orders/{oid}/priority"), d.clone(),
            raw("priority=stat", Some("application/x-www-form-urlencoded")), vec![415], "unsupported_media_type"),
        ("a body over 64 KiB", "POST", "/api/patients".into(), a.clone(),
            raw(&big, json_ct), vec![413], "payload_too_large"),
        ("an unknown priority", "POST", "/api/orders".into(), d.clone(),
            Payload::Json(json!({"patient": pid, "pool": "MRI", "priority": "whenever"})), vec![400], "bad_request"),
        ("an unknown priority (re-prioritise)", "POST", format!("/api/orders/{oid}/priority"), d.clone(),
            Payload::Json(json!({"priority": "yesterday"})), vec![400], "bad_request"),
        ("a malformed patient id in a body", "POST", "/api/orders".into(), d.clone(),
            Payload::Json(json!({"patient": "p/../x", "pool": "MRI", "priority": "stat"})), vec![400], "bad_request"),
        ("a malformed patient id to register", "POST", "/api/patients".into(), a.clone(),
            Payload::Json(json!({"name": "X", "id": "p-!bad"})), vec![400], "bad_request"),
        ("an empty name", "POST", "/api/patients".into(), a.clone(),
            Payload::Json(json!({"name": "   ", "id": "p-emptyname"})), vec![422], "invalid"),
        ("a bad birth date", "POST", "/api/patients".into(), a.clone(),
            Payload::Json(json!({"name": "X", "id": "p-baddate", "birth_date": "1970-13-45"})), vec![422], "invalid"),
        ("a capability no unit has", "POST", "/api/orders".into(), d.clone(),
            Payload::Json(json!({"patient": pid, "pool": "MRI", "priority": "stat", "capabilities": ["teleport"]})),
            vec![422], "invalid"),
        ("'..%2F..' as an order id", "GET", "/api/orders/..%2F..".into(), a.clone(),
            Payload::None, vec![422, 404], ""),
        ("'o-!bad' as an order id", "GET", "/api/orders/o-!bad".into(), a.clone(),
            Payload::None, vec![422], "invalid"),
        ("'o-!bad' as an order id (cancel)", "POST", "/api/orders/o-!bad/cancel".into(), a.clone(),
            Payload::None, vec![422], "invalid"),
        ("'..%2F..' as an order id (call)", "POST", "/api/orders/..%2F../call".into(), a.clone(),
            Payload::Json(json!({})), vec![422, 404], ""),
        ("'p-!bad' as a patient id", "GET", "/api/patients/p-!bad".into(), a.clone(),
            Payload::None, vec![422], "invalid"),
        ("a 65-character order id", "GET", format!("/api/orders/o-{}", "a".repeat(63)), a.clone(),
            Payload::None, vec![422], "invalid"),
        ("an unknown order", "GET", "/api/orders/o-doesnotexist".into(), a.clone(),
            Payload::None, vec![404], "not_found"),
        ("an unknown order (cancel)", "POST", "/api/orders/o-doesnotexist/cancel".into(), a.clone(),
            Payload::None, vec![404], "not_found"),
        ("an unknown order (report)", "POST", "/api/orders/o-doesnotexist/report".into(), a.clone(),
            Payload::Json(json!({"text": "x"})), vec![404], "not_found"),
        ("an unknown patient", "GET", "/api/patients/p-nobody".into(), a.clone(),
            Payload::None, vec![404], "not_found"),
        ("an unknown pool", "GET", "/api/pools/NOPE".into(), a.clone(),
            Payload::None, vec![404], "not_found"),
        ("an unknown pool (queue)", "GET", "/api/pools/NOPE/queue".into(), a.clone(),
            Payload::None, vec![404], "not_found"),
        ("an unknown pool (events)", "GET", "/api/pools/NOPE/events".into(), a.clone(),
            Payload::None, vec![404], "not_found"),
        ("an unknown pool (order)", "POST", "/api/orders".into(), d.clone(),
            Payload::Json(json!({"patient": pid, "pool": "NOPE", "priority": "stat"})), vec![404], "not_found"),
        ("an unknown unit", "PUT", "/api/pools/MRI/units/MRI-9/status".into(), a.clone(),
            Payload::Json(json!({"status": "maintenance"})), vec![404], "not_found"),
        ("an unknown unit (events)", "GET", "/api/pools/MRI/units/MRI-9/events".into(), a.clone(),
            Payload::None, vec![404], "not_found"),
        ("an unknown unit (call)", "POST", format!("/api/orders/{oid}/call"), a.clone(),
            Payload::Json(json!({"unit": "CT-9"})), vec![404, 422], ""),
        ("an unknown token", "DELETE", "/api/tokens/t-nope".into(), a.clone(),
            Payload::None, vec![404], "not_found"),
        ("an unknown tree node", "GET", "/api/tree?path=/medical/nothing-here".into(), a.clone(),
            Payload::None, vec![404], "not_found"),
        ("an unknown route", "GET", "/api/nope".into(), a.clone(),
            Payload::None, vec![404], "not_found"),
        ("an unknown route (no /api)", "GET", "/nope/at/all".into(), a.clone(),
            Payload::None, vec![404], "not_found"),
        ("an unknown order sub-route", "POST", format!("/api/orders/{oid}/explode"), a.clone(),
            Payload::None, vec![404], "not_found"),
        ("a wrong method", "DELETE", "/api/whoami".into(), a.clone(),
            Payload::None, vec![405], "method_not_allowed"),
        ("a wrong method (pools)", "POST", "/api/pools".into(), a.clone(),
            Payload::Json(json!({})), vec![405], "method_not_allowed"),
        ("a wrong method (order)", "PUT", format!("/api/orders/{oid}"), a.clone(),
            Payload::Json(json!({})), vec![405], "method_not_allowed"),
        ("a wrong method (stream)", "POST", "/api/cluster/events".into(), a.clone(),
            Payload::Json(json!({})), vec![405], "method_not_allowed"),
        ("a wrong method (healthz)", "POST", "/healthz".into(), a.clone(),
            Payload::None, vec![405], "method_not_allowed"),
        ("in-use by hand", "PUT", "/api/pools/MRI/units/MRI-1/status".into(), a.clone(),
            Payload::Json(json!({"status": "in-use"})), vec![422], "invalid"),
        ("an unknown unit status", "PUT", "/api/pools/MRI/units/MRI-1/status".into(), a.clone(),
            Payload::Json(json!({"status": "broken"})), vec![400], "bad_request"),
        ("an empty report", "POST", format!("/api/orders/{oid}/report"), d.clone(),
            Payload::Json(json!({"text": "  "})), vec![422], "invalid"),
        ("an over-long report", "POST", format!("/api/orders/{oid}/report"), d.clone(),
            Payload::Json(json!({"text": "r".repeat(20_001)})), vec![422], "invalid"),
        ("an admin token with a patient", "POST", "/api/tokens".into(), a.clone(),
            Payload::Json(json!({"role": "admin", "patient": pid})), vec![422], "invalid"),
        ("a patient token without a patient", "POST", "/api/tokens".into(), a.clone(),
            Payload::Json(json!({"role": "patient"})), vec![422], "invalid"),
        ("a patient token for an unknown patient", "POST", "/api/tokens".into(), a.clone(),
            Payload::Json(json!({"role": "patient", "patient": "p-nobody"})), vec![422], "invalid"),
        ("role root", "POST", "/api/tokens".into(), a.clone(),
            Payload::Json(json!({"role": "root"})), vec![400, 422], ""),
        ("an over-long token label", "POST", "/api/tokens".into(), a.clone(),
            Payload::Json(json!({"role": "nurse", "label": "l".repeat(201)})), vec![422], "invalid"),
        ("a bad query value", "GET", "/api/audit?limit=lots".into(), a.clone(),
            Payload::None, vec![400], "bad_request"),
        ("an unknown query parameter", "GET", "/api/audit?bogus=1".into(), a.clone(),
            Payload::None, vec![400], "bad_request"),
        ("a negative depth", "GET", "/api/tree?depth=-1".into(), a.clone(),
            Payload::None, vec![400], "bad_request"),
        ("a relative tree path", "GET", "/api/tree?path=medical".into(), a.clone(),
            Payload::None, vec![422], "invalid"),
    ];
    for (what, m, path, tok, payload, statuses, code) in cases {
        let r = s.req(m, &path, Some(&tok.token), payload).await;
        let code = if code.is_empty() {
            // Either status; the code must match it.
            match r.status {
                400 => "bad_request",
                404 => "not_found",
                _ => "invalid",
            }
        } else {
            code
        };
        p.check(
            format!("{what}: {m} {path}"),
            r.expect_error(&statuses, code),
        );
    }

    // An order for a patient nobody registered: an unknown patient (docs/api.md: 404 for an
    // unknown patient; 422 is what a patient token for an unknown patient gets — either will
    // do, but not 201).
    let r = s
        .call(
            "POST",
            "/api/orders",
            &doctor,
            json!({"patient": "p-never-registered", "pool": "XRAY", "priority": "routine"}),
        )
        .await;
    let code = if r.status == 404 {
        "not_found"
    } else {
        "invalid"
    };
    p.check(
        "an order for an unregistered patient: POST /api/orders",
        r.expect_error(&[404, 422], code),
    );

    // Nothing was created but what the test made deliberately.
    let queue = s
        .ok("GET", "/api/pools/MRI/queue", &admin, Value::Null, 200)
        .await;
    p.ensure("the MRI queue is empty", queue == json!([]), &queue);
    let ct = s
        .ok("GET", "/api/pools/CT/queue", &admin, Value::Null, 200)
        .await;
    p.ensure(
        "the CT queue holds only the deliberate order",
        ids(&ct, "order") == [oid.as_str()],
        &ct,
    );
    let all: Vec<String> = s
        .store
        .orders_in(&OrderState::ALL)
        .await
        .unwrap()
        .into_iter()
        .map(|o| format!("{} of {} ({})", o.id, o.patient, o.pool))
        .collect();
    p.ensure(
        "the store holds only the deliberate order",
        all.len() == 1,
        format_args!("{all:?}"),
    );
    let deliberate = s.stored(&oid.parse().unwrap()).await;
    p.ensure(
        "the deliberate order is as created",
        deliberate.state == OrderState::Queued && deliberate.priority == Priority::Routine,
        format_args!("{deliberate:?}"),
    );
    for attempted in [
        "p-big",
        "p-wrongtype",
        "p-unknownfield",
        "p-noname",
        "p-nocontenttype",
        "p-emptyname",
        "p-baddate",
        "p-trailing",
        "p-never-registered",
    ] {
        let id: PatientId = attempted.parse().unwrap();
        p.ensure(
            format!("patient {attempted} was not registered"),
            s.store.patient(&id).await.unwrap().is_none(),
            "it was",
        );
    }
    let tokens = s.store.tokens().await.unwrap();
    p.ensure(
        "no token was created",
        tokens.len() == 2,
        format_args!("{tokens:?}"),
    );
    for (kind, unit) in [("MRI", "MRI-1"), ("MRI", "MRI-2")] {
        let st = s.unit_status(kind, unit).await;
        p.ensure(
            format!("{unit} is still available"),
            st == UnitStatus::Available,
            format_args!("{st:?}"),
        );
    }

    // The failed attempts that reached a handler are in the audit log, not as `ok`.
    let audit = s
        .ok("GET", "/api/audit?limit=10000", &admin, Value::Null, 200)
        .await;
    let rows = audit.as_array().unwrap();
    let has = |action: &str, outcome: &str| {
        rows.iter()
            .any(|r| r["action"] == action && r["outcome"] == outcome && r["actor"] != "")
    };
    for (action, outcome) in [
        ("patient.create", "invalid"),
        ("order.create", "not_found"),
        ("order.create", "invalid"),
        ("order.read", "not_found"),
        ("order.cancel", "not_found"),
        ("order.report", "invalid"),
        ("unit.status", "invalid"),
        ("unit.status", "not_found"),
        ("token.create", "invalid"),
        ("token.revoke", "not_found"),
        ("patient.read", "not_found"),
    ] {
        p.ensure(
            format!("the audit records {action} with outcome {outcome}"),
            has(action, outcome),
            format_args!("{audit}"),
        );
    }
    p.finish();
}

// --- 4. a patient's token -----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_token_sees_only_its_own_patient() {
    let s = Server::start().await;
    let a = s.patient("Patient A").await;
    let b = s.patient("Patient B").await;
    let oa = s.order(&a, "MRI", OrderState::Queued).await;
    let ob = s.order(&b, "MRI", OrderState::Queued).await;
    let ta = s.token(Role::Patient, Some(&a)).await;
    let mut p = Problems::default();

    let who = s.ok("GET", "/api/whoami", &ta, Value::Null, 200).await;
    assert_eq!(who["role"], "patient", "{who}");
    assert_eq!(who["patient"], a.as_str());
    assert_eq!(who["token"], ta.id.as_str());

    // Its own patient, orders and stream.
    let mine = s
        .ok("GET", &format!("/api/patients/{a}"), &ta, Value::Null, 200)
        .await;
    assert_eq!(mine["patient"]["name"], "Patient A");
    assert_eq!(ids(&mine["orders"], "id"), [oa.id.as_str()]);
    let entries = mine["queue"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{mine}");
    assert_eq!(entries[0]["order"], oa.id.as_str());
    assert!(
        !mine.to_string().contains(b.as_str()),
        "B leaks into A's record: {mine}"
    );
    assert!(
        !mine.to_string().contains(ob.id.as_str()),
        "B's order leaks: {mine}"
    );
    let rec = s
        .ok(
            "GET",
            &format!("/api/orders/{}", oa.id),
            &ta,
            Value::Null,
            200,
        )
        .await;
    assert_eq!(rec["order"]["id"], oa.id.as_str());
    let (status, ct, events) = s
        .events(&format!(
            "/api/patients/{a}/events?access_token={}",
            ta.token
        ))
        .await;
    assert_eq!((status, ct.as_str()), (200, "text/event-stream"));
    let (name, view) = events.unwrap().next(Duration::from_secs(5)).await;
    assert_eq!(name, "patient");
    assert_eq!(ids(&view["queue"], "order"), [oa.id.as_str()], "{view}");
    // Also with the header.
    let r = s
        .req(
            "GET",
            &format!("/api/patients/{a}/events"),
            Some(&ta.token),
            Payload::None,
        )
        .await;
    assert!(r.status == 200 && r.is_stream(), "{r:?}");

    // Not patient B's.
    let r = s
        .req(
            "GET",
            &format!("/api/patients/{b}"),
            Some(&ta.token),
            Payload::None,
        )
        .await;
    p.check("B's record", r.expect_error(&[403], "forbidden"));
    p.ensure(
        "B's record does not leak",
        !r.text.contains("Patient B"),
        &r.text,
    );
    let r = s
        .req(
            "GET",
            &format!("/api/patients/{b}/events"),
            Some(&ta.token),
            Payload::None,
        )
        .await;
    p.check("B's events", r.expect_error(&[403], "forbidden"));
    let (status, _, _) = s
        .events(&format!(
            "/api/patients/{b}/events?access_token={}",
            ta.token
        ))
        .await;
    p.ensure("B's events by access_token", status == 403, status);
    let r = s
        .req(
            "GET",
            &format!("/api/orders/{}", ob.id),
            Some(&ta.token),
            Payload::None,
        )
        .await;
    p.check("B's order", r.expect_error(&[404], "not_found"));
    p.ensure(
        "B's order does not leak",
        !r.text.contains(b.as_str()),
        &r.text,
    );
    // An order that does not exist looks the same as B's.
    let r2 = s
        .req(
            "GET",
            "/api/orders/o-doesnotexist",
            Some(&ta.token),
            Payload::None,
        )
        .await;
    p.check("an unknown order", r2.expect_error(&[404], "not_found"));
    // Nor can it act on its own order.
    for action in ["cancel", "call", "start", "complete", "no-show"] {
        let r = s
            .req(
                "POST",
                &format!("/api/orders/{}/{action}", oa.id),
                Some(&ta.token),
                Payload::Json(json!({})),
            )
            .await;
        p.check(
            format!("{action} of its own order"),
            r.expect_error(&[403], "forbidden"),
        );
    }
    assert_eq!(s.stored(&oa.id).await.state, OrderState::Queued);

    // Nothing about the hospital.
    for path in [
        "/api/pools",
        "/api/pools/MRI",
        "/api/pools/MRI/queue",
        "/api/pools/MRI/events",
        "/api/pools/MRI/units/MRI-1/events",
        "/api/cluster",
        "/api/cluster/events",
        "/api/events",
        "/api/tree",
        "/api/tokens",
        "/api/audit",
        &format!("/api/audit?patient={a}"),
    ] {
        let r = s.req("GET", path, Some(&ta.token), Payload::None).await;
        p.check(format!("GET {path}"), r.expect_error(&[403], "forbidden"));
    }
    let r = s
        .req(
            "POST",
            "/api/tokens",
            Some(&ta.token),
            Payload::Json(json!({"role": "patient", "patient": b})),
        )
        .await;
    p.check("POST /api/tokens", r.expect_error(&[403], "forbidden"));
    let r = s
        .req(
            "POST",
            "/api/orders",
            Some(&ta.token),
            Payload::Json(json!({"patient": a, "pool": "MRI", "priority": "stat"})),
        )
        .await;
    p.check(
        "POST /api/orders for itself",
        r.expect_error(&[403], "forbidden"),
    );
    let r = s
        .req(
            "PUT",
            "/api/pools/MRI/units/MRI-1/status",
            Some(&ta.token),
            Payload::Json(json!({"status": "offline"})),
        )
        .await;
    p.check("PUT a unit's status", r.expect_error(&[403], "forbidden"));
    p.finish();
}

// --- 5. the audit log ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_patient_data_access_is_audited() {
    let s = Server::start().await;
    let admin = s.token(Role::Admin, None).await;
    let nurse = s.token(Role::Nurse, None).await;
    let doctor = s.token(Role::Doctor, None).await;
    let tech = s.token(Role::Technician, None).await;
    let other = s.patient("Someone Else").await;
    let intruder = s.token(Role::Patient, Some(&other)).await;

    let patient = s
        .ok(
            "POST",
            "/api/patients",
            &nurse,
            json!({"name": "Audited"}),
            201,
        )
        .await;
    let pid = patient["id"].as_str().unwrap().to_string();
    s.ok(
        "GET",
        &format!("/api/patients/{pid}"),
        &nurse,
        Value::Null,
        200,
    )
    .await;
    let order = s
        .ok(
            "POST",
            "/api/orders",
            &doctor,
            json!({"patient": pid, "pool": "MRI", "priority": "asap"}),
            201,
        )
        .await;
    let oid = order["id"].as_str().unwrap().to_string();
    s.ok(
        "GET",
        &format!("/api/orders/{oid}"),
        &tech,
        Value::Null,
        200,
    )
    .await;
    let r = s
        .req(
            "GET",
            &format!("/api/patients/{pid}"),
            Some(&intruder.token),
            Payload::None,
        )
        .await;
    r.expect_error(&[403], "forbidden").unwrap();
    let r = s
        .req(
            "GET",
            &format!("/api/orders/{oid}"),
            Some(&intruder.token),
            Payload::None,
        )
        .await;
    r.expect_error(&[404], "not_found").unwrap();
    s.ok(
        "POST",
        &format!("/api/orders/{oid}/call"),
        &tech,
        json!({"unit": "MRI-2"}),
        200,
    )
    .await;

    let log = s
        .ok(
            "GET",
            &format!("/api/audit?patient={pid}"),
            &admin,
            Value::Null,
            200,
        )
        .await;
    let rows = log.as_array().unwrap();
    let got: Vec<(String, String, String, String, Value)> = rows
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["actor"].as_str().unwrap().to_string(),
                r["role"].as_str().unwrap().to_string(),
                r["outcome"].as_str().unwrap().to_string(),
                r["order"].clone(),
            )
        })
        .collect();
    let row = |action: &str, t: &Tok, role: &str, outcome: &str, order: Value| {
        (
            action.to_string(),
            t.id.clone(),
            role.to_string(),
            outcome.to_string(),
            order,
        )
    };
    let o = json!(oid);
    assert_eq!(
        got,
        vec![
            row("patient.create", &nurse, "nurse", "ok", Value::Null),
            row("patient.read", &nurse, "nurse", "ok", Value::Null),
            row("order.create", &doctor, "doctor", "ok", o.clone()),
            row("order.read", &tech, "technician", "ok", o.clone()),
            row("patient.read", &intruder, "patient", "denied", Value::Null),
            row("order.read", &intruder, "patient", "denied", o.clone()),
            // A call starts in the tree: recorded before it starts, and with the store's write.
            row("order.call", &tech, "technician", "started", o.clone()),
            row("order.call", &tech, "technician", "ok", o.clone()),
        ],
        "{log}"
    );
    for r in rows {
        assert_eq!(r["patient"], pid.as_str(), "{r}");
        assert!(r["at_ms"].as_i64().unwrap() > 0, "{r}");
    }
    let seqs: Vec<i64> = rows.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seq not increasing: {seqs:?}"
    );

    // By actor: only the intruder's two attempts.
    let mine = s
        .ok(
            "GET",
            &format!("/api/audit?actor={}", intruder.id),
            &admin,
            Value::Null,
            200,
        )
        .await;
    let actions: Vec<(&str, &str)> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [("patient.read", "denied"), ("order.read", "denied")],
        "{mine}"
    );
    // Paging forward.
    let after = s
        .ok(
            "GET",
            &format!("/api/audit?patient={pid}&after_seq={}&limit=2", seqs[2]),
            &admin,
            Value::Null,
            200,
        )
        .await;
    let paged: Vec<i64> = after
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(paged, seqs[3..5], "{after}");
}

// --- 6. live streams ----------------------------------------------------------------------------

fn queue_has(view: &Value, order: &str) -> bool {
    view["queue"]
        .as_array()
        .is_some_and(|q| q.iter().any(|r| r["order"] == order))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_pushes_queue_changes_and_measures_latency() {
    let s = Server::start().await;
    let doctor = s.token(Role::Doctor, None).await;
    let scheduler = s.token(Role::Scheduler, None).await;
    let nurse = s.token(Role::Nurse, None).await;
    let pid = s.patient("Streamed").await;

    let (status, ct, events) = s
        .events(&format!(
            "/api/pools/MRI/events?access_token={}",
            nurse.token
        ))
        .await;
    assert_eq!((status, ct.as_str()), (200, "text/event-stream"));
    let mut events = events.unwrap();
    let (name, first) = events.next(Duration::from_secs(5)).await;
    assert_eq!(name, "pool");
    assert_eq!(first["name"], "MRI", "{first}");
    assert_eq!(first["pool"], "equipment");
    assert_eq!(first["queue"], json!([]), "{first}");
    assert_eq!(first["units"].as_array().unwrap().len(), 2, "{first}");

    const N: usize = 50;
    let mut latencies = Vec::with_capacity(N);
    let mut created = Vec::with_capacity(N);
    for _ in 0..N {
        let t0 = Instant::now();
        let o = s
            .ok(
                "POST",
                "/api/orders",
                &doctor,
                json!({"patient": pid, "pool": "MRI", "priority": "routine"}),
                201,
            )
            .await;
        let id = o["id"].as_str().unwrap().to_string();
        let view = events
            .until(Duration::from_secs(5), |name, v| {
                name == "pool" && queue_has(v, &id)
            })
            .await;
        latencies.push(t0.elapsed());
        assert!(view["queue"].as_array().unwrap().len() <= created.len() + 1);
        created.push(id);
    }
    // Every order was seen, and the last view holds them all, in arrival order.
    assert_eq!(created.len(), N);
    let last = s
        .ok("GET", "/api/pools/MRI/queue", &nurse, Value::Null, 200)
        .await;
    assert_eq!(ids(&last, "order"), created);
    latencies.sort();
    let pct = |q: f64| latencies[((latencies.len() as f64 * q).ceil() as usize).clamp(1, N) - 1];
    eprintln!(
        "SSE pool event after POST /api/orders ({N} orders, create -> event): p50 {:?}, p99 {:?}, max {:?}",
        pct(0.50),
        pct(0.99),
        latencies[N - 1]
    );

    // A call shows in the pool stream (the order leaves the queue, the unit is in use) ...
    let called = created[0].clone();
    // ... and in the patient's own stream.
    let other = s.patient("Called Patient").await;
    let ptok = s.token(Role::Patient, Some(&other)).await;
    let mine = s
        .ok(
            "POST",
            "/api/orders",
            &doctor,
            json!({"patient": other, "pool": "CT", "priority": "stat"}),
            201,
        )
        .await;
    let mine = mine["id"].as_str().unwrap().to_string();
    let (status, _, pevents) = s
        .events(&format!(
            "/api/patients/{other}/events?access_token={}",
            ptok.token
        ))
        .await;
    assert_eq!(status, 200);
    let mut pevents = pevents.unwrap();
    let (name, snapshot) = pevents.next(Duration::from_secs(5)).await;
    assert_eq!(name, "patient");
    let entry = &snapshot["queue"][0];
    assert_eq!(entry["order"], mine.as_str(), "{snapshot}");
    assert_eq!(entry["state"], "queued");
    // (No position or estimated wait here: the dispatcher writes those, and none runs.)
    assert!(
        entry.get("called_to").is_none_or(Value::is_null),
        "{snapshot}"
    );

    s.ok(
        "POST",
        &format!("/api/orders/{called}/call"),
        &scheduler,
        json!({"unit": "MRI-2"}),
        200,
    )
    .await;
    let view = events
        .until(Duration::from_secs(5), |_, v| !queue_has(v, &called))
        .await;
    let mri2 = view["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "MRI-2")
        .unwrap();
    assert_eq!(mri2["status"], "in-use", "{view}");
    assert_eq!(mri2["order"], called.as_str());

    let t0 = Instant::now();
    s.ok(
        "POST",
        &format!("/api/orders/{mine}/call"),
        &scheduler,
        json!({}),
        200,
    )
    .await;
    let view = pevents
        .until(Duration::from_secs(5), |name, v| {
            name == "patient" && v["queue"][0]["called_to"].is_string()
        })
        .await;
    eprintln!("patient stream: called_to after {:?}", t0.elapsed());
    let entry = &view["queue"][0];
    assert_eq!(entry["order"], mine.as_str(), "{view}");
    assert_eq!(entry["state"], "called");
    assert!(
        entry["called_to"].as_str().unwrap().starts_with("CT-"),
        "{view}"
    );
}

/// Opens an event stream over a bare TCP connection (so the test decides when it closes),
/// sending `after` right after the request, and reads until the first event has arrived.
async fn raw_stream(s: &Server, path: &str, after: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let addr = s.base.trim_start_matches("http://").to_string();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n{after}");
    tokio::task::spawn_blocking(move || {
        let mut conn = std::net::TcpStream::connect(&addr).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        conn.write_all(request.as_bytes()).unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&seen).contains("\ndata:") {
            let n = conn.read(&mut buf).expect("no first event within 10 s");
            assert_ne!(
                n,
                0,
                "the stream closed: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.extend_from_slice(&buf[..n]);
        }
        let head = String::from_utf8_lossy(&seen);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        conn
    })
    .await
    .unwrap()
}

/// Waits until `n` streams are open, failing after `within`; how long it took.
async fn await_open_streams(s: &Server, n: usize, within: Duration, what: &str) -> Duration {
    let t = Instant::now();
    while s.state.open_streams() != n {
        assert!(
            t.elapsed() < within,
            "{what}: {} streams open after {:?}, expected {n}",
            s.state.open_streams(),
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    t.elapsed()
}

/// Issue 12, defect 7: a stream whose client has closed its connection gives its slot back
/// within a couple of seconds. A plain close is seen at once; a client that sent more after its
/// request (a stray CRLF, a pipelined request) is one hyper does not read, so its close is seen
/// only when a write fails: the second keep-alive after the close (measured before the fix,
/// with 15 s keep-alives: about 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_closed_stream_frees_its_slot_promptly() {
    let s = Server::start().await;
    let nurse = s.token(Role::Nurse, None).await;
    let path = format!("/api/pools/MRI/events?access_token={}", nurse.token);
    assert_eq!(s.state.open_streams(), 0);
    for (what, after) in [
        ("a plain close", ""),
        ("a close after a stray CRLF", "\r\n"),
        (
            "a close after a pipelined request",
            "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
    ] {
        let conn = raw_stream(&s, &path, after).await;
        assert_eq!(s.state.open_streams(), 1, "{what}");
        drop(conn);
        let took = await_open_streams(&s, 0, Duration::from_secs(4), what).await;
        eprintln!("{what}: the stream's slot was free again after {took:?}");
    }
}

/// Issue 12, defect 7: one token cannot take every stream slot. At its cap (the default, 8) it
/// gets 429 `too_many_streams` (audited), on every stream route, while another token still gets
/// a stream; once one of its streams is closed it may open another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_stream_cap_per_token_leaves_slots_for_others() {
    let s = Server::start().await;
    let cap = Limits::default().max_streams_per_token;
    let admin = s.token(Role::Admin, None).await;
    let nurse = s.token(Role::Nurse, None).await;
    let p = s.patient("Many Streams").await;
    let mine = s.token(Role::Patient, Some(&p)).await;
    let own = format!("/api/patients/{p}/events?access_token={}", mine.token);
    let mut held = Vec::new();
    for _ in 0..cap {
        held.push(raw_stream(&s, &own, "").await);
    }
    assert_eq!(s.state.open_streams(), cap);
    let refused = s
        .req(
            "GET",
            &format!("/api/patients/{p}/events"),
            Some(&mine.token),
            Payload::None,
        )
        .await;
    refused
        .expect_error(&[429], "too_many_streams")
        .unwrap_or_else(|e| panic!("stream {} of one token: {e}", cap + 1));
    assert_eq!(s.state.open_streams(), cap);
    // Every stream route counts against the same cap (a staff token's mix of routes).
    let routes = [
        "/api/events".to_string(),
        "/api/pools/MRI/events".to_string(),
        "/api/pools/MRI/units/MRI-1/events".to_string(),
        format!("/api/patients/{p}/events"),
        "/api/cluster/events".to_string(),
    ];
    for route in routes.iter().cycle().take(cap) {
        held.push(raw_stream(&s, &format!("{route}?access_token={}", nurse.token), "").await);
    }
    assert_eq!(s.state.open_streams(), 2 * cap);
    for route in &routes {
        let r = s.req("GET", route, Some(&nurse.token), Payload::None).await;
        r.expect_error(&[429], "too_many_streams")
            .unwrap_or_else(|e| panic!("the nurse's stream {} on {route}: {e}", cap + 1));
    }
    // Another token still gets a stream.
    let doctor = s.token(Role::Doctor, None).await;
    let (status, _, events) = s
        .events(&format!(
            "/api/pools/CT/events?access_token={}",
            doctor.token
        ))
        .await;
    assert_eq!(status, 200);
    events.unwrap().next(Duration::from_secs(5)).await;
    await_open_streams(
        &s,
        2 * cap + 1,
        Duration::from_secs(1),
        "the doctor's stream",
    )
    .await;
    // The refusal is audited like any other.
    let audit = s
        .ok(
            "GET",
            &format!("/api/audit?patient={p}"),
            &admin,
            Value::Null,
            200,
        )
        .await;
    let refusals: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "patient.stream" && r["outcome"] == "too_many_streams")
        .collect();
    assert_eq!(refusals.len(), 2, "{audit}");
    assert_eq!(refusals[0]["actor"], mine.id.as_str());
    // A closed stream gives the token its place back.
    drop(held.remove(0));
    await_open_streams(&s, 2 * cap, Duration::from_secs(4), "after a close").await;
    held.push(raw_stream(&s, &own, "").await);
    assert_eq!(s.state.open_streams(), 2 * cap + 1);
}

// --- 7. revocation ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_is_refused() {
    let s = Server::start().await;
    let admin = s.token(Role::Admin, None).await;
    let created = s
        .ok(
            "POST",
            "/api/tokens",
            &admin,
            json!({"role": "nurse", "label": "night shift"}),
            201,
        )
        .await;
    let nurse = Tok {
        id: created["id"].as_str().unwrap().to_string(),
        token: created["token"].as_str().unwrap().to_string(),
    };
    assert!(nurse.id.starts_with("t-"), "{created}");
    assert!(
        nurse.token.starts_with("mkt_") && nurse.token.len() == 68,
        "{created}"
    );
    assert_eq!(created["role"], "nurse");
    assert_eq!(created["label"], "night shift");

    // In use (and so in the instance's cache).
    let who = s.ok("GET", "/api/whoami", &nurse, Value::Null, 200).await;
    assert_eq!(who["token"], nurse.id.as_str());
    assert_eq!(who["role"], "nurse");
    s.ok("GET", "/api/pools", &nurse, Value::Null, 200).await;
    let (status, _, _) = s
        .events(&format!("/api/cluster/events?access_token={}", nurse.token))
        .await;
    assert_eq!(status, 200);

    // The list shows it, never its text.
    let list = s.ok("GET", "/api/tokens", &admin, Value::Null, 200).await;
    assert!(!list.to_string().contains(&nurse.token), "{list}");
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == nurse.id.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["revoked_ms"], Value::Null);
    assert_eq!(row["role"], "nurse");

    let r = s
        .call(
            "DELETE",
            &format!("/api/tokens/{}", nurse.id),
            &admin,
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);

    // Refused at once, everywhere.
    for path in ["/api/whoami", "/api/pools"] {
        let r = s.call("GET", path, &nurse, Value::Null).await;
        r.expect_error(&[401], "unauthorized").unwrap();
    }
    let r = s
        .req(
            "GET",
            &format!("/api/cluster/events?access_token={}", nurse.token),
            None,
            Payload::None,
        )
        .await;
    r.expect_error(&[401], "unauthorized").unwrap();
    let list = s.ok("GET", "/api/tokens", &admin, Value::Null, 200).await;
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == nurse.id.as_str())
        .unwrap()
        .clone();
    assert!(row["revoked_ms"].as_i64().unwrap() > 0, "{row}");
    // Revoking twice: not found; the admin still works.
    let r = s
        .call(
            "DELETE",
            &format!("/api/tokens/{}", nurse.id),
            &admin,
            Value::Null,
        )
        .await;
    r.expect_error(&[404], "not_found").unwrap();
    s.ok("GET", "/api/whoami", &admin, Value::Null, 200).await;
    // An admin may revoke its own token; then it is refused too.
    let r = s
        .call(
            "DELETE",
            &format!("/api/tokens/{}", admin.id),
            &admin,
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text);
    let r = s.call("GET", "/api/whoami", &admin, Value::Null).await;
    r.expect_error(&[401], "unauthorized").unwrap();
}

// --- 8. the OpenAPI document --------------------------------------------------------------------

/// Every parameter the OpenAPI document declares `in: path` appears as `{name}` in its
/// route's path (14 query parameters — `/api/audit`'s, `/api/alarms`', `/api/tree`'s,
/// `/api/ward`'s, a patient's vitals' — were declared as required path parameters, so
/// generated clients could not call those routes), and the query parameters are optional.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openapi_parameters_are_where_the_route_takes_them() {
    let s = Server::start().await;
    let r = s.req("GET", "/api/openapi.json", None, Payload::None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut p = Problems::default();
    let mut queries = 0;
    for (path, item) in r.json["paths"].as_object().expect("paths") {
        let item = item.as_object().unwrap();
        for (method, op) in item {
            let params = match method.as_str() {
                "parameters" => op.as_array(),
                _ => op.get("parameters").and_then(Value::as_array),
            };
            for param in params.into_iter().flatten() {
                let name = param["name"].as_str().unwrap_or_default();
                let what = format!("{method} {path}: parameter {name:?}");
                match param["in"].as_str() {
                    Some("path") => {
                        p.ensure(
                            &what,
                            path.contains(&format!("{{{name}}}")),
                            "declared in: path, but the path has no such segment",
                        );
                        p.ensure(
                            &what,
                            param["required"] == true,
                            "a path parameter is required",
                        );
                    }
                    // FHIR searches require theirs (`?patient=`); the JSON API's are filters.
                    Some("query") if path.starts_with("/api/") => {
                        queries += 1;
                        p.ensure(
                            &what,
                            param["required"] != true,
                            "every query parameter of the JSON API is optional",
                        );
                    }
                    Some("query") => {}
                    other => p.ensure(&what, false, format_args!("in: {other:?}")),
                }
            }
        }
    }
    // The ones that were wrong, by name: /api/audit's 5, /api/alarms' 2, vitals' 4, the
    // tree's 2, the ward's 1 — and /api/history's 3, which were right.
    p.ensure("query parameters", queries >= 17, queries);
    for (path, name) in [
        ("/api/audit", "actor"),
        ("/api/audit", "after_seq"),
        ("/api/alarms", "limit"),
        ("/api/tree", "depth"),
        ("/api/ward", "ward"),
        ("/api/patients/{id}/vitals", "since_ms"),
    ] {
        let found = r.json["paths"][path]["get"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|q| q["name"] == name && q["in"] == "query");
        p.ensure(format!("GET {path}?{name}"), found, "not a query parameter");
    }
    p.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_every_route() {
    let s = Server::start().await;
    let r = s.req("GET", "/api/openapi.json", None, Payload::None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.content_type.starts_with("application/json"),
        "{}",
        r.content_type
    );
    let doc = &r.json;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "openapi: {}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    // Every route of docs/api.md (the routes tables, the streams, the health checks); at
    // least these, which the docs have always had.
    let documented = documented_routes();
    let always = [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/api/whoami"),
        ("get", "/api/pools"),
        ("get", "/api/pools/{pool}"),
        ("get", "/api/pools/{pool}/queue"),
        ("put", "/api/pools/{pool}/units/{unit}/status"),
        ("post", "/api/patients"),
        ("get", "/api/patients/{id}"),
        ("post", "/api/orders"),
        ("get", "/api/orders/{id}"),
        ("post", "/api/orders/{id}/priority"),
        ("post", "/api/orders/{id}/cancel"),
        ("post", "/api/orders/{id}/call"),
        ("post", "/api/orders/{id}/start"),
        ("post", "/api/orders/{id}/complete"),
        ("post", "/api/orders/{id}/report"),
        ("post", "/api/orders/{id}/no-show"),
        ("get", "/api/cluster"),
        ("get", "/api/tree"),
        ("post", "/api/tokens"),
        ("get", "/api/tokens"),
        ("delete", "/api/tokens/{id}"),
        ("get", "/api/audit"),
        ("get", "/api/pools/{pool}/events"),
        ("get", "/api/pools/{pool}/units/{unit}/events"),
        ("get", "/api/patients/{id}/events"),
        ("get", "/api/cluster/events"),
    ];
    for (m, path) in always {
        assert!(
            documented.contains(&(m.to_string(), path.to_string())),
            "docs/api.md no longer names {} {path}",
            m.to_uppercase()
        );
    }
    let routes: Vec<(&str, &str)> = documented
        .iter()
        .map(|(m, p)| (m.as_str(), p.as_str()))
        .collect();
    let mut missing = Vec::new();
    for &(m, path) in &routes {
        match paths.get(path).and_then(|p| p.get(m)) {
            None => missing.push(format!("{} {path}", m.to_uppercase())),
            Some(op) if path.starts_with("/api/") => {
                assert_eq!(
                    op["security"],
                    json!([{"bearer": []}]),
                    "{} {path} does not declare the bearer scheme",
                    m.to_uppercase()
                );
            }
            Some(_) => {}
        }
    }
    assert!(
        missing.is_empty(),
        "missing from the OpenAPI document: {missing:?}"
    );
    // Nothing it lists is unknown to the docs.
    let extra: Vec<String> = paths
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .into_iter()
                .flat_map(|o| o.keys())
                .filter(|m| ["get", "put", "post", "delete", "patch"].contains(&m.as_str()))
                .filter(|m| !routes.contains(&(m.as_str(), path.as_str())))
                .map(move |m| format!("{} {path}", m.to_uppercase()))
        })
        .collect();
    assert!(extra.is_empty(), "not in docs/api.md: {extra:?}");
    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http", "{scheme}");
    assert_eq!(
        scheme["scheme"].as_str().map(str::to_lowercase).as_deref(),
        Some("bearer")
    );

    // Health needs no token either.
    let h = s.req("GET", "/healthz", None, Payload::None).await;
    assert_eq!((h.status, &h.json), (200, &json!({"status": "ok"})));
    let ready = s.req("GET", "/readyz", None, Payload::None).await;
    assert_eq!(ready.status, 200, "{}", ready.text);
    assert_eq!(ready.json["ready"], true);
}

/// A revoked token's open event stream ends (the token is checked again every `CACHE_TTL`), and
/// a feed whose last client has gone stops with its watch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_token_ends_its_streams_and_idle_feeds_stop() {
    let s = Server::start().await;
    let admin = s.token(Role::Admin, None).await;
    let p = s.patient("Stream Test").await;
    let mine = s.token(Role::Patient, Some(&p)).await;
    assert_eq!(s.state.live_feeds(), 0);
    let (status, _, events) = s
        .events(&format!(
            "/api/patients/{p}/events?access_token={}",
            mine.token
        ))
        .await;
    assert_eq!(status, 200);
    let mut events = events.unwrap();
    let (name, _) = events.next(Duration::from_secs(5)).await;
    assert_eq!(name, "patient");
    assert_eq!(s.state.live_feeds(), 1);

    let revoked = s
        .req(
            "DELETE",
            &format!("/api/tokens/{}", mine.id),
            Some(&admin.token),
            Payload::None,
        )
        .await;
    assert_eq!(revoked.status, 204, "{}", revoked.text);
    let t = std::time::Instant::now();
    let ended = tokio::time::timeout(
        medkeeper_server::auth::CACHE_TTL + Duration::from_secs(5),
        async { while events.rx.recv().await.is_some() {} },
    )
    .await;
    assert!(ended.is_ok(), "the revoked token's stream is still open");
    eprintln!(
        "revoked token's stream ended {:?} after the revocation",
        t.elapsed()
    );
    // Its feed had no other client: it stops at once (the hub is told, it does not poll).
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    while s.state.live_feeds() != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the feed kept running"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Issue 13: a feed follows the instance to its next session. The stream's session ends
/// (closed, as after an expiry); the instance serves a new one; a change made through the new
/// session reaches the same open stream, still from one feed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue13_a_stream_follows_the_instance_to_a_new_session() {
    let s = Server::start().await;
    let nurse = s.token(Role::Nurse, None).await;
    let (status, _, events) = s
        .events(&format!(
            "/api/pools/MRI/events?access_token={}",
            nurse.token
        ))
        .await;
    assert_eq!(status, 200);
    let mut events = events.unwrap();
    let (name, _) = events.next(Duration::from_secs(5)).await;
    assert_eq!(name, "pool");
    assert_eq!(s.state.live_feeds(), 1);

    s.hospital.session().close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let session: Arc<dyn Session> = Arc::new(
        s._engine
            .connect(SessionOptions {
                timeout: Duration::from_secs(10),
            })
            .await,
    );
    let next = Arc::new(Hospital::new(session, s.store.clone(), HospitalConfig::demo()).unwrap());
    s.state.set_hospital(Some(next.clone()));
    next.set_unit_status(
        &Pool::Equipment("MRI".into()),
        "MRI-1",
        UnitStatus::Maintenance,
    )
    .await
    .unwrap();
    events
        .until(Duration::from_secs(5), |name, v| {
            name == "pool"
                && v["units"].as_array().is_some_and(|units| {
                    units
                        .iter()
                        .any(|u| u["name"] == "MRI-1" && u["status"] == "maintenance")
                })
        })
        .await;
    assert_eq!(s.state.live_feeds(), 1);
}

// --- issue 12: malformed names, impossible dates, the docs on another patient's order --------

/// Malformed path segments, percent-encoded as a client sends them: what the test calls the
/// form, and the encoded text. Each is a malformed name for every kind of path segment (pool,
/// unit, patient id, order id, token id).
const MALFORMED_SEGMENTS: &[(&str, &str)] = &[
    ("'..'", "%2E%2E"),
    ("'.'", "%2E"),
    ("'MRI-1/' (a trailing encoded slash)", "MRI-1%2F"),
    ("an encoded slash", "MRI%2F1"),
    ("an encoded traversal", "..%2F..%2Fmembers"),
    ("a NUL byte", "MRI-1%00"),
    ("only a NUL byte", "%00"),
    ("a space", "MRI%201"),
    ("non-ASCII", "MRI-%C3%89"),
    ("not UTF-8", "MRI-%FF"),
    (
        "65 characters",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ),
    ("a very long name", "{long}"),
];

/// Issue 12, defect 5: every route that turns a path segment (or a name in a body or query)
/// into a tree path or a store key answers a malformed one with 422 `invalid` and an unknown
/// well-formed one with 404 `not_found` — never a 5xx — and changes nothing. The hospital
/// itself refuses malformed names too, whoever calls it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_malformed_names_in_paths_are_422_never_5xx() {
    let s = Server::start().await;
    let admin = s.token(Role::Admin, None).await;
    let patient = s.patient("Malformed Names").await;
    let order = s.order(&patient, "CT", OrderState::Queued).await;
    let mut p = Problems::default();
    let long = "a".repeat(5000);

    // Every route with a path segment, `{x}` where the segment under test goes; the others are
    // valid and exist. The body each needs to get past its own checks.
    #[rustfmt::skip]
    let routes: Vec<(&str, String, Value)> = vec![
        ("GET", "/api/pools/{x}".into(), Value::Null),
        ("GET", "/api/pools/{x}/queue".into(), Value::Null),
        ("GET", "/api/pools/{x}/events".into(), Value::Null),
        ("PUT", "/api/pools/{x}/units/MRI-1/status".into(), json!({"status": "maintenance"})),
        ("PUT", "/api/pools/MRI/units/{x}/status".into(), json!({"status": "maintenance"})),
        ("GET", "/api/pools/{x}/units/MRI-1/events".into(), Value::Null),
        ("GET", "/api/pools/MRI/units/{x}/events".into(), Value::Null),
        ("GET", "/api/patients/{x}".into(), Value::Null),
        ("GET", "/api/patients/{x}/events".into(), Value::Null),
        ("GET", "/api/orders/{x}".into(), Value::Null),
        ("POST", "/api/orders/{x}/priority".into(), json!({"priority": "stat"})),
        ("POST", "/api/orders/{x}/cancel".into(), Value::Null),
        ("POST", "/api/orders/{x}/call".into(), json!({})),
        ("POST", "/api/orders/{x}/start".into(), Value::Null),
        ("POST", "/api/orders/{x}/complete".into(), Value::Null),
        ("POST", "/api/orders/{x}/report".into(), json!({"text": "x"})),
        ("POST", "/api/orders/{x}/no-show".into(), Value::Null),
        ("DELETE", "/api/tokens/{x}".into(), Value::Null),
    ];
    for (m, route, body) in &routes {
        for (form, seg) in MALFORMED_SEGMENTS {
            let path = route.replace("{x}", &seg.replace("{long}", &long));
            let r = s.call(m, &path, &admin, body.clone()).await;
            p.ensure(format!("{form} in {m} {route}"), r.status < 500, &r.text);
            p.check(
                format!("{form} in {m} {route}"),
                r.expect_error(&[422], "invalid"),
            );
        }
        // Well-formed but naming nothing.
        let r = s
            .call(m, &route.replace("{x}", "NOPE-1"), &admin, body.clone())
            .await;
        p.check(
            format!("an unknown name in {m} {route}"),
            r.expect_error(&[404], "not_found"),
        );
    }
    // A pool's internals are not units.
    for unit in ["lock", "queue"] {
        let r = s
            .call(
                "PUT",
                &format!("/api/pools/MRI/units/{unit}/status"),
                &admin,
                json!({"status": "offline"}),
            )
            .await;
        p.check(
            format!("{unit} as a unit (status)"),
            r.expect_error(&[404], "not_found"),
        );
        let r = s
            .call(
                "GET",
                &format!("/api/pools/MRI/units/{unit}/events"),
                &admin,
                Value::Null,
            )
            .await;
        p.check(
            format!("{unit} as a unit (events)"),
            r.expect_error(&[404], "not_found"),
        );
    }
    // An unencoded trailing slash or an empty segment is another route: 404, not a 5xx.
    for path in [
        "/api/pools/MRI/units/MRI-1//status",
        "/api/pools//queue",
        "/api/orders//cancel",
    ] {
        let r = s
            .call("PUT", path, &admin, json!({"status": "offline"}))
            .await;
        p.ensure(format!("PUT {path}"), r.status < 500, &r.text);
    }

    // Names inside bodies: a unit to call to, a pool to order from.
    let call = format!("/api/orders/{}/call", order.id);
    for bad in ["..", "CT-1/", "CT/1", "CT-1\0", "\0", "CT-É", long.as_str()] {
        let r = s.call("POST", &call, &admin, json!({"unit": bad})).await;
        p.check(
            format!("unit {:?} to call to", &bad[..bad.len().min(12)]),
            r.expect_error(&[422], "invalid"),
        );
        let r = s
            .call(
                "POST",
                "/api/orders",
                &admin,
                json!({"patient": patient, "pool": bad, "priority": "stat"}),
            )
            .await;
        p.check(
            format!("pool {:?} in a new order", &bad[..bad.len().min(12)]),
            r.expect_error(&[422], "invalid"),
        );
    }

    // Names in queries: the tree view's path, the audit log's filters.
    #[rustfmt::skip]
    let queries: Vec<(String, u16, &str)> = vec![
        ("/api/tree?path=/medical/..".into(), 422, "invalid"),
        ("/api/tree?path=/medical/resources/equipment/MRI/".into(), 422, "invalid"),
        ("/api/tree?path=/medical/./resources".into(), 422, "invalid"),
        ("/api/tree?path=/medical%00".into(), 422, "invalid"),
        ("/api/tree?path=//medical".into(), 422, "invalid"),
        ("/api/tree?path=/medical/%C3%89".into(), 404, "not_found"),
        (format!("/api/tree?path=/medical/{long}"), 404, "not_found"),
        // Not UTF-8: decoded lossily, then refused as a path (it is not absolute).
        ("/api/tree?path=%FF".into(), 422, "invalid"),
        ("/api/audit?patient=..".into(), 400, "bad_request"),
        // A NUL in any query parameter is refused before it is parsed (PostgreSQL answered
        // it with a 500): see nul_and_control_characters_in_text_and_queries_are_422_....
        ("/api/audit?patient=%00".into(), 422, "invalid"),
        ("/api/audit?actor=%00".into(), 422, "invalid"),
    ];
    for (path, status, code) in &queries {
        let r = s.call("GET", path, &admin, Value::Null).await;
        p.ensure(format!("GET {path}"), r.status < 500, &r.text);
        p.check(format!("GET {path}"), r.expect_error(&[*status], code));
    }
    for path in ["/api/audit?actor=..%2F.."] {
        let r = s.call("GET", path, &admin, Value::Null).await;
        p.ensure(format!("GET {path}"), r.status == 200, &r.text);
    }

    // Nothing changed.
    for unit in ["MRI-1", "MRI-2"] {
        let st = s.unit_status("MRI", unit).await;
        p.ensure(
            format!("{unit} is still available"),
            st == UnitStatus::Available,
            format_args!("{st:?}"),
        );
    }
    let o = s.stored(&order.id).await;
    p.ensure(
        "the order is still queued",
        o.state == OrderState::Queued && o.priority == Priority::Routine,
        format_args!("{o:?}"),
    );
    p.ensure(
        "no token was revoked",
        s.store
            .tokens()
            .await
            .unwrap()
            .iter()
            .all(|t| t.revoked_ms.is_none()),
        "one was",
    );

    // The hospital refuses malformed names itself (defence in depth): `Invalid` before any
    // path is built, `NotFound` for a pool's internals.
    let h = &s.hospital;
    let mri = Pool::Equipment("MRI".into());
    for unit in [
        "..",
        ".",
        "MRI-1/",
        "MRI/1",
        "MRI-1\0",
        "",
        "MRI-É",
        long.as_str(),
    ] {
        let r = h.set_unit_status(&mri, unit, UnitStatus::Maintenance).await;
        p.ensure(
            format!("set_unit_status(MRI, {:?})", &unit[..unit.len().min(12)]),
            matches!(r, Err(medkeeper_hospital::Error::Invalid(_))),
            format_args!("{r:?}"),
        );
    }
    for unit in ["lock", "queue"] {
        let r = h.set_unit_status(&mri, unit, UnitStatus::Offline).await;
        p.ensure(
            format!("set_unit_status(MRI, {unit:?})"),
            matches!(r, Err(medkeeper_hospital::Error::NotFound(_))),
            format_args!("{r:?}"),
        );
    }
    for pool in ["..", "MRI/..", "MRI\0", ""] {
        let bad = Pool::Equipment(pool.into());
        let r = h
            .set_unit_status(&bad, "MRI-1", UnitStatus::Maintenance)
            .await;
        p.ensure(
            format!("set_unit_status({pool:?}, MRI-1)"),
            matches!(r, Err(medkeeper_hospital::Error::Invalid(_))),
            format_args!("{r:?}"),
        );
        let r = h.units(&bad).await;
        p.ensure(
            format!("units({pool:?})"),
            matches!(r, Err(medkeeper_hospital::Error::Invalid(_))),
            format_args!("{r:?}"),
        );
    }
    let r = h.call(&order.id, Some("../CT-1"), "test").await;
    p.ensure(
        "call(order, \"../CT-1\")",
        matches!(r, Err(medkeeper_hospital::Error::Invalid(_))),
        format_args!("{r:?}"),
    );
    p.finish();
}

/// A date `days` from today (UTC), `YYYY-MM-DD`.
fn date_from_today(days: i64) -> String {
    let now = time::OffsetDateTime::from_unix_timestamp(now_ms() / 1000).unwrap();
    let d = now.date() + time::Duration::days(days);
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Issue 12, defect 6: a birth date must be a real calendar date from 1900-01-01 to today, and
/// a name must have a letter or digit and no control characters; each refusal is 422 `invalid`
/// with a message naming the field, and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_impossible_birth_dates_and_control_character_names_are_422() {
    let s = Server::start().await;
    let admin = s.token(Role::Admin, None).await;
    let mut p = Problems::default();
    let in_two_days = date_from_today(2);

    let mut refused: Vec<(String, Value, &str)> = Vec::new();
    for d in [
        "1970-02-31",
        "2023-02-29",
        "1970-04-31",
        "1900-02-29",
        "1970-13-01",
        "1970-00-10",
        "1970-01-00",
        "1899-12-31",
        "0000-01-01",
        "2999-01-01",
        in_two_days.as_str(),
        "+1970-01-01",
        "-1970-01-01",
        "1970-1-31",
        "19700131",
        "1970-01-31T00:00",
        "1970-01-31 ",
        "",
        "yesterday",
    ] {
        refused.push((
            format!("birth_date {d:?}"),
            json!({"name": "Date Test", "birth_date": d}),
            "birth_date",
        ));
    }
    for n in [
        "\0",
        "\0\0\0",
        "Ann\0",
        " \t\n ",
        "\u{7}",
        "Ann\nExample",
        "\u{1b}[31mRed",
        "\u{85}",
        "---",
        "...",
    ] {
        refused.push((
            format!("name {n:?}"),
            json!({"name": n, "birth_date": "1970-01-31"}),
            "name",
        ));
    }
    for (what, body, field) in &refused {
        let r = s.call("POST", "/api/patients", &admin, body.clone()).await;
        p.check(what, r.expect_error(&[422], "invalid"));
        p.ensure(
            format!("{what}: the message names {field}"),
            r.json["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(field)),
            &r.text,
        );
    }

    let today = date_from_today(0);
    let accepted = [
        ("Leap Day", "2024-02-29"),
        ("Leap Century", "2000-02-29"),
        ("Oldest Accepted", "1900-01-01"),
        ("Newborn", today.as_str()),
        ("Zoë Ångström", "1970-01-31"),
        ("李小龙", "1970-12-31"),
        ("O'Brien-Smith", "1985-06-15"),
    ];
    for (name, d) in accepted {
        let r = s
            .call(
                "POST",
                "/api/patients",
                &admin,
                json!({"name": name, "birth_date": d}),
            )
            .await;
        p.ensure(
            format!("{name} born {d}"),
            r.status == 201 && r.json["birth_date"] == d && r.json["name"] == name,
            &r.text,
        );
    }
    let r = s
        .call("POST", "/api/patients", &admin, json!({"name": "No Date"}))
        .await;
    p.ensure("no birth date", r.status == 201, &r.text);

    // Only the accepted ones were stored.
    let stored = s
        .ok("GET", "/api/audit?limit=10000", &admin, Value::Null, 200)
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "patient.create" && r["outcome"] == "ok")
        .count();
    p.ensure(
        "only the accepted patients were registered",
        stored == accepted.len() + 1,
        stored,
    );
    p.finish();
}

/// A NUL (or another control character) in any text field or query parameter is 422 naming
/// the field, on every store: PostgreSQL answered 500 `internal` (SQLSTATE 22021) where
/// SQLite stored it. Single-line fields also refuse line and paragraph separators and
/// bidirectional overrides; free text (a reason, a report) keeps its line breaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nul_and_control_characters_in_text_and_queries_are_422_naming_the_field() {
    let s = Server::start().await;
    let admin = s.token(Role::Admin, None).await;
    let mut p = Problems::default();
    let patient = s.patient("Nul Test").await;
    let reported = s.order(&patient, "MRI", OrderState::Completed).await;
    let alarm = "r@s@1";
    let order = |reason: &str| json!({"patient": patient, "pool": "MRI", "priority": "routine", "reason": reason});
    let mut refused: Vec<(&str, String, Value, &str)> = vec![
        ("POST", "/api/orders".into(), order("a\0b"), "reason"),
        ("POST", "/api/orders".into(), order("\u{1b}[31m"), "reason"),
        (
            "POST",
            "/api/orders".into(),
            json!({"patient": patient, "pool": "MRI", "priority": "routine", "capabilities": ["3T", "x\0"]}),
            "capabilities[1]",
        ),
        (
            "POST",
            "/api/tokens".into(),
            json!({"role": "nurse", "label": "lap\0top"}),
            "label",
        ),
        (
            "POST",
            "/api/tokens".into(),
            json!({"role": "nurse", "label": "a\nb"}),
            "label",
        ),
        (
            "POST",
            "/api/tokens".into(),
            json!({"role": "nurse", "label": "cod\u{202E}gnp.exe"}),
            "label",
        ),
        (
            "POST",
            format!("/api/orders/{}/report", reported.id),
            json!({"text": "ok\0"}),
            "text",
        ),
        (
            "POST",
            format!("/api/alarms/{alarm}/ack"),
            json!({"note": "n\0"}),
            "note",
        ),
        (
            "POST",
            format!("/api/alarms/{alarm}/shelve"),
            json!({"for": "30m", "reason": "r\0"}),
            "reason",
        ),
        (
            "POST",
            format!("/api/patients/{patient}/identifiers"),
            json!({"system": "mrn", "value": "4\u{202E}2"}),
            "value",
        ),
        (
            "PUT",
            format!("/api/patients/{patient}/settings"),
            json!({"ward": "W\0"}),
            "ward",
        ),
        (
            "PUT",
            format!("/api/patients/{patient}/settings"),
            json!({"ward": "W\u{2029}"}),
            "ward",
        ),
    ];
    for n in [
        "Ann\u{2028}Example",
        "Ann\u{2029}Example",
        "\u{202E}nnA",
        "Ann\u{2066}x\u{2069}",
        "A\0",
    ] {
        refused.push(("POST", "/api/patients".into(), json!({"name": n}), "name"));
    }
    for (method, path, body, field) in &refused {
        let r = s.call(method, path, &admin, body.clone()).await;
        let what = format!("{method} {path} {body}");
        p.check(&what, r.expect_error(&[422], "invalid"));
        p.ensure(
            format!("{what}: the message names {field}"),
            r.json["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("{field}: "))),
            &r.text,
        );
    }
    for (path, param) in [
        ("/api/audit?actor=a%00b", "actor"),
        ("/api/audit?actor=a%0Ab", "actor"),
        ("/api/tree?path=%2Fmedical%00", "path"),
        ("/api/ward?ward=W%E2%80%AE", "ward"),
        ("/api/alarms?since_ms=1&x%00=1", "a query parameter's name"),
    ] {
        let r = s.call("GET", path, &admin, Value::Null).await;
        p.check(path, r.expect_error(&[422], "invalid"));
        p.ensure(
            format!("{path}: the message names {param}"),
            r.json["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("{param}: "))),
            &r.text,
        );
    }
    let r = s
        .call(
            "GET",
            &format!("/api/patients/{patient}/vitals?code=%00"),
            &admin,
            Value::Null,
        )
        .await;
    p.check("vitals?code=%00", r.expect_error(&[422], "invalid"));

    // Nothing of it was stored.
    let tokens = s.ok("GET", "/api/tokens", &admin, Value::Null, 200).await;
    p.ensure(
        "no token with a refused label",
        tokens
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["label"] == "api test"),
        &tokens,
    );
    let orders = s.store.orders_of(&patient).await.unwrap();
    p.ensure(
        "only the completed order exists",
        orders.len() == 1,
        orders.len(),
    );

    // Free text keeps its line breaks and tabs.
    let o = s
        .ok(
            "POST",
            "/api/orders",
            &admin,
            order("line 1\n\tline 2\r\n"),
            201,
        )
        .await;
    p.ensure(
        "a reason with line breaks",
        o["reason"] == "line 1\n\tline 2\r\n",
        &o,
    );
    let r = s
        .ok(
            "POST",
            &format!("/api/orders/{}/report", reported.id),
            &admin,
            json!({"text": "Findings:\n\tnone"}),
            200,
        )
        .await;
    p.ensure("a report with line breaks", r["state"] == "reported", &r);
    p.finish();
}

/// A refused transition says what was asked and why it cannot be done: a no-show on a queued
/// order said "is queued: it cannot become queued", a new priority on an order in progress
/// "cannot become queued", a report re-sent with other text "is reported: it cannot become
/// reported".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_transitions_say_what_was_asked_and_why() {
    let s = Server::start().await;
    let admin = s.token(Role::Admin, None).await;
    let mut p = Problems::default();
    let patient = s.patient("Transition Test").await;
    let queued = s.order(&patient, "XRAY", OrderState::Queued).await;
    // One exam at a time per patient: the one in progress and the completed one are others'.
    let started = s
        .order(&s.patient("In Exam").await, "MRI", OrderState::InProgress)
        .await;
    let completed = s
        .order(&s.patient("Examined").await, "CT", OrderState::Completed)
        .await;
    s.ok(
        "POST",
        &format!("/api/orders/{}/report", completed.id),
        &admin,
        json!({"text": "no findings"}),
        200,
    )
    .await;
    for (what, path, body, expected) in [
        (
            "no-show on a queued order",
            format!("/api/orders/{}/no-show", queued.id),
            json!({}),
            format!(
                "order {} is queued: only a called order can be marked no-show",
                queued.id
            ),
        ),
        (
            "priority on an order in progress",
            format!("/api/orders/{}/priority", started.id),
            json!({"priority": "stat"}),
            format!(
                "order {} is in-progress: only a queued order's priority can be changed",
                started.id
            ),
        ),
        (
            "a report re-sent with other text",
            format!("/api/orders/{}/report", completed.id),
            json!({"text": "other findings"}),
            format!(
                "order {} is reported: it was reported with other text, and results are not \
                 amended here",
                completed.id
            ),
        ),
        (
            "start on a queued order",
            format!("/api/orders/{}/start", queued.id),
            json!({}),
            format!(
                "order {} is queued: only a called order can be started",
                queued.id
            ),
        ),
    ] {
        let r = s.call("POST", &path, &admin, body).await;
        p.check(what, r.expect_error(&[409], "illegal_transition"));
        p.ensure(
            what,
            r.json["error"]["message"] == expected.as_str(),
            format_args!("expected {expected:?}: {}", r.text),
        );
    }
    p.finish();
}

/// The statuses of docs/api.md's error table rows whose text mentions `phrase`.
fn documented_error_statuses(phrase: &str) -> Vec<u16> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim().split('|').map(str::trim).collect();
            let status: u16 = cells.get(1)?.parse().ok()?;
            (cells.len() >= 4 && cells[3].contains(phrase)).then_some(status)
        })
        .collect()
}

/// Issue 12, defect 9: docs/api.md's error table says what the server answers a patient token
/// that asks for another patient's order (404, as for an order that does not exist) and for
/// another patient's record (403).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_docs_answer_for_another_patients_order_is_the_servers() {
    let s = Server::start().await;
    let a = s.patient("Patient A").await;
    let b = s.patient("Patient B").await;
    let ob = s.order(&b, "MRI", OrderState::Queued).await;
    let ta = s.token(Role::Patient, Some(&a)).await;

    let order = s
        .req(
            "GET",
            &format!("/api/orders/{}", ob.id),
            Some(&ta.token),
            Payload::None,
        )
        .await;
    let record = s
        .req(
            "GET",
            &format!("/api/patients/{b}"),
            Some(&ta.token),
            Payload::None,
        )
        .await;
    assert_eq!(
        documented_error_statuses("another patient's order"),
        [order.status],
        "docs/api.md's error table vs the server ({})",
        order.text
    );
    assert_eq!(
        documented_error_statuses("another patient's record"),
        [record.status],
        "docs/api.md's error table vs the server ({})",
        record.text
    );
}

// --- issue 12: a change and its audit record ------------------------------------------------

impl Server {
    /// A server over a [`DiesBeforeSeparateAudit`] store, and the store (alive until its
    /// `dead` is set).
    async fn start_dying() -> (Server, Arc<HookedStore<DiesBeforeSeparateAudit>>) {
        let dies = Arc::new(std::sync::Mutex::new(None));
        let slot = dies.clone();
        let s = Server::start_with(move |inner| {
            let store = Arc::new(HookedStore(DiesBeforeSeparateAudit {
                inner,
                dead: std::sync::atomic::AtomicBool::new(false),
            }));
            *slot.lock().unwrap() = Some(store.clone());
            store
        })
        .await;
        let store = dies.lock().unwrap().clone().expect("the store was made");
        (s, store)
    }
}

/// The SQLite store whose separate audit appends ([`ClinicalStore::append_audit`]) fail once
/// `dead` is set: what a process that dies right after a change, before a separate audit
/// write, leaves. Everything else is forwarded (a [`HookedStore`]).
struct DiesBeforeSeparateAudit {
    inner: SqliteStore,
    dead: std::sync::atomic::AtomicBool,
}

#[async_trait::async_trait]
impl StoreHooks for DiesBeforeSeparateAudit {
    fn inner(&self) -> &dyn ClinicalStore {
        &self.inner
    }
    async fn append_audit(&self, record: &AuditRecord) -> Result<i64, StoreError> {
        if self.dead.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Backend("injected: the process died".into()));
        }
        self.inner.append_audit(record).await
    }
}

/// Issue 12: the audit record was a separate write after the change, so a crash between them
/// left an applied change nobody could account for. Now a change stored in the clinical store
/// carries its record in the same transaction: with every separate audit write failing (the
/// process "dies" right after the change), each change still answers 2xx and has exactly one
/// record naming who did it. A change that starts in the coordination tree (a unit's status, a
/// manual call, a re-prioritisation) writes a `started` record first, so it is refused before
/// anything changes when that cannot be written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_every_change_is_stored_with_its_audit_record() {
    let (s, store) = Server::start_dying().await;
    let admin = s.token(Role::Admin, None).await;
    let nurse = s.token(Role::Nurse, None).await;
    let doctor = s.token(Role::Doctor, None).await;
    let tech = s.token(Role::Technician, None).await;
    let called = s
        .order(&s.patient("Called").await, "MRI", OrderState::Called)
        .await;
    let queued = s
        .order(&s.patient("Queued").await, "CT", OrderState::Queued)
        .await;
    store.dead.store(true, std::sync::atomic::Ordering::SeqCst);

    let pid = s
        .ok(
            "POST",
            "/api/patients",
            &nurse,
            json!({"name": "Audited"}),
            201,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let oid = s
        .ok(
            "POST",
            "/api/orders",
            &doctor,
            json!({"patient": pid, "pool": "MRI", "priority": "asap"}),
            201,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let c = called.id.as_str();
    s.ok(
        "POST",
        &format!("/api/orders/{c}/start"),
        &tech,
        Value::Null,
        200,
    )
    .await;
    s.ok(
        "POST",
        &format!("/api/orders/{c}/complete"),
        &tech,
        Value::Null,
        200,
    )
    .await;
    s.ok(
        "POST",
        &format!("/api/orders/{c}/report"),
        &doctor,
        json!({"text": "no lesion"}),
        200,
    )
    .await;
    s.ok(
        "POST",
        &format!("/api/orders/{oid}/cancel"),
        &doctor,
        Value::Null,
        200,
    )
    .await;
    let issued = s
        .ok(
            "POST",
            "/api/tokens",
            &admin,
            json!({"role": "nurse", "label": "night shift"}),
            201,
        )
        .await;
    let tid = issued["id"].as_str().unwrap().to_string();
    let r = s
        .call("DELETE", &format!("/api/tokens/{tid}"), &admin, Value::Null)
        .await;
    assert_eq!(r.status, 204, "{}", r.text);

    // Changes that start in the tree: refused before anything changes.
    let q = queued.id.as_str();
    let r = s
        .call("POST", &format!("/api/orders/{q}/call"), &admin, json!({}))
        .await;
    assert!(r.status >= 500, "{} {}", r.status, r.text);
    assert_eq!(s.stored(&queued.id).await.state, OrderState::Queued);
    let r = s
        .call(
            "POST",
            &format!("/api/orders/{q}/priority"),
            &admin,
            json!({"priority": "stat"}),
        )
        .await;
    assert!(r.status >= 500, "{} {}", r.status, r.text);
    assert_eq!(s.stored(&queued.id).await.priority, Priority::Routine);
    let r = s
        .call(
            "PUT",
            "/api/pools/CT/units/CT-1/status",
            &admin,
            json!({"status": "maintenance"}),
        )
        .await;
    assert!(r.status >= 500, "{} {}", r.status, r.text);
    assert_eq!(s.unit_status("CT", "CT-1").await, UnitStatus::Available);

    store.dead.store(false, std::sync::atomic::Ordering::SeqCst);
    let trail = store
        .audit(&AuditQuery {
            limit: Some(1000),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let changes: Vec<(String, String, Option<String>)> = trail
        .iter()
        .map(|a| {
            (
                a.action.clone(),
                a.actor.clone(),
                a.order.as_ref().map(|o| o.to_string()),
            )
        })
        .collect();
    let expect = [
        ("patient.create", &nurse, None),
        ("order.create", &doctor, Some(oid.clone())),
        ("order.start", &tech, Some(c.to_string())),
        ("order.complete", &tech, Some(c.to_string())),
        ("order.report", &doctor, Some(c.to_string())),
        ("order.cancel", &doctor, Some(oid.clone())),
        ("token.create", &admin, None),
        ("token.revoke", &admin, None),
    ];
    for (action, who, order) in &expect {
        let n = changes
            .iter()
            .filter(|(a, by, o)| a == action && by == &who.id && o == order)
            .count();
        assert_eq!(
            n, 1,
            "{action} by {} on {order:?}: {n} records in {changes:#?}",
            who.id
        );
    }
    assert!(
        trail.iter().all(|a| a.outcome == "ok"),
        "only the changes' own records: {trail:#?}"
    );
    assert_eq!(trail.len(), expect.len(), "{trail:#?}");
    let created = trail.iter().find(|a| a.action == "patient.create").unwrap();
    assert_eq!(created.patient.as_ref().map(|p| p.to_string()), Some(pid));
}

/// Issue 12: a change that starts in the coordination tree is preceded by a `started` record;
/// its outcome follows (with the store's write, for a call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_changes_that_start_in_the_tree_are_recorded_before_they_start() {
    let s = Server::start().await;
    let admin = s.token(Role::Admin, None).await;
    let queued = s
        .order(&s.patient("Queued").await, "CT", OrderState::Queued)
        .await;
    let q = queued.id.as_str();
    s.ok(
        "POST",
        &format!("/api/orders/{q}/priority"),
        &admin,
        json!({"priority": "stat"}),
        200,
    )
    .await;
    s.ok(
        "POST",
        &format!("/api/orders/{q}/call"),
        &admin,
        json!({}),
        200,
    )
    .await;
    s.ok(
        "PUT",
        "/api/pools/MRI/units/MRI-1/status",
        &admin,
        json!({"status": "maintenance"}),
        200,
    )
    .await;
    let trail = s
        .store
        .audit(&AuditQuery {
            actor: Some(admin.id.clone()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    let seen: Vec<(&str, &str)> = trail
        .iter()
        .map(|a| (a.action.as_str(), a.outcome.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("order.priority", "started"),
            ("order.priority", "ok"),
            ("order.call", "started"),
            ("order.call", "ok"),
            ("unit.status", "started"),
            ("unit.status", "ok"),
        ]
    );
}

// --- issue 13: a 5xx carries no internal detail ---------------------------------------------

/// The events logged in this process, as text (`message` and every field), for tests that
/// check what goes to the log. Installed as the global default once.
#[derive(Default)]
struct LogCapture {
    lines: std::sync::Mutex<Vec<String>>,
}

impl LogCapture {
    fn install() -> &'static LogCapture {
        static LOG: std::sync::OnceLock<&'static LogCapture> = std::sync::OnceLock::new();
        LOG.get_or_init(|| {
            let log: &'static LogCapture = Box::leak(Box::default());
            tracing::subscriber::set_global_default(CaptureSubscriber(log))
                .expect("no other global subscriber in this test binary");
            log
        })
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

struct CaptureSubscriber(&'static LogCapture);

impl tracing::Subscriber for CaptureSubscriber {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Line(String);
        impl tracing::field::Visit for Line {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0.push_str(&format!(" {}={v:?}", f.name()));
            }
        }
        let mut line = Line(event.metadata().level().to_string());
        event.record(&mut line);
        self.0.lines.lock().unwrap().push(line.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Issue 13: a 500 answer says only that it is an internal error and quotes a reference; the
/// detail (here the clinical store's error text) is not in the body but in the server's log,
/// at error level, under the same reference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue13_internal_error_bodies_carry_a_reference_not_the_detail() {
    let log = LogCapture::install();
    let (s, store) = Server::start_dying().await;
    let nurse = s.token(Role::Nurse, None).await;
    store.dead.store(true, std::sync::atomic::Ordering::SeqCst);

    // An audited read whose audit record cannot be written: 500.
    let r = s.call("GET", "/api/pools", &nurse, Value::Null).await;
    assert_eq!(r.expect_error(&[500], "internal"), Ok(()), "{}", r.text);
    for detail in ["injected", "process died", "audit", "clinical store"] {
        assert!(
            !r.text.contains(detail),
            "the body names {detail:?}: {}",
            r.text
        );
    }
    let message = r.json["error"]["message"].as_str().unwrap();
    let (_, reference) = message
        .split_once("reference ")
        .unwrap_or_else(|| panic!("no reference in {message:?}"));
    assert!(
        reference.len() >= 8 && reference.chars().all(|c| c.is_ascii_hexdigit()),
        "{message:?}"
    );
    let logged = log.lines();
    assert!(
        logged.iter().any(|l| l.starts_with("ERROR")
            && l.contains(reference)
            && l.contains("injected: the process died")),
        "no error-level log line with reference {reference} and the detail in {logged:#?}"
    );
}

// --- /metrics --------------------------------------------------------------------------------

/// One sample of a Prometheus text exposition: its name, labels and value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// The samples of a text exposition (comments skipped). Label values here hold no `"` or
/// `,`, so splitting on them is enough.
fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l:?}"));
            let (name, labels) = match series.split_once('{') {
                None => (series, Vec::new()),
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').unwrap_or_else(|| panic!("{l:?}"));
                    let labels = inner
                        .split("\",")
                        .map(|kv| {
                            let (k, v) = kv.split_once("=\"").unwrap_or_else(|| panic!("{l:?}"));
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name, labels)
                }
            };
            Sample {
                name: name.to_string(),
                labels,
                value: value.parse().unwrap_or_else(|e| panic!("{l:?}: {e}")),
            }
        })
        .collect()
}

/// The value of the sample `name` with exactly `labels`, if there is one.
fn sample(all: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    all.iter()
        .find(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
}

/// `promtool check metrics` on `text`: `Err` with its output if it finds anything. `Ok(false)`
/// if promtool is not installed (scripts/test installs it: see scripts/prometheus).
fn promtool_check(text: &str) -> Result<bool, String> {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("cannot run promtool: {e}")),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(true)
    } else {
        Err(format!("promtool check metrics ({}): {said}", out.status))
    }
}

/// Issue 14: `/metrics` (on its own listener, no token) after some orders: orders by state
/// from the store, queue lengths and units per pool from the read model, HTTP requests by
/// route template (never a raw path: no order id in the text) and status with a latency
/// histogram, the session; clean for `promtool check metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue14_metrics_after_some_orders() {
    let s = Server::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let app = medkeeper_server::metrics_router(s.state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let doctor = s.token(Role::Doctor, None).await;

    // Two MRI orders through the API (stat and routine), one CT order called to a unit.
    let mut ids = Vec::new();
    for priority in ["stat", "routine"] {
        let p = s.patient(&format!("Metrics {priority}")).await;
        let o = s
            .ok(
                "POST",
                "/api/orders",
                &doctor,
                json!({"patient": p, "pool": "MRI", "priority": priority}),
                201,
            )
            .await;
        ids.push(o["id"].as_str().unwrap().to_string());
    }
    s.ok(
        "GET",
        &format!("/api/orders/{}", ids[0]),
        &doctor,
        Value::Null,
        200,
    )
    .await;
    let r = s
        .call(
            "GET",
            "/api/orders/o-00000000000000000000000000000000",
            &doctor,
            Value::Null,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = s.call("GET", "/no/such/route", &doctor, Value::Null).await;
    assert_eq!(r.status, 404, "{}", r.text);
    let ct = s.patient("Metrics CT").await;
    let called = s.order(&ct, "CT", OrderState::Called).await;
    ids.push(called.id.to_string());
    // The test server's XRAY alarm (nothing dispatches XRAY), raised and acknowledged.
    let alarm = s.alarm().await;
    medkeeper_hospital::alarms::acknowledge(&s.hospital, &alarm.id, "nurse:t-x", "")
        .await
        .unwrap();
    let ct_in_service = s
        .hospital
        .units(&Pool::Equipment("CT".into()))
        .await
        .unwrap()
        .iter()
        .filter(|u| matches!(u.node.status, UnitStatus::Available | UnitStatus::InUse))
        .count() as f64;

    let (status, content_type, text) = tokio::task::spawn_blocking(move || {
        let mut r = agent(Some(Duration::from_secs(10)))
            .get(&metrics_url)
            .call()
            .unwrap();
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        (
            r.status().as_u16(),
            ct,
            r.body_mut().read_to_string().unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let all = samples(&text);
    let mut p = Problems::default();
    let mut expect = |name: &str, labels: &[(&str, &str)], want: f64| {
        let got = sample(&all, name, labels);
        p.ensure(
            format!("{name}{labels:?}"),
            got == Some(want),
            format!("{got:?}, expected {want}"),
        );
    };
    expect("medkeeper_orders", &[("state", "queued")], 2.0);
    expect("medkeeper_orders", &[("state", "called")], 1.0);
    expect("medkeeper_orders", &[("state", "completed")], 0.0);
    expect(
        "medkeeper_alarms_active",
        &[("priority", "high"), ("state", "acknowledged")],
        1.0,
    );
    expect(
        "medkeeper_alarms_active",
        &[("priority", "high"), ("state", "raised")],
        0.0,
    );
    let mri = |priority| {
        [
            ("kind", "equipment"),
            ("pool", "MRI"),
            ("priority", priority),
        ]
    };
    expect("medkeeper_queue_length", &mri("stat"), 1.0);
    expect("medkeeper_queue_length", &mri("routine"), 1.0);
    expect("medkeeper_queue_length", &mri("urgent"), 0.0);
    expect("medkeeper_queue_oldest_wait_seconds", &mri("urgent"), 0.0);
    let ct_units = |status| [("kind", "equipment"), ("pool", "CT"), ("status", status)];
    expect("medkeeper_pool_units", &ct_units("in-use"), 1.0);
    expect(
        "medkeeper_pool_units_in_service",
        &[("kind", "equipment"), ("pool", "CT")],
        ct_in_service,
    );
    let req = |method, route, status| [("method", method), ("route", route), ("status", status)];
    expect(
        "medkeeper_http_requests_total",
        &req("POST", "/api/orders", "201"),
        2.0,
    );
    expect(
        "medkeeper_http_requests_total",
        &req("GET", "/api/orders/{id}", "200"),
        1.0,
    );
    expect(
        "medkeeper_http_requests_total",
        &req("GET", "/api/orders/{id}", "404"),
        1.0,
    );
    expect(
        "medkeeper_http_requests_total",
        &req("GET", "unmatched", "404"),
        1.0,
    );
    expect(
        "medkeeper_http_request_duration_seconds_count",
        &[("method", "POST"), ("route", "/api/orders")],
        2.0,
    );
    expect(
        "medkeeper_http_request_duration_seconds_bucket",
        &[("method", "POST"), ("route", "/api/orders"), ("le", "+Inf")],
        2.0,
    );
    expect("medkeeper_coordination_session_connected", &[], 1.0);
    expect("medkeeper_clinical_store_up", &[], 1.0);
    let oldest = sample(&all, "medkeeper_queue_oldest_wait_seconds", &mri("stat"));
    p.ensure(
        "the stat MRI order's wait",
        oldest.is_some_and(|w| (0.0..60.0).contains(&w)),
        format!("{oldest:?}"),
    );
    for id in &ids {
        p.ensure(
            "no order id in the metrics",
            !text.contains(id.as_str()),
            id,
        );
    }
    p.ensure(
        "no raw path in the metrics",
        !text.contains("/no/such/route"),
        "the unmatched path is a label",
    );
    p.ensure(
        "no engine figures without a source",
        !text.contains("medkeeper_engine_"),
        "a server not told of an engine (as over ZooKeeper) has none",
    );
    promtool_ensure(&mut p, &text);
    p.finish();
}

/// [`promtool_check`] into `p`; a missing promtool is a problem only under CI.
fn promtool_ensure(p: &mut Problems, text: &str) {
    match promtool_check(text) {
        Ok(true) => {}
        Ok(false) if std::env::var_os("CI").is_some() => p.ensure(
            "promtool",
            false,
            "not installed (scripts/test installs it)",
        ),
        Ok(false) => eprintln!(
            "SKIPPED promtool check metrics: promtool is not installed (scripts/prometheus \
             install)"
        ),
        Err(e) => p.ensure("promtool check metrics", false, format!("{e}\n{text}")),
    }
}

/// `GET /metrics` on a listener of its own for `state`; returns its URL.
async fn serve_metrics(state: Arc<ServerState>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/metrics", listener.local_addr().unwrap());
    let app = medkeeper_server::metrics_router(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// One scrape's body (asserting 200).
async fn scrape(url: &str) -> String {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        let mut r = agent(Some(Duration::from_secs(10)))
            .get(&url)
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        r.body_mut().read_to_string().unwrap()
    })
    .await
    .unwrap()
}

/// The embedded engine's histograms as `medkeeper serve` hands them to the server.
fn engine_figures(stats: &medkeeper_embedded::SyncStats) -> EngineFigures {
    let figures = |h: medkeeper_embedded::HistogramSnapshot| HistogramFigures {
        buckets: h.buckets,
        count: h.count,
        sum: h.sum,
    };
    EngineFigures {
        fsync_seconds: figures(stats.fsync_seconds()),
        fsync_transactions: figures(stats.fsync_transactions()),
    }
}

/// Issue 14, item 6: after a dispatcher (told to report to the server) calls a stat MRI
/// order, `/metrics` has its waiting time and dispatch latency by pool and priority; with the
/// embedded engine's figures set, its fsync duration and group-size histograms agree with
/// the engine's counters. Clean for `promtool check metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue14_metrics_dispatch_and_engine_histograms() {
    let s = Server::start().await;
    let stats = s._engine.sync_stats();
    s.state
        .set_engine_figures(Arc::new(move || engine_figures(&stats)));
    let url = serve_metrics(s.state.clone()).await;

    let patient = s.patient("Metrics dispatch").await;
    let mri = Pool::Equipment("MRI".into());
    let order = s
        .hospital
        .create_order(
            NewOrder {
                patient,
                pool: mri.clone(),
                capabilities: vec![],
                priority: Priority::Stat,
                reason: "metrics".into(),
            },
            "test:fixture",
        )
        .await
        .unwrap();
    let dispatcher = Dispatcher::new(s.hospital.clone(), mri, "metrics-test")
        .with_observer(s.state.dispatch_observer());
    let lock = dispatcher.lock().unwrap();
    let guard = lock.acquire().await.unwrap();
    let made = dispatcher.dispatch_once(&guard).await.unwrap();
    guard.release().await.unwrap();
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(made[0].order, order.id);
    let engine = s._engine.stats();

    let text = scrape(&url).await;
    let all = samples(&text);
    let mut p = Problems::default();
    let labels = [("kind", "equipment"), ("pool", "MRI"), ("priority", "stat")];
    let with = |extra: (&'static str, &'static str)| {
        let mut l = labels.to_vec();
        l.push(extra);
        l
    };
    for family in ["dispatch_wait_seconds", "dispatch_latency_seconds"] {
        let name = format!("medkeeper_{family}");
        let count = sample(&all, &format!("{name}_count"), &labels);
        p.ensure(
            format!("{name}_count"),
            count == Some(1.0),
            format!("{count:?}"),
        );
        let inf = sample(&all, &format!("{name}_bucket"), &with(("le", "+Inf")));
        p.ensure(format!("{name} +Inf"), inf == Some(1.0), format!("{inf:?}"));
        // Created and called within this test: well under a minute either way.
        let sum = sample(&all, &format!("{name}_sum"), &labels);
        p.ensure(
            format!("{name}_sum"),
            sum.is_some_and(|s| (0.0..60.0).contains(&s)),
            format!("{sum:?}"),
        );
    }
    let wait_1s = sample(
        &all,
        "medkeeper_dispatch_wait_seconds_bucket",
        &with(("le", "1")),
    );
    p.ensure(
        "a wait bucket of 1 s",
        wait_1s.is_some(),
        format!("{wait_1s:?}"),
    );
    let routine = sample(
        &all,
        "medkeeper_dispatch_wait_seconds_count",
        &[
            ("kind", "equipment"),
            ("pool", "MRI"),
            ("priority", "routine"),
        ],
    );
    p.ensure(
        "no routine call observed",
        routine.is_none(),
        format!("{routine:?}"),
    );

    // The engine's figures: every fsync since it opened, each with its transactions.
    let fsyncs = sample(&all, "medkeeper_engine_fsync_duration_seconds_count", &[]);
    p.ensure(
        "fsyncs counted with a duration",
        fsyncs.is_some_and(|n| n >= engine.fsyncs as f64 && n > 0.0),
        format!("{fsyncs:?}, engine {}", engine.fsyncs),
    );
    let groups = sample(&all, "medkeeper_engine_fsync_transactions_count", &[]);
    p.ensure(
        "a group size per fsync",
        groups == fsyncs,
        format!("{groups:?}"),
    );
    let txns = sample(&all, "medkeeper_engine_fsync_transactions_sum", &[]);
    p.ensure(
        "every logged transaction in one group",
        txns.is_some_and(|n| n >= engine.txns_logged as f64),
        format!("{txns:?}, engine {}", engine.txns_logged),
    );
    let inf = sample(
        &all,
        "medkeeper_engine_fsync_transactions_bucket",
        &[("le", "+Inf")],
    );
    p.ensure(
        "the +Inf bucket is the count",
        inf == groups,
        format!("{inf:?}"),
    );
    promtool_ensure(&mut p, &text);
    p.finish();
}

// --- issue 19: token lifetimes, rotation, failed-authentication limits, audited reads ---------

/// The audit records with `action`, oldest first.
async fn audit_of(s: &Server, action: &str) -> Vec<AuditRecord> {
    s.store
        .audit(&AuditQuery {
            limit: Some(10_000),
            ..AuditQuery::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.action == action)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue19_tokens_expire_with_a_clear_401_and_list_their_expiry() {
    let s = Server::start().await;
    let admin = s.token(Role::Admin, None).await;
    let patient = s.patient("Expiring Patient").await;
    let mut p = Problems::default();

    // Lifetimes on creation: asked for, the patient default, none for staff.
    let now = now_ms();
    let nurse = s
        .ok(
            "POST",
            "/api/tokens",
            &admin,
            json!({"role":"nurse","ttl":"12h"}),
            201,
        )
        .await;
    let at = nurse["expires_ms"].as_i64().unwrap_or(0) - now;
    p.ensure(
        "ttl 12h",
        (12 * 3_600_000..12 * 3_600_000 + 5_000).contains(&at),
        &nurse,
    );
    let pat = s
        .ok(
            "POST",
            "/api/tokens",
            &admin,
            json!({"role":"patient","patient":patient}),
            201,
        )
        .await;
    let at = pat["expires_ms"].as_i64().unwrap_or(0) - now;
    p.ensure(
        "patient default 7d",
        (7 * 86_400_000..7 * 86_400_000 + 5_000).contains(&at),
        &pat,
    );
    let doc = s
        .ok("POST", "/api/tokens", &admin, json!({"role":"doctor"}), 201)
        .await;
    p.ensure(
        "staff default: no expiry",
        doc["expires_ms"].is_null(),
        &doc,
    );
    let fixed = s
        .ok(
            "POST",
            "/api/tokens",
            &admin,
            json!({"role":"doctor","expires_ms": now + 60_000}),
            201,
        )
        .await;
    p.ensure(
        "expires_ms kept",
        fixed["expires_ms"] == json!(now + 60_000),
        &fixed,
    );
    for bad in [
        json!({"role":"nurse","ttl":"soon"}),
        json!({"role":"nurse","ttl":"0s"}),
        json!({"role":"nurse","ttl":"1h","expires_ms": now + 60_000}),
        json!({"role":"nurse","expires_ms": 1}),
    ] {
        let r = s.call("POST", "/api/tokens", &admin, bad.clone()).await;
        p.check(format!("create {bad}"), r.expect_error(&[422], "invalid"));
    }
    let whoami = s
        .ok(
            "GET",
            "/api/whoami",
            &Tok {
                id: String::new(),
                token: nurse["token"].as_str().unwrap().into(),
            },
            Value::Null,
            200,
        )
        .await;
    p.ensure(
        "whoami shows the expiry",
        whoami["expires_ms"] == nurse["expires_ms"],
        &whoami,
    );

    // A short-lived token: used (and so cached), then refused from its expiry on — the cache
    // (5 s) does not outlive it.
    let short = s
        .ok(
            "POST",
            "/api/tokens",
            &admin,
            json!({"role":"nurse","ttl":"1500ms"}),
            201,
        )
        .await;
    let short = Tok {
        id: short["id"].as_str().unwrap().into(),
        token: short["token"].as_str().unwrap().into(),
    };
    s.ok("GET", "/api/whoami", &short, Value::Null, 200).await;
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let r = s.call("GET", "/api/whoami", &short, Value::Null).await;
    p.check("expired token", r.expect_error(&[401], "token_expired"));
    p.ensure(
        "says it expired",
        r.json["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("token expired"),
        &r.text,
    );
    // Its event streams are refused too.
    let (status, _, _) = s
        .events(&format!("/api/events?access_token={}", short.token))
        .await;
    p.ensure("expired token's stream", status == 401, status);

    // The list shows expiry and the expired state; one token can be shown.
    let list = s.ok("GET", "/api/tokens", &admin, Value::Null, 200).await;
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == short.id.as_str())
        .cloned()
        .unwrap_or_default();
    p.ensure(
        "listed expired",
        row["expired"] == json!(true) && row["expires_ms"].is_i64(),
        &row,
    );
    let one = s
        .ok(
            "GET",
            &format!("/api/tokens/{}", short.id),
            &admin,
            Value::Null,
            200,
        )
        .await;
    p.ensure("shown", one == row, &one);
    let r = s
        .call("GET", "/api/tokens/t-nosuch", &admin, Value::Null)
        .await;
    p.check("unknown token shown", r.expect_error(&[404], "not_found"));
    p.finish();
}

/// A token is rotated once: rotating it again, or ten rotations at once, gave a live
/// successor each, and the second took its lifetime from the first rotation's overlap (1 h)
/// instead of the token's own (none). Now the second and the racing ones are 409 naming the
/// one successor, and a successor lives as long as the token it replaces was issued for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_is_rotated_once_and_its_successor_keeps_the_issued_lifetime() {
    let s = Server::start().await;
    let admin = s.token(Role::Admin, None).await;
    let mut p = Problems::default();
    let issue = |label: &'static str| {
        let s = &s;
        let admin = &admin;
        async move {
            let t = s
                .ok(
                    "POST",
                    "/api/tokens",
                    admin,
                    json!({"role": "nurse", "label": label}),
                    201,
                )
                .await;
            t["id"].as_str().unwrap().to_string()
        }
    };
    let rotate = |id: String| {
        let s = &s;
        let admin = &admin;
        async move {
            s.call(
                "POST",
                &format!("/api/tokens/{id}/rotate"),
                admin,
                json!({}),
            )
            .await
        }
    };

    let old = issue("ward tablet").await;
    let first = rotate(old.clone()).await;
    p.ensure("first rotation", first.status == 201, &first.text);
    p.ensure(
        "a staff token without expiry has a successor without expiry",
        first.json["expires_ms"].is_null(),
        &first.text,
    );
    let successor = first.json["id"].as_str().unwrap_or_default().to_string();
    let again = rotate(old.clone()).await;
    p.check("rotated again", again.expect_error(&[409], "conflict"));
    p.ensure(
        "the conflict names the successor",
        again.json["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains(&successor)),
        &again.text,
    );
    // The successor is rotated in its turn, with the lifetime it was issued with.
    let next = rotate(successor.clone()).await;
    p.ensure(
        "the successor rotates, still without expiry",
        next.status == 201 && next.json["expires_ms"].is_null(),
        &next.text,
    );

    // Ten at once: one successor.
    let raced = issue("raced tablet").await;
    let answers = futures_util::future::join_all((0..10).map(|_| rotate(raced.clone()))).await;
    let won: Vec<&Resp> = answers.iter().filter(|r| r.status == 201).collect();
    p.ensure("one of ten racing rotations", won.len() == 1, won.len());
    if let [winner] = won.as_slice() {
        let id = winner.json["id"].as_str().unwrap_or_default();
        for r in answers.iter().filter(|r| r.status != 201) {
            p.check("a racing rotation", r.expect_error(&[409], "conflict"));
            p.ensure(
                "it names the successor",
                r.json["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(id)),
                &r.text,
            );
        }
    }
    let listed = s.ok("GET", "/api/tokens", &admin, Value::Null, 200).await;
    let raced_tokens: Vec<&Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["label"] == "raced tablet")
        .collect();
    p.ensure(
        "the raced token and one successor",
        raced_tokens.len() == 2
            && raced_tokens
                .iter()
                .any(|t| t["id"] == raced.as_str() && t["replaced_by"].is_string()),
        format_args!("{raced_tokens:?}"),
    );
    p.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue19_rotation_overlaps_then_the_old_token_expires() {
    let s = Server::start().await;
    let admin = s.token(Role::Admin, None).await;
    let nurse = s.token(Role::Nurse, None).await;
    let mut p = Problems::default();
    let old = s
        .ok(
            "POST",
            "/api/tokens",
            &admin,
            json!({"role":"technician","label":"CT console","ttl":"30d"}),
            201,
        )
        .await;
    let old = Tok {
        id: old["id"].as_str().unwrap().into(),
        token: old["token"].as_str().unwrap().into(),
    };
    s.ok("GET", "/api/whoami", &old, Value::Null, 200).await; // cached now

    // Only admins rotate; unknown and malformed ids are refused.
    let r = s
        .call(
            "POST",
            &format!("/api/tokens/{}/rotate", old.id),
            &nurse,
            json!({}),
        )
        .await;
    p.check("nurse rotates", r.expect_error(&[403], "forbidden"));
    let r = s
        .call("POST", "/api/tokens/t-nosuch/rotate", &admin, json!({}))
        .await;
    p.check("unknown rotated", r.expect_error(&[404], "not_found"));
    for bad in [
        json!({"overlap":"later"}),
        json!({"overlap":"8d"}),
        json!({"ttl":"0s"}),
    ] {
        let r = s
            .call(
                "POST",
                &format!("/api/tokens/{}/rotate", old.id),
                &admin,
                bad.clone(),
            )
            .await;
        p.check(format!("rotate {bad}"), r.expect_error(&[422], "invalid"));
    }

    let before = now_ms();
    let rotated = s
        .ok(
            "POST",
            &format!("/api/tokens/{}/rotate", old.id),
            &admin,
            json!({"overlap":"1500ms"}),
            201,
        )
        .await;
    let new = Tok {
        id: rotated["id"].as_str().unwrap().into(),
        token: rotated["token"].as_str().unwrap().into(),
    };
    p.ensure(
        "same role and label",
        rotated["role"] == "technician" && rotated["label"] == "CT console",
        &rotated,
    );
    p.ensure("replaces", rotated["replaces"] == old.id.as_str(), &rotated);
    let overlap = rotated["replaced_expires_ms"].as_i64().unwrap_or(0) - before;
    p.ensure(
        "overlap",
        (1_500..1_500 + 3_000).contains(&overlap),
        &rotated,
    );
    let life = rotated["expires_ms"].as_i64().unwrap_or(0) - before;
    p.ensure(
        "the old token's lifetime",
        (30 * 86_400_000..30 * 86_400_000 + 3_000).contains(&life),
        &rotated,
    );
    // Both work during the overlap, the old one (although cached before) not after it.
    s.ok("GET", "/api/whoami", &old, Value::Null, 200).await;
    s.ok("GET", "/api/whoami", &new, Value::Null, 200).await;
    tokio::time::sleep(Duration::from_millis(1_700)).await;
    let r = s.call("GET", "/api/whoami", &old, Value::Null).await;
    p.check(
        "old after the overlap",
        r.expect_error(&[401], "token_expired"),
    );
    s.ok("GET", "/api/whoami", &new, Value::Null, 200).await;
    // An expired token is not rotated again.
    let r = s
        .call(
            "POST",
            &format!("/api/tokens/{}/rotate", old.id),
            &admin,
            json!({}),
        )
        .await;
    p.check("expired rotated", r.expect_error(&[404], "not_found"));

    // Both records, by the admin, stored in one transaction (consecutive sequence numbers).
    let rot = audit_of(&s, "token.rotate").await;
    let ok: Vec<_> = rot.iter().filter(|r| r.outcome == "ok").collect();
    let created = audit_of(&s, "token.create").await;
    let succ = created.iter().find(|r| r.detail.contains(&new.id));
    p.ensure("one rotation record", ok.len() == 1, format!("{rot:?}"));
    if let (Some(r), Some(c)) = (ok.first(), succ) {
        p.ensure(
            "same transaction",
            c.seq == r.seq + 1 && r.actor == admin.id && c.actor == admin.id,
            format!("{r:?} {c:?}"),
        );
        p.ensure(
            "rotation detail names both",
            r.detail.contains(&old.id) && r.detail.contains(&new.id),
            &r.detail,
        );
    } else {
        p.ensure(
            "successor's creation audited",
            false,
            format!("{created:?}"),
        );
    }
    p.ensure(
        "refusals audited",
        rot.iter().any(|r| r.outcome == "denied") && rot.iter().any(|r| r.outcome == "not_found"),
        format!("{rot:?}"),
    );
    p.finish();
}

/// A request through the router in process, from `from` (as `ConnectInfo`) if given.
async fn oneshot_from(
    app: &axum::Router,
    from: Option<std::net::SocketAddr>,
    path: &str,
    token: Option<&str>,
) -> (u16, Option<String>, Value) {
    use tower::ServiceExt;
    let mut req = axum::http::Request::builder().uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let mut req = req.body(axum::body::Body::empty()).unwrap();
    if let Some(a) = from {
        req.extensions_mut().insert(axum::extract::ConnectInfo(a));
    }
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        retry,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue19_failed_authentications_limit_the_address_not_the_others() {
    let s = Server::start().await;
    let mut limits = Limits::default();
    limits.auth_failures.max_failures = 5;
    let state = ServerState::new(
        MemberInfo {
            id: "limits".into(),
            url: "http://127.0.0.1:1/".into(),
            started_ms: now_ms(),
        },
        s.store.clone(),
        limits,
    );
    state.set_hospital(Some(s.hospital.clone()));
    let app = medkeeper_server::router(state.clone());
    let admin = s.token(Role::Admin, None).await;
    let nurse = s.token(Role::Nurse, None).await;
    let revoked = s.token(Role::Nurse, None).await;
    assert!(
        s.store
            .revoke_token(&revoked.id, now_ms(), None)
            .await
            .unwrap()
    );
    let (expired, expired_token) = medkeeper_server::issue_token_expiring(
        s.store.as_ref(),
        Role::Nurse,
        None,
        "expired",
        Some(now_ms() - 1),
    )
    .await
    .unwrap();
    let _ = expired;
    let attacker: std::net::SocketAddr = "192.0.2.7:50000".parse().unwrap();
    let ward: std::net::SocketAddr = "192.0.2.8:50001".parse().unwrap();
    let mut p = Problems::default();

    // The admin works from the attacker's address first (so this instance has its token
    // cached); the nurse has never been seen here.
    let (st, _, _) = oneshot_from(&app, Some(attacker), "/api/whoami", Some(&admin.token)).await;
    p.ensure("admin before", st == 200, st);
    // Every kind of failure counts: none, malformed, unknown, revoked, expired.
    let unknown = format!("mkt_{}", "0".repeat(64));
    let tries: [Option<&str>; 5] = [
        None,
        Some("mkt_short"),
        Some(&unknown),
        Some(&revoked.token),
        Some(&expired_token),
    ];
    for (i, t) in tries.iter().enumerate() {
        let (st, retry, body) = oneshot_from(&app, Some(attacker), "/api/pools", *t).await;
        if i < 4 {
            p.ensure(
                format!("failure {i} is 401"),
                st == 401 && retry.is_none(),
                format!("{st} {body}"),
            );
        } else {
            p.ensure(
                "the 5th failure gets the address refused",
                st == 429
                    && body["error"]["code"] == "rate_limited"
                    && retry.as_deref() == Some("300"),
                format!("{st} {retry:?} {body}"),
            );
        }
    }
    // Refused: a token not cached here is not even looked up; more failures change nothing.
    let (st, retry, body) =
        oneshot_from(&app, Some(attacker), "/api/pools", Some(&nurse.token)).await;
    p.ensure(
        "uncached valid token refused",
        st == 429 && retry.is_some(),
        format!("{st} {body}"),
    );
    for _ in 0..20 {
        oneshot_from(&app, Some(attacker), "/api/pools", Some(&unknown)).await;
    }
    // A token this instance holds as valid still works from there; unauthenticated routes too.
    let (st, _, _) = oneshot_from(&app, Some(attacker), "/api/whoami", Some(&admin.token)).await;
    p.ensure("cached admin still served", st == 200, st);
    let (st, _, _) = oneshot_from(&app, Some(attacker), "/healthz", None).await;
    p.ensure("healthz", st == 200, st);
    // Another address: unaffected, with its own count.
    let (st, _, _) = oneshot_from(&app, Some(ward), "/api/pools", Some(&nurse.token)).await;
    p.ensure("another address", st == 200, st);
    let (st, _, _) = oneshot_from(&app, Some(ward), "/api/pools", Some(&unknown)).await;
    p.ensure("another address's failure is its own", st == 401, st);
    // No connect info (a server started without it): never limited.
    for _ in 0..10 {
        let (st, _, _) = oneshot_from(&app, None, "/api/pools", Some(&unknown)).await;
        p.ensure("no address: 401", st == 401, st);
    }
    // axum's MockConnectInfo is read as well.
    let mocked = medkeeper_server::router(state.clone())
        .layer(axum::extract::connect_info::MockConnectInfo(attacker));
    let fresh = s.token(Role::Nurse, None).await;
    let (st, _, _) = oneshot_from(&mocked, None, "/api/pools", Some(&fresh.token)).await;
    p.ensure("MockConnectInfo address refused", st == 429, st);

    // One audit record for the refusal, not one per failure.
    let limited = audit_of(&s, "auth.rate_limited").await;
    p.ensure("one record", limited.len() == 1, format!("{limited:?}"));
    if let Some(r) = limited.first() {
        p.ensure(
            "who, what",
            r.actor == "client:192.0.2.7"
                && r.role == "anonymous"
                && r.outcome == "rate_limited"
                && r.detail.contains("5 failed authentications"),
            format!("{r:?}"),
        );
    }
    p.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue19_reads_of_tokens_audit_and_cluster_are_audited() {
    let s = Server::start().await;
    let admin = s.token(Role::Admin, None).await;
    let nurse = s.token(Role::Nurse, None).await;
    let patient = s.patient("Audited Reader").await;
    let mut p = Problems::default();
    s.ok("GET", "/api/tokens", &admin, Value::Null, 200).await;
    s.ok(
        "GET",
        &format!("/api/tokens/{}", nurse.id),
        &admin,
        Value::Null,
        200,
    )
    .await;
    s.ok(
        "GET",
        &format!("/api/audit?patient={patient}&limit=5"),
        &admin,
        Value::Null,
        200,
    )
    .await;
    s.ok("GET", "/api/cluster", &nurse, Value::Null, 200).await;
    let r = s.call("GET", "/api/tokens", &nurse, Value::Null).await;
    p.check("nurse lists tokens", r.expect_error(&[403], "forbidden"));
    let r = s.call("GET", "/api/audit", &nurse, Value::Null).await;
    p.check(
        "nurse reads the audit log",
        r.expect_error(&[403], "forbidden"),
    );
    let (status, _, stream) = s
        .events(&format!("/api/cluster/events?access_token={}", nurse.token))
        .await;
    p.ensure("cluster stream", status == 200 && stream.is_some(), status);
    drop(stream);

    let expect = |action: &str, actor: &Tok, outcome: &str| {
        (action.to_string(), actor.id.clone(), outcome.to_string())
    };
    let want = [
        expect("token.list", &admin, "ok"),
        expect("token.read", &admin, "ok"),
        expect("audit.read", &admin, "ok"),
        expect("cluster.read", &nurse, "ok"),
        expect("token.list", &nurse, "denied"),
        expect("audit.read", &nurse, "denied"),
        expect("cluster.stream", &nurse, "ok"),
    ];
    let all = s
        .store
        .audit(&AuditQuery {
            limit: Some(10_000),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    for (action, actor, outcome) in &want {
        p.ensure(
            format!("{action} by {actor} {outcome}"),
            all.iter()
                .any(|r| &r.action == action && &r.actor == actor && &r.outcome == outcome),
            format!("{all:?}"),
        );
    }
    // Who and what was asked, never what was answered.
    let read = all
        .iter()
        .find(|r| r.action == "audit.read" && r.outcome == "ok");
    p.ensure(
        "audit.read names the search",
        read.is_some_and(|r| r.patient.as_ref() == Some(&patient) && r.detail == "limit=5"),
        format!("{read:?}"),
    );
    let shown = all.iter().find(|r| r.action == "token.read");
    p.ensure(
        "token.read names the token",
        shown.is_some_and(|r| r.detail == nurse.id),
        format!("{shown:?}"),
    );
    p.finish();
}

/// Issue 16: `GET /api/history` serves the samples the leader stored (every instance the same:
/// they come from the clinical store), oldest first, of one pool or all, in the span asked
/// for, with the hospital file's waiting targets; staff only; a bad span or time is 400
/// `bad_request` saying what is wrong, a pool not configured 404, a malformed one 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue16_history_serves_the_leaders_samples_with_the_targets() {
    let s = Server::start().await;
    let nurse = s.token(Role::Nurse, None).await;
    let own = s.patient("History Patient").await;
    let patient = s.token(Role::Patient, Some(&own)).await;
    let now = now_ms();
    let minute = 60_000;
    let start = now - now % minute - 10 * minute;
    let mut rows = Vec::new();
    for i in 0..10 {
        for (pool, in_use) in [
            (Pool::Equipment("MRI".into()), 1),
            (Pool::Equipment("CT".into()), 2),
        ] {
            let mut x = PoolSample {
                at_ms: start + i * minute,
                pool,
                units: 3,
                in_use,
                unavailable: 1,
                waiting: Default::default(),
            };
            x.waiting.urgent.queued = i as u32;
            x.waiting.urgent.oldest_wait_ms = i * 1_000;
            rows.push(x);
        }
    }
    assert_eq!(s.store.insert_pool_samples(&rows).await.unwrap(), 20);

    // The last hour by default: all of them, with the demo's targets (the defaults).
    let all = s.ok("GET", "/api/history", &nurse, Value::Null, 200).await;
    assert_eq!(all["samples"].as_array().unwrap().len(), 20, "{all}");
    assert_eq!(
        all["targets_ms"],
        json!({"stat": 600_000, "asap": 1_800_000, "urgent": 3_600_000, "routine": 86_400_000})
    );
    assert_eq!(all["truncated"], false);
    let first = &all["samples"][0];
    assert_eq!(first["at_ms"], start);
    assert_eq!(first["pool"], "equipment");
    assert_eq!(first["name"], "CT", "same time: by pool name");
    assert_eq!(first["units"], 3);
    assert_eq!(first["in_use"], 2);
    assert_eq!(first["unavailable"], 1);
    assert_eq!(
        first["waiting"]["urgent"],
        json!({"queued": 0, "oldest_wait_ms": 0})
    );
    // One pool, a span: since inclusive, until exclusive.
    let path = format!(
        "/api/history?pool=MRI&since={}&until={}",
        start + 2 * minute,
        start + 5 * minute
    );
    let mri = s.ok("GET", &path, &nurse, Value::Null, 200).await;
    let got: Vec<(i64, i64)> = mri["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            assert_eq!(x["name"], "MRI");
            (
                x["at_ms"].as_i64().unwrap(),
                x["waiting"]["urgent"]["oldest_wait_ms"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [2, 3, 4].map(|i| (start + i * minute, i * 1_000)),
        "{mri}"
    );
    assert_eq!(mri["since_ms"], start + 2 * minute);
    assert_eq!(mri["until_ms"], start + 5 * minute);
    // An earlier hour has nothing.
    let path = format!("/api/history?until={}", start - minute);
    let none = s.ok("GET", &path, &nurse, Value::Null, 200).await;
    assert_eq!(none["samples"], json!([]));

    // Patients do not see it.
    let r = s.call("GET", "/api/history", &patient, Value::Null).await;
    r.expect_error(&[403], "forbidden").unwrap();
    // Bad parameters: 400 with a message that says what is wrong.
    let week = 7 * 24 * 3_600_000_i64;
    for (query, says) in [
        ("since=yesterday", "since"),
        ("until=1.5", "until"),
        ("since=-5&until=10", "negative"),
        (&*format!("since={now}&until={now}"), "before"),
        (&*format!("since={}&until={now}", now - week - 1), "7 days"),
        ("from=1", "from"),
    ] {
        let r = s
            .call("GET", &format!("/api/history?{query}"), &nurse, Value::Null)
            .await;
        r.expect_error(&[400], "bad_request")
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        assert!(r.text.contains(says), "{query}: {}", r.text);
    }
    // Exactly 7 days is fine.
    let path = format!("/api/history?since={}&until={now}", now - week);
    s.ok("GET", &path, &nurse, Value::Null, 200).await;
    let r = s
        .call("GET", "/api/history?pool=PET", &nurse, Value::Null)
        .await;
    r.expect_error(&[404], "not_found").unwrap();
    let r = s
        .call("GET", "/api/history?pool=a%2Fb", &nurse, Value::Null)
        .await;
    r.expect_error(&[422], "invalid").unwrap();
}

/// Issue 16: the dashboard shows every time in the hospital's zone, named by the hospital file's
/// `time_zone` and served with `GET /api/whoami` (what the page loads first) to every role,
/// patients too; `null` when the file names none. The OpenAPI document describes the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue16_whoami_serves_the_hospitals_time_zone() {
    let s = Server::start().await;
    let nurse = s.token(Role::Nurse, None).await;
    let own = s.patient("Zone Patient").await;
    let patient = s.token(Role::Patient, Some(&own)).await;

    // The demo hospital names no zone: the dashboard keeps the device's.
    let who = s.ok("GET", "/api/whoami", &nurse, Value::Null, 200).await;
    assert_eq!(who["time_zone"], Value::Null, "{who}");
    assert!(who.as_object().unwrap().contains_key("time_zone"), "{who}");

    // The same hospital with `time_zone = "Asia/Shanghai"` in its file.
    let config = HospitalConfig::parse(&format!(
        "time_zone = \"Asia/Shanghai\"\n{}",
        HospitalConfig::DEMO_TOML
    ))
    .unwrap();
    let zoned = Hospital::new(s.hospital.session().clone(), s.store.clone(), config).unwrap();
    s.state.set_hospital(Some(Arc::new(zoned)));
    for tok in [&nurse, &patient] {
        let who = s.ok("GET", "/api/whoami", tok, Value::Null, 200).await;
        assert_eq!(who["time_zone"], "Asia/Shanghai", "{who}");
    }

    let doc: Value = serde_json::from_str(&medkeeper_server::openapi_json()).unwrap();
    let field = &doc["components"]["schemas"]["WhoAmI"]["properties"]["time_zone"];
    assert_eq!(field["example"], "Asia/Shanghai", "{field}");
}
