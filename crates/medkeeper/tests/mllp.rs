//! Issue 15, item 1b: vital signs in HL7 v2 ORU^R01 over MLLP, sent to `medkeeper serve
//! --mllp-listen` by a client nobody here wrote — PyPI `hl7` 0.4.5 (`hl7.client.MLLPClient`
//! and its `mllp_send` command), installed by scripts/hl7-client into a virtualenv. Without
//! it the test is skipped with a message, except under CI (`CI` set), where it fails.
//!
//! IHE PCD-01 messages (MDC codes, as bedside monitors send) and LOINC-coded ones are
//! acknowledged AA and stored; an impossible value and an unknown patient get AE with an ERR
//! segment and store nothing; garbage and other message types get AR.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use medkeeper_hospital::PatientId;
use medkeeper_hospital::store::{AuditQuery, ClinicalStore, ObservationQuery, SqliteStore};
use medkeeper_hospital::vitals::VitalCode;
use serde_json::json;
use support::{Serve, agent, call};

/// A free loopback port (bound and let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The virtualenv's python with `hl7` importable, or `None`.
fn hl7_python() -> Option<PathBuf> {
    let venv = match std::env::var_os("MEDKEEPER_HL7_VENV") {
        Some(v) => PathBuf::from(v),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?
            .join("medkeeper/hl7-venv"),
    };
    let python = venv.join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import hl7.client"])
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(python)
}

/// Sends each message on one connection with `hl7.client.MLLPClient`; the ACKs.
const SEND_ALL: &str = r#"
import json, sys
import hl7.client
req = json.load(sys.stdin)
acks = []
with hl7.client.MLLPClient(req["host"], req["port"]) as client:
    for m in req["messages"]:
        acks.append(client.send_message(m).decode("utf-8"))
print(json.dumps(acks))
"#;

fn send_all(python: &Path, port: u16, messages: &[String]) -> Vec<String> {
    use std::io::Write;
    let mut child = Command::new(python)
        .args(["-c", SEND_ALL])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let req = json!({"host": "127.0.0.1", "port": port, "messages": messages});
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the python client failed");
    let acks: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    acks.into_iter()
        .map(|a| {
            assert!(
                a.starts_with('\u{b}') && a.ends_with("\u{1c}\r"),
                "not MLLP framed: {a:?}"
            );
            a.trim_matches(['\u{b}', '\u{1c}', '\r']).to_string()
        })
        .collect()
}

/// The segment of `ack` starting with `id|`.
fn segment<'a>(ack: &'a str, id: &str) -> Option<&'a str> {
    ack.split('\r').find(|s| s.starts_with(&format!("{id}|")))
}

/// MSA-1 and MSA-2.
fn msa(ack: &str) -> (String, String) {
    let m = segment(ack, "MSA").unwrap_or_else(|| panic!("no MSA in {ack:?}"));
    let f: Vec<&str> = m.split('|').collect();
    (f[1].to_string(), f.get(2).unwrap_or(&"").to_string())
}

/// ERR-3's code.
fn err_code(ack: &str) -> String {
    let e = segment(ack, "ERR").unwrap_or_else(|| panic!("no ERR in {ack:?}"));
    let f: Vec<&str> = e.split('|').collect();
    f[3].split('^').next().unwrap().to_string()
}

/// An IHE PCD-01 ORU^R01 from a bedside monitor: MDC codes and units, an equipment id in
/// OBX-18, a device header and a parameter medkeeper does not score.
fn pcd01(control: &str, pid3: &str, spo2: &str) -> String {
    [
        format!(
            "MSH|^~\\&|BEDMON^0123456789ABCDEF^EUI-64|ICU|MEDKEEPER|HOSP|20240301101500+0100||ORU^R01^ORU_R01|{control}|P|2.6|||NE|AL||UNICODE UTF-8|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
        ),
        format!("PID|||{pid3}||EXAMPLE^ANN^^^^^L"),
        "PV1||I|4WEST^12^B".into(),
        "OBR|1|X1^BEDMON|X1^BEDMON|182777000^monitoring of patient^SCT|||20240301101400+0100".into(),
        "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X".into(),
        format!("OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|{spo2}|262688^MDC_DIM_PERCENT^MDC|||||R|||20240301101400+0100||||0123456789ABCDEF^EUI-64"),
        "OBX|3|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.2|72|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R|||20240301101400+0100||||0123456789ABCDEF^EUI-64".into(),
        "OBX|4|NM|151562^MDC_RESP_RATE^MDC|1.1.1.3|16|264928^MDC_DIM_RESP_PER_MIN^MDC|||||R|||20240301101400+0100||||0123456789ABCDEF^EUI-64".into(),
        "OBX|5|NM|150344^MDC_TEMP^MDC|1.1.1.4|37.1|268192^MDC_DIM_DEGC^MDC|||||R|||20240301101400+0100||||0123456789ABCDEF^EUI-64".into(),
        "OBX|6|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC|1.1.1.5|120|266016^MDC_DIM_MMHG^MDC|||||R|||20240301101400+0100||||0123456789ABCDEF^EUI-64".into(),
        "OBX|7|NM|148066^MDC_ECG_V_P_C_RATE^MDC|1.1.1.6|0|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R|||20240301101400+0100".into(),
        String::new(),
    ]
    .join("\r")
}

/// A LOINC-coded ORU^R01 from an EHR (UCUM units, the medkeeper id itself in PID-3).
fn loinc(control: &str, patient: &str) -> String {
    [
        format!("MSH|^~\\&|EHR|WARDS|||20240301111500||ORU^R01|{control}|P|2.5.1"),
        format!("PID|||{patient}"),
        "OBR|1||||||202403011110".into(),
        "OBX|1|NM|8310-5^Body temperature^LN||99.5|[degF]^degF^UCUM|||||F".into(),
        "OBX|2|CWE|67775-7^Level of responsiveness^LN||A^Alert^ACVPU||||||F".into(),
        "OBX|3|ST|3151-8^Inhaled oxygen flow rate^LN||room air||||||F".into(),
        String::new(),
    ]
    .join("\r")
}

#[test]
fn issue15_hl7_oru_r01_over_mllp_with_the_python_hl7_client() {
    let Some(python) = hl7_python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "the hl7 client is not installed (scripts/test installs it: scripts/hl7-client install)"
        );
        eprintln!("SKIPPED: the hl7 client is not installed (scripts/hl7-client install)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let mllp = format!("127.0.0.1:{port}");
    let mut serve = Serve::start(&["--data", data.to_str().unwrap(), "--mllp-listen", &mllp]);
    let admin = serve.admin.clone().unwrap();
    let http = agent();
    let (status, p) = call(
        &http,
        "POST",
        &format!("{}api/patients", serve.url),
        &admin,
        Some(json!({"name": "Ann Example", "birth_date": "1970-01-31"})),
    );
    assert_eq!(status, 201, "{p}");
    let patient: PatientId = p["id"].as_str().unwrap().parse().unwrap();
    // The MRN STMARY|MRN123 mapped to the patient in the clinical store.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store_path = data.join("clinical.sqlite");
    rt.block_on(async {
        let store = SqliteStore::open(&store_path).unwrap();
        store
            .set_identifier(&patient, "STMARY", "MRN123", None)
            .await
            .unwrap();
    });

    // The MLLPClient: many messages on one connection.
    let messages = [
        pcd01("pcd-1", "MRN123^^^STMARY^MR", "97"),
        // Impossible: refused, nothing of it stored (not even its heart rate).
        pcd01("pcd-2", "MRN123^^^STMARY^MR", "104"),
        // Unknown patient.
        pcd01("pcd-3", "MRN999^^^STMARY^MR", "97"),
        // Garbage and another message type.
        "hello, this is not HL7".to_string(),
        "MSH|^~\\&|ADT|HOSP|||20240301||ADT^A01|adt-1|P|2.6\rPID|||MRN123^^^STMARY^MR\r"
            .to_string(),
        // The first again: stored once.
        pcd01("pcd-1", "MRN123^^^STMARY^MR", "97"),
    ];
    let acks = send_all(&python, port, &messages);
    assert_eq!(acks.len(), messages.len());
    let msh = segment(&acks[0], "MSH").unwrap();
    assert!(
        msh.starts_with("MSH|^~\\&|MEDKEEPER|HOSP|BEDMON^0123456789ABCDEF^EUI-64|ICU|")
            && msh.contains("|ACK^R01^ACK|")
            && msh.ends_with("|P|2.6"),
        "{msh}"
    );
    assert_eq!(msa(&acks[0]), ("AA".into(), "pcd-1".into()), "{}", acks[0]);
    assert_eq!(msa(&acks[1]), ("AE".into(), "pcd-2".into()), "{}", acks[1]);
    assert_eq!(err_code(&acks[1]), "102", "{}", acks[1]);
    assert!(
        segment(&acks[1], "ERR").unwrap().contains("|OBX^2^5"),
        "{}",
        acks[1]
    );
    assert_eq!(msa(&acks[2]), ("AE".into(), "pcd-3".into()), "{}", acks[2]);
    assert_eq!(err_code(&acks[2]), "204", "{}", acks[2]);
    assert_eq!(msa(&acks[3]).0, "AR", "{}", acks[3]);
    assert_eq!(msa(&acks[4]), ("AR".into(), "adt-1".into()), "{}", acks[4]);
    assert_eq!(err_code(&acks[4]), "200", "{}", acks[4]);
    assert_eq!(msa(&acks[5]), ("AA".into(), "pcd-1".into()), "{}", acks[5]);

    // An observation time in 2999 (a monitor's wrong clock) or before 1900: refused, saying
    // why — taken, it froze the patient's NEWS2 at its time and hid every real reading.
    // A NUL (in MSH-3 here): refused with where it is, never echoed, logged or stored raw,
    // and the refusal audited (a PostgreSQL store refused the record with a raw NUL in it).
    let obx14 = |control: &str, at: &str| {
        format!(
            "MSH|^~\\&|EHR|WARDS|||20240301111500||ORU^R01|{control}|P|2.5.1\rPID|||{patient}\r\
             OBX|1|NM|8867-4^Heart rate^LN||72|/min|||||F|||{at}\r"
        )
    };
    let more = send_all(
        &python,
        port,
        &[
            obx14("future-1", "29991231000000+0000"),
            obx14("ancient-1", "00000101000000+0000"),
            format!(
                "MSH|^~\\&|EH\u{0}R|WARDS|||20240301111500||ORU^R01|nul-1|P|2.5.1\rPID|||{patient}\r\
                 OBX|1|NM|8867-4^Heart rate^LN||72|/min|||||F\r"
            ),
        ],
    );
    for (ack, control, why) in [
        (&more[0], "future-1", "after this server's clock"),
        (&more[1], "ancient-1", "before 1900"),
        (&more[2], "nul-1", "MSH-3 holds a NUL character"),
    ] {
        assert_eq!(msa(ack), ("AE".into(), control.into()), "{ack}");
        assert_eq!(err_code(ack), "102", "{ack}");
        assert!(segment(ack, "MSA").unwrap().contains(why), "{ack}");
        assert!(!ack.contains('\0'), "a raw NUL in the ACK: {ack:?}");
    }
    assert!(
        segment(&more[2], "ERR").unwrap().contains("|MSH^1^3|"),
        "{}",
        more[2]
    );

    // mllp_send, the command line client: a LOINC-coded message naming the medkeeper id.
    let file = dir.path().join("loinc.hl7");
    let framed = format!("\u{b}{}\u{1c}\r", loinc("ehr-1", patient.as_str()));
    std::fs::write(&file, framed).unwrap();
    let out = Command::new(python.with_file_name("mllp_send"))
        .args([
            "-p",
            &port.to_string(),
            "-f",
            file.to_str().unwrap(),
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("MSA|AA|ehr-1"), "{printed}");

    // Another temperature for the same patient, source and time: as a first report (OBX-11
    // F) refused with 205 saying how to correct it — it was dropped silently before —; as a
    // correction (C) it replaces the stored value.
    let first = loinc("ehr-1", patient.as_str());
    let temp = "99.5|[degF]^degF^UCUM|||||F";
    assert!(first.contains(temp));
    let acks = send_all(
        &python,
        port,
        &[
            first
                .replace(temp, "100.4|[degF]^degF^UCUM|||||F")
                .replace("ehr-1", "ehr-2"),
            first
                .replace(temp, "100.4|[degF]^degF^UCUM|||||C")
                .replace("ehr-1", "ehr-3"),
        ],
    );
    assert_eq!(msa(&acks[0]), ("AE".into(), "ehr-2".into()), "{}", acks[0]);
    assert_eq!(err_code(&acks[0]), "205", "{}", acks[0]);
    assert!(acks[0].contains("needs OBX-11 C"), "{}", acks[0]);
    assert_eq!(msa(&acks[1]), ("AA".into(), "ehr-3".into()), "{}", acks[1]);

    // Read back through the API if it has the route, else from the store below.
    let (status, vitals) = call(
        &http,
        "GET",
        &format!("{}api/patients/{patient}/vitals", serve.url),
        &admin,
        None,
    );
    if status == 200 {
        let list = vitals
            .as_array()
            .or_else(|| vitals["observations"].as_array());
        if let Some(list) = list {
            assert_eq!(list.len(), 8, "{vitals}");
        }
    }

    let log = serve.log();
    assert!(log.contains("mllp: AA, stored"), "{log}");
    assert!(!log.contains('\0'), "a raw NUL in the log");
    assert!(
        log.contains("EH\\u{0}R"),
        "the sender, escaped, in the log:\n{log}"
    );
    for secret in ["MRN123", "MRN999", "EXAMPLE"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
    assert!(serve.terminate().success());

    rt.block_on(async {
        let store = SqliteStore::open(&store_path).unwrap();
        let q = ObservationQuery {
            patient: Some(patient.clone()),
            ..ObservationQuery::default()
        };
        let obs = store.observations(&q).await.unwrap();
        let mut codes: Vec<(VitalCode, i64, String)> = obs
            .iter()
            .map(|o| (o.code, (o.value * 10.0).round() as i64, o.source.clone()))
            .collect();
        codes.sort();
        let monitor = "0123456789ABCDEF^EUI-64".to_string();
        assert_eq!(
            codes,
            [
                (VitalCode::RespiratoryRate, 160, monitor.clone()),
                (VitalCode::HeartRate, 720, monitor.clone()),
                (VitalCode::Spo2, 970, monitor.clone()),
                (VitalCode::Temperature, 371, monitor.clone()),
                (VitalCode::Temperature, 380, "EHR/WARDS".into()),
                (VitalCode::SystolicBp, 1200, monitor.clone()),
                (VitalCode::InhaledOxygen, 0, "EHR/WARDS".into()),
                (VitalCode::Consciousness, 0, "EHR/WARDS".into()),
            ],
            "PCD-01 once (its resend a duplicate; the refused message nothing), and the LOINC one \
             with its corrected temperature"
        );
        // 10:14 at +0100.
        let spo2 = obs.iter().find(|o| o.code == VitalCode::Spo2).unwrap();
        assert_eq!(spo2.effective_ms, 1_709_284_440_000);
        // The ward from PV1-3.
        let settings = store.patient_settings(&patient).await.unwrap();
        assert_eq!(settings.ward.as_deref(), Some("4WEST"));
        // Audited: who sent what, as a device; the refusals too.
        let audit = store
            .audit(&AuditQuery {
                patient: Some(patient.clone()),
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        let ingests: Vec<(&str, &str, &str)> = audit
            .iter()
            .filter(|r| r.action == "vitals.ingest")
            .map(|r| (r.actor.as_str(), r.role.as_str(), r.outcome.as_str()))
            .collect();
        let bedmon = "mllp:BEDMON^0123456789ABCDEF^EUI-64";
        assert!(
            ingests.contains(&(bedmon, "device", "ok"))
                && ingests.contains(&("mllp:EHR", "device", "ok")),
            "{audit:?}"
        );
        assert!(
            ingests.contains(&(bedmon, "device", "invalid")),
            "{audit:?}"
        );
        // The NUL message's refusal, audited with the sender escaped.
        assert!(
            audit.iter().any(|r| r.action == "vitals.ingest"
                && r.actor == "mllp:EH\\u{0}R"
                && r.outcome == "invalid"
                && r.detail.contains("NUL")),
            "{audit:?}"
        );
        assert!(
            ingests
                .iter()
                .filter(|(a, _, o)| *a == "mllp:EHR" && *o == "invalid")
                .count()
                == 2,
            "the future and ancient refusals: {audit:?}"
        );
        assert!(
            ingests.contains(&("mllp:EHR", "device", "conflict")),
            "the uncorrected second value: {audit:?}"
        );
        assert!(
            audit
                .iter()
                .any(|r| r.action == "patient.ward" && r.actor == bedmon),
            "{audit:?}"
        );
    });
}
