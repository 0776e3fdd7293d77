//! The HL7 v2 listener: ORU^R01 observation messages over MLLP ([`serve_mllp`]), each
//! answered with an ACK ([`crate::hl7`] reads and answers; this module resolves, stores and
//! audits).
//!
//! # One message
//! 1. Framed (MLLP), decoded (UTF-8, else ISO 8859-1), parsed: not HL7, not ORU^R01, not
//!    version 2 → `AR`.
//! 2. Read: a field that is not what its type says (a value that is not a number, a bad
//!    time), no patient identifier, no vital sign at all → `AE` (nothing stored).
//! 3. Each PID's patient resolved: PID-3's value itself if it is a medkeeper id (`p-…`),
//!    else its mapping (`system` = the assigning authority, else `MR`) in the clinical store;
//!    none → `AE` 204.
//! 4. Every value cleaned as [`Hospital::ingest`] will ([`vitals::clean`]), so a refusal
//!    names its OBX: impossible or in an unknown unit → `AE` 102, nothing stored.
//! 5. The patient's ward set from PV1-3 when given and different (audited as
//!    `patient.ward`): the escalations of this message go to the new ward.
//! 6. One [`Hospital::ingest`] call: all or nothing, with the message kept
//!    ([`RawMessage`] `hl7v2`, its sender and the peer's address) and the audit record
//!    (actor `mllp:<sending application>`, role `device`, action `vitals.ingest`) in the
//!    same store transaction → `AA`. No coordination session, a conflict → `AE` 206 (send
//!    again later: a message stored twice is stored once); another value for an observation
//!    already stored (same patient, source, code and time) whose OBX-11 is not `C` (a
//!    correction) → `AE` 205, nothing stored; a failed store → `AE` 207.
//!
//! # Limits
//! At most [`MllpOptions::max_connections`] connections (more wait to be accepted), any
//! number of messages on each, one at a time; a message over
//! [`MllpOptions::max_message`] bytes is answered `AR` and its connection closed; a frame
//! started and not finished within [`MllpOptions::frame_timeout`] closes its connection, as
//! does an ACK the peer does not read within it. Connections between messages may stay open
//! (monitors keep theirs).
//!
//! Logs say who sent what kind of message and how it ended, never its content (it holds
//! patient data).
//!
//! [`Hospital::ingest`]: medkeeper_hospital::orders::Hospital::ingest
//! [`vitals::clean`]: medkeeper_hospital::vitals::clean

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use medkeeper_hospital::model::now_ms;
use medkeeper_hospital::store::{AuditRecord, PatientSettings, RawMessage};
use medkeeper_hospital::vitals::{self, RawObservation};
use medkeeper_hospital::{Actor, PatientId};
use rand::TryRngCore;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::error::{ApiError, ErrorCode};
use crate::hl7::{
    self, Condition, Frame, Header, Hl7Error, Message, MllpReader, Oru, PatientResult,
};
use crate::state::ServerState;

/// The listener's bounds.
#[derive(Debug, Clone)]
pub struct MllpOptions {
    /// The largest message, in bytes (default 1 MiB).
    pub max_message: usize,
    /// How long a started frame may take to end, and an ACK to be taken (default 30 s).
    pub frame_timeout: Duration,
    /// Connections served at once (default 256).
    pub max_connections: usize,
    /// How long shutdown waits for messages being stored (default 5 s).
    pub drain: Duration,
}

impl Default for MllpOptions {
    fn default() -> Self {
        MllpOptions {
            max_message: 1024 * 1024,
            frame_timeout: Duration::from_secs(30),
            max_connections: 256,
            drain: Duration::from_secs(5),
        }
    }
}

/// Serves HL7 v2 ORU^R01 over MLLP on `listener` with the default [`MllpOptions`] until
/// `shutdown` resolves (see the module docs).
///
/// # Cancellation safety
/// On `shutdown` it stops accepting, lets each connection finish (and acknowledge) the
/// message it is storing, closes the connections, and returns; a message not acknowledged
/// was not stored or will be stored once when sent again.
pub async fn serve_mllp(
    listener: TcpListener,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = ()> + Send,
) {
    serve_mllp_with(listener, state, MllpOptions::default(), shutdown).await
}

/// [`serve_mllp`] with these bounds.
pub async fn serve_mllp_with(
    listener: TcpListener,
    state: Arc<ServerState>,
    options: MllpOptions,
    shutdown: impl Future<Output = ()> + Send,
) {
    let options = Arc::new(options);
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    let (stop_tx, stop) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "mllp: cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (state, options, stop) = (state.clone(), options.clone(), stop.clone());
        connections.spawn(async move {
            connection(stream, peer, &state, &options, stop).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(options.drain, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "mllp: messages still being stored after {:?}; closing",
            options.drain
        );
        connections.shutdown().await;
    }
}

/// Reads some bytes (0: closed).
async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

/// Writes all of `data` (one write call for a small ACK: some clients take one read).
async fn write_all(stream: &TcpStream, data: &[u8]) -> std::io::Result<()> {
    let mut at = 0;
    while at < data.len() {
        stream.writable().await?;
        match stream.try_write(&data[at..]) {
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// One connection: its messages, one at a time, until it closes, breaks a limit, or the
/// listener stops.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: &ServerState,
    options: &MllpOptions,
    mut stop: watch::Receiver<bool>,
) {
    tracing::debug!(%peer, "mllp: connection");
    let mut reader = MllpReader::new(options.max_message);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = async {
            if reader.mid_frame() {
                tokio::time::timeout(options.frame_timeout, read_some(&stream, &mut buf))
                    .await
                    .unwrap_or_else(|_| {
                        Err(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "a started message did not end in time",
                        ))
                    })
            } else {
                read_some(&stream, &mut buf).await
            }
        };
        let n = tokio::select! {
            r = read => match r {
                Ok(0) => {
                    tracing::debug!(%peer, "mllp: closed by the peer");
                    return;
                }
                Ok(n) => n,
                Err(e) => {
                    tracing::info!(%peer, error = %e, "mllp: closing the connection");
                    return;
                }
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let frames = reader.push(&buf[..n]);
        for f in frames {
            let (ack, close) = match f {
                Frame::Message(bytes) => (handle(state, peer, &bytes).await, false),
                Frame::TooLarge(prefix) => {
                    tracing::warn!(%peer, limit = options.max_message, "mllp: message too large; closing");
                    (too_large(&prefix, options.max_message), true)
                }
            };
            let sent =
                tokio::time::timeout(options.frame_timeout, write_all(&stream, &hl7::frame(&ack)))
                    .await;
            if !matches!(sent, Ok(Ok(()))) {
                tracing::info!(%peer, "mllp: the ACK could not be sent; closing");
                return;
            }
            if close {
                return;
            }
        }
    }
}

/// The AR of a message over the limit (its control id, if its MSH fits in what was read).
fn too_large(prefix: &[u8], limit: usize) -> String {
    let text = hl7::decode(prefix);
    let first_segment = text.split(['\r', '\n']).next().unwrap_or("");
    let header = Message::parse(first_segment)
        .map(|m| m.header())
        .unwrap_or_default();
    let e = Hl7Error::reject(
        Condition::ApplicationInternal,
        format!("the message is larger than {limit} bytes"),
    );
    hl7::ack(&header, Some(&e), &control_id(), now_ms())
}

/// A fresh control id for an ACK (`mk` and 16 hex digits).
fn control_id() -> String {
    let n = rand::rngs::OsRng
        .try_next_u64()
        .unwrap_or_else(|_| now_ms() as u64);
    format!("mk{n:016x}")
}

/// One message's ACK (see the module docs).
pub(crate) async fn handle(state: &ServerState, peer: SocketAddr, bytes: &[u8]) -> String {
    let received_ms = now_ms();
    let text = hl7::decode(bytes);
    let msg = match Message::parse(&text) {
        Ok(m) => m,
        Err(e) => {
            tracing::info!(%peer, bytes = bytes.len(), "mllp: AR, not an HL7 message");
            return hl7::ack(&Header::default(), Some(&e), &control_id(), now_ms());
        }
    };
    let header = msg.header();
    let nul = hl7::refuse_nul(&msg).err();
    let result = match hl7::read_oru(&msg) {
        Ok(oru) => store(state, peer, &oru, text, received_ms, nul).await,
        Err(e) => Err(e),
    };
    // Escaped: a NUL or a line break from the sender must not cut or forge a log line.
    let sender = hl7::printable(&header.sender());
    let control = hl7::printable(&header.control_id);
    match &result {
        Ok(n) => tracing::info!(
            %peer, sender = %sender, control_id = %control, observations = n,
            "mllp: AA, stored"
        ),
        // Not the reason: it may quote a value or an identifier.
        Err(e) => tracing::info!(
            %peer, sender = %sender, control_id = %control,
            ack = e.ack.as_str(), code = e.condition.code(), at = %where_(e),
            "mllp: refused"
        ),
    }
    hl7::ack(&header, result.as_ref().err(), &control_id(), now_ms())
}

/// Where an error is, for the log (`OBX^3^5`).
fn where_(e: &Hl7Error) -> String {
    e.location.as_ref().map_or_else(String::new, |l| {
        format!("{}^{}^{}", hl7::printable(&l.segment), l.sequence, l.field)
    })
}

/// The HL7 error of a domain or store error: 204 for an unknown patient, 102 for an invalid
/// value, 206 for what may pass (no session, a conflict), 207 for the rest.
fn hl7_error(e: &ApiError) -> Hl7Error {
    let condition = match e.code {
        ErrorCode::NotFound => Condition::UnknownKey,
        ErrorCode::Invalid | ErrorCode::BadRequest => Condition::DataType,
        ErrorCode::Conflict
        | ErrorCode::Unavailable
        | ErrorCode::Timeout
        | ErrorCode::Overloaded => Condition::RecordLocked,
        _ => Condition::ApplicationInternal,
    };
    Hl7Error::error(condition, e.message.clone())
}

/// The actor of this sender's audit records: `mllp:` and the sending application (its first
/// 64 characters, control characters escaped: a PostgreSQL store refuses a NUL, and the
/// record of a refusal must be written too).
fn actor(header: &Header) -> String {
    let app: String = header.application().chars().take(64).collect();
    format!("mllp:{}", hl7::printable(&app))
}

/// The audit record of this sender's change about `patient` (`detail` with its control
/// characters escaped, as the actor's).
fn record(header: &Header, action: &str, patient: &PatientId, detail: String) -> AuditRecord {
    AuditRecord {
        seq: 0,
        at_ms: now_ms(),
        actor: actor(header),
        role: "device".into(),
        action: action.into(),
        patient: Some(patient.clone()),
        order: None,
        outcome: "ok".into(),
        detail: hl7::printable(&detail),
    }
}

/// The patient of a PID.
async fn resolve(state: &ServerState, p: &PatientResult) -> Result<PatientId, Hl7Error> {
    let store = state.store();
    let mut found: Option<PatientId> = None;
    for ident in &p.identifiers {
        // No mapping holds a control character, and a PostgreSQL store refuses a NUL in a
        // look-up: such an identifier names no one.
        if ident
            .value
            .chars()
            .chain(ident.system().chars())
            .any(char::is_control)
        {
            continue;
        }
        let id = match ident.patient_id() {
            Some(id) => store
                .patient(&id)
                .await
                .map_err(|e| hl7_error(&e.into()))?
                .map(|_| id),
            None => store
                .patient_by_identifier(ident.system(), &ident.value)
                .await
                .map_err(|e| hl7_error(&e.into()))?,
        };
        match (&found, id) {
            (_, None) => {}
            (None, Some(id)) => found = Some(id),
            (Some(f), Some(id)) if *f != id => {
                return Err(Hl7Error::error(
                    Condition::UnknownKey,
                    "PID-3: the identifiers name different patients",
                )
                .at("PID", p.pid, 3, 1));
            }
            _ => {}
        }
    }
    found.ok_or_else(|| {
        let names: Vec<String> = p
            .identifiers
            .iter()
            .map(|i| {
                format!(
                    "{}|{}",
                    hl7::printable(i.system()),
                    hl7::printable(&i.value)
                )
            })
            .collect();
        Hl7Error::error(
            Condition::UnknownKey,
            format!("PID-3: no patient is known as {}", names.join(" or ")),
        )
        .at("PID", p.pid, 3, 1)
    })
}

/// Resolves, checks, sets wards and ingests an ORU^R01; the number of observations stored.
/// `refused` (a NUL in the message, [`hl7::refuse_nul`]) is answered once the patient is
/// known, so the refusal is audited under them.
async fn store(
    state: &ServerState,
    peer: SocketAddr,
    oru: &Oru,
    body: String,
    received_ms: i64,
    refused: Option<Hl7Error>,
) -> Result<usize, Hl7Error> {
    let hospital = state.hospital().map_err(|e| hl7_error(&e))?;
    let header = &oru.header;
    let mut raws: Vec<RawObservation> = Vec::new();
    let mut patients: Vec<(PatientId, Option<&str>)> = Vec::new();
    for p in oru.patients.iter().filter(|p| !p.observations.is_empty()) {
        let id = resolve(state, p).await?;
        if let Some(e) = refused {
            let mut r = record(header, "vitals.ingest", &id, e.text.clone());
            r.outcome = ErrorCode::Invalid.as_str().into();
            if let Err(e) = state.store().append_audit(&r).await {
                tracing::error!(error = %e, "mllp: cannot write an audit record");
            }
            return Err(e);
        }
        for o in &p.observations {
            let raw = o.to_raw(id.clone());
            // Refused here with its OBX (ingest would refuse it too, by index).
            if let Err(why) = vitals::clean(&raw, received_ms) {
                let mut r = record(header, "vitals.ingest", &id, why.0.clone());
                r.outcome = ErrorCode::Invalid.as_str().into();
                if let Err(e) = state.store().append_audit(&r).await {
                    tracing::error!(error = %e, "mllp: cannot write an audit record");
                }
                return Err(Hl7Error::error(Condition::DataType, why.0).at("OBX", o.obx, 5, 1));
            }
            raws.push(raw);
        }
        patients.push((id, p.ward.as_deref()));
    }
    let Some((first, _)) = patients.first().cloned() else {
        return Err(Hl7Error::error(
            Condition::RequiredFieldMissing,
            "no vital sign in the message",
        ));
    };
    let store_err = |e: medkeeper_hospital::store::StoreError| hl7_error(&ApiError::from(e));
    for (id, ward) in &patients {
        let Some(ward) = ward else { continue };
        let settings = state
            .store()
            .patient_settings(id)
            .await
            .map_err(store_err)?;
        if settings.ward.as_deref() != Some(*ward) {
            let new = PatientSettings {
                ward: Some(ward.to_string()),
                ..settings
            };
            let rec = record(
                header,
                "patient.ward",
                id,
                format!("ward {ward} from PV1-3"),
            );
            state
                .store()
                .set_patient_settings(id, &new, Some(&rec))
                .await
                .map_err(store_err)?;
        }
    }
    let control = header.control_id.chars().take(64).collect::<String>();
    let detail = format!("{} observations, HL7 message {control}", raws.len());
    let actor = Actor::audited(
        actor(header),
        record(header, "vitals.ingest", &first, detail.clone()),
    );
    let message = RawMessage {
        format: "hl7v2".into(),
        source: format!("{} from {peer}", header.sender()),
        received_ms,
        body,
    };
    match hospital.ingest(&raws, &message, &actor).await {
        Ok(done) => {
            // The other patients of a message of several get their own record.
            for (id, _) in patients.iter().skip(1) {
                let r = record(header, "vitals.ingest", id, detail.clone());
                if let Err(e) = state.store().append_audit(&r).await {
                    tracing::error!(error = %e, "mllp: cannot write an audit record");
                }
            }
            Ok(done.observations.len())
        }
        // Stored: what failed after it (the escalation level) is set again by the next
        // observation. Not an error for the sender, who would only send it again.
        Err(e) if actor.audit_written() => {
            tracing::warn!(error = %e, "mllp: stored, but scoring or escalation failed");
            Ok(raws.len())
        }
        Err(e) => {
            // Another value for a stored key, not sent as a correction: not worth sending
            // again as it is (206 would say so), so 205, saying how to correct it.
            let duplicate = matches!(e, medkeeper_hospital::Error::ConflictingValue(_));
            let api = ApiError::from(e);
            let mut r = record(header, "vitals.ingest", &first, api.message.clone());
            r.outcome = api.code.as_str().into();
            if let Err(e) = state.store().append_audit(&r).await {
                tracing::error!(error = %e, "mllp: cannot write an audit record");
            }
            if duplicate {
                return Err(Hl7Error::error(
                    Condition::DuplicateKey,
                    format!(
                        "{}: a correction of a stored value needs OBX-11 C",
                        api.message
                    ),
                ));
            }
            Err(hl7_error(&api))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Limits;
    use crate::views::MemberInfo;
    use medkeeper_hospital::store::{ClinicalStore, SqliteStore};
    use std::io::{Read, Write};

    fn state() -> Arc<ServerState> {
        let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::in_memory().unwrap());
        ServerState::new(
            MemberInfo {
                id: "t".into(),
                url: "http://127.0.0.1/".into(),
                started_ms: 0,
            },
            store,
            Limits::default(),
        )
    }

    const MSG: &str = "MSH|^~\\&|MON|ICU|||20240102030405||ORU^R01|c42|P|2.6\rPID|||p-1\rOBX|1|NM|8867-4^^LN||70|/min|||||F\r";

    fn exchange(s: &mut std::net::TcpStream, out: &[u8]) -> String {
        s.write_all(out).unwrap();
        let mut got = Vec::new();
        let mut b = [0u8; 4096];
        while !got.ends_with(b"\x1c\r") {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0, "closed; got {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&b[..n]);
        }
        String::from_utf8(got).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn limits_and_answers_without_a_session() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let options = MllpOptions {
            max_message: 1000,
            frame_timeout: Duration::from_millis(300),
            ..MllpOptions::default()
        };
        let server = tokio::spawn(serve_mllp_with(listener, state(), options, async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        }));
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            // No session: AE 206, transient. Twice on one connection.
            for _ in 0..2 {
                let a = exchange(&mut s, &hl7::frame(MSG));
                assert!(a.contains("MSA|AE|c42|"), "{a}");
                assert!(a.contains("|206^Application record locked^HL70357|"), "{a}");
            }
            // Garbage: AR; the connection stays.
            let a = exchange(&mut s, &hl7::frame("hello"));
            assert!(a.contains("MSA|AR||"), "{a}");
            // ADT: AR 200, quoting its control id.
            let a = exchange(
                &mut s,
                &hl7::frame("MSH|^~\\&|A|B|||20240101||ADT^A01|x7|P|2.6\rPID|||1\r"),
            );
            assert!(a.contains("MSA|AR|x7|") && a.contains("|200^"), "{a}");
            // Too large: AR with the control id, then closed.
            let big = format!(
                "MSH|^~\\&|A|B|||20240101||ORU^R01|big1|P|2.6\r{}",
                "NTE|x\r".repeat(300)
            );
            let a = exchange(&mut s, &hl7::frame(&big));
            assert!(a.contains("MSA|AR|big1|"), "{a}");
            let mut b = [0u8; 16];
            assert_eq!(
                s.read(&mut b).unwrap_or(0),
                0,
                "closed after a message too large"
            );
            // A half-sent frame: closed after the timeout.
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"\x0bMSH|^~\\&|").unwrap();
            let t = std::time::Instant::now();
            assert_eq!(s.read(&mut b).unwrap_or(0), 0);
            assert!(
                t.elapsed() >= Duration::from_millis(250),
                "{:?}",
                t.elapsed()
            );
        })
        .await
        .unwrap();
        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
    }
}
