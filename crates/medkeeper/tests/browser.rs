//! The dashboard in a real headless Chromium, driven over WebDriver by chromedriver.
//!
//! Starts the real `medkeeper serve` on an embedded data directory, opens the staff dashboard,
//! changes the hospital through the HTTP API and checks that the page follows live over
//! Server-Sent Events, without a reload; then opens a patient's own page with a patient token.
//! A second test works the alarms panel (issue 14, item 5): an alarm raised live, acknowledged by
//! a nurse's click, shelved by an admin. Screenshots go to `target/browser/`; with
//! `MEDKEEPER_UPDATE_SCREENSHOT=1` the dashboard's and the alarms panel's are also copied to
//! `docs/dashboard.png` and `docs/dashboard-alarms.png`. Another loads the dashboard over HTTPS
//! (`serve --tls-cert/--tls-key`).
//!
//! Needs the Debian packages `chromium` and `chromium-driver` (`scripts/test` installs them).
//! `MEDKEEPER_SKIP_BROWSER=1` skips the test.

mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::{Serve, agent};

/// A child process killed (and reaped) when dropped, so nothing outlives a failed assertion.
struct Proc {
    name: &'static str,
    child: Child,
    /// It leads its own process group, killed as a whole (chromedriver's Chromium with it).
    group: bool,
    /// The tail of its stderr, shown if the test fails.
    log: Arc<Mutex<String>>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.group {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
            if !log.is_empty() {
                eprintln!("---- {} stderr (tail) ----\n{log}", self.name);
            }
        }
    }
}

/// Keeps the last 64 KiB of what `r` writes.
fn drain_into(r: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut l) = log.lock() {
                l.push_str(&line);
                l.push('\n');
                if l.len() > 64 * 1024 {
                    let cut = l.len() - 48 * 1024;
                    let cut = (cut..l.len()).find(|i| l.is_char_boundary(*i)).unwrap_or(0);
                    l.drain(..cut);
                }
            }
        }
    });
}

fn find_in_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.push("/usr/bin".into());
    dirs.push("/usr/lib/chromium".into());
    for name in names {
        for d in &dirs {
            let p = d.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Polls `f` every 100 ms until it returns `Some`, or panics after `timeout` with `what`.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads a response: its status and its JSON body (`Null` if empty or not JSON).
fn read(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>, what: &str) -> (u16, Value) {
    let mut resp = resp.unwrap_or_else(|e| panic!("{what}: {e}"));
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_string()
        .unwrap_or_else(|e| panic!("{what}: reading the body: {e}"));
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The medkeeper HTTP API with a bearer token.
struct Api {
    agent: ureq::Agent,
    base: String,
    token: String,
}

impl Api {
    fn send(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}{}", self.base, path.trim_start_matches('/'));
        let auth = format!("Bearer {}", self.token);
        let what = format!("{method} {path}");
        let resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .send_json(b),
            ("PUT", Some(b)) => self
                .agent
                .put(&url)
                .header("Authorization", &auth)
                .send_json(b),
            _ => panic!("unsupported {what}"),
        };
        read(resp, &what)
    }

    /// Sends and asserts the status; returns the body.
    fn expect(&self, method: &str, path: &str, body: Option<Value>, status: u16) -> Value {
        let (got, v) = self.send(method, path, body.clone());
        assert_eq!(got, status, "{method} {path} {body:?} answered {got}: {v}");
        v
    }
}

/// A WebDriver session on chromedriver; deleted when dropped (before chromedriver is killed).
struct Browser {
    agent: ureq::Agent,
    base: String,
    session: String,
}

impl Browser {
    fn start(driver_port: u16, chromium: &Path) -> Browser {
        Browser::start_with(driver_port, chromium, &[])
    }

    /// [`start`](Browser::start) with more Chromium arguments.
    fn start_with(driver_port: u16, chromium: &Path, extra: &[String]) -> Browser {
        let agent = agent();
        let base = format!("http://127.0.0.1:{driver_port}");
        wait_for("chromedriver to be ready", Duration::from_secs(20), || {
            let r = agent.get(format!("{base}/status")).call().ok()?;
            let (_, v) = read(Ok(r), "GET /status");
            (v["value"]["ready"] == json!(true)).then_some(())
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "timeouts": {"pageLoad": 30000, "script": 10000},
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,900",
                         "--force-device-scale-factor=1", "--lang=en-US"]
            }
        }}});
        let mut caps = caps;
        for arg in extra {
            caps["capabilities"]["alwaysMatch"]["goog:chromeOptions"]["args"]
                .as_array_mut()
                .unwrap()
                .push(json!(arg));
        }
        let (status, v) = read(
            agent.post(format!("{base}/session")).send_json(caps),
            "POST /session",
        );
        assert_eq!(status, 200, "chromedriver refused a session: {v}");
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no sessionId in {v}"))
            .to_string();
        Browser {
            agent,
            base,
            session,
        }
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{}", self.base, self.session, path);
        let what = format!("WebDriver {method} {path}");
        let resp = match method {
            "GET" => self.agent.get(&url).call(),
            _ => self.agent.post(&url).send_json(body.unwrap_or(json!({}))),
        };
        let (status, v) = read(resp, &what);
        assert_eq!(status, 200, "{what} answered {status}: {v}");
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page; its return value.
    fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Polls `script` (see [`Browser::js`]) every 100 ms until it returns `true`; on timeout,
    /// panics with `what` and the last value it returned (return a diagnostic for "not yet").
    fn wait_js(&self, what: &str, timeout: Duration, script: &str, args: Value) {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.js(script, args.clone());
            if v == json!(true) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last seen: {v}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The WebDriver id of the first element matching `css` (panics if none).
    fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .unwrap_or_else(|| panic!("no element id for {css:?} in {v}"))
            .to_string()
    }

    /// Clicks the element matching `css` as a user would (WebDriver Element Click: scrolled
    /// into view, and an error if something else would receive the click).
    fn click(&self, css: &str) {
        let el = self.find(css);
        self.cmd("POST", &format!("/element/{el}/click"), None);
    }

    /// Types `text` into the element matching `css` (WebDriver Element Send Keys).
    fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// [`type_into`](Browser::type_into), then checks the field holds `text`. Seen once in CI
    /// with every test binary running at once: an acknowledgement went out without the note
    /// typed just before (no error, the card not replaced) — the keystrokes lost on the way.
    /// Then it says what had the focus and types once more, so the test goes on to what it is
    /// about; a field that still does not hold the text fails it.
    fn type_into_checked(&self, css: &str, text: &str) {
        let holds = "const f = document.querySelector(arguments[0]);
                     return f && f.value === arguments[1]
                         || [f && f.value, document.activeElement && document.activeElement.outerHTML.slice(0, 120)];";
        for attempt in 0..2 {
            self.type_into(css, text);
            let v = self.js(holds, json!([css, text]));
            if v == json!(true) {
                return;
            }
            eprintln!("typing into {css} attempt {attempt}: the field holds {v} (value, focus)");
            self.js(
                "const f = document.querySelector(arguments[0]); if (f) f.value = '';",
                json!([css]),
            );
        }
        panic!("{css} does not hold {text:?} after typing it twice");
    }

    fn resize(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// Saves a PNG screenshot of the viewport to `path`.
    fn screenshot(&self, path: &Path) {
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64_decode(b64.as_str().expect("screenshot is a base64 string"));
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let quick = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .build(),
        );
        let _ = quick
            .delete(format!("{}/session/{}", self.base, self.session))
            .call();
    }
}

/// Standard base64 (RFC 4648, with or without padding; whitespace ignored).
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("bad base64 byte {c:#x}"),
        }
    };
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        acc = (acc << 6) | val(c);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8gd29ybGQ="), b"hello world");
    assert_eq!(base64_decode("YQ=="), b"a");
    assert_eq!(base64_decode("YWI="), b"ab");
    assert_eq!(base64_decode("YWJj"), b"abc");
    assert_eq!(base64_decode("+/8A"), [0xfb, 0xff, 0x00]);
}

fn start_chromedriver(driver: &Path) -> (Proc, u16) {
    start_chromedriver_with_env(driver, &[])
}

/// [`start_chromedriver`] with these variables in its environment, and so in its Chromium's
/// (`TZ=UTC`: a device whose clock is set to UTC).
fn start_chromedriver_with_env(driver: &Path, env: &[(&str, &str)]) -> (Proc, u16) {
    let port = free_port();
    let mut child = Command::new(driver)
        .envs(env.iter().copied())
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", driver.display()));
    let log = Arc::new(Mutex::new(String::new()));
    drain_into(child.stdout.take().unwrap(), log.clone());
    drain_into(child.stderr.take().unwrap(), log.clone());
    (
        Proc {
            name: "chromedriver",
            child,
            group: true,
            log,
        },
        port,
    )
}

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Chromium and chromedriver; `None` (skip the test) with `MEDKEEPER_SKIP_BROWSER=1`.
fn browser_tools() -> Option<(PathBuf, PathBuf)> {
    if std::env::var("MEDKEEPER_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("MEDKEEPER_SKIP_BROWSER=1: skipping the headless Chromium dashboard test");
        return None;
    }
    let chromium = find_in_path(&["chromium", "chromium-browser"]);
    let driver = find_in_path(&["chromedriver"]);
    let (Some(chromium), Some(driver)) = (chromium, driver) else {
        panic!(
            "the browser test needs Chromium and chromedriver (Debian packages `chromium` and \
             `chromium-driver`); run scripts/test, which installs them, or set \
             MEDKEEPER_SKIP_BROWSER=1 to skip this test"
        );
    };
    Some((chromium, driver))
}

/// Copies `target/browser/NAME` to `docs/NAME` with `MEDKEEPER_UPDATE_SCREENSHOT=1`.
fn update_doc_screenshot(shots: &Path, name: &str) {
    if std::env::var("MEDKEEPER_UPDATE_SCREENSHOT").as_deref() == Ok("1") {
        let docs = workspace_root().join("docs").join(name);
        std::fs::copy(shots.join(name), &docs).unwrap();
        eprintln!("updated {}", docs.display());
    }
}

/// The dashboard over HTTPS (`serve --tls-cert/--tls-key`): Chromium trusts the server's key
/// (by its SPKI hash, not by ignoring certificate errors), loads the page and its script, and
/// the pools and their live event stream arrive over TLS.
#[test]
fn dashboard_over_https_in_headless_chromium() {
    let Some((chromium, driver)) = browser_tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    // Chromium names a trusted key by the base64 SHA-256 of its SubjectPublicKeyInfo.
    let spki = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | \
             openssl dgst -sha256 -binary | base64",
            cert.display()
        ))
        .output()
        .unwrap();
    assert!(spki.status.success(), "openssl: {spki:?}");
    let spki = String::from_utf8(spki.stdout).unwrap().trim().to_string();
    let data = dir.path().join("data");
    let server = Serve::start(&[
        "--data",
        data.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let admin = server.admin.clone().expect("an admin token");
    let (_chromedriver, driver_port) = start_chromedriver(&driver);
    let browser = Browser::start_with(
        driver_port,
        &chromium,
        &[format!("--ignore-certificate-errors-spki-list={spki}")],
    );
    browser.goto(&format!("{}#token={admin}", server.url));
    browser.wait_js(
        "the MRI section with its units and a live stream, over HTTPS",
        Duration::from_secs(20),
        "const s = document.querySelector('[data-pool=\"MRI\"]');
         if (location.protocol !== 'https:') return location.href;
         return !!s && s.querySelectorAll('[data-unit]').length >= 2
             && !!s.querySelector('.live[data-state=\"live\"]');",
        json!([]),
    );
}

#[test]
fn dashboard_is_live_in_headless_chromium() {
    let Some((chromium, driver)) = browser_tools() else {
        return;
    };

    let data = tempfile::tempdir().unwrap();
    // Dropped in reverse order: the WebDriver session, then chromedriver, then the server.
    let server = Serve::start(&["--data", data.path().to_str().unwrap()]);
    let (base, admin) = (
        server.url.clone(),
        server.admin.clone().expect("an admin token"),
    );
    let (_chromedriver, driver_port) = start_chromedriver(&driver);
    let browser = Browser::start(driver_port, &chromium);
    let api = Api {
        agent: agent(),
        base: base.clone(),
        token: admin.clone(),
    };
    let shots = workspace_root().join("target/browser");

    // ---- the staff dashboard ----
    browser.goto(&format!("{base}#token={admin}"));
    wait_for(
        "the MRI section with its two units and a live stream",
        Duration::from_secs(15),
        || {
            let v = browser.js(
                "const s = document.querySelector('[data-pool=\"MRI\"]');
                 return !!s && s.querySelectorAll('[data-unit]').length >= 2
                     && !!s.querySelector('.live[data-state=\"live\"]');",
                json!([]),
            );
            (v == json!(true)).then_some(())
        },
    );
    let url = browser.js("return location.href;", json!([]));
    assert!(
        !url.as_str().unwrap_or("").contains("mkt_"),
        "the token must be removed from the address bar: {url}"
    );

    // Both MRI units into maintenance, so that the new order stays in line.
    for unit in ["MRI-1", "MRI-2"] {
        api.expect(
            "PUT",
            &format!("/api/pools/MRI/units/{unit}/status"),
            Some(json!({"status": "maintenance"})),
            200,
        );
    }
    wait_for(
        "both MRI unit cards to show maintenance",
        Duration::from_secs(15),
        || {
            let v = browser.js(
                "return [...document.querySelectorAll('[data-pool=\"MRI\"] [data-unit]')]
                     .every(u => u.dataset.status === 'maintenance'
                                 && u.textContent.includes('maintenance'));",
                json!([]),
            );
            (v == json!(true)).then_some(())
        },
    );

    // Mark the page, and note (in the page's own clock) when each MRI queue row first appears.
    browser.js(
        "window.__marker = 1; window.__rowSeen = {};
         const note = () => {
           for (const r of document.querySelectorAll('[data-pool=\"MRI\"] tr[data-order]'))
             if (!(r.dataset.order in window.__rowSeen)) window.__rowSeen[r.dataset.order] = Date.now();
         };
         new MutationObserver(note).observe(document.body, {subtree: true, childList: true});
         note();",
        json!([]),
    );

    let patient = api.expect(
        "POST",
        "/api/patients",
        Some(json!({"name": "Test Patient"})),
        201,
    );
    let patient = patient["id"].as_str().expect("patient id").to_string();
    let sent_ms = now_ms();
    let t0 = Instant::now();
    let order = api.expect(
        "POST",
        "/api/orders",
        Some(
            json!({"patient": patient, "pool": "MRI", "priority": "urgent",
                    "reason": "browser test"}),
        ),
        201,
    );
    let created_ms = now_ms();
    let order = order["id"].as_str().expect("order id").to_string();
    let row_sel = format!("[data-pool=\"MRI\"] [data-order=\"{order}\"]");
    let row_text: String = wait_for(
        "the new order's row in the MRI queue",
        Duration::from_secs(15),
        || {
            let v = browser.js(
                "const r = document.querySelector(arguments[0]); return r ? r.textContent : null;",
                json!([row_sel]),
            );
            v.as_str().map(str::to_string)
        },
    );
    let polled = t0.elapsed();
    let seen = browser.js("return window.__rowSeen[arguments[0]];", json!([order]));
    // The page's clock and ours are the same machine's; a negative latency means the stream's
    // event reached the page before the 201 reached us.
    match seen.as_i64() {
        Some(at) => eprintln!(
            "new order in the page: {} ms after the 201 ({} ms after sending POST /api/orders, \
             which took {} ms); polling saw it after {} ms",
            at - created_ms,
            at - sent_ms,
            created_ms - sent_ms,
            polled.as_millis()
        ),
        None => eprintln!(
            "new order in the page: {} ms after sending it (poll)",
            polled.as_millis()
        ),
    }
    assert!(
        row_text.to_lowercase().contains("urgent"),
        "the row shows the priority: {row_text:?}"
    );
    let marks = browser.js("return [window.__loadCount, window.__marker];", json!([]));
    assert_eq!(marks, json!([1, 1]), "the page was reloaded");

    // MRI-1 back in service: the dispatcher calls the order to it.
    api.expect(
        "PUT",
        "/api/pools/MRI/units/MRI-1/status",
        Some(json!({"status": "available"})),
        200,
    );
    wait_for(
        "MRI-1 in use by the order, and the order out of the queue",
        Duration::from_secs(15),
        || {
            let v = browser.js(
                "const u = document.querySelector('[data-pool=\"MRI\"] [data-unit=\"MRI-1\"]');
                 return !!u && u.dataset.status === 'in-use' && u.textContent.includes('in use')
                     && !document.querySelector(arguments[0]);",
                json!([row_sel]),
            );
            (v == json!(true)).then_some(())
        },
    );
    let marks = browser.js("return [window.__loadCount, window.__marker];", json!([]));
    assert_eq!(marks, json!([1, 1]), "the page was reloaded");
    let status = browser.js(
        "const s = document.getElementById('status'); return s.hidden ? '' : s.textContent;",
        json!([]),
    );
    assert_eq!(status, json!(""), "the status line shows an error");
    let leader = browser.js(
        "return document.getElementById('cluster').textContent;",
        json!([]),
    );
    assert!(
        leader.as_str().unwrap_or("").contains("Leader"),
        "the header shows the cluster: {leader}"
    );
    // A little more in the picture: a queued routine order for CT.
    let other = api.expect(
        "POST",
        "/api/patients",
        Some(json!({"name": "Second Patient"})),
        201,
    );
    for unit in ["CT-1", "CT-2", "CT-3"] {
        api.expect(
            "PUT",
            &format!("/api/pools/CT/units/{unit}/status"),
            Some(json!({"status": if unit == "CT-3" { "offline" } else { "maintenance" }})),
            200,
        );
    }
    let ct = api.expect(
        "POST",
        "/api/orders",
        Some(
            json!({"patient": other["id"], "pool": "CT", "priority": "stat",
                    "capabilities": ["contrast"], "reason": "browser test"}),
        ),
        201,
    );
    let third = api.expect(
        "POST",
        "/api/patients",
        Some(json!({"name": "Third Patient"})),
        201,
    );
    let mri2 = api.expect(
        "POST",
        "/api/orders",
        Some(
            json!({"patient": third["id"], "pool": "MRI", "priority": "routine",
                    "capabilities": ["contrast"], "reason": "browser test"}),
        ),
        201,
    );
    let both = format!(
        "[data-pool=\"CT\"] [data-order=\"{}\"], [data-pool=\"MRI\"] [data-order=\"{}\"]",
        ct["id"].as_str().unwrap(),
        mri2["id"].as_str().unwrap()
    );
    browser.wait_js(
        "the CT and MRI orders' rows",
        Duration::from_secs(15),
        "return document.querySelectorAll(arguments[0]).length === 2;",
        json!([both]),
    );
    browser.screenshot(&shots.join("dashboard.png"));
    update_doc_screenshot(&shots, "dashboard.png");

    // ---- the patient's own page, with a patient token ----
    let token = api.expect(
        "POST",
        "/api/tokens",
        Some(json!({"role": "patient", "patient": patient, "label": "browser test"})),
        201,
    );
    let token = token["token"].as_str().expect("token").to_string();
    browser.goto(&format!("{base}patient#token={token}"));
    let exam: String = wait_for(
        "the patient's exam, called to MRI-1",
        Duration::from_secs(15),
        || {
            let v = browser.js(
                "const r = document.querySelector('[data-order=\"' + arguments[0] + '\"]');
                 return r && r.textContent.includes('MRI-1') ? r.textContent : null;",
                json!([order]),
            );
            v.as_str().map(str::to_string)
        },
    );
    assert!(
        exam.contains("Please go to MRI-1"),
        "the patient is told where to go: {exam:?}"
    );
    let who = browser.js(
        "return document.getElementById('who').textContent;",
        json!([]),
    );
    assert_eq!(who, json!("Patient"));
    browser.screenshot(&shots.join("patient.png"));

    // Staff may open a patient's page: the third patient waits for MRI.
    browser.goto(&format!(
        "{base}patient?id={}#token={admin}",
        third["id"].as_str().unwrap()
    ));
    browser.wait_js(
        "the third patient's page, in line for MRI",
        Duration::from_secs(15),
        "const r = document.querySelector('[data-order=\"' + arguments[0] + '\"]');
         return (!!r && /in line for MRI/.test(r.textContent)) || (r && r.textContent);",
        json!([mri2["id"]]),
    );

    // Phone width: nothing wider than the screen.
    browser.resize(390, 844);
    wait_for(
        "the page to fit a phone's width",
        Duration::from_secs(5),
        || {
            let v = browser.js(
                "return document.documentElement.scrollWidth <= window.innerWidth;",
                json!([]),
            );
            (v == json!(true)).then_some(())
        },
    );
    browser.screenshot(&shots.join("patient-phone.png"));
    browser.goto(&format!("{base}#token={admin}"));
    browser.wait_js(
        "the staff dashboard to fit a phone's width",
        Duration::from_secs(15),
        "const ok = !!document.querySelector('[data-pool=\"MRI\"] [data-unit]')
             && document.documentElement.scrollWidth <= window.innerWidth;
         return ok || [location.href, document.documentElement.scrollWidth, window.innerWidth,
                       document.getElementById('status').textContent,
                       document.getElementById('view').textContent.slice(0, 200)];",
        json!([]),
    );
    browser.screenshot(&shots.join("dashboard-phone.png"));

    // Without a token: the sign-in form; a wrong token: the API's error in the status line.
    browser.js("sessionStorage.clear();", json!([]));
    browser.goto(&base);
    browser.wait_js(
        "the sign-in form",
        Duration::from_secs(15),
        "return !document.getElementById('signin').hidden;",
        json!([]),
    );
    browser.js(
        "document.getElementById('token-input').value = 'mkt_' + '0'.repeat(64);
         document.getElementById('signin-form').requestSubmit();",
        json!([]),
    );
    browser.wait_js(
        "the 401 in the status line",
        Duration::from_secs(15),
        "const s = document.getElementById('status');
         return (!s.hidden && s.textContent.includes('unauthorized')
                 && !document.getElementById('signin').hidden) || s.textContent;",
        json!([]),
    );
}

/// The demo hospital with its alarm rules replaced by three on the X-ray room that raise at
/// once: its only unit out of service (medium, latching), anyone waiting (low), two waiting
/// (high).
fn alarm_test_hospital() -> String {
    let demo = include_str!("../../hospital/demo-hospital.toml");
    let pools = demo
        .split("[[alarm]]")
        .next()
        .expect("the demo hospital's pools");
    format!(
        "{pools}
[[alarm]]
name = \"queue-length\"
signal = \"queue_length\"
pool = \"XRAY\"
raise = 2
clear = 0
priority = \"high\"

[[alarm]]
name = \"unit-out-of-service\"
signal = \"units_unavailable\"
pool = \"XRAY\"
limit = \"0s\"
raise = 1
clear = 0
priority = \"medium\"
latching = true

[[alarm]]
name = \"xray-waiting\"
signal = \"queue_length\"
pool = \"XRAY\"
raise = 1
clear = 0
priority = \"low\"
"
    )
}

/// The active alarm of `rule` in `GET /api/alarms`.
fn active_alarm(api: &Api, rule: &str) -> Value {
    let all = api.expect("GET", "/api/alarms", None, 200);
    all["active"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["rule"] == json!(rule)))
        .cloned()
        .unwrap_or_else(|| panic!("no active alarm {rule} in {all}"))
}

#[test]
fn alarms_panel_acknowledges_and_shelves_in_headless_chromium() {
    let Some((chromium, driver)) = browser_tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hospital = dir.path().join("hospital.toml");
    std::fs::write(&hospital, alarm_test_hospital()).unwrap();
    let data = dir.path().join("data");
    let server = Serve::start(&[
        "--data",
        data.to_str().unwrap(),
        "--hospital",
        hospital.to_str().unwrap(),
    ]);
    let (base, admin) = (
        server.url.clone(),
        server.admin.clone().expect("an admin token"),
    );
    let (_chromedriver, driver_port) = start_chromedriver(&driver);
    let browser = Browser::start(driver_port, &chromium);
    let api = Api {
        agent: agent(),
        base: base.clone(),
        token: admin.clone(),
    };
    let shots = workspace_root().join("target/browser");

    // A nurse's token; the X-ray room's only unit offline and two orders waiting for it.
    let nurse = api.expect(
        "POST",
        "/api/tokens",
        Some(json!({"role": "nurse", "label": "browser test"})),
        201,
    );
    let nurse_id = nurse["id"].as_str().expect("token id").to_string();
    let nurse = nurse["token"].as_str().expect("token").to_string();
    api.expect(
        "PUT",
        "/api/pools/XRAY/units/XR-1/status",
        Some(json!({"status": "offline"})),
        200,
    );
    for name in ["Alarm Patient One", "Alarm Patient Two"] {
        let p = api.expect("POST", "/api/patients", Some(json!({ "name": name })), 201);
        api.expect(
            "POST",
            "/api/orders",
            Some(
                json!({"patient": p["id"], "pool": "XRAY", "priority": "routine",
                        "reason": "browser test"}),
            ),
            201,
        );
    }

    // ---- the nurse: sees the three alarms live, by priority; acknowledges the high one ----
    browser.goto(&format!("{base}#token={nurse}"));
    browser.wait_js(
        "the three alarms in the panel, high first, and the header's badge",
        Duration::from_secs(20),
        "const groups = [...document.querySelectorAll('#alarms .alarm-group:not([hidden])')]
             .map(g => g.dataset.priority);
         const badge = document.getElementById('alarm-badge');
         return (groups.join() === 'high,medium,low' && !badge.hidden && badge.dataset.count === '3'
                 && /3 unacknowledged alarms/.test(badge.textContent))
             || [groups, badge.hidden, badge.textContent,
                 document.getElementById('status').textContent];",
        json!([]),
    );
    let high = "#alarms [data-alarm^='queue-length@equipment.XRAY@']";
    let card = browser.js(
        "const c = document.querySelector(arguments[0]);
         return {priority: c.dataset.priority, state: c.dataset.state, text: c.innerText,
                 group: c.closest('.alarm-group').dataset.priority};",
        json!([high]),
    );
    assert_eq!(card["priority"], json!("high"), "{card}");
    assert_eq!(card["group"], json!("high"), "{card}");
    assert_eq!(card["state"], json!("raised"), "{card}");
    let text = card["text"].as_str().unwrap_or_default().to_string();
    for want in [
        "HIGH PRIORITY",
        "Raised",
        "equipment XRAY",
        "ago",
        "Escalated",
        "queue_length",
    ] {
        assert!(text.contains(want), "the card shows {want:?}: {text:?}");
    }
    // Shelving is for admins and schedulers: a nurse has no control for it.
    let shelve = browser.js(
        "return [...document.querySelectorAll('#alarms [data-action^=\"shelve\"], #alarms select')].length
             + [...document.querySelectorAll('#alarms button')]
                 .filter(b => /shelve/i.test(b.textContent)).length;",
        json!([]),
    );
    assert_eq!(shelve, json!(0), "a nurse sees no Shelve control");
    let phi = browser.js(
        "return document.querySelector('#alarms .phi-note').textContent;",
        json!([]),
    );
    assert!(
        phi.as_str().unwrap_or("").contains("No patient data"),
        "the panel warns against patient data in notes: {phi}"
    );

    let note = "XR-1 down, engineer called";
    browser.type_into_checked(&format!("{high} input[name=note]"), note);
    browser.click(&format!("{high} button[data-action=ack]"));
    browser.wait_js(
        "the high alarm to show acknowledged, by the nurse",
        Duration::from_secs(10),
        "const c = document.querySelector(arguments[0]);
         const badge = document.getElementById('alarm-badge');
         return (!!c && c.dataset.state === 'acknowledged' && c.innerText.includes('Acknowledged')
                 && c.querySelector('.alarm-ack').textContent.includes('nurse')
                 && c.querySelector('.alarm-ack').textContent.includes(arguments[1])
                 && !c.querySelector('button[data-action=ack]').offsetParent
                 && badge.dataset.count === '2')
             || [c && c.innerText, badge.textContent,
                 document.querySelector('#alarms .alarm-error:not([hidden])')?.textContent];",
        json!([high, note]),
    );
    let acked = active_alarm(&api, "queue-length");
    assert_eq!(acked["state"], json!("acknowledged"), "{acked}");
    assert_eq!(
        acked["acknowledged"]["by"],
        json!(format!("nurse:{nurse_id}")),
        "{acked}"
    );
    assert_eq!(acked["acknowledged"]["note"], json!(note), "{acked}");

    // ---- an admin: shelves the medium alarm through the form ----
    browser.goto("about:blank");
    browser.goto(&format!("{base}#token={admin}"));
    let medium = "#alarms [data-alarm^='unit-out-of-service@equipment.XRAY@']";
    browser.wait_js(
        "the admin's Shelve control on the medium alarm",
        Duration::from_secs(15),
        "const c = document.querySelector(arguments[0]);
         return !!c?.querySelector('button[data-action=shelve]')?.offsetParent
             || [c && c.innerText, document.getElementById('who').textContent];",
        json!([medium]),
    );
    browser.click(&format!("{medium} button[data-action=shelve]"));
    browser.click(&format!("{medium} select[name=for] option[value='1h']"));
    browser.type_into(
        &format!("{medium} input[name=reason]"),
        "planned maintenance until noon",
    );
    browser.click(&format!("{medium} button[data-action=shelve-submit]"));
    browser.wait_js(
        "the medium alarm to show shelved",
        Duration::from_secs(10),
        "const c = document.querySelector(arguments[0]);
         return (!!c && c.dataset.state === 'shelved' && c.innerText.includes('Shelved')
                 && c.innerText.includes('planned maintenance'))
             || [c && c.innerText,
                 document.querySelector('#alarms .alarm-error:not([hidden])')?.textContent];",
        json!([medium]),
    );
    let shelved = active_alarm(&api, "unit-out-of-service");
    assert_eq!(shelved["state"], json!("shelved"), "{shelved}");
    let (at, until) = (
        shelved["shelved"]["at_ms"].as_i64().unwrap_or(0),
        shelved["shelved"]["until_ms"].as_i64().unwrap_or(0),
    );
    assert_eq!(
        until - at,
        3_600_000,
        "shelved for the hour chosen: {shelved}"
    );
    assert_eq!(
        browser.js(
            "return document.getElementById('alarm-badge').dataset.count;",
            json!([])
        ),
        json!("1"),
        "one alarm left to acknowledge"
    );
    browser.js("window.scrollTo(0, 0);", json!([]));
    browser.screenshot(&shots.join("dashboard-alarms.png"));
    update_doc_screenshot(&shots, "dashboard-alarms.png");

    // A refused acknowledgement is shown on its card (a note over 500 characters: 422).
    let low = "#alarms [data-alarm^='xray-waiting@equipment.XRAY@']";
    browser.js(
        "const c = document.querySelector(arguments[0]);
         c.querySelector('input[name=note]').value = 'x'.repeat(501);",
        json!([low]),
    );
    browser.click(&format!("{low} button[data-action=ack]"));
    browser.wait_js(
        "the refusal on the low alarm's card",
        Duration::from_secs(10),
        "const c = document.querySelector(arguments[0]);
         const e = c.querySelector('.alarm-error');
         return (!e.hidden && /invalid/.test(e.textContent) && c.dataset.state === 'raised')
             || [e.hidden, e.textContent];",
        json!([low]),
    );

    // Phone width: the panel fits, and its buttons stay usable.
    browser.resize(390, 844);
    browser.wait_js(
        "the alarms panel to fit a phone's width",
        Duration::from_secs(5),
        "const b = document.querySelector(arguments[0] + ' button[data-action=ack]').getBoundingClientRect();
         return (document.documentElement.scrollWidth <= window.innerWidth && b.right <= window.innerWidth)
             || [document.documentElement.scrollWidth, window.innerWidth, b.right];",
        json!([low]),
    );
    browser.screenshot(&shots.join("dashboard-alarms-phone.png"));
}

impl Browser {
    /// Opens the dashboard with `token` in the URL's fragment, after a blank page (so the
    /// previous page's streams are closed and nothing of it is left).
    fn open_as(&self, base: &str, path: &str, token: &str) {
        self.goto("about:blank");
        self.goto(&format!("{base}{path}#token={token}"));
    }

    /// Chooses `value` in the select matching `css`, by clicking its option as a user would.
    fn choose(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]"));
    }

    /// Presses `key` (a WebDriver key code such as `"\u{E014}"`, ArrowRight) in the element
    /// matching `css`.
    fn press(&self, css: &str, key: &str) {
        self.type_into(css, key);
    }

    /// The text of the first visible refusal (`.form-error`) inside `css`, if any.
    fn refusal(&self, css: &str) -> Option<String> {
        let v = self.js(
            "const e = document.querySelector(arguments[0] + ' .form-error:not([hidden])');
             return e ? e.textContent : null;",
            json!([css]),
        );
        v.as_str().map(str::to_string)
    }
}

/// Creates a token of `role` through the API; its text.
fn token_for(api: &Api, role: &str) -> String {
    let v = api.expect(
        "POST",
        "/api/tokens",
        Some(json!({"role": role, "label": format!("browser test {role}")})),
        201,
    );
    v["token"].as_str().expect("token").to_string()
}

/// The status of `unit` in `pool`, as the API tells it.
fn unit_status(api: &Api, pool: &str, unit: &str) -> String {
    let p = api.expect("GET", &format!("/api/pools/{pool}"), None, 200);
    p["units"]
        .as_array()
        .and_then(|u| u.iter().find(|u| u["name"] == json!(unit)))
        .and_then(|u| u["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// Copies a screenshot to `docs/` with `MEDKEEPER_UPDATE_SCREENSHOT=1` (see
/// [`update_doc_screenshot`]) after saving it under `target/browser/`.
fn shoot(browser: &Browser, shots: &Path, name: &str) {
    let junk = browser.js(
        "const t = document.body.innerText;
         return ['null', 'undefined', '[object', 'NaN'].filter(w => t.includes(w));",
        json!([]),
    );
    assert_eq!(junk, json!([]), "{name}: a value the page failed to render");
    browser.js("window.scrollTo(0, 0);", json!([]));
    browser.screenshot(&shots.join(name));
    update_doc_screenshot(shots, name);
}

/// Issue 16: the dashboard as each role works in it, by clicks only (the API is used to set
/// up tokens and to check what the clicks did). One order's whole life — registered and
/// ordered by a scheduler, re-prioritised, a refused "call now" shown, called by the
/// dispatcher once a technician puts the unit back in service, started and completed by the
/// technician, reported by a doctor — then the patient's page, with a patient token an admin
/// created in the page, shows results ready; the admin revokes it; a nurse acknowledges an
/// alarm; the charts draw; the whole page in Simplified Chinese. Screenshots of each role's
/// view: `docs/dashboard-<role>.png`.
#[test]
fn every_role_works_in_the_dashboard_in_headless_chromium() {
    let Some((chromium, driver)) = browser_tools() else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let hospital = dir.path().join("hospital.toml");
    std::fs::write(&hospital, alarm_test_hospital()).unwrap();
    let data = dir.path().join("data");
    let server = Serve::start(&[
        "--data",
        data.to_str().unwrap(),
        "--hospital",
        hospital.to_str().unwrap(),
    ]);
    let (base, admin) = (
        server.url.clone(),
        server.admin.clone().expect("an admin token"),
    );
    let (_chromedriver, driver_port) = start_chromedriver(&driver);
    let browser = Browser::start(driver_port, &chromium);
    let api = Api {
        agent: agent(),
        base: base.clone(),
        token: admin.clone(),
    };
    let shots = workspace_root().join("target/browser");
    let [scheduler, technician, doctor, nurse] =
        ["scheduler", "technician", "doctor", "nurse"].map(|r| token_for(&api, r));
    let tabs = |b: &Browser| {
        b.js(
            "return [...document.querySelectorAll('#tabs [role=tab]')].map(t => t.dataset.tab);",
            json!([]),
        )
    };

    // ---- the page itself: no inline script or handler (CSP `script-src 'self'` holds) ----
    let html = agent()
        .get(&base)
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let lower = html.to_lowercase();
    for (i, _) in lower.match_indices("<script") {
        let tag = &lower[i..i + lower[i..].find('>').unwrap()];
        assert!(
            tag.contains(" src="),
            "an inline script in index.html: {tag}"
        );
    }
    let handler = regex_lite_on_attr(&lower);
    assert!(
        handler.is_none(),
        "an on* attribute in index.html: {handler:?}"
    );
    assert!(
        !lower.contains("javascript:"),
        "a javascript: URL in index.html"
    );

    // ---- technician: MRI-1 into maintenance, XR-1 offline, by the units' own controls ----
    browser.open_as(&base, "", &technician);
    browser.wait_js(
        "the technician's units view",
        Duration::from_secs(15),
        "return !!document.querySelector('#panel-units:not([hidden]) [data-tpool=\"MRI\"] [data-tunit=\"MRI-1\"] select[name=status]')
             || document.getElementById('status').textContent;",
        json!([]),
    );
    assert_eq!(tabs(&browser), json!(["units", "ward", "charts"]));
    for (unit, status) in [("MRI-1", "maintenance"), ("XR-1", "offline")] {
        let card = format!("[data-tunit=\"{unit}\"]");
        browser.choose(&format!("{card} select[name=status]"), status);
        browser.click(&format!("{card} [data-action=set-status]"));
        browser.wait_js(
            "the unit's new status on its card",
            Duration::from_secs(10),
            "const c = document.querySelector(arguments[0]);
             return c.dataset.status === arguments[1] || [c.dataset.status, c.innerText];",
            json!([card, status]),
        );
    }
    assert_eq!(unit_status(&api, "MRI", "MRI-1"), "maintenance");
    assert_eq!(unit_status(&api, "XRAY", "XR-1"), "offline");
    // No control a technician may not use: no order form, no report, no cancel, no shelve.
    let forbidden = browser.js(
        "return document.querySelectorAll('.order-form, [data-action=report], [data-action=cancel], [data-action=register], [data-action^=shelve], #panel-admin').length;",
        json!([]),
    );
    assert_eq!(forbidden, json!(0), "controls a technician may not use");

    // ---- scheduler: register, order (a double click orders once), re-prioritise ----
    browser.open_as(&base, "", &scheduler);
    browser.wait_js(
        "the scheduler's orders view",
        Duration::from_secs(15),
        "return !!document.querySelector('#panel-orders:not([hidden]) [data-action=register]')
             && !!document.querySelector('[data-qpool=\"MRI\"]');",
        json!([]),
    );
    assert_eq!(tabs(&browser), json!(["orders", "ward", "units", "charts"]));
    browser.type_into("#panel-orders input[name=name]", "Ada Lovelace");
    browser.js(
        "document.querySelector('#panel-orders input[name=birth_date]').value = '1970-01-31';",
        json!([]),
    );
    browser.click("#panel-orders [data-action=register]");
    browser.wait_js(
        "the registered patient's card",
        Duration::from_secs(10),
        "const c = document.querySelector('.patient-card[data-patient]');
         return (!!c && c.innerText.includes('Ada Lovelace')) || (c && c.innerText);",
        json!([]),
    );
    let patient = browser.js(
        "return document.querySelector('.patient-card').dataset.patient;",
        json!([]),
    );
    let patient = patient.as_str().expect("patient id").to_string();
    let stored = api.expect("GET", &format!("/api/patients/{patient}"), None, 200);
    assert_eq!(stored["patient"]["birth_date"], json!("1970-01-31"));

    browser.choose(".order-form select[name=pool]", "equipment:MRI");
    browser.choose(".order-form select[name=priority]", "urgent");
    browser.click(".order-form input[name=cap][value=contrast]");
    browser.type_into(".order-form input[name=reason]", "headache, browser test");
    // Two clicks in one go: the button is disabled by the first, so one order is created.
    browser.js(
        "const b = document.querySelector('.order-form [data-action=order]'); b.click(); b.click();",
        json!([]),
    );
    browser.wait_js(
        "the order on the patient's card, queued",
        Duration::from_secs(10),
        "const o = document.querySelectorAll('.patient-card [data-order]');
         return (o.length === 1 && o[0].dataset.state === 'queued') || [o.length, o[0] && o[0].innerText];",
        json!([]),
    );
    std::thread::sleep(Duration::from_millis(300));
    let orders = api.expect("GET", &format!("/api/patients/{patient}"), None, 200);
    let orders = orders["orders"].as_array().cloned().unwrap_or_default();
    assert_eq!(orders.len(), 1, "a double click ordered once: {orders:?}");
    let order = orders[0]["id"].as_str().unwrap().to_string();
    assert_eq!(orders[0]["capabilities"], json!(["contrast"]));
    assert_eq!(orders[0]["priority"], json!("urgent"));

    let row = format!("[data-qpool=\"MRI\"] tr[data-qorder=\"{order}\"]");
    browser.wait_js(
        "the order's row in the MRI queue",
        Duration::from_secs(10),
        "return !!document.querySelector(arguments[0]);",
        json!([row]),
    );
    browser.choose(&format!("{row} select[name=priority]"), "stat");
    browser.click(&format!("{row} [data-action=priority]"));
    browser.wait_js(
        "the row and the card to show stat",
        Duration::from_secs(10),
        "const r = document.querySelector(arguments[0]);
         const c = document.querySelector('.patient-card [data-order]');
         return (!!r && !!r.querySelector('.prio[data-priority=stat]')
                 && !!c.querySelector('.prio[data-priority=stat]')) || [r && r.innerText, c.innerText];",
        json!([row]),
    );
    // Call now on MRI-2, which lacks the contrast the order needs: the server's refusal is
    // shown on the row, and nothing changes.
    browser.choose(&format!("{row} select[name=unit]"), "MRI-2");
    browser.click(&format!("{row} [data-action=call]"));
    let refused = wait_for(
        "the refused call on the row",
        Duration::from_secs(10),
        || browser.refusal(&row),
    );
    assert!(
        refused.contains("[invalid]") && refused.contains("contrast"),
        "the server's own message and code: {refused:?}"
    );
    let o = api.expect("GET", &format!("/api/orders/{order}"), None, 200);
    assert_eq!(o["order"]["state"], json!("queued"));
    assert_eq!(o["order"]["priority"], json!("stat"));
    shoot(&browser, &shots, "dashboard-scheduler.png");

    // ---- technician: MRI-1 back in service; the dispatcher calls the order to it ----
    browser.open_as(&base, "", &technician);
    let mri1 = "[data-tunit=\"MRI-1\"]";
    browser.wait_js(
        "MRI-1's card",
        Duration::from_secs(15),
        "return !!document.querySelector(arguments[0] + ' select[name=status]');",
        json!([mri1]),
    );
    browser.choose(&format!("{mri1} select[name=status]"), "available");
    browser.click(&format!("{mri1} [data-action=set-status]"));
    browser.wait_js(
        "the called patient on MRI-1, with Start",
        Duration::from_secs(15),
        "const c = document.querySelector(arguments[0]);
         return (c.dataset.status === 'in-use' && c.dataset.orderState === 'called'
                 && !!c.querySelector('[data-action=start]') && c.innerText.includes('Called'))
             || [c.dataset.status, c.dataset.orderState, c.innerText];",
        json!([mri1]),
    );
    shoot(&browser, &shots, "dashboard-technician.png");
    browser.click(&format!("{mri1} [data-action=start]"));
    browser.wait_js(
        "the exam in progress on MRI-1",
        Duration::from_secs(10),
        "const c = document.querySelector(arguments[0]);
         return (c.dataset.orderState === 'in-progress' && !!c.querySelector('[data-action=complete]'))
             || [c.dataset.orderState, c.innerText];",
        json!([mri1]),
    );
    browser.click(&format!("{mri1} [data-action=complete]"));
    browser.wait_js(
        "MRI-1 free and the exam among those finished here",
        Duration::from_secs(10),
        "const c = document.querySelector(arguments[0]);
         const d = document.querySelector('.done-box [data-order=\"' + arguments[1] + '\"]');
         return (c.dataset.status === 'available' && !!d && d.dataset.state === 'completed'
                 && !d.querySelector('[data-action=report]'))
             || [c.dataset.status, d && d.innerText];",
        json!([mri1, order]),
    );
    let o = api.expect("GET", &format!("/api/orders/{order}"), None, 200);
    assert_eq!(o["order"]["state"], json!("completed"), "{o}");
    assert_eq!(o["order"]["assigned"], json!("MRI-1"), "{o}");

    // ---- doctor: finds the patient by id and writes the report ----
    browser.open_as(&base, "", &doctor);
    browser.wait_js(
        "the doctor's orders view",
        Duration::from_secs(15),
        "return !!document.querySelector('#panel-orders:not([hidden]) [data-action=find]');",
        json!([]),
    );
    assert_eq!(tabs(&browser), json!(["orders", "ward", "charts"]));
    browser.type_into("#panel-orders input[name=patient]", &patient);
    browser.click("#panel-orders [data-action=find]");
    let card = format!(".patient-card [data-order=\"{order}\"]");
    browser.wait_js(
        "the completed order with its report form",
        Duration::from_secs(10),
        "const c = document.querySelector(arguments[0]);
         return (!!c && c.dataset.state === 'completed' && !!c.querySelector('textarea[name=report]'))
             || (c && c.innerText);",
        json!([card]),
    );
    // The doctor may not call: no Call now anywhere.
    let calls = browser.js(
        "return document.querySelectorAll('[data-action=call], [data-action=set-status]').length;",
        json!([]),
    );
    assert_eq!(
        calls,
        json!(0),
        "a doctor sees no call or unit status control"
    );
    browser.type_into(&format!("{card} textarea[name=report]"), "No abnormality.");
    browser.click(&format!("{card} [data-action=report]"));
    browser.wait_js(
        "the order reported",
        Duration::from_secs(10),
        "const c = document.querySelector(arguments[0]);
         return c.dataset.state === 'reported' || c.innerText;",
        json!([card]),
    );
    let o = api.expect("GET", &format!("/api/orders/{order}"), None, 200);
    assert_eq!(o["order"]["state"], json!("reported"), "{o}");
    assert_eq!(o["result"]["text"], json!("No abnormality."), "{o}");
    shoot(&browser, &shots, "dashboard-doctor.png");

    // ---- admin: a patient token created in the page, shown once ----
    browser.open_as(&base, "", &admin);
    browser.wait_js(
        "the admin's tabs",
        Duration::from_secs(15),
        "return !!document.getElementById('tab-admin');",
        json!([]),
    );
    assert_eq!(
        tabs(&browser),
        json!(["ward", "orders", "units", "charts", "admin"])
    );
    browser.click("#tab-admin");
    let create = "#panel-admin form:has([data-action=create-token])";
    browser.choose(&format!("{create} select[name=role]"), "patient");
    browser.type_into(&format!("{create} input[name=patient]"), &patient);
    browser.type_into(&format!("{create} input[name=label]"), "Ada's phone");
    browser.click(&format!("{create} [data-action=create-token]"));
    let shown = wait_for("the new token, shown once", Duration::from_secs(10), || {
        let v = browser.js(
            "const c = document.querySelector('.token-once:not([hidden]) .token-text');
             return c ? [c.textContent, c.dataset.tokenId] : null;",
            json!([]),
        );
        v.as_array().cloned()
    });
    let (ptoken, ptoken_id) = (
        shown[0].as_str().unwrap().to_string(),
        shown[1].as_str().unwrap().to_string(),
    );
    assert!(ptoken.starts_with("mkt_"), "{ptoken}");
    browser.wait_js(
        "the new token in the list",
        Duration::from_secs(10),
        "return !!document.querySelector('tr[data-token=\"' + arguments[0] + '\"] [data-action=revoke]');",
        json!([ptoken_id]),
    );
    // The audit search and the cluster.
    browser.type_into("#panel-admin .audit-form input[name=patient]", &patient);
    browser.click("#panel-admin [data-action=audit]");
    browser.wait_js(
        "the patient's audit trail",
        Duration::from_secs(10),
        "const a = [...document.querySelectorAll('table.audit tr[data-action]')].map(r => r.dataset.action);
         return (a.includes('order.create') && a.includes('order.report')) || a;",
        json!([]),
    );
    browser.wait_js(
        "the cluster's members and leader",
        Duration::from_secs(10),
        "return !!document.querySelector('#panel-admin tr.leader-row[data-member]');",
        json!([]),
    );
    // No token in any URL the page asked for, except the event streams' ?access_token=.
    let leaks = browser.js(
        "return performance.getEntriesByType('resource').map(e => e.name)
             .filter(u => u.includes('mkt_') && !/\\/events\\?access_token=/.test(u));",
        json!([]),
    );
    assert_eq!(leaks, json!([]), "a token in a URL sent to the server");
    shoot(&browser, &shots, "dashboard-admin.png");

    // ---- the patient's own page with that token: results ready ----
    browser.open_as(&base, "patient", &ptoken);
    browser.wait_js(
        "results ready on the patient's page",
        Duration::from_secs(15),
        "const r = document.querySelector('[data-order=\"' + arguments[0] + '\"]');
         return (!!r && r.dataset.ready === '1' && r.innerText.includes('Your results are ready'))
             || (r && r.innerText) || document.getElementById('status').textContent;",
        json!([order]),
    );
    shoot(&browser, &shots, "dashboard-patient.png");

    // ---- admin: revokes it ----
    browser.open_as(&base, "", &admin);
    browser.wait_js(
        "the admin's tabs",
        Duration::from_secs(15),
        "return !!document.getElementById('tab-admin');",
        json!([]),
    );
    browser.click("#tab-admin");
    let revoke = format!("tr[data-token=\"{ptoken_id}\"] [data-action=revoke]");
    browser.wait_js(
        "the patient token's Revoke",
        Duration::from_secs(10),
        "return !!document.querySelector(arguments[0]);",
        json!([revoke]),
    );
    browser.click(&revoke);
    browser.wait_js(
        "the token shown revoked",
        Duration::from_secs(10),
        "const r = document.querySelector('tr[data-token=\"' + arguments[0] + '\"]');
         return (!!r && r.dataset.revoked === '1') || (r && r.innerText);",
        json!([ptoken_id]),
    );
    let patient_api = Api {
        agent: agent(),
        base: base.clone(),
        token: ptoken.clone(),
    };
    patient_api.expect("GET", "/api/whoami", None, 401);

    // ---- nurse: the ward; acknowledges the alarm XR-1's being offline raised ----
    browser.open_as(&base, "", &nurse);
    let alarm = "#alarms [data-alarm^='unit-out-of-service@equipment.XRAY@']";
    browser.wait_js(
        "the unit-out-of-service alarm on the nurse's ward",
        Duration::from_secs(20),
        "return !!document.querySelector(arguments[0] + ' button[data-action=ack]');",
        json!([alarm]),
    );
    assert_eq!(tabs(&browser), json!(["ward", "orders", "charts"]));
    browser.type_into(&format!("{alarm} input[name=note]"), "engineer called");
    browser.click(&format!("{alarm} button[data-action=ack]"));
    browser.wait_js(
        "the alarm acknowledged",
        Duration::from_secs(10),
        "const c = document.querySelector(arguments[0]);
         return c.dataset.state === 'acknowledged' || c.innerText;",
        json!([alarm]),
    );
    assert_eq!(
        active_alarm(&api, "unit-out-of-service")["state"],
        json!("acknowledged")
    );
    shoot(&browser, &shots, "dashboard-nurse.png");
    // A nurse registers patients but may not order: no order form on a patient's card.
    browser.click("#tab-orders");
    browser.type_into("#panel-orders input[name=patient]", &patient);
    browser.click("#panel-orders [data-action=find]");
    browser.wait_js(
        "the patient's card, without an order form",
        Duration::from_secs(10),
        "return (!!document.querySelector('.patient-card [data-order]')
                 && !document.querySelector('.order-form')
                 && !!document.querySelector('[data-action=register]')) || false;",
        json!([]),
    );

    // ---- keyboard: arrow keys move between the tabs; the charts draw ----
    browser.click("#tab-ward");
    browser.press("#tab-ward", "\u{E014}"); // ArrowRight
    browser.press("#tab-orders", "\u{E014}");
    browser.wait_js(
        "the charts tab chosen by keyboard, with its charts",
        Duration::from_secs(10),
        "const t = document.activeElement;
         return (t.id === 'tab-charts' && t.getAttribute('aria-selected') === 'true'
                 && !document.getElementById('panel-charts').hidden
                 && document.querySelectorAll('figure.chart[data-kind=util] svg').length === 5
                 && document.querySelectorAll('figure.chart[data-kind=wait] svg').length === 4
                 && !!document.querySelector('figure.chart[data-kind=util] path.series')
                 && !!document.querySelector('figure.chart[data-kind=wait] line.target'))
             || [t.id, document.querySelectorAll('figure.chart').length];",
        json!([]),
    );
    browser.screenshot(&shots.join("dashboard-charts-live.png"));

    // ---- tablet width: nothing wider than the screen ----
    browser.click("#tab-ward");
    browser.resize(768, 1024);
    browser.wait_js(
        "the ward to fit a tablet's width",
        Duration::from_secs(5),
        "return document.documentElement.scrollWidth <= window.innerWidth
             || [document.documentElement.scrollWidth, window.innerWidth];",
        json!([]),
    );
    browser.resize(1280, 900);

    // ---- Simplified Chinese, chosen with the switch ----
    browser.choose("#lang", "zh-CN");
    browser.wait_js(
        "the page in Simplified Chinese",
        Duration::from_secs(10),
        "const t = [...document.querySelectorAll('#tabs [role=tab]')].map(t => t.textContent);
         const unit = document.querySelector('[data-pool=\"MRI\"] [data-unit=\"MRI-1\"]');
         return (document.documentElement.lang === 'zh-CN' && t.join() === '病区,检查申请,图表'
                 && document.getElementById('alarms-h').textContent === '报警'
                 && !!unit && unit.innerText.includes('空闲')
                 && document.getElementById('who').textContent.includes('护士')
                 && window.__i18nMissing.size === 0)
             || [document.documentElement.lang, t, unit && unit.innerText, [...window.__i18nMissing]];",
        json!([]),
    );
    shoot(&browser, &shots, "dashboard-zh-CN.png");
    // The patient's page too (staff open it by id); the choice is remembered.
    browser.goto(&format!("{base}patient?id={patient}"));
    browser.wait_js(
        "the patient's page in Simplified Chinese",
        Duration::from_secs(15),
        "const r = document.querySelector('[data-order=\"' + arguments[0] + '\"]');
         return (!!r && r.innerText.includes('您的检查结果已出') && window.__i18nMissing.size === 0)
             || (r && r.innerText);",
        json!([order]),
    );
    browser.js("localStorage.clear();", json!([]));
    eprintln!(
        "every role's clicks, screenshots included: {} ms",
        started.elapsed().as_millis()
    );
}

/// The first `on…=` attribute in `html` (an inline event handler), if any.
fn regex_lite_on_attr(html: &str) -> Option<String> {
    let b = html.as_bytes();
    (1..b.len().saturating_sub(3)).find_map(|i| {
        let prev = b[i - 1];
        let is_on = (prev == b' ' || prev == b'\t' || prev == b'\n')
            && b[i] == b'o'
            && b[i + 1] == b'n'
            && b[i + 2].is_ascii_alphabetic();
        if !is_on {
            return None;
        }
        let rest = &html[i..];
        let name_end = rest.find(|c: char| !c.is_ascii_alphabetic())?;
        rest[name_end..]
            .trim_start()
            .starts_with('=')
            .then(|| rest[..name_end].to_string())
    })
}

/// RFC 3339 (UTC) for an instant in ms, to the second: a FHIR `effectiveDateTime`.
fn rfc3339(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).expect("a time");
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339")
}

/// A FHIR transaction Bundle of vital-sign Observations of `patient`, all measured at `ms` by
/// `device`: `(LOINC, value)` pairs, the value as the Observation's `value[x]`.
fn vitals_bundle(patient: &str, ms: i64, device: &str, values: &[(&str, Value)]) -> Value {
    let entries: Vec<Value> = values
        .iter()
        .enumerate()
        .map(|(i, (loinc, value))| {
            let mut o = json!({
                "resourceType": "Observation",
                "status": "final",
                "category": [{"coding": [{"system":
                    "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "vital-signs"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
                "subject": {"reference": format!("Patient/{patient}")},
                "effectiveDateTime": rfc3339(ms),
                "device": {"reference": format!("Device/{device}")},
            });
            for (k, v) in value.as_object().expect("a value[x] object") {
                o[k] = v.clone();
            }
            json!({
                "fullUrl": format!("urn:uuid:00000000-0000-4000-8000-{i:012}"),
                "resource": o,
                "request": {"method": "POST", "url": "Observation"},
            })
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

fn quantity(value: f64, ucum: &str) -> Value {
    json!({"valueQuantity": {"value": value, "unit": ucum,
        "system": "http://unitsofmeasure.org", "code": ucum}})
}

/// One set of the seven NEWS2 vital signs as `(LOINC, value[x])`: respiratory rate, SpO2,
/// oxygen flow (0: on air), systolic pressure, heart rate, ACVPU, temperature; `None` leaves
/// one out.
fn vital_set(
    rr: f64,
    spo2: f64,
    o2_l_min: f64,
    systolic: Option<f64>,
    hr: f64,
    acvpu: &str,
    temp: f64,
) -> Vec<(&'static str, Value)> {
    let mut v = vec![
        ("9279-1", quantity(rr, "/min")),
        ("59408-5", quantity(spo2, "%")),
        ("3151-8", quantity(o2_l_min, "L/min")),
        ("8867-4", quantity(hr, "/min")),
        (
            "67775-7",
            json!({"valueCodeableConcept": {"coding": [{"code": acvpu}], "text": acvpu}}),
        ),
        ("8310-5", quantity(temp, "Cel")),
    ];
    if let Some(s) = systolic {
        v.push(("8480-6", quantity(s, "mm[Hg]")));
    }
    v
}

impl Api {
    /// `POST /fhir` with a transaction Bundle as `application/fhir+json`; asserts 200.
    fn fhir_transaction(&self, bundle: &Value) -> Value {
        let url = format!("{}fhir", self.base);
        let resp = self
            .agent
            .post(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/fhir+json")
            .send(bundle.to_string());
        let (status, v) = read(resp, "POST /fhir");
        assert_eq!(status, 200, "POST /fhir answered {status}: {v}");
        assert_eq!(v["type"], json!("transaction-response"), "{v}");
        v
    }
}

/// Saves a screenshot with `css` scrolled to the top of the viewport (see [`shoot`]).
fn shoot_at(browser: &Browser, shots: &Path, name: &str, css: &str) {
    let junk = browser.js(
        "const t = document.body.innerText;
         return ['null', 'undefined', '[object', 'NaN'].filter(w => t.includes(w));",
        json!([]),
    );
    assert_eq!(junk, json!([]), "{name}: a value the page failed to render");
    browser.js(
        "document.querySelector(arguments[0]).scrollIntoView({block: 'start'});",
        json!([css]),
    );
    browser.screenshot(&shots.join(name));
    update_doc_screenshot(shots, name);
}

/// Issue 15, item 7: vital signs and NEWS2 as staff see them. Three patients on two wards get
/// 24 hours of vital signs through FHIR transaction Bundles — one deteriorating to NEWS2 high
/// (with a heart rate the server takes for an artefact), one low, one low–medium with a
/// parameter missing and no observation in the last hour — and a nurse's Ward tab lists them
/// highest risk first, labelled decision support, with their trends, flags and a ward filter;
/// the high-risk patient's NEWS2 alarm is acknowledged by a click; the patient's panel shows
/// the score's breakdown, the chart's response and the 24-hour charts (a point for every value
/// of every parameter, the artefact apart); the Orders tab's patient card opens the same
/// panel; it fits a tablet; zh-CN. Screenshots: `docs/dashboard-ward.png`,
/// `docs/dashboard-vitals.png`.
#[test]
fn ward_view_and_vital_signs_in_headless_chromium() {
    let Some((chromium, driver)) = browser_tools() else {
        return;
    };
    let started = Instant::now();
    let data = tempfile::tempdir().unwrap();
    // The demo hospital, whose `news2` rule raises an alarm from NEWS2 low–medium on.
    let server = Serve::start(&["--data", data.path().to_str().unwrap()]);
    let (base, admin) = (
        server.url.clone(),
        server.admin.clone().expect("an admin token"),
    );
    let (_chromedriver, driver_port) = start_chromedriver(&driver);
    let browser = Browser::start(driver_port, &chromium);
    let api = Api {
        agent: agent(),
        base: base.clone(),
        token: admin.clone(),
    };
    let shots = workspace_root().join("target/browser");
    let nurse = token_for(&api, "nurse");

    let mut ids = Vec::new();
    for (name, ward) in [
        ("Harriet Vance", "5A"),
        ("Leonard Moss", "5A"),
        ("Maria Chen", "6B"),
    ] {
        let p = api.expect("POST", "/api/patients", Some(json!({ "name": name })), 201);
        let id = p["id"].as_str().expect("patient id").to_string();
        let s = api.expect(
            "PUT",
            &format!("/api/patients/{id}/settings"),
            Some(json!({ "ward": ward })),
            200,
        );
        assert_eq!(s["ward"], json!(ward), "{s}");
        ids.push(id);
    }
    let (high, low, third) = (ids[0].clone(), ids[1].clone(), ids[2].clone());
    let now = now_ms();
    let min = 60_000;
    // Harriet deteriorates over four hours: NEWS2 0, 0, 4, then 9 and 15 (high).
    for (ago, set) in [
        (
            240,
            vital_set(16.0, 97.0, 0.0, Some(128.0), 78.0, "A", 36.9),
        ),
        (
            180,
            vital_set(19.0, 96.0, 0.0, Some(122.0), 88.0, "A", 37.3),
        ),
        (
            120,
            vital_set(22.0, 95.0, 0.0, Some(112.0), 96.0, "A", 37.9),
        ),
        (
            60,
            vital_set(24.0, 93.0, 2.0, Some(104.0), 108.0, "A", 38.4),
        ),
        (3, vital_set(26.0, 92.0, 4.0, Some(98.0), 114.0, "C", 38.6)),
    ] {
        api.fhir_transaction(&vitals_bundle(&high, now - ago * min, "monitor-5A-1", &set));
    }
    // A heart rate of 290 /min: stored as a suspected artefact, not scored.
    api.fhir_transaction(&vitals_bundle(
        &high,
        now - 90 * min,
        "monitor-5A-1",
        &[("8867-4", quantity(290.0, "/min"))],
    ));
    // Leonard stays low.
    for (ago, set) in [
        (
            240,
            vital_set(14.0, 98.0, 0.0, Some(132.0), 72.0, "A", 36.8),
        ),
        (
            120,
            vital_set(16.0, 97.0, 0.0, Some(128.0), 92.0, "A", 37.0),
        ),
        (5, vital_set(15.0, 98.0, 0.0, Some(130.0), 76.0, "A", 36.9)),
    ] {
        api.fhir_transaction(&vitals_bundle(&low, now - ago * min, "monitor-5A-2", &set));
    }
    // Maria: a temperature of 34.9 °C (a single 3: low–medium), no blood pressure, and nothing
    // for 70 minutes: incomplete and stale.
    api.fhir_transaction(&vitals_bundle(
        &third,
        now - 70 * min,
        "ehr",
        &vital_set(18.0, 97.0, 0.0, None, 72.0, "A", 34.9),
    ));
    let n2 = api.expect("GET", &format!("/api/patients/{high}/news2"), None, 200);
    let current = &n2["current"];
    assert_eq!(current["risk"], json!("high"), "{n2}");
    let aggregate = current["aggregate"].as_u64().expect("aggregate");
    let trend_len = n2["trend"].as_array().map_or(0, Vec::len);
    assert!(trend_len >= 5, "a trend of the day's scores: {n2}");
    let ward = api.expect("GET", "/api/ward", None, 200);
    let order: Vec<&str> = ward
        .as_array()
        .expect("ward rows")
        .iter()
        .filter_map(|r| r["patient"].as_str())
        .collect();
    assert_eq!(order, [&high, &third, &low], "highest risk first: {ward}");

    // ---- the nurse's Ward tab: highest risk first, labelled, with trends and flags ----
    browser.resize(1280, 1000);
    browser.open_as(&base, "", &nurse);
    browser.wait_js(
        "the ward's three monitored patients, highest risk first",
        Duration::from_secs(20),
        "const rows = [...document.querySelectorAll('#news2-ward tr.n2-row')];
         return (rows.map(r => r.dataset.patient).join() === arguments[0]
                 && rows.map(r => r.dataset.risk).join() === 'high,low-medium,low')
             || [rows.map(r => [r.dataset.patient, r.dataset.risk]),
                 document.getElementById('status').textContent];",
        json!([format!("{high},{third},{low}")]),
    );
    let rows = browser.js(
        "return [...document.querySelectorAll('#news2-ward tr.n2-row')].map(r => ({
             text: r.innerText, aggregate: r.dataset.aggregate,
             risk: r.querySelector('.n2-risk').textContent,
             spark: Number(r.querySelector('svg.spark').dataset.points),
             sparkLabel: r.querySelector('svg.spark').getAttribute('aria-label'),
             stale: r.dataset.stale, complete: r.dataset.complete}));",
        json!([]),
    );
    let first = &rows[0];
    assert_eq!(first["risk"], json!("high"), "{rows}");
    assert_eq!(first["aggregate"], json!(aggregate.to_string()), "{rows}");
    let text = first["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("Harriet Vance") && text.contains("5A"),
        "{text:?}"
    );
    assert!(
        first["spark"].as_u64().unwrap_or(0) >= 5,
        "the sparkline draws the day's scores: {rows}"
    );
    assert!(
        first["sparkLabel"]
            .as_str()
            .unwrap_or("")
            .contains("NEWS2 over the last 24 hours"),
        "{rows}"
    );
    let maria = rows[1]["text"].as_str().unwrap_or_default();
    assert!(
        maria.contains("incomplete") && maria.contains("stale — observations due"),
        "Maria's flags: {maria:?}"
    );
    assert_eq!(rows[1]["risk"], json!("low–medium"), "{rows}");
    assert_eq!(rows[2]["risk"], json!("low"), "{rows}");
    assert_eq!(rows[2]["stale"], json!(""), "{rows}");
    let label = browser.js(
        "return document.querySelector('#news2-ward .n2-label').textContent;",
        json!([]),
    );
    assert!(
        label
            .as_str()
            .unwrap_or("")
            .contains("decision support, not a diagnosis"),
        "the ward view is labelled: {label}"
    );
    // The high-risk patient's NEWS2 alarm: high, on the alarm panel, naming the patient.
    let alarm = format!("#alarms [data-alarm^='news2@patient.{high}@']");
    browser.wait_js(
        "the high-risk patient's NEWS2 alarm, naming her",
        Duration::from_secs(20),
        "const c = document.querySelector(arguments[0]);
         return (!!c && c.dataset.priority === 'high' && c.dataset.state === 'raised'
                 && c.innerText.includes('Harriet Vance')
                 && !!c.querySelector('button[data-action=ack]'))
             || (c && c.innerText);",
        json!([alarm]),
    );
    browser.js("window.scrollTo(0, 0);", json!([]));
    shoot_at(&browser, &shots, "dashboard-ward.png", "#alarms");

    // The ward filter: 6B alone, then every ward again.
    browser.choose("#n2-ward", "6B");
    browser.wait_js(
        "ward 6B alone",
        Duration::from_secs(10),
        "const rows = [...document.querySelectorAll('#news2-ward tr.n2-row')].map(r => r.dataset.patient);
         return rows.join() === arguments[0] || rows;",
        json!([third]),
    );
    browser.choose("#n2-ward", "");
    browser.wait_js(
        "every ward again",
        Duration::from_secs(10),
        "return document.querySelectorAll('#news2-ward tr.n2-row').length === 3;",
        json!([]),
    );

    // ---- the alarm acknowledged by a click ----
    browser.click(&format!("{alarm} button[data-action=ack]"));
    browser.wait_js(
        "the NEWS2 alarm acknowledged",
        Duration::from_secs(10),
        "const c = document.querySelector(arguments[0]);
         return (c.dataset.state === 'acknowledged' && c.innerText.includes('nurse')) || c.innerText;",
        json!([alarm]),
    );
    let acked = api.expect("GET", "/api/alarms", None, 200);
    let acked = acked["active"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|a| a["scope"] == json!(format!("patient.{high}")))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no NEWS2 alarm for {high}: {acked}"));
    assert_eq!(acked["state"], json!("acknowledged"), "{acked}");
    assert_eq!(acked["priority"], json!("high"), "{acked}");

    // ---- the patient's vital signs and NEWS2, opened from the ward ----
    let open = format!("#news2-ward tr[data-patient=\"{high}\"] [data-action=open-vitals]");
    browser.click(&open);
    let panel = format!(".vitals-panel[data-vitals-for=\"{high}\"]");
    browser.wait_js(
        "the patient's panel, loaded, with the keyboard's focus on its title",
        Duration::from_secs(15),
        "const p = document.querySelector(arguments[0]);
         return (!!p && !!p.dataset.loaded && p.contains(document.activeElement)
                 && document.activeElement.tagName === 'H2')
             || [p && p.innerText.slice(0, 300), document.activeElement.outerHTML.slice(0, 100)];",
        json!([panel]),
    );
    let seen = browser.js(
        "const p = document.querySelector(arguments[0]);
         const fig = (c) => p.querySelector('figure.vital[data-code=' + c + ']');
         const points = {};
         for (const c of ['respiratory_rate', 'spo2', 'heart_rate', 'systolic_bp', 'temperature'])
           points[c] = [fig(c).querySelectorAll('svg circle.pt').length,
                        fig(c).querySelectorAll('svg .artefact').length,
                        fig(c).querySelectorAll('svg polyline.series').length];
         for (const c of ['consciousness', 'inhaled_oxygen'])
           points[c] = [p.querySelectorAll('g[data-code=' + c + '] .mk').length,
                        p.querySelectorAll('g[data-code=' + c + '] .cons-bad, g[data-code=' + c + '] .oxy-on').length];
         const s = p.querySelector('.n2-score');
         return {
           points,
           aggregate: s.dataset.aggregate, risk: s.dataset.risk,
           breakdown: [...p.querySelectorAll('.n2-breakdown tbody tr')]
             .map(r => [r.dataset.parameter, r.dataset.state, r.dataset.score]),
           trend: p.querySelectorAll('figure[data-chart=news2] circle.n2pt').length,
           response: p.querySelector('.n2-response').textContent,
           monitoring: p.querySelector('.n2-monitoring').textContent,
           label: p.querySelector('.n2-label').textContent,
           text: p.innerText,
         };",
        json!([panel]),
    );
    let points = &seen["points"];
    for code in [
        "respiratory_rate",
        "spo2",
        "heart_rate",
        "systolic_bp",
        "temperature",
    ] {
        // Five sets of vital signs in the last 24 hours, joined by one line.
        assert_eq!(points[code][0], json!(5), "{code}: {points}");
        assert_eq!(points[code][2], json!(1), "{code}: {points}");
        let artefacts = if code == "heart_rate" { 1 } else { 0 };
        assert_eq!(points[code][1], json!(artefacts), "{code}: {points}");
    }
    assert_eq!(
        points["consciousness"],
        json!([5, 1]),
        "ACVPU markers, one not alert"
    );
    assert_eq!(
        points["inhaled_oxygen"],
        json!([5, 2]),
        "oxygen markers, two on oxygen"
    );
    assert_eq!(seen["aggregate"], json!(aggregate.to_string()), "{seen}");
    assert_eq!(seen["risk"], json!("high"), "{seen}");
    let scores: Vec<(String, u64)> = current["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| {
            (
                p["parameter"].as_str().unwrap().to_string(),
                p["score"].as_u64().unwrap(),
            )
        })
        .collect();
    let breakdown = seen["breakdown"].as_array().expect("breakdown rows");
    assert_eq!(breakdown.len(), 7, "{seen}");
    for (parameter, score) in &scores {
        let row = breakdown
            .iter()
            .find(|r| r[0] == json!(parameter))
            .unwrap_or_else(|| panic!("no row for {parameter}: {seen}"));
        assert_eq!(row[1], json!("scored"), "{row}");
        assert_eq!(row[2], json!(score.to_string()), "{row}");
    }
    assert_eq!(seen["trend"], json!(trend_len), "a dot per stored score");
    assert_eq!(seen["response"], current["response"], "{seen}");
    assert_eq!(seen["monitoring"], current["monitoring"], "{seen}");
    assert!(
        seen["label"]
            .as_str()
            .unwrap_or("")
            .contains("decision support, not a diagnosis"),
        "{seen}"
    );
    let text = seen["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("suspected artefact"),
        "the artefact is named: {text:?}"
    );
    // Tall enough for the score, the trend and the vital signs' charts in one picture.
    browser.resize(1280, 1560);
    shoot_at(&browser, &shots, "dashboard-vitals.png", &panel);
    browser.resize(1280, 1000);

    // Escape closes it and gives the keyboard back to the patient's name.
    browser.press(&format!("{panel} h2"), "\u{E00C}"); // Escape
    browser.wait_js(
        "the panel closed, the focus on the patient's name",
        Duration::from_secs(5),
        "return (!document.querySelector('.vitals-panel')
                 && document.activeElement.dataset.action === 'open-vitals')
             || document.activeElement.outerHTML.slice(0, 100);",
        json!([]),
    );

    // ---- the Orders tab's patient card opens the same panel ----
    browser.click("#tab-orders");
    browser.type_into("#panel-orders input[name=patient]", &low);
    browser.click("#panel-orders [data-action=find]");
    browser.wait_js(
        "Leonard's card with its vital signs button",
        Duration::from_secs(10),
        "return !!document.querySelector('.patient-card [data-action=vitals]');",
        json!([]),
    );
    browser.click(".patient-card [data-action=vitals]");
    let card_panel = format!(".patient-card .vitals-panel[data-vitals-for=\"{low}\"]");
    browser.wait_js(
        "Leonard's vital signs in his card: low risk",
        Duration::from_secs(15),
        "const p = document.querySelector(arguments[0]);
         return (!!p && p.dataset.risk === 'low'
                 && p.querySelectorAll('figure.vital[data-code=heart_rate] circle.pt').length === 3)
             || (p && p.innerText.slice(0, 300));",
        json!([card_panel]),
    );

    // ---- tablet width: the ward and the panel fit ----
    browser.click("#tab-ward");
    browser.click(&open);
    browser.resize(768, 1024);
    browser.wait_js(
        "the ward and the patient's panel to fit a tablet's width",
        Duration::from_secs(10),
        "const p = document.querySelector(arguments[0]);
         return (!!p && !!p.dataset.loaded
                 && document.documentElement.scrollWidth <= window.innerWidth
                 && p.getBoundingClientRect().right <= window.innerWidth)
             || [document.documentElement.scrollWidth, window.innerWidth];",
        json!([panel]),
    );
    browser.screenshot(&shots.join("dashboard-vitals-tablet.png"));
    browser.resize(1280, 900);

    // ---- Simplified Chinese ----
    browser.choose("#lang", "zh-CN");
    browser.wait_js(
        "the ward view in Simplified Chinese",
        Duration::from_secs(15),
        "const rows = [...document.querySelectorAll('#news2-ward tr.n2-row')];
         const label = document.querySelector('#news2-ward .n2-label');
         return (document.documentElement.lang === 'zh-CN'
                 && document.getElementById('n2w-h')?.textContent === '患者：NEWS2 评分'
                 && rows.length === 3 && rows[0].querySelector('.n2-risk')?.textContent === '高'
                 && rows[1].innerText.includes('已过时 — 需测量生命体征')
                 && !!label && label.textContent.includes('辅助决策，并非诊断')
                 && window.__i18nMissing.size === 0)
             || [document.documentElement.lang, rows.map(r => r.innerText),
                 [...window.__i18nMissing]];",
        json!([]),
    );
    browser.click(&open);
    browser.wait_js(
        "the patient's panel in Simplified Chinese",
        Duration::from_secs(15),
        "const p = document.querySelector(arguments[0]);
         return (!!p && !!p.dataset.loaded && p.querySelector('.n2-monitoring')?.textContent === '持续监测生命体征'
                 && p.innerText.includes('呼吸频率') && window.__i18nMissing.size === 0)
             || [p && p.innerText.slice(0, 300), [...window.__i18nMissing]];",
        json!([panel]),
    );
    browser.js(
        "document.querySelector(arguments[0]).scrollIntoView({block: 'start'});",
        json!([panel]),
    );
    browser.screenshot(&shots.join("dashboard-vitals-zh-CN.png"));
    browser.js("localStorage.clear();", json!([]));
    eprintln!(
        "the ward view and a patient's vital signs: {} ms",
        started.elapsed().as_millis()
    );
}

/// Eight hours of the charts' history as an earlier leader would have left it in the clinical
/// store: every demo pool once a minute until `until_ms`, utilisation and waits in waves (the
/// stat wait crossing the test file's 15-minute target now and then).
fn seed_history(store_file: &Path, until_ms: i64, minutes: i64) {
    use medkeeper_hospital::config::HospitalConfig;
    use medkeeper_hospital::store::{ClinicalStore, PoolSample, SqliteStore};
    let store = SqliteStore::open(store_file).unwrap();
    let mut rows = Vec::new();
    for (k, pool) in HospitalConfig::demo().pools.iter().enumerate() {
        let units = pool.units.len() as u32;
        for i in 0..minutes {
            let phase = i as f64 / 45.0 + k as f64;
            let wave = (phase.sin() + 1.0) / 2.0;
            let mut x = PoolSample {
                at_ms: until_ms - (minutes - i) * 60_000,
                pool: pool.pool.clone(),
                units,
                in_use: (wave * f64::from(units)).round() as u32,
                unavailable: u32::from(k == 2 && (120..150).contains(&i)),
                waiting: Default::default(),
            };
            x.in_use = x.in_use.min(units - x.unavailable);
            x.waiting.stat.queued = u32::from(wave > 0.7);
            x.waiting.stat.oldest_wait_ms = if wave > 0.7 {
                ((wave - 0.7) * 60.0 * 60_000.0) as i64
            } else {
                0
            };
            x.waiting.urgent.queued = (wave * 4.0) as u32;
            x.waiting.urgent.oldest_wait_ms = (wave * 50.0 * 60_000.0) as i64;
            x.waiting.routine.queued = (wave * 8.0) as u32;
            x.waiting.routine.oldest_wait_ms = (wave * 5.0 * 3_600_000.0) as i64;
            rows.push(x);
        }
    }
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(store.insert_pool_samples(&rows))
        .unwrap();
}

/// Issue 16: the utilisation and waiting-time charts start from the history the server keeps
/// (`GET /api/history`), not empty: hours an earlier leader sampled into the clinical store,
/// and what this server's leader samples (`--history-every 1s`) before the page opens, are
/// drawn on page load, with each priority's target from the hospital file; live points are
/// appended after. The window is chosen from 1, 8 or 24 hours. The admin's token table shows
/// each token's expiry. Screenshot: `docs/dashboard-charts.png`.
///
/// Issue 16, item 3: the hospital file says `time_zone = "Asia/Shanghai"` and Chromium runs with
/// `TZ=UTC`: the page names the hospital's zone and shows a token's known expiry in Shanghai
/// time (UTC+8, the next day), not the device's.
#[test]
fn charts_draw_the_servers_history_in_headless_chromium() {
    let Some((chromium, driver)) = browser_tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let minute = 60_000;
    let seeded_until = now_ms() - now_ms() % minute - minute;
    seed_history(&data.join("clinical.sqlite"), seeded_until, 7 * 60);
    // The demo's stat target, made 15 minutes: the charts must draw the file's, not a default.
    let hospital = dir.path().join("hospital.toml");
    let demo = medkeeper_hospital::config::HospitalConfig::demo();
    let toml = medkeeper_hospital::config::HospitalConfig::DEMO_TOML
        .replacen("stat = \"10m\"", "stat = \"15m\"", 1)
        .replacen(
            "name = \"St. Example General\"",
            "name = \"St. Example General\"\ntime_zone = \"Asia/Shanghai\"",
            1,
        );
    assert!(toml.contains("stat = \"15m\"") && toml.contains("\ntime_zone = "));
    std::fs::write(&hospital, toml).unwrap();
    let server = Serve::start(&[
        "--data",
        data.to_str().unwrap(),
        "--hospital",
        hospital.to_str().unwrap(),
        "--history-every",
        "1s",
    ]);
    let (base, admin) = (
        server.url.clone(),
        server.admin.clone().expect("an admin token"),
    );
    let api = Api {
        agent: agent(),
        base: base.clone(),
        token: admin.clone(),
    };
    // This server's leader samples too: wait for a few of its seconds.
    let leaders = || {
        let h = api.expect("GET", "/api/history?pool=MRI", None, 200);
        h["samples"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["at_ms"].as_i64().unwrap() > seeded_until)
            .count()
    };
    wait_for(
        "3 samples of this server's leader",
        Duration::from_secs(30),
        || (leaders() >= 3).then_some(()),
    );
    let h = api.expect("GET", "/api/history", None, 200);
    assert_eq!(h["targets_ms"]["stat"], 15 * minute, "{}", h["targets_ms"]);
    let nurse = token_for(&api, "nurse");
    // Expires 2099-12-31 20:30 UTC: 2100-01-01 04:30 in Shanghai.
    let expires_ms: i64 = 4_102_432_200_000;
    api.expect(
        "POST",
        "/api/tokens",
        Some(json!({"role": "scheduler", "label": "the century", "expires_ms": expires_ms})),
        201,
    );
    assert_eq!(
        api.expect("GET", "/api/whoami", None, 200)["time_zone"],
        "Asia/Shanghai"
    );

    // A device set to UTC (whatever this machine's zone).
    let (_chromedriver, driver_port) = start_chromedriver_with_env(&driver, &[("TZ", "UTC")]);
    let browser = Browser::start(driver_port, &chromium);
    let shots = workspace_root().join("target/browser");
    browser.open_as(&base, "", &nurse);
    browser.wait_js(
        "the nurse's dashboard",
        Duration::from_secs(15),
        "return !!document.getElementById('tab-charts') || document.getElementById('status').textContent;",
        json!([]),
    );
    let loaded_ms = now_ms();
    // The device is on UTC; the page names the hospital's zone, in the header and at the foot.
    let zone = browser.js(
        "const z = document.getElementById('zone'), f = document.getElementById('tz');
         return [new Date(Date.UTC(2024, 0, 15)).getTimezoneOffset(),
                 new Date(Date.UTC(2024, 6, 15)).getTimezoneOffset(),
                 z.hidden, z.textContent, f.textContent, f.dataset.source];",
        json!([]),
    );
    assert_eq!(
        zone,
        json!([
            0,
            0,
            false,
            "Time zone Asia/Shanghai",
            "Times in Asia/Shanghai, the hospital's time zone",
            "hospital"
        ])
    );
    browser.click("#tab-charts");
    // The charts of the last hour: every pool's and every priority's, with points from before
    // the page was opened (the seeded hour and this leader's seconds), the file's targets.
    let charts = "const f = [...document.querySelectorAll('#panel-charts figure.chart')];
         const util = f.filter(e => e.dataset.kind === 'util'), wait = f.filter(e => e.dataset.kind === 'wait');
         const st = document.querySelector('#panel-charts [role=status]');
         const ok = st && st.dataset.state === 'loaded' && util.length === arguments[0] && wait.length === 4
             && util.every(e => Number(e.dataset.history) >= arguments[1] && !!e.querySelector('path.series'))
             && wait.every(e => Number(e.dataset.history) >= arguments[1] && !!e.querySelector('line.target'))
             && wait.find(e => e.dataset.chart === 'stat').dataset.target === '900';
         return ok || [st && st.dataset.state, st && st.textContent,
             f.map(e => [e.dataset.chart, e.dataset.history, e.dataset.target])];";
    browser.wait_js(
        "the last hour's charts from the server's history",
        Duration::from_secs(15),
        charts,
        json!([demo.pools.len(), 60]),
    );
    let caption = browser.js(
        "return document.querySelector('#panel-charts figure[data-chart=stat] figcaption').textContent;",
        json!([]),
    );
    assert!(
        caption.as_str().unwrap().contains("target 15 min"),
        "{caption}"
    );
    // Eight hours: the seeded seven and this leader's samples, all from before the page.
    browser.choose("#chart-window", "8");
    browser.wait_js(
        "eight hours of history",
        Duration::from_secs(15),
        charts,
        json!([demo.pools.len(), 7 * 60 + 3]),
    );
    // Live points are appended after the history: one more, timed after the page opened.
    api.expect(
        "PUT",
        "/api/pools/MRI/units/MRI-1/status",
        Some(json!({"status": "maintenance"})),
        200,
    );
    browser.wait_js(
        "a live point after the history",
        Duration::from_secs(15),
        "const e = document.querySelector('#panel-charts figure[data-chart=\"equipment:MRI\"]');
         return (!!e && Number(e.dataset.samples) > Number(e.dataset.history)) || (e && [e.dataset.samples, e.dataset.history]);",
        json!([]),
    );
    assert!(now_ms() > loaded_ms);
    browser.resize(1280, 1400);
    shoot(&browser, &shots, "dashboard-charts.png");
    browser.resize(1280, 900);

    // Simplified Chinese: every new string translated.
    browser.choose("#lang", "zh-CN");
    browser.wait_js(
        "the charts in Simplified Chinese",
        Duration::from_secs(15),
        "const st = document.querySelector('#panel-charts [role=status]');
         return (document.documentElement.lang === 'zh-CN' && !!st && st.dataset.state === 'loaded'
                 && document.getElementById('tz').textContent === '时间按医院所在时区 Asia/Shanghai 显示'
                 && document.getElementById('zone').textContent === '时区 Asia/Shanghai'
                 && document.getElementById('panel-charts').innerText.includes('虚线为医院配置文件')
                 && window.__i18nMissing.size === 0)
             || [document.documentElement.lang, st && st.textContent, [...window.__i18nMissing]];",
        json!([]),
    );
    browser.js("localStorage.clear();", json!([]));

    // The admin's token table: each token's expiry.
    browser.open_as(&base, "", &admin);
    browser.wait_js(
        "the admin's tab list",
        Duration::from_secs(15),
        "return !!document.getElementById('tab-admin') || document.getElementById('status').textContent;",
        json!([]),
    );
    browser.click("#tab-admin");
    // The expiry in Shanghai time: 2100-01-01 04:30 (on the device's UTC, 12/31/2099, 20:30).
    browser.wait_js(
        "the token table with expiries, in the hospital's time zone",
        Duration::from_secs(15),
        "const rows = [...document.querySelectorAll('#panel-admin tr[data-token]')];
         const exp = rows.map(r => r.querySelector('.tok-expires').textContent);
         return (rows.length === 3 && exp.filter(e => e === 'never').length === 2
                 && exp.includes('01/01/2100, 04:30')) || exp;",
        json!([]),
    );
}
