//! `medkeeper simulate`: a simulated hospital day through the real domain on the embedded
//! default — the embedded engine and a SQLite clinical store in a fresh data directory, the
//! real `Hospital` and `Dispatcher` — on a virtual clock, once with medkeeper's policy and once
//! as plain FIFO on the same seeded arrivals. Prints a markdown report; `--json FILE` also
//! writes every figure. The model is documented in `medkeeper_hospital::simulate`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use medkeeper_coord::Session;
use medkeeper_embedded::{Engine, EngineConfig, SessionOptions};
use medkeeper_hospital::config::HospitalConfig;
use medkeeper_hospital::simulate::{self, Comparison, Params, Plan, Policy, Run};
use medkeeper_hospital::store::{ClinicalStore, SqliteStore};

/// Options of `simulate`.
#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Seed of the arrivals and durations.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Hours of arrivals (the run continues until every order is reported).
    #[arg(long, default_value_t = 24.0)]
    hours: f64,
    /// Hour of the day the arrivals start (0-24; the arrival rate peaks at 14:00).
    #[arg(long, default_value_t = 0.0)]
    start_hour: f64,
    /// Offered utilisation of every pool over a whole day (arrival rate x mean occupancy /
    /// units).
    #[arg(long, default_value_t = 0.9)]
    load: f64,
    /// Daily swing of the arrival rate: at 14:00 (1 + peak) times the mean, at 02:00
    /// (1 - peak) times.
    #[arg(long, default_value_t = 0.5)]
    peak: f64,
    /// Send stat orders to every pool, not only to those that can turn a unit over within the
    /// stat target (see the report).
    #[arg(long)]
    stat_everywhere: bool,
    /// The hospital configuration file (default: the demo hospital).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory for the engine and the clinical store of each run (subdirectories
    /// `medkeeper/` and `fifo/`, which must not exist yet). Default: a fresh directory under
    /// the system temp dir, removed afterwards.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Keep the clinical store in memory instead of a SQLite file in the data directory.
    #[arg(long)]
    memory_store: bool,
    /// Also write the report (every figure, both policies) as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs the simulation and prints the report (whose last line says whether medkeeper's policy
/// met the stat and urgent targets without starving routine orders).
pub async fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.hours > 0.0 && args.hours <= 24.0 * 7.0,
        "--hours must be more than 0 and at most 168"
    );
    anyhow::ensure!(
        (0.0..24.0).contains(&args.start_hour),
        "--start-hour must be in [0, 24)"
    );
    anyhow::ensure!(
        args.load > 0.0 && args.load <= 2.0,
        "--load must be more than 0 and at most 2"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.peak),
        "--peak must be between 0 and 1"
    );
    let config = match &args.config {
        Some(path) => HospitalConfig::from_file(path)?,
        None => HospitalConfig::demo(),
    };
    let params = Params {
        seed: args.seed,
        hours: args.hours,
        start_hour: args.start_hour,
        load: args.load,
        peak: args.peak,
        stat_everywhere: args.stat_everywhere,
        ..Params::default()
    };
    let plan = simulate::plan(&config, &params);
    let (dir, remove) = match &args.data {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("medkeeper-simulate-{}", std::process::id())),
            true,
        ),
    };
    eprintln!(
        "medkeeper simulate: {} orders over {} h, data dir {}",
        plan.arrivals.len(),
        params.hours,
        dir.display()
    );
    let result = compare(&args, &config, &plan, &dir).await;
    if remove {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let comparison = result?;
    print!("{}", comparison.markdown());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&comparison)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

async fn compare(
    args: &SimulateArgs,
    config: &HospitalConfig,
    plan: &Plan,
    dir: &Path,
) -> anyhow::Result<Comparison> {
    let medkeeper = run_policy(args, config, plan, dir, Policy::Medkeeper).await?;
    let fifo = run_policy(args, config, plan, dir, Policy::Fifo).await?;
    Ok(Comparison::new(config, plan, medkeeper, fifo))
}

/// One policy's run on a fresh engine and store under `dir/<policy>`.
async fn run_policy(
    args: &SimulateArgs,
    config: &HospitalConfig,
    plan: &Plan,
    dir: &Path,
    policy: Policy,
) -> anyhow::Result<Run> {
    let dir = dir.join(policy.name().to_ascii_lowercase());
    anyhow::ensure!(
        !dir.exists(),
        "{} already exists: simulations need a fresh data directory",
        dir.display()
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let engine = Engine::open(EngineConfig::new(dir.join("coord")))?;
    let session: Arc<dyn Session> = Arc::new(
        engine
            .connect(SessionOptions {
                timeout: Duration::from_secs(30),
            })
            .await,
    );
    let store: Arc<dyn ClinicalStore> = Arc::new(if args.memory_store {
        SqliteStore::in_memory()?
    } else {
        SqliteStore::open(dir.join("clinical.sqlite"))?
    });
    eprintln!("  {} ...", policy.name());
    let run = simulate::run(session.clone(), store, config, plan, policy)
        .await
        .with_context(|| format!("the {} run", policy.name()))?;
    eprintln!(
        "  {}: {} orders in {:.1} s ({:.1} orders/s)",
        policy.name(),
        run.orders,
        run.wall_s,
        run.orders_per_s
    );
    session.close().await;
    Ok(run)
}
