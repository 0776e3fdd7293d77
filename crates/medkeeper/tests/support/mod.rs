//! Shared by the tests that run `medkeeper serve` as a process: start it, read what it prints,
//! call its API.

#![allow(dead_code)] // each test binary uses a different part

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod pg;

/// A `medkeeper serve` process; killed when dropped (a failed test leaves nothing behind).
pub struct Serve {
    /// `http://127.0.0.1:PORT/`.
    pub url: String,
    /// The admin token it printed on first start.
    pub admin: Option<String>,
    /// The process.
    pub child: Child,
    /// Everything it wrote on stderr so far.
    pub log: Arc<Mutex<String>>,
    /// The thread that reads its stderr into `log`; done once the process has exited.
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- medkeeper serve stderr ---\n{}",
                self.log.lock().unwrap()
            );
        }
    }
}

impl Serve {
    /// Starts `medkeeper serve --listen 127.0.0.1:0 ARGS…` and waits (up to 60 s) until it
    /// prints its URL, which it does once ready.
    pub fn start(args: &[&str]) -> Serve {
        Serve::start_with_env(args, &[])
    }

    /// [`start`](Serve::start) with these environment variables set (`RUST_LOG` and
    /// `MEDKEEPER_LOG_FORMAT` are unset unless given here).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_medkeeper"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args)
            // Only what the test says: no settings from the environment.
            .env_remove("MEDKEEPER_CONFIG")
            .env_remove("MEDKEEPER_CONNECT")
            .env_remove("MEDKEEPER_DATA")
            .env_remove("MEDKEEPER_STORE")
            .env_remove("MEDKEEPER_SERVER")
            .env_remove("MEDKEEPER_TOKEN")
            .env_remove("MEDKEEPER_LOG_FORMAT")
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start medkeeper serve");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        let reader = std::thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut buf = [0u8; 4096];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let (mut url, mut admin) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(u) = line.strip_prefix("listening on ") {
                        url = Some(u.trim().to_string());
                    }
                    if let Some(t) = line.strip_prefix("admin token: ") {
                        admin = Some(t.trim().to_string());
                    }
                    if line.starts_with("dashboard:") {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let Some(url) = url else {
            panic!(
                "medkeeper serve printed no URL; stderr:\n{}",
                log.lock().unwrap()
            );
        };
        Serve {
            url,
            admin,
            child,
            log,
            reader: Some(reader),
        }
    }

    /// Sends SIGTERM, waits (up to 15 s) for the process to exit and for its stderr to be read
    /// to the end; its exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "still running after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        status
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        self.url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string()
    }
}

/// An HTTP client that answers 4xx/5xx as responses, not errors.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Calls `METHOD url` with a bearer token and an optional JSON body; the status and the JSON
/// answer (`Null` if none).
pub fn call(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let r = match (method, body) {
        ("GET", _) => agent.get(url).header("Authorization", &auth).call(),
        ("DELETE", _) => agent.delete(url).header("Authorization", &auth).call(),
        ("POST", b) => agent
            .post(url)
            .header("Authorization", &auth)
            .send_json(b.unwrap_or(Value::Object(Default::default()))),
        ("PUT", b) => agent
            .put(url)
            .header("Authorization", &auth)
            .send_json(b.unwrap_or(Value::Object(Default::default()))),
        (m, _) => panic!("method {m}"),
    };
    let mut r = r.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = r.status().as_u16();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}
