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
