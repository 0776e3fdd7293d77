//! Alarms through the real binary: `medkeeper serve` raises an alarm from its hospital file,
//! delivers it to a real Prometheus Alertmanager (Debian `prometheus-alertmanager`, started by
//! `scripts/alertmanager`), takes an acknowledgement and resolves the alert once the condition
//! clears; and, on real ZooKeeper (`MEDKEEPER_ZK_CONNECT`; `scripts/test-zk` runs it on a
//! standalone server and on a 3-node ensemble), the evaluator killed with SIGKILL while the
//! condition holds: the alarm exists exactly once, stays active and delivered, and its history
//! has no gap and no duplicate.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use medkeeper_testkit::Zk;
use serde_json::{Value, json};
use support::{Serve, agent, call};

/// A real Alertmanager in a temporary directory; stopped when dropped.
struct Alertmanager {
    url: String,
    dir: tempfile::TempDir,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/alertmanager")
}

impl Alertmanager {
    fn start() -> Alertmanager {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .expect("scripts/alertmanager start");
        assert!(
            out.status.success(),
            "scripts/alertmanager start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Alertmanager { url, dir }
    }

    /// The alerts Alertmanager holds (unresolved ones) with `source="medkeeper"`.
    fn alerts(&self) -> Vec<Value> {
        let (status, v) = call(
            &agent(),
            "GET",
            &format!("{}/api/v2/alerts?filter=source%3D%22medkeeper%22", self.url),
            "",
            None,
        );
        assert_eq!(status, 200, "{v}");
        v.as_array().cloned().unwrap_or_default()
    }

    /// Waits until `pred` holds for the alerts.
    fn wait(&self, what: &str, within: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let alerts = self.alerts();
            if pred(&alerts) {
                return alerts;
            }
            assert!(
                start.elapsed() < within,
                "Alertmanager: {what} not within {within:?}: {alerts:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// The demo hospital with one more rule: 2 XRAY orders waiting raise a high alarm, none
/// clears it. XR-1 is the only X-ray unit: offline, orders wait.
fn hospital_file(dir: &Path) -> PathBuf {
    let path = dir.join("hospital.toml");
    let text = format!(
        "{}\n[[alarm]]\nname = \"xray-queue\"\nsignal = \"queue_length\"\npool = \"XRAY\"\n\
         raise = 2\nclear = 0\npriority = \"high\"\n",
        include_str!("../../hospital/demo-hospital.toml")
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn alerts_named<'a>(alerts: &'a [Value], name: &str) -> Vec<&'a Value> {
    alerts
        .iter()
        .filter(|a| a["labels"]["alertname"] == json!(name))
        .collect()
}

/// The active alarms of rule `rule` an instance reports.
fn active(base: &str, token: &str, rule: &str) -> Vec<Value> {
    let (status, v) = call(&agent(), "GET", &format!("{base}api/alarms"), token, None);
    assert_eq!(status, 200, "{v}");
    v["active"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == json!(rule))
        .cloned()
        .collect()
}

fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// XR-1 offline, then `n` routine XRAY orders (new patients); returns the orders.
fn make_xray_wait(base: &str, token: &str, n: usize) -> Vec<String> {
    let a = agent();
    let (s, v) = call(
        &a,
        "PUT",
        &format!("{base}api/pools/XRAY/units/XR-1/status"),
        token,
        Some(json!({"status": "offline"})),
    );
    assert_eq!(s, 200, "{v}");
    (0..n)
        .map(|_| {
            let (s, p) = call(&a, "POST", &format!("{base}api/patients"), token, Some(json!({"name": "Alarm Test"})));
            assert_eq!(s, 201, "{p}");
            let (s, o) = call(
                &a,
                "POST",
                &format!("{base}api/orders"),
                token,
                Some(json!({"patient": p["id"], "pool": "XRAY", "priority": "routine", "reason": "x"})),
            );
            assert_eq!(s, 201, "{o}");
            o["id"].as_str().unwrap().to_string()
        })
        .collect()
}

fn cancel_all(base: &str, token: &str, orders: &[String]) {
    for o in orders {
        let (s, v) = call(
            &agent(),
            "POST",
            &format!("{base}api/orders/{o}/cancel"),
            token,
            None,
        );
        assert_eq!(s, 200, "{v}");
    }
}

/// The kinds of an alarm's events, checking that their sequence numbers are 0, 1, 2, ...
fn history(base: &str, token: &str, id: &str) -> Vec<String> {
    let enc = id.replace('@', "%40");
    let (s, v) = call(
        &agent(),
        "GET",
        &format!("{base}api/alarms/{enc}"),
        token,
        None,
    );
    assert_eq!(s, 200, "{v}");
    let events = v["events"].as_array().unwrap();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], json!(i), "a gap or a duplicate: {events:#?}");
    }
    events
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn an_alarm_reaches_alertmanager_is_acknowledged_and_resolves() {
    let am = Alertmanager::start();
    let dir = tempfile::tempdir().unwrap();
    let hospital = hospital_file(dir.path());
    let serve = Serve::start(&[
        "--data",
        dir.path().join("data").to_str().unwrap(),
        "--hospital",
        hospital.to_str().unwrap(),
        "--alertmanager",
        &am.url,
    ]);
    let token = serve.admin.clone().unwrap();
    let base = serve.url.clone();
    let orders = make_xray_wait(&base, &token, 2);
    let alarm = wait_for("the alarm raised", Duration::from_secs(10), || {
        active(&base, &token, "xray-queue").pop()
    });
    assert_eq!(alarm["priority"], json!("high"));
    assert_eq!(alarm["state"], json!("raised"));
    let id = alarm["id"].as_str().unwrap().to_string();

    // Delivered, with its labels, annotations, start and a link back.
    let alerts = am.wait("the alert", Duration::from_secs(10), |a| {
        !alerts_named(a, "xray-queue").is_empty()
    });
    let alert = alerts_named(&alerts, "xray-queue")[0];
    assert_eq!(alert["labels"]["severity"], json!("high"));
    assert_eq!(alert["labels"]["pool"], json!("XRAY"));
    assert_eq!(alert["labels"]["scope"], json!("equipment.XRAY"));
    assert_eq!(alert["annotations"]["alarm_id"], json!(id));
    assert_eq!(
        alert["annotations"]["summary"],
        json!("queue_length in equipment XRAY: 2 waiting")
    );
    assert!(
        alert["generatorURL"].as_str().unwrap().starts_with(&base),
        "{alert}"
    );
    assert_eq!(alert["status"]["state"], json!("active"));

    // Acknowledged through the API: the alert says so.
    let enc = id.replace('@', "%40");
    let (s, v) = call(
        &agent(),
        "POST",
        &format!("{base}api/alarms/{enc}/ack"),
        &token,
        Some(json!({"note": "on it"})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], json!("acknowledged"));
    am.wait("the acknowledgement", Duration::from_secs(10), |a| {
        alerts_named(a, "xray-queue")
            .first()
            .is_some_and(|x| x["annotations"]["state"] == json!("acknowledged"))
    });

    // The orders go: the alarm clears and the alert is resolved (gone from the API).
    cancel_all(&base, &token, &orders);
    wait_for("the alarm cleared", Duration::from_secs(10), || {
        active(&base, &token, "xray-queue").is_empty().then_some(())
    });
    am.wait("the resolution", Duration::from_secs(10), |a| {
        alerts_named(a, "xray-queue").is_empty()
    });
    assert_eq!(
        history(&base, &token, &id),
        ["raised", "acknowledged", "cleared"]
    );
    // In the audit trail too.
    let (s, v) = call(
        &agent(),
        "GET",
        &format!("{base}api/audit?limit=1000"),
        &token,
        None,
    );
    assert_eq!(s, 200);
    let actions: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["detail"] == json!(id))
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert_eq!(
        actions,
        ["alarm.raised", "alarm.acknowledged", "alarm.cleared"]
    );
}

const SESSION_TIMEOUT: Duration = Duration::from_secs(2);

fn leader(base: &str, token: &str) -> Option<String> {
    let (s, v) = call(&agent(), "GET", &format!("{base}api/cluster"), token, None);
    (s == 200)
        .then(|| v["leader"].as_str().map(str::to_string))
        .flatten()
}

/// Issue 14, item 4: the evaluator (the leader) is killed with SIGKILL while the condition
/// holds; another instance takes over: the alarm exists once, stays active and delivered; an
/// acknowledgement through a survivor and the clearing follow with no gap or duplicate in its
/// history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_alarm_survives_its_evaluator_killed() {
    let Some(zk) = Zk::from_env_in_fresh_chroot("/alarms").await else {
        medkeeper_testkit::skip("alarms");
        return;
    };
    let connect = format!("zk:{}", zk.connect_string());
    tokio::task::spawn_blocking(move || {
        let am = Alertmanager::start();
        let dir = tempfile::tempdir().unwrap();
        let hospital = hospital_file(dir.path());
        let store = dir.path().join("clinical.sqlite");
        let timeout = SESSION_TIMEOUT.as_millis().to_string();
        let start = |name: &str| {
            Serve::start(&[
                "--connect",
                &connect,
                "--data",
                dir.path().join(name).to_str().unwrap(),
                "--store",
                store.to_str().unwrap(),
                "--instance",
                name,
                "--session-timeout-ms",
                &timeout,
                "--hospital",
                hospital.to_str().unwrap(),
                "--alertmanager",
                &am.url,
            ])
        };
        let a = start("a");
        let token = a.admin.clone().unwrap();
        let mut all = vec![("a", a), ("b", start("b")), ("c", start("c"))];
        let lead = wait_for("a leader", Duration::from_secs(20), || {
            leader(&all[0].1.url, &token)
        });
        let orders = make_xray_wait(&all[0].1.url, &token, 3);
        let alarm = wait_for("the alarm raised", Duration::from_secs(10), || {
            active(&all[1].1.url, &token, "xray-queue").pop()
        });
        let id = alarm["id"].as_str().unwrap().to_string();
        am.wait("the alert", Duration::from_secs(10), |a| {
            alerts_named(a, "xray-queue").len() == 1
        });

        // The evaluator dies while the condition holds.
        let ix = all.iter().position(|(n, _)| *n == lead).unwrap();
        let (_, mut killed) = all.remove(ix);
        killed.child.kill().unwrap();
        let _ = killed.child.wait();
        let t = Instant::now();
        let next = wait_for(
            "a new leader",
            SESSION_TIMEOUT + Duration::from_secs(15),
            || leader(&all[0].1.url, &token).filter(|l| *l != lead),
        );
        eprintln!("leader {lead} killed: {next} leads after {:?}", t.elapsed());
        // Still exactly one alarm, the same episode, active, on every survivor, for a while
        // under the new evaluator.
        for _ in 0..10 {
            for (name, s) in &all {
                let act = active(&s.url, &token, "xray-queue");
                assert_eq!(act.len(), 1, "{name}: {act:#?}");
                assert_eq!(act[0]["id"], json!(id), "{name}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let alerts = am.alerts();
        assert_eq!(alerts_named(&alerts, "xray-queue").len(), 1, "{alerts:#?}");

        // Acknowledged through a survivor, cleared under the new evaluator.
        let enc = id.replace('@', "%40");
        let (s, v) = call(
            &agent(),
            "POST",
            &format!("{}api/alarms/{enc}/ack", all[0].1.url),
            &token,
            Some(json!({})),
        );
        assert_eq!(s, 200, "{v}");
        cancel_all(&all[1].1.url, &token, &orders);
        wait_for("the alarm cleared", Duration::from_secs(10), || {
            active(&all[0].1.url, &token, "xray-queue")
                .is_empty()
                .then_some(())
        });
        am.wait("the resolution", Duration::from_secs(10), |a| {
            alerts_named(a, "xray-queue").is_empty()
        });
        let kinds = history(&all[0].1.url, &token, &id);
        assert_eq!(kinds, ["raised", "acknowledged", "cleared"]);
        let (s, v) = call(
            &agent(),
            "GET",
            &format!("{}api/alarms/{enc}", all[0].1.url),
            &token,
            None,
        );
        assert_eq!(s, 200);
        let by: Vec<&str> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["actor"].as_str().unwrap())
            .collect();
        assert_eq!(
            by[0],
            format!("evaluator:{lead}"),
            "raised by the first leader"
        );
        assert_eq!(by[2], format!("evaluator:{next}"), "cleared by the next");
    })
    .await
    .unwrap();
}
