//! Crash safety: a child process writes in a loop and reports every acknowledged write; the test
//! kills it with SIGKILL at random moments, reopens the engine, and checks that every
//! acknowledged write is present and the tree is consistent.
//!
//! The child is this same test binary, re-run with `MEDKEEPER_CRASH_CHILD=<dir>` and filtered to
//! the `crash_child` test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use medkeeper_coord::{CreateMode, CreateOptions, Op, OpResult, Session, SessionExt};
use medkeeper_embedded::{Engine, EngineConfig, SessionOptions};

const WRITERS: usize = 8;

fn config(dir: &str) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.segment_size = 1 << 20;
    c.snapshot_every = 500; // snapshots and log rolls happen during the kills too
    c
}

/// The child: writes forever, printing `ack ...` after each acknowledged write.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("MEDKEEPER_CRASH_CHILD") else {
        return; // only meaningful when run by `kill_9_during_writes_loses_no_acknowledged_write`
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let engine = Engine::open(config(&dir)).unwrap();
        let s = Arc::new(engine.connect(SessionOptions::default()).await);
        s.ensure_path("/crash/seq").await.unwrap();
        s.ensure_path("/crash/eph").await.unwrap();
        s.ensure_path("/crash/counters").await.unwrap();
        let out = Arc::new(Mutex::new(std::io::stdout()));
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let s = s.clone();
            let out = out.clone();
            tasks.push(tokio::spawn(async move {
                let counter = format!("/crash/counters/w{w}");
                let start: u64 = match s.get_data(&counter).await {
                    Ok((d, _)) => String::from_utf8(d).unwrap().parse().unwrap(),
                    Err(_) => {
                        s.create(&counter, b"0", &CreateOptions::new(CreateMode::Persistent))
                            .await
                            .unwrap();
                        0
                    }
                };
                for i in start + 1.. {
                    let value = format!("w{w}-{i}");
                    // A multi: a sequential node and the writer's counter, atomically.
                    let res = s
                        .multi(&[
                            Op::create(
                                "/crash/seq/n-",
                                value.as_bytes(),
                                CreateOptions::new(CreateMode::PersistentSequential),
                            ),
                            Op::set_data(&counter, i.to_string().into_bytes(), -1),
                        ])
                        .await
                        .unwrap();
                    let OpResult::Create { path } = &res[0] else {
                        panic!("create result")
                    };
                    // An ephemeral too, which must never survive the crash.
                    s.create(
                        &format!("/crash/eph/w{w}-"),
                        b"",
                        &CreateOptions::new(CreateMode::EphemeralSequential),
                    )
                    .await
                    .unwrap();
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ack {path} {value} {w} {i}").unwrap();
                    o.flush().unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
}

#[test]
fn kill_9_during_writes_loses_no_acknowledged_write() {
    if std::env::var("MEDKEEPER_CRASH_CHILD").is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let dir_s = dir.path().to_str().unwrap().to_string();
    let exe = std::env::current_exe().unwrap();
    // Acknowledged: path -> value, and the highest counter acknowledged per writer.
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut acked_counter = [0u64; WRITERS];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let kills = 24;
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env("MEDKEEPER_CRASH_CHILD", &dir_s)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if line.starts_with("ack ") {
                        lines.lock().unwrap().push(line);
                    }
                }
            })
        };
        // Wait for the child to be writing, then kill it at a random moment.
        let t0 = std::time::Instant::now();
        while lines.lock().unwrap().is_empty() && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
        std::thread::sleep(Duration::from_millis(20 + nanos % 250));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        reader.join().unwrap();
        let lines = std::mem::take(&mut *lines.lock().unwrap());
        assert!(
            !lines.is_empty(),
            "round {round}: the child acknowledged nothing"
        );
        for l in &lines {
            let f: Vec<&str> = l.split(' ').collect();
            acked.insert(f[1].to_string(), f[2].to_string());
            let (w, i): (usize, u64) = (f[3].parse().unwrap(), f[4].parse().unwrap());
            acked_counter[w] = acked_counter[w].max(i);
        }

        // Recover and check.
        rt.block_on(async {
            let engine = Engine::open(config(&dir_s)).unwrap();
            let s = engine.connect(SessionOptions::default()).await;
            for (p, v) in &acked {
                let (data, _) = s
                    .get_data(p)
                    .await
                    .unwrap_or_else(|e| panic!("round {round}: acknowledged {p} lost: {e}"));
                assert_eq!(&String::from_utf8(data).unwrap(), v, "round {round}: {p}");
            }
            for (w, &n) in acked_counter.iter().enumerate() {
                if n == 0 {
                    continue;
                }
                let (d, _) = s.get_data(&format!("/crash/counters/w{w}")).await.unwrap();
                let c: u64 = String::from_utf8(d).unwrap().parse().unwrap();
                assert!(
                    c >= n,
                    "round {round}: writer {w} counter {c} < acknowledged {n}"
                );
            }
            // No ephemeral of the dead process survives.
            assert!(
                s.get_children("/crash/eph").await.unwrap().is_empty(),
                "round {round}: ephemerals left"
            );
            // Stats agree with the children, and the sequence counter is past every node.
            let (children, st) = s.get_children_with_stat("/crash/seq").await.unwrap();
            assert_eq!(st.num_children as usize, children.len());
            let max_seq = children
                .iter()
                .filter_map(|c| medkeeper_coord::path::parse_sequence(c))
                .max()
                .unwrap_or(-1);
            assert!(
                (st.cversion + st.num_children) / 2 > max_seq,
                "round {round}: sequence counter behind"
            );
            let (_, eph) = s.get_data("/crash/eph").await.unwrap();
            assert_eq!(eph.num_children, 0);
            s.close().await;
            let stats = engine.stats();
            assert_eq!(stats.zxid, stats.durable_zxid);
        });
    }
    eprintln!(
        "{kills} kills, {} acknowledged writes, all present",
        acked.len()
    );
}
