//! `medkeeper`: the command-line shell over medkeeper's libraries.
//!
//! - `medkeeper coord --connect embedded:DIR|zk:HOSTS[/chroot] <command>`: a zkCli for either
//!   backend (create, get, set, delete, ls, stat, tree).
//! - `medkeeper lock --connect TARGET PATH [--timeout MS] -- COMMAND [ARGS...]`: run a command
//!   while holding a fair lock, with its fencing token in `MEDKEEPER_FENCING_TOKEN`.
//! - `medkeeper bench coord`: the embedded engine's benchmark; `medkeeper bench recipes`: one
//!   scenario of the side-by-side suite with Curator and kazoo (`scripts/bench`).
//! - `medkeeper simulate [--seed N] [--hours H] [--load L] [--json FILE]`: a simulated hospital
//!   day, medkeeper's dispatch policy next to plain FIFO.
//! - `medkeeper dispatch --connect TARGET --store FILE.sqlite [--hospital FILE.toml]
//!   [--instance NAME]`: one instance's dispatchers, one per pool, until SIGTERM/SIGINT.
//! - `medkeeper store migrate --from sqlite:FILE --to postgres://USER@HOST:PORT/DB`: the
//!   clinical store copied from SQLite into an empty PostgreSQL, every table's count verified.
//!
//! Logs go to stderr through one `tracing` subscriber ([`logs`]): `RUST_LOG` filters,
//! `--log-format human|json` (or `MEDKEEPER_LOG_FORMAT`) picks the format. What a command
//! prints for its user (tables, the URL, errors) is not a log line and stays as it is.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod alerting;
mod alertmanager;
mod bench;
mod bench_recipes;
mod client;
mod coord;
mod datadir;
mod dispatch;
mod https;
mod instance;
mod lock;
mod logs;
mod serve;
mod simulate;
mod store_cmd;

/// medkeeper: a coordination service for hospitals on the ZooKeeper model.
#[derive(Parser)]
#[command(name = "medkeeper", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect and change the coordination tree (a zkCli for the embedded engine and ZooKeeper).
    Coord(coord::CoordArgs),
    /// Run a command while holding a lock (fencing token in MEDKEEPER_FENCING_TOKEN); exits
    /// with the command's status.
    Lock(lock::LockArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// A simulated hospital day through the real domain on a virtual clock: medkeeper's
    /// policy next to plain FIFO on the same seeded arrivals.
    Simulate(simulate::SimulateArgs),
    /// Run this instance's dispatchers (one per pool, each while holding the pool's lock) until
    /// SIGTERM/SIGINT; prints `dispatching POOL as NAME` when it takes a pool.
    Dispatch(dispatch::DispatchArgs),
    /// Serve the HTTP API, live streams and dashboard, and dispatch (the main job): the
    /// embedded default in a data directory, or one of several instances on a ZooKeeper
    /// ensemble. Prints the URL (and an admin token on first start).
    Serve(Box<serve::ServeArgs>),
    /// The clinical store: `store migrate --from sqlite:FILE --to postgres://…` copies a
    /// SQLite store into an empty PostgreSQL one, verifying every table's count.
    #[command(subcommand)]
    Store(store_cmd::StoreCommand),
    /// Everyday work against a running `medkeeper serve` (pools, queue, unit, patient, order,
    /// cluster, tree, token, audit).
    #[command(flatten)]
    Client(client::ClientCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` and `dispatch` install the subscriber themselves, once their settings (a config
    // file, `--log-format`) are known.
    if !matches!(cli.command, Command::Serve(_) | Command::Dispatch(_))
        && let Err(e) = logs::init_for_command()
    {
        eprintln!("error: {e:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Coord(args) => coord::run(args).await,
            Command::Lock(args) => lock::run(args).await,
            Command::Bench(cmd) => bench::run(cmd).await,
            Command::Simulate(args) => simulate::run(args).await,
            Command::Dispatch(args) => dispatch::run(args).await,
            Command::Serve(args) => serve::run(*args).await,
            Command::Store(cmd) => store_cmd::run(cmd).await,
            Command::Client(cmd) => client::run(cmd).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
