//! The National Early Warning Score 2 (NEWS2), exactly as the Royal College of Physicians'
//! 2017 chart scores it — **decision support, not a diagnosis**: it tells staff how closely to
//! watch a patient and how fast to respond, never what is wrong.
//!
//! # Chart 1: the scoring system
//! ```text
//! parameter                  3        2        1        0         1          2          3
//! respiration rate (/min)    ≤8                9–11     12–20               21–24      ≥25
//! SpO2 scale 1 (%)           ≤91      92–93    94–95    ≥96
//! SpO2 scale 2 (%)           ≤83      84–85    86–87    88–92     93–94 O2   95–96 O2   ≥97 O2
//!                                                       ≥93 air
//! air or oxygen?                      oxygen            air
//! systolic BP (mmHg)         ≤90      91–100   101–110  111–219                        ≥220
//! pulse (/min)               ≤40               41–50    51–90     91–110     111–130    ≥131
//! consciousness                                         alert                           CVPU
//! temperature (°C)           ≤35.0             35.1–36.0 36.1–38.0 38.1–39.0 ≥39.1
//! ```
//! Scale 2 is for patients with hypercapnic respiratory failure and a prescribed target of
//! 88–92 %, set per patient by a clinician (recorded and audited: [`crate::store`]); everyone
//! else is scored on scale 1. Consciousness is ACVPU: alert scores 0; new confusion, voice,
//! pain or unresponsive score 3.
//!
//! The chart's values are whole numbers (temperature to one decimal); a measured value is
//! rounded half away from zero to that precision before it is banded (a 91.5 % saturation is
//! 92 %, a 38.05 °C temperature is 38.1 °C), so every value falls in exactly one band.
//!
//! # Charts 2 and 3: risk and response
//! | aggregate | clinical risk | response | monitoring |
//! |---|---|---|---|
//! | 0 | low | ward-based response | minimum 12-hourly |
//! | 1–4 | low | registered nurse to assess | minimum 4–6-hourly |
//! | a single parameter scoring 3 (red score) | low–medium | urgent ward-based response: registered nurse to inform the medical team | minimum 1-hourly |
//! | 5–6 | medium | key threshold for urgent response | minimum 1-hourly |
//! | 7 or more | high | urgent or emergency response | continuous monitoring |

use std::fmt;

use serde::{Deserialize, Serialize};

/// A patient's level of consciousness, ACVPU.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Acvpu {
    /// Alert.
    A,
    /// New confusion.
    C,
    /// Responds to voice.
    V,
    /// Responds to pain.
    P,
    /// Unresponsive.
    U,
}

impl Acvpu {
    /// The code as a number (A 0 … U 4), how observations store it.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// From [`code`](Acvpu::code).
    pub fn from_code(code: u8) -> Option<Acvpu> {
        [Acvpu::A, Acvpu::C, Acvpu::V, Acvpu::P, Acvpu::U]
            .get(code as usize)
            .copied()
    }

    /// From a letter (`A`, `C`, `V`, `P`, `U`) or word (`alert`, `confusion`, `new confusion`,
    /// `voice`, `pain`, `unresponsive`), any case.
    pub fn parse(s: &str) -> Option<Acvpu> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "a" | "alert" => Acvpu::A,
            "c" | "confusion" | "new confusion" | "confused" => Acvpu::C,
            "v" | "voice" => Acvpu::V,
            "p" | "pain" => Acvpu::P,
            "u" | "unresponsive" => Acvpu::U,
            _ => return None,
        })
    }
}

/// Which SpO2 scale a patient is scored on.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SpO2Scale {
    /// Scale 1: everyone, unless a clinician sets scale 2.
    #[default]
    Scale1,
    /// Scale 2: hypercapnic respiratory failure, target 88–92 %.
    Scale2,
}

/// One set of vital signs (each parameter optional: a missing one makes the score
/// incomplete).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct VitalSet {
    /// Breaths per minute.
    pub respiration_rate: Option<f64>,
    /// Peripheral oxygen saturation, %.
    pub spo2: Option<f64>,
    /// True if on supplemental oxygen, false on air.
    pub on_oxygen: Option<bool>,
    /// Systolic blood pressure, mmHg.
    pub systolic_bp: Option<f64>,
    /// Pulse, beats per minute.
    pub pulse: Option<f64>,
    /// Level of consciousness.
    pub consciousness: Option<Acvpu>,
    /// Temperature, °C.
    pub temperature: Option<f64>,
}

/// The parameters of NEWS2, in chart order.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parameter {
    /// Respiration rate.
    RespirationRate,
    /// SpO2 (scale 1 or 2).
    Spo2,
    /// Air or oxygen.
    AirOrOxygen,
    /// Systolic blood pressure.
    SystolicBp,
    /// Pulse.
    Pulse,
    /// Consciousness.
    Consciousness,
    /// Temperature.
    Temperature,
}

impl Parameter {
    /// Every parameter, in chart order.
    pub const ALL: [Parameter; 7] = [
        Parameter::RespirationRate,
        Parameter::Spo2,
        Parameter::AirOrOxygen,
        Parameter::SystolicBp,
        Parameter::Pulse,
        Parameter::Consciousness,
        Parameter::Temperature,
    ];
}

/// The clinical risk (chart 2).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "kebab-case")]
pub enum Risk {
    /// Aggregate 0–4.
    #[default]
    Low,
    /// A single parameter scoring 3, aggregate under 5.
    LowMedium,
    /// Aggregate 5–6.
    Medium,
    /// Aggregate 7 or more.
    High,
}

impl Risk {
    /// Every risk, lowest first.
    pub const ALL: [Risk; 4] = [Risk::Low, Risk::LowMedium, Risk::Medium, Risk::High];

    /// The name (`low`, `low-medium`, `medium`, `high`).
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::LowMedium => "low-medium",
            Risk::Medium => "medium",
            Risk::High => "high",
        }
    }

    /// 0 low … 3 high: the value the alarm signal `news2` carries.
    pub fn level(self) -> u8 {
        self as u8
    }

    /// From [`level`](Risk::level).
    pub fn from_level(level: u8) -> Option<Risk> {
        Risk::ALL.get(level as usize).copied()
    }

    /// Chart 3: how often to observe.
    pub fn monitoring(self, aggregate: u8) -> &'static str {
        match self {
            Risk::Low if aggregate == 0 => "minimum 12-hourly",
            Risk::Low => "minimum 4–6-hourly",
            Risk::LowMedium | Risk::Medium => "minimum 1-hourly",
            Risk::High => "continuous monitoring of vital signs",
        }
    }

    /// Chart 3: the clinical response.
    pub fn response(self, aggregate: u8) -> &'static str {
        match self {
            Risk::Low if aggregate == 0 => "continue routine NEWS monitoring",
            Risk::Low => {
                "inform registered nurse, who must assess the patient and decide whether \
                 increased frequency of monitoring and/or escalation of care is required"
            }
            Risk::LowMedium => {
                "registered nurse to inform medical team caring for the patient, who will review \
                 and decide whether escalation of care is necessary"
            }
            Risk::Medium => {
                "registered nurse to immediately inform the medical team caring for the patient; \
                 urgent assessment by a clinician or team with core competencies in the care of \
                 acutely ill patients; clinical care in an environment with monitoring facilities"
            }
            Risk::High => {
                "registered nurse to immediately inform the medical team caring for the patient \
                 – this should be at least at specialist registrar level; emergency assessment \
                 by a team with critical care competencies, including practitioner(s) with \
                 advanced airway management skills; consider transfer of care to a level 2 or 3 \
                 clinical care facility"
            }
        }
    }
}

impl fmt::Display for Risk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A NEWS2 score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Score {
    /// The sum of the parameters' scores (of those present).
    pub aggregate: u8,
    /// Each present parameter's score, in chart order.
    pub parameters: Vec<(Parameter, u8)>,
    /// True if some parameter scored 3 (a red score).
    pub red: bool,
    /// The clinical risk. With parameters missing it is a lower bound: what is missing can
    /// only add.
    pub risk: Risk,
    /// Parameters with no (fresh) value: the score is incomplete.
    pub missing: Vec<Parameter>,
    /// The SpO2 scale used.
    pub scale: SpO2Scale,
}

impl Score {
    /// True if every parameter had a value.
    pub fn complete(&self) -> bool {
        self.missing.is_empty()
    }
}

/// Rounds half away from zero to `decimals` decimals.
fn round_to(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

/// Respiration rate (/min).
pub fn respiration_rate(rr: f64) -> u8 {
    let rr = round_to(rr, 0);
    match rr {
        x if x <= 8.0 => 3,
        x if x <= 11.0 => 1,
        x if x <= 20.0 => 0,
        x if x <= 24.0 => 2,
        _ => 3,
    }
}

/// SpO2 (%) on `scale`; on scale 2 the score above 92 % depends on oxygen.
pub fn spo2(spo2: f64, scale: SpO2Scale, on_oxygen: bool) -> u8 {
    let s = round_to(spo2, 0);
    match scale {
        SpO2Scale::Scale1 => match s {
            x if x <= 91.0 => 3,
            x if x <= 93.0 => 2,
            x if x <= 95.0 => 1,
            _ => 0,
        },
        SpO2Scale::Scale2 => match s {
            x if x <= 83.0 => 3,
            x if x <= 85.0 => 2,
            x if x <= 87.0 => 1,
            x if x <= 92.0 => 0,
            _ if !on_oxygen => 0,
            x if x <= 94.0 => 1,
            x if x <= 96.0 => 2,
            _ => 3,
        },
    }
}

/// Air (0) or oxygen (2).
pub fn air_or_oxygen(on_oxygen: bool) -> u8 {
    if on_oxygen { 2 } else { 0 }
}

/// Systolic blood pressure (mmHg).
pub fn systolic_bp(sbp: f64) -> u8 {
    match round_to(sbp, 0) {
        x if x <= 90.0 => 3,
        x if x <= 100.0 => 2,
        x if x <= 110.0 => 1,
        x if x <= 219.0 => 0,
        _ => 3,
    }
}

/// Pulse (/min).
pub fn pulse(hr: f64) -> u8 {
    match round_to(hr, 0) {
        x if x <= 40.0 => 3,
        x if x <= 50.0 => 1,
        x if x <= 90.0 => 0,
        x if x <= 110.0 => 1,
        x if x <= 130.0 => 2,
        _ => 3,
    }
}

/// Consciousness: alert 0, anything else 3.
pub fn consciousness(c: Acvpu) -> u8 {
    if c == Acvpu::A { 0 } else { 3 }
}

/// Temperature (°C).
pub fn temperature(t: f64) -> u8 {
    match round_to(t, 1) {
        x if x <= 35.0 => 3,
        x if x <= 36.0 => 1,
        x if x <= 38.0 => 0,
        x if x <= 39.0 => 1,
        _ => 2,
    }
}

/// Scores `v` on `scale` (chart 1), then the risk (chart 2).
pub fn score(v: &VitalSet, scale: SpO2Scale) -> Score {
    let mut parameters = Vec::with_capacity(7);
    let mut missing = Vec::new();
    let mut add = |p: Parameter, s: Option<u8>| match s {
        Some(s) => parameters.push((p, s)),
        None => missing.push(p),
    };
    add(
        Parameter::RespirationRate,
        v.respiration_rate.map(respiration_rate),
    );
    // Scale 2 above 92 % needs to know about oxygen; without it, that value is unscored.
    let spo2_score = match (v.spo2, v.on_oxygen) {
        (Some(s), Some(o2)) => Some(spo2(s, scale, o2)),
        (Some(s), None) if scale == SpO2Scale::Scale1 || round_to(s, 0) <= 92.0 => {
            Some(spo2(s, scale, false))
        }
        _ => None,
    };
    add(Parameter::Spo2, spo2_score);
    add(Parameter::AirOrOxygen, v.on_oxygen.map(air_or_oxygen));
    add(Parameter::SystolicBp, v.systolic_bp.map(systolic_bp));
    add(Parameter::Pulse, v.pulse.map(pulse));
    add(Parameter::Consciousness, v.consciousness.map(consciousness));
    add(Parameter::Temperature, v.temperature.map(temperature));
    let aggregate: u8 = parameters.iter().map(|(_, s)| s).sum();
    let red = parameters.iter().any(|(_, s)| *s == 3);
    let risk = match aggregate {
        7.. => Risk::High,
        5..=6 => Risk::Medium,
        _ if red => Risk::LowMedium,
        _ => Risk::Low,
    };
    Score {
        aggregate,
        parameters,
        red,
        risk,
        missing,
        scale,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every band edge of every parameter: (value, score) on each side of each boundary.
    #[rustfmt::skip]
    #[test]
    fn every_band_edge_of_chart_1() {
        let rr: &[(f64, u8)] = &[
            (0.0, 3), (8.0, 3), (9.0, 1), (11.0, 1), (12.0, 0), (20.0, 0), (21.0, 2),
            (24.0, 2), (25.0, 3), (60.0, 3), (8.4, 3), (8.5, 1), (20.49, 0), (20.5, 2),
        ];
        for &(v, s) in rr {
            assert_eq!(respiration_rate(v), s, "RR {v}");
        }
        let s1: &[(f64, u8)] = &[
            (50.0, 3), (91.0, 3), (92.0, 2), (93.0, 2), (94.0, 1), (95.0, 1), (96.0, 0),
            (100.0, 0), (91.4, 3), (91.5, 2), (95.5, 0),
        ];
        for &(v, s) in s1 {
            assert_eq!(spo2(v, SpO2Scale::Scale1, false), s, "scale 1 {v} air");
            assert_eq!(spo2(v, SpO2Scale::Scale1, true), s, "scale 1 {v} O2");
        }
        // Scale 2: (value, score on air, score on oxygen).
        let s2: &[(f64, u8, u8)] = &[
            (70.0, 3, 3), (83.0, 3, 3), (84.0, 2, 2), (85.0, 2, 2), (86.0, 1, 1),
            (87.0, 1, 1), (88.0, 0, 0), (92.0, 0, 0), (93.0, 0, 1), (94.0, 0, 1),
            (95.0, 0, 2), (96.0, 0, 2), (97.0, 0, 3), (100.0, 0, 3), (92.5, 0, 1),
        ];
        for &(v, air, o2) in s2 {
            assert_eq!(spo2(v, SpO2Scale::Scale2, false), air, "scale 2 {v} air");
            assert_eq!(spo2(v, SpO2Scale::Scale2, true), o2, "scale 2 {v} O2");
        }
        assert_eq!((air_or_oxygen(false), air_or_oxygen(true)), (0, 2));
        let sbp: &[(f64, u8)] = &[
            (60.0, 3), (90.0, 3), (91.0, 2), (100.0, 2), (101.0, 1), (110.0, 1),
            (111.0, 0), (219.0, 0), (220.0, 3), (250.0, 3), (90.4, 3), (219.5, 3),
        ];
        for &(v, s) in sbp {
            assert_eq!(systolic_bp(v), s, "SBP {v}");
        }
        let hr: &[(f64, u8)] = &[
            (30.0, 3), (40.0, 3), (41.0, 1), (50.0, 1), (51.0, 0), (90.0, 0), (91.0, 1),
            (110.0, 1), (111.0, 2), (130.0, 2), (131.0, 3), (180.0, 3), (40.5, 1),
        ];
        for &(v, s) in hr {
            assert_eq!(pulse(v), s, "pulse {v}");
        }
        let t: &[(f64, u8)] = &[
            (34.0, 3), (35.0, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.1, 1),
            (39.0, 1), (39.1, 2), (41.0, 2), (35.04, 3), (35.05, 1), (38.04, 0), (38.05, 1),
        ];
        for &(v, s) in t {
            assert_eq!(temperature(v), s, "temperature {v}");
        }
        for (c, s) in [(Acvpu::A, 0), (Acvpu::C, 3), (Acvpu::V, 3), (Acvpu::P, 3), (Acvpu::U, 3)] {
            assert_eq!(consciousness(c), s, "{c:?}");
        }
    }

    fn normal() -> VitalSet {
        VitalSet {
            respiration_rate: Some(16.0),
            spo2: Some(97.0),
            on_oxygen: Some(false),
            systolic_bp: Some(120.0),
            pulse: Some(70.0),
            consciousness: Some(Acvpu::A),
            temperature: Some(37.0),
        }
    }

    /// Chart 2: the aggregate and the risk, with the red score.
    #[test]
    fn risk_thresholds_of_chart_2() {
        let s = score(&normal(), SpO2Scale::Scale1);
        assert_eq!(
            (s.aggregate, s.risk, s.red, s.complete()),
            (0, Risk::Low, false, true)
        );
        assert_eq!(s.risk.monitoring(s.aggregate), "minimum 12-hourly");
        // 4 without a 3: low.
        let v = VitalSet {
            pulse: Some(120.0),
            temperature: Some(39.5),
            ..normal()
        };
        assert_eq!(
            (
                score(&v, SpO2Scale::Scale1).aggregate,
                score(&v, SpO2Scale::Scale1).risk
            ),
            (4, Risk::Low)
        );
        // A single 3 (new confusion): low-medium.
        let v = VitalSet {
            consciousness: Some(Acvpu::C),
            ..normal()
        };
        let s = score(&v, SpO2Scale::Scale1);
        assert_eq!((s.aggregate, s.risk, s.red), (3, Risk::LowMedium, true));
        // 5 and 6: medium, a red score or not.
        let v = VitalSet {
            on_oxygen: Some(true),
            respiration_rate: Some(10.0),
            pulse: Some(45.0),
            ..normal()
        };
        let s = score(&v, SpO2Scale::Scale1);
        assert_eq!((s.aggregate, s.risk), (4, Risk::Low));
        let v = VitalSet {
            temperature: Some(35.5),
            ..v
        };
        assert_eq!(score(&v, SpO2Scale::Scale1).aggregate, 5);
        assert_eq!(score(&v, SpO2Scale::Scale1).risk, Risk::Medium);
        let v = VitalSet {
            consciousness: Some(Acvpu::V),
            respiration_rate: Some(22.0),
            ..normal()
        };
        assert_eq!(
            (
                score(&v, SpO2Scale::Scale1).aggregate,
                score(&v, SpO2Scale::Scale1).risk
            ),
            (5, Risk::Medium)
        );
        // 7: high.
        let v = VitalSet {
            consciousness: Some(Acvpu::V),
            respiration_rate: Some(26.0),
            pulse: Some(95.0),
            ..normal()
        };
        let s = score(&v, SpO2Scale::Scale1);
        assert_eq!((s.aggregate, s.risk), (7, Risk::High));
        assert_eq!(s.risk.monitoring(7), "continuous monitoring of vital signs");
        // The maximum is 20.
        let worst = VitalSet {
            respiration_rate: Some(30.0),
            spo2: Some(80.0),
            on_oxygen: Some(true),
            systolic_bp: Some(80.0),
            pulse: Some(140.0),
            consciousness: Some(Acvpu::U),
            temperature: Some(34.0),
        };
        assert_eq!(score(&worst, SpO2Scale::Scale1).aggregate, 20);
    }

    /// Scale 2 on oxygen scores high saturations; on air it does not. A missing parameter
    /// makes the score incomplete (a lower bound).
    #[test]
    fn scale_2_and_missing_parameters() {
        let v = VitalSet {
            spo2: Some(97.0),
            on_oxygen: Some(true),
            ..normal()
        };
        assert_eq!(score(&v, SpO2Scale::Scale2).aggregate, 3 + 2);
        assert_eq!(score(&v, SpO2Scale::Scale1).aggregate, 2);
        let v = VitalSet {
            spo2: Some(89.0),
            ..normal()
        };
        assert_eq!(score(&v, SpO2Scale::Scale2).aggregate, 0);
        assert_eq!(score(&v, SpO2Scale::Scale1).aggregate, 3);
        let v = VitalSet {
            temperature: None,
            on_oxygen: None,
            ..normal()
        };
        let s = score(&v, SpO2Scale::Scale2);
        assert_eq!(
            s.missing,
            [
                Parameter::Spo2,
                Parameter::AirOrOxygen,
                Parameter::Temperature
            ]
        );
        assert!(!s.complete());
        let s = score(&v, SpO2Scale::Scale1);
        assert_eq!(s.missing, [Parameter::AirOrOxygen, Parameter::Temperature]);
    }

    #[test]
    fn acvpu_parses() {
        assert_eq!(Acvpu::parse("New Confusion"), Some(Acvpu::C));
        assert_eq!(Acvpu::parse("u"), Some(Acvpu::U));
        assert_eq!(Acvpu::parse("drowsy"), None);
        for c in 0..5 {
            assert_eq!(Acvpu::from_code(c).unwrap().code(), c);
        }
    }
}
