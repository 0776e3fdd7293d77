//! End to end through the real binary: `medkeeper serve` on a fresh data directory, and the
//! client commands (`pools`, `queue`, `unit`, `patient`, `order`, `token`, `audit`, ...) as
//! subprocesses talking to it over HTTP.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::Serve;

const BIN: &str = env!("CARGO_BIN_EXE_medkeeper");

/// A running `medkeeper serve` on a fresh data directory, killed on drop.
struct Server {
    /// Its URL without the trailing `/`.
    url: String,
    admin: String,
    _serve: Serve,
    dir: tempfile::TempDir,
}

impl Server {
    /// Starts a server on a fresh data directory (it prints its URL once ready).
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let serve = Serve::start(&["--data", dir.path().to_str().unwrap()]);
        let url = serve.url.trim_end_matches('/').to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{url}");
        let admin = serve.admin.clone().expect("an admin token on first start");
        assert!(admin.starts_with("mkt_"), "{admin}");
        Server {
            url,
            admin,
            _serve: serve,
            dir,
        }
    }

    fn data(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `medkeeper ARGS` against this server with `token`.
    fn run(&self, token: &str, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .env("MEDKEEPER_SERVER", &self.url)
            .env("MEDKEEPER_TOKEN", token)
            .stdin(Stdio::null())
            .output()
            .expect("medkeeper runs")
    }

    /// Runs a command that must succeed; its stdout.
    fn ok(&self, token: &str, args: &[&str]) -> String {
        let out = self.run(token, args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "medkeeper {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Runs a command with `--json` that must succeed; its answer.
    fn json(&self, token: &str, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let stdout = self.ok(token, &args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    }

    /// Runs a command that must fail; its exit status and stderr.
    fn fails(&self, token: &str, args: &[&str]) -> (i32, String) {
        let out = self.run(token, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !out.status.success(),
            "medkeeper {args:?} succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        (out.status.code().unwrap_or(-1), stderr)
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_string()
}

#[test]
fn everyday_work_against_a_running_server() {
    let server = Server::start();
    let admin = server.admin.clone();
    let s = &server;

    // Both MRI units out of service, so a new order waits in line.
    for unit in ["MRI-1", "MRI-2"] {
        let out = s.ok(&admin, &["unit", "MRI", unit, "--status", "maintenance"]);
        assert!(out.contains("maintenance"), "{out}");
    }
    let pools = s.ok(&admin, &["pools", "MRI"]);
    assert!(
        pools.contains("MRI-1") && pools.contains("MRI-2"),
        "{pools}"
    );

    // A patient and an urgent MRI order.
    let patient = first_line(&s.ok(
        &admin,
        &[
            "patient",
            "create",
            "--name",
            "Ada Lovelace",
            "--birth-date",
            "1985-12-10",
        ],
    ));
    assert!(!patient.is_empty() && !patient.contains(' '), "{patient}");
    let created = s.ok(
        &admin,
        &[
            "order",
            "create",
            "--patient",
            &patient,
            "--pool",
            "MRI",
            "--priority",
            "urgent",
            "--reason",
            "headache, rule out a bleed",
        ],
    );
    let order = first_line(&created);
    assert!(order.starts_with("o-"), "{created}");
    assert!(
        created.contains("urgent") && created.contains("queued"),
        "{created}"
    );

    // It is in the MRI queue, as a table and as JSON.
    let queue = s.ok(&admin, &["queue", "MRI"]);
    assert!(
        queue.contains(&order) && queue.contains(&patient),
        "{queue}"
    );
    let rows = s.json(&admin, &["queue", "MRI"]);
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["order"] == order.as_str())
        .unwrap_or_else(|| panic!("{rows}"));
    assert_eq!(row["priority"], "urgent");
    let shown = s.ok(&admin, &["patient", "show", &patient]);
    assert!(
        shown.contains("Ada Lovelace") && shown.contains(&order),
        "{shown}"
    );

    // A unit comes back: the dispatcher calls the patient to it.
    s.ok(&admin, &["unit", "MRI", "MRI-1", "--status", "available"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let called = loop {
        let v = s.json(&admin, &["order", "show", &order]);
        if v["order"]["state"] == "called" {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "not called within 10 s: {v:#}\n{}",
            s.ok(&admin, &["pools", "MRI"])
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(called["order"]["assigned"], "MRI-1", "{called:#}");

    // The exam, start to report.
    let out = s.ok(&admin, &["order", "start", &order]);
    assert!(out.contains("in-progress"), "{out}");
    let out = s.ok(&admin, &["order", "complete", &order]);
    assert!(out.contains("completed"), "{out}");
    let out = s.ok(
        &admin,
        &["order", "report", &order, "--text", "No acute findings."],
    );
    assert!(out.contains("reported"), "{out}");
    let details = s.ok(&admin, &["order", "show", &order]);
    assert!(
        details.contains("reported") && details.contains("No acute findings."),
        "{details}"
    );
    for state in ["queued", "called", "in-progress", "completed"] {
        assert!(details.contains(state), "transition to {state}: {details}");
    }

    // An illegal transition: exit status 2 and the server's code.
    let (code, stderr) = s.fails(&admin, &["order", "complete", &order]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("illegal_transition") && stderr.contains("HTTP 409"),
        "{stderr}"
    );
    let (code, stderr) = s.fails(&admin, &["order", "show", "o-does-not-exist"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not_found"), "{stderr}");

    // A patient token sees its own order and nothing of the hospital.
    let issued = s.ok(
        &admin,
        &[
            "token",
            "create",
            "--role",
            "patient",
            "--patient",
            &patient,
            "--label",
            "Ada",
        ],
    );
    let patient_token = first_line(&issued);
    assert!(patient_token.starts_with("mkt_"), "{issued}");
    let own = s.ok(&patient_token, &["order", "show", &order]);
    assert!(own.contains(&order) && own.contains("reported"), "{own}");
    let (code, stderr) = s.fails(&patient_token, &["pools"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("forbidden"), "{stderr}");

    // No token at all.
    let (code, stderr) = s.fails("", &["pools"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("unauthorized"), "{stderr}");

    // A token issued offline, straight into the store, while the server runs.
    let data = server.data().to_str().unwrap().to_string();
    let issued = s.ok(
        "",
        &[
            "token", "create", "--data", &data, "--role", "nurse", "--label", "ward 3",
        ],
    );
    let nurse = first_line(&issued);
    assert!(nurse.starts_with("mkt_"), "{issued}");
    let pools = s.ok(&nurse, &["pools"]);
    assert!(pools.contains("MRI-1"), "{pools}");
    let tokens = s.json(&admin, &["token", "list"]);
    let nurse_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["label"] == "ward 3")
        .unwrap_or_else(|| panic!("{tokens:#}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = s.ok(&admin, &["token", "list"]);
    assert!(
        listed.contains(&nurse_id) && listed.contains("nurse"),
        "{listed}"
    );

    // Revoked, it is refused.
    s.ok(&admin, &["token", "revoke", &nurse_id]);
    let (code, stderr) = s.fails(&nurse, &["pools"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("unauthorized"), "{stderr}");

    // The audit log, through the server and offline.
    let audit = s.ok(&admin, &["audit", "--limit", "5"]);
    let lines: Vec<&str> = audit.lines().collect();
    assert!(
        lines.len() >= 2 && lines.len() <= 6 && lines[0].starts_with("SEQ"),
        "{audit}"
    );
    let records = s.json(&admin, &["audit", "--limit", "5"]);
    let records = records.as_array().unwrap();
    assert!(!records.is_empty() && records.len() <= 5, "{records:?}");
    let about = s.json(&admin, &["audit", "--patient", &patient]);
    assert!(
        about
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["order"] == order.as_str()),
        "{about:#}"
    );
    let offline = s.json("", &["audit", "--data", &data, "--limit", "3"]);
    let offline = offline.as_array().unwrap();
    assert!(!offline.is_empty() && offline.len() <= 3, "{offline:?}");

    // The cluster and the tree.
    let cluster = s.ok(&admin, &["cluster"]);
    assert!(cluster.contains("leader"), "{cluster}");
    let tree = s.ok(&admin, &["tree", "/medical", "--depth", "2"]);
    assert!(tree.starts_with("/medical"), "{tree}");
}

#[test]
fn no_server_names_the_url_and_hints_at_serve() {
    let out = Command::new(BIN)
        .args(["pools", "--server", "http://127.0.0.1:1"])
        .env_remove("MEDKEEPER_TOKEN")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("http://127.0.0.1:1") && stderr.contains("medkeeper serve"),
        "{stderr}"
    );
}

#[test]
fn offline_commands_need_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let missing: PathBuf = dir.path().join("nothing-here");
    let out = Command::new(BIN)
        .args(["token", "create", "--role", "admin", "--data"])
        .arg(&missing)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("clinical.sqlite"), "{stderr}");
    assert!(!missing.exists(), "nothing is created");
}

/// Issue 17: `token create --store postgres://…` issues offline into a PostgreSQL clinical
/// store, while a `serve` on that store runs; the server takes the token at once. On a fresh
/// database of the server `MEDKEEPER_PG_URL` names (skipped without it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_create_offline_on_postgres() {
    let Some(db) = support::pg::Database::create("token_create").await else {
        return;
    };
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let serve = Serve::start(&["--data", dir.path().to_str().unwrap(), "--store", &url]);
        let server = serve.url.trim_end_matches('/').to_string();
        let out = Command::new(BIN)
            .args([
                "token", "create", "--store", &url, "--role", "nurse", "--label", "pg ward",
            ])
            .env_remove("MEDKEEPER_SERVER")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let nurse = first_line(&stdout);
        assert!(nurse.starts_with("mkt_"), "{stdout}");
        let pools = Command::new(BIN)
            .args(["pools", "--server", &server, "--token", &nurse])
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&pools.stdout);
        assert!(
            pools.status.success() && listed.contains("MRI-1"),
            "{listed}"
        );
        // --data and --store together are refused.
        let both = Command::new(BIN)
            .args([
                "token", "create", "--role", "nurse", "--data", "x", "--store", &url,
            ])
            .output()
            .unwrap();
        assert!(!both.status.success());
        drop(serve);
    })
    .await
    .unwrap();
    drop(db);
}

/// Found from outside: the documented move to many machines — stop the one-machine server,
/// `medkeeper store migrate` to PostgreSQL, serve on a new coordination tree — double-booked
/// the scanners that had patients on them: the new tree showed MRI-1 and MRI-2 free, and the
/// next orders were called to them. Here the new tree is a fresh embedded data directory (as a
/// new ZooKeeper chroot would be). On a fresh database of `MEDKEEPER_PG_URL` (skipped without).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_migrate_then_serve_keeps_the_units_of_exams_under_way() {
    let Some(db) = support::pg::Database::create("migrate_units").await else {
        return;
    };
    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let a = support::agent();
        let one = tempfile::tempdir().unwrap();
        let mut serve = Serve::start(&["--data", one.path().to_str().unwrap()]);
        let admin = serve.admin.clone().expect("an admin token on first start");
        let server = serve.url.trim_end_matches('/').to_string();
        let post = |server: &str, path: &str, body: Value| {
            let (st, v) = support::call(&a, "POST", &format!("{server}{path}"), &admin, Some(body));
            assert!((200..300).contains(&st), "{path}: {st} {v}");
            v
        };
        let patient = |server: &str, name: &str| {
            post(server, "/api/patients", serde_json::json!({"name": name, "birth_date": "1970-01-01"}))["id"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let mri_order = |server: &str, p: &str, priority: &str| {
            post(
                server,
                "/api/orders",
                serde_json::json!({"patient": p, "pool": "MRI", "priority": priority, "reason": "r"}),
            )["id"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let (p1, p2) = (patient(&server, "Called Patient"), patient(&server, "Scanned Patient"));
        let called = mri_order(&server, &p1, "routine");
        let running = mri_order(&server, &p2, "routine");
        // The dispatcher calls both, one to each scanner; one exam starts.
        let state_of = |server: &str, id: &str| {
            let (st, o) =
                support::call(&a, "GET", &format!("{server}/api/orders/{id}"), &admin, None);
            assert_eq!(st, 200, "{o}");
            (
                o["order"]["state"].as_str().unwrap().to_string(),
                o["order"]["assigned"].as_str().map(str::to_string),
            )
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while [&called, &running]
            .iter()
            .any(|id| state_of(&server, id).0 != "called")
        {
            assert!(Instant::now() < deadline, "not dispatched");
            std::thread::sleep(Duration::from_millis(50));
        }
        post(&server, &format!("/api/orders/{running}/start"), serde_json::json!({}));
        let running_on = state_of(&server, &running).1.unwrap();
        let called_on = state_of(&server, &called).1.unwrap();
        assert!(serve.terminate().success());

        let from = format!("sqlite:{}", one.path().join("clinical.sqlite").display());
        let out = Command::new(BIN)
            .args(["store", "migrate", "--from", &from, "--to", &url])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

        // Many machines: a new tree, the store on PostgreSQL.
        let two = tempfile::tempdir().unwrap();
        let serve = Serve::start(&["--data", two.path().to_str().unwrap(), "--store", &url]);
        let server = serve.url.trim_end_matches('/').to_string();
        let p3 = patient(&server, "Next Patient");
        let next = mri_order(&server, &p3, "stat");
        let unit_of = |id: &str| state_of(&server, id);
        let holder = |unit: &str| {
            let (_, pool) = support::call(&a, "GET", &format!("{server}/api/pools/MRI"), &admin, None);
            pool["units"]
                .as_array()
                .unwrap()
                .iter()
                .find(|u| u["name"] == unit)
                .and_then(|u| u["order"].as_str().map(str::to_string))
        };
        // Both scanners stay with their exams; the stat order waits (a dispatcher would have
        // called it within a few milliseconds).
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(unit_of(&next), ("queued".to_string(), None));
        assert_eq!(holder(&running_on).as_deref(), Some(running.as_str()));
        assert_eq!(holder(&called_on).as_deref(), Some(called.as_str()));
        // The exam in progress ends: its scanner goes to the stat order.
        post(&server, &format!("/api/orders/{running}/complete"), serde_json::json!({}));
        let deadline = Instant::now() + Duration::from_secs(10);
        while unit_of(&next).0 == "queued" && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(unit_of(&next), ("called".to_string(), Some(running_on)));
        assert!(serve.log().contains("restored_units"), "{}", serve.log());
        drop(serve);
    })
    .await
    .unwrap();
    drop(db);
}
