//! Fuzzing the hospital file parser (issue 19): `HospitalConfig::parse` on mutations of the
//! demo hospital's TOML — bytes flipped, inserted and deleted, lines duplicated, dropped and
//! swapped, values replaced by awkward ones (huge and negative numbers, overflowing durations,
//! empty, long and non-ASCII strings, wrong types, unbalanced brackets) — must answer `Ok` or
//! `Err(Config)`, never panic; so must `parse_duration` on arbitrary text. A file that parses
//! has been validated: every pool and unit name in it is a safe znode name.
//!
//! A seeded loop (no nightly toolchain for cargo-fuzz): `MEDKEEPER_FUZZ_SECONDS` runs cases for
//! that long, else `MEDKEEPER_FUZZ_CASES` cases (default 300); `MEDKEEPER_FUZZ_SEED` fixes the
//! first seed (case `i` uses seed + i). `scripts/fuzz` sets them.

use std::collections::BTreeMap;
use std::time::Duration;

use medkeeper_hospital::Error;
use medkeeper_hospital::config::{HospitalConfig, parse_duration};
use medkeeper_hospital::model::validate_name;

use medkeeper_testkit::fuzz::{Budget, Rng};

/// Values that stress the validation: out of range, overflowing, wrong type, odd text.
const AWKWARD: &[&str] = &[
    "\"\"",
    "\"0s\"",
    "\"0ms\"",
    "\"-5m\"",
    "\"99999999999999999999h\"",
    "\"18446744073709551615ms\"",
    "\"18446744073709551h\"",
    "\"1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h1h\"",
    "\"5x\"",
    "\"m\"",
    "0",
    "-1",
    "9223372036854775807",
    "-9223372036854775808",
    "1e308",
    "nan",
    "inf",
    "true",
    "[]",
    "[[]]",
    "{}",
    "{ name = \"\" }",
    "\"lock\"",
    "\"queue\"",
    "\".\"",
    "\"..\"",
    "\"a/b\"",
    "\"\\u0000\"",
    "\"é\"",
    "\"患者\"",
    "\"MRI-1\"",
    "\"requeue\"",
    "\"no-show\"",
    "'''\n'''",
];

fn long_name(rng: &mut Rng) -> String {
    let n = [63, 64, 65, 200, 5000][rng.below(5) as usize];
    format!("\"{}\"", "A".repeat(n))
}

/// One mutation of `text`; returns what was done.
fn mutate_once(text: &mut Vec<u8>, rng: &mut Rng) -> String {
    let line_starts = |t: &[u8]| -> Vec<usize> {
        std::iter::once(0)
            .chain(
                t.iter()
                    .enumerate()
                    .filter(|(_, b)| **b == b'\n')
                    .map(|(i, _)| i + 1),
            )
            .filter(|&i| i < t.len())
            .collect()
    };
    if text.is_empty() {
        text.extend_from_slice(b"name = ");
        return "refill an emptied file".into();
    }
    let len = text.len() as u64;
    match rng.below(10) {
        0 => {
            let at = rng.below(len) as usize % text.len().max(1);
            if let Some(b) = text.get_mut(at) {
                *b ^= 1 << rng.below(8);
            }
            format!("flip a bit at {at}")
        }
        1 => {
            let at = rng.below(len + 1) as usize;
            const BYTES: &[u8] = b"[]{}=\",.'#\n\\ 0-_";
            let b = BYTES[rng.below(BYTES.len() as u64) as usize];
            text.insert(at.min(text.len()), b);
            format!("insert {:?} at {at}", b as char)
        }
        2 => {
            let at = rng.below(len) as usize;
            let n = (1 + rng.below(16) as usize).min(text.len().saturating_sub(at));
            text.drain(at..at + n);
            format!("delete {n} bytes at {at}")
        }
        3..=5 => {
            // Replace the value of a `key = value` line (or an inline table's value).
            let starts = line_starts(text);
            let line = starts[rng.below(starts.len() as u64) as usize];
            let end = text[line..]
                .iter()
                .position(|&b| b == b'\n')
                .map_or(text.len(), |e| line + e);
            let Some(eq) = text[line..end].iter().position(|&b| b == b'=') else {
                return "no value on the chosen line".into();
            };
            let value = if rng.below(6) == 0 {
                long_name(rng)
            } else {
                AWKWARD[rng.below(AWKWARD.len() as u64) as usize].to_string()
            };
            let from = line + eq + 1;
            // Either the whole rest of the line, or up to the next comma / brace.
            let to = if rng.below(2) == 0 {
                end
            } else {
                text[from..end]
                    .iter()
                    .position(|&b| b == b',' || b == b'}')
                    .map_or(end, |p| from + p)
            };
            text.splice(from..to, format!(" {value}").into_bytes());
            format!("value at line offset {line} := {value}")
        }
        6 => {
            let starts = line_starts(text);
            let i = rng.below(starts.len() as u64) as usize;
            let end = starts.get(i + 1).copied().unwrap_or(text.len());
            let copy = text[starts[i]..end].to_vec();
            let at = starts[rng.below(starts.len() as u64) as usize];
            text.splice(at..at, copy);
            format!("duplicate line {i}")
        }
        7 => {
            let starts = line_starts(text);
            let i = rng.below(starts.len() as u64) as usize;
            let end = starts.get(i + 1).copied().unwrap_or(text.len());
            text.drain(starts[i]..end);
            format!("drop line {i}")
        }
        8 => {
            // Duplicate a whole table ([[equipment]] ... up to the next table).
            let s = String::from_utf8_lossy(text).into_owned();
            let tables: Vec<usize> = s.match_indices("\n[").map(|(i, _)| i + 1).collect();
            if tables.is_empty() {
                return "no table".into();
            }
            let k = rng.below(tables.len() as u64) as usize;
            let end = tables.get(k + 1).copied().unwrap_or(s.len());
            let copy = s[tables[k]..end].to_string();
            text.extend_from_slice(b"\n");
            text.extend_from_slice(copy.as_bytes());
            format!("duplicate table {k}")
        }
        _ => {
            let cut = rng.below(len + 1) as usize;
            text.truncate(cut);
            format!("truncate at {cut}")
        }
    }
}

/// What a parsed (hence validated) file must satisfy: every pool and unit name is a safe znode
/// name (no `/`, `..`, control characters: they become paths in the tree).
fn check_valid(c: &HospitalConfig, ctx: &str) {
    for p in &c.pools {
        validate_name("pool", p.pool.name()).unwrap_or_else(|e| panic!("{e}; {ctx}"));
        for u in &p.units {
            validate_name("unit", &u.name).unwrap_or_else(|e| panic!("{e}; {ctx}"));
        }
    }
}

fn case(seed: u64) -> &'static str {
    let mut rng = Rng::new(seed);
    let mut text = HospitalConfig::DEMO_TOML.as_bytes().to_vec();
    let mut done = Vec::new();
    for _ in 0..1 + rng.below(4) {
        done.push(mutate_once(&mut text, &mut rng));
    }
    let text = String::from_utf8_lossy(&text).into_owned();
    let ctx = format!("seed {seed}: {done:?}");
    let parsed = std::panic::catch_unwind(|| HospitalConfig::parse(&text))
        .unwrap_or_else(|_| panic!("HospitalConfig::parse panicked; {ctx}\n{text}"));
    // Arbitrary duration text too.
    let d: String = (0..rng.below(24))
        .map(|_| b"0123456789hmsx -"[rng.below(16) as usize] as char)
        .collect();
    std::panic::catch_unwind(|| parse_duration(&d))
        .unwrap_or_else(|_| panic!("parse_duration({d:?}) panicked; seed {seed}"));
    match parsed {
        Ok(c) => {
            check_valid(&c, &ctx);
            "accepted"
        }
        Err(Error::Config(msg)) => {
            assert!(!msg.is_empty(), "an empty error; {ctx}");
            "refused"
        }
        Err(e) => panic!("not a configuration error: {e:?}; {ctx}"),
    }
}

#[test]
fn fuzz_hospital_file_parser() {
    let mut outcomes: BTreeMap<&str, u64> = BTreeMap::new();
    Budget::from_env(300).run("hospital-config", |seed| {
        *outcomes.entry(case(seed)).or_default() += 1;
    });
    eprintln!("fuzz hospital-config outcomes: {outcomes:?}");
}

/// Durations whose milliseconds overflow are refused, not wrapped.
#[test]
fn overflowing_durations_are_refused() {
    for d in [
        "99999999999999999999h",
        "18446744073709551615ms1ms",
        "5124095576030431h",
        "18446744073709551h",
    ] {
        assert_eq!(parse_duration(d), None, "{d}");
    }
    assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
}
