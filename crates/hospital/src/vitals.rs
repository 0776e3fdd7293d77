//! Vital signs: what a bedside monitor or an EHR sends ([`RawObservation`], from FHIR R4 or
//! HL7 v2), cleaned into a normalised [`Observation`] ([`clean`]), and the NEWS2 score of a
//! patient at a moment from the observations around it ([`news2_at`]).
//!
//! # Cleaning
//! - **Units** are converted to the ones NEWS2 uses: °F → °C, K → °C, kPa → mmHg, a fraction
//!   → %. A unit that is not one of a code's known units is refused.
//! - **Impossible values** (outside what a living body or a sensor can report: a negative rate,
//!   a saturation over 100 %, a temperature under 10 °C or over 50 °C) are refused with a
//!   reason; nothing is stored.
//! - **Implausible values** (possible readings, but almost always a sensor artefact: a
//!   respiration rate over 70, a pulse under 20 or over 250, a saturation under 50 %, a
//!   temperature under 25 °C or over 45 °C, a systolic pressure under 40 or over 300 mmHg) are
//!   stored with an artefact flag and never scored.
//! - **Duplicates** (same patient, source, code and effective time) are stored once: sending
//!   the same message again changes nothing. Another value for a stored key replaces it only
//!   as a correction ([`Revision::Correction`]: FHIR `corrected`/`amended`, HL7 OBX-11 `C`);
//!   as a first report it is refused — two readings for one key, one silently dropped, would
//!   leave staff trusting a value the sender did not mean.
//! - **Late and out-of-order** observations are placed by their effective time, not their
//!   arrival: a score is always computed from the values in effect at its time.
//! - **Impossible times** are refused: an effective time more than
//!   [`FUTURE_TOLERANCE_MS`] (5 minutes) after the server's clock when the message arrived, or
//!   before [`EARLIEST_EFFECTIVE_MS`] (1900). A reading from the future would otherwise be the
//!   patient's newest for as long as the store holds it: their score would be computed at its
//!   time, from it alone, and every real reading after it would count as stale — a
//!   deteriorating patient would raise no alarm. The tolerance allows for a device whose
//!   clock runs a little fast; more than that is a wrong clock, and the sender is told.
//!   Scoring ignores a stored reading beyond the same horizon
//!   ([`Hospital::news2_now`](crate::orders::Hospital::news2_now)), so a store that already
//!   holds one is not frozen by it.
//! - **Staleness**: a score at time T takes, per parameter, the newest unflagged value with an
//!   effective time in `(T − STALE_AFTER, T]`; a parameter with none is *missing* and the
//!   score is marked incomplete — an old value is never silently reused.

use serde::{Deserialize, Serialize};

use crate::model::PatientId;
use crate::news2::{self, Acvpu, Score, SpO2Scale, VitalSet};
pub use crate::store::Revision;

/// How old a parameter's newest value may be and still count in a score: one hour, the
/// monitoring interval NEWS2 asks for from a medium risk on.
pub const STALE_AFTER_MS: i64 = 60 * 60 * 1000;

/// How far after the server's clock an effective time may be: five minutes, for bedside
/// devices whose clocks drift or are set by hand. A later time is refused at ingestion and
/// ignored when scoring (see the module docs): it would freeze the patient's score.
pub const FUTURE_TOLERANCE_MS: i64 = 5 * 60 * 1000;

/// The earliest effective time taken: 1900-01-01T00:00:00Z. Nothing measured on a living
/// patient is older; an earlier time is a device's unset clock (year 0000, 1800) or a typo,
/// and storing it would only put a reading where no score looks.
pub const EARLIEST_EFFECTIVE_MS: i64 = -2_208_988_800_000;

/// True if `effective_ms` is after the horizon of a clock reading `now_ms` (now plus
/// [`FUTURE_TOLERANCE_MS`]): a reading no score may use.
pub fn beyond_horizon(effective_ms: i64, now_ms: i64) -> bool {
    effective_ms > now_ms.saturating_add(FUTURE_TOLERANCE_MS)
}

/// Why `effective_ms` cannot be a measurement time on a server whose clock read
/// `received_ms`, if it cannot (see the module docs).
fn check_time(effective_ms: i64, received_ms: i64) -> Result<(), String> {
    if beyond_horizon(effective_ms, received_ms) {
        let ahead_min = effective_ms.saturating_sub(received_ms) / 60_000;
        let ahead = if ahead_min >= 2 * 24 * 60 {
            format!("{} days", ahead_min / (24 * 60))
        } else {
            format!("{ahead_min} minutes")
        };
        return Err(format!(
            "the effective time is {ahead} after this server's clock (at most {} minutes \
             ahead is taken, for device clock drift): check the sending device's clock",
            FUTURE_TOLERANCE_MS / 60_000
        ));
    }
    if effective_ms < EARLIEST_EFFECTIVE_MS {
        return Err(
            "the effective time is before 1900-01-01: not a measurement time (an unset device \
             clock?)"
                .into(),
        );
    }
    Ok(())
}

/// The vital signs medkeeper understands.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VitalCode {
    /// Respiratory rate, /min (LOINC 9279-1, MDC 151562 MDC_RESP_RATE).
    RespiratoryRate,
    /// Heart rate / pulse, /min (LOINC 8867-4, MDC 147842 MDC_ECG_HEART_RATE, 149530
    /// MDC_PULS_OXIM_PULS_RATE).
    HeartRate,
    /// Oxygen saturation, % (LOINC 59408-5, 2708-6, MDC 150456 MDC_PULS_OXIM_SAT_O2).
    Spo2,
    /// Body temperature, °C (LOINC 8310-5, MDC 150344 MDC_TEMP, 150364 MDC_TEMP_BODY).
    Temperature,
    /// Systolic blood pressure, mmHg (LOINC 8480-6, MDC 150021 MDC_PRESS_BLD_NONINV_SYS,
    /// 150017 MDC_PRESS_BLD_ART_ABP_SYS, 150033 MDC_PRESS_BLD_ART_SYS).
    SystolicBp,
    /// Supplemental oxygen: 1 on oxygen, 0 on air (LOINC 3151-8 flow rate: > 0 L/min is
    /// oxygen; 3150-0 inhaled oxygen concentration: > 21 % is oxygen).
    InhaledOxygen,
    /// Level of consciousness, ACVPU as 0 (A) … 4 (U) (LOINC 67775-7 level of
    /// responsiveness; values A, C, V, P, U or their words).
    Consciousness,
}

impl VitalCode {
    /// Every code.
    pub const ALL: [VitalCode; 7] = [
        VitalCode::RespiratoryRate,
        VitalCode::HeartRate,
        VitalCode::Spo2,
        VitalCode::Temperature,
        VitalCode::SystolicBp,
        VitalCode::InhaledOxygen,
        VitalCode::Consciousness,
    ];

    /// The name (`respiratory_rate`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            VitalCode::RespiratoryRate => "respiratory_rate",
            VitalCode::HeartRate => "heart_rate",
            VitalCode::Spo2 => "spo2",
            VitalCode::Temperature => "temperature",
            VitalCode::SystolicBp => "systolic_bp",
            VitalCode::InhaledOxygen => "inhaled_oxygen",
            VitalCode::Consciousness => "consciousness",
        }
    }

    /// From [`as_str`](VitalCode::as_str).
    pub fn parse(s: &str) -> Option<VitalCode> {
        VitalCode::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The LOINC code its normalised FHIR Observation carries, and the display.
    pub fn loinc(self) -> (&'static str, &'static str) {
        match self {
            VitalCode::RespiratoryRate => ("9279-1", "Respiratory rate"),
            VitalCode::HeartRate => ("8867-4", "Heart rate"),
            VitalCode::Spo2 => (
                "59408-5",
                "Oxygen saturation in Arterial blood by Pulse oximetry",
            ),
            VitalCode::Temperature => ("8310-5", "Body temperature"),
            VitalCode::SystolicBp => ("8480-6", "Systolic blood pressure"),
            VitalCode::InhaledOxygen => ("3151-8", "Inhaled oxygen flow rate"),
            VitalCode::Consciousness => ("67775-7", "Level of responsiveness"),
        }
    }

    /// The unit of its normalised value (UCUM).
    pub fn unit(self) -> &'static str {
        match self {
            VitalCode::RespiratoryRate | VitalCode::HeartRate => "/min",
            VitalCode::Spo2 => "%",
            VitalCode::Temperature => "Cel",
            VitalCode::SystolicBp => "mm[Hg]",
            VitalCode::InhaledOxygen => "{on oxygen}",
            VitalCode::Consciousness => "{ACVPU}",
        }
    }

    /// The code of a LOINC code, if it is a vital sign medkeeper uses.
    pub fn from_loinc(code: &str) -> Option<VitalCode> {
        Some(match code {
            "9279-1" => VitalCode::RespiratoryRate,
            "8867-4" => VitalCode::HeartRate,
            "59408-5" | "2708-6" => VitalCode::Spo2,
            "8310-5" => VitalCode::Temperature,
            "8480-6" => VitalCode::SystolicBp,
            "3151-8" | "3150-0" => VitalCode::InhaledOxygen,
            "67775-7" => VitalCode::Consciousness,
            _ => return None,
        })
    }

    /// The code of an MDC (ISO/IEEE 11073-10101) code, as IHE PCD-01 devices send it: the
    /// number, with or without its reference id (`150456`, `150456^MDC_PULS_OXIM_SAT_O2`).
    pub fn from_mdc(code: &str) -> Option<VitalCode> {
        Some(match code {
            "151562" | "MDC_RESP_RATE" | "151554" | "MDC_CO2_RESP_RATE" => {
                VitalCode::RespiratoryRate
            }
            "147842" | "MDC_ECG_HEART_RATE" | "149530" | "MDC_PULS_OXIM_PULS_RATE" => {
                VitalCode::HeartRate
            }
            "150456" | "MDC_PULS_OXIM_SAT_O2" => VitalCode::Spo2,
            "150344" | "MDC_TEMP" | "150364" | "MDC_TEMP_BODY" => VitalCode::Temperature,
            "150021"
            | "MDC_PRESS_BLD_NONINV_SYS"
            | "150017"
            | "MDC_PRESS_BLD_ART_ABP_SYS"
            | "150033"
            | "MDC_PRESS_BLD_ART_SYS" => VitalCode::SystolicBp,
            _ => return None,
        })
    }
}

/// A value as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    /// A number with its unit as sent (UCUM or an MDC unit name; empty if none).
    Quantity(f64, String),
    /// A coded or text value (consciousness: `A`, `alert`, ...).
    Text(String),
    /// A yes/no (on oxygen).
    Bool(bool),
}

/// An observation as it arrived, before cleaning.
#[derive(Debug, Clone, PartialEq)]
pub struct RawObservation {
    /// Whose.
    pub patient: PatientId,
    /// What.
    pub code: VitalCode,
    /// The code as sent (`loinc:3150-0`, `mdc:150456`): some codes change how the value
    /// reads (an oxygen flow or a concentration).
    pub sent_code: String,
    /// The value.
    pub value: RawValue,
    /// When it was measured, ms since the epoch.
    pub effective_ms: i64,
    /// Who sent it: a device or system id (part of the duplicate key).
    pub source: String,
    /// A first report, or a correction that replaces the value stored under its key.
    pub revision: Revision,
}

/// A cleaned observation, as stored.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Its id (`v-<32 hex>`), given when stored.
    pub id: String,
    /// Whose.
    pub patient: PatientId,
    /// What.
    pub code: VitalCode,
    /// The value in [`VitalCode::unit`].
    pub value: f64,
    /// When it was measured, ms since the epoch.
    pub effective_ms: i64,
    /// When it arrived.
    pub received_ms: i64,
    /// Who sent it.
    pub source: String,
    /// Why it is taken for a sensor artefact (stored, not scored); `None` if plausible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artefact: Option<String>,
}

/// Why an observation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Converts a raw observation into the normalised unit and checks it (see the module docs).
///
/// # Errors
/// [`Refused`] for an unknown unit, a value of the wrong kind, an impossible value, or an
/// effective time more than [`FUTURE_TOLERANCE_MS`] after `received_ms` (the server's clock
/// when it arrived) or before [`EARLIEST_EFFECTIVE_MS`].
pub fn clean(raw: &RawObservation, received_ms: i64) -> Result<Observation, Refused> {
    let code = raw.code;
    let bad = |m: String| Err(Refused(format!("{}: {m}", code.as_str())));
    if let Err(m) = check_time(raw.effective_ms, received_ms) {
        return bad(m);
    }
    let value = match (code, &raw.value) {
        (VitalCode::Consciousness, RawValue::Text(t)) => match Acvpu::parse(t) {
            Some(c) => c.code() as f64,
            None => return bad(format!("{t:?} is not ACVPU (A, C, V, P or U)")),
        },
        (VitalCode::Consciousness, _) => return bad("expected A, C, V, P or U".into()),
        (VitalCode::InhaledOxygen, RawValue::Bool(b)) => f64::from(u8::from(*b)),
        (VitalCode::InhaledOxygen, RawValue::Text(t)) => {
            match t.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "y" | "oxygen" | "o2" | "on oxygen" => 1.0,
                "false" | "no" | "n" | "air" | "room air" => 0.0,
                other => return bad(format!("{other:?}: expected air or oxygen")),
            }
        }
        (VitalCode::InhaledOxygen, RawValue::Quantity(v, unit)) => {
            if !v.is_finite() || *v < 0.0 {
                return bad(format!("{v} is impossible"));
            }
            // A concentration (%) over air's 21 %, or any flow, is supplemental oxygen.
            if raw.sent_code.ends_with("3150-0") || unit == "%" {
                if *v > 100.0 {
                    return bad(format!("{v} % is impossible"));
                }
                f64::from(u8::from(*v > 21.0))
            } else {
                if !matches!(unit.as_str(), "L/min" | "l/min" | "" | "MDC_DIM_L_PER_MIN") {
                    return bad(format!("unit {unit:?}: expected L/min"));
                }
                f64::from(u8::from(*v > 0.0))
            }
        }
        (_, RawValue::Quantity(v, unit)) => {
            if !v.is_finite() {
                return bad("not a number".into());
            }
            normalise(code, *v, unit).map_err(|m| Refused(format!("{}: {m}", code.as_str())))?
        }
        (_, other) => return bad(format!("expected a number, got {other:?}")),
    };
    let (impossible, implausible) = limits(code);
    if value < impossible.0 || value > impossible.1 {
        return bad(format!(
            "{value} {} is impossible (outside {}–{})",
            code.unit(),
            impossible.0,
            impossible.1
        ));
    }
    let artefact = (value < implausible.0 || value > implausible.1).then(|| {
        format!(
            "{value} {} is implausible (outside {}–{}): taken for an artefact, not scored",
            code.unit(),
            implausible.0,
            implausible.1
        )
    });
    Ok(Observation {
        id: String::new(),
        patient: raw.patient.clone(),
        code,
        value,
        effective_ms: raw.effective_ms,
        received_ms,
        source: raw.source.clone(),
        artefact,
    })
}

/// `v` in `unit` converted into `code`'s unit.
fn normalise(code: VitalCode, v: f64, unit: &str) -> Result<f64, String> {
    let u = unit.trim();
    let known = |ok: &[&str]| ok.contains(&u);
    Ok(match code {
        VitalCode::RespiratoryRate | VitalCode::HeartRate => {
            if !known(&[
                "/min",
                "{breaths}/min",
                "{beats}/min",
                "1/min",
                "min-1",
                "",
                "bpm",
                "MDC_DIM_BEAT_PER_MIN",
                "MDC_DIM_RESP_PER_MIN",
                "264864",
                "264928",
            ]) {
                return Err(format!("unit {u:?}: expected /min"));
            }
            v
        }
        VitalCode::Spo2 => match u {
            "%" | "" | "MDC_DIM_PERCENT" | "262688" => v,
            "1" | "{fraction}" => v * 100.0,
            _ => return Err(format!("unit {u:?}: expected %")),
        },
        VitalCode::Temperature => match u {
            "Cel" | "°C" | "C" | "MDC_DIM_DEGC" | "268192" => v,
            "[degF]" | "°F" | "F" | "MDC_DIM_FAHR" | "266560" => (v - 32.0) * 5.0 / 9.0,
            "K" | "MDC_DIM_KELVIN" => v - 273.15,
            _ => return Err(format!("unit {u:?}: expected Cel, [degF] or K")),
        },
        VitalCode::SystolicBp => match u {
            "mm[Hg]" | "mmHg" | "MDC_DIM_MMHG" | "266016" => v,
            "kPa" | "MDC_DIM_KILO_PASCAL" | "268842" => v * 7.500_617,
            _ => return Err(format!("unit {u:?}: expected mm[Hg] or kPa")),
        },
        VitalCode::InhaledOxygen | VitalCode::Consciousness => v,
    })
}

/// (impossible range, plausible range) of a normalised value.
fn limits(code: VitalCode) -> ((f64, f64), (f64, f64)) {
    match code {
        VitalCode::RespiratoryRate => ((0.0, 150.0), (1.0, 70.0)),
        VitalCode::HeartRate => ((0.0, 400.0), (20.0, 250.0)),
        VitalCode::Spo2 => ((0.0, 100.0), (50.0, 100.0)),
        VitalCode::Temperature => ((10.0, 50.0), (25.0, 45.0)),
        VitalCode::SystolicBp => ((0.0, 400.0), (40.0, 300.0)),
        VitalCode::InhaledOxygen => ((0.0, 1.0), (0.0, 1.0)),
        VitalCode::Consciousness => ((0.0, 4.0), (0.0, 4.0)),
    }
}

/// A NEWS2 score at a moment and the observations it used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct News2 {
    /// Whose.
    pub patient: PatientId,
    /// The moment scored, ms since the epoch (the newest observation's effective time).
    pub at_ms: i64,
    /// The score.
    pub score: Score,
    /// The observations used (ids), one per parameter present.
    pub basis: Vec<String>,
}

/// The NEWS2 score of `patient` at `at_ms` from `observations` (any order; others' and
/// artefacts ignored), on `scale` (see the module docs on staleness).
pub fn news2_at(
    patient: &PatientId,
    at_ms: i64,
    observations: &[Observation],
    scale: SpO2Scale,
) -> News2 {
    let mut latest: std::collections::BTreeMap<VitalCode, &Observation> = Default::default();
    for o in observations {
        if &o.patient != patient
            || o.artefact.is_some()
            || o.effective_ms > at_ms
            || o.effective_ms <= at_ms - STALE_AFTER_MS
        {
            continue;
        }
        let slot = latest.entry(o.code).or_insert(o);
        if (o.effective_ms, &o.id) > (slot.effective_ms, &slot.id) {
            *slot = o;
        }
    }
    let v = |c: VitalCode| latest.get(&c).map(|o| o.value);
    let set = VitalSet {
        respiration_rate: v(VitalCode::RespiratoryRate),
        spo2: v(VitalCode::Spo2),
        on_oxygen: v(VitalCode::InhaledOxygen).map(|x| x >= 0.5),
        systolic_bp: v(VitalCode::SystolicBp),
        pulse: v(VitalCode::HeartRate),
        consciousness: v(VitalCode::Consciousness).and_then(|x| Acvpu::from_code(x as u8)),
        temperature: v(VitalCode::Temperature),
    };
    News2 {
        patient: patient.clone(),
        at_ms,
        score: news2::score(&set, scale),
        basis: latest.values().map(|o| o.id.clone()).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(code: VitalCode, value: RawValue) -> RawObservation {
        RawObservation {
            patient: "p-1".parse().unwrap(),
            code,
            sent_code: String::new(),
            value,
            effective_ms: 1_000,
            source: "monitor-1".into(),
            revision: Revision::Original,
        }
    }

    fn q(v: f64, u: &str) -> RawValue {
        RawValue::Quantity(v, u.into())
    }

    #[test]
    fn units_are_converted() {
        let t = clean(&raw(VitalCode::Temperature, q(100.4, "[degF]")), 0).unwrap();
        assert!((t.value - 38.0).abs() < 1e-9, "{}", t.value);
        let bp = clean(&raw(VitalCode::SystolicBp, q(16.0, "kPa")), 0).unwrap();
        assert!((bp.value - 120.01).abs() < 0.01, "{}", bp.value);
        let s = clean(&raw(VitalCode::Spo2, q(0.95, "1")), 0).unwrap();
        assert!((s.value - 95.0).abs() < 1e-9);
        let o2 = clean(&raw(VitalCode::InhaledOxygen, q(2.0, "L/min")), 0).unwrap();
        assert_eq!(o2.value, 1.0);
        let mut fio2 = raw(VitalCode::InhaledOxygen, q(21.0, "%"));
        fio2.sent_code = "loinc:3150-0".into();
        assert_eq!(clean(&fio2, 0).unwrap().value, 0.0);
        let c = clean(
            &raw(VitalCode::Consciousness, RawValue::Text("voice".into())),
            0,
        )
        .unwrap();
        assert_eq!(c.value, 2.0);
        assert!(clean(&raw(VitalCode::HeartRate, q(80.0, "mm[Hg]")), 0).is_err());
    }

    #[test]
    fn impossible_is_refused_and_implausible_flagged() {
        let e = clean(&raw(VitalCode::Spo2, q(104.0, "%")), 0).unwrap_err();
        assert!(e.0.contains("impossible"), "{e}");
        assert!(clean(&raw(VitalCode::HeartRate, q(-3.0, "/min")), 0).is_err());
        assert!(clean(&raw(VitalCode::Temperature, q(f64::NAN, "Cel")), 0).is_err());
        let a = clean(&raw(VitalCode::HeartRate, q(300.0, "/min")), 0).unwrap();
        assert!(a.artefact.as_deref().unwrap().contains("implausible"));
        let ok = clean(&raw(VitalCode::HeartRate, q(72.0, "/min")), 0).unwrap();
        assert_eq!(ok.artefact, None);
        assert!(
            clean(
                &raw(VitalCode::Consciousness, RawValue::Text("drowsy".into())),
                0
            )
            .is_err()
        );
    }

    #[test]
    fn future_and_ancient_times_are_refused() {
        let now = 1_800_000_000_000;
        let at = |t: i64| RawObservation {
            effective_ms: t,
            ..raw(VitalCode::HeartRate, q(72.0, "/min"))
        };
        // Within the device clock tolerance: taken.
        assert!(clean(&at(now + FUTURE_TOLERANCE_MS), now).is_ok());
        assert!(clean(&at(now - 365 * 24 * 3600 * 1000), now).is_ok());
        assert!(clean(&at(EARLIEST_EFFECTIVE_MS), now).is_ok());
        // Beyond it: refused, saying why.
        let e = clean(&at(now + FUTURE_TOLERANCE_MS + 1), now).unwrap_err();
        assert!(e.0.contains("after this server's clock"), "{e}");
        // 2999-12-31: a wrong clock, in days.
        let e = clean(&at(32_503_593_600_000), now).unwrap_err();
        assert!(e.0.contains("days after this server's clock"), "{e}");
        // Year 0000 and the day before 1900.
        let e = clean(&at(-62_167_219_200_000), now).unwrap_err();
        assert!(e.0.contains("before 1900"), "{e}");
        assert!(clean(&at(EARLIEST_EFFECTIVE_MS - 1), now).is_err());
        // No overflow at the ends of the range.
        assert!(clean(&at(i64::MAX), i64::MAX).is_ok());
        assert!(clean(&at(i64::MIN), now).is_err());
    }

    fn obs(id: &str, code: VitalCode, value: f64, at: i64) -> Observation {
        Observation {
            id: id.into(),
            patient: "p-1".parse().unwrap(),
            code,
            value,
            effective_ms: at,
            received_ms: 0,
            source: "m".into(),
            artefact: None,
        }
    }

    #[test]
    fn scores_by_effective_time_and_marks_stale_parameters() {
        let p: PatientId = "p-1".parse().unwrap();
        let t = 10 * STALE_AFTER_MS;
        let mut all = vec![
            obs("v1", VitalCode::RespiratoryRate, 16.0, t - 10),
            obs("v2", VitalCode::Spo2, 97.0, t - 10),
            obs("v3", VitalCode::InhaledOxygen, 0.0, t - 10),
            obs("v4", VitalCode::SystolicBp, 120.0, t - 10),
            obs("v5", VitalCode::HeartRate, 70.0, t - 10),
            obs("v6", VitalCode::Consciousness, 0.0, t - 10),
            // Stale: more than an hour before.
            obs("v7", VitalCode::Temperature, 37.0, t - STALE_AFTER_MS),
        ];
        let n = news2_at(&p, t, &all, SpO2Scale::Scale1);
        assert_eq!(n.score.missing, [news2::Parameter::Temperature]);
        assert_eq!(n.basis.len(), 6);
        // A late arrival with an earlier effective time does not replace the newer value.
        all.push(obs("v8", VitalCode::HeartRate, 140.0, t - 20));
        all.push(obs("v9", VitalCode::Temperature, 37.2, t - 5));
        let n = news2_at(&p, t, &all, SpO2Scale::Scale1);
        assert!(n.score.complete());
        assert_eq!(n.score.aggregate, 0);
        // An artefact is not scored; the older plausible value is.
        let mut a = obs("v10", VitalCode::HeartRate, 300.0, t - 1);
        a.artefact = Some("implausible".into());
        all.push(a);
        assert_eq!(news2_at(&p, t, &all, SpO2Scale::Scale1).score.aggregate, 0);
        // Scored at an earlier time, later values do not count.
        let n = news2_at(&p, t - 15, &all, SpO2Scale::Scale1);
        assert_eq!(n.score.aggregate, 3, "the pulse of 140 at t - 20");
    }
}
