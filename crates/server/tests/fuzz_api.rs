//! Fuzzing the HTTP API's request bodies (issue 19): mutated JSON — keys removed and added,
//! values of the wrong type, extremes, odd and long text, deep nesting, then bytes flipped,
//! cut and inserted; wrong content types; odd ids in paths and query strings — sent to the
//! router in process (`tower::ServiceExt::oneshot`) with an admin token. Bad input is a 4xx:
//! any 5xx, or a panic, fails (docs/api.md: "bad input is a 4xx, never a 5xx").
//!
//! `MEDKEEPER_FUZZ_SECONDS` / `MEDKEEPER_FUZZ_CASES` (default 200) / `MEDKEEPER_FUZZ_SEED`, as
//! `scripts/fuzz` sets them; case `i` uses seed + i.

mod fuzz_support;

use fuzz_support::{
    Budget, InProcess, Rng, Tally, awkward_segment, content_type, mutate_bytes, mutate_json,
};
use serde_json::{Value, json};

/// What the API takes, with a valid body for each: the starting points of the mutations.
fn corpus(s: &InProcess) -> Vec<(&'static str, String, Value)> {
    let (p, o) = (&s.patient, &s.order);
    vec![
        (
            "POST",
            "/api/patients".into(),
            json!({"name": "Bo Example", "birth_date": "1980-05-17"}),
        ),
        (
            "POST",
            "/api/orders".into(),
            json!({"patient": p, "pool": "CT", "priority": "urgent", "capabilities": ["contrast"],
                "reason": "pain"}),
        ),
        (
            "POST",
            format!("/api/orders/{o}/priority"),
            json!({"priority": "stat"}),
        ),
        (
            "POST",
            format!("/api/orders/{o}/call"),
            json!({"unit": "MRI-1"}),
        ),
        (
            "POST",
            format!("/api/orders/{o}/report"),
            json!({"text": "No abnormality."}),
        ),
        ("POST", format!("/api/orders/{o}/cancel"), json!({})),
        ("POST", format!("/api/orders/{o}/start"), json!({})),
        ("POST", format!("/api/orders/{o}/complete"), json!({})),
        ("POST", format!("/api/orders/{o}/no-show"), json!({})),
        (
            "PUT",
            "/api/pools/MRI/units/MRI-2/status".into(),
            json!({"status": "maintenance"}),
        ),
        (
            "POST",
            "/api/tokens".into(),
            json!({"role": "patient", "patient": p, "label": "fuzz"}),
        ),
        (
            "POST",
            format!("/api/patients/{p}/identifiers"),
            json!({"system": "urn:oid:1.2.3", "value": "MRN-1"}),
        ),
        (
            "PUT",
            format!("/api/patients/{p}/settings"),
            json!({"spo2_scale": 2, "ward": "ward-7"}),
        ),
        (
            "POST",
            "/api/alarms/pool-down@equipment.XRAY@1/ack".into(),
            json!({"note": "seen"}),
        ),
        (
            "POST",
            "/api/alarms/pool-down@equipment.XRAY@1/shelve".into(),
            json!({"for": "1h", "reason": "engineer on site"}),
        ),
    ]
}

/// Reads with query strings: odd values for each parameter.
fn query(rng: &mut Rng, s: &InProcess) -> String {
    let p = &s.patient;
    let odd = [
        "",
        "-1",
        "99999999999999999999",
        "abc",
        "%00",
        "1e3",
        "%FF",
        "a&b=c",
    ];
    let v = *rng.pick(&odd);
    match rng.below(6) {
        0 => format!("/api/audit?patient={v}&since_ms={v}&limit={v}"),
        1 => format!("/api/patients/{p}/vitals?since_ms={v}&until_ms={v}&code={v}&limit={v}"),
        2 => format!("/api/patients/{p}/news2?since_ms={v}"),
        3 => format!("/api/tree?path={v}"),
        4 => format!("/api/pools/{v}/queue"),
        _ => format!("/api/orders/{}", awkward_segment(rng)),
    }
}

async fn case(s: &InProcess, seed: u64, tally: &mut Tally) {
    let mut rng = Rng::new(seed);
    let corpus = corpus(s);
    let (method, mut path, mut body, ct, done) = if rng.below(8) == 0 {
        let path = query(&mut rng, s);
        (
            "GET",
            path.clone(),
            Vec::new(),
            None,
            vec![format!("GET {path}")],
        )
    } else {
        let (method, path, valid) = rng.pick(&corpus).clone();
        let mut v = valid;
        let mut done = Vec::new();
        for _ in 0..1 + rng.below(3) {
            done.push(mutate_json(&mut v, &mut rng));
        }
        let mut bytes = serde_json::to_vec(&v).unwrap();
        if rng.below(4) == 0 {
            done.push(mutate_bytes(&mut bytes, &mut rng));
        }
        let ct = content_type(&mut rng, "application/json");
        (method, path, bytes, ct, done)
    };
    if method != "GET" && rng.below(10) == 0 {
        // An odd id in place of the real one.
        let seg = awkward_segment(&mut rng);
        path = path.replace(&s.order, &seg).replace(&s.patient, &seg);
    }
    if rng.below(40) == 0 {
        body = vec![b' '; 70 * 1024]; // over the body limit
    }
    let a = s.send(method, &path, ct, body).await;
    assert!(
        a.status < 500,
        "{method} {path} answered {} {}: seed {seed}, {done:?}",
        a.status,
        a.text
    );
    tally.add(format!("{}xx", a.status / 100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_api_request_bodies() {
    let s = InProcess::start().await;
    let mut tally = Tally::default();
    let budget = Budget::from_env(200);
    // The budget's loop is synchronous: run each case to completion on this runtime.
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        budget.run("api", |seed| handle.block_on(case(&s, seed, &mut tally)));
    });
    eprintln!("fuzz api outcomes: {:?}", tally.0);
}
