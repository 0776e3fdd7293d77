//! Lock interoperability on real ZooKeeper 3.8: medkeeper's [`Mutex`] contends on one lock path
//! with Apache Curator 5.4's `InterProcessMutex` (Java, `interop/CuratorLock.java`) and with
//! kazoo's `Lock` (Python, `interop/kazoo_lock.py`), and every client must exclude every other.
//!
//! Every contender — the processes and medkeeper's in-process tasks — appends `enter NAME` once
//! it holds the lock and `exit NAME` just before releasing it, to one record file. The lock is
//! correct only if the record reads as strictly alternating `enter X` / `exit X` pairs and every
//! contender entered as often as it was asked to.
//!
//! Record writes follow one discipline in all three languages: the file is opened with
//! `O_APPEND` and each line goes out in one `write(2)`. Linux performs an `O_APPEND` write to a
//! regular file (offset update and copy) under the inode lock, so short lines from concurrent
//! processes never interleave; no file lock is taken anywhere. Inside this process a std mutex
//! serialises the two medkeeper tasks, which share one descriptor.
//!
//! The tests need `MEDKEEPER_ZK_CONNECT`, `MEDKEEPER_INTEROP_JAVA_CP` (CuratorLock's compiled
//! class plus Curator's jars), `MEDKEEPER_INTEROP_PYTHON` (a python with kazoo) and
//! `MEDKEEPER_INTEROP_DIR` (this `interop/` directory), all set by `scripts/interop`, which also
//! installs and starts everything; without them each test prints a skip line and passes.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use medkeeper_coord::Session;
use medkeeper_recipes::Mutex;
use medkeeper_zk::ConnectOptions;
use tokio::time::Instant;

/// Times each contender takes the lock in the exclusion tests.
const ITERATIONS: usize = 40;
/// How long a whole exclusion run may take (JVM start-up included).
const RUN_LIMIT: Duration = Duration::from_secs(90);

/// Where the foreign clients and the server are, from `scripts/interop`.
struct Interop {
    connect: String,
    java_cp: String,
    python: String,
    dir: PathBuf,
}

impl Interop {
    fn from_env(case: &str) -> Option<Interop> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let found = (|| {
            Some(Interop {
                connect: var("MEDKEEPER_ZK_CONNECT")?,
                java_cp: var("MEDKEEPER_INTEROP_JAVA_CP")?,
                python: var("MEDKEEPER_INTEROP_PYTHON")?,
                dir: PathBuf::from(var("MEDKEEPER_INTEROP_DIR")?),
            })
        })();
        if found.is_none() {
            println!(
                "SKIP {case}: MEDKEEPER_ZK_CONNECT and MEDKEEPER_INTEROP_{{JAVA_CP,PYTHON,DIR}} \
                 are not set (run scripts/interop)"
            );
        }
        found
    }

    /// A fresh lock directory for one case.
    fn lock_dir(&self, case: &str) -> String {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("/interop/{case}-{}-{t:x}/lock", std::process::id())
    }

    async fn session(&self) -> Arc<dyn Session> {
        let options = ConnectOptions::new(&self.connect).expect("MEDKEEPER_ZK_CONNECT is valid");
        Arc::new(medkeeper_zk::connect(options).await.expect("connect"))
    }

    /// The command line of a `client` contender (everything but its arguments).
    fn command(&self, client: Foreign) -> Command {
        match client {
            Foreign::Curator => {
                let mut c = Command::new("java");
                c.args([
                    "-Xmx64m",
                    "-XX:+UseSerialGC",
                    "-XX:TieredStopAtLevel=1",
                    "-cp",
                    &self.java_cp,
                    "CuratorLock",
                ]);
                c
            }
            Foreign::Kazoo => {
                let mut c = Command::new(&self.python);
                c.arg("-u").arg(self.dir.join("kazoo_lock.py"));
                c
            }
        }
    }

    /// Starts a foreign contender: `iterations` acquisitions recorded under `name`, or, with
    /// `try_ms`, one acquire attempt with that timeout.
    fn spawn(
        &self,
        client: Foreign,
        dir: &str,
        iterations: usize,
        record: &str,
        name: &str,
        try_ms: Option<u64>,
    ) -> Contender {
        let mut command = self.command(client);
        command.args([
            self.connect.as_str(),
            dir,
            &iterations.to_string(),
            record,
            name,
        ]);
        if let Some(ms) = try_ms {
            command.arg(format!("try={ms}"));
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let (lines, stdout_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Contender {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            stdout: stdout_rx,
            stderr: Some(stderr),
        }
    }
}

/// The foreign lock implementations.
#[derive(Debug, Clone, Copy)]
enum Foreign {
    /// Apache Curator's `InterProcessMutex`.
    Curator,
    /// kazoo's `Lock` with `extra_lock_patterns=("-lock-",)`.
    Kazoo,
}

impl Foreign {
    fn label(self) -> &'static str {
        match self {
            Foreign::Curator => "curator",
            Foreign::Kazoo => "kazoo",
        }
    }
}

/// A contender process. Killed (and reaped) if dropped while it runs, so a failing test leaves
/// no process behind.
struct Contender {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<String>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl Contender {
    /// Waits for the line `want` on the process's stdout.
    async fn expect_line(&mut self, want: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            match self.stdout.try_recv() {
                Ok(line) if line == want => return,
                Ok(_) => {}
                Err(mpsc::TryRecvError::Empty) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(mpsc::TryRecvError::Empty) => {
                    self.fail(&format!("no `{want}` within {within:?}"));
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.fail(&format!("stdout closed before `{want}`"));
                }
            }
        }
    }

    /// Sends the start signal.
    fn go(&mut self) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        if let Err(e) = stdin.write_all(b"go\n").and_then(|()| stdin.flush()) {
            self.fail(&format!("start signal: {e}"));
        }
    }

    /// Waits for the process to exit; its exit status and its stdout lines.
    async fn exit(&mut self, within: Duration) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + within;
        self.stdin = None;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return (status, self.rest_of_stdout(deadline).await),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(None) => self.fail(&format!("still running after {within:?}")),
                Err(e) => self.fail(&format!("wait: {e}")),
            }
        }
    }

    /// The stdout lines not read yet, up to the end of the pipe (the process has exited).
    async fn rest_of_stdout(&mut self, deadline: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            match self.stdout.try_recv() {
                Ok(line) => lines.push(line),
                Err(mpsc::TryRecvError::Disconnected) => return lines,
                Err(mpsc::TryRecvError::Empty) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(mpsc::TryRecvError::Empty) => self.fail("stdout still open after exit"),
            }
        }
    }

    /// Waits for a successful exit and for the line `done`.
    async fn finish(&mut self, within: Duration) {
        let (status, out) = self.exit(within).await;
        if !status.success() || !out.iter().any(|l| l == "done") {
            self.fail(&format!("exited with {status}, stdout {out:?}"));
        }
    }

    /// The process's stderr so far (kills it first if it still runs).
    fn stderr(&mut self) -> String {
        self.kill();
        self.stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default()
    }

    fn fail(&mut self, what: &str) -> ! {
        let stderr = self.stderr();
        panic!(
            "{}: {what}\n----- stderr of {} -----\n{stderr}-----",
            self.name, self.name
        );
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The shared record file, opened for appending.
struct Record {
    path: String,
    file: std::sync::Mutex<File>,
}

impl Record {
    fn create(dir: &tempfile::TempDir) -> Record {
        let path = dir.path().join("record");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("open the record file");
        Record {
            path: path.to_str().expect("UTF-8 temp path").to_string(),
            file: std::sync::Mutex::new(file),
        }
    }

    /// Appends one line in one `write(2)` (see the crate docs).
    fn append(&self, line: &str) {
        let mut file = self.file.lock().unwrap();
        file.write_all(line.as_bytes())
            .expect("append to the record");
    }

    fn read(&self) -> String {
        std::fs::read_to_string(&self.path).expect("read the record")
    }
}

/// Checks that the record shows mutual exclusion and that each of `expected` entered as often
/// as it should; returns the holders in order.
fn check_record(text: &str, expected: &BTreeMap<String, usize>) -> Vec<String> {
    let mut holder: Option<&str> = None;
    let mut holders = Vec::new();
    let mut entered: BTreeMap<String, usize> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        match line.split_once(' ') {
            Some(("enter", who)) => {
                if let Some(h) = holder {
                    panic!("record line {n}: `{who}` entered while `{h}` held the lock\n{text}");
                }
                holder = Some(who);
                holders.push(who.to_string());
                *entered.entry(who.to_string()).or_default() += 1;
            }
            Some(("exit", who)) => {
                assert_eq!(
                    holder,
                    Some(who),
                    "record line {n}: `{who}` exited but the holder was {holder:?}\n{text}"
                );
                holder = None;
            }
            _ => panic!("record line {n}: unexpected {line:?}\n{text}"),
        }
    }
    assert_eq!(holder, None, "the record ends inside a hold\n{text}");
    assert_eq!(&entered, expected, "entries per contender");
    holders
}

/// The number of times the lock passed between a medkeeper contender and a foreign one.
fn client_switches(holders: &[String]) -> usize {
    let is_medkeeper = |h: &String| h.starts_with("medkeeper-");
    holders
        .windows(2)
        .filter(|w| is_medkeeper(&w[0]) != is_medkeeper(&w[1]))
        .count()
}

/// Asserts that the lock directory has no child left (or is gone: it is a container).
async fn assert_lock_dir_empty(session: &dyn Session, dir: &str) {
    match session.get_children(dir).await {
        Ok(children) => assert!(children.is_empty(), "nodes left in {dir}: {children:?}"),
        Err(medkeeper_coord::Error::NoNode) => {}
        Err(e) => panic!("get_children({dir}): {e}"),
    }
}

/// Two `client` processes and two medkeeper contenders, `ITERATIONS` acquisitions each, on one
/// lock path.
async fn exclude_each_other(env: &Interop, client: Foreign, case: &str) {
    let dir = env.lock_dir(case);
    let tmp = tempfile::tempdir().expect("temp dir");
    let record = Arc::new(Record::create(&tmp));
    let mut expected = BTreeMap::new();

    let mut foreign = Vec::new();
    for i in 1..=2 {
        let name = format!("{}-{i}", client.label());
        foreign.push(env.spawn(client, &dir, ITERATIONS, &record.path, &name, None));
        expected.insert(name, ITERATIONS);
    }
    let mut mutexes = Vec::new();
    let mut sessions = Vec::new();
    for i in 1..=2 {
        let name = format!("medkeeper-{i}");
        let session = env.session().await;
        mutexes.push((name.clone(), Mutex::new(session.clone(), &dir).unwrap()));
        sessions.push(session);
        expected.insert(name, ITERATIONS);
    }
    // Everybody connected: start all at once, so that they really contend.
    for c in &mut foreign {
        c.expect_line("ready", Duration::from_secs(60)).await;
    }
    for c in &mut foreign {
        c.go();
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (name, mutex) in mutexes {
        let record = record.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..ITERATIONS {
                let guard = mutex.acquire().await.expect("medkeeper acquires");
                record.append(&format!("enter {name}\n"));
                tokio::time::sleep(Duration::from_millis(2)).await;
                record.append(&format!("exit {name}\n"));
                guard.release().await.expect("medkeeper releases");
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(RUN_LIMIT, t)
            .await
            .expect("medkeeper contenders finish in time")
            .expect("medkeeper contender");
    }
    for c in &mut foreign {
        c.finish(RUN_LIMIT).await;
    }
    let elapsed = started.elapsed();

    let holders = check_record(&record.read(), &expected);
    let switches = client_switches(&holders);
    println!(
        "{case}: {} holds in {elapsed:?}, lock passed between medkeeper and {} {switches} times",
        holders.len(),
        client.label()
    );
    // A fair line with every contender queueing again at once alternates constantly; a handful
    // of switches would mean the clients took turns by phases rather than contending.
    assert!(
        switches >= 10,
        "the clients hardly contended ({switches} switches): {holders:?}"
    );
    assert_lock_dir_empty(sessions[0].as_ref(), &dir).await;
    for s in sessions {
        s.close().await;
    }
}

/// While medkeeper holds the lock, a `client` acquire with a 300 ms timeout fails and leaves no
/// node; after medkeeper releases, it succeeds.
async fn sees_medkeeper_holder(env: &Interop, client: Foreign, case: &str) {
    let dir = env.lock_dir(case);
    let tmp = tempfile::tempdir().expect("temp dir");
    let record = Record::create(&tmp);
    let session = env.session().await;
    let mutex = Mutex::new(session.clone(), &dir).unwrap();
    let guard = mutex.acquire().await.unwrap();

    let name = format!("{}-probe", client.label());
    let mut probe = env.spawn(client, &dir, 0, &record.path, &name, Some(300));
    let (status, out) = probe.exit(Duration::from_secs(60)).await;
    if status.code() != Some(3) || out != ["timeout"] {
        probe.fail(&format!(
            "expected a timeout (exit 3) while medkeeper holds; got {status}, stdout {out:?}"
        ));
    }
    assert_eq!(
        mutex.contenders().await.unwrap(),
        [guard.path().rsplit('/').next().unwrap().to_string()],
        "the timed-out {} contender left its node",
        client.label()
    );

    guard.release().await.unwrap();
    let mut probe = env.spawn(client, &dir, 0, &record.path, &name, Some(10_000));
    let (status, out) = probe.exit(Duration::from_secs(60)).await;
    if !status.success() || out != ["acquired"] {
        probe.fail(&format!(
            "expected to acquire the free lock; got {status}, stdout {out:?}"
        ));
    }
    assert_lock_dir_empty(session.as_ref(), &dir).await;
    session.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curator_and_medkeeper_exclude_each_other() {
    let case = "curator_and_medkeeper_exclude_each_other";
    let Some(env) = Interop::from_env(case) else {
        return;
    };
    exclude_each_other(&env, Foreign::Curator, case).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_and_medkeeper_exclude_each_other() {
    let case = "kazoo_and_medkeeper_exclude_each_other";
    let Some(env) = Interop::from_env(case) else {
        return;
    };
    exclude_each_other(&env, Foreign::Kazoo, case).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curator_sees_medkeeper_holder() {
    let case = "curator_sees_medkeeper_holder";
    let Some(env) = Interop::from_env(case) else {
        return;
    };
    sees_medkeeper_holder(&env, Foreign::Curator, case).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_sees_medkeeper_holder() {
    let case = "kazoo_sees_medkeeper_holder";
    let Some(env) = Interop::from_env(case) else {
        return;
    };
    sees_medkeeper_holder(&env, Foreign::Kazoo, case).await;
}
