//! `medkeeper bench api`: a real `medkeeper serve` measured through its HTTP API, as its
//! users reach it (issue 13).
//!
//! Starts `medkeeper serve` as a child process (this binary; the embedded engine in a fresh
//! data directory, or `--connect zk:…` in a fresh chroot that is deleted afterwards), with the
//! demo hospital minus the CT's stat reserve (as `bench dispatch`: the technicians here finish
//! every exam at once, which the reserve's time model does not expect), and the clinical store
//! the server always uses: `DATA/clinical.sqlite`, WAL with `synchronous=FULL`. Then, with
//! tokens the first admin token issues:
//! - `--clients` HTTP clients (threads, each with its own scheduler token and keep-alive
//!   connection) register `--patients` patients each before the clock starts, then in turn,
//!   one order at a time: open the patient's own event stream
//!   (`GET /api/patients/{id}/events`) and wait for its first view, `POST /api/orders` (MRI,
//!   CT or XRAY in proportion to their units, a random FHIR priority), and wait until the
//!   stream shows the order past `queued` (called, or already further). That wait, from just
//!   before the POST, is the latency reported (HdrHistogram p50/p99), with the POST's own
//!   round trip beside it;
//! - technicians (one technician token): one reader of `GET /api/events` hands every order
//!   a unit shows to `--technicians` threads, which `POST .../start` and `.../complete` it, so
//!   the system drains.
//!
//! Orders/s: orders completed inside the window. On ZooKeeper, the servers' own counters
//! (`mntr`) give packets and leader fsyncs per order. The benchmark's clients share the
//! machine with the server; on 2 cores they take a part of it.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use clap::Args;
use hdrhistogram::Histogram;
use medkeeper_hospital::config::HospitalConfig;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::coord::{self, ConnectArgs};

/// Options of `bench api`.
#[derive(Args, Debug)]
pub struct ApiBench {
    /// The coordination service `serve` runs on: `zk:HOST:PORT[,HOST:PORT...]` (a fresh chroot
    /// on it, deleted afterwards) or `embedded:DIR`. Default: the embedded engine in the
    /// fresh data directory.
    #[arg(long)]
    connect: Option<String>,
    /// Length of the measured window, seconds.
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// Warm-up before the window, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Concurrent HTTP clients, each creating one order at a time.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Patients each client registers before the window and orders for in turn.
    #[arg(long, default_value_t = 16)]
    patients: usize,
    /// Technician threads starting and completing called orders.
    #[arg(long, default_value_t = 4)]
    technicians: usize,
    /// The data directory for `serve` (default: a fresh one under the temp directory,
    /// removed afterwards).
    #[arg(long)]
    data: Option<PathBuf>,
    /// `serve`'s clinical store (`--store`): a PostgreSQL URL (use a fresh database per run;
    /// the password as for `serve`, from the environment). Default: the SQLite file in the
    /// data directory.
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// Print one JSON line on stdout (otherwise a human-readable line).
    #[arg(long)]
    json: bool,
}

/// Equipment kinds, one entry per unit of the demo hospital (2 MRI, 3 CT, 1 X-ray).
const KINDS: [&str; 6] = ["MRI", "MRI", "CT", "CT", "CT", "XRAY"];
const PRIORITIES: [&str; 4] = ["routine", "urgent", "asap", "stat"];
/// The longest an order may take to show as called before the run fails.
const CALL_DEADLINE: Duration = Duration::from_secs(30);

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// The window and what the threads measured in it.
struct Shared {
    start: Instant,
    end: Instant,
    /// Clients stop creating orders.
    stop: AtomicBool,
    /// POST → called, µs (both inside the window).
    called: Mutex<Histogram<u64>>,
    /// The POST's own round trip, µs.
    post: Mutex<Histogram<u64>>,
    created_in_window: AtomicU64,
    completed_in_window: AtomicU64,
    created_total: AtomicU64,
    completed_total: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    fn in_window(&self, t: Instant) -> bool {
        t >= self.start && t <= self.end
    }

    fn error(&self, e: anyhow::Error) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().expect("error slot");
        if first.is_none() {
            *first = Some(format!("{e:#}"));
        }
    }
}

/// One HTTP client: a keep-alive agent and a token.
struct Http {
    agent: ureq::Agent,
    base: String,
    auth: String,
}

impl Http {
    fn new(addr: SocketAddr, token: &str) -> Http {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build();
        Http {
            agent: config.into(),
            base: format!("http://{addr}"),
            auth: format!("Bearer {token}"),
        }
    }

    /// POSTs `body` (or nothing); the 2xx answer's JSON, or an error with the status and body.
    fn post(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let req = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .header("Accept", "application/json");
        let mut response = match body {
            Some(b) => req.send_json(&b),
            None => req.send_empty(),
        }
        .with_context(|| format!("POST {path}"))?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string()?;
        if !(200..300).contains(&status) {
            bail!("POST {path}: HTTP {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// An open event stream, read line by line.
struct Stream {
    reader: BufReader<TcpStream>,
    line: String,
}

impl Stream {
    /// Opens `path` with the token as `access_token` and waits for its first view.
    fn open(addr: SocketAddr, path: &str, token: &str) -> anyhow::Result<(Stream, Value)> {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut w = &s;
        write!(
            w,
            "GET {path}?access_token={token} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        )?;
        let mut stream = Stream {
            reader: BufReader::new(s),
            line: String::new(),
        };
        stream.line.clear();
        stream.reader.read_line(&mut stream.line)?;
        let status = stream.line.trim_end().to_string();
        if !status.contains(" 200 ") {
            bail!("GET {path}: {status}");
        }
        let first = stream
            .next(Instant::now() + Duration::from_secs(10), None)?
            .with_context(|| format!("GET {path}: the stream ended before its first view"))?;
        Ok((stream, first))
    }

    /// The next event's data as JSON; `None` when the stream ended or `quit` is set (looked
    /// at after every line: the server sends a keep-alive every second). Keep-alives, chunk
    /// sizes and event names are skipped (a `data:` line is whole within a chunk).
    fn next(
        &mut self,
        deadline: Instant,
        quit: Option<&AtomicBool>,
    ) -> anyhow::Result<Option<Value>> {
        loop {
            if quit.is_some_and(|q| q.load(Ordering::Relaxed)) {
                return Ok(None);
            }
            if Instant::now() > deadline {
                bail!("no event before the deadline");
            }
            self.line.clear();
            match self.reader.read_line(&mut self.line) {
                Ok(0) => return Ok(None),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            if let Some(d) = self.line.trim_end().strip_prefix("data: ") {
                return Ok(Some(
                    serde_json::from_str(d).context("an event that is not JSON")?,
                ));
            }
        }
    }
}

/// The state of `order` in a patient view, if it is there.
fn state_in(view: &Value, order: &str) -> Option<String> {
    view["queue"].as_array()?.iter().find_map(|e| {
        (e["order"].as_str() == Some(order)).then(|| e["state"].as_str().unwrap_or("").into())
    })
}

/// One client: orders for its patients in turn until told to stop.
fn client(
    addr: SocketAddr,
    token: String,
    patients: Vec<String>,
    shared: Arc<Shared>,
    seed: u64,
) -> anyhow::Result<()> {
    let http = Http::new(addr, &token);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut next = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let patient = &patients[next % patients.len()];
        next += 1;
        let path = format!("/api/patients/{patient}/events");
        let (mut stream, _) = match Stream::open(addr, &path, &token) {
            Ok(s) => s,
            Err(e) if format!("{e:#}").contains(" 429 ") => {
                // The token's previous stream is not yet seen closed: a moment later.
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(e),
        };
        let body = json!({
            "patient": patient,
            "pool": KINDS[rng.random_range(..KINDS.len())],
            "priority": PRIORITIES[rng.random_range(..PRIORITIES.len())],
            "reason": "benchmark",
        });
        let t0 = Instant::now();
        let order = http.post("/api/orders", Some(body))?;
        let posted = t0.elapsed();
        shared.created_total.fetch_add(1, Ordering::Relaxed);
        if shared.in_window(t0) {
            shared.created_in_window.fetch_add(1, Ordering::Relaxed);
        }
        let id = order["id"]
            .as_str()
            .ok_or_else(|| anyhow!("POST /api/orders answered without an id: {order}"))?
            .to_string();
        let deadline = t0 + CALL_DEADLINE;
        let mut seen = false;
        loop {
            let view = stream
                .next(deadline, None)
                .with_context(|| format!("order {id}: waiting for \"called\" on {path}"))?
                .with_context(|| format!("{path} ended"))?;
            match state_in(&view, &id) {
                Some(s) if s != "queued" => break,
                Some(_) => seen = true,
                // Gone from the patient's view after it was seen: finished already.
                None if seen => break,
                None => {}
            }
        }
        let t1 = Instant::now();
        drop(stream);
        if shared.in_window(t0) && shared.in_window(t1) {
            let us = |d: Duration| d.as_micros().max(1) as u64;
            shared.called.lock().expect("hist").record(us(t1 - t0)).ok();
            shared.post.lock().expect("hist").record(us(posted)).ok();
        }
    }
    Ok(())
}

/// The technicians' eyes: every order a unit shows on `GET /api/events` goes to `work` once.
fn technician_feed(
    addr: SocketAddr,
    token: String,
    work: mpsc::Sender<String>,
    quit: Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let (mut stream, first) = Stream::open(addr, "/api/events", &token)?;
    let mut handled = HashSet::new();
    let mut view = Some(first);
    loop {
        if let Some(v) = view.take()
            && let Some(units) = v["units"].as_array()
        {
            for u in units {
                if let Some(o) = u["order"].as_str()
                    && handled.insert(o.to_string())
                    && work.send(o.to_string()).is_err()
                {
                    return Ok(());
                }
            }
        }
        if quit.load(Ordering::Relaxed) {
            return Ok(());
        }
        match stream.next(Instant::now() + Duration::from_secs(3600), Some(&quit)) {
            Ok(Some(v)) => view = Some(v),
            Ok(None) => return Ok(()),
            Err(_) if quit.load(Ordering::Relaxed) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// A technician: starts and completes the orders it is handed.
fn technician(
    http: Http,
    work: Arc<Mutex<mpsc::Receiver<String>>>,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    loop {
        let next = work.lock().expect("work queue").recv();
        let Ok(id) = next else { return Ok(()) };
        http.post(&format!("/api/orders/{id}/start"), None)?;
        http.post(&format!("/api/orders/{id}/complete"), None)?;
        shared.completed_total.fetch_add(1, Ordering::Relaxed);
        if shared.in_window(Instant::now()) {
            shared.completed_in_window.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The `serve` child and what it printed.
struct Server {
    child: Child,
    addr: SocketAddr,
    admin_token: String,
    log: PathBuf,
}

impl Server {
    /// Starts `medkeeper serve` and waits until it prints its URL and admin token.
    fn start(
        data: &Path,
        connect: Option<&str>,
        store: Option<&str>,
        hospital: &Path,
    ) -> anyhow::Result<Server> {
        let exe = std::env::current_exe().context("cannot find this binary")?;
        let log = data.join("serve.log");
        let mut cmd = Command::new(exe);
        cmd.arg("serve")
            .arg("--data")
            .arg(data)
            .args(["--listen", "127.0.0.1:0", "--instance", "bench-api"])
            .arg("--hospital")
            .arg(hospital)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?);
        if let Some(c) = connect {
            cmd.args(["--connect", c]);
        }
        if let Some(s) = store {
            cmd.args(["--store", s]);
        }
        let mut child = cmd.spawn().context("cannot start medkeeper serve")?;
        let stdout = child.stdout.take().context("serve's stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    // Keep reading so that serve never blocks on a full pipe.
                    continue;
                }
            }
        });
        let (mut addr, mut token) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while addr.is_none() || token.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "medkeeper serve printed no URL and admin token within 60 s (log: {})",
                    log.display()
                );
            };
            if let Some(url) = line.strip_prefix("listening on http://") {
                addr = Some(url.trim_end_matches('/').parse::<SocketAddr>()?);
            } else if let Some(t) = line.strip_prefix("admin token: ") {
                token = Some(t.trim().to_string());
            }
        }
        Ok(Server {
            child,
            addr: addr.expect("set above"),
            admin_token: token.expect("set above"),
            log,
        })
    }

    /// SIGTERM, then up to 20 s for a clean stop (kill after that).
    fn stop(mut self) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    eprintln!(
                        "medkeeper bench api: serve exited with {status} (log: {})",
                        self.log.display()
                    );
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("serve did not stop within 20 s of SIGTERM (killed)")
    }
}

/// What a run measured.
struct Measured {
    seconds: f64,
    called: Histogram<u64>,
    post: Histogram<u64>,
    created: u64,
    completed: u64,
    errors: u64,
    first_error: Option<String>,
    zk: Option<super::ZkCounters>,
}

/// The whole run, on blocking threads.
fn measure(
    b: &ApiBench,
    data: &Path,
    connect: Option<&str>,
    zk: Option<Vec<String>>,
) -> anyhow::Result<Measured> {
    let hospital = data.join("hospital.toml");
    let demo =
        HospitalConfig::DEMO_TOML.replace("reserve_for_stat = true", "reserve_for_stat = false");
    std::fs::write(&hospital, demo)?;
    let server = Server::start(data, connect, b.store.as_deref(), &hospital)?;
    let result = drive(b, &server, zk);
    let stopped = server.stop();
    let m = result?;
    stopped?;
    Ok(m)
}

fn drive(b: &ApiBench, server: &Server, zk: Option<Vec<String>>) -> anyhow::Result<Measured> {
    let addr = server.addr;
    let admin = Http::new(addr, &server.admin_token);
    let token = |role: &str, label: String| -> anyhow::Result<String> {
        let t = admin.post("/api/tokens", Some(json!({"role": role, "label": label})))?;
        Ok(t["token"]
            .as_str()
            .ok_or_else(|| anyhow!("POST /api/tokens answered without a token: {t}"))?
            .to_string())
    };
    let clients = b.clients.max(1);
    let mut setup = Vec::new();
    for c in 0..clients {
        let t = token("scheduler", format!("bench-client-{c}"))?;
        let http = Http::new(addr, &t);
        let mut patients = Vec::new();
        for p in 0..b.patients.max(1) {
            let v = http.post(
                "/api/patients",
                Some(json!({"name": format!("Bench Patient {c}-{p}")})),
            )?;
            patients.push(
                v["id"]
                    .as_str()
                    .ok_or_else(|| anyhow!("POST /api/patients answered without an id: {v}"))?
                    .to_string(),
            );
        }
        setup.push((t, patients));
    }
    let tech_token = token("technician", "bench-technicians".into())?;
    eprintln!(
        "medkeeper bench api: serve at http://{addr}/ (log {}); {clients} clients with {} \
         patients each",
        server.log.display(),
        b.patients.max(1)
    );

    let start = Instant::now() + Duration::from_secs_f64(b.warmup.max(0.0));
    let end = start + Duration::from_secs_f64(b.seconds.max(0.1));
    let shared = Arc::new(Shared {
        start,
        end,
        stop: AtomicBool::new(false),
        called: Mutex::new(hist()),
        post: Mutex::new(hist()),
        created_in_window: AtomicU64::new(0),
        completed_in_window: AtomicU64::new(0),
        created_total: AtomicU64::new(0),
        completed_total: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
    });

    // Technicians first, so that the first orders are drained.
    let quit = Arc::new(AtomicBool::new(false));
    let (work_tx, work_rx) = mpsc::channel();
    let work_rx = Arc::new(Mutex::new(work_rx));
    let feed = {
        let (t, q) = (tech_token.clone(), quit.clone());
        std::thread::spawn(move || technician_feed(addr, t, work_tx, q))
    };
    let mut technicians = Vec::new();
    for _ in 0..b.technicians.max(1) {
        let (http, work, shared) = (
            Http::new(addr, &tech_token),
            work_rx.clone(),
            shared.clone(),
        );
        technicians.push(std::thread::spawn(move || {
            if let Err(e) = technician(http, work, shared.clone()) {
                shared.error(e);
            }
        }));
    }
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut threads = Vec::new();
    for (i, (t, patients)) in setup.into_iter().enumerate() {
        let shared = shared.clone();
        threads.push(std::thread::spawn(move || {
            if let Err(e) = client(addr, t, patients, shared.clone(), stamp ^ i as u64) {
                shared.error(e);
            }
        }));
    }
    // ZooKeeper's counters over the window.
    let zk_window = zk.map(|servers| {
        std::thread::spawn(move || {
            std::thread::sleep(start.saturating_duration_since(Instant::now()));
            let first = super::zk_counters_blocking(&servers);
            std::thread::sleep(end.saturating_duration_since(Instant::now()));
            let last = super::zk_counters_blocking(&servers);
            first.zip(last).map(|(a, z)| z.since(&a))
        })
    });
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| anyhow!("a client thread panicked"))?;
    }
    // Drain: every order created is completed (they no longer count), then stop.
    let drain = Instant::now() + Duration::from_secs(15);
    while shared.completed_total.load(Ordering::Relaxed)
        < shared.created_total.load(Ordering::Relaxed)
        && Instant::now() < drain
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    quit.store(true, Ordering::Relaxed);
    let zk = zk_window.and_then(|t| t.join().ok().flatten());
    // The feed sees `quit` at its next event or keep-alive (1 s); it drops the work queue's
    // sender, and the technicians end.
    let _ = feed.join();
    for t in technicians {
        let _ = t.join();
    }
    let m = Measured {
        seconds: (end - start).as_secs_f64(),
        called: shared.called.lock().expect("hist").clone(),
        post: shared.post.lock().expect("hist").clone(),
        created: shared.created_in_window.load(Ordering::Relaxed),
        completed: shared.completed_in_window.load(Ordering::Relaxed),
        errors: shared.errors.load(Ordering::Relaxed),
        first_error: shared.first_error.lock().expect("error slot").clone(),
        zk,
    };
    Ok(m)
}

/// Runs `medkeeper bench api`.
pub async fn run(b: ApiBench) -> anyhow::Result<ExitCode> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let (data, remove) = match &b.data {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!(
                "medkeeper-bench-api-{}-{stamp}",
                std::process::id()
            )),
            true,
        ),
    };
    std::fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
    // On ZooKeeper: a fresh chroot (serve creates it), deleted afterwards.
    let (connect, chroot, zk) = match &b.connect {
        None => (None, None, None),
        Some(c) if c.starts_with("embedded:") => (Some(c.clone()), None, None),
        Some(c) => {
            let chroot = format!("/medkeeper-bench/api-{}-{stamp}", std::process::id());
            let hosts = c.split('/').next().unwrap_or(c);
            (
                Some(format!("{hosts}{chroot}")),
                Some((hosts.to_string(), chroot)),
                super::zk_servers(c),
            )
        }
    };
    let (result, b) = {
        let (data, connect) = (data.clone(), connect.clone());
        tokio::task::spawn_blocking(move || {
            let m = measure(&b, &data, connect.as_deref(), zk);
            (m, b)
        })
        .await
        .context("the benchmark thread panicked")?
    };
    if let Some((hosts, chroot)) = chroot {
        let args = ConnectArgs {
            connect: hosts,
            auth: None,
            zk_tls_ca: None,
            zk_tls_cert: None,
            zk_tls_key: None,
            session_timeout_ms: 10_000,
            create_chroot: false,
            sync_stats: None,
        };
        match coord::connect(&args).await {
            Ok(root) => {
                if let Err(e) = crate::bench_recipes::delete_tree(&root.session, &chroot).await {
                    eprintln!("medkeeper bench api: could not delete {chroot}: {e:#}");
                }
                root.session.close().await;
            }
            Err(e) => eprintln!("medkeeper bench api: could not delete {chroot}: {e:#}"),
        }
    }
    let m = result?;
    if remove {
        let _ = std::fs::remove_dir_all(&data);
    }
    if let Some(e) = &m.first_error {
        bail!("{} request(s) failed; the first: {e}", m.errors);
    }
    let rate = m.completed as f64 / m.seconds;
    let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q);
    if b.json {
        let mut line = json!({
            "participant": "medkeeper",
            "scenario": "api",
            "ops": m.completed,
            "seconds": (m.seconds * 1000.0).round() / 1000.0,
            "rate": (rate * 10.0).round() / 10.0,
            "created": m.created,
            "clients": b.clients,
            "technicians": b.technicians,
            "sessions": 1,
            "store": if b.store.is_some() { "postgres" } else { "file" },
        });
        if !m.called.is_empty() {
            line["p50_us"] = q(&m.called, 0.5).into();
            line["p99_us"] = q(&m.called, 0.99).into();
            line["post_p50_us"] = q(&m.post, 0.5).into();
            line["post_p99_us"] = q(&m.post, 0.99).into();
            line["called"] = m.called.len().into();
        }
        if let Some(z) = &m.zk
            && m.completed > 0
        {
            let per = |n: u64| (n as f64 / m.completed as f64 * 100.0).round() / 100.0;
            line["zk_packets_per_order"] = per(z.packets_received).into();
            line["zk_leader_fsyncs_per_order"] = per(z.leader_fsyncs).into();
        }
        println!("{line}");
    } else {
        println!(
            "medkeeper api ({} clients): {} orders completed in {:.2} s = {rate:.1}/s; POST → \
             called on the patient's stream p50 {} µs, p99 {} µs ({} measured); the POST alone \
             p50 {} µs, p99 {} µs",
            b.clients,
            m.completed,
            m.seconds,
            q(&m.called, 0.5),
            q(&m.called, 0.99),
            m.called.len(),
            q(&m.post, 0.5),
            q(&m.post, 0.99),
        );
        if let Some(z) = &m.zk
            && m.completed > 0
        {
            println!(
                "  ZooKeeper's counters per order: {:.1} packets received, {:.2} leader fsyncs",
                z.packets_received as f64 / m.completed as f64,
                z.leader_fsyncs as f64 / m.completed as f64,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
