//! Fuzzing recovery (issue 19): the engine's log and snapshots under random corruption and
//! truncation. Each case copies a data directory written by a known sequence of operations,
//! damages it (bytes flipped, overwritten or zeroed, files truncated, deleted, renamed, garbage
//! appended, a bogus newest snapshot added), and reopens it. The engine must never panic, and
//! either
//! - recover a state equal to the state after some prefix of the operations — every node it
//!   returns was written intact, nothing from a damaged record is accepted — and then take a
//!   new write that survives another reopen, or
//! - refuse to open with an error that says what is wrong (`Corrupt` or `Io`, with a message).
//!
//! A seeded loop rather than cargo-fuzz (no nightly toolchain here): `MEDKEEPER_FUZZ_SECONDS`
//! runs cases for that long, else `MEDKEEPER_FUZZ_CASES` cases (default 24, a few seconds);
//! `MEDKEEPER_FUZZ_SEED` fixes the first case's seed (case `i` uses seed + i, so a failure is
//! replayed with `MEDKEEPER_FUZZ_SEED=<its seed> MEDKEEPER_FUZZ_CASES=1`). `scripts/fuzz` sets
//! them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use medkeeper_coord::{CreateMode, CreateOptions, Error, Session};
use medkeeper_embedded::{Engine, EngineConfig, OpenError, SessionOptions};

/// The tree below `/f` after some prefix of the operations (`None`: `/f` not created yet).
type State = Option<BTreeMap<String, Vec<u8>>>;

use medkeeper_testkit::fuzz::{Budget, Rng};

const OPS: usize = 320;

fn config(dir: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    // Small segments and frequent snapshots: several of each to damage.
    c.segment_size = 16 * 1024;
    c.snapshot_every = 60;
    c
}

/// The data a node gets at operation `i` (varied lengths, recognisable bytes).
fn payload(i: usize, rev: u8) -> Vec<u8> {
    let len = (i * 37 + usize::from(rev) * 11) % 150;
    (0..len)
        .map(|k| (i as u8).wrapping_mul(31) ^ (k as u8) ^ rev)
        .collect()
}

/// The operations, as what they do to the model; `apply` runs them on a session.
enum Step {
    Create(String, Vec<u8>),
    Set(String, Vec<u8>),
    Delete(String),
}

fn steps() -> Vec<Step> {
    let mut v = vec![Step::Create("/f".into(), b"root".to_vec())];
    let mut live: Vec<String> = Vec::new();
    for i in 1..OPS {
        if i % 7 == 0 && !live.is_empty() {
            let p = live[(i * 13) % live.len()].clone();
            v.push(Step::Set(p, payload(i, 1)));
        } else if i % 11 == 0 && !live.is_empty() {
            let p = live.remove((i * 5) % live.len());
            v.push(Step::Delete(p));
        } else {
            let p = format!("/f/n{i:04}");
            live.push(p.clone());
            v.push(Step::Create(p, payload(i, 0)));
        }
    }
    v
}

/// The model's state after each prefix of `steps` (index k: after k steps).
fn states(steps: &[Step]) -> Vec<State> {
    let mut out = vec![None];
    let mut m: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for s in steps {
        match s {
            Step::Create(p, d) if p == "/f" => {
                let _ = d;
            }
            Step::Create(p, d) | Step::Set(p, d) => {
                m.insert(p.clone(), d.clone());
            }
            Step::Delete(p) => {
                m.remove(p);
            }
        }
        out.push(Some(m.clone()));
    }
    out
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Writes the template directory: every step acknowledged (durable) in order.
fn write_template(dir: &Path, steps: &[Step]) {
    let rt = runtime();
    let engine = Engine::open(config(dir)).unwrap();
    rt.block_on(async {
        let s = engine.connect(SessionOptions::default()).await;
        let opts = CreateOptions::new(CreateMode::Persistent);
        for step in steps {
            match step {
                Step::Create(p, d) => drop(s.create(p, d, &opts).await.unwrap()),
                Step::Set(p, d) => drop(s.set_data(p, d, -1).await.unwrap()),
                Step::Delete(p) => s.delete(p, -1).await.unwrap(),
            }
        }
        s.close().await;
    });
    engine.shutdown();
    drop(engine);
}

/// The tree below `/f` as a session of `engine` reads it.
fn read_state(rt: &tokio::runtime::Runtime, engine: &Engine) -> Result<State, Error> {
    rt.block_on(async {
        let s = engine.connect(SessionOptions::default()).await;
        let result = async {
            let names = match s.get_children("/f").await {
                Ok(n) => n,
                Err(Error::NoNode) => return Ok(None),
                Err(e) => return Err(e),
            };
            let mut m = BTreeMap::new();
            for n in names {
                let p = format!("/f/{n}");
                m.insert(p.clone(), s.get_data(&p).await?.0);
            }
            Ok(Some(m))
        }
        .await;
        s.close().await;
        result
    })
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with("log.") || n.starts_with("snapshot.")
        })
        .collect();
    v.sort();
    v
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The bytes of a file that matter: up to its last non-zero byte (log segments are
/// preallocated with zeros), plus a little of the zeros after.
fn used_len(data: &[u8]) -> usize {
    let last = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    (last + 16).min(data.len())
}

/// Damages the directory; returns what was done, for the failure message.
fn mutate(dir: &Path, rng: &mut Rng) -> Vec<String> {
    let mut done = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let fs = files(dir);
        if fs.is_empty() {
            break;
        }
        let f = &fs[rng.below(fs.len() as u64) as usize];
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let mut data = std::fs::read(f).unwrap();
        let used = used_len(&data).max(1);
        match rng.below(9) {
            0..=2 => {
                let n = 1 + rng.below(8);
                for _ in 0..n {
                    let at = rng.below(used as u64) as usize;
                    if at < data.len() {
                        data[at] ^= 1 << rng.below(8);
                    }
                }
                std::fs::write(f, &data).unwrap();
                done.push(format!("flip {n} bits in {name}"));
            }
            3 => {
                let at = rng.below(used as u64 + 1) as usize;
                data.truncate(at);
                std::fs::write(f, &data).unwrap();
                done.push(format!("truncate {name} at {at}"));
            }
            4 => {
                let at = rng.below(used as u64) as usize;
                let len = (1 + rng.below(64) as usize).min(data.len().saturating_sub(at));
                for b in &mut data[at..at + len] {
                    *b = 0;
                }
                std::fs::write(f, &data).unwrap();
                done.push(format!("zero {len} bytes of {name} at {at}"));
            }
            5 => {
                let at = rng.below(used as u64) as usize;
                let len = (1 + rng.below(64) as usize).min(data.len().saturating_sub(at));
                for b in &mut data[at..at + len] {
                    *b = rng.next() as u8;
                }
                std::fs::write(f, &data).unwrap();
                done.push(format!("overwrite {len} bytes of {name} at {at}"));
            }
            6 => {
                std::fs::remove_file(f).unwrap();
                done.push(format!("delete {name}"));
            }
            7 => {
                // Garbage after the end, or a bogus newest snapshot.
                if rng.below(2) == 0 {
                    let extra: Vec<u8> =
                        (0..1 + rng.below(200)).map(|_| rng.next() as u8).collect();
                    data.truncate(used);
                    data.extend_from_slice(&extra);
                    std::fs::write(f, &data).unwrap();
                    done.push(format!("append {} bytes to {name}", extra.len()));
                } else {
                    let mut bogus = b"MKSNAP01".to_vec();
                    bogus.extend((0..rng.below(64)).map(|_| rng.next() as u8));
                    std::fs::write(dir.join("snapshot.00000000ffffffff"), bogus).unwrap();
                    done.push("add a bogus newest snapshot".into());
                }
            }
            _ => {
                // A file under another zxid's name.
                let prefix = if name.starts_with("log.") {
                    "log."
                } else {
                    "snapshot."
                };
                let to = dir.join(format!("{prefix}{:016x}", rng.below(OPS as u64 + 8)));
                std::fs::rename(f, &to).unwrap();
                done.push(format!(
                    "rename {name} to {}",
                    to.file_name().unwrap().to_string_lossy()
                ));
            }
        }
    }
    done
}

/// One case: copy, damage, reopen, check; then write and reopen again.
fn case(template: &Path, states: &[State], seed: u64) -> &'static str {
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("coord");
    copy_dir(template, &dir);
    let done = mutate(&dir, &mut rng);
    let ctx = format!("seed {seed}: {done:?}");
    let rt = runtime();
    let opened = std::panic::catch_unwind(|| Engine::open(config(&dir)))
        .unwrap_or_else(|_| panic!("Engine::open panicked; {ctx}"));
    let engine = match opened {
        Ok(e) => e,
        Err(e @ (OpenError::Corrupt(_) | OpenError::Io { .. })) => {
            let msg = e.to_string();
            assert!(msg.len() > 20, "a clear error, not {msg:?}; {ctx}");
            return "refused";
        }
        Err(e) => panic!("unexpected open error {e:?}; {ctx}"),
    };
    let state = read_state(&rt, &engine).unwrap_or_else(|e| panic!("read: {e:?}; {ctx}"));
    let prefix = states.iter().rposition(|s| *s == state).unwrap_or_else(|| {
        panic!("recovered a state no prefix of the writes had: {state:?}; {ctx}")
    });
    // The recovered engine takes new writes, durably.
    rt.block_on(async {
        let s = engine.connect(SessionOptions::default()).await;
        s.create(
            "/after",
            b"new",
            &CreateOptions::new(CreateMode::Persistent),
        )
        .await
        .unwrap_or_else(|e| panic!("write after recovery to prefix {prefix}: {e:?}; {ctx}"));
        s.close().await;
    });
    engine.shutdown();
    drop(engine);
    let engine = std::panic::catch_unwind(|| Engine::open(config(&dir)))
        .unwrap_or_else(|_| panic!("second open panicked; {ctx}"))
        .unwrap_or_else(|e| panic!("second open after recovery failed: {e}; {ctx}"));
    assert_eq!(
        read_state(&rt, &engine).unwrap(),
        state,
        "state changed across a clean reopen; {ctx}"
    );
    rt.block_on(async {
        let s = engine.connect(SessionOptions::default()).await;
        assert_eq!(s.get_data("/after").await.unwrap().0, b"new", "{ctx}");
        s.close().await;
    });
    engine.shutdown();
    drop(engine);
    if prefix == states.len() - 1 {
        "recovered everything"
    } else {
        "recovered a prefix"
    }
}

#[test]
fn fuzz_recovery_from_corrupt_and_truncated_files() {
    let steps = steps();
    let states = states(&steps);
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    write_template(&template, &steps);
    let names: Vec<String> = files(&template)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().filter(|n| n.starts_with("log.")).count() >= 2
            && names.iter().any(|n| n.starts_with("snapshot.")),
        "the template has segments and snapshots to damage: {names:?}"
    );
    // The undamaged template recovers the whole history.
    case_clean(&template, &states);
    let mut outcomes: BTreeMap<&str, u64> = BTreeMap::new();
    Budget::from_env(24).run("recovery", |seed| {
        *outcomes.entry(case(&template, &states, seed)).or_default() += 1;
    });
    eprintln!("fuzz recovery outcomes: {outcomes:?}");
}

/// The template itself reopens to the final state.
fn case_clean(template: &Path, states: &[State]) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("coord");
    copy_dir(template, &dir);
    let rt = runtime();
    let engine = Engine::open(config(&dir)).unwrap();
    assert_eq!(read_state(&rt, &engine).unwrap(), states[states.len() - 1]);
    engine.shutdown();
    drop(engine);
}
