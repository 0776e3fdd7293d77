//! `medkeeper store migrate --from sqlite:FILE --to postgres://USER@HOST:PORT/DB`: moves a
//! hospital from the embedded default's SQLite clinical store to PostgreSQL (issue 17).
//!
//! Everything is copied in one PostgreSQL transaction — patients, orders with their
//! transitions and results, tokens, the audit trail with its sequence numbers, alarm history,
//! observations with their raw messages, identifiers, settings, NEWS2 scores, the
//! reconciler's watermark — and each table's row count compared on both sides before it
//! commits: a copy is whole or not at all. The target must be empty (a fresh database; its
//! schema is created here). Stop every `medkeeper serve` writing the SQLite file first: rows
//! written during the copy would not be in it.
//!
//! The password comes as for `serve`: `--to-password-file`, else `MEDKEEPER_STORE_PASSWORD`,
//! else `PGPASSWORD`; never in the URL.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use crate::serve::{StoreTarget, connect_postgres};

/// `medkeeper store ...`.
#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Copy a SQLite clinical store into an empty PostgreSQL one, verifying each table's row
    /// count; all or nothing.
    Migrate(MigrateArgs),
}

/// `medkeeper store migrate` arguments.
#[derive(Args, Debug)]
pub struct MigrateArgs {
    /// The SQLite store: `sqlite:FILE` (or just FILE), e.g. `sqlite:./medkeeper-data/clinical.sqlite`.
    #[arg(long, value_name = "sqlite:FILE")]
    from: String,
    /// The PostgreSQL store: `postgres://USER@HOST:PORT/DB`.
    #[arg(long, value_name = "postgres://USER@HOST:PORT/DB")]
    to: String,
    /// A file holding the PostgreSQL password (else `MEDKEEPER_STORE_PASSWORD`, `PGPASSWORD`).
    #[arg(long, env = "MEDKEEPER_STORE_PASSWORD_FILE")]
    to_password_file: Option<PathBuf>,
}

/// Runs `medkeeper store ...`.
pub async fn run(cmd: StoreCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        StoreCommand::Migrate(args) => migrate(args).await,
    }
}

async fn migrate(args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let from = PathBuf::from(args.from.strip_prefix("sqlite:").unwrap_or(&args.from));
    if !from.is_file() {
        bail!("--from: no SQLite clinical store at {}", from.display());
    }
    let StoreTarget::Postgres { url, password_file } =
        StoreTarget::parse_flag(PathBuf::from(&args.to), args.to_password_file, "--to")?
    else {
        bail!(
            "--to: a postgres://USER@HOST:PORT/DB URL (got {:?})",
            args.to
        );
    };
    let target = connect_postgres(&url, password_file.as_deref()).await?;
    let copies = target
        .import_sqlite(&from)
        .await
        .with_context(|| format!("copying {} into {}", from.display(), target.target()))?;
    let mut table = comfy_table::Table::new();
    table
        .load_style(comfy_table::presets::NOTHING)
        .set_header(["table", "sqlite", "postgres"]);
    for c in &copies {
        table.add_row([
            c.table.to_string(),
            c.source.to_string(),
            c.target.to_string(),
        ]);
    }
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    for line in table.lines() {
        println!("{}", line.trim_end());
    }
    let rows: i64 = copies.iter().map(|c| c.target).sum();
    println!(
        "copied {rows} rows in {} tables from {} to {}; every count verified",
        copies.len(),
        from.display(),
        target.target()
    );
    Ok(ExitCode::SUCCESS)
}
