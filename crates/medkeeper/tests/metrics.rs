//! Issue 14: a real Prometheus (Debian's `prometheus`, installed by scripts/test through
//! scripts/prometheus) scrapes `medkeeper serve --metrics-listen` and stores what it exposes.
//! Without the binary the test is skipped with a message, except under CI (`CI` set), where
//! it fails.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Serve, agent, call};

/// A free loopback port (bound and let go: another process could take it in between, which
/// the caller would see as a failure to listen).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A Prometheus process; killed when dropped.
struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`host:port`, path `/metrics`) every second, or
    /// `None` if it is not installed.
    fn start(target: &str) -> Option<Prometheus> {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\nscrape_configs:\n  - \
                 job_name: medkeeper\n    static_configs: [{{targets: [\"{target}\"]}}]\n"
            ),
        )
        .unwrap();
        let listen = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match child {
            Ok(child) => Some(Prometheus {
                child,
                base: format!("http://{listen}"),
                _dir: dir,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("cannot start prometheus: {e}"),
        }
    }

    /// `GET /api/v1/{path}?query=…`'s `data`, or `None` while Prometheus is not answering.
    fn api(&self, path: &str, query: Option<&str>) -> Option<Value> {
        let mut req = agent().get(&format!("{}/api/v1/{path}", self.base));
        if let Some(q) = query {
            req = req.query("query", q);
        }
        let mut r = req.call().ok()?;
        let body: Value = serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
        (body["status"] == "success").then(|| body["data"].clone())
    }

    /// The value of the instant query `q`'s single series, once Prometheus has one (up to
    /// `within`).
    fn value(&self, q: &str, within: Duration) -> f64 {
        let deadline = Instant::now() + within;
        let mut last = None;
        while Instant::now() < deadline {
            if let Some(data) = self.api("query", Some(q)) {
                if let Some(v) = data["result"][0]["value"][1].as_str() {
                    return v.parse().unwrap();
                }
                last = Some(data);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("Prometheus has no value for {q} within {within:?}; last answer {last:?}");
    }
}

#[test]
fn issue14_prometheus_scrapes_metrics_listen() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let serve = Serve::start(&[
        "--data",
        dir.path().to_str().unwrap(),
        "--metrics-listen",
        &metrics,
    ]);
    // One API request for the HTTP counters; /metrics itself needs no token.
    let r = agent()
        .get(&format!("{}healthz", serve.url))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A stat MRI order, which the instance's dispatcher calls at once (issue 14, item 6).
    let token = serve.admin.clone().expect("the admin token");
    let a = agent();
    let (status, patient) = call(
        &a,
        "POST",
        &format!("{}api/patients", serve.url),
        &token,
        Some(json!({"name": "Metrics Patient"})),
    );
    assert_eq!(status, 201, "{patient}");
    let (status, order) = call(
        &a,
        "POST",
        &format!("{}api/orders", serve.url),
        &token,
        Some(json!({"patient": patient["id"], "pool": "MRI", "priority": "stat"})),
    );
    assert_eq!(status, 201, "{order}");
    let called = "medkeeper_dispatch_wait_seconds_count{kind=\"equipment\",pool=\"MRI\",\
                  priority=\"stat\"} 1";
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let mut r = agent()
            .get(&format!("http://{metrics}/metrics"))
            .call()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let text = r.body_mut().read_to_string().unwrap();
        if text.contains(called) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains(called), "the dispatcher's call: {text}");
    assert!(
        text.contains("medkeeper_pool_units_in_service{kind=\"equipment\",pool=\"MRI\"} 2"),
        "{text}"
    );
    // The embedded engine (the default backend) reports its fsyncs.
    assert!(
        text.contains("# TYPE medkeeper_engine_fsync_duration_seconds histogram")
            && text.contains("# TYPE medkeeper_engine_fsync_transactions histogram"),
        "{text}"
    );
    // Not on the API's port.
    let r = agent()
        .get(&format!("{}metrics", serve.url))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);

    let Some(prom) = Prometheus::start(&metrics) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "prometheus is not installed (scripts/test installs it: scripts/prometheus install)"
        );
        eprintln!("SKIPPED: prometheus is not installed (scripts/prometheus install)");
        return;
    };
    let within = Duration::from_secs(30);
    assert_eq!(prom.value("up{job=\"medkeeper\"}", within), 1.0);
    assert_eq!(
        prom.value(
            "medkeeper_pool_units_in_service{pool=\"MRI\",kind=\"equipment\"}",
            within
        ),
        2.0
    );
    assert_eq!(
        prom.value("medkeeper_coordination_session_connected", within),
        1.0
    );
    assert_eq!(
        prom.value(
            "sum(medkeeper_http_requests_total{route=\"/healthz\",status=\"200\"})",
            within
        ),
        1.0
    );
    assert_eq!(
        prom.value("medkeeper_orders{state=\"queued\"}", within),
        0.0
    );
    assert_eq!(
        prom.value(
            "medkeeper_dispatch_latency_seconds_count{pool=\"MRI\",priority=\"stat\"}",
            within
        ),
        1.0
    );
    assert_eq!(
        prom.value("medkeeper_engine_fsync_transactions_count > bool 0", within),
        1.0
    );
    let targets = prom.api("targets", None).expect("the targets");
    assert_eq!(targets["activeTargets"][0]["health"], "up", "{targets}");
    assert_eq!(targets["activeTargets"][0]["lastError"], "", "{targets}");
}
