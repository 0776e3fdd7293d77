//! Several `medkeeper serve` processes on one real ZooKeeper (`MEDKEEPER_ZK_CONNECT`; skipped
//! without it; `scripts/test-zk` runs it on a standalone server and on a 3-node ensemble).
//!
//! Three instances share one clinical store and one `/medical` tree (a fresh chroot). Every
//! instance answers every request; all three see the same members and the same leader; an order
//! created through one is read through another. The leader stopped with SIGTERM leaves at once
//! (its session is closed) and another instance leads; an instance killed with SIGKILL drops out
//! of the members once its session expires. That test runs twice: on an SQLite store file the
//! instances share, and on a fresh PostgreSQL database (`…_on_postgres`, with
//! `MEDKEEPER_PG_URL`: `support::pg`).

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use medkeeper_coord::SessionExt;
use medkeeper_testkit::Zk;
use serde_json::{Value, json};
use support::{Serve, agent, call};

const SESSION_TIMEOUT: Duration = Duration::from_secs(2);

/// A `medkeeper serve` process and its instance id.
struct Instance {
    name: String,
    serve: Serve,
}

impl std::ops::Deref for Instance {
    type Target = Serve;
    fn deref(&self) -> &Serve {
        &self.serve
    }
}

/// Starts an instance on `connect` with its data in `dir/name`, sharing the clinical store
/// `store` (a file or a PostgreSQL URL).
fn start(connect: &str, dir: &Path, store: &str, name: &str) -> (Instance, Option<String>) {
    let data = dir.join(name);
    let timeout = SESSION_TIMEOUT.as_millis().to_string();
    let serve = Serve::start(&[
        "--connect",
        connect,
        "--data",
        data.to_str().unwrap(),
        "--store",
        store,
        "--instance",
        name,
        "--session-timeout-ms",
        &timeout,
    ]);
    let token = serve.admin.clone();
    (
        Instance {
            name: name.to_string(),
            serve,
        },
        token,
    )
}

fn get(agent: &ureq::Agent, url: &str, token: &str) -> (u16, Value) {
    call(agent, "GET", url, token, None)
}

fn post(agent: &ureq::Agent, url: &str, token: &str, body: Value) -> (u16, Value) {
    call(agent, "POST", url, token, Some(body))
}

/// The members and leader an instance reports.
fn cluster(
    agent: &ureq::Agent,
    i: &Instance,
    token: &str,
) -> Option<(Vec<String>, Option<String>)> {
    let (status, v) = get(agent, &format!("{}api/cluster", i.url), token);
    if status != 200 {
        return None;
    }
    let members = v["members"]
        .as_array()?
        .iter()
        .filter_map(|m| m["id"].as_str().map(str::to_string))
        .collect();
    Some((members, v["leader"].as_str().map(str::to_string)))
}

/// Waits until every instance in `live` reports exactly `live` as members and one same leader
/// among them; returns the leader and how long it took.
fn await_agreement(
    agent: &ureq::Agent,
    live: &[&Instance],
    token: &str,
    within: Duration,
) -> (String, Duration) {
    let start = Instant::now();
    let mut want: Vec<String> = live.iter().map(|i| i.name.clone()).collect();
    want.sort();
    let mut last = Vec::new();
    while start.elapsed() < within {
        last = live
            .iter()
            .map(|i| cluster(agent, i, token))
            .collect::<Vec<_>>();
        let leaders: Vec<_> = last
            .iter()
            .map(|c| {
                c.as_ref()
                    .and_then(|(m, l)| (m == &want).then(|| l.clone()).flatten())
            })
            .collect();
        if let Some(Some(l)) = leaders.first()
            && leaders.iter().all(|x| x.as_deref() == Some(l.as_str()))
            && want.contains(l)
        {
            return (l.clone(), start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no agreement on members {want:?} within {within:?}: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_instances_share_one_hospital() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("clinical.sqlite");
    instances_share_one_hospital(dir, store.to_str().unwrap().to_string()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_instances_share_one_hospital_on_postgres() {
    if medkeeper_testkit::zk_connect_string().is_none() {
        medkeeper_testkit::skip("serve_cluster on PostgreSQL");
        return;
    }
    let Some(db) = support::pg::Database::create("serve_cluster").await else {
        return;
    };
    instances_share_one_hospital(tempfile::tempdir().unwrap(), db.url.clone()).await;
    drop(db);
}

async fn instances_share_one_hospital(dir: tempfile::TempDir, store: String) {
    let Some(zk) = Zk::from_env_in_fresh_chroot("/serve").await else {
        medkeeper_testkit::skip("serve_cluster");
        return;
    };
    let connect = format!("zk:{}", zk.connect_string());

    tokio::task::spawn_blocking(move || {
        let agent = agent();
        let (a, token) = start(&connect, dir.path(), &store, "a");
        let token = token.expect("the first instance prints an admin token");
        let (b, again) = start(&connect, dir.path(), &store, "b");
        assert_eq!(again, None, "only the first start creates an admin token");
        let (c, _) = start(&connect, dir.path(), &store, "c");
        let mut all = vec![a, b, c];

        let (leader, took) = await_agreement(&agent, &all.iter().collect::<Vec<_>>(), &token, Duration::from_secs(30));
        eprintln!("3 instances agree on members and leader {leader} after {took:?}");

        // Any instance answers any request: create through one, read through the others.
        let (status, p) = post(&agent, &format!("{}api/patients", all[1].url), &token, json!({"name": "Cluster Test"}));
        assert_eq!(status, 201, "{p}");
        let patient = p["id"].as_str().unwrap().to_string();
        let (status, o) = post(
            &agent,
            &format!("{}api/orders", all[1].url),
            &token,
            json!({"patient": patient, "pool": "CT", "priority": "urgent", "reason": "cluster"}),
        );
        assert_eq!(status, 201, "{o}");
        let order = o["id"].as_str().unwrap().to_string();
        for i in [&all[0], &all[2]] {
            let (status, v) = get(&agent, &format!("{}api/orders/{order}", i.url), &token);
            assert_eq!(status, 200, "{} GET order: {v}", i.name);
            assert_eq!(v["order"]["patient"], json!(patient));
        }
        // Some instance dispatches CT: the order is called within a few seconds.
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (_, v) = get(&agent, &format!("{}api/orders/{order}", all[2].url), &token);
            if v["order"]["state"] == json!("called") {
                break;
            }
            assert!(Instant::now() < deadline, "order never called: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }

        // The leader stopped gracefully leaves at once; another leads.
        let ix = all.iter().position(|i| i.name == leader).unwrap();
        let mut stopped = all.remove(ix);
        let t = Instant::now();
        let ok = Command::new("kill")
            .args(["-TERM", &stopped.serve.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let (next, took) = await_agreement(&agent, &all.iter().collect::<Vec<_>>(), &token, Duration::from_secs(15));
        assert_ne!(next, leader);
        eprintln!("leader {leader} stopped (SIGTERM): {next} leads, members agree after {took:?}");
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = stopped.serve.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "{leader} did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{leader} exited with {status}");
        eprintln!("{leader} exited 0 after {:?}", t.elapsed());

        // An instance killed with SIGKILL drops out once its session expires.
        let ix = all.iter().position(|i| i.name == next).unwrap();
        let mut killed = all.remove(ix);
        killed.serve.child.kill().unwrap();
        let _ = killed.serve.child.wait();
        let (last, took) = await_agreement(&agent, &all.iter().collect::<Vec<_>>(), &token, SESSION_TIMEOUT + Duration::from_secs(10));
        eprintln!("leader {next} killed (SIGKILL): {last} leads after {took:?} (session timeout {SESSION_TIMEOUT:?})");
        let (status, v) = get(&agent, &format!("{}readyz", all[0].url), &token);
        assert_eq!(status, 200, "{v}");
    })
    .await
    .unwrap();
}

/// Issue 12, defect 8: `serve --connect zk:SERVERS/CHROOT` on a ZooKeeper where the chroot does
/// not exist creates it and serves, instead of retrying "no node" forever. The chroot is nested
/// (`/…/a/b`) below a node only a digest user may write, so it is created with the same
/// credentials as the real connection (`--auth`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue12_zookeeper_serve_creates_a_missing_chroot() {
    use medkeeper_coord::{Acl, CreateMode, CreateOptions, Perms, Session};
    let Some(hosts) = medkeeper_testkit::zk_connect_string() else {
        medkeeper_testkit::skip("issue12_zookeeper_serve_creates_a_missing_chroot");
        return;
    };
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let top = format!("/chroot-{}-{nonce:x}", std::process::id());
    let chroot = format!("{top}/a/b");
    let (user, password) = ("mk-chroot", "secret");
    let root = medkeeper_zk::connect(
        medkeeper_zk::ConnectOptions::new(&hosts)
            .unwrap()
            .with_digest(&format!("{user}:{password}"))
            .unwrap(),
    )
    .await
    .unwrap();
    root.create(
        &top,
        b"",
        &CreateOptions::new(CreateMode::Persistent).with_acls(vec![Acl::digest(
            Perms::ALL,
            user,
            password,
        )]),
    )
    .await
    .unwrap();
    assert_eq!(root.exists(&chroot).await.unwrap(), None);
    let connect = format!("zk:{hosts}{chroot}");
    let auth = format!("digest:{user}:{password}");
    let dir = tempfile::tempdir().unwrap();

    let data = dir.path().to_path_buf();
    let (took, status, log) = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let serve = Serve::start(&[
            "--connect",
            &connect,
            "--auth",
            &auth,
            "--data",
            data.to_str().unwrap(),
        ]);
        let took = t.elapsed();
        let token = serve
            .admin
            .clone()
            .expect("serve prints an admin token on first start");
        let (status, body) = get(&agent(), &format!("{}api/pools", serve.url), &token);
        assert_eq!(status, 200, "{body}");
        (took, status, serve.log.lock().unwrap().clone())
    })
    .await
    .unwrap();
    eprintln!("serve on a missing chroot {chroot}: listening after {took:?} (status {status})");
    // Ready once the hospital is loaded; before the fix it printed its URL only after its 30 s
    // wait for a session, and then answered 503.
    assert!(
        took < Duration::from_secs(15),
        "ready only after {took:?}:\n{log}"
    );
    assert!(!log.contains("no node"), "{log}");
    assert!(
        root.exists(&format!("{chroot}/medical"))
            .await
            .unwrap()
            .is_some(),
        "the hospital tree is not below the chroot"
    );
    root.delete_recursive(&top).await.unwrap();
    root.close().await;
}
