//! `medkeeper bench alarms`: how long a threshold crossing takes to become an alarm a client
//! sees, and what evaluating every rule costs.
//!
//! Runs the real HTTP server and the alarm evaluator as the leader runs it
//! ([`Evaluator::run`]: woken by the read models' watch events) over the target (the embedded
//! engine, or a fresh chroot on ZooKeeper), with the demo hospital's rules plus one,
//! `bench-out`: MRI units out of service (`units_unavailable`, no limit, raise 1, clear 0, no
//! delay). One client follows `/api/alarms/events`. Measured, HdrHistogram p50/p99/max:
//! - **raise**: MRI-1 put into maintenance through the library (one version-checked
//!   `set_data`), from just before the change to the first `alarms` event listing a
//!   `bench-out` alarm — watch event → read model → evaluator pass → alarm node created →
//!   watch event → the stream's feed → the client;
//! - **clear**: MRI-1 back in service, to the first `alarms` event without it.
//!
//! Then the cost of one evaluation pass ([`Evaluator::evaluate`]) with every demo rule and
//! `--orders` orders waiting (spread over the pools, no dispatcher running, nothing to raise
//! or clear after the first pass): the pass reads only the read models, so it sends no
//! coordination request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use hdrhistogram::Histogram;
use medkeeper_hospital::alarms::Evaluator;
use medkeeper_hospital::config::{self, HospitalConfig};
use medkeeper_hospital::orders::{Hospital, NewOrder};
use medkeeper_hospital::store::{ClinicalStore, SqliteStore};
use medkeeper_hospital::{PatientId, Pool, Priority, UnitStatus};
use medkeeper_server::{Limits, MemberInfo, Role, ServerState, issue_token};
use tokio::sync::mpsc;

use super::dispatch::Target;
use super::sse::{hist, read_stream, tempfile_dir};
use crate::coord::ConnectArgs;

/// Options of `bench alarms`.
#[derive(Args, Debug)]
pub struct AlarmsBench {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Raise/clear rounds measured.
    #[arg(long, default_value_t = 100)]
    rounds: u32,
    /// Orders waiting while evaluation passes are timed.
    #[arg(long, default_value_t = 1000)]
    orders: u32,
    /// Evaluation passes timed.
    #[arg(long, default_value_t = 200)]
    passes: u32,
}

/// Runs `medkeeper bench alarms`.
pub async fn run(b: AlarmsBench) -> anyhow::Result<std::process::ExitCode> {
    let target = Target::open(&b.connect, "alarms").await?;
    let result = measure(&b, &target).await;
    target.finish().await?;
    let (raise, clear, pass) = result?;
    let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    for (name, h) in [
        ("threshold crossed → alarm on the stream", &raise),
        ("back under → alarm gone from the stream", &clear),
        (
            &*format!(
                "one evaluation pass, {} rules, {} orders waiting",
                HospitalConfig::demo().alarms.len() + 1,
                b.orders
            ),
            &pass,
        ),
    ] {
        println!(
            "medkeeper alarms ({}): {name}: n {}, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            b.connect.connect,
            h.len(),
            q(h, 0.5),
            q(h, 0.99),
            h.max() as f64 / 1000.0
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// The demo hospital with the benchmark's rule.
fn bench_config() -> anyhow::Result<HospitalConfig> {
    let text = format!(
        "{}\n[[alarm]]\nname = \"bench-out\"\nsignal = \"units_unavailable\"\npool = \"MRI\"\n\
         raise = 1\nclear = 0\npriority = \"high\"\n",
        HospitalConfig::DEMO_TOML
    );
    Ok(HospitalConfig::parse(&text)?)
}

async fn measure(
    b: &AlarmsBench,
    target: &Target,
) -> anyhow::Result<(Histogram<u64>, Histogram<u64>, Histogram<u64>)> {
    let session = target.session.clone();
    let cfg = bench_config()?;
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

    let (tx, mut rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || read_stream(addr, "/api/alarms/events".into(), token, tx));
    let mut next = async || -> anyhow::Result<(Instant, String)> {
        tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .context("no alarms event within 10 s")?
            .context("the alarms stream ended")
    };
    // The snapshot, then let the first passes settle whatever the demo rules raise at once
    // (nothing dispatches here: the no-dispatcher rule's alarm comes after its 10 s `for`,
    // which is no part of this measure).
    next().await?;
    let mri = Pool::Equipment("MRI".into());
    let mut raise = hist();
    let mut clear = hist();
    const RULE: &str = "\"rule\":\"bench-out\"";
    for _ in 0..b.rounds {
        let t0 = Instant::now();
        hospital
            .set_unit_status(&mri, "MRI-1", UnitStatus::Maintenance)
            .await?;
        loop {
            let (at, data) = next().await?;
            if data.contains(RULE) {
                raise.record((at - t0).as_micros().max(1) as u64).ok();
                break;
            }
        }
        let t0 = Instant::now();
        hospital
            .set_unit_status(&mri, "MRI-1", UnitStatus::Available)
            .await?;
        loop {
            let (at, data) = next().await?;
            if !data.contains(RULE) {
                clear.record((at - t0).as_micros().max(1) as u64).ok();
                break;
            }
        }
    }
    evaluator.abort();
    let _ = evaluator.await;

    // The cost of a pass with many orders waiting.
    let pools: Vec<Pool> = hospital
        .config()
        .pools
        .iter()
        .map(|p| p.pool.clone())
        .collect();
    for i in 0..b.orders {
        let new = NewOrder {
            patient: PatientId::generate(),
            pool: pools[i as usize % pools.len()].clone(),
            capabilities: Vec::new(),
            priority: Priority::ALL[i as usize % 4],
            reason: String::new(),
        };
        hospital.create_order(new, "bench").await?;
    }
    let mut ev = Evaluator::new(hospital.clone(), "bench-passes");
    ev.evaluate().await?;
    let mut pass = hist();
    for _ in 0..b.passes {
        let t0 = Instant::now();
        ev.evaluate().await?;
        pass.record(t0.elapsed().as_micros().max(1) as u64).ok();
    }
    state.shut_down();
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
    if raise.is_empty() || pass.is_empty() {
        bail!("nothing measured");
    }
    Ok((raise, clear, pass))
}
