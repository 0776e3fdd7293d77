//! Failover with separate processes on real ZooKeeper (`MEDKEEPER_ZK_CONNECT`; skipped
//! without it; `scripts/test-zk` runs it against a standalone server and a 3-node ensemble).
//!
//! Three `medkeeper dispatch` processes share one clinical store — an SQLite file, and in a
//! second run (`…_on_postgres`, with `MEDKEEPER_PG_URL`) a fresh PostgreSQL database; this
//! test creates
//! orders through the library and acts as the technicians. While orders flow, the process
//! dispatching MRI is killed with SIGKILL, the next MRI dispatcher is stopped (SIGSTOP) past its
//! session timeout and then continued, and the last one is stopped gracefully (SIGTERM), so the
//! continued process — which lost its session and opened a new one — ends up dispatching
//! everything. Afterwards: every order was called once and completed once, no unit held two
//! orders at once, no patient was in two exams at once, nothing queued was lost, and dispatch
//! resumed within the session timeout plus a margin after each fault.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use medkeeper_coord::Session;
use medkeeper_hospital::config::{self, HospitalConfig};
use medkeeper_hospital::orders::{Hospital, NewOrder};
use medkeeper_hospital::store::{ClinicalStore, PostgresOptions, PostgresStore, SqliteStore};
use medkeeper_hospital::{Error, OrderId, OrderState, PatientId, Pool, Priority};
use medkeeper_testkit::{Backend, Zk};

mod support;

/// The dispatchers' session timeout.
const SESSION_TIMEOUT: Duration = Duration::from_secs(2);
/// What "resumed within the session timeout" allows on top of it: ZooKeeper's expiry runs on
/// its tick, then the next in line is woken and runs a round; the machine may be loaded.
const MARGIN: Duration = Duration::from_secs(3);

/// A `medkeeper dispatch` process and the status lines it printed.
struct Dispatch {
    name: String,
    child: Child,
}

/// Every status line of every process: when it was read, which instance, the line's message
/// (the processes log JSON lines; the message of each).
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<(Instant, String, String)>>>);

/// The dispatcher processes; kills every one still running when dropped (a failed test leaves
/// nothing behind).
struct Processes {
    list: Vec<Dispatch>,
    lines: Lines,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for d in &mut self.list {
            if matches!(d.child.try_wait(), Ok(None)) {
                // Continue a stopped one first (no assert: this may run while panicking).
                let _ = Command::new("kill")
                    .args(["-s", "CONT", &d.child.id().to_string()])
                    .status();
                let _ = d.child.kill();
                let _ = d.child.wait();
            }
        }
    }
}

impl Processes {
    fn spawn(&mut self, connect: &str, store: &str, name: &str) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_medkeeper"))
            .args(["dispatch", "--connect", connect, "--store"])
            .arg(store)
            .args(["--instance", name, "--session-timeout-ms"])
            .arg(SESSION_TIMEOUT.as_millis().to_string())
            .args(["--log-format", "json"])
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = self.lines.clone();
        let who = name.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                println!("[{who}] {line}");
                // A log line's message; anything else (a panic) as it is.
                let line = match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(v) => v["message"].as_str().unwrap_or_default().to_string(),
                    Err(_) => line,
                };
                lines
                    .0
                    .lock()
                    .unwrap()
                    .push((Instant::now(), who.clone(), line));
            }
        });
        self.list.push(Dispatch {
            name: name.to_string(),
            child,
        });
    }

    fn get(&mut self, name: &str) -> &mut Dispatch {
        self.list.iter_mut().find(|d| d.name == name).unwrap()
    }
}

impl Lines {
    /// The instance that most recently said it dispatches `pool`, after `since`, other than
    /// those in `not`.
    fn holder(&self, pool: &str, since: Instant, not: &[&str]) -> Option<String> {
        let want = format!("dispatching {pool} as ");
        self.0
            .lock()
            .unwrap()
            .iter()
            .rev()
            .filter(|(at, who, _)| *at >= since && !not.contains(&who.as_str()))
            .find(|(_, _, l)| l.starts_with(&want))
            .map(|(_, who, _)| who.clone())
    }

    async fn wait_holder(&self, pool: &str, since: Instant, not: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(h) = self.holder(pool, since, not) {
                return h;
            }
            assert!(Instant::now() < deadline, "nobody dispatches {pool}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_line(&self, who: &str, contains: &str, since: Instant) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self
                .0
                .lock()
                .unwrap()
                .iter()
                .any(|(at, w, l)| *at >= since && w == who && l.contains(contains))
            {
                return;
            }
            assert!(Instant::now() < deadline, "{who} never said {contains:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sends a signal by the `kill` utility (no unsafe code in this crate).
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -s {sig} {pid}");
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn mri() -> Pool {
    Pool::Equipment("MRI".into())
}

/// The test's side of the hospital: orders and technicians.
struct Ward {
    hospital: Arc<Hospital>,
    patients: Vec<PatientId>,
    orders: Arc<Mutex<Vec<OrderId>>>,
    next: usize,
}

impl Ward {
    /// Creates `n` orders, spread over pools, patients and priorities (some patients have
    /// exams of several kinds waiting at once); `pool` forces the pool.
    async fn order(&mut self, n: usize, pool: Option<Pool>) -> Vec<OrderId> {
        let pools = [
            mri(),
            Pool::Equipment("CT".into()),
            Pool::Equipment("XRAY".into()),
            Pool::Department("cardiology".into()),
        ];
        let mut made = Vec::new();
        for _ in 0..n {
            let k = self.next;
            self.next += 1;
            let new = NewOrder {
                patient: self.patients[k % self.patients.len()].clone(),
                pool: pool
                    .clone()
                    .unwrap_or_else(|| pools[k % pools.len()].clone()),
                capabilities: vec![],
                priority: Priority::ALL[k % Priority::ALL.len()],
                reason: String::new(),
            };
            let o = self.hospital.create_order(new, "dr").await.unwrap();
            self.orders.lock().unwrap().push(o.id.clone());
            made.push(o.id);
        }
        made
    }

    /// Waits until the first MRI call recorded after `after_ms` by a dispatcher other than
    /// `not`; returns that call's time.
    async fn first_call_after(&self, after_ms: i64, not: &str) -> i64 {
        let store = self.hospital.store();
        let deadline = Instant::now() + Duration::from_secs(60);
        let not = format!("dispatcher:{not}");
        loop {
            let ids = self.orders.lock().unwrap().clone();
            let mut first: Option<i64> = None;
            for id in ids {
                let o = store.order(&id).await.unwrap().unwrap();
                if o.pool != mri() {
                    continue;
                }
                for t in store.transitions(&id).await.unwrap() {
                    if t.to == OrderState::Called && t.at_ms > after_ms && t.actor != not {
                        first = Some(first.map_or(t.at_ms, |f| f.min(t.at_ms)));
                    }
                }
            }
            if let Some(f) = first {
                return f;
            }
            assert!(Instant::now() < deadline, "MRI dispatch never resumed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The technicians: start every called order, complete every started one, until told to stop.
async fn technicians(
    h: Arc<Hospital>,
    orders: Arc<Mutex<Vec<OrderId>>>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let ids = orders.lock().unwrap().clone();
        for id in ids {
            let r = match h.order(&id).await.unwrap().state {
                OrderState::Called => h.start(&id, "tech").await,
                OrderState::InProgress => h.complete(&id, "tech").await,
                _ => continue,
            };
            match r {
                Ok(_) | Err(Error::IllegalTransition { .. }) => {}
                Err(e) => panic!("technician on {id}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn wait_exit_success(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "graceful stop exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zookeeper_dispatch_survives_kill_and_pause_of_its_processes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clinical.sqlite");
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::open(&path).unwrap());
    dispatch_survives_kill_and_pause(path.to_str().unwrap(), store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zookeeper_dispatch_survives_kill_and_pause_of_its_processes_on_postgres() {
    if medkeeper_testkit::zk_connect_string().is_none() {
        medkeeper_testkit::skip("failover on PostgreSQL");
        return;
    }
    let Some(db) = support::pg::Database::create("failover").await else {
        return;
    };
    let store: Arc<dyn ClinicalStore> = Arc::new(
        PostgresStore::connect(&db.url, PostgresOptions::default())
            .await
            .unwrap(),
    );
    dispatch_survives_kill_and_pause(&db.url, store).await;
    drop(db);
}

/// The scenario, the processes on the store `store_arg` (`--store`), the test's side on
/// `store`, the same one.
async fn dispatch_survives_kill_and_pause(store_arg: &str, store: Arc<dyn ClinicalStore>) {
    // A fresh chroot: tests (and runs) do not share /medical.
    let Some(zk) = Zk::from_env_in_fresh_chroot("/failover").await else {
        medkeeper_testkit::skip("failover");
        return;
    };
    let connect = format!("zk:{}", zk.connect_string());
    let session: Arc<dyn Session> = zk.connect(Duration::from_secs(10)).await;
    let demo = HospitalConfig::demo();
    config::load(session.as_ref(), &demo).await.unwrap();
    let hospital = Arc::new(Hospital::new(session.clone(), store.clone(), demo).unwrap());

    let mut procs = Processes {
        list: Vec::new(),
        lines: Lines::default(),
    };
    let start = Instant::now();
    for name in ["d0", "d1", "d2"] {
        procs.spawn(&connect, store_arg, name);
    }
    let mut ward = Ward {
        hospital: hospital.clone(),
        patients: (0..10).map(|_| PatientId::generate()).collect(),
        orders: Arc::default(),
        next: 0,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let techs = tokio::spawn(technicians(hospital.clone(), ward.orders.clone(), stop_rx));

    // Orders flow; the MRI dispatcher is killed (SIGKILL) in the middle of it.
    let first = procs.lines.wait_holder("MRI", start, &[]).await;
    ward.order(16, None).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = Instant::now();
    let kill_ms = now_ms();
    {
        let d = procs.get(&first);
        d.child.kill().unwrap();
        d.child.wait().unwrap();
    }
    // Queued while nobody dispatches MRI: these must wait, not be lost.
    let waiting = ward.order(4, Some(mri())).await;
    ward.order(8, None).await;
    let resumed_ms = ward.first_call_after(kill_ms, &first).await;
    let after_kill = Duration::from_millis((resumed_ms - kill_ms) as u64);
    println!("failover after kill -9 of {first}: MRI dispatch resumed after {after_kill:?}");
    let second = procs.lines.wait_holder("MRI", killed_at, &[&first]).await;

    // The new MRI dispatcher is paused past its session timeout while orders flow. It is
    // continued once its MRI lock has passed on (so its session has expired), by a task that
    // needs no store write: a process stopped inside an SQLite write holds the file's lock.
    ward.order(8, None).await;
    let paused_at = Instant::now();
    let pause_ms = now_ms();
    let paused_pid = procs.get(&second).child.id();
    signal(paused_pid, "STOP");
    let continued = {
        let lines = procs.lines.clone();
        let not = [first.clone(), second.clone()];
        tokio::spawn(async move {
            let not = [not[0].as_str(), not[1].as_str()];
            let third = lines.wait_holder("MRI", paused_at, &not).await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let at = Instant::now();
            signal(paused_pid, "CONT");
            (third, at)
        })
    };
    ward.order(4, Some(mri())).await;
    ward.order(8, None).await;
    let resumed_ms = ward.first_call_after(pause_ms, &second).await;
    let after_pause = Duration::from_millis((resumed_ms - pause_ms) as u64);
    println!("failover after SIGSTOP of {second}: MRI dispatch resumed after {after_pause:?}");
    // It continues: it finds its session expired (its fenced writes fail) and opens a new one.
    let (third, continued_at) = continued.await.unwrap();
    procs
        .lines
        .wait_line(&second, "opens a new session", continued_at)
        .await;

    // The last original dispatcher stops gracefully: its locks are released at once, and the
    // continued process takes over every pool.
    ward.order(8, None).await;
    let term_ms = now_ms();
    let termed_at = Instant::now();
    signal(procs.get(&third).child.id(), "TERM");
    ward.order(4, Some(mri())).await;
    wait_exit_success(&mut procs.get(&third).child).await;
    let resumed_ms = ward.first_call_after(term_ms, &third).await;
    let after_term = Duration::from_millis((resumed_ms - term_ms).max(0) as u64);
    println!("handover after SIGTERM of {third}: MRI dispatch resumed after {after_term:?}");
    assert_eq!(
        procs
            .lines
            .wait_holder("MRI", termed_at, &[&first, &third])
            .await,
        second
    );
    ward.order(8, None).await;

    // Every order completes.
    let all = ward.orders.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut done = 0;
        let mut states = HashMap::new();
        for id in &all {
            let s = store.order(id).await.unwrap().unwrap().state;
            *states.entry(s).or_insert(0) += 1;
            if s == OrderState::Completed {
                done += 1;
            }
        }
        if done == all.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {} completed: {states:?}",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(true);
    techs.await.unwrap();
    signal(procs.get(&second).child.id(), "TERM");
    wait_exit_success(&mut procs.get(&second).child).await;

    // The history: each order called once and completed once; occupancy intervals per unit
    // and per patient never overlap.
    let mut unit_spans: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
    let mut patient_spans: HashMap<PatientId, Vec<(i64, i64)>> = HashMap::new();
    for id in &all {
        let o = store.order(id).await.unwrap().unwrap();
        let ts = store.transitions(id).await.unwrap();
        let called: Vec<_> = ts.iter().filter(|t| t.to == OrderState::Called).collect();
        assert_eq!(called.len(), 1, "called exactly once: {ts:?}");
        let completed: Vec<_> = ts
            .iter()
            .filter(|t| t.to == OrderState::Completed)
            .collect();
        assert_eq!(completed.len(), 1, "completed exactly once: {ts:?}");
        let unit = format!("{}/{}", o.pool, called[0].unit.clone().unwrap());
        let span = (called[0].at_ms, completed[0].at_ms);
        unit_spans.entry(unit).or_default().push(span);
        patient_spans.entry(o.patient).or_default().push(span);
    }
    for spans in unit_spans.values_mut().chain(patient_spans.values_mut()) {
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap: {w:?}");
        }
    }
    // The orders queued while nobody dispatched MRI were served, not lost.
    for id in &waiting {
        assert_eq!(
            store.order(id).await.unwrap().unwrap().state,
            OrderState::Completed
        );
    }
    assert!(hospital.reconcile().await.unwrap().is_clean());
    hospital.session().close().await;

    println!(
        "failover summary ({} orders): kill -9 {after_kill:?}, SIGSTOP {after_pause:?}, \
         SIGTERM {after_term:?} (session timeout {SESSION_TIMEOUT:?})",
        all.len()
    );
    for (what, took) in [("kill -9", after_kill), ("SIGSTOP", after_pause)] {
        assert!(
            took < SESSION_TIMEOUT + MARGIN,
            "dispatch resumed {took:?} after {what}"
        );
    }
    assert!(after_term < MARGIN, "handover took {after_term:?}");
}
