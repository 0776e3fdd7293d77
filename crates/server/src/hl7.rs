//! HL7 v2.x: the ORU^R01 observation messages bedside monitors and gateways send (IHE PCD-01,
//! "Device Enterprise Communication"), framed in MLLP, read into the hospital's raw vital
//! signs; and the ACK each message is answered with. Pure: no I/O, no store (the listener,
//! [`crate::mllp`], resolves patients and stores).
//!
//! # What is read
//! - **MLLP** ([`MllpReader`]): `0x0B message 0x1C 0x0D`; bytes between frames are ignored; a
//!   frame over the size limit is reported as such (the listener refuses it and closes).
//! - **Separators** from MSH-1 and MSH-2 (`|^~\&` usually, any others a sender picks);
//!   segments end with `\r`, `\n` or `\r\n`. Escape sequences `\F\ \S\ \R\ \E\ \T\`,
//!   `\Xhh…\` and `\.br\` are decoded; other formatting escapes are dropped.
//! - **MSH**: sending and receiving application and facility (MSH-3..6, echoed swapped in the
//!   ACK), MSH-7 (the message time: the last fallback for an observation's time, and its
//!   zone the default zone of every time in the message), MSH-9 (must be `ORU^R01`), MSH-10
//!   (the control id the ACK quotes), MSH-12 (a `2.x` version).
//! - **PID-3** (every repetition, `value^^^authority^type`): the patient ([`PatientIdentifier`]).
//!   Each PID starts a patient's group; the OBX segments after it are that patient's.
//! - **PV1-3** point of care (its first component): the patient's ward.
//! - **OBR-7**: the observation time of the OBX segments after it that carry none.
//! - **OBX**: OBX-2 value type (`NM`, `SN`, `ST`/`TX`/`FT`, `CE`/`CWE`/`CNE`), OBX-3
//!   `code^text^system` in MDC (ISO/IEEE 11073-10101, as IHE PCD-01 sends:
//!   `150456^MDC_PULS_OXIM_SAT_O2^MDC`) or LOINC (`LN`), the alternate code (components
//!   4–6) too; OBX-5 value; OBX-6 units
//!   (UCUM or MDC, `262688^MDC_DIM_PERCENT^MDC`); OBX-11 result status (`F`, `R`, `C`, or
//!   empty are taken, `C` as a correction of the value stored for its key; `X`, `D`, `W` and
//!   the others are skipped); OBX-14 observation time,
//!   else OBR-7, else MSH-7; OBX-18 equipment instance (the observation's source), else
//!   MSH-3 and MSH-4. An OBX whose code is not a vital sign medkeeper scores (the other
//!   parameters a monitor sends, its device and channel headers) is skipped, as is one with
//!   an empty value (the monitor shows no reading).
//!
//! # Errors
//! [`Hl7Error`] carries the acknowledgment code (AR: not an HL7 message, not ORU^R01, not
//! version 2; AE: an ORU^R01 that cannot be taken, nothing stored), the HL7 error condition
//! (table 0357) and where (`OBX^3^5`: the third OBX, field 5).
//!
//! Every function here takes any input without panicking (tested on random bytes and
//! mutated messages).

use std::fmt::Write as _;

use medkeeper_hospital::PatientId;
use medkeeper_hospital::vitals::{RawObservation, RawValue, Revision, VitalCode};

/// MLLP start block (vertical tab).
pub const START_BLOCK: u8 = 0x0B;
/// MLLP end block (file separator), followed by [`CARRIAGE_RETURN`].
pub const END_BLOCK: u8 = 0x1C;
/// Carriage return: the end of an MLLP frame and of a segment.
pub const CARRIAGE_RETURN: u8 = 0x0D;

/// What an [`MllpReader`] found in the bytes pushed into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A whole message (the bytes between the start and end block).
    Message(Vec<u8>),
    /// A message longer than the limit; its first bytes (the limit's worth). Nothing after
    /// it is read: the connection should be answered and closed.
    TooLarge(Vec<u8>),
}

/// Splits a byte stream into MLLP frames, holding at most `max` bytes of a frame.
#[derive(Debug)]
pub struct MllpReader {
    max: usize,
    buf: Vec<u8>,
    in_frame: bool,
    failed: bool,
}

impl MllpReader {
    /// A reader of frames of at most `max` bytes.
    pub fn new(max: usize) -> MllpReader {
        MllpReader {
            max,
            buf: Vec::new(),
            in_frame: false,
            failed: false,
        }
    }

    /// Reads `bytes`; the frames they complete. Bytes outside a frame (the `\r` after the
    /// end block, stray line ends) are dropped; a start block inside a frame starts it over.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        if self.failed {
            return frames;
        }
        for &b in bytes {
            if !self.in_frame {
                if b == START_BLOCK {
                    self.in_frame = true;
                    self.buf.clear();
                }
                continue;
            }
            match b {
                END_BLOCK => {
                    self.in_frame = false;
                    frames.push(Frame::Message(std::mem::take(&mut self.buf)));
                }
                START_BLOCK => self.buf.clear(),
                _ if self.buf.len() >= self.max => {
                    self.failed = true;
                    self.in_frame = false;
                    frames.push(Frame::TooLarge(std::mem::take(&mut self.buf)));
                    return frames;
                }
                _ => self.buf.push(b),
            }
        }
        frames
    }

    /// True while a frame has started and not ended (a sender in the middle of a message).
    pub fn mid_frame(&self) -> bool {
        self.in_frame
    }
}

/// Wraps `message` in an MLLP frame.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(START_BLOCK);
    out.extend_from_slice(message.as_bytes());
    out.push(END_BLOCK);
    out.push(CARRIAGE_RETURN);
    out
}

/// A message's text: UTF-8 if it is, else ISO 8859-1 (every byte a character), which is what
/// HL7 senders use when not UTF-8.
pub fn decode(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// The acknowledgment code of an ACK (MSA-1, HL7 table 0008, original mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// `AA`: stored.
    Accept,
    /// `AE`: refused (nothing stored); the ERR segment says why.
    Error,
    /// `AR`: not a message this receiver takes (not HL7, not ORU^R01, too large).
    Reject,
}

impl AckCode {
    /// `AA`, `AE` or `AR`.
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::Accept => "AA",
            AckCode::Error => "AE",
            AckCode::Reject => "AR",
        }
    }
}

/// An HL7 error condition (table 0357), as ERR-3 reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Condition {
    /// 100: a segment is missing or out of place (no MSH first).
    SegmentSequence,
    /// 101: a required field is missing.
    RequiredFieldMissing,
    /// 102: a value is not of its type, or impossible.
    DataType,
    /// 200: not a message type this receiver takes.
    UnsupportedMessageType,
    /// 201: not an event this receiver takes.
    UnsupportedEvent,
    /// 203: not a version this receiver takes.
    UnsupportedVersion,
    /// 204: the patient is not known.
    UnknownKey,
    /// 205: a different value for an observation already stored (same patient, source, code
    /// and time) that is not a correction (OBX-11 `C`).
    DuplicateKey,
    /// 206: the receiver cannot take it now (no coordination session, a conflict): send it
    /// again later (a message sent twice is stored once).
    RecordLocked,
    /// 207: the receiver failed.
    ApplicationInternal,
}

impl Condition {
    /// The code.
    pub fn code(self) -> u16 {
        match self {
            Condition::SegmentSequence => 100,
            Condition::RequiredFieldMissing => 101,
            Condition::DataType => 102,
            Condition::UnsupportedMessageType => 200,
            Condition::UnsupportedEvent => 201,
            Condition::UnsupportedVersion => 203,
            Condition::UnknownKey => 204,
            Condition::DuplicateKey => 205,
            Condition::RecordLocked => 206,
            Condition::ApplicationInternal => 207,
        }
    }

    /// Its name in table 0357.
    pub fn text(self) -> &'static str {
        match self {
            Condition::SegmentSequence => "Segment sequence error",
            Condition::RequiredFieldMissing => "Required field missing",
            Condition::DataType => "Data type error",
            Condition::UnsupportedMessageType => "Unsupported message type",
            Condition::UnsupportedEvent => "Unsupported event code",
            Condition::UnsupportedVersion => "Unsupported version id",
            Condition::UnknownKey => "Unknown key identifier",
            Condition::DuplicateKey => "Duplicate key identifier",
            Condition::RecordLocked => "Application record locked",
            Condition::ApplicationInternal => "Application internal error",
        }
    }
}

/// Where in a message an error is (ERR-2): segment id, its occurrence (1-based), field and
/// component (0: the whole field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// `OBX`.
    pub segment: String,
    /// Which `OBX`, 1-based.
    pub sequence: usize,
    /// The field, 1-based (0: the segment).
    pub field: usize,
    /// The component, 1-based (0: the whole field).
    pub component: usize,
}

/// Why a message is answered AE or AR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct Hl7Error {
    /// AE or AR.
    pub ack: AckCode,
    /// The HL7 error condition.
    pub condition: Condition,
    /// Where, if one place.
    pub location: Option<Location>,
    /// What, for people (no patient data beyond what the sender sent).
    pub text: String,
}

impl Hl7Error {
    /// An AR.
    pub fn reject(condition: Condition, text: impl Into<String>) -> Hl7Error {
        Hl7Error {
            ack: AckCode::Reject,
            condition,
            location: None,
            text: text.into(),
        }
    }

    /// An AE.
    pub fn error(condition: Condition, text: impl Into<String>) -> Hl7Error {
        Hl7Error {
            ack: AckCode::Error,
            condition,
            location: None,
            text: text.into(),
        }
    }

    /// At `segment` (its `sequence`th occurrence), `field`, `component`.
    pub fn at(mut self, segment: &str, sequence: usize, field: usize, component: usize) -> Self {
        self.location = Some(Location {
            segment: segment.to_string(),
            sequence,
            field,
            component,
        });
        self
    }
}

/// The separators of a message (MSH-1, MSH-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Separators {
    /// `|`.
    pub field: char,
    /// `^`.
    pub component: char,
    /// `~`.
    pub repetition: char,
    /// `\`, if any.
    pub escape: Option<char>,
    /// `&`, if any.
    pub subcomponent: Option<char>,
}

impl Default for Separators {
    fn default() -> Self {
        Separators {
            field: '|',
            component: '^',
            repetition: '~',
            escape: Some('\\'),
            subcomponent: Some('&'),
        }
    }
}

impl Separators {
    /// Decodes the escape sequences of `raw` (one component or subcomponent).
    pub fn unescape(&self, raw: &str) -> String {
        let Some(esc) = self.escape else {
            return raw.to_string();
        };
        if !raw.contains(esc) {
            return raw.to_string();
        }
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(i) = rest.find(esc) {
            out.push_str(&rest[..i]);
            let after = &rest[i + esc.len_utf8()..];
            let Some(j) = after.find(esc) else {
                // Unterminated: kept as it is.
                out.push_str(&rest[i..]);
                return out;
            };
            let seq = &after[..j];
            match seq {
                "F" => out.push(self.field),
                "S" => out.push(self.component),
                "R" => out.push(self.repetition),
                "E" => out.push(esc),
                "T" => out.push(self.subcomponent.unwrap_or('&')),
                ".br" => out.push('\n'),
                _ if seq.starts_with('X') => {
                    let hex = &seq[1..];
                    let bytes: Vec<u8> = (0..hex.len() / 2)
                        .filter_map(|k| hex.get(2 * k..2 * k + 2))
                        .filter_map(|h| u8::from_str_radix(h, 16).ok())
                        .collect();
                    out.push_str(&decode(&bytes));
                }
                // Highlighting, character set changes and other formatting: dropped.
                _ => {}
            }
            rest = &after[j + esc.len_utf8()..];
        }
        out.push_str(rest);
        out
    }
}

/// Escapes `text` for a message with the default separators (and no line breaks).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\E\\"),
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '&' => out.push_str("\\T\\"),
            '~' => out.push_str("\\R\\"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// `text` with every control character written as its escape (`\u{0}` for NUL): for what
/// goes to a log or an audit record, which must never carry a raw NUL (a log line cut short, a
/// PostgreSQL text column that refuses it) or a line break a reader would take for a new entry.
pub fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The first NUL character in `msg` (as an AE: HL7 v2 text never carries one — ER7 has no
/// escape for it — and a store may refuse it), with where it is (`MSH^1^3`).
pub fn refuse_nul(msg: &Message) -> Result<(), Hl7Error> {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for seg in &msg.segments {
        let id = printable(seg.id());
        let n = match seen.iter_mut().find(|(s, _)| *s == id) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                seen.push((id.clone(), 1));
                1
            }
        };
        if let Some(f) = seg.fields.iter().position(|f| f.contains('\0')) {
            return Err(Hl7Error::error(
                Condition::DataType,
                format!(
                    "{id}-{f} holds a NUL character: HL7 v2 text cannot carry one; nothing stored"
                ),
            )
            .at(&id, n, f, 0));
        }
    }
    Ok(())
}

/// One segment: its fields as sent (escaped), numbered as HL7 numbers them (`fields[0]` is
/// the segment id; for MSH, `fields[1]` is the field separator and `fields[2]` the encoding
/// characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    fields: Vec<String>,
}

impl Segment {
    /// `MSH`, `PID`, ...
    pub fn id(&self) -> &str {
        self.fields.first().map_or("", String::as_str)
    }

    /// Field `n` as sent (empty if absent).
    pub fn raw(&self, n: usize) -> &str {
        self.fields.get(n).map_or("", String::as_str)
    }
}

/// A parsed message: separators and segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its separators.
    pub separators: Separators,
    /// Its segments, MSH first.
    pub segments: Vec<Segment>,
}

/// What MSH says about a message (every part unescaped; empty if absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// MSH-3, its components.
    pub sending_application: Vec<String>,
    /// MSH-4, its components.
    pub sending_facility: Vec<String>,
    /// MSH-5, its components.
    pub receiving_application: Vec<String>,
    /// MSH-6, its components.
    pub receiving_facility: Vec<String>,
    /// MSH-7 as sent.
    pub time: String,
    /// MSH-9: message code, trigger event, structure.
    pub message_type: [String; 3],
    /// MSH-10.
    pub control_id: String,
    /// MSH-11 (`P`, `T`, `D`).
    pub processing_id: String,
    /// MSH-12 (`2.6`).
    pub version: String,
}

/// An HD or EI as one string: its non-empty leading components joined with `^`.
fn join_components(parts: &[String]) -> String {
    let end = parts
        .iter()
        .rposition(|p| !p.is_empty())
        .map_or(0, |i| i + 1);
    parts[..end].join("^")
}

impl Header {
    /// The sending application, as one string (`VSP^080019FFFE134535^EUI-64`).
    pub fn application(&self) -> String {
        join_components(&self.sending_application)
    }

    /// The sending facility, as one string.
    pub fn facility(&self) -> String {
        join_components(&self.sending_facility)
    }

    /// The sender: application, and `/facility` if there is one.
    pub fn sender(&self) -> String {
        let (a, f) = (self.application(), self.facility());
        if f.is_empty() { a } else { format!("{a}/{f}") }
    }
}

impl Message {
    /// Parses a message's text: MSH first, its separators, the segments.
    ///
    /// # Errors
    /// AR with [`Condition::SegmentSequence`] if it does not start with a well-formed MSH.
    pub fn parse(text: &str) -> Result<Message, Hl7Error> {
        let text = text.trim_start_matches(|c: char| c.is_whitespace());
        let not_hl7 = |why: &str| {
            Hl7Error::reject(
                Condition::SegmentSequence,
                format!("not an HL7 v2 message: {why}"),
            )
            .at("MSH", 1, 0, 0)
        };
        let Some(after) = text.strip_prefix("MSH") else {
            return Err(not_hl7("it does not start with MSH"));
        };
        let mut chars = after.chars();
        let Some(field) = chars.next() else {
            return Err(not_hl7("no field separator"));
        };
        let encoding: String = chars.take_while(|&c| c != field).collect();
        let enc: Vec<char> = encoding.chars().collect();
        let bad_sep = |c: char| c.is_alphanumeric() || c.is_whitespace() || c.is_control();
        if bad_sep(field)
            || !(2..=5).contains(&enc.len())
            || enc.iter().any(|&c| bad_sep(c) || c == field)
            || (1..enc.len()).any(|i| enc[..i].contains(&enc[i]))
        {
            return Err(not_hl7("bad separators in MSH-1 and MSH-2"));
        }
        let separators = Separators {
            field,
            component: enc[0],
            repetition: enc[1],
            escape: enc.get(2).copied(),
            subcomponent: enc.get(3).copied(),
        };
        let mut segments = Vec::new();
        for line in text.split(['\r', '\n']) {
            if line.trim().is_empty() {
                continue;
            }
            let mut fields: Vec<String> = line.split(field).map(str::to_string).collect();
            if fields.first().is_some_and(|f| f == "MSH") {
                // MSH-1 is the separator itself: number the fields as HL7 does.
                fields.insert(1, field.to_string());
            }
            segments.push(Segment { fields });
        }
        Ok(Message {
            separators,
            segments,
        })
    }

    /// The repetitions of a field, as sent.
    pub fn repetitions<'a>(&self, raw: &'a str) -> Vec<&'a str> {
        if raw.is_empty() {
            return Vec::new();
        }
        raw.split(self.separators.repetition).collect()
    }

    /// The components of one repetition, unescaped (the first subcomponent of each).
    pub fn components(&self, rep: &str) -> Vec<String> {
        rep.split(self.separators.component)
            .map(|c| self.separators.unescape(self.first_sub(c)))
            .collect()
    }

    /// The subcomponents of a component, unescaped.
    pub fn subcomponents(&self, raw_component: &str) -> Vec<String> {
        match self.separators.subcomponent {
            Some(s) => raw_component
                .split(s)
                .map(|x| self.separators.unescape(x))
                .collect(),
            None => vec![self.separators.unescape(raw_component)],
        }
    }

    fn first_sub<'a>(&self, c: &'a str) -> &'a str {
        match self.separators.subcomponent {
            Some(s) => c.split(s).next().unwrap_or(""),
            None => c,
        }
    }

    /// Component `c` (1-based) of the first repetition of field `f` of `seg`, unescaped.
    pub fn get(&self, seg: &Segment, f: usize, c: usize) -> String {
        let raw = seg.raw(f);
        let first = raw.split(self.separators.repetition).next().unwrap_or("");
        first
            .split(self.separators.component)
            .nth(c.saturating_sub(1))
            .map(|x| self.separators.unescape(self.first_sub(x)))
            .unwrap_or_default()
    }

    /// The components of the first repetition of field `f`.
    fn field_components(&self, seg: &Segment, f: usize) -> Vec<String> {
        let raw = seg.raw(f);
        match self.repetitions(raw).first() {
            Some(r) => self.components(r),
            None => Vec::new(),
        }
    }

    /// MSH's fields.
    pub fn header(&self) -> Header {
        let Some(msh) = self.segments.first().filter(|s| s.id() == "MSH") else {
            return Header::default();
        };
        Header {
            sending_application: self.field_components(msh, 3),
            sending_facility: self.field_components(msh, 4),
            receiving_application: self.field_components(msh, 5),
            receiving_facility: self.field_components(msh, 6),
            time: self.get(msh, 7, 1),
            message_type: [
                self.get(msh, 9, 1),
                self.get(msh, 9, 2),
                self.get(msh, 9, 3),
            ],
            control_id: self.get(msh, 10, 1),
            processing_id: self.get(msh, 11, 1),
            version: self.get(msh, 12, 1),
        }
    }
}

/// One identifier of PID-3 (`value^^^authority^type`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientIdentifier {
    /// CX-1.
    pub value: String,
    /// CX-4, its namespace id (else its universal id).
    pub authority: String,
    /// CX-5 (`MR`).
    pub type_code: String,
}

impl PatientIdentifier {
    /// The identifier system medkeeper maps it under: the assigning authority, else `MR`.
    pub fn system(&self) -> &str {
        if self.authority.is_empty() {
            "MR"
        } else {
            &self.authority
        }
    }

    /// The medkeeper patient id itself, if the value is one (`p-…`).
    pub fn patient_id(&self) -> Option<PatientId> {
        if self.value.starts_with("p-") {
            self.value.parse().ok()
        } else {
            None
        }
    }
}

/// One vital sign read from an OBX.
#[derive(Debug, Clone, PartialEq)]
pub struct Hl7Observation {
    /// What.
    pub code: VitalCode,
    /// The code as sent (`mdc:150456`, `loinc:8867-4`).
    pub sent_code: String,
    /// The value and unit.
    pub value: RawValue,
    /// When, ms since the epoch.
    pub effective_ms: i64,
    /// The equipment (OBX-18), else the sender (MSH-3, MSH-4).
    pub source: String,
    /// Which OBX of the message (1-based), for an error's location.
    pub obx: usize,
    /// OBX-11 `C` (a corrected result): it replaces the value stored for its patient, source,
    /// code and time; `F`, `R` or empty: a first report.
    pub revision: Revision,
}

impl Hl7Observation {
    /// The raw observation of `patient`.
    pub fn to_raw(&self, patient: PatientId) -> RawObservation {
        RawObservation {
            patient,
            code: self.code,
            sent_code: self.sent_code.clone(),
            value: self.value.clone(),
            effective_ms: self.effective_ms,
            source: self.source.clone(),
            revision: self.revision,
        }
    }
}

/// One patient's part of an ORU^R01: a PID and what follows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PatientResult {
    /// Which PID (1-based).
    pub pid: usize,
    /// PID-3's repetitions that have a value.
    pub identifiers: Vec<PatientIdentifier>,
    /// PV1-3's point of care.
    pub ward: Option<String>,
    /// The vital signs.
    pub observations: Vec<Hl7Observation>,
}

/// An ORU^R01, read.
#[derive(Debug, Clone, PartialEq)]
pub struct Oru {
    /// MSH.
    pub header: Header,
    /// Per PID, its observations.
    pub patients: Vec<PatientResult>,
}

impl Oru {
    /// The vital signs of every patient.
    pub fn observation_count(&self) -> usize {
        self.patients.iter().map(|p| p.observations.len()).sum()
    }
}

/// The longest a ward name may be.
const MAX_WARD: usize = 64;

/// Reads an ORU^R01 from a parsed message.
///
/// # Errors
/// AR (200, 201, 203) if it is not an ORU^R01 of version 2.x; AE with 101 (a required field:
/// no PID before an OBX, no time for an observation), 102 (a value that is not a number, a
/// bad time, an unsupported value type) — with where. A message without any vital sign is
/// AE 101.
pub fn read_oru(msg: &Message) -> Result<Oru, Hl7Error> {
    let header = msg.header();
    let [code, event, _] = &header.message_type;
    if code != "ORU" {
        return Err(Hl7Error::reject(
            Condition::UnsupportedMessageType,
            format!("message type {code:?}: only ORU^R01 is taken"),
        )
        .at("MSH", 1, 9, 1));
    }
    if event != "R01" {
        return Err(Hl7Error::reject(
            Condition::UnsupportedEvent,
            format!("event {event:?}: only ORU^R01 is taken"),
        )
        .at("MSH", 1, 9, 2));
    }
    if !(header.version.is_empty() || header.version.starts_with("2.")) {
        return Err(Hl7Error::reject(
            Condition::UnsupportedVersion,
            format!("version {:?}: only 2.x is taken", header.version),
        )
        .at("MSH", 1, 12, 1));
    }
    // The message's zone is the default of every time in it (HL7 v2.6 §2.A.22).
    let msh_zone = zone_of(&header.time);
    let sender = header.sender();
    let mut patients: Vec<PatientResult> = Vec::new();
    let mut obr_time: Option<(String, usize)> = None;
    let mut counts: std::collections::HashMap<String, usize> = Default::default();
    for seg in &msg.segments {
        let id = seg.id().to_string();
        let n = {
            let c = counts.entry(id.clone()).or_insert(0);
            *c += 1;
            *c
        };
        match id.as_str() {
            "PID" => {
                let identifiers = msg
                    .repetitions(seg.raw(3))
                    .into_iter()
                    .filter_map(|rep| {
                        let comps: Vec<&str> = rep.split(msg.separators.component).collect();
                        let value = msg.separators.unescape(msg.first_sub(comps.first()?));
                        if value.trim().is_empty() {
                            return None;
                        }
                        let authority = comps
                            .get(3)
                            .map(|a| msg.subcomponents(a))
                            .and_then(|subs| subs.into_iter().take(2).find(|s| !s.is_empty()))
                            .unwrap_or_default();
                        let type_code = comps
                            .get(4)
                            .map(|t| msg.separators.unescape(msg.first_sub(t)))
                            .unwrap_or_default();
                        Some(PatientIdentifier {
                            value: value.trim().to_string(),
                            authority,
                            type_code,
                        })
                    })
                    .collect();
                patients.push(PatientResult {
                    pid: n,
                    identifiers,
                    ward: None,
                    observations: Vec::new(),
                });
                obr_time = None;
            }
            "PV1" => {
                let ward = msg.get(seg, 3, 1).trim().to_string();
                if let Some(p) = patients.last_mut()
                    && !ward.is_empty()
                {
                    if ward.chars().count() > MAX_WARD || ward.chars().any(char::is_control) {
                        return Err(Hl7Error::error(
                            Condition::DataType,
                            format!("PV1-3 point of care: at most {MAX_WARD} characters"),
                        )
                        .at("PV1", n, 3, 1));
                    }
                    p.ward = Some(ward);
                }
            }
            "OBR" => {
                let t = msg.get(seg, 7, 1);
                obr_time = (!t.is_empty()).then_some((t, n));
            }
            "OBX" => {
                if let Some(o) =
                    read_obx(msg, seg, n, obr_time.as_ref(), &header, msh_zone, &sender)?
                {
                    let Some(p) = patients.last_mut() else {
                        return Err(Hl7Error::error(
                            Condition::RequiredFieldMissing,
                            "an OBX with a vital sign before any PID: whose is it?",
                        )
                        .at("OBX", n, 0, 0));
                    };
                    p.observations.push(o);
                }
            }
            _ => {}
        }
    }
    for p in &patients {
        if !p.observations.is_empty() && p.identifiers.is_empty() {
            return Err(Hl7Error::error(
                Condition::RequiredFieldMissing,
                "PID-3: no patient identifier",
            )
            .at("PID", p.pid, 3, 1));
        }
    }
    let oru = Oru { header, patients };
    if oru.observation_count() == 0 {
        return Err(Hl7Error::error(
            Condition::RequiredFieldMissing,
            "no vital sign in the message (OBX-3 in MDC or LOINC: respiratory rate, SpO2, \
             oxygen, systolic blood pressure, pulse, consciousness, temperature)",
        ));
    }
    Ok(oru)
}

/// The vital sign an OBX carries, `None` if it carries none (another parameter, a header,
/// a deleted or absent value).
fn read_obx(
    msg: &Message,
    seg: &Segment,
    n: usize,
    obr_time: Option<&(String, usize)>,
    header: &Header,
    msh_zone: Option<i32>,
    sender: &str,
) -> Result<Option<Hl7Observation>, Hl7Error> {
    let ident = msg.field_components(seg, 3);
    let part = |i: usize| ident.get(i).map(|s| s.trim()).unwrap_or("");
    let mut found = None;
    for (code, text, system) in [(part(0), part(1), part(2)), (part(3), part(4), part(5))] {
        let sys = system.to_ascii_uppercase();
        let hit = match sys.as_str() {
            "MDC" | "ISO11073-10101" => VitalCode::from_mdc(code)
                .or_else(|| VitalCode::from_mdc(text))
                .map(|c| (c, format!("mdc:{code}"))),
            "LN" | "LOINC" => VitalCode::from_loinc(code).map(|c| (c, format!("loinc:{code}"))),
            // No system: an MDC reference id in the text says it.
            "" if text.starts_with("MDC_") => {
                VitalCode::from_mdc(text).map(|c| (c, format!("mdc:{text}")))
            }
            _ => None,
        };
        if hit.is_some() {
            found = hit;
            break;
        }
    }
    let Some((code, sent_code)) = found else {
        return Ok(None);
    };
    let status = msg.get(seg, 11, 1).trim().to_ascii_uppercase();
    if !matches!(status.as_str(), "" | "F" | "R" | "C") {
        return Ok(None);
    }
    let raw_value = seg.raw(5);
    let first_rep = raw_value
        .split(msg.separators.repetition)
        .next()
        .unwrap_or("");
    if first_rep.trim().is_empty() {
        return Ok(None);
    }
    let comps = msg.components(first_rep);
    let value_type = msg.get(seg, 2, 1).trim().to_ascii_uppercase();
    let bad = |why: String| Err(Hl7Error::error(Condition::DataType, why).at("OBX", n, 5, 0));
    let unit = unit_of(msg, seg);
    let value = match value_type.as_str() {
        "NM" => match parse_number(&comps[0]) {
            Some(v) => RawValue::Quantity(v, unit),
            None => return bad(format!("OBX-5 {:?} is not a number (NM)", comps[0])),
        },
        // Structured numeric: `=^72`, `^72`; a comparison or a range is no reading.
        "SN" => {
            let cmp = comps.first().map_or("", |s| s.trim());
            let num = comps.get(1).map_or("", |s| s.trim());
            let more = comps.iter().skip(2).any(|s| !s.trim().is_empty());
            match parse_number(num) {
                Some(v) if matches!(cmp, "" | "=") && !more => RawValue::Quantity(v, unit),
                _ => return bad("OBX-5: a structured numeric (SN) must be one exact number".into()),
            }
        }
        "ST" | "TX" | "FT" => RawValue::Text(comps.join("^").trim().to_string()),
        "CE" | "CWE" | "CNE" => {
            let c = comps.first().map_or("", |s| s.trim());
            let t = comps.get(1).map_or("", |s| s.trim());
            RawValue::Text(if c.is_empty() { t } else { c }.to_string())
        }
        "" => match parse_number(&comps[0]) {
            Some(v) => RawValue::Quantity(v, unit),
            None => RawValue::Text(comps[0].trim().to_string()),
        },
        other => {
            return Err(Hl7Error::error(
                Condition::DataType,
                format!("OBX-2 value type {other:?}: a vital sign is NM, SN, ST, CE or CWE"),
            )
            .at("OBX", n, 2, 1));
        }
    };
    let effective_ms = {
        let obx_time = msg.get(seg, 14, 1);
        let (t, at) = if !obx_time.trim().is_empty() {
            (obx_time, ("OBX", n, 14))
        } else if let Some((t, obr)) = obr_time {
            (t.clone(), ("OBR", *obr, 7))
        } else if !header.time.trim().is_empty() {
            (header.time.clone(), ("MSH", 1, 7))
        } else {
            return Err(Hl7Error::error(
                Condition::RequiredFieldMissing,
                "no observation time (OBX-14, OBR-7 or MSH-7)",
            )
            .at("OBX", n, 14, 1));
        };
        parse_time(&t, msh_zone).map_err(|why| {
            Hl7Error::error(
                Condition::DataType,
                format!("{}-{} {t:?}: {why}", at.0, at.2),
            )
            .at(at.0, at.1, at.2, 1)
        })?
    };
    let equipment = join_components(&msg.field_components(seg, 18));
    let source = if equipment.is_empty() {
        sender.to_string()
    } else {
        equipment
    };
    Ok(Some(Hl7Observation {
        code,
        sent_code,
        value,
        effective_ms,
        source,
        obx: n,
        revision: if status == "C" {
            Revision::Correction
        } else {
            Revision::Original
        },
    }))
}

/// The unit of OBX-6 as [`medkeeper_hospital::vitals::clean`] knows it: an MDC unit by its
/// reference id (`MDC_DIM_PERCENT`) else its code, anything else by its code (UCUM: `%`,
/// `/min`, `Cel`) else its text.
fn unit_of(msg: &Message, seg: &Segment) -> String {
    let u = msg.field_components(seg, 6);
    let part = |i: usize| u.get(i).map(|s| s.trim()).unwrap_or("");
    let (code, text, system) = (part(0), part(1), part(2));
    if (system.eq_ignore_ascii_case("MDC") || system.is_empty()) && text.starts_with("MDC_DIM_") {
        return text.to_string();
    }
    if code.is_empty() { text } else { code }.to_string()
}

/// An HL7 NM: an optional sign, digits, an optional decimal point and digits.
fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    let ok = !digits.is_empty()
        && digits.chars().filter(|&c| c == '.').count() <= 1
        && digits.chars().all(|c| c.is_ascii_digit() || c == '.')
        && digits.chars().any(|c| c.is_ascii_digit());
    if !ok {
        return None;
    }
    s.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// The zone of a DTM (`+0100` → 60 minutes), if it has one.
fn zone_of(dtm: &str) -> Option<i32> {
    split_zone(dtm.trim()).ok().and_then(|(_, z)| z)
}

/// A DTM's digits and its zone in minutes east of UTC.
fn split_zone(s: &str) -> Result<(&str, Option<i32>), String> {
    match s.find(['+', '-']) {
        None => Ok((s, None)),
        Some(i) => {
            let (body, zone) = s.split_at(i);
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let z = &zone[1..];
            if z.len() != 4 || !z.bytes().all(|b| b.is_ascii_digit()) {
                return Err("the zone is not +HHMM or -HHMM".into());
            }
            let (h, m): (i32, i32) = (
                z[..2].parse().map_err(|_| "bad zone")?,
                z[2..].parse().map_err(|_| "bad zone")?,
            );
            if h > 23 || m > 59 {
                return Err("the zone is out of range".into());
            }
            Ok((body, Some(sign * (h * 60 + m))))
        }
    }
}

/// An observation time, `YYYYMMDDHHMM[SS[.S…]][+/-ZZZZ]`, as ms since the epoch; without a
/// zone, in `default_zone` (minutes east of UTC; UTC if `None`).
///
/// # Errors
/// A text saying what is wrong (less precise than minutes, not a date, a bad zone).
pub fn parse_time(s: &str, default_zone: Option<i32>) -> Result<i64, String> {
    let (body, zone) = split_zone(s.trim())?;
    let zone = zone.or(default_zone).unwrap_or(0);
    let (digits, fraction) = match body.split_once('.') {
        Some((d, f)) => (d, Some(f)),
        None => (body, None),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || !(digits.len() == 12 || digits.len() == 14) {
        return Err("expected YYYYMMDDHHMM[SS[.S]][+/-ZZZZ], at least to the minute".into());
    }
    let num = |r: std::ops::Range<usize>| -> u32 {
        digits[r]
            .bytes()
            .fold(0, |a, b| a * 10 + u32::from(b - b'0'))
    };
    let (year, month, day, hour, minute) =
        (num(0..4), num(4..6), num(6..8), num(8..10), num(10..12));
    let second = if digits.len() == 14 { num(12..14) } else { 0 };
    let nanos = match fraction {
        None => 0,
        Some(f)
            if digits.len() == 14
                && (1..=9).contains(&f.len())
                && f.bytes().all(|b| b.is_ascii_digit()) =>
        {
            f.bytes()
                .chain(std::iter::repeat(b'0'))
                .take(9)
                .fold(0u32, |a, b| a * 10 + u32::from(b - b'0'))
        }
        Some(_) => return Err("the fraction of a second is not .S to .SSSS after seconds".into()),
    };
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok())
        .ok_or("no such month")?;
    let date = time::Date::from_calendar_date(year as i32, month, day as u8)
        .map_err(|_| "no such date")?;
    let t = time::Time::from_hms_nano(hour as u8, minute as u8, second as u8, nanos)
        .map_err(|_| "no such time of day")?;
    let offset = time::UtcOffset::from_whole_seconds(zone * 60).map_err(|_| "bad zone")?;
    let at = time::PrimitiveDateTime::new(date, t).assume_offset(offset);
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).map_err(|_| "out of range".into())
}

/// `ms` since the epoch as an HL7 DTM in UTC (`YYYYMMDDHHMMSS+0000`).
pub fn format_time(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}+0000",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// The longest text an ACK carries (MSA-3, ERR-8): the ACK stays one small read.
const MAX_ACK_TEXT: usize = 400;

/// The ACK of a message whose MSH is `header` (default if it had none): MSH with sender and
/// receiver swapped, MSA with `error`'s code (AA without one) and the control id, and for an
/// error an ERR segment (location, HL7 error code, severity E, text). Segments end with `\r`.
pub fn ack(header: &Header, error: Option<&Hl7Error>, control_id: &str, now_ms: i64) -> String {
    let hd = |parts: &[String]| -> String {
        let end = parts
            .iter()
            .rposition(|p| !p.is_empty())
            .map_or(0, |i| i + 1);
        parts[..end]
            .iter()
            .map(|p| escape(p))
            .collect::<Vec<_>>()
            .join("^")
    };
    let ours = hd(&header.receiving_application);
    let ours = if ours.is_empty() {
        "medkeeper".to_string()
    } else {
        ours
    };
    let version = if header.version.is_empty() || !header.version.starts_with("2.") {
        "2.6".to_string()
    } else {
        escape(&header.version)
    };
    let processing = if header.processing_id.is_empty() {
        "P".to_string()
    } else {
        escape(&header.processing_id)
    };
    let mut out = String::new();
    let _ = write!(
        out,
        "MSH|^~\\&|{ours}|{}|{}|{}|{}||ACK^{}^ACK|{}|{processing}|{version}\r",
        hd(&header.receiving_facility),
        hd(&header.sending_application),
        hd(&header.sending_facility),
        format_time(now_ms),
        if header.message_type[1].is_empty() {
            "R01".to_string()
        } else {
            escape(&header.message_type[1])
        },
        escape(control_id),
    );
    let code = error.map_or(AckCode::Accept, |e| e.ack);
    let short = |t: &str| -> String {
        let t = escape(t);
        if t.chars().count() > MAX_ACK_TEXT {
            t.chars().take(MAX_ACK_TEXT).collect::<String>() + "..."
        } else {
            t
        }
    };
    let _ = write!(out, "MSA|{}|{}", code.as_str(), escape(&header.control_id));
    if let Some(e) = error {
        let text = short(&e.text);
        let _ = write!(out, "|{text}\r");
        let location = e.location.as_ref().map_or(String::new(), |l| {
            let mut s = format!("{}^{}", escape(&l.segment), l.sequence);
            if l.field > 0 {
                let _ = write!(s, "^{}", l.field);
                if l.component > 0 {
                    let _ = write!(s, "^1^{}", l.component);
                }
            }
            s
        });
        let _ = write!(
            out,
            "ERR||{location}|{}^{}^HL70357|E||||{text}\r",
            e.condition.code(),
            e.condition.text()
        );
    } else {
        out.push('\r');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    const PCD01: &str = "MSH|^~\\&|VSP^080019FFFE134535^EUI-64|GE Healthcare|MK|ICU|20130122134100+0100||ORU^R01^ORU_R01|004097134535|P|2.6|||NE|AL||UNICODE UTF-8|||PCD_DEC_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO\r\
PID|||HED12^^^PID^MR||DOE^ANN^^^^^L\r\
PV1||I|4WEST^12^B\r\
OBR|1|A1^VSP|A1^VSP|182777000^monitoring of patient^SCT|||20130122134000+0100\r\
OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X\r\
OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|97|262688^MDC_DIM_PERCENT^MDC|||||R|||20130122133955+0100||||0123456789ABCDEF^EUI-64\r\
OBX|3|NM|147842^MDC_ECG_HEART_RATE^MDC|1.1.1.2|72|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R\r\
OBX|4|NM|148066^MDC_ECG_V_P_C_RATE^MDC|1.1.1.3|0|264864^MDC_DIM_BEAT_PER_MIN^MDC|||||R\r\
OBX|5|NM|150344^MDC_TEMP^MDC|1.1.1.4|37.2|268192^MDC_DIM_DEGC^MDC|||||X\r";

    fn oru(text: &str) -> Result<Oru, Hl7Error> {
        read_oru(&Message::parse(text)?)
    }

    #[test]
    fn reads_an_ihe_pcd01_message() {
        let o = oru(PCD01).unwrap();
        assert_eq!(o.header.control_id, "004097134535");
        assert_eq!(o.header.application(), "VSP^080019FFFE134535^EUI-64");
        assert_eq!(
            o.header.sender(),
            "VSP^080019FFFE134535^EUI-64/GE Healthcare"
        );
        assert_eq!(o.patients.len(), 1);
        let p = &o.patients[0];
        assert_eq!(
            p.identifiers,
            [PatientIdentifier {
                value: "HED12".into(),
                authority: "PID".into(),
                type_code: "MR".into()
            }]
        );
        assert_eq!(p.ward.as_deref(), Some("4WEST"));
        // The device header, the PVC rate (not a vital sign) and the X temperature skipped.
        assert_eq!(p.observations.len(), 2);
        let s = &p.observations[0];
        assert_eq!(s.code, VitalCode::Spo2);
        assert_eq!(s.sent_code, "mdc:150456");
        assert_eq!(s.value, RawValue::Quantity(97.0, "MDC_DIM_PERCENT".into()));
        // 13:39:55 at +0100.
        assert_eq!(
            s.effective_ms,
            parse_time("20130122123955+0000", None).unwrap()
        );
        assert_eq!(s.source, "0123456789ABCDEF^EUI-64");
        let h = &p.observations[1];
        assert_eq!(h.code, VitalCode::HeartRate);
        // No OBX-14: OBR-7's.
        assert_eq!(
            h.effective_ms,
            parse_time("201301221340", Some(60)).unwrap()
        );
        // No OBX-18: the sender's.
        assert_eq!(h.source, "VSP^080019FFFE134535^EUI-64/GE Healthcare");
        assert_eq!(h.obx, 3);
    }

    #[test]
    fn reads_loinc_codes_ucum_units_and_text_values() {
        let m = "MSH|^~\\&|EHR|WARD||MK|20240301101500||ORU^R01|c1|P|2.5.1\n\
PID|||12345^^^STMARY^MR~p-abc^^^MK\n\
OBX|1|NM|8480-6^Systolic blood pressure^LN||16|kPa^kPa^UCUM|||||F|||202403011014\n\
OBX|2|CWE|67775-7^Level of responsiveness^LN||V^Voice^ACVPU||||||F|||202403011014\n\
OBX|3|NM|8310-5^Body temperature^LN||100.4|[degF]^degF^UCUM|||||C|||202403011014-0500\n\
OBX|4|ST|3151-8^Inhaled oxygen flow rate^LN||room air||||||F|||202403011014\n\
OBX|5|NM|9279-1^Resp rate^LN||18|/min^per minute^UCUM|||||D|||202403011014\n";
        let o = oru(m).unwrap();
        let p = &o.patients[0];
        assert_eq!(p.identifiers.len(), 2);
        assert_eq!(p.identifiers[0].system(), "STMARY");
        assert_eq!(p.identifiers[1].patient_id().unwrap().as_str(), "p-abc");
        let v: Vec<_> = p
            .observations
            .iter()
            .map(|o| (o.code, o.value.clone()))
            .collect();
        assert_eq!(
            v,
            [
                (
                    VitalCode::SystolicBp,
                    RawValue::Quantity(16.0, "kPa".into())
                ),
                (VitalCode::Consciousness, RawValue::Text("V".into())),
                (
                    VitalCode::Temperature,
                    RawValue::Quantity(100.4, "[degF]".into())
                ),
                (VitalCode::InhaledOxygen, RawValue::Text("room air".into())),
            ]
        );
        assert_eq!(p.observations[0].sent_code, "loinc:8480-6");
        // No zone: UTC (MSH-7 has none); with one: its own.
        assert_eq!(p.observations[0].effective_ms, 1_709_288_040_000);
        assert_eq!(
            p.observations[2].effective_ms,
            1_709_288_040_000 + 5 * 3_600_000
        );
        // No OBX-18, no facility... here WARD is the facility.
        assert_eq!(p.observations[0].source, "EHR/WARD");
    }

    #[test]
    fn separators_and_escapes_come_from_msh() {
        // Other separators: # field, $ component, * repetition, ! escape, % subcomponent.
        let m = "MSH#$*!%#DEV!F!1$X#FAC#####ORU$R01#ctl!S!1#P#2.6\r\
PID###A!F!1$$$AUTH%1.2.3$MR*B2$$$X#\r\
PV1##I#NEURO!T!2$1\r\
OBX#1#NM#151562$MDC_RESP_RATE$MDC##21#264928$MDC_DIM_RESP_PER_MIN$MDC#####F###202401020304\r";
        let msg = Message::parse(m).unwrap();
        assert_eq!(msg.separators.field, '#');
        assert_eq!(msg.separators.escape, Some('!'));
        let o = read_oru(&msg).unwrap();
        assert_eq!(o.header.sending_application, ["DEV#1", "X"]);
        assert_eq!(o.header.control_id, "ctl$1");
        let p = &o.patients[0];
        assert_eq!(p.identifiers[0].value, "A#1");
        assert_eq!(p.identifiers[0].authority, "AUTH");
        assert_eq!(p.identifiers[1].value, "B2");
        assert_eq!(p.ward.as_deref(), Some("NEURO%2"));
        assert_eq!(
            p.observations[0].value,
            RawValue::Quantity(21.0, "MDC_DIM_RESP_PER_MIN".into())
        );
        let seps = Separators::default();
        assert_eq!(seps.unescape(r"a\F\b\S\c\R\d\E\e\T\f"), r"a|b^c~d\e&f");
        assert_eq!(seps.unescape(r"\X41C3A9\ \H\bold\N\"), "Aé bold");
        assert_eq!(seps.unescape(r"open\F"), r"open\F");
        assert_eq!(escape("a|b^c~d\\e&f\r"), r"a\F\b\S\c\R\d\E\e\T\f ");
        assert_eq!(seps.unescape(&escape("x|y^z\\")), "x|y^z\\");
    }

    #[test]
    fn times_with_zones_and_precision() {
        let utc = parse_time("202401020304", None).unwrap();
        assert_eq!(utc, 1_704_164_640_000);
        assert_eq!(parse_time("20240102030405", None).unwrap(), utc + 5_000);
        assert_eq!(parse_time("20240102030405.25", None).unwrap(), utc + 5_250);
        assert_eq!(
            parse_time("202401020304+0130", None).unwrap(),
            utc - 90 * 60_000
        );
        assert_eq!(
            parse_time("202401020304-0800", None).unwrap(),
            utc + 8 * 3_600_000
        );
        assert_eq!(
            parse_time("202401020304", Some(-60)).unwrap(),
            utc + 3_600_000
        );
        for bad in [
            "2024010203",
            "20240230030405",
            "202401022504",
            "202401020304+25",
            "202401020304.5",
            "2024-01-02",
            "",
            "20240102030405.1234567890",
        ] {
            assert!(parse_time(bad, None).is_err(), "{bad}");
        }
        assert_eq!(format_time(utc + 5_000), "20240102030405+0000");
    }

    #[test]
    fn refusals_say_what_and_where() {
        let head = "MSH|^~\\&|APP|FAC|||20240102030405||ORU^R01|c9|P|2.6\r";
        let pid = "PID|||42^^^^MR\r";
        let e = oru(&format!(
            "{head}{pid}OBX|1|NM|8867-4^HR^LN||seventy|/min|||||F\r"
        ))
        .unwrap_err();
        assert_eq!((e.ack, e.condition), (AckCode::Error, Condition::DataType));
        assert_eq!(e.location.unwrap().segment, "OBX");
        let e = oru(&format!(
            "{head}{pid}OBX|1|NM|8867-4^HR^LN||1e3|/min|||||F\r"
        ))
        .unwrap_err();
        assert_eq!(e.condition, Condition::DataType);
        let e = oru(&format!("{head}OBX|1|NM|8867-4^HR^LN||70|/min|||||F\r")).unwrap_err();
        assert_eq!(e.condition, Condition::RequiredFieldMissing);
        let e = oru(&format!(
            "{head}PID|||\rOBX|1|NM|8867-4^HR^LN||70|/min|||||F\r"
        ))
        .unwrap_err();
        assert_eq!(
            e.location.unwrap(),
            Location {
                segment: "PID".into(),
                sequence: 1,
                field: 3,
                component: 1
            }
        );
        let e = oru(&format!(
            "{head}{pid}OBX|1|NM|8867-4^HR^LN||70|/min|||||F|||2024\r"
        ))
        .unwrap_err();
        assert_eq!(
            (e.condition, e.location.unwrap().field),
            (Condition::DataType, 14)
        );
        let e = oru(&format!("{head}{pid}OBX|1|NM|12345-6^Other^LN||70\r")).unwrap_err();
        assert_eq!(
            e.condition,
            Condition::RequiredFieldMissing,
            "no vital sign at all"
        );
        let e = oru(&format!("{head}{pid}OBX|1|ED|8867-4^HR^LN||70\r")).unwrap_err();
        assert_eq!(e.location.unwrap().field, 2);
        let e = oru("MSH|^~\\&|A|B|||20240101||ADT^A01|c|P|2.6\r").unwrap_err();
        assert_eq!(
            (e.ack, e.condition),
            (AckCode::Reject, Condition::UnsupportedMessageType)
        );
        let e = oru("MSH|^~\\&|A|B|||20240101||ORU^R30|c|P|2.6\r").unwrap_err();
        assert_eq!(e.condition, Condition::UnsupportedEvent);
        let e = oru("MSH|^~\\&|A|B|||20240101||ORU^R01|c|P|3.0\r").unwrap_err();
        assert_eq!(e.condition, Condition::UnsupportedVersion);
        for garbage in [
            "",
            "hello",
            "MSH",
            "MSH|",
            "MSHa^~\\&",
            "MSH|^^\\&|",
            "PID|||1\rMSH|^~\\&|",
        ] {
            let e = Message::parse(garbage).unwrap_err();
            assert_eq!(
                (e.ack, e.condition),
                (AckCode::Reject, Condition::SegmentSequence),
                "{garbage:?}"
            );
        }
        // Missing fields are empty, not errors: no OBX-14, no OBR, no MSH-7 either.
        let e = oru("MSH|^~\\&|A||||||ORU^R01\rPID|||1\rOBX|1|NM|8867-4^^LN||70\r").unwrap_err();
        assert_eq!(
            (e.condition, e.location.unwrap().field),
            (Condition::RequiredFieldMissing, 14)
        );
        // SN.
        let o = oru(&format!(
            "{head}{pid}OBX|1|SN|8867-4^HR^LN||=^71|/min|||||F\r"
        ))
        .unwrap();
        assert_eq!(
            o.patients[0].observations[0].value,
            RawValue::Quantity(71.0, "/min".into())
        );
        assert!(
            oru(&format!(
                "{head}{pid}OBX|1|SN|8867-4^HR^LN||>^71|/min|||||F\r"
            ))
            .is_err()
        );
    }

    #[test]
    fn several_patients_and_repetitions() {
        let m = "MSH|^~\\&|GW||||20240102030405+0200||ORU^R01|c|P|2.6\r\
PID|||~~M1^^^H^MR~M1b\r\
OBX|1|NM|150021^MDC_PRESS_BLD_NONINV_SYS^MDC||120~121|266016^MDC_DIM_MMHG^MDC\r\
PID|||M2\r\
PV1|||\r\
OBX|1|NM|^^^151562^MDC_RESP_RATE^MDC||14|\r";
        let o = oru(m).unwrap();
        assert_eq!(o.patients.len(), 2);
        assert_eq!(
            o.patients[0].identifiers.len(),
            2,
            "empty repetitions dropped"
        );
        assert_eq!(
            o.patients[0].observations[0].value,
            RawValue::Quantity(120.0, "MDC_DIM_MMHG".into())
        );
        // MSH-7's zone is the message's default.
        assert_eq!(
            o.patients[0].observations[0].effective_ms,
            parse_time("20240102010405", None).unwrap()
        );
        assert_eq!(o.patients[1].identifiers[0].system(), "MR");
        assert_eq!(o.patients[1].ward, None);
        assert_eq!(
            o.patients[1].observations[0].code,
            VitalCode::RespiratoryRate,
            "alternate code"
        );
    }

    #[test]
    fn mllp_frames_and_limits() {
        let mut r = MllpReader::new(16);
        assert!(r.push(b"\r\n junk").is_empty());
        assert_eq!(r.push(b"\x0bMSH|a"), []);
        assert!(r.mid_frame());
        assert_eq!(
            r.push(b"bc\x1c\r\x0bxy\x1c\r"),
            [
                Frame::Message(b"MSH|abc".to_vec()),
                Frame::Message(b"xy".to_vec())
            ]
        );
        assert!(!r.mid_frame());
        assert_eq!(
            r.push(b"\x0bold\x0bnew\x1c"),
            [Frame::Message(b"new".to_vec())]
        );
        let big = [b'a'; 40];
        let f = r.push(&[&[START_BLOCK][..], &big[..], b"\x1c"].concat());
        assert_eq!(f, [Frame::TooLarge(vec![b'a'; 16])]);
        assert!(
            r.push(b"\x0bafter\x1c").is_empty(),
            "nothing after an overflow"
        );
        assert_eq!(frame("A\rB"), b"\x0bA\rB\x1c\r");
        assert_eq!(decode(b"caf\xe9"), "café");
    }

    #[test]
    fn acks() {
        let h = Message::parse(PCD01).unwrap().header();
        let a = ack(&h, None, "mk1", 1_704_164_640_000);
        assert_eq!(
            a,
            "MSH|^~\\&|MK|ICU|VSP^080019FFFE134535^EUI-64|GE Healthcare|20240102030400+0000||ACK^R01^ACK|mk1|P|2.6\rMSA|AA|004097134535\r"
        );
        let e =
            Hl7Error::error(Condition::DataType, "spo2: 104 % is impossible").at("OBX", 2, 5, 0);
        let a = ack(&h, Some(&e), "mk2", 0);
        assert!(a.ends_with("MSA|AE|004097134535|spo2: 104 % is impossible\rERR||OBX^2^5|102^Data type error^HL70357|E||||spo2: 104 % is impossible\r"), "{a}");
        let a = ack(
            &Header::default(),
            Some(&Hl7Error::reject(Condition::SegmentSequence, "x|y")),
            "mk3",
            0,
        );
        assert!(a.starts_with("MSH|^~\\&|medkeeper||||19700101000000+0000||ACK^R01^ACK|mk3|P|2.6\rMSA|AR||x\\F\\y\r"), "{a}");
        let long = Hl7Error::error(Condition::ApplicationInternal, "x".repeat(5000));
        assert!(ack(&h, Some(&long), "mk4", 0).len() < 1200);
        // The ACK parses as HL7 itself.
        let back = Message::parse(&a).unwrap();
        assert_eq!(back.header().message_type[0], "ACK");
    }

    #[test]
    fn never_panics_on_random_or_mutated_input() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        let alphabet = b"MSHPIDOBXR|^~\\&#\r\n0123456789.+-FSETX\x0b\x1c ";
        let seeds = [PCD01.as_bytes().to_vec(), b"MSH|^~\\&|A||||20240101||ORU^R01|1|P|2.6\rPID|||1\rOBX|1|NM|8867-4^^LN||70|/min|||||F|||202401010000+0100\r".to_vec()];
        for i in 0..20_000 {
            let bytes: Vec<u8> = if i % 3 == 0 {
                let n = rng.random_range(0..200);
                (0..n)
                    .map(|_| {
                        if rng.random_bool(0.7) {
                            alphabet[rng.random_range(0..alphabet.len())]
                        } else {
                            rng.random()
                        }
                    })
                    .collect()
            } else {
                let mut b = seeds[i % 2].clone();
                for _ in 0..rng.random_range(1..8) {
                    let k = rng.random_range(0..b.len().max(1));
                    match rng.random_range(0..4) {
                        0 if !b.is_empty() => {
                            let j = k.min(b.len() - 1);
                            b[j] = alphabet[rng.random_range(0..alphabet.len())];
                        }
                        1 if !b.is_empty() => {
                            b.remove(k.min(b.len() - 1));
                        }
                        2 => b.insert(k.min(b.len()), rng.random()),
                        _ => b.truncate(k),
                    }
                }
                b
            };
            let text = decode(&bytes);
            let mut reader = MllpReader::new(64);
            let _ = reader.push(&bytes);
            if let Ok(m) = Message::parse(&text) {
                let h = m.header();
                let r = read_oru(&m);
                let _ = ack(&h, r.as_ref().err(), "x", i as i64);
            }
            let _ = parse_time(&text, Some(0));
        }
    }
}
