//! `medkeeper bench vitals`: vital signs end to end — how many observations a second the
//! instance ingests durably (cleaned, stored with their message, scored with NEWS2, the
//! escalation level set in the tree), and how long from a deteriorating patient's
//! observations to the NEWS2 alarm on an event stream.
//!
//! Runs the real HTTP server and the alarm evaluator as the leader runs it, with the demo
//! hospital (its `news2` rule) over the target (the embedded engine, or a fresh chroot on
//! ZooKeeper), and a SQLite clinical store in a fresh directory (every write fsynced):
//! - **ingest**: `--clients` tasks send `--messages` messages in all, each one monitor's set of
//!   the seven NEWS2 parameters for one of `--patients` patients (a normal set: nothing to
//!   escalate), through [`Hospital::ingest`] — the call the FHIR and MLLP front ends make;
//! - **escalation**: `--rounds` times, a patient's deteriorating set (NEWS2 7, high risk) is
//!   ingested, timed from just before the call to the first `alarms` event (on
//!   `/api/alarms/events`) with the patient's alarm; then a normal set clears it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use medkeeper_hospital::PatientId;
use medkeeper_hospital::alarms::Evaluator;
use medkeeper_hospital::config::{self, HospitalConfig};
use medkeeper_hospital::orders::Hospital;
use medkeeper_hospital::store::{ClinicalStore, Patient, PatientSettings, RawMessage, SqliteStore};
use medkeeper_hospital::vitals::{RawObservation, RawValue, VitalCode};
use medkeeper_server::{Limits, MemberInfo, Role, ServerState, issue_token};
use tokio::sync::mpsc;

use super::dispatch::Target;
use super::sse::{hist, read_stream, tempfile_dir};
use crate::coord::ConnectArgs;

/// Options of `bench vitals`.
#[derive(Args, Debug)]
pub struct VitalsBench {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Messages ingested for the throughput figure (7 observations each).
    #[arg(long, default_value_t = 2000)]
    messages: u32,
    /// Concurrent senders.
    #[arg(long, default_value_t = 8)]
    clients: u32,
    /// Patients the messages are spread over.
    #[arg(long, default_value_t = 50)]
    patients: u32,
    /// Deterioration → alarm rounds measured.
    #[arg(long, default_value_t = 50)]
    rounds: u32,
}

/// One monitor's set: normal, or deteriorating (NEWS2 7).
fn set(p: &PatientId, at: i64, bad: bool, source: &str) -> Vec<RawObservation> {
    let (rr, spo2, o2, sbp, hr, t) = if bad {
        (26.0, 91.0, true, 95.0, 125.0, 38.5)
    } else {
        (16.0, 97.0, false, 120.0, 70.0, 37.0)
    };
    let q = |code, value| RawObservation {
        patient: p.clone(),
        code,
        sent_code: String::new(),
        value,
        effective_ms: at,
        source: source.to_string(),
        revision: medkeeper_hospital::vitals::Revision::Original,
    };
    let n = |v: f64, u: &str| RawValue::Quantity(v, u.into());
    vec![
        q(VitalCode::RespiratoryRate, n(rr, "/min")),
        q(VitalCode::Spo2, n(spo2, "%")),
        q(VitalCode::InhaledOxygen, RawValue::Bool(o2)),
        q(VitalCode::SystolicBp, n(sbp, "mm[Hg]")),
        q(VitalCode::HeartRate, n(hr, "/min")),
        q(VitalCode::Consciousness, RawValue::Text("A".into())),
        q(VitalCode::Temperature, n(t, "Cel")),
    ]
}

fn message(at: i64) -> RawMessage {
    RawMessage {
        format: "bench".into(),
        source: "bench".into(),
        received_ms: at,
        body: String::new(),
    }
}

/// Runs `medkeeper bench vitals`.
pub async fn run(b: VitalsBench) -> anyhow::Result<std::process::ExitCode> {
    let target = Target::open(&b.connect, "vitals").await?;
    let result = measure(&b, &target).await;
    target.finish().await?;
    let (rate, lat) = result?;
    println!(
        "medkeeper vitals ({}): ingest: {} messages ({} observations) with {} clients: {:.0} messages/s, {:.0} observations/s",
        b.connect.connect,
        b.messages,
        b.messages * 7,
        b.clients,
        rate,
        rate * 7.0
    );
    let ms = |q: f64| lat.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "medkeeper vitals ({}): deteriorating set ingested → NEWS2 alarm on the stream: n {}, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        b.connect.connect,
        lat.len(),
        ms(0.5),
        ms(0.99),
        lat.max() as f64 / 1000.0
    );
    Ok(std::process::ExitCode::SUCCESS)
}

async fn measure(b: &VitalsBench, target: &Target) -> anyhow::Result<(f64, Histogram<u64>)> {
    let session = target.session.clone();
    let cfg = HospitalConfig::demo();
    config::load(session.as_ref(), &cfg).await?;
    let dir = tempfile_dir()?;
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::open(dir.join("clinical.sqlite"))?);
    let hospital = Arc::new(Hospital::new(session.clone(), store.clone(), cfg)?);
    let state = ServerState::new(
        MemberInfo {
            id: "bench".into(),
            url: String::new(),
            started_ms: 0,
        },
        store.clone(),
        Limits::default(),
    );
    state.set_hospital(Some(hospital.clone()));
    let (_, token) = issue_token(store.as_ref(), Role::Admin, None, "bench")
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server =
        tokio::spawn(axum::serve(listener, medkeeper_server::router(state.clone())).into_future());
    let evaluator =
        tokio::spawn(Evaluator::new(hospital.clone(), "bench").run(std::future::pending::<()>()));

    let mut patients = Vec::new();
    for _ in 0..b.patients.max(1) {
        let p = PatientId::generate();
        store
            .upsert_patient(&Patient {
                id: p.clone(),
                name: "Bench Patient".into(),
                birth_date: None,
            })
            .await?;
        store
            .set_patient_settings(
                &p,
                &PatientSettings {
                    ward: Some("5A".into()),
                    ..Default::default()
                },
                None,
            )
            .await?;
        patients.push(p);
    }
    let patients = Arc::new(patients);

    // Throughput: normal sets, nothing to escalate.
    let t0 = Instant::now();
    let base = medkeeper_hospital::model::now_ms();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..b.clients.max(1) {
        let (h, ps) = (hospital.clone(), patients.clone());
        let (n, clients) = (b.messages, b.clients.max(1));
        tasks.spawn(async move {
            let mut i = c;
            while i < n {
                let p = &ps[i as usize % ps.len()];
                let at = base - 3_600_000 + i64::from(i);
                h.ingest(
                    &set(p, at, false, &format!("monitor-{c}")),
                    &message(at),
                    "bench",
                )
                .await?;
                i += clients;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let rate = f64::from(b.messages) / t0.elapsed().as_secs_f64();

    // Escalation latency.
    let (tx, mut rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || read_stream(addr, "/api/alarms/events".into(), token, tx));
    let mut next = async || -> anyhow::Result<(Instant, String)> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .context("no alarms event within 10 s")?
            .context("the alarms stream ended")
    };
    next().await?;
    let mut lat = hist();
    let mut at = medkeeper_hospital::model::now_ms();
    for round in 0..b.rounds {
        let p = &patients[round as usize % patients.len()];
        let scope = format!("patient.{p}");
        at += 1000;
        let t0 = Instant::now();
        hospital
            .ingest(&set(p, at, true, "monitor-x"), &message(at), "bench")
            .await?;
        loop {
            let (seen, data) = next().await?;
            if data.contains(&scope) {
                lat.record((seen - t0).as_micros().max(1) as u64).ok();
                break;
            }
        }
        at += 1000;
        hospital
            .ingest(&set(p, at, false, "monitor-x"), &message(at), "bench")
            .await?;
        loop {
            let (_, data) = next().await?;
            if !data.contains(&scope) {
                break;
            }
        }
    }
    evaluator.abort();
    let _ = evaluator.await;
    state.shut_down();
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
    if lat.is_empty() {
        bail!("nothing measured");
    }
    Ok((rate, lat))
}
