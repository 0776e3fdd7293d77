//! The `medkeeper coord` CLI, run as a real process against an embedded data directory.

use std::process::{Command, Output};

struct Cli {
    dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        Cli {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        let connect = format!("embedded:{}", self.dir.path().display());
        Command::new(env!("CARGO_BIN_EXE_medkeeper"))
            .args(["coord", "--connect", &connect])
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a command that must fail with a coordination error; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?} should exit 2");
        String::from_utf8(out.stderr).unwrap()
    }
}

#[test]
fn create_get_set_ls_stat_tree_delete() {
    let cli = Cli::new();
    let mri = "/medical/resources/equipment/MRI";
    assert_eq!(cli.ok(&["create", "-p", mri, "kind"]), format!("{mri}\n"));
    assert_eq!(
        cli.ok(&["create", "-s", &format!("{mri}/q-"), "a"]),
        format!("{mri}/q-0000000000\n")
    );
    assert_eq!(
        cli.ok(&["create", "-s", &format!("{mri}/q-"), "b"]),
        format!("{mri}/q-0000000001\n")
    );
    assert_eq!(cli.ok(&["get", mri]), "kind\n");
    assert_eq!(cli.ok(&["ls", mri]), "[q-0000000000, q-0000000001]\n");
    cli.ok(&["set", "-v", "0", mri, "MRI scanners"]);
    assert_eq!(cli.ok(&["get", mri]), "MRI scanners\n");
    let stat: serde_json::Value = serde_json::from_str(&cli.ok(&["stat", "--json", mri])).unwrap();
    assert_eq!(stat["version"], 1);
    assert_eq!(stat["numChildren"], 2);
    assert_eq!(stat["dataLength"], 12);
    assert!(cli.ok(&["stat", mri]).contains("dataVersion = 1\n"));
    let tree = cli.ok(&["tree", "/medical"]);
    assert_eq!(
        tree,
        "/medical\n  resources\n    equipment\n      MRI\n        q-0000000000\n        q-0000000001\n"
    );
    // The ephemeral of a finished command is gone with its session.
    cli.ok(&["create", "-e", "/gone"]);
    assert!(cli.fails(&["get", "/gone"]).starts_with("NoNode: /gone"));
    cli.ok(&["delete", "-r", "/medical"]);
    assert_eq!(cli.ok(&["ls", "/"]), "[zookeeper]\n");
}

#[test]
fn errors_name_the_zookeeper_error_kind_and_exit_2() {
    let cli = Cli::new();
    cli.ok(&["create", "/a", "x"]);
    cli.ok(&["create", "/a/b"]);
    assert!(cli.fails(&["create", "/a"]).starts_with("NodeExists: /a"));
    assert!(
        cli.fails(&["set", "-v", "7", "/a", "y"])
            .starts_with("BadVersion: /a")
    );
    assert!(cli.fails(&["delete", "/a"]).starts_with("NotEmpty: /a"));
    assert!(cli.fails(&["create", "/x/y"]).starts_with("NoNode: /x/y"));
    assert!(
        cli.fails(&["get", "relative"])
            .starts_with("BadArguments: relative")
    );
    assert!(
        cli.fails(&["create", "-e", "/e/child"])
            .starts_with("NoNode")
    );
    assert!(
        cli.fails(&["create", "-t", "0", "/ttl"])
            .starts_with("BadArguments")
    );
}

#[test]
fn a_bad_connect_string_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_medkeeper"))
        .args(["coord", "--connect", "nowhere", "ls", "/"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown --connect"));
}

fn medkeeper(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_medkeeper"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn lock_runs_the_command_with_its_fencing_token_and_exits_with_its_status() {
    let cli = Cli::new();
    let connect = format!("embedded:{}", cli.dir.path().display());
    let lock = "/medical/resources/equipment/MRI/lock";
    let out = medkeeper(&[
        "lock",
        "--connect",
        &connect,
        lock,
        "--",
        "sh",
        "-c",
        "echo $MEDKEEPER_FENCING_TOKEN $MEDKEEPER_LOCK_NODE; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "the command's status");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let (token, node) = stdout.trim().split_once(' ').unwrap();
    assert!(token.parse::<i64>().unwrap() > 0);
    assert!(node.starts_with(&format!("{lock}/_c_")) && node.contains("-lock-"));
    // Released: the lock directory holds no contender.
    assert_eq!(cli.ok(&["ls", lock]), "[]\n");
    // A second holder later gets a larger token.
    let out = medkeeper(&[
        "lock",
        "--connect",
        &connect,
        lock,
        "--",
        "sh",
        "-c",
        "echo $MEDKEEPER_FENCING_TOKEN",
    ]);
    assert!(out.status.success());
    let later: i64 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(later > token.parse::<i64>().unwrap());
}

#[test]
fn lock_errors_exit_2_and_a_missing_command_is_a_usage_error() {
    let cli = Cli::new();
    let connect = format!("embedded:{}", cli.dir.path().display());
    let out = medkeeper(&["lock", "--connect", &connect, "/bad/", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("BadArguments: /bad/"));
    let out = medkeeper(&[
        "lock",
        "--connect",
        &connect,
        "/l",
        "--",
        "/nonexistent/cmd",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run"));
    let out = medkeeper(&["lock", "--connect", &connect, "/l"]);
    assert_eq!(out.status.code(), Some(2), "clap usage error");
}

/// Several `medkeeper lock` processes on one ZooKeeper lock run their commands one at a time,
/// and one with a short timeout gives up with status 2 while the lock is held.
#[test]
fn lock_serialises_processes_on_zookeeper() {
    let Some(connect) = medkeeper_testkit::zk_connect_string() else {
        medkeeper_testkit::skip("lock_serialises_processes_on_zookeeper");
        return;
    };
    let connect = format!("zk:{connect}");
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    let lock = format!("/cli-lock/{}", std::process::id());
    let script = format!(
        "echo enter $0 >> {r}; sleep 0.5; echo exit $0 >> {r}",
        r = record.display()
    );
    let children: Vec<_> = (0..3)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_medkeeper"))
                .args(["lock", "--connect", &connect, &lock, "--", "sh", "-c"])
                .arg(&script)
                .arg(i.to_string())
                .spawn()
                .unwrap()
        })
        .collect();
    // Wait until at least two of them are in the lock's line (process start-up and connecting
    // take a while on a loaded machine), so the lock is held for a good while yet.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let out = medkeeper(&["coord", "--connect", &connect, "ls", &lock]);
        let listed = String::from_utf8_lossy(&out.stdout)
            .matches("-lock-")
            .count();
        if listed >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the holders never queued"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = medkeeper(&[
        "lock",
        "--connect",
        &connect,
        "--timeout",
        "50",
        &lock,
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("Timeout: "));
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    let lines: Vec<String> = std::fs::read_to_string(&record)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 6);
    for pair in lines.chunks(2) {
        let who = pair[0].strip_prefix("enter ").expect("enter first");
        assert_eq!(pair[1], format!("exit {who}"), "no overlap: {lines:?}");
    }
}

/// `medkeeper simulate` runs two simulated hours through the real domain with both policies,
/// prints the markdown report and writes the JSON one.
#[test]
fn simulate_prints_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_medkeeper"))
        .args(["simulate", "--hours", "2", "--data"])
        .arg(dir.path().join("data"))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| priority | target | orders | medkeeper p50 |"),
        "{stdout}"
    );
    for row in [
        "| stat |",
        "| asap |",
        "| urgent |",
        "| routine |",
        "| CT | 3 |",
    ] {
        assert!(stdout.contains(row), "no {row} in {stdout}");
    }
    assert!(stdout.contains("Verdict: medkeeper"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let orders = report["medkeeper"]["orders"].as_u64().unwrap();
    assert!(orders > 0);
    assert_eq!(report["fifo"]["orders"].as_u64(), Some(orders));
    assert_eq!(report["params"]["seed"].as_u64(), Some(1));
}

/// Found from outside: `coord --connect embedded:/mistyped ls /` made a 64 MB engine at the
/// mistyped path and listed an empty tree, as if the hospital were gone. It is refused (status
/// 1) and nothing is created.
#[test]
fn coord_on_an_embedded_directory_that_does_not_exist_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("mistyped").join("coord");
    let target = format!("embedded:{}", missing.display());
    let out = medkeeper(&["coord", "--connect", &target, "ls", "/"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no embedded engine at"), "{err}");
    assert!(!dir.path().join("mistyped").exists(), "nothing is created");
}

/// `store migrate --to` with a password in the URL names `--to` and `--to-password-file`, the
/// flags the command has — not `serve`'s `--store` and `--store-password-file`.
#[test]
fn store_migrate_refuses_a_password_in_to_naming_its_own_flags() {
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("clinical.sqlite");
    std::fs::write(&from, b"").unwrap();
    let out = medkeeper(&[
        "store",
        "migrate",
        "--from",
        &format!("sqlite:{}", from.display()),
        "--to",
        "postgres://u:pw@127.0.0.1:1/medkeeper",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("--to: no password in the URL") && err.contains("--to-password-file"),
        "{err}"
    );
    assert!(!err.contains("--store"), "{err}");
}
