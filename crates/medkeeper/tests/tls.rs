//! HTTPS on `medkeeper serve`'s own listener (`--tls-cert`, `--tls-key`, `--tls-client-ca`),
//! through the real binary: the API, dashboard and event streams over TLS with the test's CA
//! trusted; plain HTTP to the TLS port refused; a certificate replaced on disk served to new
//! connections without a restart, a corrupt replacement logged and the old one kept (SIGHUP
//! too); client certificates required or optional; the CLI's `--server https://…` trusting
//! only `--server-ca`, with `--client-cert`/`--client-key`, and its errors. (The dashboard in
//! headless Chromium over HTTPS: `tests/browser.rs`.) The certificates are made here with rcgen
//! (ECDSA P-256), a CA and leaves per test.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use support::{Serve, agent};

/// A test CA: its certificate and what signs with it.
struct Ca {
    cert: Certificate,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert,
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `127.0.0.1` and `localhost` (server) or a client, with this serial.
    fn leaf(&self, name: &str, serial: u64, server: bool) -> Leaf {
        self.leaf_for(&["127.0.0.1", "localhost"], name, serial, server)
    }

    /// A leaf for these host names and addresses.
    fn leaf_for(&self, hosts: &[&str], name: &str, serial: u64, server: bool) -> Leaf {
        let mut params =
            CertificateParams::new(hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.serial_number = Some(SerialNumber::from(serial));
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf { cert, key }
    }
}

struct Leaf {
    cert: Certificate,
    key: KeyPair,
}

impl Leaf {
    /// Writes the certificate, then the key, as a person copying them in would.
    fn write(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, self.cert.pem()).unwrap();
        std::fs::write(key, self.key.serialize_pem()).unwrap();
    }
}

/// A client trusting `ca`, presenting `identity` if given.
fn client(ca: &Ca, identity: Option<&Leaf>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![leaf.cert.der().clone()],
                PrivateKeyDer::from_pem_slice(leaf.key.serialize_pem().as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    Arc::new(config)
}

/// An HTTPS answer: the status, the body and the certificate the server presented.
struct Answer {
    status: u16,
    body: String,
    served: CertificateDer<'static>,
}

/// `GET path` over a new TLS connection (`Connection: close`), with a bearer token if given.
fn get(
    addr: &str,
    config: &Arc<ClientConfig>,
    path: &str,
    token: Option<&str>,
) -> Result<Answer, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let conn =
        ClientConnection::new(config.clone(), ServerName::try_from("127.0.0.1").unwrap()).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // A peer that closes without close_notify: what was read is the answer.
        Err(e) if e.kind() == ErrorKind::UnexpectedEof && !raw.is_empty() => {}
        Err(e) => return Err(format!("read: {e}")),
    }
    let served = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .ok_or("no server certificate")?
        .into_owned();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or(format!("no HTTP answer: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("no status in {head:?}"))?;
    Ok(Answer {
        status,
        body: body.to_string(),
        served,
    })
}

/// Polls `f` every 200 ms until it gives a value, for up to `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn addr_of(srv: &Serve) -> String {
    srv.url
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("not an https URL: {}", srv.url))
        .trim_end_matches('/')
        .to_string()
}

#[test]
fn api_dashboard_and_event_streams_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("medkeeper test CA");
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let leaf = ca.leaf("medkeeper test server", 1, true);
    leaf.write(&cert, &key);
    let data = dir.path().join("data");
    let srv = Serve::start(&[
        "--data",
        data.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let addr = addr_of(&srv);
    let token = srv.admin.clone().unwrap();
    let trusting = client(&ca, None);

    // The API, with the CA trusted: the certificate served is the one in the file.
    let a = get(&addr, &trusting, "/api/pools", Some(&token)).unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("MRI"), "{}", a.body);
    assert_eq!(a.served.as_ref(), leaf.cert.der().as_ref());
    // Tokens still apply.
    assert_eq!(
        get(&addr, &trusting, "/api/pools", None).unwrap().status,
        401
    );
    // The dashboard.
    let page = get(&addr, &trusting, "/", None).unwrap();
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<html"), "{}", page.body);

    // A client that does not trust the CA refuses the server.
    let other = Ca::new("another CA");
    assert!(get(&addr, &client(&other, None), "/healthz", None).is_err());

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = agent().get(format!("http://{addr}/healthz")).call();
    assert!(
        plain.as_ref().map(|r| r.status() != 200).unwrap_or(true),
        "plain HTTP was answered: {plain:?}"
    );

    // An event stream over TLS: its first event arrives.
    let tcp = TcpStream::connect(&addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let conn = ClientConnection::new(trusting.clone(), ServerName::try_from("127.0.0.1").unwrap())
        .unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET /api/events?access_token={token} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(&seen).contains("\ndata:") {
        assert!(
            Instant::now() < deadline,
            "no event over TLS: {}",
            String::from_utf8_lossy(&seen)
        );
        let n = tls.read(&mut buf).unwrap();
        assert!(n > 0, "stream closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("text/event-stream"), "{text}");
    drop(tls);
    drop(srv);
}

#[test]
fn a_replaced_certificate_is_served_without_a_restart_and_a_corrupt_one_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("medkeeper test CA");
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let first = ca.leaf("medkeeper first", 1, true);
    first.write(&cert, &key);
    // The files named in the config file, with the keys as the flags.
    let config = dir.path().join("medkeeper.toml");
    std::fs::write(
        &config,
        format!(
            "tls_cert = {:?}\ntls_key = {:?}\n",
            cert.to_str().unwrap(),
            key.to_str().unwrap()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let srv = Serve::start(&[
        "--data",
        data.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    let addr = addr_of(&srv);
    let trusting = client(&ca, None);
    let served = || get(&addr, &trusting, "/healthz", None).unwrap().served;
    assert_eq!(served().as_ref(), first.cert.der().as_ref());

    // Renewed: certificate and key written in turn; new connections get it, and every
    // connection in between succeeds (the old pair, or the new one).
    let second = ca.leaf("medkeeper second", 2, true);
    second.write(&cert, &key);
    wait_for("the new certificate", Duration::from_secs(20), || {
        (served().as_ref() == second.cert.der().as_ref()).then_some(())
    });
    assert!(
        srv.log().contains("TLS certificate reloaded"),
        "{}",
        srv.log()
    );
    assert!(!srv.log().contains("not reloaded"), "{}", srv.log());

    // A corrupt replacement: logged, and the certificate in use kept.
    std::fs::write(&cert, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n").unwrap();
    wait_for("the refusal in the log", Duration::from_secs(20), || {
        srv.log().contains("not reloaded").then_some(())
    });
    assert_eq!(served().as_ref(), second.cert.der().as_ref());
    // A key that does not fit the certificate: the same.
    second.write(&cert, &key);
    std::fs::write(&key, first.key.serialize_pem()).unwrap();
    wait_for(
        "the second refusal in the log",
        Duration::from_secs(20),
        || (srv.log().matches("not reloaded").count() >= 2).then_some(()),
    );
    assert!(srv.log().contains("does not fit"), "{}", srv.log());
    assert_eq!(served().as_ref(), second.cert.der().as_ref());

    // SIGHUP reloads at once (and does not stop the process): the mismatched pair again.
    let hup = Command::new("kill")
        .args(["-HUP", &srv.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for("the SIGHUP reload", Duration::from_secs(10), || {
        (srv.log().matches("not reloaded").count() >= 3).then_some(())
    });
    assert_eq!(get(&addr, &trusting, "/healthz", None).unwrap().status, 200);

    // A good pair again: served.
    let third = ca.leaf("medkeeper third", 3, true);
    third.write(&cert, &key);
    wait_for("the third certificate", Duration::from_secs(20), || {
        (served().as_ref() == third.cert.der().as_ref()).then_some(())
    });
    drop(srv);
}

/// Starts a server whose clients need a certificate from `clients` (`mode`: required or
/// optional).
fn serve_with_client_ca(dir: &Path, ca: &Ca, clients: &Ca, mode: &str) -> Serve {
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    ca.leaf("medkeeper server", 1, true).write(&cert, &key);
    let client_ca = dir.join("clients.pem");
    std::fs::write(&client_ca, clients.cert.pem()).unwrap();
    let data = dir.join("data");
    Serve::start(&[
        "--data",
        data.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-client-ca",
        client_ca.to_str().unwrap(),
        "--tls-client-auth",
        mode,
    ])
}

#[test]
fn client_certificates_required() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("medkeeper test CA");
    let machines = Ca::new("machine clients CA");
    let srv = serve_with_client_ca(dir.path(), &ca, &machines, "required");
    let addr = addr_of(&srv);
    let token = srv.admin.clone().unwrap();

    // No certificate: refused.
    let none = get(&addr, &client(&ca, None), "/healthz", None);
    assert!(none.is_err(), "answered without a client certificate");
    // One from the machines' CA: taken, and the bearer token still decides.
    let machine = client(&ca, Some(&machines.leaf("pump-gateway-7", 10, false)));
    assert_eq!(get(&addr, &machine, "/healthz", None).unwrap().status, 200);
    assert_eq!(
        get(&addr, &machine, "/api/whoami", None).unwrap().status,
        401
    );
    assert_eq!(
        get(&addr, &machine, "/api/whoami", Some(&token))
            .unwrap()
            .status,
        200
    );
    // One from another CA (even the server's own): refused.
    let stranger = client(
        &ca,
        Some(&Ca::new("stranger CA").leaf("intruder", 11, false)),
    );
    assert!(get(&addr, &stranger, "/healthz", None).is_err());
    let servers = client(&ca, Some(&ca.leaf("not a machine", 12, false)));
    assert!(get(&addr, &servers, "/healthz", None).is_err());
    drop(srv);
}

#[test]
fn client_certificates_optional() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("medkeeper test CA");
    let machines = Ca::new("machine clients CA");
    let srv = serve_with_client_ca(dir.path(), &ca, &machines, "optional");
    let addr = addr_of(&srv);

    // No certificate (a browser): taken.
    assert_eq!(
        get(&addr, &client(&ca, None), "/healthz", None)
            .unwrap()
            .status,
        200
    );
    // One from the machines' CA: taken.
    let machine = client(&ca, Some(&machines.leaf("pump-gateway-7", 10, false)));
    assert_eq!(get(&addr, &machine, "/healthz", None).unwrap().status, 200);
    // One that does not verify: refused, optional or not.
    let stranger = client(
        &ca,
        Some(&Ca::new("stranger CA").leaf("intruder", 11, false)),
    );
    assert!(get(&addr, &stranger, "/healthz", None).is_err());
    drop(srv);
}

#[test]
fn bad_tls_settings_stop_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("medkeeper test CA");
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let leaf = ca.leaf("medkeeper server", 1, true);
    leaf.write(&cert, &key);
    let other = ca.leaf("medkeeper other", 2, true);
    let other_key = dir.path().join("other.key");
    std::fs::write(&other_key, other.key.serialize_pem()).unwrap();
    let data = dir.path().join("data");
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_medkeeper"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--data",
                data.to_str().unwrap(),
            ])
            .args(args)
            .env_remove("MEDKEEPER_CONFIG")
            .output()
            .unwrap();
        assert!(!out.status.success(), "started with {args:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = run(&["--tls-cert", cert.to_str().unwrap()]);
    assert!(err.contains("--tls-key"), "{err}");
    let err = run(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        other_key.to_str().unwrap(),
    ]);
    assert!(err.contains("does not fit"), "{err}");
    let err = run(&[
        "--tls-cert",
        key.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(err.contains("no certificate"), "{err}");
    let err = run(&["--tls-client-ca", cert.to_str().unwrap()]);
    assert!(err.contains("--tls-client-ca needs"), "{err}");
}

/// SIGHUP (`systemctl reload`) reloads certificates; an instance without HTTPS logs that there
/// is nothing to reload and goes on serving, instead of dying of the signal's default action.
#[test]
fn sighup_without_https_does_not_stop_serve() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut srv = Serve::start(&["--data", data.to_str().unwrap()]);
    assert!(srv.url.starts_with("http://"), "{}", srv.url);
    let hup = Command::new("kill")
        .args(["-HUP", &srv.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    wait_for("the SIGHUP log line", Duration::from_secs(10), || {
        srv.log().contains("nothing to reload").then_some(())
    });
    assert!(
        srv.child.try_wait().unwrap().is_none(),
        "serve exited on SIGHUP"
    );
    let (status, _) = support::call(&agent(), "GET", &format!("{}healthz", srv.url), "", None);
    assert_eq!(status, 200);
    assert!(srv.terminate().success());
}

/// `medkeeper ARGS` (a client command) with no server settings from the environment but `env`.
fn cli(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_medkeeper"));
    cmd.args(args).stdin(Stdio::null());
    for var in [
        "MEDKEEPER_SERVER",
        "MEDKEEPER_TOKEN",
        "MEDKEEPER_SERVER_CA",
        "MEDKEEPER_CLIENT_CERT",
        "MEDKEEPER_CLIENT_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("medkeeper runs")
}

/// A client command that must succeed; its stdout.
fn cli_ok(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = cli(args, env);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "medkeeper {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A client command that must fail as a connection failure does (exit status 1) with one line
/// on stderr; that line.
fn cli_fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = cli(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(out.status.code(), Some(1), "medkeeper {args:?}: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// Issue 19: the CLI against `serve --tls-cert`: with `--server-ca` (or `MEDKEEPER_SERVER_CA`)
/// reads and writes work; without it, with another CA's certificate, with plain `http://` to the
/// HTTPS port and with `https://` to something that speaks no TLS, one clear line and exit 1.
#[test]
fn the_cli_over_https_trusts_only_the_ca_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("medkeeper test CA");
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    ca.leaf("medkeeper test server", 1, true).write(&cert, &key);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let other_ca_file = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca_file, Ca::new("another CA").cert.pem()).unwrap();
    let data = dir.path().join("data");
    let srv = Serve::start(&[
        "--data",
        data.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let addr = addr_of(&srv);
    let url = format!("https://{addr}");
    let token = srv.admin.clone().unwrap();
    let ca = ca_file.to_str().unwrap();

    // Reads and a write, with the CA given as a flag.
    let out = cli_ok(
        &[
            "cluster",
            "--server",
            &url,
            "--token",
            &token,
            "--server-ca",
            ca,
        ],
        &[],
    );
    assert!(out.contains("leader"), "{out}");
    assert!(out.contains(&format!("{url}/")), "{out}");
    let out = cli_ok(
        &[
            "token",
            "create",
            "--role",
            "nurse",
            "--server",
            &url,
            "--token",
            &token,
            "--server-ca",
            ca,
        ],
        &[],
    );
    let nurse = out
        .split_whitespace()
        .find(|w| w.starts_with("mkt_"))
        .unwrap_or_else(|| panic!("no token in {out}"))
        .to_string();
    // The same from the environment, with the new token.
    let env = [
        ("MEDKEEPER_SERVER", url.as_str()),
        ("MEDKEEPER_SERVER_CA", ca),
        ("MEDKEEPER_TOKEN", nurse.as_str()),
    ];
    let out = cli_ok(&["pools"], &env);
    assert!(out.contains("MRI"), "{out}");
    // An API refusal over HTTPS is still exit 2 with the server's message.
    let refused = cli(&["tree", "/"], &env);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");

    // No CA: refused before connecting, saying what to pass.
    let err = cli_fails(&["cluster", "--server", &url, "--token", &token], &[]);
    assert!(err.contains("--server-ca"), "{err}");
    assert!(err.contains("MEDKEEPER_SERVER_CA"), "{err}");

    // Another CA: the server's certificate is refused.
    let err = cli_fails(
        &[
            "cluster",
            "--server",
            &url,
            "--token",
            &token,
            "--server-ca",
            other_ca_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(err.contains("not signed by a CA in --server-ca"), "{err}");
    assert!(err.contains("other-ca.pem"), "{err}");

    // A file without a certificate as the CA.
    let err = cli_fails(
        &[
            "cluster",
            "--server",
            &url,
            "--token",
            &token,
            "--server-ca",
            key.to_str().unwrap(),
        ],
        &[],
    );
    assert!(err.contains("no certificate"), "{err}");

    // Plain HTTP to the HTTPS port.
    let err = cli_fails(
        &[
            "cluster",
            "--server",
            &format!("http://{addr}"),
            "--token",
            &token,
        ],
        &[],
    );
    assert!(err.contains("did not answer plain HTTP"), "{err}");
    assert!(err.contains("https://"), "{err}");
    // --server-ca with an http:// URL: the token would go unencrypted, so refused.
    let err = cli_fails(
        &[
            "cluster",
            "--server",
            &format!("http://{addr}"),
            "--token",
            &token,
            "--server-ca",
            ca,
        ],
        &[],
    );
    assert!(err.contains("plain http://"), "{err}");

    // https:// to something that answers plain HTTP.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_addr = plain.local_addr().unwrap();
    let answering = std::thread::spawn(move || {
        let (mut conn, _) = plain.accept().unwrap();
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf);
        let _ = conn.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    let err = cli_fails(
        &[
            "cluster",
            "--server",
            &format!("https://{plain_addr}"),
            "--token",
            &token,
            "--server-ca",
            ca,
        ],
        &[],
    );
    assert!(err.contains("does not speak TLS"), "{err}");
    answering.join().unwrap();
    drop(srv);
}

/// Issue 19: a server certificate for another host name is refused by the CLI, with the names.
#[test]
fn the_cli_refuses_a_certificate_for_another_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("medkeeper test CA");
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    ca.leaf_for(&["medkeeper.example.org"], "medkeeper elsewhere", 1, true)
        .write(&cert, &key);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let data = dir.path().join("data");
    let srv = Serve::start(&[
        "--data",
        data.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let url = format!("https://{}", addr_of(&srv));
    let token = srv.admin.clone().unwrap();
    let err = cli_fails(
        &[
            "cluster",
            "--server",
            &url,
            "--token",
            &token,
            "--server-ca",
            ca_file.to_str().unwrap(),
        ],
        &[],
    );
    assert!(err.contains("a certificate for another name"), "{err}");
    assert!(err.contains("medkeeper.example.org"), "{err}");
    drop(srv);
}

/// Issue 19: the CLI with `--client-cert`/`--client-key` against `--tls-client-auth required`:
/// a certificate from the machines' CA works; none, or one from another CA, is refused in one
/// line; a key that does not fit, or a certificate without its key, is refused before connecting.
#[test]
fn the_cli_presents_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("medkeeper test CA");
    let machines = Ca::new("machine clients CA");
    let srv = serve_with_client_ca(dir.path(), &ca, &machines, "required");
    let url = format!("https://{}", addr_of(&srv));
    let token = srv.admin.clone().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert.pem()).unwrap();
    let (machine_cert, machine_key) = (dir.path().join("gw.pem"), dir.path().join("gw.key"));
    machines
        .leaf("pump-gateway-7", 10, false)
        .write(&machine_cert, &machine_key);
    let (stranger_cert, stranger_key) = (dir.path().join("x.pem"), dir.path().join("x.key"));
    Ca::new("stranger CA")
        .leaf("intruder", 11, false)
        .write(&stranger_cert, &stranger_key);
    let base = [
        "cluster",
        "--server",
        &url,
        "--token",
        &token,
        "--server-ca",
        ca_file.to_str().unwrap(),
    ];
    let out = cli_ok(&with_identity(&base, &machine_cert, &machine_key), &[]);
    assert!(out.contains("leader"), "{out}");
    // From the environment too.
    let out = cli_ok(
        &base,
        &[
            ("MEDKEEPER_CLIENT_CERT", machine_cert.to_str().unwrap()),
            ("MEDKEEPER_CLIENT_KEY", machine_key.to_str().unwrap()),
        ],
    );
    assert!(out.contains("leader"), "{out}");

    let err = cli_fails(&base, &[]);
    assert!(err.contains("requires a client certificate"), "{err}");
    assert!(err.contains("--client-cert"), "{err}");
    let err = cli_fails(&with_identity(&base, &stranger_cert, &stranger_key), &[]);
    assert!(err.contains("refused the TLS handshake"), "{err}");
    let err = cli_fails(&with_identity(&base, &machine_cert, &stranger_key), &[]);
    assert!(err.contains("does not fit"), "{err}");
    let mut only_cert = base.to_vec();
    only_cert.extend(["--client-cert", machine_cert.to_str().unwrap()]);
    let err = cli_fails(&only_cert, &[]);
    assert!(err.contains("--client-cert needs --client-key"), "{err}");
    drop(srv);
}

/// `args` and `--client-cert CERT --client-key KEY`.
fn with_identity<'a>(args: &[&'a str], cert: &'a Path, key: &'a Path) -> Vec<&'a str> {
    let mut args = args.to_vec();
    args.extend([
        "--client-cert",
        cert.to_str().unwrap(),
        "--client-key",
        key.to_str().unwrap(),
    ]);
    args
}
