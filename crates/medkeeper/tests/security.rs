//! Issue 19, security hardening: what medkeeper writes is its own.
//!
//! - ZooKeeper ACLs: with credentials (`MEDKEEPER_AUTH_FILE`, `--auth-file`, `MEDKEEPER_AUTH`)
//!   every node `serve` creates below its chroot — the chroot itself included — carries an ACL
//!   for medkeeper's digest identity alone; another tenant of the ensemble (no credentials, or
//!   other ones) is refused reading and writing (`NoAuth`), and `medkeeper coord --auth-file`
//!   reads the tree. The `zookeeper` tests need `MEDKEEPER_ZK_CONNECT` (`scripts/test-zk`); the
//!   same on the embedded engine runs everywhere.
//! - Credentials files others may read are refused.
//! - The data directory: created 0700, its files 0600; a directory others may write is refused.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use medkeeper_coord::{Acl, CreateMode, CreateOptions, Error, Perms, Session, SessionExt};
use support::{Serve, agent, call};

const USER: &str = "medkeeper-acl";
const PASSWORD: &str = "s3cret:with-colon";

/// A credentials file `digest:USER:PASSWORD` with `mode`.
fn auth_file(dir: &Path, mode: u32) -> PathBuf {
    let p = dir.join("zk-auth");
    std::fs::write(&p, format!("digest:{USER}:{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

fn medkeeper(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medkeeper"))
        .args(args)
        .env_remove("MEDKEEPER_AUTH")
        .env_remove("MEDKEEPER_AUTH_FILE")
        .env_remove("MEDKEEPER_CONNECT")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

/// Every node below `root` (included), as `owner` lists them.
async fn walk(owner: &dyn Session, root: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_string()];
    while let Some(p) = stack.pop() {
        match owner.get_children(&p).await {
            Ok(children) => {
                stack.extend(children.iter().map(|c| medkeeper_coord::path::join(&p, c)));
                out.push(p);
            }
            Err(Error::NoNode) => {} // an ephemeral gone meanwhile
            Err(e) => panic!("ls {p}: {e:?}"),
        }
    }
    out
}

/// The checks another tenant fails: read, list, change, create below.
async fn assert_refused(who: &str, s: &dyn Session, p: &str) {
    assert_eq!(
        s.get_data(p).await.map(drop),
        Err(Error::NoAuth),
        "{who}: get {p}"
    );
    assert_eq!(
        s.get_children(p).await.map(drop),
        Err(Error::NoAuth),
        "{who}: ls {p}"
    );
    assert_eq!(
        s.set_data(p, b"x", -1).await.map(drop),
        Err(Error::NoAuth),
        "{who}: set {p}"
    );
    assert_eq!(
        s.create(
            &format!("{p}/intruder"),
            b"",
            &CreateOptions::new(CreateMode::Persistent)
        )
        .await
        .map(drop),
        Err(Error::NoAuth),
        "{who}: create below {p}"
    );
}

/// `serve` on a ZooKeeper chroot it creates, with credentials from `MEDKEEPER_AUTH_FILE`: the
/// chroot and every node below it (the hospital tree, members, leader, locks — ephemerals
/// included) carry medkeeper's digest ACL alone; an unauthenticated session and one with other
/// credentials get `NoAuth` reading, listing, changing and creating; `medkeeper coord
/// --auth-file` reads the tree and without credentials it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zookeeper_tree_is_closed_to_other_tenants() {
    let Some(hosts) = medkeeper_testkit::zk_connect_string() else {
        medkeeper_testkit::skip("zookeeper_tree_is_closed_to_other_tenants");
        return;
    };
    let t0 = Instant::now();
    let chroot = format!("/{}", medkeeper_testkit::unique_name("acl"));
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_file(dir.path(), 0o600);
    let connect = format!("zk:{hosts}{chroot}");
    let data = dir.path().join("data");

    let serve = {
        let (connect, data, auth) = (connect.clone(), data.clone(), auth.clone());
        tokio::task::spawn_blocking(move || {
            Serve::start_with_env(
                &[
                    "--connect",
                    &connect,
                    "--data",
                    data.to_str().unwrap(),
                    "--session-timeout-ms",
                    "4000",
                ],
                &[("MEDKEEPER_AUTH_FILE", auth.to_str().unwrap())],
            )
        })
        .await
        .unwrap()
    };
    let token = serve.admin.clone().expect("an admin token on first start");
    let url = serve.url.clone();
    let (status, body) = tokio::task::spawn_blocking(move || {
        call(&agent(), "GET", &format!("{url}api/pools"), &token, None)
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");

    let options = || medkeeper_zk::ConnectOptions::new(&hosts).unwrap();
    let owner = medkeeper_zk::connect(
        options()
            .with_digest(&format!("{USER}:{PASSWORD}"))
            .unwrap(),
    )
    .await
    .unwrap();
    let anonymous = medkeeper_zk::connect(options()).await.unwrap();
    let intruder = medkeeper_zk::connect(options().with_digest("intruder:pw").unwrap())
        .await
        .unwrap();
    let own = vec![Acl::digest(Perms::ALL, USER, PASSWORD)];

    owner.sync(&chroot).await.unwrap();
    let nodes = walk(&owner, &chroot).await;
    let medical = format!("{chroot}/medical");
    assert!(nodes.contains(&medical), "{nodes:?}");
    assert!(
        nodes.len() > 20,
        "the hospital tree is below the chroot: {nodes:?}"
    );
    let mut ephemerals = 0;
    for p in &nodes {
        let (acl, stat) = match owner.get_acl(p).await {
            Ok(v) => v,
            Err(Error::NoNode) => continue,
            Err(e) => panic!("getacl {p}: {e:?}"),
        };
        assert_eq!(acl, own, "ACL of {p}");
        ephemerals += usize::from(stat.is_ephemeral());
    }
    assert!(ephemerals > 0, "members, leader and locks are ephemeral");

    for (who, s) in [("unauthenticated", &anonymous), ("intruder", &intruder)] {
        s.sync(&chroot).await.unwrap();
        for p in [&chroot, &medical, &nodes[nodes.len() - 1]] {
            assert_refused(who, s, p).await;
        }
    }

    // The CLI: credentials from a file read the tree; none are refused.
    let auth_arg = auth.to_str().unwrap().to_string();
    let connect2 = connect.clone();
    let (with, without, getacl) = tokio::task::spawn_blocking(move || {
        let with = medkeeper(
            &[
                "coord",
                "--connect",
                &connect2,
                "--auth-file",
                &auth_arg,
                "ls",
                "/medical",
            ],
            &[],
        );
        let without = medkeeper(&["coord", "--connect", &connect2, "ls", "/medical"], &[]);
        let getacl = medkeeper(
            &["coord", "--connect", &connect2, "getacl", "/medical"],
            &[("MEDKEEPER_AUTH_FILE", &auth_arg)],
        );
        (with, without, getacl)
    })
    .await
    .unwrap();
    assert!(with.status.success(), "{}", text(&with.stderr));
    assert!(
        text(&with.stdout).contains("resources"),
        "{}",
        text(&with.stdout)
    );
    assert_eq!(without.status.code(), Some(2), "{}", text(&without.stdout));
    assert!(
        text(&without.stderr).contains("NoAuth"),
        "{}",
        text(&without.stderr)
    );
    assert!(getacl.status.success(), "{}", text(&getacl.stderr));
    assert_eq!(
        text(&getacl.stdout),
        format!("{}\n", own[0]),
        "getacl prints zkCli's lines"
    );

    drop(serve);
    // serve was killed: its ephemerals go with its session; delete what is left.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match owner.delete_recursive(&chroot).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("cleanup: {e:?}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cleanup: {e:?}"),
        }
    }
    for s in [owner, anonymous, intruder] {
        s.close().await;
    }
    eprintln!(
        "zookeeper ACLs checked on {} nodes in {:?}",
        nodes.len(),
        t0.elapsed()
    );
}

/// The same on the embedded engine: with credentials, `serve`'s tree is closed to a session
/// without them (`medkeeper coord` on the data directory after `serve` stopped), and
/// `--auth-file` opens it. `serve` takes the file from `MEDKEEPER_AUTH_FILE`, `--auth-file`
/// and the config file's `auth_file` alike.
#[test]
fn embedded_tree_is_closed_without_the_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let auth = auth_file(dir.path(), 0o600);
    let config = dir.path().join("medkeeper.toml");
    std::fs::write(
        &config,
        format!("auth_file = {:?}\n", auth.to_str().unwrap()),
    )
    .unwrap();
    for way in ["env", "flag", "config"] {
        let data = dir.path().join(format!("data-{way}"));
        let data_arg = data.to_str().unwrap();
        let mut serve = match way {
            "env" => Serve::start_with_env(
                &["--data", data_arg],
                &[("MEDKEEPER_AUTH_FILE", auth.to_str().unwrap())],
            ),
            "flag" => Serve::start(&["--data", data_arg, "--auth-file", auth.to_str().unwrap()]),
            _ => Serve::start(&["--data", data_arg, "--config", config.to_str().unwrap()]),
        };
        assert!(serve.terminate().success(), "{way}: {}", serve.log());
        tree_needs_the_credentials(&data, &auth);
    }
}

fn tree_needs_the_credentials(data: &Path, auth: &Path) {
    let connect = format!("embedded:{}", data.join("coord").display());
    let without = medkeeper(&["coord", "--connect", &connect, "get", "/medical"], &[]);
    assert_eq!(without.status.code(), Some(2), "{}", text(&without.stdout));
    assert!(
        text(&without.stderr).contains("NoAuth"),
        "{}",
        text(&without.stderr)
    );
    let with = medkeeper(
        &[
            "coord",
            "--connect",
            &connect,
            "--auth-file",
            auth.to_str().unwrap(),
            "ls",
            "/medical",
        ],
        &[],
    );
    assert!(with.status.success(), "{}", text(&with.stderr));
    assert!(
        text(&with.stdout).contains("resources"),
        "{}",
        text(&with.stdout)
    );
}

/// A credentials file others may read (or anyone but its owner may write) is refused, naming
/// the fix; so are malformed credentials, without echoing them.
#[test]
fn credentials_file_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let connect = format!("embedded:{}", dir.path().join("coord").display());
    for mode in [0o644, 0o604, 0o620] {
        let auth = auth_file(dir.path(), mode);
        let out = medkeeper(
            &[
                "coord",
                "--connect",
                &connect,
                "--auth-file",
                auth.to_str().unwrap(),
                "ls",
                "/",
            ],
            &[],
        );
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert!(err.contains("chmod 600"), "{mode:o}: {err}");
    }
    // Group-readable (root:medkeeper 0640) is fine.
    let auth = auth_file(dir.path(), 0o640);
    let out = medkeeper(
        &[
            "coord",
            "--connect",
            &connect,
            "--auth-file",
            auth.to_str().unwrap(),
            "create",
            "/group-readable-credentials-are-fine",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    std::fs::write(&auth, "digest-without-user\n").unwrap();
    let out = medkeeper(
        &["coord", "--connect", &connect, "ls", "/"],
        &[("MEDKEEPER_AUTH_FILE", auth.to_str().unwrap())],
    );
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("digest:user:password"), "{err}");
    assert!(
        !err.contains("without-user"),
        "the value is not echoed: {err}"
    );
}

/// `medkeeper serve --data DIR` under `umask` (000: nothing masked), as a child whose stdout is
/// read until it prints its URL; killed on drop.
struct UmaskServe(std::process::Child);

impl UmaskServe {
    fn start(umask: &str, data: &Path) -> (UmaskServe, String) {
        use std::io::BufRead;
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(env!("CARGO_BIN_EXE_medkeeper"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .env_remove("MEDKEEPER_CONFIG")
            .env_remove("MEDKEEPER_CONNECT")
            .env_remove("MEDKEEPER_STORE")
            .env_remove("MEDKEEPER_AUTH")
            .env_remove("MEDKEEPER_AUTH_FILE")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Killed and waited for on drop, also when the assertion below fails.
        let serve = UmaskServe(child);
        let mut out = std::io::BufReader::new(stdout);
        let mut printed = String::new();
        loop {
            let mut line = String::new();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "serve exited:\n{printed}"
            );
            printed.push_str(&line);
            if printed.contains("admin token:") {
                return (serve, printed);
            }
        }
    }
}

impl Drop for UmaskServe {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Every directory and file below `dir` (included) with its permission bits.
fn modes(dir: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::metadata(&p).unwrap();
        out.push((p.clone(), meta.is_dir(), meta.permissions().mode() & 0o7777));
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

/// A first start, even under `umask 000`, leaves the data directory (and everything in it that
/// is a directory) 0700 and every file 0600: the engine's log, snapshot and lock, the SQLite
/// store and its `-wal` and `-shm`.
#[test]
fn fresh_data_directory_is_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let (serve, _) = UmaskServe::start("000", &data);
    let all = modes(&data);
    drop(serve);
    let names: Vec<String> = all
        .iter()
        .map(|(p, _, _)| p.strip_prefix(&data).unwrap().display().to_string())
        .collect();
    for want in [
        "clinical.sqlite",
        "clinical.sqlite-wal",
        "clinical.sqlite-shm",
        "coord/LOCK",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    assert!(
        names.iter().any(|n| n.starts_with("coord/log.")),
        "{names:?}"
    );
    for (p, is_dir, mode) in &all {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} has mode {mode:03o}", p.display());
    }
}

/// A data directory other users may write is refused at start, naming the fix; a private one
/// is then accepted.
#[test]
fn data_directory_others_may_write_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("shared");
    std::fs::create_dir(&data).unwrap();
    for mode in [0o777, 0o775, 0o757] {
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(mode)).unwrap();
        let t = Instant::now();
        let out = Command::new("timeout")
            .args([
                "30",
                env!("CARGO_BIN_EXE_medkeeper"),
                "serve",
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--data")
            .arg(&data)
            .env_remove("MEDKEEPER_CONFIG")
            .env_remove("MEDKEEPER_CONNECT")
            .env_remove("MEDKEEPER_STORE")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{mode:o}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!("chmod 700 {}", data.display())),
            "{mode:o}: {err}"
        );
        assert!(t.elapsed() < Duration::from_secs(20));
        assert_eq!(
            std::fs::read_dir(&data).unwrap().count(),
            0,
            "nothing written to a refused directory"
        );
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (serve, printed) = UmaskServe::start("022", &data);
    assert!(printed.contains("listening on"), "{printed}");
    drop(serve);
}
