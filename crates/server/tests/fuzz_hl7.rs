//! Fuzzing the HL7 v2 parser (issue 19): `Message::parse`, `read_oru` and `ack` on
//! structure-aware mutations of ORU^R01 messages — fields replaced by awkward values (long,
//! escape sequences, odd times and numbers), segments duplicated, dropped and reordered,
//! separators changed, bytes damaged — must never panic; the ACK of every message parses as
//! HL7 itself with its MSA; and the MLLP reader finds the same frames however the bytes are
//! split. (`hl7.rs` has a fixed-seed random-input unit test; this one runs as long as asked.)
//!
//! `MEDKEEPER_FUZZ_SECONDS` / `MEDKEEPER_FUZZ_CASES` (default 2000) / `MEDKEEPER_FUZZ_SEED`,
//! as `scripts/fuzz` sets them; case `i` uses seed + i.

mod fuzz_support;

use fuzz_support::{Budget, Rng, Tally};
use medkeeper_server::hl7::{Frame, Message, MllpReader, ack, decode, frame, parse_time, read_oru};

const PCD01: &str = "MSH|^~\\&|VSP^080019FFFE134535^EUI-64|GE Healthcare|MK|ICU|20130122134100+0100||ORU^R01^ORU_R01|004097134535|P|2.6|||NE|AL||UNICODE UTF-8|||PCD_DEC_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO\r\
PID|||HED12^^^PID^MR||DOE^ANN^^^^^L\r\
PV1||I|4WEST^12^B\r\
OBR|1|A1^VSP|A1^VSP|182777000^monitoring of patient^SCT|||20130122134000+0100\r\
OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X\r\
OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|97|262688^MDC_DIM_PERCENT^MDC|||||R|||20130122133955+0100||||0123456789ABCDEF^EUI-64\r\
OBX|3|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.2|72|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R\r\
OBX|4|NM|148066^MDC_ECG_V_P_C_RATE^MDC|1.1.1.3|0|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R\r\
OBX|5|NM|150344^MDC_TEMP^MDC|1.1.1.4|37.2|268192^MDC_DIM_DEGC^MDC|||||X\r";

const LOINC: &str = "MSH|^~\\&|MON|ICU|||20240102030405||ORU^R01|c42|P|2.6\r\
PID|||p-1~MRN7^^^HOSP^MR\r\
PV1||I|ward-7\r\
OBR|1|||vitals|||20240102030000\r\
OBX|1|NM|8867-4^^LN||70|/min|||||F\r\
OBX|2|NM|9279-1^^LN||18|/min|||||F|||20240102030001-0500\r\
OBX|3|NM|8480-6^^LN||120|mm[Hg]|||||F\r\
OBX|4|ST|8310-5^^LN||37\\E\\1|Cel|||||F\r";

const AWKWARD: &[&str] = &[
    "",
    "\\X00\\",
    "\\X\\",
    "\\E\\\\E\\",
    "\\.br\\",
    "\\Z99\\",
    "\\",
    "99999999999999999999",
    "-1",
    "1e308",
    "NaN",
    "20240230",
    "2024010203040506070809",
    "20240102030405+9999",
    "20240102030405.123456789-1200",
    "0000",
    "^^^^^^^^",
    "~~~~",
    "&&&",
    "ORU^R01",
    "ADT^A01",
    "2.6",
    "3.0",
    "患者",
];

fn segments(text: &str) -> Vec<String> {
    text.split('\r')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// One structure-aware mutation.
fn mutate(segs: &mut Vec<String>, rng: &mut Rng) -> String {
    if segs.is_empty() {
        segs.push("MSH|^~\\&".into());
        return "a bare MSH".into();
    }
    let i = rng.below(segs.len() as u64) as usize;
    match rng.below(8) {
        0..=2 => {
            let mut fields: Vec<String> = segs[i].split('|').map(str::to_string).collect();
            let f = rng.below(fields.len() as u64 + 3) as usize;
            let v = if rng.below(8) == 0 {
                "A".repeat([100, 5000, 70_000][rng.below(3) as usize])
            } else {
                rng.pick(AWKWARD).to_string()
            };
            if f < fields.len() {
                fields[f] = v.clone();
            } else {
                fields.push(v.clone());
            }
            segs[i] = fields.join("|");
            format!("segment {i} field {f} := {:.20}", v)
        }
        3 => {
            let copy = segs[i].clone();
            let at = rng.below(segs.len() as u64 + 1) as usize;
            segs.insert(at, copy);
            format!("duplicate segment {i} at {at}")
        }
        4 => {
            segs.remove(i);
            format!("drop segment {i}")
        }
        5 => {
            let j = rng.below(segs.len() as u64) as usize;
            segs.swap(i, j);
            format!("swap segments {i} and {j}")
        }
        6 => {
            // Other separators in MSH-1/2.
            let seps = [
                "MSH#^~\\&",
                "MSH|^^\\&",
                "MSH|",
                "MSH|^~",
                "MSH|~^\\&#",
                "MSH^|~\\&",
                "MSH| ~\\&",
            ];
            let s = *rng.pick(&seps);
            let rest = segs[0].get(8..).unwrap_or("").to_string();
            segs[0] = format!("{s}{rest}");
            format!("separators {s:?}")
        }
        _ => {
            let mut b = segs[i].clone().into_bytes();
            if !b.is_empty() {
                let at = rng.below(b.len() as u64) as usize;
                b[at] = *rng.pick(b"|^~\\&\r\n\x0b\x1c\x00\xff");
            }
            segs[i] = String::from_utf8_lossy(&b).into_owned();
            format!("a separator byte in segment {i}")
        }
    }
}

fn case(seed: u64, tally: &mut Tally) {
    let mut rng = Rng::new(seed);
    let base = if rng.below(2) == 0 { PCD01 } else { LOINC };
    let mut segs = segments(base);
    let mut done = Vec::new();
    for _ in 0..1 + rng.below(4) {
        done.push(mutate(&mut segs, &mut rng));
    }
    let text = segs.join("\r") + "\r";
    let ctx = format!("seed {seed}: {done:?}");
    let outcome = std::panic::catch_unwind(|| match Message::parse(&text) {
        Err(_) => "not HL7",
        Ok(m) => {
            let h = m.header();
            let r = read_oru(&m);
            let a = ack(&h, r.as_ref().err(), "mk1", 0);
            let back = Message::parse(&a).unwrap_or_else(|e| panic!("ACK does not parse: {e:?}"));
            assert!(
                back.segments.iter().any(|s| s.id() == "MSA"),
                "the ACK has an MSA: {a:?}"
            );
            match r {
                Ok(oru) => {
                    for p in &oru.patients {
                        for o in &p.observations {
                            let _ = o.to_raw(medkeeper_hospital::PatientId::generate());
                        }
                    }
                    let _ = oru.observation_count();
                    "read"
                }
                Err(_) => "refused",
            }
        }
    })
    .unwrap_or_else(|_| panic!("the HL7 parser panicked; {ctx}\n{text:?}"));
    tally.add(outcome);
    // The MLLP reader: the same frames whether the bytes come at once or in pieces.
    let mut bytes = frame(&text);
    bytes.extend(frame(base));
    if rng.below(4) == 0 {
        let at = rng.below(bytes.len() as u64) as usize;
        bytes.truncate(at);
    }
    let whole: Vec<String> = MllpReader::new(8192)
        .push(&bytes)
        .into_iter()
        .map(|f| format!("{f:?}"))
        .collect();
    let mut reader = MllpReader::new(8192);
    let mut pieces = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let n = (1 + rng.below(64) as usize).min(rest.len());
        pieces.extend(
            reader
                .push(&rest[..n])
                .into_iter()
                .map(|f| format!("{f:?}")),
        );
        rest = &rest[n..];
    }
    assert_eq!(
        whole, pieces,
        "MLLP frames depend on how bytes arrive; {ctx}"
    );
    for f in MllpReader::new(8192).push(&bytes) {
        if let Frame::Message(m) = f {
            let _ = decode(&m);
        }
    }
    let t: String = (0..rng.below(30))
        .map(|_| *rng.pick(b"0123456789+-.Z ") as char)
        .collect();
    let _ = std::panic::catch_unwind(|| parse_time(&t, Some(60)))
        .unwrap_or_else(|_| panic!("parse_time({t:?}) panicked; seed {seed}"));
}

#[test]
fn fuzz_hl7_parser() {
    let mut tally = Tally::default();
    Budget::from_env(2000).run("hl7", |seed| case(seed, &mut tally));
    eprintln!("fuzz hl7 outcomes: {:?}", tally.0);
}
