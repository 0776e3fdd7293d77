//! A shared counter on one node, changed by compare-and-set on the node's version (Curator's
//! `SharedCount` / `DistributedAtomicLong` without the lock fallback).
//!
//! # Node layout
//! One persistent node whose data is the value as an 8-byte big-endian `i64` (Curator's
//! `SharedCount` uses a 4-byte `int`; 8 bytes leave no room for overflow in practice and match
//! `DistributedAtomicLong`). Empty data reads as 0, so a node created by `mkdir -p` is a counter
//! at 0; a missing node reads as 0 and is created (with 0, then changed) on the first write.
//! Any other data length is [`Error::Malformed`].
//!
//! # Guarantees
//! Every [`add`](Counter::add) is applied exactly once or fails: it reads the value and its
//! version and writes the sum only if the version is unchanged (one `set_data` with the
//! version), retrying on conflict. Concurrent adds from any number of clients sum exactly.
//!
//! # Connection loss and session expiry
//! Reads are retried after a connection loss. A write cut by a connection loss is resolved by
//! re-reading: if the node's version is still the one the write expected, the write did not
//! happen and is retried; otherwise it cannot be known whether the write or another client's
//! was applied, and the call fails with `Coord(ConnectionLoss)` rather than risk counting twice.
//! The counter is not tied to a session: an expiry only fails calls on that session.
//!
//! # Cancellation safety
//! Dropping a call's future before it completes may or may not have applied its write (as with
//! any single request); it never applies it twice.

use std::sync::Arc;

use medkeeper_coord::{
    CreateMode, CreateOptions, Error as CoordError, Session, SessionExt, Stat, Zxid,
};

use crate::line;
use crate::lock::validate_dir;
use crate::{Error, Result};

/// A value of the counter with the node version it was read at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CounterValue {
    /// The value.
    pub value: i64,
    /// The node's data version: what [`Counter::compare_and_set`] expects.
    pub version: i32,
    /// The zxid that created the node (tells a re-created counter from the old one).
    pub czxid: Zxid,
}

impl CounterValue {
    fn of(value: i64, stat: &Stat) -> CounterValue {
        CounterValue {
            value,
            version: stat.version,
            czxid: stat.czxid,
        }
    }
}

fn encode(v: i64) -> [u8; 8] {
    v.to_be_bytes()
}

fn decode(path: &str, data: &[u8]) -> Result<i64> {
    match data.len() {
        0 => Ok(0),
        8 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(data);
            Ok(i64::from_be_bytes(b))
        }
        n => Err(Error::Malformed {
            path: path.to_string(),
            reason: format!("a counter holds 8 bytes, not {n}"),
        }),
    }
}

/// A shared counter at a node. Cheap to clone.
///
/// ```no_run
/// # async fn demo(session: std::sync::Arc<dyn medkeeper_coord::Session>) -> medkeeper_recipes::Result<()> {
/// use medkeeper_recipes::counter::Counter;
/// let tickets = Counter::new(session, "/medical/counters/er-tickets")?;
/// let my_ticket = tickets.add(1).await?;
/// println!("ticket {my_ticket}");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Counter {
    session: Arc<dyn Session>,
    path: String,
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counter").field("path", &self.path).finish()
    }
}

impl Counter {
    /// The counter at `path`.
    ///
    /// # Notable errors
    /// `Coord(BadArguments)` for an invalid path; `InvalidArgument` for the root.
    pub fn new(session: Arc<dyn Session>, path: impl Into<String>) -> Result<Counter> {
        let path = path.into();
        validate_dir(&path)?;
        Ok(Counter { session, path })
    }

    /// The counter's node.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The current value (0 if the node does not exist).
    ///
    /// # Notable errors
    /// `Malformed` if the node's data is not a counter; a session-fatal `Coord` error.
    pub async fn get(&self) -> Result<i64> {
        let s = self.session.as_ref();
        let data = line::retrying(s, None, || async {
            match s.get_data(&self.path).await {
                Ok((d, _)) => Ok(Some(d)),
                Err(CoordError::NoNode) => Ok(None),
                Err(e) => Err(Error::Coord(e)),
            }
        })
        .await?;
        match data {
            Some(d) => decode(&self.path, &d),
            None => Ok(0),
        }
    }

    /// The current value with its version, creating the node (at 0) if missing.
    ///
    /// # Notable errors
    /// As [`get`](Counter::get).
    pub async fn read(&self) -> Result<CounterValue> {
        let s = self.session.as_ref();
        let (data, stat) = line::retrying(s, None, || async {
            Ok(s.get_or_create(&self.path, &encode(0)).await?)
        })
        .await?;
        Ok(CounterValue::of(decode(&self.path, &data)?, &stat))
    }

    /// Adds `delta` (which may be negative) and returns the new value. Conflicting writes are
    /// retried until this one applies.
    ///
    /// # Notable errors
    /// `InvalidArgument` if the sum would overflow `i64` (nothing written); `Coord(ConnectionLoss)`
    /// if the write's outcome could not be determined (see the module docs); `Malformed`; a
    /// session-fatal `Coord` error.
    ///
    /// # Cancellation safety
    /// See the module docs: at most once.
    pub async fn add(&self, delta: i64) -> Result<i64> {
        loop {
            let current = self.read().await?;
            let Some(next) = current.value.checked_add(delta) else {
                return Err(Error::InvalidArgument(format!(
                    "counter {} overflows: {} + {delta}",
                    self.path, current.value
                )));
            };
            if self.write(&current, next).await?.is_some() {
                return Ok(next);
            }
        }
    }

    /// Sets the value to `value` if the node's version is still `expected_version` (from
    /// [`read`](Counter::read)); returns the new value and version, or `None` if the version
    /// differs (or the node is missing).
    ///
    /// # Notable errors
    /// `InvalidArgument` for a negative `expected_version`; `Coord(ConnectionLoss)` if the
    /// write's outcome could not be determined; a session-fatal `Coord` error.
    ///
    /// # Cancellation safety
    /// See the module docs: at most once.
    pub async fn compare_and_set(
        &self,
        expected_version: i32,
        value: i64,
    ) -> Result<Option<CounterValue>> {
        if expected_version < 0 {
            return Err(Error::InvalidArgument(format!(
                "expected version {expected_version} is not a version"
            )));
        }
        let s = self.session.as_ref();
        let czxid =
            match line::retrying(s, None, || async { Ok(s.exists(&self.path).await?) }).await? {
                Some(stat) => stat.czxid,
                None => return Ok(None),
            };
        let expected = CounterValue {
            value: 0,
            version: expected_version,
            czxid,
        };
        self.write(&expected, value).await
    }

    /// Writes `value` if the node is still at `expected`'s version; `None` on a conflict.
    async fn write(&self, expected: &CounterValue, value: i64) -> Result<Option<CounterValue>> {
        let s = self.session.as_ref();
        loop {
            match s
                .set_data(&self.path, &encode(value), expected.version)
                .await
            {
                Ok(stat) => return Ok(Some(CounterValue::of(value, &stat))),
                Err(CoordError::BadVersion) | Err(CoordError::NoNode) => return Ok(None),
                Err(e) if e.is_retryable() => {
                    line::await_connected(s, None).await?;
                    let now = line::retrying(s, None, || async { Ok(s.exists(&self.path).await?) })
                        .await?;
                    match now {
                        // Unchanged: our write was not applied; send it again.
                        Some(stat)
                            if stat.czxid == expected.czxid && stat.version == expected.version => {
                        }
                        // Changed: by us or by someone else, nobody can tell.
                        Some(_) => return Err(Error::Coord(e)),
                        None => return Ok(None),
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A follower of the counter's changes, starting from its current value.
    ///
    /// # Notable errors
    /// As [`read`](Counter::read).
    pub async fn watch(&self) -> Result<CounterWatch> {
        let current = self.read().await?;
        Ok(CounterWatch {
            counter: self.clone(),
            last: Some(current),
        })
    }
}

/// Follows a [`Counter`]: each [`next`](CounterWatch::next) returns the value once it differs
/// (by version or incarnation) from the one returned before. Changes between two calls are
/// coalesced: the latest value is returned.
#[derive(Debug, Clone)]
pub struct CounterWatch {
    counter: Counter,
    last: Option<CounterValue>,
}

impl CounterWatch {
    /// The value last returned (or read when the watch was made).
    pub fn current(&self) -> Option<CounterValue> {
        self.last
    }

    /// Waits for the next change and returns the new value. One data (or exist) watch per
    /// wake; connection losses are waited out. A deleted counter is reported once it exists
    /// again.
    ///
    /// # Notable errors
    /// `Malformed`; a session-fatal `Coord` error if the session ends while waiting.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn next(&mut self) -> Result<CounterValue> {
        let s = self.counter.session.as_ref();
        let p = self.counter.path.as_str();
        loop {
            let watch = match s.get_data_watch(p).await {
                Ok((data, stat, watch)) => {
                    let value = CounterValue::of(decode(p, &data)?, &stat);
                    if self.last != Some(value) {
                        self.last = Some(value);
                        return Ok(value);
                    }
                    watch
                }
                Err(CoordError::NoNode) => match s.exists_watch(p).await {
                    Ok((Some(_), _)) => continue,
                    Ok((None, watch)) => watch,
                    Err(e) if e.is_retryable() => {
                        line::await_connected(s, None).await?;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                },
                Err(e) if e.is_retryable() => {
                    line::await_connected(s, None).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let event = watch.await;
            if event.state.is_terminal() {
                return Err(Error::Coord(
                    event.state.to_error().unwrap_or(CoordError::SessionExpired),
                ));
            }
        }
    }
}

/// Creates the counter node at `path` (and missing ancestors) with `initial` if it does not
/// exist; `false` if it did. Connection losses are waited out (a create cut by one that did
/// happen then reports `false`).
///
/// # Notable errors
/// A session-fatal `Coord` error; `Coord(NoAuth)`.
pub async fn create_counter(session: &dyn Session, path: &str, initial: i64) -> Result<bool> {
    validate_dir(path)?;
    let options = CreateOptions::new(CreateMode::Persistent);
    line::retrying(session, None, || async {
        Ok(session.create_all(path, &encode(initial), &options).await?)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_rejects_other_lengths() {
        for v in [0, 1, -1, i64::MAX, i64::MIN] {
            assert_eq!(decode("/c", &encode(v)).unwrap(), v);
        }
        assert_eq!(encode(1), [0, 0, 0, 0, 0, 0, 0, 1], "big-endian");
        assert_eq!(decode("/c", b"").unwrap(), 0);
        assert!(matches!(
            decode("/c", &[0, 0, 0, 1]),
            Err(Error::Malformed { .. })
        ));
    }
}
