//! The machinery the sequential-node recipes share (lock, read-write lock, election, semaphore):
//! protected creates, contender ordering, waiting for a node to go, and clean-up of a node whose
//! owner gave up.
//!
//! **Protected create** (Apache Curator's `withProtection`): the node's name starts with
//! `_c_<uuid>-`, a fresh UUID per attempt. If the create's reply is lost to a connection loss,
//! the create may or may not have happened; after reconnecting, the recipe lists the parent and
//! finds its node by that prefix, so the node is neither leaked (orphaned until the session ends,
//! blocking every later contender) nor created twice.

use std::sync::Arc;
use std::time::Duration;

use medkeeper_coord::{
    CreateMode, CreateOptions, Error as CoordError, Op, Session, SessionExt, SessionState, Stat,
    path,
};
use tokio::time::Instant;

use crate::{Error, Result};

/// The prefix of Curator's protected names.
pub(crate) const PROTECTED_MARKER: &str = "_c_";

/// A fresh protected-name prefix: `_c_<uuid>-`.
pub(crate) fn protected_prefix() -> String {
    format!("{PROTECTED_MARKER}{}-", uuid::Uuid::new_v4())
}

/// The sequence number of a sequential node's name: its last ten characters, which ZooKeeper
/// formats as `%010d`. `None` if the name does not end in ten digits.
pub fn sequence_of(name: &str) -> Option<i64> {
    let tail = name.len().checked_sub(10).and_then(|i| name.get(i..))?;
    if tail.bytes().all(|b| b.is_ascii_digit()) {
        tail.parse().ok()
    } else {
        None
    }
}

/// One contender of a line: a child node with a sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Contender {
    pub seq: i64,
    pub name: String,
}

/// The children of `dir` that `is_contender` accepts and that carry a sequence number, in
/// sequence order (ties, impossible under one parent, broken by name).
pub(crate) async fn contenders(
    session: &dyn Session,
    dir: &str,
    is_contender: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Vec<Contender>> {
    let children = session.get_children(dir).await?;
    Ok(sort_contenders(children, is_contender))
}

pub(crate) fn sort_contenders(
    children: Vec<String>,
    is_contender: &(dyn Fn(&str) -> bool + Sync),
) -> Vec<Contender> {
    let mut v: Vec<Contender> = children
        .into_iter()
        .filter(|n| is_contender(n))
        .filter_map(|name| sequence_of(&name).map(|seq| Contender { seq, name }))
        .collect();
    v.sort_by(|a, b| (a.seq, &a.name).cmp(&(b.seq, &b.name)));
    v
}

/// Waits until the session is connected again after a retryable error. Fails with the session's
/// terminal error if it ends, or with `Timeout` at `deadline`.
pub(crate) async fn await_connected(
    session: &dyn Session,
    deadline: Option<Instant>,
) -> Result<()> {
    let mut events = session.session_events();
    let wait = events.wait_for(|s| s == SessionState::Connected || s.is_terminal());
    let state = match deadline {
        Some(d) => tokio::time::timeout_at(d, wait)
            .await
            .map_err(|_| Error::Timeout)?,
        None => wait.await,
    };
    match state.to_error() {
        None => {
            // Back off a little: a backend may report Connected a moment before requests flow.
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(())
        }
        Some(e) => Err(Error::Coord(e)),
    }
}

/// Runs `op` until it succeeds or fails with a non-retryable error, waiting for the session to
/// reconnect after each retryable one.
pub(crate) async fn retrying<T, F, Fut>(
    session: &dyn Session,
    deadline: Option<Instant>,
    mut op: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    loop {
        match op().await {
            Err(e) if e.is_retryable() => await_connected(session, deadline).await?,
            other => return other,
        }
    }
}

/// The child of `dir` whose name starts with `prefix`, if any, with its stat.
pub(crate) async fn find_protected(
    session: &dyn Session,
    dir: &str,
    prefix: &str,
) -> Result<Option<(String, Stat)>> {
    let children = children_or_empty(session, dir).await?;
    for name in children.into_iter().filter(|n| n.starts_with(prefix)) {
        if let Some(stat) = session.exists(&path::join(dir, &name)).await? {
            return Ok(Some((name, stat)));
        }
    }
    Ok(None)
}

/// A node this process created (or may have created) for a recipe and must delete unless it is
/// handed on (to a guard) with [`Pending::disarm`]. Dropped while armed — an acquire future
/// cancelled, or failed — it deletes the node in the background: by path when the create's
/// reply arrived, else by finding the protected prefix after the session's earlier requests
/// have been applied.
pub(crate) struct Pending {
    session: Arc<dyn Session>,
    dir: String,
    prefix: String,
    name: Option<String>,
    armed: bool,
}

impl Pending {
    pub fn new(session: Arc<dyn Session>, dir: &str, prefix: String) -> Pending {
        Pending {
            session,
            dir: dir.to_string(),
            prefix,
            name: None,
            armed: true,
        }
    }

    /// Creates `dir/<prefix><name>` in a sequential mode, protected: a connection loss during
    /// the create is resolved by finding the node by its prefix. Missing parents are created
    /// (`dir` itself as a container, as Curator does, ancestors as persistent nodes).
    pub async fn create(
        &mut self,
        name: &str,
        data: &[u8],
        mode: CreateMode,
        deadline: Option<Instant>,
    ) -> Result<(String, Stat)> {
        let full = format!("{}/{}{}", self.dir, self.prefix, name);
        let options = CreateOptions::new(mode);
        loop {
            match self.session.create(&full, data, &options).await {
                Ok((created, stat)) => {
                    let node = path::name(&created).to_string();
                    self.name = Some(node.clone());
                    return Ok((node, stat));
                }
                Err(CoordError::NoNode) => {
                    // Idempotent, so a lost reply is simply retried.
                    retrying(self.session.as_ref(), deadline, || {
                        ensure_container(self.session.as_ref(), &self.dir)
                    })
                    .await?;
                }
                Err(e) if e.is_retryable() => {
                    await_connected(self.session.as_ref(), deadline).await?;
                    if let Some(found) = self.find_after_loss(deadline).await? {
                        return Ok(found);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Like [`create`](Pending::create), and in the same request deletes `old` (a node of this
    /// session's, e.g. the lock it holds): one multi, so the line never sees the old node gone
    /// without the new one there, and the two writes cost one commit. A reply lost to a
    /// connection loss is resolved by the protected prefix: found, both happened; not found,
    /// neither did (a multi is atomic) and it is sent again. If `old` is gone already (the hold
    /// was lost), the node is created alone.
    pub async fn create_replacing(
        &mut self,
        old: &str,
        name: &str,
        data: &[u8],
        mode: CreateMode,
        deadline: Option<Instant>,
    ) -> Result<(String, Stat)> {
        let full = format!("{}/{}{}", self.dir, self.prefix, name);
        let ops = [
            Op::delete(old, -1),
            Op::create(&full, data, CreateOptions::new(mode)),
        ];
        loop {
            match self.session.multi(&ops).await {
                Ok(results) => {
                    let Some(medkeeper_coord::OpResult::Create { path: created }) =
                        results.into_iter().nth(1)
                    else {
                        return Err(Error::InvalidArgument(
                            "a multi's create answered without its path".into(),
                        ));
                    };
                    let node = path::name(&created).to_string();
                    self.name = Some(node.clone());
                    // A multi's create answers no stat; the hold needs it (its czxid is the
                    // fencing token).
                    let stat = retrying(self.session.as_ref(), deadline, || async {
                        self.session.exists(&created).await.map_err(Error::from)
                    })
                    .await?
                    .ok_or_else(|| lost_now(self.session.as_ref()))?;
                    return Ok((node, stat));
                }
                Err(e) if e.index == Some(0) && e.error == CoordError::NoNode => {
                    // The old node is gone: the hold was lost — or an earlier send of this
                    // very multi applied after a reconnection's search missed it. Look again,
                    // after catching up with the leader, before joining alone.
                    retrying(self.session.as_ref(), deadline, || async {
                        self.session.sync(&self.dir).await.map_err(Error::from)
                    })
                    .await?;
                    if let Some(found) = self.find_after_loss(deadline).await? {
                        return Ok(found);
                    }
                    return self.create(name, data, mode, deadline).await;
                }
                Err(e) if e.error.is_retryable() => {
                    await_connected(self.session.as_ref(), deadline).await?;
                    if let Some(found) = self.find_after_loss(deadline).await? {
                        return Ok(found);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// After a create whose reply was lost: this attempt's node, found by its protected
    /// prefix (retrying through connection losses), now remembered as the pending node.
    async fn find_after_loss(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Option<(String, Stat)>> {
        let found = retrying(self.session.as_ref(), deadline, || {
            find_protected(self.session.as_ref(), &self.dir, &self.prefix)
        })
        .await?;
        if let Some((node, _)) = &found {
            self.name = Some(node.clone());
        }
        Ok(found)
    }

    /// Hands the node on: it will not be deleted by this value.
    pub fn disarm(&mut self) {
        self.armed = false;
    }

    /// Deletes the node now (retrying through connection losses) and disarms.
    pub async fn delete_now(&mut self) -> Result<()> {
        self.armed = false;
        delete_owned(
            self.session.as_ref(),
            &self.dir,
            self.name.as_deref(),
            &self.prefix,
        )
        .await
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let session = self.session.clone();
        let dir = std::mem::take(&mut self.dir);
        let name = self.name.take();
        let prefix = std::mem::take(&mut self.prefix);
        spawn_cleanup(async move {
            let _ = delete_owned(session.as_ref(), &dir, name.as_deref(), &prefix).await;
        });
    }
}

/// Runs a clean-up in the background on the current tokio runtime, if there is one. Without a
/// runtime nothing can be sent; the nodes go when the session ends.
pub(crate) fn spawn_cleanup(f: impl std::future::Future<Output = ()> + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(f);
        }
        Err(_) => tracing::warn!(
            "recipe node dropped outside a tokio runtime: it is deleted when its session ends"
        ),
    }
}

/// The outcome of deleting a node of this session's: a session that has ended took its
/// ephemeral nodes with it, so its end counts as done.
pub(crate) fn gone_with_session(outcome: Result<()>) -> Result<()> {
    match outcome {
        Err(e) if e.is_session_fatal() => Ok(()),
        other => other,
    }
}

/// Deletes this session's ephemeral node at `path` (any version), retrying through connection
/// losses. Succeeds if it is already gone, or if the session has ended (it went with it).
pub(crate) async fn delete_ephemeral(session: &dyn Session, path: &str) -> Result<()> {
    let outcome = retrying(session, None, || async {
        match session.delete(path, -1).await {
            Ok(()) | Err(CoordError::NoNode) => Ok(()),
            Err(e) => Err(Error::Coord(e)),
        }
    })
    .await;
    gone_with_session(outcome)
}

/// Why a node this session created has vanished: the session's end (its terminal error), or
/// someone's delete (`Lost(NodeDeleted)`).
pub(crate) fn lost_now(session: &dyn Session) -> Error {
    let state = session.state();
    match state.to_error() {
        Some(e) if state.is_terminal() => Error::Coord(e),
        _ => Error::Lost(crate::LostReason::NodeDeleted),
    }
}

/// The children of `dir`; none if it does not exist.
pub(crate) async fn children_or_empty(session: &dyn Session, dir: &str) -> Result<Vec<String>> {
    match session.get_children(dir).await {
        Ok(c) => Ok(c),
        Err(CoordError::NoNode) => Ok(Vec::new()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes this process's node: by name if known; otherwise (a create whose reply never came)
/// after a write has passed through the session's pipeline behind the create, by its prefix.
/// A session that has ended took its ephemeral nodes with it.
async fn delete_owned(
    session: &dyn Session,
    dir: &str,
    name: Option<&str>,
    prefix: &str,
) -> Result<()> {
    let outcome: Result<()> = retrying(session, None, || async {
        let name = match name {
            Some(n) => Some(n.to_string()),
            None => {
                // Once the flush answers, a create sent before it is visible.
                if !flush(session, dir).await? {
                    return Ok(());
                }
                find_protected(session, dir, prefix).await?.map(|(n, _)| n)
            }
        };
        if let Some(n) = name {
            match session.delete(&path::join(dir, &n), -1).await {
                Ok(()) | Err(CoordError::NoNode) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    })
    .await;
    gone_with_session(outcome)
}

/// Creates `dir` as a container node (and its ancestors as persistent nodes) if missing.
pub(crate) async fn ensure_container(session: &dyn Session, dir: &str) -> Result<()> {
    session
        .create_all(dir, b"", &CreateOptions::new(CreateMode::Container))
        .await?;
    Ok(())
}

/// What [`wait_gone`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The node is gone (or changed: the caller re-reads either way).
    Changed,
    /// The deadline passed.
    TimedOut,
}

/// Waits until the node at `path` is deleted or changes, the session ends (an error), or
/// `deadline` passes. One exist watch: one notification.
pub(crate) async fn wait_gone(
    session: &dyn Session,
    path: &str,
    deadline: Option<Instant>,
) -> Result<Waited> {
    let (stat, watch) = session.exists_watch(path).await?;
    if stat.is_none() {
        return Ok(Waited::Changed);
    }
    wait_event(session, watch, deadline).await
}

/// What [`wait_deleted`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gone {
    /// The node was deleted (or did not exist when the watch was set).
    Deleted,
    /// The node changed otherwise (its data).
    Changed,
    /// The deadline passed.
    TimedOut,
}

/// Like [`wait_gone`], telling a deletion apart from another change.
pub(crate) async fn wait_deleted(
    session: &dyn Session,
    path: &str,
    deadline: Option<Instant>,
) -> Result<Gone> {
    let (stat, watch) = session.exists_watch(path).await?;
    if stat.is_none() {
        return Ok(Gone::Deleted);
    }
    let deleted = std::sync::atomic::AtomicBool::new(false);
    let event = async {
        let e = watch.await;
        if e.event_type == medkeeper_coord::EventType::NodeDeleted {
            deleted.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        e
    };
    Ok(match wait_event(session, event, deadline).await? {
        Waited::TimedOut => Gone::TimedOut,
        Waited::Changed if deleted.load(std::sync::atomic::Ordering::Relaxed) => Gone::Deleted,
        Waited::Changed => Gone::Changed,
    })
}

/// A fresh attempt tag: 32 hex digits, written as the first line of the data of nodes whose
/// names are fixed (a semaphore's unit leases, a queue's claims), so that after a connection
/// loss or a cancellation the attempt can recognise its own nodes.
pub(crate) fn attempt_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The data of a tagged node: the tag, then a newline and the holder's label.
pub(crate) fn tagged_data(tag: &str, label: &str) -> Vec<u8> {
    format!("{tag}\n{label}").into_bytes()
}

/// The tag and label of a tagged node's data; `None` if it is not tagged data.
pub(crate) fn parse_tagged(data: &[u8]) -> Option<(&str, &str)> {
    let text = std::str::from_utf8(data).ok()?;
    let (tag, label) = text.split_once('\n').unwrap_or((text, ""));
    (tag.len() == 32 && tag.bytes().all(|b| b.is_ascii_hexdigit())).then_some((tag, label))
}

/// Makes sure every request this session sent before is applied: a write is ordered behind all
/// of the session's earlier requests (also on the embedded engine, whose reads do not wait for
/// in-flight writes). `Ok(false)` if `dir` does not exist (nothing below it can either).
pub(crate) async fn flush(session: &dyn Session, dir: &str) -> Result<bool> {
    match session.multi(&[Op::check(dir, -1)]).await {
        Ok(_) => Ok(true),
        Err(e) if e.error == CoordError::NoNode => Ok(false),
        Err(e) => Err(Error::Coord(e.error)),
    }
}

/// Of `paths`, the nodes that carry `tag` and belong to this session, with their stats. Call
/// after [`flush`], so that a multi whose reply was lost has been applied or never will be.
pub(crate) async fn find_tagged(
    session: &dyn Session,
    paths: &[String],
    tag: &str,
) -> Result<Vec<(String, Stat)>> {
    let mut owned = Vec::new();
    for p in paths {
        match session.get_data(p).await {
            Ok((data, stat)) => {
                let ours = parse_tagged(&data).is_some_and(|(t, _)| t == tag)
                    && stat.ephemeral_owner == session.session_id().0;
                if ours {
                    owned.push((p.clone(), stat));
                }
            }
            Err(CoordError::NoNode) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(owned)
}

/// Nodes with fixed names (a lease's units, a queue claim) that one attempt may have created in
/// a multi whose outcome it has not seen, recognised by the attempt's tag in their data. Dropped
/// while armed — the attempt cancelled or failed — it deletes, in the background and after the
/// session's earlier requests are applied, every attempted node that carries the tag and belongs
/// to this session, and nothing else.
pub(crate) struct PendingTagged {
    session: Arc<dyn Session>,
    dir: String,
    tag: String,
    attempted: Vec<String>,
    armed: bool,
}

impl PendingTagged {
    /// For nodes under `dir` tagged `tag`.
    pub fn new(session: Arc<dyn Session>, dir: &str, tag: &str) -> PendingTagged {
        PendingTagged {
            session,
            dir: dir.to_string(),
            tag: tag.to_string(),
            attempted: Vec::new(),
            armed: true,
        }
    }

    /// The attempt's tag.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Records that a request creating `paths` is about to be sent.
    pub fn attempt(&mut self, paths: &[String]) {
        for p in paths {
            if !self.attempted.contains(p) {
                self.attempted.push(p.clone());
            }
        }
    }

    /// After a connection loss: which of `paths` the lost request created (after a flush).
    pub async fn find(&self, paths: &[String]) -> Result<Vec<(String, Stat)>> {
        let s = self.session.as_ref();
        if !flush(s, &self.dir).await? {
            return Ok(Vec::new());
        }
        find_tagged(s, paths, &self.tag).await
    }

    /// Hands the nodes on: they will not be deleted by this value.
    pub fn disarm(&mut self) {
        self.armed = false;
    }

    /// Deletes the attempt's nodes now (retrying through connection losses) and disarms.
    pub async fn delete_now(&mut self) -> Result<()> {
        self.armed = false;
        let attempted = std::mem::take(&mut self.attempted);
        delete_tagged(self.session.as_ref(), &self.dir, &attempted, &self.tag).await
    }
}

impl Drop for PendingTagged {
    fn drop(&mut self) {
        if !self.armed || self.attempted.is_empty() {
            return;
        }
        let session = self.session.clone();
        let dir = std::mem::take(&mut self.dir);
        let tag = std::mem::take(&mut self.tag);
        let attempted = std::mem::take(&mut self.attempted);
        spawn_cleanup(async move {
            let _ = delete_tagged(session.as_ref(), &dir, &attempted, &tag).await;
        });
    }
}

async fn delete_tagged(
    session: &dyn Session,
    dir: &str,
    paths: &[String],
    tag: &str,
) -> Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let outcome: Result<()> = retrying(session, None, || async {
        if !flush(session, dir).await? {
            return Ok(());
        }
        for (p, stat) in find_tagged(session, paths, tag).await? {
            match session.delete(&p, stat.version).await {
                Ok(()) | Err(CoordError::NoNode) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    })
    .await;
    gone_with_session(outcome)
}

/// Waits for `event` (one or more one-shot watches), the session's end (an error), or
/// `deadline`.
pub(crate) async fn wait_event(
    session: &dyn Session,
    event: impl std::future::Future<Output = medkeeper_coord::WatchedEvent>,
    deadline: Option<Instant>,
) -> Result<Waited> {
    let mut events = session.session_events();
    let ended = events.wait_for(SessionState::is_terminal);
    let sleep = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        event = event => match event.state.to_error() {
            Some(e) if event.state.is_terminal() => Err(Error::Coord(e)),
            _ => Ok(Waited::Changed),
        },
        state = ended => Err(Error::Coord(state.to_error().unwrap_or(CoordError::SessionExpired))),
        _ = sleep => Ok(Waited::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_parsing() {
        assert_eq!(sequence_of("lock-0000000042"), Some(42));
        assert_eq!(sequence_of("_c_x-lock-2147483647"), Some(2147483647));
        assert_eq!(sequence_of("lock-42"), None);
        assert_eq!(sequence_of("short"), None);
        assert_eq!(sequence_of("lock-00000000x1"), None);
        // Multi-byte characters before the suffix do not panic.
        assert_eq!(sequence_of("é0000000001"), Some(1));
        assert_eq!(sequence_of("ééééé"), None);
    }

    #[test]
    fn tagged_data_round_trips() {
        let tag = attempt_tag();
        let data = tagged_data(&tag, "instance-1");
        assert_eq!(parse_tagged(&data), Some((tag.as_str(), "instance-1")));
        assert_eq!(parse_tagged(tag.as_bytes()), Some((tag.as_str(), "")));
        assert_eq!(parse_tagged(b"not a tag\nx"), None);
    }

    #[test]
    fn contenders_sort_by_sequence_not_name() {
        let v = sort_contenders(
            vec![
                "_c_b-lock-0000000003".into(),
                "_c_a-lock-0000000010".into(),
                "x__lock__0000000001".into(),
                "other".into(),
            ],
            &|n| n.contains("lock"),
        );
        let seqs: Vec<i64> = v.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, [1, 3, 10]);
    }
}
