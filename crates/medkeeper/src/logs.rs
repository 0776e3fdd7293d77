//! The process's log: one `tracing` subscriber, writing to stderr, installed once before a
//! command runs. Without it every `tracing::warn!`/`error!` of the libraries (a failed
//! dispatch round, a lost session, an internal error's detail under its reference) is
//! dropped.
//!
//! - Which events: `RUST_LOG` (the `tracing_subscriber::EnvFilter` syntax, e.g. `debug`,
//!   `warn,medkeeper_hospital=debug`). Unset, `serve` and `dispatch` log medkeeper's own
//!   crates at `info` and the rest at `warn` ([`SERVICE_FILTER`]); the other commands, whose
//!   output is the user's, only warnings and errors ([`COMMAND_FILTER`]).
//! - How: [`LogFormat::Human`], one line an event (`TIME LEVEL target: message fields`), or
//!   [`LogFormat::Json`], one JSON object a line with `timestamp`, `level`, `target`,
//!   `message` and the event's fields at the top level. No colours either way.
//!
//! # No PHI
//! Nothing that identifies a patient beyond the opaque ids (patient `p-…`, order `o-…`) is
//! logged: no names, birth dates, clinical reasons or report texts. Events carry ids, pool
//! and unit names, instance ids and error texts; the errors that could quote a request's
//! content are 4xx answers, which are not logged (the server logs 5xx only).

use std::str::FromStr;

use anyhow::Context;
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

/// What `serve` and `dispatch` log when `RUST_LOG` is unset: medkeeper's crates (targets
/// `medkeeper`, `medkeeper_*`) at `info`, everything else at `warn`.
pub const SERVICE_FILTER: &str = "warn,medkeeper=info";
/// What the other commands log when `RUST_LOG` is unset: warnings and errors.
pub const COMMAND_FILTER: &str = "warn";
/// The environment variable that picks the format (`serve` and `dispatch` also take it as
/// `--log-format`).
pub const FORMAT_ENV: &str = "MEDKEEPER_LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of text an event: `TIME LEVEL target: message fields`.
    #[default]
    Human,
    /// One JSON object a line: `timestamp`, `level`, `target`, `message` and the fields.
    Json,
}

impl FromStr for LogFormat {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<LogFormat> {
        <LogFormat as clap::ValueEnum>::from_str(s, true)
            .map_err(|_| anyhow::anyhow!("unknown log format {s:?}: expected human or json"))
    }
}

/// Installs the subscriber: events `RUST_LOG` selects (`default_filter` if it is unset or
/// empty) go to stderr in `format`.
///
/// # Notable errors
/// `RUST_LOG` that does not parse; a subscriber already installed.
pub fn init(format: LogFormat, default_filter: &str) -> anyhow::Result<()> {
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(s) if !s.trim().is_empty() => EnvFilter::builder()
            .parse(&s)
            .with_context(|| format!("invalid {}={s:?}", EnvFilter::DEFAULT_ENV))?,
        _ => EnvFilter::new(default_filter),
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(filter);
    let installed = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}

/// For the commands other than `serve` and `dispatch`: the format from
/// `MEDKEEPER_LOG_FORMAT` (human if unset), [`COMMAND_FILTER`] unless `RUST_LOG` says more.
pub fn init_for_command() -> anyhow::Result<()> {
    let format = match std::env::var(FORMAT_ENV) {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse()
            .with_context(|| format!("invalid {FORMAT_ENV}"))?,
        _ => LogFormat::Human,
    };
    init(format, COMMAND_FILTER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_by_name() {
        assert_eq!("human".parse::<LogFormat>().unwrap(), LogFormat::Human);
        assert_eq!("JSON".parse::<LogFormat>().unwrap(), LogFormat::Json);
        assert!("yaml".parse::<LogFormat>().is_err());
        #[derive(Deserialize)]
        struct File {
            log_format: LogFormat,
        }
        let f: File = toml::from_str("log_format = \"json\"").unwrap();
        assert_eq!(f.log_format, LogFormat::Json);
    }

    #[test]
    fn the_default_filters_parse() {
        for f in [SERVICE_FILTER, COMMAND_FILTER] {
            EnvFilter::builder().parse(f).unwrap();
        }
    }
}
