//! Fuzzing FHIR ingestion (issue 19): mutated vital-sign Observations (`POST
//! /fhir/Observation`) and transaction Bundles of them (`POST /fhir`) — fields removed, of the
//! wrong type, extreme values and units, odd references and times, then bytes damaged; wrong
//! content types — and searches with odd parameters, through the router in process. Bad input
//! is a 4xx OperationOutcome: any 5xx, or a panic, fails.
//!
//! `MEDKEEPER_FUZZ_SECONDS` / `MEDKEEPER_FUZZ_CASES` (default 200) / `MEDKEEPER_FUZZ_SEED`, as
//! `scripts/fuzz` sets them; case `i` uses seed + i.

mod fuzz_support;

use fuzz_support::{Budget, InProcess, Rng, Tally, content_type, mutate_bytes, mutate_json};
use serde_json::{Value, json};

fn loinc(code: &str) -> Value {
    json!({"coding": [{"system": "http://loinc.org", "code": code}]})
}

fn vital(patient: &str, code: &str, value: Value, minute: u32) -> Value {
    let mut o = json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system":
            "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": loinc(code),
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": format!("2024-03-01T10:{:02}:00Z", minute % 60),
        "device": {"reference": "Device/monitor-7"},
    });
    for (k, v) in value.as_object().unwrap() {
        o[k] = v.clone();
    }
    o
}

fn quantity(v: f64, ucum: &str) -> Value {
    json!({"valueQuantity": {"value": v, "unit": ucum, "system": "http://unitsofmeasure.org",
        "code": ucum}})
}

/// Valid Observations of `patient`: the starting points of the mutations.
fn observations(patient: &str, minute: u32) -> Vec<Value> {
    vec![
        vital(patient, "8867-4", quantity(72.0, "/min"), minute),
        vital(patient, "9279-1", quantity(18.0, "/min"), minute),
        vital(patient, "59408-5", quantity(97.0, "%"), minute),
        vital(patient, "8310-5", quantity(37.1, "Cel"), minute),
        vital(
            patient,
            "85354-9",
            json!({"component": [
                {"code": loinc("8480-6"), "valueQuantity": {"value": 120, "unit": "mm[Hg]",
                    "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
                {"code": loinc("8462-4"), "valueQuantity": {"value": 80, "unit": "mm[Hg]",
                    "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
            ]}),
            minute,
        ),
    ]
}

fn transaction(entries: Vec<Value>) -> Value {
    json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": entries
            .into_iter()
            .enumerate()
            .map(|(i, r)| json!({
                "fullUrl": format!("urn:uuid:00000000-0000-4000-8000-{i:012}"),
                "resource": r,
                "request": {"method": "POST", "url": "Observation"},
            }))
            .collect::<Vec<_>>(),
    })
}

fn search(rng: &mut Rng, patient: &str) -> String {
    let odd = [
        "",
        "-1",
        "abc",
        "%00",
        "ge2024-01-01",
        "lt99999-99-99",
        "http://loinc.org|8867-4",
        "Patient/..%2F",
        "99999999999999999999",
    ];
    let v = *rng.pick(&odd);
    match rng.below(7) {
        0 => format!("/fhir/Observation?subject=Patient/{patient}&date={v}&code={v}&_count={v}"),
        1 => format!("/fhir/Observation?patient={v}&_sort={v}"),
        2 => format!("/fhir/Patient?identifier={v}&_count={v}"),
        3 => format!("/fhir/RiskAssessment?subject={v}"),
        4 => format!("/fhir/ServiceRequest?patient={v}&status={v}"),
        5 => format!("/fhir/Observation/{v}"),
        _ => format!("/fhir/Task/{v}"),
    }
}

async fn case(s: &InProcess, seed: u64, tally: &mut Tally) {
    let mut rng = Rng::new(seed);
    if rng.below(8) == 0 {
        let path = search(&mut rng, &s.patient);
        let a = s.send("GET", &path, None, Vec::new()).await;
        assert!(
            a.status < 500,
            "GET {path}: {} {}: seed {seed}",
            a.status,
            a.text
        );
        tally.add(format!("search {}xx", a.status / 100));
        return;
    }
    let minute = rng.below(60) as u32;
    let all = observations(&s.patient, minute);
    let bundle = rng.below(3) == 0;
    let mut v = if bundle {
        let n = 1 + rng.below(all.len() as u64) as usize;
        transaction(all.into_iter().take(n).collect())
    } else {
        rng.pick(&all).clone()
    };
    let mut done = Vec::new();
    for _ in 0..1 + rng.below(3) {
        done.push(mutate_json(&mut v, &mut rng));
    }
    let mut bytes = serde_json::to_vec(&v).unwrap();
    if rng.below(5) == 0 {
        done.push(mutate_bytes(&mut bytes, &mut rng));
    }
    let ct = content_type(&mut rng, "application/fhir+json");
    let path = if bundle { "/fhir" } else { "/fhir/Observation" };
    let a = s.send("POST", path, ct, bytes).await;
    assert!(
        a.status < 500,
        "POST {path} answered {} {}: seed {seed}, {done:?}",
        a.status,
        a.text
    );
    tally.add(format!(
        "{} {}xx",
        if bundle { "bundle" } else { "observation" },
        a.status / 100
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_fhir_ingestion() {
    let s = InProcess::start().await;
    let mut tally = Tally::default();
    let budget = Budget::from_env(200);
    let handle = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        budget.run("fhir", |seed| handle.block_on(case(&s, seed, &mut tally)));
    });
    eprintln!("fuzz fhir outcomes: {:?}", tally.0);
}
