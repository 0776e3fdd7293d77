//! `medkeeper serve` as a process on the embedded default: load shedding, request deadlines,
//! body limits, readiness, and graceful shutdown with open event streams.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Serve, agent, call};

/// Starts sending a request whose body never completes: it holds its slot among the requests
/// in flight until the server's deadline ends it.
fn slow_request(addr: &str, token: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /api/patients HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
    )
    .unwrap();
    s.flush().unwrap();
    s
}

/// The status line and body of a raw HTTP/1.1 response.
fn read_response(s: TcpStream) -> (String, String) {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h.trim().is_empty() {
            break;
        }
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (status.trim().to_string(), String::from_utf8(body).unwrap())
}

#[test]
fn overload_is_shed_with_503_and_slow_requests_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let srv = Serve::start(&[
        "--data",
        data,
        "--max-in-flight",
        "1",
        "--request-timeout-ms",
        "1500",
    ]);
    let token = srv.admin.clone().unwrap();
    let a = agent();
    let pools = format!("{}api/pools", srv.url);
    assert_eq!(call(&a, "GET", &pools, &token, None).0, 200);

    // One request in flight (its body never comes) holds the only slot…
    let slow = slow_request(&srv.addr(), &token);
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    // …so the next is shed at once, not queued.
    let t = Instant::now();
    let (status, body) = call(&a, "GET", &pools, &token, None);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], json!("overloaded"), "{body}");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "shed late: {:?}",
        t.elapsed()
    );
    // Health and event streams are outside the in-flight bound.
    assert_eq!(
        call(&a, "GET", &format!("{}healthz", srv.url), &token, None).0,
        200
    );

    // The slow request is ended by its deadline with 503 `timeout`.
    let (status, body) = read_response(slow);
    assert!(status.contains(" 503 "), "{status} {body}");
    assert!(body.contains("\"timeout\""), "{body}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1400), "ended early: {took:?}");
    eprintln!("slow request ended with 503 timeout after {took:?} (deadline 1.5 s)");

    // The slot is free again; nothing was half-written.
    let (status, v) = call(&a, "GET", &pools, &token, None);
    assert_eq!(status, 200, "{v}");
    let (_, audit) = call(
        &a,
        "GET",
        &format!("{}api/audit?limit=100", srv.url),
        &token,
        None,
    );
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["action"] != json!("patient.create")),
        "a patient was created by the timed-out request: {audit}"
    );
}

#[test]
fn oversize_bodies_get_413_and_ready_means_ready() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Serve::start(&["--data", dir.path().to_str().unwrap()]);
    let token = srv.admin.clone().unwrap();
    let a = agent();
    // Printed its URL only once ready.
    let (status, v) = call(&a, "GET", &format!("{}readyz", srv.url), &token, None);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ready"], json!(true));
    let big = json!({"name": "x".repeat(70 * 1024)});
    let (status, v) = call(
        &a,
        "POST",
        &format!("{}api/patients", srv.url),
        &token,
        Some(big),
    );
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["error"]["code"], json!("payload_too_large"));
}

#[test]
fn sigterm_ends_streams_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Serve::start(&["--data", dir.path().to_str().unwrap()]);
    let token = srv.admin.clone().unwrap();
    // An open event stream (they never end by themselves).
    let mut stream = TcpStream::connect(srv.addr()).unwrap();
    write!(
        stream,
        "GET /api/pools/MRI/events?access_token={token} HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut first = [0u8; 64];
    let n = stream.read(&mut first).unwrap();
    assert!(
        String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first[..n])
    );

    let t = Instant::now();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &srv.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    // The stream ends (EOF) instead of holding the shutdown open.
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = srv.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "exit {status}; {}",
        srv.log.lock().unwrap()
    );
    eprintln!(
        "SIGTERM with an open stream: exited 0 after {:?}",
        t.elapsed()
    );
    assert!(srv.log.lock().unwrap().contains("stopped"));
}

/// Issue 12: after a crash, what the crash left half-done waited for the leader's periodic
/// reconciler (30 s) when it was younger than the grace (10 s). On the embedded engine one
/// process owns the data directory, so the restarted instance repairs it at once: an order
/// stored just before a `kill -9`, before it was put in line, is in line (and called: the
/// MRI units are free) within seconds of the restart.
#[test]
fn a_restart_right_after_a_crash_repairs_at_once() {
    use medkeeper_hospital::orders::NewOrder;
    use medkeeper_hospital::store::{ClinicalStore, SqliteStore};
    use medkeeper_hospital::{PatientId, Pool, Priority};

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_string();
    let mut srv = Serve::start(&["--data", &data]);
    let token = srv.admin.clone().unwrap();
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    drop(srv);

    // What a create that died between its store write and its enqueue leaves, just now.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let order = NewOrder {
        patient: PatientId::generate(),
        pool: Pool::Equipment("MRI".into()),
        capabilities: vec![],
        priority: Priority::Urgent,
        reason: "stored, then the process died".into(),
    }
    .into_queued(medkeeper_hospital::model::now_ms());
    rt.block_on(async {
        let store = SqliteStore::open(dir.path().join("clinical.sqlite")).unwrap();
        store.insert_order(&order, "dr", None).await.unwrap();
    });

    let srv = Serve::start(&["--data", &data]);
    let restarted = Instant::now();
    let agent = agent();
    let url = format!("{}api/orders/{}", srv.url, order.id);
    loop {
        let (status, body) = call(&agent, "GET", &url, &token, None);
        assert_eq!(status, 200, "{body}");
        if body["order"]["state"] == "called" {
            break;
        }
        assert!(
            restarted.elapsed() < Duration::from_secs(5),
            "still {} {:?} after the restart; log:\n{}",
            body["order"]["state"],
            restarted.elapsed(),
            srv.log.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        srv.log.lock().unwrap().contains("reconciled"),
        "{}",
        srv.log.lock().unwrap()
    );
}

// --- issue 14, item 7: logs ------------------------------------------------------------------

/// Waits (up to 10 s) until the server has logged `text`.
fn wait_for_log(srv: &Serve, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !srv.log().contains(text) {
        assert!(Instant::now() < deadline, "no {text:?} in\n{}", srv.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every line of `log`, parsed as a JSON object; panics on a line that is not one.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{log}"));
            assert!(v.is_object(), "{l}");
            v
        })
        .collect()
}

/// Issue 14, item 7: `log_format = "json"` in the config file makes every stderr line a JSON
/// object with `level`, `target` and `message`; the status lines keep their wording, at `INFO`
/// under the binary's target. stdout is unchanged (`Serve::start` found the URL and token).
#[test]
fn issue14_json_logs_are_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("medkeeper.toml");
    std::fs::write(&config, "log_format = \"json\"\n").unwrap();
    let data = dir.path().join("data");
    let mut srv = Serve::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--instance",
        "json-1",
    ]);
    assert!(srv.admin.is_some());
    // The pool status lines come once the instance has looked at who holds each lock.
    wait_for_log(&srv, "dispatching MRI as json-1");
    assert!(srv.terminate().success(), "{}", srv.log());
    let lines = json_lines(&srv.log());
    for l in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(l[key].is_string(), "no {key} in {l}");
        }
    }
    let said = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} in {lines:#?}"))
    };
    let leading = said("leading as json-1");
    assert_eq!(leading["level"], "INFO");
    assert_eq!(leading["target"], "medkeeper::instance");
    said("dispatching MRI as json-1");
    assert_eq!(said("stopped json-1")["target"], "medkeeper::serve");
}

/// Issue 14, item 7: `RUST_LOG` selects what is logged, by level and target: here the
/// instance's status lines (`medkeeper::instance` at info) and warnings from everything else,
/// so neither the serve loop's `stopping`/`stopped` lines nor the hospital's `info` events
/// appear. Human format (the default): `LEVEL target: message` on each line.
#[test]
fn issue14_rust_log_filters_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Serve::start_with_env(
        &["--data", dir.path().to_str().unwrap(), "--instance", "f-1"],
        &[("RUST_LOG", "warn,medkeeper::instance=info")],
    );
    wait_for_log(&srv, "leading as f-1");
    assert!(srv.terminate().success(), "{}", srv.log());
    let log = srv.log();
    assert!(
        log.lines()
            .any(|l| l.contains(" INFO medkeeper::instance: leading as f-1")),
        "{log}"
    );
    assert!(!log.contains("stopping"), "{log}");
    assert!(!log.contains("medkeeper_hospital"), "{log}");
    assert!(
        log.lines().all(|l| l.contains("medkeeper::instance:")
            || l.contains("WARN")
            || l.contains("ERROR")),
        "{log}"
    );
}

/// Issue 14, item 7: no PHI in the log. With every event of every crate enabled
/// (`RUST_LOG=trace`), a patient's name and birth date, an order's clinical reason and a
/// report's text — in requests that succeed and in ones that are refused (whose 4xx answers
/// quote what was sent) — never reach the log.
#[test]
fn issue14_no_phi_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Serve::start_with_env(
        &["--data", dir.path().to_str().unwrap()],
        &[("RUST_LOG", "trace"), ("MEDKEEPER_LOG_FORMAT", "json")],
    );
    wait_for_log(&srv, "dispatching MRI as");
    let token = srv.admin.clone().unwrap();
    let a = agent();
    let api = |path: &str| format!("{}api/{path}", srv.url);
    let name = "Zelda Phimarker-Name";
    let birth_date = "1931-02-03";
    let reason = "phimarker-reason: crushing chest pain since 3 am";
    let report = "phimarker-report: small left pleural effusion";

    // Refused: an impossible birth date, an unknown pool, a report before the exam.
    let (status, v) = call(
        &a,
        "POST",
        &api("patients"),
        &token,
        Some(json!({"name": name, "birth_date": "1931-02-30"})),
    );
    assert_eq!(status, 422, "{v}");
    let (status, v) = call(
        &a,
        "POST",
        &api("patients"),
        &token,
        Some(json!({"name": name, "birth_date": birth_date})),
    );
    assert_eq!(status, 201, "{v}");
    let patient = v["id"].as_str().unwrap().to_string();
    let (status, v) = call(
        &a,
        "POST",
        &api("orders"),
        &token,
        Some(
            json!({"patient": patient, "pool": "NO-SUCH-POOL", "priority": "urgent",
                    "reason": reason}),
        ),
    );
    assert!((400..500).contains(&status), "{status} {v}");

    // The whole exam: ordered, called by the dispatcher, started, completed, reported.
    let (status, v) = call(
        &a,
        "POST",
        &api("orders"),
        &token,
        Some(
            json!({"patient": patient, "pool": "MRI", "priority": "urgent",
                    "reason": reason}),
        ),
    );
    assert_eq!(status, 201, "{v}");
    let order = v["id"].as_str().unwrap().to_string();
    let (status, v) = call(
        &a,
        "POST",
        &api(&format!("orders/{order}/report")),
        &token,
        Some(json!({"text": report})),
    );
    assert_eq!(status, 409, "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = call(&a, "GET", &api(&format!("orders/{order}")), &token, None);
        if v["order"]["state"] == "called" {
            break;
        }
        assert!(Instant::now() < deadline, "not called: {v}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for (action, body) in [
        ("start", None),
        ("complete", None),
        ("report", Some(json!({"text": report}))),
    ] {
        let url = api(&format!("orders/{order}/{action}"));
        let (status, v) = call(&a, "POST", &url, &token, body);
        assert_eq!(status, 200, "{action}: {v}");
    }
    let (_, v) = call(
        &a,
        "GET",
        &api(&format!("patients/{patient}")),
        &token,
        None,
    );
    assert!(v.to_string().contains(name), "{v}");

    assert!(srv.terminate().success(), "{}", srv.log());
    let log = srv.log();
    let lines = json_lines(&log);
    assert!(
        lines.iter().any(|l| l["target"] == "medkeeper::instance"),
        "nothing logged:\n{log}"
    );
    for phi in [
        "Zelda",
        "Phimarker",
        "phimarker",
        birth_date,
        "1931-02-30",
        "pleural",
    ] {
        assert!(!log.contains(phi), "{phi:?} is in the log:\n{log}");
    }
}

/// Runs the `medkeeper` client against `url` with `token`; exit status, stdout, stderr.
fn client(url: &str, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medkeeper"))
        .args(args)
        .env("MEDKEEPER_SERVER", url)
        .env("MEDKEEPER_TOKEN", token)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("medkeeper runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn issue19_token_lifetimes_rotation_and_failed_authentications_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Serve::start(&[
        "--data",
        dir.path().to_str().unwrap(),
        "--token-max-ttl",
        "30d",
    ]);
    let admin = srv.admin.clone().expect("an admin token on first start");
    let url = srv.url.trim_end_matches('/').to_string();
    let a = agent();
    let day_ms = 86_400_000_i64;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };

    // Under --token-max-ttl 30d even the first admin token expires, in 30 days.
    let (st, me) = call(&a, "GET", &format!("{url}/api/whoami"), &admin, None);
    assert_eq!(st, 200, "{me}");
    let left = me["expires_ms"].as_i64().unwrap() - now();
    assert!((29 * day_ms..=30 * day_ms).contains(&left), "{me}");

    // token create --ttl, over the limit refused; token rotate; token list.
    let (code, _, err) = client(
        &url,
        &admin,
        &["token", "create", "--role", "nurse", "--ttl", "31d"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("30d"), "{err}");
    let (code, out, err) = client(
        &url,
        &admin,
        &[
            "token", "create", "--role", "nurse", "--ttl", "12h", "--label", "ward 3",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let old = out.lines().next().unwrap().trim().to_string();
    assert!(err.contains("expires"), "{err}");
    let (_, old_me) = call(&a, "GET", &format!("{url}/api/whoami"), &old, None);
    let old_id = old_me["token"].as_str().unwrap().to_string();
    let (code, out, err) = client(
        &url,
        &admin,
        &["token", "rotate", &old_id, "--overlap", "2s", "--json"],
    );
    assert_eq!(code, 0, "{err}");
    let rotated: serde_json::Value = serde_json::from_str(&out).unwrap();
    let new = rotated["token"].as_str().unwrap().to_string();
    assert_eq!(rotated["replaces"], old_id.as_str());
    assert_eq!(rotated["label"], "ward 3");
    let (st, _) = call(&a, "GET", &format!("{url}/api/pools"), &old, None);
    assert_eq!(st, 200, "the old token works during the overlap");
    std::thread::sleep(Duration::from_millis(2_200));
    let (st, body) = call(&a, "GET", &format!("{url}/api/pools"), &old, None);
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (401, Some("token_expired")),
        "{body}"
    );
    let (st, _) = call(&a, "GET", &format!("{url}/api/pools"), &new, None);
    assert_eq!(st, 200);
    // Its first use: the server caches it for 5 s from now.
    let new_cached = Instant::now();
    let (code, out, err) = client(&url, &admin, &["token", "list"]);
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.contains(&old_id))
        .unwrap_or_default();
    assert!(row.contains("expired"), "{out}");
    assert!(out.contains("EXPIRES"), "{out}");

    // Failed authentications from this address: the 20th gets it refused (429, Retry-After) —
    // the expired token above was the first; a token checked within the last 5 s (the
    // admin's) still works, one never seen does not.
    let (st, unseen) = call(
        &a,
        "POST",
        &format!("{url}/api/tokens"),
        &admin,
        Some(json!({"role":"doctor"})),
    );
    assert_eq!(st, 201, "{unseen}");
    let unseen = unseen["token"].as_str().unwrap().to_string();
    let unknown = format!("mkt_{}", "e".repeat(64));
    for i in 2..=20 {
        let r = a
            .get(format!("{url}/api/pools"))
            .header("Authorization", format!("Bearer {unknown}"))
            .call()
            .unwrap();
        let st = r.status().as_u16();
        if i < 20 {
            assert_eq!(st, 401, "failure {i}");
        } else {
            assert_eq!(st, 429, "failure {i}");
            let retry: u64 = r.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((295..=300).contains(&retry), "{retry}");
        }
    }
    let (st, body) = call(&a, "GET", &format!("{url}/api/pools"), &unseen, None);
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    let before = new_cached.elapsed();
    let (st, _) = call(&a, "GET", &format!("{url}/api/pools"), &new, None);
    if new_cached.elapsed() < Duration::from_millis(4_500) {
        assert_eq!(st, 200, "a token checked within the last 5 s still works");
    } else {
        // A slow machine: its cache entry may have lapsed, and then it waits like the rest.
        assert!(st == 200 || st == 429, "{st} after {before:?}");
    }
    // The trail, offline (this address is refused now, and the admin's cache entry may lapse).
    let (code, out, err) = client(
        &url,
        &admin,
        &[
            "audit",
            "--data",
            dir.path().to_str().unwrap(),
            "--actor",
            "client:127.0.0.1",
            "--json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let trail: serde_json::Value = serde_json::from_str(&out).unwrap();
    let limited: Vec<_> = trail
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "auth.rate_limited")
        .collect();
    assert_eq!(limited.len(), 1, "{trail}");
    assert_eq!(limited[0]["outcome"], "rate_limited");
    let (st, _) = call(&a, "GET", &format!("{url}/healthz"), &admin, None);
    assert_eq!(st, 200);
}

/// An `https://` Alertmanager needs the CA that signed its certificate: without
/// `--alertmanager-ca` the start is refused with what to pass (it used to start, then every
/// delivery failed inside the agent), and the CA is read before anything else starts.
#[test]
fn an_https_alertmanager_without_its_ca_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            dir.path().to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_medkeeper"))
            .args(&args)
            .output()
            .expect("medkeeper runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = run(&["--alertmanager", "https://127.0.0.1:9093"]);
    assert!(!ok);
    assert!(err.contains("--alertmanager-ca"), "{err}");
    let missing = dir.path().join("no-such-ca.pem");
    let (ok, err) = run(&[
        "--alertmanager",
        "https://127.0.0.1:9093",
        "--alertmanager-ca",
        missing.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("no-such-ca.pem"), "{err}");
    let (ok, err) = run(&[
        "--alertmanager",
        "http://127.0.0.1:9093",
        "--alertmanager-ca",
        missing.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.contains("plain http://"), "{err}");
}

/// Twenty failed authentications from `xff` (as `X-Forwarded-For`) against `url`; the status
/// of the last.
fn fail_twenty(a: &ureq::Agent, url: &str, xff: &str) -> u16 {
    let unknown = format!("mkt_{}", "d".repeat(64));
    let mut last = 0;
    for _ in 0..20 {
        last = a
            .get(format!("{url}/api/pools"))
            .header("Authorization", format!("Bearer {unknown}"))
            .header("X-Forwarded-For", xff)
            .call()
            .unwrap()
            .status()
            .as_u16();
    }
    last
}

/// `GET /api/pools` with `token`, as forwarded for `xff`; the status.
fn pools_for(a: &ureq::Agent, url: &str, token: &str, xff: &str) -> u16 {
    a.get(format!("{url}/api/pools"))
        .header("Authorization", format!("Bearer {token}"))
        .header("X-Forwarded-For", xff)
        .call()
        .unwrap()
        .status()
        .as_u16()
}

/// Behind a load balancer every request comes from the balancer's address, so the limit on
/// failed authentications would refuse every client once any one of them failed twenty times.
/// `--trusted-proxy` names the balancer: its `X-Forwarded-For` then says who the client is,
/// and only that client is refused. From anyone else the header is ignored, so a client cannot
/// escape the limit by writing its own.
#[test]
fn behind_a_trusted_proxy_failed_authentications_count_per_forwarded_client() {
    // The test's requests come from 127.0.0.1: here, the "balancer".
    let dir = tempfile::tempdir().unwrap();
    let srv = Serve::start(&[
        "--data",
        dir.path().to_str().unwrap(),
        "--trusted-proxy",
        "127.0.0.0/8",
    ]);
    let admin = srv.admin.clone().expect("an admin token on first start");
    let url = srv.url.trim_end_matches('/').to_string();
    let a = agent();
    let new_token = |role: &str| {
        let (st, t) = call(
            &a,
            "POST",
            &format!("{url}/api/tokens"),
            &admin,
            Some(json!({ "role": role })),
        );
        assert_eq!(st, 201, "{t}");
        t["token"].as_str().unwrap().to_string()
    };
    let nurse = new_token("nurse");
    let doctor = new_token("doctor");

    // One client fails twenty times: it is refused, with the header a client may add itself
    // left of the balancer's entry making no difference.
    assert_eq!(fail_twenty(&a, &url, "203.0.113.9"), 429);
    assert_eq!(
        pools_for(&a, &url, &nurse, "198.51.100.1, 203.0.113.9"),
        429,
        "the refused client, whatever it wrote itself"
    );
    // Another client behind the same balancer, with a token never seen before: served.
    assert_eq!(pools_for(&a, &url, &doctor, "203.0.113.10"), 200);
    // The balancer itself (no header: a health check, an operator on the host): served.
    let (st, _) = call(&a, "GET", &format!("{url}/api/pools"), &nurse, None);
    assert_eq!(st, 200);
    // The refusal's record names the client, not the balancer.
    let refusals = |actor: &str| {
        let (code, out, err) = client(&url, &admin, &["audit", "--actor", actor, "--json"]);
        assert_eq!(code, 0, "{err}");
        let trail: serde_json::Value = serde_json::from_str(&out).unwrap();
        trail
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "auth.rate_limited")
            .count()
    };
    assert_eq!(refusals("client:203.0.113.9"), 1);
    assert_eq!(refusals("client:127.0.0.1"), 0);
    drop(srv);

    // Without --trusted-proxy the header is ignored: twenty failures "from" twenty addresses
    // are twenty from 127.0.0.1, which is refused.
    let dir = tempfile::tempdir().unwrap();
    let srv = Serve::start(&["--data", dir.path().to_str().unwrap()]);
    let url = srv.url.trim_end_matches('/').to_string();
    let unknown = format!("mkt_{}", "d".repeat(64));
    let mut last = 0;
    for i in 0..20 {
        last = a
            .get(format!("{url}/api/pools"))
            .header("Authorization", format!("Bearer {unknown}"))
            .header("X-Forwarded-For", format!("203.0.113.{i}"))
            .call()
            .unwrap()
            .status()
            .as_u16();
    }
    assert_eq!(last, 429, "a forged header does not escape the limit");

    // A network that does not parse refuses the start, saying what is wrong.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_medkeeper"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(["--trusted-proxy", "10.0.0.1/8"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("the network is 10.0.0.0/8"), "{err}");
}

/// A second server on a data directory in use exits at once, naming the holder's pid — before
/// it listens or touches the store. It listened, answered /healthz 200, accepted patients and
/// tokens into the shared clinical store, and retried the engine's lock every second forever.
#[test]
fn a_second_server_on_a_data_directory_in_use_is_refused_with_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let mut first = Serve::start(&["--data", data]);

    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_medkeeper"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data", data])
        .env_remove("MEDKEEPER_CONFIG")
        .env_remove("MEDKEEPER_CONNECT")
        .env_remove("MEDKEEPER_DATA")
        .env_remove("MEDKEEPER_STORE")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = second.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let out = second.wait_with_output().unwrap();
            panic!(
                "the second server is still running after 20 s; stdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = second.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!status.success(), "{status:?}");
    let pid = first.child.id().to_string();
    assert!(
        stderr.contains("in use by another medkeeper process") && stderr.contains(&pid),
        "the refusal names the holder's pid {pid}: {stderr}"
    );
    assert!(!stdout.contains("listening on"), "{stdout}");
    assert!(!stdout.contains("admin token"), "{stdout}");

    // The first one is unaffected.
    let r = agent().get(format!("{}readyz", first.url)).call().unwrap();
    assert_eq!(r.status(), 200);
    assert!(first.terminate().success());
}

/// Found from outside: under `--token-max-ttl 1h` the first admin token expires in an hour, and
/// nothing said so where it is read. The line after it does.
#[test]
fn the_first_admin_token_says_when_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_medkeeper"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token-max-ttl",
            "1h",
            "--data",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut printed = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("dashboard:") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(printed.contains("admin token: mkt_"), "{printed}");
    assert!(
        printed.contains("(expires in 1h under --token-max-ttl"),
        "{printed}"
    );
}
