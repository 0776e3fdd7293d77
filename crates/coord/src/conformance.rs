//! Backend-generic conformance cases: one suite that every backend runs unchanged (the pattern
//! of object_store's `integration.rs`).
//!
//! A backend's test binary implements [`Harness`] and expands [`conformance_tests!`], which
//! generates one `#[tokio::test]` per case, so every case is its own test:
//!
//! ```ignore
//! medkeeper_coord::conformance_tests!(my_backend_tests::harness().await);
//! ```
//!
//! Each case works below its own fresh base path (from [`Harness::base_path`]), so cases can run
//! in parallel against one shared server. A real difference between backends is read from
//! [`Capabilities`](crate::Capabilities), never a forked case.
//!
//! The expected behaviour is Apache ZooKeeper 3.8's, as its server implements it (not as its
//! documentation paraphrases it): for example a sequential suffix counts the parent's child
//! creates only, the reported `cversion` counts creates and deletes, container and TTL nodes
//! report `ephemeralOwner` 0, and `getACL` needs READ or ADMIN and masks digest hashes without
//! ADMIN.
//!
//! Conventions of the cases: events are awaited for at most [`EVENT_WAIT`]; "no event" is shown
//! either by a later change whose event must be the first one to arrive, or by a watch that stays
//! pending for [`QUIET`]. Cross-session reads are preceded by `sync`, as a ZooKeeper client
//! connected to another ensemble member must do.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::{
    Acl, AddWatchMode, CreateMode, CreateOptions, DefaultAcl, Error, EventType, Id, MAX_TTL_MS,
    MultiError, OneshotWatch, Op, OpResult, Perms, PersistentWatch, Session, SessionExt,
    SessionState, Stat, WatchedEvent,
};

/// What a backend gives the conformance suite.
#[async_trait]
pub trait Harness: Send + Sync {
    /// Opens a new session with (about) the requested timeout; the backend may clamp it into its
    /// bounds, as ZooKeeper does.
    async fn connect(&self, timeout: Duration) -> Arc<dyn Session>;

    /// Ends `session` by expiry, as if its client had stopped heartbeating (ZooKeeper:
    /// Curator's KillSession technique). Returns once the service has expired it.
    async fn expire(&self, session: &dyn Session);

    /// A fresh, unique, not yet existing path for one case (e.g. `/conformance/<case>-<nonce>`).
    fn base_path(&self, case: &str) -> String;
}

/// Generates one `#[tokio::test]` per conformance case. `$harness` is an expression (it may use
/// `.await`) evaluated in each test, yielding something that implements [`Harness`].
#[macro_export]
macro_rules! conformance_tests {
    (@cases $harness:expr; $($case:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $harness;
                $crate::conformance::$case(&harness).await;
            }
        )*
    };
    ($harness:expr) => {
        $crate::conformance_tests!(@cases $harness;
            create_and_get,
            create_returns_full_stat,
            child_create_and_delete_update_parent_stat,
            set_data_updates_stat,
            get_children_with_stat_lists_children,
            create_ephemeral_owned_by_session,
            create_persistent_sequential_suffix,
            create_ephemeral_sequential_suffix,
            sequence_continues_after_deletes,
            sequence_counter_is_per_parent,
            sequence_counts_plain_children,
            sequential_prefix_may_end_with_slash,
            create_container,
            create_ttl_nodes,
            ttl_options_validated,
            create_existing_node_exists,
            create_missing_parent_no_node,
            ephemeral_cannot_have_children,
            delete_with_children_not_empty,
            delete_version_checks,
            set_data_version_checks,
            missing_node_errors,
            invalid_paths_bad_arguments,
            data_size_limit,
            data_watch_fires_on_set,
            data_watch_fires_on_delete,
            data_and_exist_watch_ignore_child_changes,
            exist_watch_on_missing_node_fires_created,
            exist_watch_on_existing_node,
            child_watch_fires_on_child_create_and_delete,
            child_watch_fires_node_deleted,
            delete_fires_every_watch_kind,
            create_fires_only_exist_and_parent_child_watches,
            one_shot_watch_rearms_only_on_new_read,
            set_acl_fires_no_watch,
            dropped_watch_is_unregistered,
            watch_on_missing_node_read_fails,
            watches_fire_for_other_sessions_changes,
            persistent_watch_node_events,
            persistent_recursive_watch_descendant_events,
            dropped_persistent_watch_leaves_others,
            multi_applies_all_in_one_zxid,
            multi_rolls_back_on_failure,
            multi_reports_failing_index,
            multi_ops_see_earlier_ops,
            multi_check_versions,
            multi_empty,
            multi_fires_watches,
            session_basics,
            session_timeout_negotiated_within_bounds,
            close_deletes_ephemerals_and_fires_watches,
            close_ends_outstanding_watches,
            expiry_deletes_ephemerals_and_fires_watches,
            container_reaped_after_last_child_deleted,
            ttl_node_reaped_when_expired_and_empty,
            acl_world_anyone_default,
            acl_digest_enforced,
            acl_each_permission_enforced,
            acl_not_inherited,
            acl_auth_scheme_uses_session_identities,
            acl_invalid_rejected,
            set_acl_aversion,
            acl_checked_before_existence_and_version,
            get_acl_needs_read_or_admin,
            zxids_strictly_increase,
            create_all_and_delete_recursive,
            watch_event_precedes_read_of_change,
            close_deletes_only_own_ephemerals,
            recursive_watch_hides_unreadable_nodes,
            default_acl_closes_nodes_created_without_an_acl,
        );
    };
}

/// How long a case waits for an event that must arrive.
pub const EVENT_WAIT: Duration = Duration::from_secs(10);
/// How long a watch must stay pending to count as "not fired".
pub const QUIET: Duration = Duration::from_millis(300);
/// The session timeout cases ask for (a backend may clamp it).
const TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Helpers

fn opts(mode: CreateMode) -> CreateOptions {
    CreateOptions::new(mode)
}

fn persistent() -> CreateOptions {
    opts(CreateMode::Persistent)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// A connected session and the case's base path (created).
async fn setup(h: &dyn Harness, case: &str) -> (Arc<dyn Session>, String) {
    let s = h.connect(TIMEOUT).await;
    let base = h.base_path(case);
    s.ensure_path(&base)
        .await
        .unwrap_or_else(|e| panic!("{case}: ensure_path({base}) failed: {e:?}"));
    (s, base)
}

async fn create(s: &dyn Session, path: &str, data: &[u8], mode: CreateMode) -> (String, Stat) {
    s.create(path, data, &opts(mode))
        .await
        .unwrap_or_else(|e| panic!("create({path}, {mode:?}) failed: {e:?}"))
}

async fn stat_of(s: &dyn Session, path: &str) -> Stat {
    s.exists(path)
        .await
        .unwrap_or_else(|e| panic!("exists({path}) failed: {e:?}"))
        .unwrap_or_else(|| panic!("{path} should exist"))
}

/// The node's existence as another session sees it, after a `sync`.
async fn synced_exists(s: &dyn Session, path: &str) -> Option<Stat> {
    s.sync(path)
        .await
        .unwrap_or_else(|e| panic!("sync({path}) failed: {e:?}"));
    s.exists(path)
        .await
        .unwrap_or_else(|e| panic!("exists({path}) failed: {e:?}"))
}

/// Waits for a one-shot watch and checks its event.
async fn expect_event(w: OneshotWatch, ty: EventType, path: &str, what: &str) {
    let ev = tokio::time::timeout(EVENT_WAIT, w)
        .await
        .unwrap_or_else(|_| {
            panic!("{what}: expected {ty:?} on {path}, no event in {EVENT_WAIT:?}")
        });
    assert_eq!(ev, WatchedEvent::node(ty, path), "{what}: wrong event");
}

/// Checks that a one-shot watch stays pending for [`QUIET`].
async fn expect_quiet(w: &mut OneshotWatch, what: &str) {
    if let Ok(ev) = tokio::time::timeout(QUIET, &mut *w).await {
        panic!("{what}: expected no event, got {ev:?}");
    }
}

/// Waits for the next event of a persistent watch and checks it.
async fn expect_next(w: &mut PersistentWatch, ty: EventType, path: &str, what: &str) {
    let ev = tokio::time::timeout(EVENT_WAIT, w.next())
        .await
        .unwrap_or_else(|_| panic!("{what}: expected {ty:?} on {path}, no event in {EVENT_WAIT:?}"))
        .unwrap_or_else(|| panic!("{what}: expected {ty:?} on {path}, the watch ended"));
    assert_eq!(ev, WatchedEvent::node(ty, path), "{what}: wrong event");
}

/// Checks that a persistent watch delivers nothing for [`QUIET`].
async fn expect_no_next(w: &mut PersistentWatch, what: &str) {
    if let Ok(ev) = tokio::time::timeout(QUIET, w.next()).await {
        panic!("{what}: expected no event, got {ev:?}");
    }
}

fn assert_same_acls(actual: &[Acl], expected: &[Acl], what: &str) {
    let ok = actual.len() == expected.len()
        && expected.iter().all(|a| actual.contains(a))
        && actual.iter().all(|a| expected.contains(a));
    assert!(ok, "{what}: ACL is {actual:?}, expected {expected:?}");
}

async fn wait_terminal(s: &dyn Session, what: &str) -> SessionState {
    let mut events = s.session_events();
    tokio::time::timeout(
        Duration::from_secs(30),
        events.wait_for(SessionState::is_terminal),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: session did not reach a terminal state in 30 s"))
}

/// Polls until `path` is gone (as `s` sees it) or `deadline` passes; true if gone.
async fn gone_within(s: &dyn Session, path: &str, within: Duration, poll: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if synced_exists(s, path).await.is_none() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(poll).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Create modes and stats

/// A persistent node can be created and read back with the stat ZooKeeper gives it.
pub async fn create_and_get(h: &dyn Harness) {
    let s = h.connect(TIMEOUT).await;
    let base = h.base_path("create_and_get");
    s.ensure_path(&base).await.unwrap();
    let p = format!("{base}/a");
    let (path, stat) = s.create(&p, b"hello", &persistent()).await.unwrap();
    assert_eq!(path, p);
    assert_eq!(stat.version, 0);
    assert_eq!(stat.data_length, 5);
    assert_eq!(stat.czxid, stat.mzxid);
    let (data, st2) = s.get_data(&p).await.unwrap();
    assert_eq!(data, b"hello");
    assert_eq!(st2, stat);
    s.close().await;
}

/// Every Stat field of a fresh node: czxid = mzxid = pzxid, ctime = mtime ≈ now, versions 0,
/// owner 0, data length, no children; exists, get_data and get_children agree with create.
pub async fn create_returns_full_stat(h: &dyn Harness) {
    let (s, base) = setup(h, "create_returns_full_stat").await;
    let p = format!("{base}/n");
    let before = now_ms();
    let (path, st) = create(&*s, &p, b"twelve bytes", CreateMode::Persistent).await;
    let after = now_ms();
    assert_eq!(path, p);
    assert!(st.czxid > 0, "czxid {} must be positive", st.czxid);
    assert_eq!(st.mzxid, st.czxid, "mzxid of a new node");
    assert_eq!(
        st.pzxid, st.czxid,
        "pzxid of a new node (ZooKeeper sets it to czxid)"
    );
    assert_eq!(st.mtime, st.ctime, "mtime of a new node");
    assert!(
        st.ctime >= before - 60_000 && st.ctime <= after + 60_000,
        "ctime {} is not wall-clock ms near {before}..{after}",
        st.ctime
    );
    assert_eq!(
        (st.version, st.cversion, st.aversion),
        (0, 0, 0),
        "versions"
    );
    assert_eq!(
        st.ephemeral_owner, 0,
        "ephemeral_owner of a persistent node"
    );
    assert_eq!(st.data_length, 12);
    assert_eq!(st.num_children, 0);
    assert_eq!(stat_of(&*s, &p).await, st, "exists stat");
    assert_eq!(
        s.get_data(&p).await.unwrap(),
        (b"twelve bytes".to_vec(), st)
    );
    let (kids, kst) = s.get_children_with_stat(&p).await.unwrap();
    assert!(kids.is_empty());
    assert_eq!(kst, st, "get_children_with_stat stat");
    // Empty data.
    let (_, e) = create(&*s, &format!("{base}/empty"), b"", CreateMode::Persistent).await;
    assert_eq!(e.data_length, 0);
    assert_eq!(s.get_data(&format!("{base}/empty")).await.unwrap().0, b"");
    s.close().await;
}

/// A child create bumps the parent's cversion and numChildren and sets its pzxid to the child's
/// czxid; a child delete bumps cversion again (ZooKeeper reports creates + deletes), lowers
/// numChildren and moves pzxid; the parent's data stat never changes.
pub async fn child_create_and_delete_update_parent_stat(h: &dyn Harness) {
    let (s, base) = setup(h, "child_create_and_delete_update_parent_stat").await;
    let p0 = stat_of(&*s, &base).await;
    assert_eq!((p0.cversion, p0.num_children), (0, 0));
    let (_, c1) = create(&*s, &format!("{base}/c1"), b"", CreateMode::Persistent).await;
    let p1 = stat_of(&*s, &base).await;
    assert_eq!(p1.cversion, 1, "cversion after one child create");
    assert_eq!(p1.num_children, 1);
    assert_eq!(p1.pzxid, c1.czxid, "pzxid = the child's czxid");
    let (_, c2) = create(&*s, &format!("{base}/c2"), b"", CreateMode::Ephemeral).await;
    let p2 = stat_of(&*s, &base).await;
    assert_eq!((p2.cversion, p2.num_children, p2.pzxid), (2, 2, c2.czxid));
    s.delete(&format!("{base}/c1"), -1).await.unwrap();
    let p3 = stat_of(&*s, &base).await;
    assert_eq!(p3.cversion, 3, "cversion after 2 creates + 1 delete");
    assert_eq!(p3.num_children, 1);
    assert!(
        p3.pzxid > c2.czxid,
        "pzxid moves on delete: {} vs {}",
        p3.pzxid,
        c2.czxid
    );
    let (_, c3) = create(&*s, &format!("{base}/c3"), b"", CreateMode::Persistent).await;
    assert!(
        c3.czxid > p3.pzxid,
        "the next change's zxid is above the delete's"
    );
    for p in [p1, p2, p3] {
        assert_eq!(
            (
                p.czxid,
                p.mzxid,
                p.ctime,
                p.mtime,
                p.version,
                p.aversion,
                p.data_length
            ),
            (
                p0.czxid,
                p0.mzxid,
                p0.ctime,
                p0.mtime,
                p0.version,
                p0.aversion,
                p0.data_length
            ),
            "the parent's own data stat must not change with its children"
        );
    }
    s.close().await;
}

/// set_data: version + 1, new mzxid above czxid, mtime ≥ ctime, czxid/ctime/cversion kept, new
/// data length; the returned stat is what reads then report.
pub async fn set_data_updates_stat(h: &dyn Harness) {
    let (s, base) = setup(h, "set_data_updates_stat").await;
    let p = format!("{base}/n");
    let (_, st0) = create(&*s, &p, b"a", CreateMode::Persistent).await;
    let st1 = s.set_data(&p, b"bbb", 0).await.unwrap();
    assert_eq!(st1.version, 1);
    assert!(
        st1.mzxid > st0.mzxid,
        "mzxid must increase: {} -> {}",
        st0.mzxid,
        st1.mzxid
    );
    assert!(st1.mtime >= st1.ctime);
    assert_eq!(st1.data_length, 3);
    assert_eq!(
        (
            st1.czxid,
            st1.ctime,
            st1.cversion,
            st1.aversion,
            st1.pzxid,
            st1.ephemeral_owner
        ),
        (
            st0.czxid,
            st0.ctime,
            st0.cversion,
            st0.aversion,
            st0.pzxid,
            st0.ephemeral_owner
        ),
        "set_data only changes data fields"
    );
    assert_eq!(s.get_data(&p).await.unwrap(), (b"bbb".to_vec(), st1));
    // Setting identical data is still a change.
    let st2 = s.set_data(&p, b"bbb", -1).await.unwrap();
    assert_eq!(st2.version, 2);
    assert!(st2.mzxid > st1.mzxid);
    // Setting empty data.
    let st3 = s.set_data(&p, b"", 2).await.unwrap();
    assert_eq!((st3.version, st3.data_length), (3, 0));
    assert_eq!(s.get_data(&p).await.unwrap().0, b"");
    s.close().await;
}

/// get_children / get_children_with_stat list exactly the direct children (any order) and the
/// node's own stat.
pub async fn get_children_with_stat_lists_children(h: &dyn Harness) {
    let (s, base) = setup(h, "get_children_with_stat_lists_children").await;
    for name in ["b", "a", "c"] {
        create(&*s, &format!("{base}/{name}"), b"", CreateMode::Persistent).await;
    }
    create(&*s, &format!("{base}/a/deep"), b"", CreateMode::Persistent).await;
    create(&*s, &format!("{base}/e"), b"", CreateMode::Ephemeral).await;
    let (kids, st) = s.get_children_with_stat(&base).await.unwrap();
    assert_eq!(sorted(kids), ["a", "b", "c", "e"]);
    assert_eq!(st, stat_of(&*s, &base).await);
    assert_eq!(st.num_children, 4);
    assert_eq!(
        sorted(s.get_children(&base).await.unwrap()),
        ["a", "b", "c", "e"]
    );
    assert_eq!(
        s.get_children(&format!("{base}/a")).await.unwrap(),
        ["deep"]
    );
    assert!(
        s.get_children(&format!("{base}/b"))
            .await
            .unwrap()
            .is_empty()
    );
    s.close().await;
}

/// An ephemeral node's ephemeralOwner is its session's id; other sessions see the same.
pub async fn create_ephemeral_owned_by_session(h: &dyn Harness) {
    let (s, base) = setup(h, "create_ephemeral_owned_by_session").await;
    let other = h.connect(TIMEOUT).await;
    assert_ne!(
        s.session_id(),
        other.session_id(),
        "two sessions share an id"
    );
    let p = format!("{base}/e");
    let (path, st) = create(&*s, &p, b"x", CreateMode::Ephemeral).await;
    assert_eq!(path, p);
    assert_eq!(st.ephemeral_owner, s.session_id().0);
    assert!(st.is_ephemeral());
    assert_eq!(
        (st.version, st.cversion, st.num_children, st.data_length),
        (0, 0, 0, 1)
    );
    assert_eq!(st.pzxid, st.czxid);
    let seen = synced_exists(&*other, &p)
        .await
        .expect("other session sees the node");
    assert_eq!(seen.ephemeral_owner, s.session_id().0);
    other.close().await;
    s.close().await;
}

/// Persistent-sequential: the name gets the parent's 10-digit counter, starting at 0000000000.
pub async fn create_persistent_sequential_suffix(h: &dyn Harness) {
    let (s, base) = setup(h, "create_persistent_sequential_suffix").await;
    let prefix = format!("{base}/job-");
    let (p0, st0) = create(&*s, &prefix, b"", CreateMode::PersistentSequential).await;
    let (p1, _) = create(&*s, &prefix, b"", CreateMode::PersistentSequential).await;
    let (p2, _) = create(
        &*s,
        &format!("{base}/other-"),
        b"",
        CreateMode::PersistentSequential,
    )
    .await;
    assert_eq!(p0, format!("{base}/job-0000000000"));
    assert_eq!(p1, format!("{base}/job-0000000001"));
    assert_eq!(
        p2,
        format!("{base}/other-0000000002"),
        "one counter for all names of a parent"
    );
    assert_eq!(st0.ephemeral_owner, 0);
    assert_eq!(
        stat_of(&*s, &p0).await,
        st0,
        "the node exists under its full name"
    );
    assert_eq!(
        s.exists(&prefix).await.unwrap(),
        None,
        "the bare prefix is not a node"
    );
    s.close().await;
}

/// Ephemeral-sequential: suffix as for persistent-sequential, owner is the session.
pub async fn create_ephemeral_sequential_suffix(h: &dyn Harness) {
    let (s, base) = setup(h, "create_ephemeral_sequential_suffix").await;
    let prefix = format!("{base}/lock-");
    let (p0, st0) = create(&*s, &prefix, b"", CreateMode::EphemeralSequential).await;
    let (p1, st1) = create(&*s, &prefix, b"", CreateMode::EphemeralSequential).await;
    assert_eq!(p0, format!("{base}/lock-0000000000"));
    assert_eq!(p1, format!("{base}/lock-0000000001"));
    assert_eq!(st0.ephemeral_owner, s.session_id().0);
    assert_eq!(st1.ephemeral_owner, s.session_id().0);
    assert!(st1.czxid > st0.czxid);
    s.close().await;
}

/// The suffix counts child creates only and never reuses a number: create, create, delete,
/// create gives suffix 2 (ZooKeeper 3.8), while the reported cversion counts the delete too.
pub async fn sequence_continues_after_deletes(h: &dyn Harness) {
    let (s, base) = setup(h, "sequence_continues_after_deletes").await;
    let prefix = format!("{base}/x-");
    let (a, _) = create(&*s, &prefix, b"", CreateMode::PersistentSequential).await;
    let (b, _) = create(&*s, &prefix, b"", CreateMode::PersistentSequential).await;
    s.delete(&b, -1).await.unwrap();
    let (c, _) = create(&*s, &prefix, b"", CreateMode::PersistentSequential).await;
    assert_eq!(a, format!("{base}/x-0000000000"));
    assert_eq!(b, format!("{base}/x-0000000001"));
    assert_eq!(
        c,
        format!("{base}/x-0000000002"),
        "the suffix is the number of creates so far (deletes do not count)"
    );
    let st = stat_of(&*s, &base).await;
    assert_eq!(
        (st.cversion, st.num_children),
        (4, 2),
        "cversion counts 3 creates + 1 delete"
    );
    // Deleting the newest never lets its number be reused.
    s.delete(&c, -1).await.unwrap();
    s.delete(&a, -1).await.unwrap();
    let (d, _) = create(&*s, &prefix, b"", CreateMode::EphemeralSequential).await;
    assert_eq!(d, format!("{base}/x-0000000003"));
    s.close().await;
}

/// Each parent has its own counter.
pub async fn sequence_counter_is_per_parent(h: &dyn Harness) {
    let (s, base) = setup(h, "sequence_counter_is_per_parent").await;
    create(&*s, &format!("{base}/p"), b"", CreateMode::Persistent).await;
    create(&*s, &format!("{base}/q"), b"", CreateMode::Persistent).await;
    for i in 0..3 {
        let (p, _) = create(
            &*s,
            &format!("{base}/p/n-"),
            b"",
            CreateMode::PersistentSequential,
        )
        .await;
        assert_eq!(p, format!("{base}/p/n-{i:010}"));
    }
    let (q, _) = create(
        &*s,
        &format!("{base}/q/n-"),
        b"",
        CreateMode::PersistentSequential,
    )
    .await;
    assert_eq!(
        q,
        format!("{base}/q/n-0000000000"),
        "q's counter is independent of p's"
    );
    s.close().await;
}

/// Plain (non-sequential) child creates advance the counter the sequential suffix comes from.
pub async fn sequence_counts_plain_children(h: &dyn Harness) {
    let (s, base) = setup(h, "sequence_counts_plain_children").await;
    create(&*s, &format!("{base}/plain1"), b"", CreateMode::Persistent).await;
    create(&*s, &format!("{base}/plain2"), b"", CreateMode::Ephemeral).await;
    s.delete(&format!("{base}/plain1"), -1).await.unwrap();
    let (p, _) = create(
        &*s,
        &format!("{base}/s-"),
        b"",
        CreateMode::PersistentSequential,
    )
    .await;
    assert_eq!(p, format!("{base}/s-0000000002"));
    create(&*s, &format!("{base}/cont"), b"", CreateMode::Container).await;
    let (p, _) = create(
        &*s,
        &format!("{base}/s-"),
        b"",
        CreateMode::EphemeralSequential,
    )
    .await;
    assert_eq!(p, format!("{base}/s-0000000004"));
    s.close().await;
}

/// A sequential create's path may end with `/`: the node is named by the suffix alone.
pub async fn sequential_prefix_may_end_with_slash(h: &dyn Harness) {
    let (s, base) = setup(h, "sequential_prefix_may_end_with_slash").await;
    let (p, _) = create(
        &*s,
        &format!("{base}/"),
        b"",
        CreateMode::PersistentSequential,
    )
    .await;
    assert_eq!(p, format!("{base}/0000000000"));
    let (p, _) = create(
        &*s,
        &format!("{base}/"),
        b"",
        CreateMode::EphemeralSequential,
    )
    .await;
    assert_eq!(p, format!("{base}/0000000001"));
    let err = s
        .create(&format!("{base}/"), b"", &persistent())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::BadArguments(_)),
        "non-sequential `{base}/`: {err:?}"
    );
    s.close().await;
}

/// A container: created like a persistent node (ZooKeeper reports ephemeralOwner 0), may have
/// children of any mode.
pub async fn create_container(h: &dyn Harness) {
    let (s, base) = setup(h, "create_container").await;
    let c = format!("{base}/c");
    let (path, st) = create(&*s, &c, b"cfg", CreateMode::Container).await;
    assert_eq!(path, c);
    assert_eq!(
        st.ephemeral_owner, 0,
        "ZooKeeper 3.8 reports ephemeralOwner 0 for containers"
    );
    assert_eq!((st.version, st.cversion, st.data_length), (0, 0, 3));
    assert_eq!(st.pzxid, st.czxid);
    create(&*s, &format!("{c}/p"), b"", CreateMode::Persistent).await;
    create(&*s, &format!("{c}/e"), b"", CreateMode::Ephemeral).await;
    let (seq, _) = create(
        &*s,
        &format!("{c}/s-"),
        b"",
        CreateMode::EphemeralSequential,
    )
    .await;
    assert_eq!(seq, format!("{c}/s-0000000002"));
    create(&*s, &format!("{c}/inner"), b"", CreateMode::Container).await;
    assert_eq!(stat_of(&*s, &c).await.num_children, 4);
    s.close().await;
}

/// TTL nodes, both modes, when the backend has them (ephemeralOwner reported as 0, children
/// allowed); otherwise both modes fail with `Unimplemented`.
pub async fn create_ttl_nodes(h: &dyn Harness) {
    let (s, base) = setup(h, "create_ttl_nodes").await;
    let ttl = Duration::from_secs(3600);
    let t = format!("{base}/t");
    let r = s
        .create(&t, b"v", &opts(CreateMode::PersistentWithTtl).with_ttl(ttl))
        .await;
    let rs = s
        .create(
            &format!("{base}/ts-"),
            b"",
            &opts(CreateMode::PersistentSequentialWithTtl).with_ttl(ttl),
        )
        .await;
    if !s.capabilities().ttl_nodes {
        assert_eq!(
            r.unwrap_err(),
            Error::Unimplemented,
            "TTL create without TTL support"
        );
        assert_eq!(
            rs.unwrap_err(),
            Error::Unimplemented,
            "sequential TTL create"
        );
        assert_eq!(s.exists(&t).await.unwrap(), None);
        s.close().await;
        return;
    }
    let (path, st) = r.expect("TTL create");
    assert_eq!(path, t);
    assert_eq!(
        st.ephemeral_owner, 0,
        "ZooKeeper 3.8 reports ephemeralOwner 0 for TTL nodes"
    );
    assert_eq!((st.version, st.data_length), (0, 1));
    let (spath, sst) = rs.expect("sequential TTL create");
    assert_eq!(spath, format!("{base}/ts-0000000001"));
    assert_eq!(sst.ephemeral_owner, 0);
    create(&*s, &format!("{t}/child"), b"", CreateMode::Persistent).await;
    assert_eq!(stat_of(&*s, &t).await.num_children, 1);
    s.close().await;
}

/// TTL arguments: a TTL mode needs a TTL in 1..=MAX_TTL_MS ms; other modes take none
/// (`BadArguments`, nothing created).
pub async fn ttl_options_validated(h: &dyn Harness) {
    let (s, base) = setup(h, "ttl_options_validated").await;
    let p = format!("{base}/n");
    let err = s
        .create(&p, b"", &persistent().with_ttl(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::BadArguments(_)),
        "persistent with a ttl: {err:?}"
    );
    let err = s
        .create(
            &p,
            b"",
            &opts(CreateMode::Ephemeral).with_ttl(Duration::from_secs(1)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::BadArguments(_)),
        "ephemeral with a ttl: {err:?}"
    );
    if s.capabilities().ttl_nodes {
        for (what, o) in [
            ("no ttl", opts(CreateMode::PersistentWithTtl)),
            (
                "ttl 0",
                opts(CreateMode::PersistentWithTtl).with_ttl(Duration::ZERO),
            ),
            (
                "ttl over max",
                opts(CreateMode::PersistentSequentialWithTtl)
                    .with_ttl(Duration::from_millis(MAX_TTL_MS + 1)),
            ),
        ] {
            let err = s.create(&p, b"", &o).await.unwrap_err();
            assert!(matches!(err, Error::BadArguments(_)), "{what}: {err:?}");
        }
        let (_, st) = s
            .create(
                &p,
                b"",
                &opts(CreateMode::PersistentWithTtl).with_ttl(Duration::from_millis(MAX_TTL_MS)),
            )
            .await
            .expect("ttl = MAX_TTL_MS is accepted");
        assert_eq!(st.ephemeral_owner, 0);
    }
    assert_eq!(
        stat_of(&*s, &base).await.num_children,
        i32::from(s.capabilities().ttl_nodes),
        "rejected creates leave nothing"
    );
    s.close().await;
}

// ---------------------------------------------------------------------------------------------
// Errors of plain operations

/// Creating an existing path fails `NodeExists` in every mode and leaves the node untouched.
pub async fn create_existing_node_exists(h: &dyn Harness) {
    let (s, base) = setup(h, "create_existing_node_exists").await;
    let p = format!("{base}/n");
    let (_, st) = create(&*s, &p, b"orig", CreateMode::Persistent).await;
    let mut modes = vec![
        CreateMode::Persistent,
        CreateMode::Ephemeral,
        CreateMode::Container,
    ];
    if s.capabilities().ttl_nodes {
        modes.push(CreateMode::PersistentWithTtl);
    }
    for mode in modes {
        let mut o = opts(mode);
        if mode.is_ttl() {
            o = o.with_ttl(Duration::from_secs(60));
        }
        let err = s.create(&p, b"new", &o).await.unwrap_err();
        assert_eq!(err, Error::NodeExists, "create existing as {mode:?}");
    }
    assert_eq!(s.get_data(&p).await.unwrap(), (b"orig".to_vec(), st));
    assert_eq!(
        stat_of(&*s, &base).await.cversion,
        1,
        "failed creates do not count"
    );
    let err = s.create(&base, b"", &persistent()).await.unwrap_err();
    assert_eq!(err, Error::NodeExists);
    s.close().await;
}

/// A create whose parent is missing fails `NoNode`, whatever the mode.
pub async fn create_missing_parent_no_node(h: &dyn Harness) {
    let (s, base) = setup(h, "create_missing_parent_no_node").await;
    let mut modes = vec![
        CreateMode::Persistent,
        CreateMode::PersistentSequential,
        CreateMode::Ephemeral,
        CreateMode::EphemeralSequential,
        CreateMode::Container,
    ];
    if s.capabilities().ttl_nodes {
        modes.push(CreateMode::PersistentWithTtl);
    }
    for mode in modes {
        let mut o = opts(mode);
        if mode.is_ttl() {
            o = o.with_ttl(Duration::from_secs(60));
        }
        let err = s
            .create(&format!("{base}/missing/n"), b"", &o)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            Error::NoNode,
            "create under a missing parent as {mode:?}"
        );
    }
    assert_eq!(s.exists(&format!("{base}/missing")).await.unwrap(), None);
    s.close().await;
}

/// No node can be created below an ephemeral node, by its owner or anyone else, in any mode
/// (`NoChildrenForEphemerals`); an existing name still reports `NodeExists` first.
pub async fn ephemeral_cannot_have_children(h: &dyn Harness) {
    let (s, base) = setup(h, "ephemeral_cannot_have_children").await;
    let other = h.connect(TIMEOUT).await;
    let e = format!("{base}/e");
    create(&*s, &e, b"", CreateMode::Ephemeral).await;
    let (es, _) = create(
        &*s,
        &format!("{base}/es-"),
        b"",
        CreateMode::EphemeralSequential,
    )
    .await;
    for parent in [&e, &es] {
        for mode in [
            CreateMode::Persistent,
            CreateMode::Ephemeral,
            CreateMode::PersistentSequential,
            CreateMode::EphemeralSequential,
            CreateMode::Container,
        ] {
            for (who, sess) in [("owner", &s), ("other session", &other)] {
                let err = sess
                    .create(&format!("{parent}/c"), b"", &opts(mode))
                    .await
                    .unwrap_err();
                assert_eq!(
                    err,
                    Error::NoChildrenForEphemerals,
                    "{who} creating a {mode:?} child of ephemeral {parent}"
                );
            }
        }
    }
    let st = stat_of(&*s, &e).await;
    assert_eq!((st.cversion, st.num_children), (0, 0));
    other.close().await;
    s.close().await;
}

/// Deleting a node with children fails `NotEmpty`; it succeeds once they are gone.
pub async fn delete_with_children_not_empty(h: &dyn Harness) {
    let (s, base) = setup(h, "delete_with_children_not_empty").await;
    let p = format!("{base}/p");
    create(&*s, &p, b"", CreateMode::Persistent).await;
    create(&*s, &format!("{p}/c"), b"", CreateMode::Ephemeral).await;
    assert_eq!(s.delete(&p, -1).await.unwrap_err(), Error::NotEmpty);
    assert_eq!(s.delete(&p, 0).await.unwrap_err(), Error::NotEmpty);
    assert!(s.exists(&p).await.unwrap().is_some());
    s.delete(&format!("{p}/c"), 0).await.unwrap();
    s.delete(&p, 0).await.unwrap();
    assert_eq!(s.exists(&p).await.unwrap(), None);
    s.close().await;
}

/// delete(version): a wrong version fails `BadVersion` (checked before `NotEmpty`), `-1` and the
/// exact version succeed.
pub async fn delete_version_checks(h: &dyn Harness) {
    let (s, base) = setup(h, "delete_version_checks").await;
    let p = format!("{base}/n");
    create(&*s, &p, b"", CreateMode::Persistent).await;
    s.set_data(&p, b"1", -1).await.unwrap();
    s.set_data(&p, b"2", -1).await.unwrap();
    for v in [0, 1, 3, 100, -2] {
        assert_eq!(
            s.delete(&p, v).await.unwrap_err(),
            Error::BadVersion,
            "delete version {v}"
        );
    }
    create(&*s, &format!("{p}/c"), b"", CreateMode::Persistent).await;
    assert_eq!(
        s.delete(&p, 0).await.unwrap_err(),
        Error::BadVersion,
        "ZooKeeper checks the version before emptiness"
    );
    s.delete(&format!("{p}/c"), -1).await.unwrap();
    s.delete(&p, 2).await.unwrap();
    assert_eq!(s.exists(&p).await.unwrap(), None);
    let q = format!("{base}/q");
    create(&*s, &q, b"", CreateMode::Persistent).await;
    s.set_data(&q, b"x", 0).await.unwrap();
    s.delete(&q, -1).await.unwrap();
    assert_eq!(s.exists(&q).await.unwrap(), None);
    assert_eq!(s.delete(&q, -1).await.unwrap_err(), Error::NoNode);
    s.close().await;
}

/// set_data(version): a wrong version fails `BadVersion` and changes nothing; `-1` and the exact
/// version succeed and increment it.
pub async fn set_data_version_checks(h: &dyn Harness) {
    let (s, base) = setup(h, "set_data_version_checks").await;
    let p = format!("{base}/n");
    create(&*s, &p, b"v0", CreateMode::Persistent).await;
    assert_eq!(
        s.set_data(&p, b"x", 1).await.unwrap_err(),
        Error::BadVersion
    );
    assert_eq!(
        s.set_data(&p, b"x", -2).await.unwrap_err(),
        Error::BadVersion
    );
    assert_eq!(s.get_data(&p).await.unwrap().0, b"v0");
    assert_eq!(stat_of(&*s, &p).await.version, 0);
    assert_eq!(s.set_data(&p, b"v1", 0).await.unwrap().version, 1);
    assert_eq!(s.set_data(&p, b"v2", -1).await.unwrap().version, 2);
    assert_eq!(
        s.set_data(&p, b"x", 1).await.unwrap_err(),
        Error::BadVersion
    );
    assert_eq!(s.set_data(&p, b"v3", 2).await.unwrap().version, 3);
    assert_eq!(s.get_data(&p).await.unwrap().0, b"v3");
    s.close().await;
}

/// Every operation on a missing node: `NoNode` (exists: `None`).
pub async fn missing_node_errors(h: &dyn Harness) {
    let (s, base) = setup(h, "missing_node_errors").await;
    let p = format!("{base}/missing");
    assert_eq!(s.exists(&p).await.unwrap(), None);
    assert_eq!(s.get_data(&p).await.unwrap_err(), Error::NoNode, "get_data");
    assert_eq!(
        s.set_data(&p, b"", -1).await.unwrap_err(),
        Error::NoNode,
        "set_data"
    );
    assert_eq!(s.delete(&p, -1).await.unwrap_err(), Error::NoNode, "delete");
    assert_eq!(
        s.get_children(&p).await.unwrap_err(),
        Error::NoNode,
        "get_children"
    );
    assert_eq!(
        s.get_children_with_stat(&p).await.unwrap_err(),
        Error::NoNode,
        "get_children_with_stat"
    );
    assert_eq!(s.get_acl(&p).await.unwrap_err(), Error::NoNode, "get_acl");
    assert_eq!(
        s.set_acl(&p, &Acl::open_unsafe(), -1).await.unwrap_err(),
        Error::NoNode,
        "set_acl"
    );
    assert_eq!(
        s.delete(&format!("{p}/deeper"), -1).await.unwrap_err(),
        Error::NoNode,
        "delete below a missing node"
    );
    s.close().await;
}

/// ZooKeeper's path rules: empty, relative, trailing `/`, `//`, `.` and `..` segments and null
/// characters give `BadArguments` on every operation; names that merely start with dots are
/// fine.
pub async fn invalid_paths_bad_arguments(h: &dyn Harness) {
    let (s, base) = setup(h, "invalid_paths_bad_arguments").await;
    let bad = [
        String::new(),
        "relative".to_string(),
        "relative/x".to_string(),
        format!("{base}/"),
        format!("{base}//x"),
        "//".to_string(),
        format!("{base}/./x"),
        format!("{base}/../x"),
        format!("{base}/."),
        format!("{base}/.."),
        format!("{base}/a\0b"),
    ];
    for p in &bad {
        let is_bad = |what: &str, r: Result<(), Error>| {
            assert!(
                matches!(r, Err(Error::BadArguments(_))),
                "{what}({p:?}) should fail BadArguments, got {r:?}"
            );
        };
        is_bad("create", s.create(p, b"", &persistent()).await.map(drop));
        is_bad("exists", s.exists(p).await.map(drop));
        is_bad("exists_watch", s.exists_watch(p).await.map(drop));
        is_bad("get_data", s.get_data(p).await.map(drop));
        is_bad("get_data_watch", s.get_data_watch(p).await.map(drop));
        is_bad("set_data", s.set_data(p, b"", -1).await.map(drop));
        is_bad("delete", s.delete(p, -1).await);
        is_bad("get_children", s.get_children_with_stat(p).await.map(drop));
        is_bad(
            "get_children_watch",
            s.get_children_watch(p).await.map(drop),
        );
        is_bad("get_acl", s.get_acl(p).await.map(drop));
        is_bad(
            "set_acl",
            s.set_acl(p, &Acl::open_unsafe(), -1).await.map(drop),
        );
        is_bad(
            "watch",
            s.watch(p, AddWatchMode::Persistent).await.map(drop),
        );
        if !p.ends_with('/') {
            is_bad(
                "create sequential",
                s.create(p, b"", &opts(CreateMode::PersistentSequential))
                    .await
                    .map(drop),
            );
        }
    }
    for ok in [".hidden", "..x", "a.b", "x..", "..."] {
        let p = format!("{base}/{ok}");
        create(&*s, &p, b"", CreateMode::Persistent).await;
    }
    assert_eq!(
        stat_of(&*s, &base).await.num_children,
        5,
        "only the valid names were created"
    );
    assert!(s.exists("/").await.unwrap().is_some(), "the root exists");
    s.close().await;
}

/// Data of exactly the backend's `max_data_len` is stored and read back. One byte over the
/// limit for the request fails with the backend's `oversize_data_error` (ZooKeeper: the
/// connection is dropped) and changes nothing, on set_data and on create. The limit is
/// `max_data_len`, or where the backend limits whole requests (ZooKeeper's `jute.maxbuffer`)
/// exactly what that leaves for this path: the largest set_data that fits is accepted too.
pub async fn data_size_limit(h: &dyn Harness) {
    let (s, base) = setup(h, "data_size_limit").await;
    let caps = s.capabilities();
    let p = format!("{base}/n");
    let half: Vec<u8> = (0..caps.max_data_len / 2)
        .map(|i| (i % 251) as u8)
        .collect();
    let (_, st) = create(&*s, &p, &half, CreateMode::Persistent).await;
    assert_eq!(st.data_length as usize, half.len());
    assert_eq!(
        s.get_data(&p).await.unwrap().0,
        half,
        "large data round-trips"
    );
    let full: Vec<u8> = (0..caps.max_data_len).map(|i| (i % 241) as u8).collect();
    let st = s
        .set_data(&p, &full, -1)
        .await
        .unwrap_or_else(|e| panic!("set_data with exactly max_data_len bytes: {e:?}"));
    assert_eq!(
        (st.version, st.data_length as usize),
        (1, caps.max_data_len)
    );
    let limit = caps.max_set_data_len(&p);
    assert!(
        limit >= caps.max_data_len,
        "max_data_len fits any short path"
    );
    if limit > caps.max_data_len {
        let most: Vec<u8> = (0..limit).map(|i| (i % 239) as u8).collect();
        let st = s
            .set_data(&p, &most, -1)
            .await
            .unwrap_or_else(|e| panic!("set_data with the request limit's {limit} bytes: {e:?}"));
        assert_eq!(st.data_length as usize, limit);
        s.set_data(&p, &full, -1).await.unwrap();
    }
    let version = s.exists(&p).await.unwrap().unwrap().version;
    let over = vec![7u8; limit + 1];
    // Separate sessions: on ZooKeeper the oversized request costs the connection.
    let a = h.connect(TIMEOUT).await;
    let r = a.set_data(&p, &over, -1).await;
    assert_eq!(
        r.map(|st| st.data_length),
        Err(caps.oversize_data_error.clone()),
        "set_data one byte over the limit"
    );
    a.close().await;
    let b = h.connect(TIMEOUT).await;
    let q = format!("{base}/q");
    let r = b.create(&q, &over, &persistent()).await;
    assert_eq!(
        r.map(|(path, _)| path),
        Err(caps.oversize_data_error.clone()),
        "create one byte over set_data's limit (a create's framing is larger)"
    );
    b.close().await;
    let c = h.connect(TIMEOUT).await;
    assert_eq!(
        synced_exists(&*c, &q).await,
        None,
        "the oversized create left nothing"
    );
    let (data, st2) = c.get_data(&p).await.unwrap();
    assert!(
        st2.version == version && data == full,
        "the oversized set changed nothing"
    );
    c.close().await;
    s.close().await;
}

// ---------------------------------------------------------------------------------------------
// One-shot watches

/// A data watch fires `NodeDataChanged` on the node's next set_data.
pub async fn data_watch_fires_on_set(h: &dyn Harness) {
    let (s, base) = setup(h, "data_watch_fires_on_set").await;
    let p = format!("{base}/n");
    create(&*s, &p, b"a", CreateMode::Persistent).await;
    let (data, st, w) = s.get_data_watch(&p).await.unwrap();
    assert_eq!((data.as_slice(), st.version), (&b"a"[..], 0));
    s.set_data(&p, b"b", -1).await.unwrap();
    expect_event(w, EventType::NodeDataChanged, &p, "data watch, set_data").await;
    s.close().await;
}

/// A data watch fires `NodeDeleted` when the node is deleted.
pub async fn data_watch_fires_on_delete(h: &dyn Harness) {
    let (s, base) = setup(h, "data_watch_fires_on_delete").await;
    let p = format!("{base}/n");
    create(&*s, &p, b"a", CreateMode::Persistent).await;
    let (_, _, w) = s.get_data_watch(&p).await.unwrap();
    s.delete(&p, -1).await.unwrap();
    expect_event(w, EventType::NodeDeleted, &p, "data watch, delete").await;
    s.close().await;
}

/// Creating, changing and deleting a child fires neither the parent's data watch nor its exist
/// watch: the first event they get is the parent's own later set_data.
pub async fn data_and_exist_watch_ignore_child_changes(h: &dyn Harness) {
    let (s, base) = setup(h, "data_and_exist_watch_ignore_child_changes").await;
    let p = format!("{base}/p");
    create(&*s, &p, b"", CreateMode::Persistent).await;
    let (_, _, dw) = s.get_data_watch(&p).await.unwrap();
    let (st, ew) = s.exists_watch(&p).await.unwrap();
    assert!(st.is_some());
    let c = format!("{p}/c");
    create(&*s, &c, b"", CreateMode::Persistent).await;
    s.set_data(&c, b"x", -1).await.unwrap();
    s.delete(&c, -1).await.unwrap();
    s.set_data(&p, b"own", -1).await.unwrap();
    expect_event(dw, EventType::NodeDataChanged, &p, "parent data watch").await;
    expect_event(ew, EventType::NodeDataChanged, &p, "parent exist watch").await;
    s.close().await;
}

/// An exist watch set on a missing node fires `NodeCreated` when it is created.
pub async fn exist_watch_on_missing_node_fires_created(h: &dyn Harness) {
    let (s, base) = setup(h, "exist_watch_on_missing_node_fires_created").await;
    let p = format!("{base}/n");
    let (st, w) = s.exists_watch(&p).await.unwrap();
    assert_eq!(st, None);
    create(&*s, &p, b"", CreateMode::Ephemeral).await;
    expect_event(
        w,
        EventType::NodeCreated,
        &p,
        "exist watch on a missing node",
    )
    .await;
    // And for a sequential create whose full name was watched.
    let q = format!("{base}/s-0000000001");
    let (_, w) = s.exists_watch(&q).await.unwrap();
    let (qp, _) = create(
        &*s,
        &format!("{base}/s-"),
        b"",
        CreateMode::PersistentSequential,
    )
    .await;
    assert_eq!(qp, q);
    expect_event(
        w,
        EventType::NodeCreated,
        &q,
        "exist watch on a sequential name",
    )
    .await;
    s.close().await;
}

/// An exist watch on an existing node fires `NodeDataChanged` on set_data, and a new one
/// `NodeDeleted` on delete.
pub async fn exist_watch_on_existing_node(h: &dyn Harness) {
    let (s, base) = setup(h, "exist_watch_on_existing_node").await;
    let p = format!("{base}/n");
    let (_, created) = create(&*s, &p, b"", CreateMode::Persistent).await;
    let (st, w) = s.exists_watch(&p).await.unwrap();
    assert_eq!(st, Some(created));
    s.set_data(&p, b"x", -1).await.unwrap();
    expect_event(w, EventType::NodeDataChanged, &p, "exist watch, set_data").await;
    let (_, w) = s.exists_watch(&p).await.unwrap();
    s.delete(&p, -1).await.unwrap();
    expect_event(w, EventType::NodeDeleted, &p, "exist watch, delete").await;
    s.close().await;
}

/// A child watch fires `NodeChildrenChanged` (path: the parent) on a child's create and, re-set,
/// on its delete; a child's data change and the parent's own data change do not fire it.
pub async fn child_watch_fires_on_child_create_and_delete(h: &dyn Harness) {
    let (s, base) = setup(h, "child_watch_fires_on_child_create_and_delete").await;
    let p = format!("{base}/p");
    create(&*s, &p, b"", CreateMode::Persistent).await;
    let (kids, _, w) = s.get_children_watch(&p).await.unwrap();
    assert!(kids.is_empty());
    let c = format!("{p}/c");
    create(&*s, &c, b"", CreateMode::Persistent).await;
    expect_event(
        w,
        EventType::NodeChildrenChanged,
        &p,
        "child watch, child create",
    )
    .await;
    let (kids, st, mut w) = s.get_children_watch(&p).await.unwrap();
    assert_eq!((kids, st.num_children), (vec!["c".to_string()], 1));
    s.set_data(&c, b"x", -1).await.unwrap();
    s.set_data(&p, b"x", -1).await.unwrap();
    create(&*s, &format!("{c}/grandchild"), b"", CreateMode::Persistent).await;
    expect_quiet(
        &mut w,
        "child watch after a child's set_data, own set_data, grandchild",
    )
    .await;
    s.delete(&format!("{c}/grandchild"), -1).await.unwrap();
    s.delete(&c, -1).await.unwrap();
    expect_event(
        w,
        EventType::NodeChildrenChanged,
        &p,
        "child watch, child delete",
    )
    .await;
    s.close().await;
}

/// A child watch on a node fires `NodeDeleted` (not `NodeChildrenChanged`) when the node itself
/// is deleted.
pub async fn child_watch_fires_node_deleted(h: &dyn Harness) {
    let (s, base) = setup(h, "child_watch_fires_node_deleted").await;
    let p = format!("{base}/p");
    create(&*s, &p, b"", CreateMode::Persistent).await;
    let (_, _, w) = s.get_children_watch(&p).await.unwrap();
    s.delete(&p, -1).await.unwrap();
    expect_event(
        w,
        EventType::NodeDeleted,
        &p,
        "child watch on the deleted node",
    )
    .await;
    s.close().await;
}

/// One delete fires every kind of watch at once: the node's data, exist and child watches get
/// `NodeDeleted`, the parent's child watch `NodeChildrenChanged`; the parent's data and exist
/// watches nothing.
pub async fn delete_fires_every_watch_kind(h: &dyn Harness) {
    let (s, base) = setup(h, "delete_fires_every_watch_kind").await;
    let p = format!("{base}/n");
    create(&*s, &p, b"", CreateMode::Persistent).await;
    let (_, _, dw) = s.get_data_watch(&p).await.unwrap();
    let (_, ew) = s.exists_watch(&p).await.unwrap();
    let (_, _, cw) = s.get_children_watch(&p).await.unwrap();
    let (_, _, pcw) = s.get_children_watch(&base).await.unwrap();
    let (_, _, mut pdw) = s.get_data_watch(&base).await.unwrap();
    let (_, mut pew) = s.exists_watch(&base).await.unwrap();
    s.delete(&p, -1).await.unwrap();
    expect_event(dw, EventType::NodeDeleted, &p, "data watch").await;
    expect_event(ew, EventType::NodeDeleted, &p, "exist watch").await;
    expect_event(cw, EventType::NodeDeleted, &p, "child watch of the node").await;
    expect_event(
        pcw,
        EventType::NodeChildrenChanged,
        &base,
        "child watch of the parent",
    )
    .await;
    expect_quiet(&mut pdw, "parent's data watch").await;
    expect_quiet(&mut pew, "parent's exist watch").await;
    s.close().await;
}

/// One create fires the node's exist watch (`NodeCreated`) and the parent's child watch
/// (`NodeChildrenChanged`); the parent's data and exist watches nothing.
pub async fn create_fires_only_exist_and_parent_child_watches(h: &dyn Harness) {
    let (s, base) = setup(h, "create_fires_only_exist_and_parent_child_watches").await;
    let p = format!("{base}/n");
    let (_, ew) = s.exists_watch(&p).await.unwrap();
    let (_, _, pcw) = s.get_children_watch(&base).await.unwrap();
    let (_, _, mut pdw) = s.get_data_watch(&base).await.unwrap();
    let (_, mut pew) = s.exists_watch(&base).await.unwrap();
    create(&*s, &p, b"", CreateMode::Persistent).await;
    expect_event(ew, EventType::NodeCreated, &p, "exist watch").await;
    expect_event(
        pcw,
        EventType::NodeChildrenChanged,
        &base,
        "parent's child watch",
    )
    .await;
    expect_quiet(&mut pdw, "parent's data watch").await;
    expect_quiet(&mut pew, "parent's exist watch").await;
    s.close().await;
}

/// After a one-shot watch fired, later changes reach nobody until a new read sets a new watch;
/// the new watch reports only changes after that read.
pub async fn one_shot_watch_rearms_only_on_new_read(h: &dyn Harness) {
    let (s, base) = setup(h, "one_shot_watch_rearms_only_on_new_read").await;
    let p = format!("{base}/n");
    create(&*s, &p, b"0", CreateMode::Persistent).await;
    let (_, _, w) = s.get_data_watch(&p).await.unwrap();
    s.set_data(&p, b"1", -1).await.unwrap();
    expect_event(w, EventType::NodeDataChanged, &p, "first watch").await;
    s.set_data(&p, b"2", -1).await.unwrap();
    s.set_data(&p, b"3", -1).await.unwrap();
    let (data, st, mut w) = s.get_data_watch(&p).await.unwrap();
    assert_eq!((data.as_slice(), st.version), (&b"3"[..], 3));
    expect_quiet(&mut w, "a watch set after the changes").await;
    s.set_data(&p, b"4", -1).await.unwrap();
    expect_event(w, EventType::NodeDataChanged, &p, "second watch").await;
    // Same for child watches.
    let (_, _, w) = s.get_children_watch(&p).await.unwrap();
    create(&*s, &format!("{p}/a"), b"", CreateMode::Persistent).await;
    expect_event(w, EventType::NodeChildrenChanged, &p, "first child watch").await;
    create(&*s, &format!("{p}/b"), b"", CreateMode::Persistent).await;
    let (kids, _, mut w) = s.get_children_watch(&p).await.unwrap();
    assert_eq!(sorted(kids), ["a", "b"]);
    expect_quiet(&mut w, "a child watch set after the changes").await;
    s.delete(&format!("{p}/a"), -1).await.unwrap();
    expect_event(w, EventType::NodeChildrenChanged, &p, "second child watch").await;
    s.close().await;
}

/// set_acl changes no data and fires no watch: the first event of each watch is the later
/// set_data / child create.
pub async fn set_acl_fires_no_watch(h: &dyn Harness) {
    let (s, base) = setup(h, "set_acl_fires_no_watch").await;
    let p = format!("{base}/n");
    create(&*s, &p, b"", CreateMode::Persistent).await;
    let (_, _, dw) = s.get_data_watch(&p).await.unwrap();
    let (_, ew) = s.exists_watch(&p).await.unwrap();
    let (_, _, cw) = s.get_children_watch(&p).await.unwrap();
    let (_, _, pcw) = s.get_children_watch(&base).await.unwrap();
    let st = s.set_acl(&p, &Acl::open_unsafe(), -1).await.unwrap();
    assert_eq!((st.aversion, st.version), (1, 0));
    s.set_data(&p, b"x", -1).await.unwrap();
    create(&*s, &format!("{p}/c"), b"", CreateMode::Persistent).await;
    create(&*s, &format!("{base}/sibling"), b"", CreateMode::Persistent).await;
    expect_event(dw, EventType::NodeDataChanged, &p, "data watch").await;
    expect_event(ew, EventType::NodeDataChanged, &p, "exist watch").await;
    expect_event(cw, EventType::NodeChildrenChanged, &p, "child watch").await;
    expect_event(
        pcw,
        EventType::NodeChildrenChanged,
        &base,
        "parent's child watch",
    )
    .await;
    s.close().await;
}

/// Dropping a watch unregisters only that watch: a second watch of the same kind on the same
/// node (same session) still fires, the session keeps working, and a new watch works.
pub async fn dropped_watch_is_unregistered(h: &dyn Harness) {
    let (s, base) = setup(h, "dropped_watch_is_unregistered").await;
    let p = format!("{base}/n");
    create(&*s, &p, b"", CreateMode::Persistent).await;
    let (_, _, d1) = s.get_data_watch(&p).await.unwrap();
    let (_, _, d2) = s.get_data_watch(&p).await.unwrap();
    let (_, e1) = s.exists_watch(&p).await.unwrap();
    let (_, e2) = s.exists_watch(&p).await.unwrap();
    let (_, _, c1) = s.get_children_watch(&p).await.unwrap();
    let (_, _, c2) = s.get_children_watch(&p).await.unwrap();
    drop(d1);
    drop(e1);
    drop(c1);
    s.set_data(&p, b"x", -1).await.unwrap();
    create(&*s, &format!("{p}/c"), b"", CreateMode::Persistent).await;
    expect_event(d2, EventType::NodeDataChanged, &p, "surviving data watch").await;
    expect_event(e2, EventType::NodeDataChanged, &p, "surviving exist watch").await;
    expect_event(
        c2,
        EventType::NodeChildrenChanged,
        &p,
        "surviving child watch",
    )
    .await;
    // Drop every watch on a path, change it, then watch it again.
    let (_, _, d) = s.get_data_watch(&p).await.unwrap();
    let (_, _, c) = s.get_children_watch(&p).await.unwrap();
    let (_, e) = s.exists_watch(&format!("{base}/later")).await.unwrap();
    drop((d, c, e));
    s.set_data(&p, b"y", -1).await.unwrap();
    s.delete(&format!("{p}/c"), -1).await.unwrap();
    create(&*s, &format!("{base}/later"), b"", CreateMode::Persistent).await;
    let (_, _, d) = s.get_data_watch(&p).await.unwrap();
    s.delete(&p, -1).await.unwrap();
    expect_event(
        d,
        EventType::NodeDeleted,
        &p,
        "a watch set after dropping the others",
    )
    .await;
    s.close().await;
}

/// get_data_watch and get_children_watch on a missing node fail `NoNode` (and set no watch);
/// exists_watch on it succeeds.
pub async fn watch_on_missing_node_read_fails(h: &dyn Harness) {
    let (s, base) = setup(h, "watch_on_missing_node_read_fails").await;
    let p = format!("{base}/n");
    assert_eq!(s.get_data_watch(&p).await.unwrap_err(), Error::NoNode);
    assert_eq!(s.get_children_watch(&p).await.unwrap_err(), Error::NoNode);
    let (st, w) = s.exists_watch(&p).await.unwrap();
    assert_eq!(st, None);
    create(&*s, &p, b"", CreateMode::Persistent).await;
    expect_event(w, EventType::NodeCreated, &p, "exist watch").await;
    s.close().await;
}

/// Watches fire for changes made by other sessions, and only on the session that set them.
pub async fn watches_fire_for_other_sessions_changes(h: &dyn Harness) {
    let (s, base) = setup(h, "watches_fire_for_other_sessions_changes").await;
    let writer = h.connect(TIMEOUT).await;
    let p = format!("{base}/n");
    let (_, ew) = s.exists_watch(&p).await.unwrap();
    let (_, _, cw) = s.get_children_watch(&base).await.unwrap();
    writer.create(&p, b"", &persistent()).await.unwrap();
    expect_event(
        ew,
        EventType::NodeCreated,
        &p,
        "exist watch, other's create",
    )
    .await;
    expect_event(
        cw,
        EventType::NodeChildrenChanged,
        &base,
        "child watch, other's create",
    )
    .await;
    s.sync(&p).await.unwrap();
    let (_, _, dw) = s.get_data_watch(&p).await.unwrap();
    writer.set_data(&p, b"x", -1).await.unwrap();
    expect_event(
        dw,
        EventType::NodeDataChanged,
        &p,
        "data watch, other's set",
    )
    .await;
    s.sync(&p).await.unwrap();
    let (_, _, dw) = s.get_data_watch(&p).await.unwrap();
    writer.delete(&p, -1).await.unwrap();
    expect_event(dw, EventType::NodeDeleted, &p, "data watch, other's delete").await;
    writer.close().await;
    s.close().await;
}

// ---------------------------------------------------------------------------------------------
// Persistent watches

/// A persistent watch gets `NodeCreated`, `NodeDataChanged`, `NodeChildrenChanged` (direct
/// children only) and `NodeDeleted` for its node, in order, without being consumed, and
/// survives the node's deletion.
pub async fn persistent_watch_node_events(h: &dyn Harness) {
    let (s, base) = setup(h, "persistent_watch_node_events").await;
    let x = format!("{base}/x");
    let c = format!("{x}/c");
    let mut w = s.watch(&x, AddWatchMode::Persistent).await.unwrap();
    create(&*s, &x, b"", CreateMode::Persistent).await;
    expect_next(&mut w, EventType::NodeCreated, &x, "create").await;
    s.set_data(&x, b"1", -1).await.unwrap();
    expect_next(&mut w, EventType::NodeDataChanged, &x, "set 1").await;
    s.set_data(&x, b"2", -1).await.unwrap();
    expect_next(
        &mut w,
        EventType::NodeDataChanged,
        &x,
        "set 2 (not consumed)",
    )
    .await;
    create(&*s, &c, b"", CreateMode::Persistent).await;
    expect_next(&mut w, EventType::NodeChildrenChanged, &x, "child create").await;
    // A child's data, a grandchild, the parent: none of these is the node's event.
    s.set_data(&c, b"x", -1).await.unwrap();
    create(&*s, &format!("{c}/d"), b"", CreateMode::Persistent).await;
    s.delete(&format!("{c}/d"), -1).await.unwrap();
    s.set_data(&base, b"x", -1).await.unwrap();
    s.delete(&c, -1).await.unwrap();
    expect_next(&mut w, EventType::NodeChildrenChanged, &x, "child delete").await;
    s.delete(&x, -1).await.unwrap();
    expect_next(&mut w, EventType::NodeDeleted, &x, "delete").await;
    create(&*s, &x, b"", CreateMode::Ephemeral).await;
    expect_next(&mut w, EventType::NodeCreated, &x, "re-create after delete").await;
    expect_no_next(&mut w, "after the last change").await;
    s.close().await;
}

/// A persistent-recursive watch gets created / data / deleted events for its node and every
/// descendant (path: the changed node), in order, and never `NodeChildrenChanged`.
pub async fn persistent_recursive_watch_descendant_events(h: &dyn Harness) {
    let (s, base) = setup(h, "persistent_recursive_watch_descendant_events").await;
    let x = format!("{base}/x");
    let c = format!("{x}/c");
    let d = format!("{c}/d");
    let mut w = s
        .watch(&x, AddWatchMode::PersistentRecursive)
        .await
        .unwrap();
    create(
        &*s,
        &format!("{base}/x-sibling"),
        b"",
        CreateMode::Persistent,
    )
    .await;
    create(&*s, &x, b"", CreateMode::Persistent).await;
    expect_next(&mut w, EventType::NodeCreated, &x, "create x").await;
    create(&*s, &c, b"", CreateMode::Persistent).await;
    expect_next(&mut w, EventType::NodeCreated, &c, "create x/c").await;
    s.set_data(&c, b"1", -1).await.unwrap();
    expect_next(&mut w, EventType::NodeDataChanged, &c, "set x/c").await;
    create(&*s, &d, b"", CreateMode::Ephemeral).await;
    expect_next(&mut w, EventType::NodeCreated, &d, "create x/c/d").await;
    s.set_data(&d, b"1", -1).await.unwrap();
    expect_next(&mut w, EventType::NodeDataChanged, &d, "set x/c/d").await;
    s.delete(&d, -1).await.unwrap();
    expect_next(&mut w, EventType::NodeDeleted, &d, "delete x/c/d").await;
    s.delete(&c, -1).await.unwrap();
    expect_next(&mut w, EventType::NodeDeleted, &c, "delete x/c").await;
    s.set_data(&x, b"1", -1).await.unwrap();
    expect_next(&mut w, EventType::NodeDataChanged, &x, "set x").await;
    s.set_data(&base, b"1", -1).await.unwrap();
    s.delete(&x, -1).await.unwrap();
    expect_next(&mut w, EventType::NodeDeleted, &x, "delete x").await;
    let (seq, _) = create(&*s, &format!("{x}-"), b"", CreateMode::PersistentSequential).await;
    create(&*s, &x, b"", CreateMode::Persistent).await;
    expect_next(&mut w, EventType::NodeCreated, &x, "re-create x").await;
    assert!(seq.starts_with(&format!("{x}-")));
    expect_no_next(&mut w, "after the last change").await;
    s.close().await;
}

/// Dropping one of two persistent watches on a node leaves the other delivering; the dropped
/// one's unregistration disturbs nothing else.
pub async fn dropped_persistent_watch_leaves_others(h: &dyn Harness) {
    let (s, base) = setup(h, "dropped_persistent_watch_leaves_others").await;
    let x = format!("{base}/x");
    create(&*s, &x, b"", CreateMode::Persistent).await;
    let w1 = s.watch(&x, AddWatchMode::Persistent).await.unwrap();
    let mut w2 = s.watch(&x, AddWatchMode::Persistent).await.unwrap();
    let r1 = s
        .watch(&base, AddWatchMode::PersistentRecursive)
        .await
        .unwrap();
    let mut r2 = s
        .watch(&base, AddWatchMode::PersistentRecursive)
        .await
        .unwrap();
    let (_, _, dw) = s.get_data_watch(&x).await.unwrap();
    drop(w1);
    drop(r1);
    s.set_data(&x, b"1", -1).await.unwrap();
    expect_next(
        &mut w2,
        EventType::NodeDataChanged,
        &x,
        "surviving persistent watch",
    )
    .await;
    expect_next(
        &mut r2,
        EventType::NodeDataChanged,
        &x,
        "surviving recursive watch",
    )
    .await;
    expect_event(
        dw,
        EventType::NodeDataChanged,
        &x,
        "one-shot data watch beside them",
    )
    .await;
    drop(w2);
    let (_, _, dw) = s.get_data_watch(&x).await.unwrap();
    s.set_data(&x, b"2", -1).await.unwrap();
    expect_event(
        dw,
        EventType::NodeDataChanged,
        &x,
        "one-shot after dropping persistent",
    )
    .await;
    expect_next(
        &mut r2,
        EventType::NodeDataChanged,
        &x,
        "recursive watch, second set",
    )
    .await;
    s.close().await;
}

// ---------------------------------------------------------------------------------------------
// Multi

/// A successful multi applies every op in order as one change: one result per op (sequential
/// names resolved), every node it creates or sets shares one zxid, which is also the parent's
/// new pzxid.
pub async fn multi_applies_all_in_one_zxid(h: &dyn Harness) {
    let (s, base) = setup(h, "multi_applies_all_in_one_zxid").await;
    let (old, chk) = (format!("{base}/old"), format!("{base}/chk"));
    create(&*s, &old, b"", CreateMode::Persistent).await;
    create(&*s, &chk, b"", CreateMode::Persistent).await;
    let (a, e) = (format!("{base}/a"), format!("{base}/e"));
    let results = s
        .multi(&[
            Op::create(&a, b"A".to_vec(), persistent()),
            Op::create(
                format!("{base}/s-"),
                b"S".to_vec(),
                opts(CreateMode::PersistentSequential),
            ),
            Op::set_data(&a, b"A2".to_vec(), 0),
            Op::check(&chk, 0),
            Op::delete(&old, -1),
            Op::create(&e, Vec::new(), opts(CreateMode::Ephemeral)),
        ])
        .await
        .expect("multi");
    let seq = format!("{base}/s-0000000003");
    assert_eq!(results.len(), 6, "one result per op: {results:?}");
    assert_eq!(results[0], OpResult::Create { path: a.clone() });
    assert_eq!(
        results[1],
        OpResult::Create { path: seq.clone() },
        "suffix counts the multi's own creates"
    );
    let OpResult::SetData { stat: set } = results[2] else {
        panic!("op 2 should be SetData, got {:?}", results[2]);
    };
    assert_eq!(results[3], OpResult::Check);
    assert_eq!(results[4], OpResult::Delete);
    assert_eq!(results[5], OpResult::Create { path: e.clone() });
    assert_eq!((set.version, set.data_length), (1, 2));
    assert_eq!(
        set.czxid, set.mzxid,
        "created and set in the same multi: one zxid"
    );
    let zxid = set.mzxid;
    let sa = stat_of(&*s, &a).await;
    assert_eq!(sa, set, "the SetData result is the node's stat");
    assert_eq!(
        stat_of(&*s, &seq).await.czxid,
        zxid,
        "sequential create's zxid"
    );
    let se = stat_of(&*s, &e).await;
    assert_eq!(se.czxid, zxid, "ephemeral create's zxid");
    assert_eq!(se.ephemeral_owner, s.session_id().0);
    assert_eq!(s.exists(&old).await.unwrap(), None, "deleted by the multi");
    assert_eq!(s.get_data(&a).await.unwrap().0, b"A2");
    let p = stat_of(&*s, &base).await;
    assert_eq!(p.pzxid, zxid, "parent's pzxid");
    assert_eq!(p.num_children, 4);
    assert_eq!(p.cversion, 6, "5 creates + 1 delete");
    s.close().await;
}

/// A failing op undoes the whole multi: earlier creates, sets, deletes and the parent's counter
/// are as before, no watch fires, and the failing index and error are reported.
pub async fn multi_rolls_back_on_failure(h: &dyn Harness) {
    let (s, base) = setup(h, "multi_rolls_back_on_failure").await;
    let keep = format!("{base}/keep");
    let (_, kst) = create(&*s, &keep, b"k", CreateMode::Persistent).await;
    let before = stat_of(&*s, &base).await;
    let new = format!("{base}/new");
    let (_, mut ew) = s.exists_watch(&new).await.unwrap();
    let (_, _, mut kw) = s.get_data_watch(&keep).await.unwrap();
    let (_, _, mut cw) = s.get_children_watch(&base).await.unwrap();
    let err = s
        .multi(&[
            Op::create(&new, Vec::new(), persistent()),
            Op::create(
                format!("{base}/s-"),
                Vec::new(),
                opts(CreateMode::PersistentSequential),
            ),
            Op::set_data(&keep, b"changed".to_vec(), -1),
            Op::check(&keep, 5),
        ])
        .await
        .unwrap_err();
    assert_eq!(err, MultiError::at(3, Error::BadVersion));
    let err = s
        .multi(&[
            Op::delete(&keep, -1),
            Op::create(format!("{base}/e"), Vec::new(), opts(CreateMode::Ephemeral)),
            Op::check(format!("{base}/missing"), -1),
        ])
        .await
        .unwrap_err();
    assert_eq!(err, MultiError::at(2, Error::NoNode));
    assert_eq!(s.exists(&new).await.unwrap(), None, "create rolled back");
    assert_eq!(
        s.get_data(&keep).await.unwrap(),
        (b"k".to_vec(), kst),
        "set/delete rolled back"
    );
    assert_eq!(sorted(s.get_children(&base).await.unwrap()), ["keep"]);
    assert_eq!(stat_of(&*s, &base).await, before, "parent stat unchanged");
    expect_quiet(&mut ew, "exist watch on a rolled-back create").await;
    expect_quiet(&mut kw, "data watch on a rolled-back set/delete").await;
    expect_quiet(&mut cw, "child watch on rolled-back creates").await;
    let (p, _) = create(
        &*s,
        &format!("{base}/s-"),
        b"",
        CreateMode::PersistentSequential,
    )
    .await;
    assert_eq!(
        p,
        format!("{base}/s-0000000001"),
        "a failed multi does not advance the counter"
    );
    s.close().await;
}

/// The failing op's index and ZooKeeper error, for each kind of failure.
pub async fn multi_reports_failing_index(h: &dyn Harness) {
    let (s, base) = setup(h, "multi_reports_failing_index").await;
    let n = format!("{base}/n");
    let p = format!("{base}/p");
    let e = format!("{base}/e");
    let x = format!("{base}/x");
    create(&*s, &n, b"", CreateMode::Persistent).await;
    create(&*s, &p, b"", CreateMode::Persistent).await;
    create(&*s, &format!("{p}/c"), b"", CreateMode::Persistent).await;
    create(&*s, &e, b"", CreateMode::Ephemeral).await;
    let cases: Vec<(&str, Vec<Op>, MultiError)> = vec![
        (
            "check missing",
            vec![Op::check(format!("{base}/missing"), -1)],
            MultiError::at(0, Error::NoNode),
        ),
        (
            "create existing",
            vec![Op::check(&n, 0), Op::create(&n, Vec::new(), persistent())],
            MultiError::at(1, Error::NodeExists),
        ),
        (
            "set bad version",
            vec![
                Op::create(&x, Vec::new(), persistent()),
                Op::set_data(&n, Vec::new(), 3),
            ],
            MultiError::at(1, Error::BadVersion),
        ),
        (
            "delete non-empty",
            vec![Op::create(&x, Vec::new(), persistent()), Op::delete(&p, -1)],
            MultiError::at(1, Error::NotEmpty),
        ),
        (
            "delete bad version",
            vec![Op::delete(&n, 9)],
            MultiError::at(0, Error::BadVersion),
        ),
        (
            "child of ephemeral",
            vec![Op::create(format!("{e}/c"), Vec::new(), persistent())],
            MultiError::at(0, Error::NoChildrenForEphemerals),
        ),
        (
            "missing parent",
            vec![
                Op::check(&n, -1),
                Op::check(&p, -1),
                Op::create(format!("{base}/q/r"), Vec::new(), persistent()),
            ],
            MultiError::at(2, Error::NoNode),
        ),
        (
            "set missing",
            vec![Op::set_data(format!("{base}/missing"), Vec::new(), -1)],
            MultiError::at(0, Error::NoNode),
        ),
        (
            "delete missing",
            vec![
                Op::create(&x, Vec::new(), persistent()),
                Op::delete(format!("{base}/missing"), -1),
            ],
            MultiError::at(1, Error::NoNode),
        ),
    ];
    for (what, ops, expected) in cases {
        let err = s.multi(&ops).await.unwrap_err();
        assert_eq!(err, expected, "{what}");
    }
    let err = s
        .multi(&[
            Op::check(&n, -1),
            Op::create(format!("{base}//bad"), Vec::new(), persistent()),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(err.error, Error::BadArguments(_)) && err.index == Some(1),
        "bad path in op 1: {err:?}"
    );
    assert_eq!(
        s.exists(&x).await.unwrap(),
        None,
        "nothing of the failed multis applied"
    );
    s.close().await;
}

/// Later ops of a multi see the effects of earlier ones: a node created, given a child, set,
/// checked and deleted again within one multi; a delete then re-create.
pub async fn multi_ops_see_earlier_ops(h: &dyn Harness) {
    let (s, base) = setup(h, "multi_ops_see_earlier_ops").await;
    let x = format!("{base}/x");
    let y = format!("{x}/y");
    let results = s
        .multi(&[
            Op::create(&x, Vec::new(), persistent()),
            Op::create(&y, b"0".to_vec(), persistent()),
            Op::set_data(&y, b"1".to_vec(), 0),
            Op::check(&y, 1),
            Op::create(
                format!("{x}/s-"),
                Vec::new(),
                opts(CreateMode::EphemeralSequential),
            ),
            Op::delete(format!("{x}/s-0000000001"), -1),
            Op::delete(&y, 1),
            Op::delete(&x, 0),
        ])
        .await
        .expect("multi");
    assert_eq!(results.len(), 8);
    assert_eq!(
        results[4],
        OpResult::Create {
            path: format!("{x}/s-0000000001")
        }
    );
    assert_eq!(
        &results[5..],
        &[OpResult::Delete, OpResult::Delete, OpResult::Delete]
    );
    assert_eq!(s.exists(&x).await.unwrap(), None);
    let keep = format!("{base}/keep");
    let (_, k0) = create(&*s, &keep, b"old", CreateMode::Persistent).await;
    s.set_data(&keep, b"old2", -1).await.unwrap();
    s.multi(&[
        Op::delete(&keep, 1),
        Op::create(&keep, b"new".to_vec(), persistent()),
    ])
    .await
    .expect("delete then re-create");
    let (data, k1) = s.get_data(&keep).await.unwrap();
    assert_eq!((data.as_slice(), k1.version), (&b"new"[..], 0));
    assert!(k1.czxid > k0.czxid, "a new node");
    s.close().await;
}

/// Check ops: exact version or -1 pass, anything else fails `BadVersion`; a check after a set in
/// the same multi sees the new version.
pub async fn multi_check_versions(h: &dyn Harness) {
    let (s, base) = setup(h, "multi_check_versions").await;
    let n = format!("{base}/n");
    create(&*s, &n, b"", CreateMode::Persistent).await;
    s.set_data(&n, b"1", -1).await.unwrap();
    s.set_data(&n, b"2", -1).await.unwrap();
    assert_eq!(
        s.multi(&[Op::check(&n, 2)]).await.unwrap(),
        [OpResult::Check]
    );
    assert_eq!(
        s.multi(&[Op::check(&n, -1)]).await.unwrap(),
        [OpResult::Check]
    );
    assert_eq!(
        s.multi(&[Op::check(&n, 1)]).await.unwrap_err(),
        MultiError::at(0, Error::BadVersion)
    );
    assert_eq!(
        s.multi(&[Op::check(&n, 3)]).await.unwrap_err(),
        MultiError::at(0, Error::BadVersion)
    );
    let r = s
        .multi(&[
            Op::check(&n, 2),
            Op::set_data(&n, b"3".to_vec(), 2),
            Op::check(&n, 3),
        ])
        .await
        .expect("check, set, check");
    assert_eq!(r.len(), 3);
    assert_eq!(
        s.multi(&[
            Op::check(&n, 3),
            Op::set_data(&n, b"4".to_vec(), 3),
            Op::check(&n, 3)
        ])
        .await
        .unwrap_err(),
        MultiError::at(2, Error::BadVersion)
    );
    assert_eq!(s.get_data(&n).await.unwrap().1.version, 3);
    s.close().await;
}

/// An empty multi succeeds with no results.
pub async fn multi_empty(h: &dyn Harness) {
    let (s, _base) = setup(h, "multi_empty").await;
    assert_eq!(s.multi(&[]).await.unwrap(), Vec::<OpResult>::new());
    s.close().await;
}

/// Each op of a successful multi fires the watches it would fire alone.
pub async fn multi_fires_watches(h: &dyn Harness) {
    let (s, base) = setup(h, "multi_fires_watches").await;
    let a = format!("{base}/a");
    let b = format!("{base}/b");
    let d = format!("{base}/d");
    create(&*s, &a, b"", CreateMode::Persistent).await;
    create(&*s, &d, b"", CreateMode::Persistent).await;
    let (_, _, aw) = s.get_data_watch(&a).await.unwrap();
    let (_, bw) = s.exists_watch(&b).await.unwrap();
    let (_, _, dw) = s.get_data_watch(&d).await.unwrap();
    let (_, _, cw) = s.get_children_watch(&base).await.unwrap();
    s.multi(&[
        Op::set_data(&a, b"x".to_vec(), -1),
        Op::create(&b, Vec::new(), persistent()),
        Op::delete(&d, -1),
    ])
    .await
    .expect("multi");
    expect_event(aw, EventType::NodeDataChanged, &a, "set in multi").await;
    expect_event(bw, EventType::NodeCreated, &b, "create in multi").await;
    expect_event(dw, EventType::NodeDeleted, &d, "delete in multi").await;
    expect_event(
        cw,
        EventType::NodeChildrenChanged,
        &base,
        "parent's child watch",
    )
    .await;
    s.close().await;
}

// ---------------------------------------------------------------------------------------------
// Sessions

/// A new session is connected with a distinct non-zero id and a positive timeout; after close it
/// is `Closed`, its requests fail session-fatally, and close is idempotent.
pub async fn session_basics(h: &dyn Harness) {
    let (s, base) = setup(h, "session_basics").await;
    let t = h.connect(TIMEOUT).await;
    assert_eq!(s.state(), SessionState::Connected);
    assert_eq!(s.session_events().current(), SessionState::Connected);
    assert_ne!(s.session_id().0, 0);
    assert_ne!(s.session_id(), t.session_id());
    assert!(s.session_timeout() > Duration::ZERO);
    t.close().await;
    assert_eq!(t.state(), SessionState::Closed, "state right after close");
    assert_eq!(t.session_events().current(), SessionState::Closed);
    let err = t.get_data(&base).await.unwrap_err();
    assert!(
        err.is_session_fatal(),
        "a request on a closed session: {err:?}"
    );
    let err = t
        .create(&format!("{base}/x"), b"", &persistent())
        .await
        .unwrap_err();
    assert!(
        err.is_session_fatal(),
        "a create on a closed session: {err:?}"
    );
    tokio::time::timeout(EVENT_WAIT, t.close())
        .await
        .expect("a second close returns");
    assert_eq!(s.exists(&format!("{base}/x")).await.unwrap(), None);
    assert_eq!(
        s.state(),
        SessionState::Connected,
        "closing one session leaves others"
    );
    s.close().await;
}

/// The granted timeout is clamped into the service's bounds: 1 ms is raised, 10 h is lowered,
/// and a value between the two bounds is granted as asked.
pub async fn session_timeout_negotiated_within_bounds(h: &dyn Harness) {
    let lo = h.connect(Duration::from_millis(1)).await;
    let hi = h.connect(Duration::from_secs(10 * 3600)).await;
    let (lo_t, hi_t) = (lo.session_timeout(), hi.session_timeout());
    lo.close().await;
    hi.close().await;
    assert!(
        lo_t > Duration::from_millis(1),
        "1 ms must be raised to the minimum, got {lo_t:?}"
    );
    assert!(
        hi_t < Duration::from_secs(10 * 3600),
        "10 h must be clamped, got {hi_t:?}"
    );
    assert!(lo_t <= hi_t, "minimum {lo_t:?} above maximum {hi_t:?}");
    if hi_t.as_millis() > lo_t.as_millis() + 1 {
        let mid = Duration::from_millis(((lo_t.as_millis() + hi_t.as_millis()) / 2) as u64);
        let m = h.connect(mid).await;
        let got = m.session_timeout();
        m.close().await;
        assert_eq!(
            got, mid,
            "a timeout within [{lo_t:?}, {hi_t:?}] is granted as asked"
        );
    }
}

/// close() deletes the session's ephemerals before it returns: another session sees them gone
/// and its watches fire; the session's persistent nodes stay.
pub async fn close_deletes_ephemerals_and_fires_watches(h: &dyn Harness) {
    let (observer, base) = setup(h, "close_deletes_ephemerals_and_fires_watches").await;
    let owner = h.connect(TIMEOUT).await;
    let e = format!("{base}/e");
    let p = format!("{base}/p");
    create(&*owner, &e, b"", CreateMode::Ephemeral).await;
    let (es, _) = create(
        &*owner,
        &format!("{base}/es-"),
        b"",
        CreateMode::EphemeralSequential,
    )
    .await;
    create(&*owner, &p, b"", CreateMode::Persistent).await;
    observer.sync(&base).await.unwrap();
    let (st, ew) = observer.exists_watch(&e).await.unwrap();
    assert!(st.is_some(), "observer sees the ephemeral");
    let (_, _, esw) = observer.get_data_watch(&es).await.unwrap();
    let (kids, _, cw) = observer.get_children_watch(&base).await.unwrap();
    assert_eq!(kids.len(), 3);
    owner.close().await;
    assert_eq!(owner.state(), SessionState::Closed);
    assert_eq!(
        synced_exists(&*observer, &e).await,
        None,
        "ephemeral gone after close()"
    );
    assert_eq!(
        synced_exists(&*observer, &es).await,
        None,
        "ephemeral-sequential gone"
    );
    assert!(
        synced_exists(&*observer, &p).await.is_some(),
        "persistent node stays"
    );
    expect_event(ew, EventType::NodeDeleted, &e, "observer's exist watch").await;
    expect_event(esw, EventType::NodeDeleted, &es, "observer's data watch").await;
    expect_event(
        cw,
        EventType::NodeChildrenChanged,
        &base,
        "observer's child watch",
    )
    .await;
    observer.close().await;
}

/// Closing a session ends its outstanding watches: one-shot watches resolve with a `Closed`
/// session event; a persistent watch yields it and then ends.
pub async fn close_ends_outstanding_watches(h: &dyn Harness) {
    let (s, base) = setup(h, "close_ends_outstanding_watches").await;
    let (_, ew) = s.exists_watch(&format!("{base}/missing")).await.unwrap();
    let (_, _, dw) = s.get_data_watch(&base).await.unwrap();
    let mut pw = s
        .watch(&base, AddWatchMode::PersistentRecursive)
        .await
        .unwrap();
    s.close().await;
    let closed = WatchedEvent::session(SessionState::Closed);
    for (what, w) in [("exist watch", ew), ("data watch", dw)] {
        let ev = tokio::time::timeout(EVENT_WAIT, w)
            .await
            .unwrap_or_else(|_| panic!("{what} did not resolve after close"));
        assert_eq!(ev, closed, "{what}");
    }
    let ev = tokio::time::timeout(EVENT_WAIT, pw.next())
        .await
        .expect("persistent watch after close");
    assert_eq!(ev, Some(closed), "persistent watch's last event");
    let end = tokio::time::timeout(EVENT_WAIT, pw.next())
        .await
        .expect("persistent watch ends");
    assert_eq!(end, None, "persistent watch ends after the session event");
}

/// Expiry deletes the session's ephemerals (other sessions see them gone, their watches fire);
/// the expired session reports `Expired`, fails requests session-fatally, and its own watches
/// resolve with an `Expired` session event.
pub async fn expiry_deletes_ephemerals_and_fires_watches(h: &dyn Harness) {
    let (observer, base) = setup(h, "expiry_deletes_ephemerals_and_fires_watches").await;
    let victim = h.connect(TIMEOUT).await;
    let e = format!("{base}/e");
    create(&*victim, &e, b"", CreateMode::Ephemeral).await;
    let (es, _) = create(
        &*victim,
        &format!("{base}/es-"),
        b"",
        CreateMode::EphemeralSequential,
    )
    .await;
    let (_, vw) = victim
        .exists_watch(&format!("{base}/missing"))
        .await
        .unwrap();
    let mut vpw = victim.watch(&base, AddWatchMode::Persistent).await.unwrap();
    observer.sync(&base).await.unwrap();
    let (_, _, ew) = observer.get_data_watch(&e).await.unwrap();
    let (_, _, cw) = observer.get_children_watch(&base).await.unwrap();
    h.expire(&*victim).await;
    assert_eq!(
        synced_exists(&*observer, &e).await,
        None,
        "ephemeral gone after expiry"
    );
    assert_eq!(
        synced_exists(&*observer, &es).await,
        None,
        "ephemeral-sequential gone"
    );
    expect_event(ew, EventType::NodeDeleted, &e, "observer's data watch").await;
    expect_event(
        cw,
        EventType::NodeChildrenChanged,
        &base,
        "observer's child watch",
    )
    .await;
    assert_eq!(
        wait_terminal(&*victim, "victim").await,
        SessionState::Expired
    );
    assert_eq!(victim.state(), SessionState::Expired);
    let err = victim.get_data(&base).await.unwrap_err();
    assert!(
        err.is_session_fatal(),
        "a read on an expired session: {err:?}"
    );
    let err = victim
        .create(&e, b"", &opts(CreateMode::Ephemeral))
        .await
        .unwrap_err();
    assert!(
        err.is_session_fatal(),
        "a create on an expired session: {err:?}"
    );
    let expired = WatchedEvent::session(SessionState::Expired);
    let ev = tokio::time::timeout(EVENT_WAIT, vw)
        .await
        .expect("the expired session's one-shot watch resolves");
    assert_eq!(ev, expired);
    // The persistent watch may first deliver the node events the expiry itself caused.
    let mut last = None;
    loop {
        let ev = tokio::time::timeout(EVENT_WAIT, vpw.next())
            .await
            .expect("the expired session's persistent watch ends");
        match ev {
            None => break,
            Some(ev) if ev.event_type == EventType::Session => last = Some(ev),
            Some(ev) => assert!(last.is_none(), "node event {ev:?} after the session event"),
        }
    }
    assert_eq!(last, Some(expired), "persistent watch's session event");
    tokio::time::timeout(EVENT_WAIT, victim.close())
        .await
        .expect("close after expiry returns");
    assert_eq!(
        synced_exists(&*observer, &base)
            .await
            .map(|s| s.num_children),
        Some(0)
    );
    observer.close().await;
}

// ---------------------------------------------------------------------------------------------
// Reaping

/// A container is deleted by the service within a few reap intervals once its last child is
/// gone (deleted, or an ephemeral whose session closed); a container that never had a child, and
/// one that still has one, stay.
pub async fn container_reaped_after_last_child_deleted(h: &dyn Harness) {
    let (s, base) = setup(h, "container_reaped_after_last_child_deleted").await;
    let reap = s.capabilities().reap_interval;
    let within = reap * 5 + Duration::from_secs(5);
    let poll = (reap / 4).max(Duration::from_millis(10));
    let used = format!("{base}/used");
    let locks = format!("{base}/locks");
    let unused = format!("{base}/unused");
    let busy = format!("{base}/busy");
    for c in [&used, &locks, &unused, &busy] {
        create(&*s, c, b"", CreateMode::Container).await;
    }
    create(&*s, &format!("{used}/c"), b"", CreateMode::Persistent).await;
    create(&*s, &format!("{busy}/c"), b"", CreateMode::Persistent).await;
    let holder = h.connect(TIMEOUT).await;
    create(
        &*holder,
        &format!("{locks}/lock-"),
        b"",
        CreateMode::EphemeralSequential,
    )
    .await;
    s.delete(&format!("{used}/c"), -1).await.unwrap();
    holder.close().await;
    assert!(
        gone_within(&*s, &used, within, poll).await,
        "container {used} still exists {within:?} after its last child was deleted (reap interval {reap:?})"
    );
    assert!(
        gone_within(&*s, &locks, within, poll).await,
        "container {locks} still exists {within:?} after its last ephemeral child's session closed"
    );
    tokio::time::sleep(reap * 2 + Duration::from_millis(200)).await;
    assert!(
        stat_of(&*s, &unused).await.num_children == 0,
        "a never-used empty container stays"
    );
    assert!(
        stat_of(&*s, &busy).await.num_children == 1,
        "a container with a child stays"
    );
    s.close().await;
}

/// A TTL node with no children and no change for longer than its TTL is deleted within a few
/// reap intervals; one with a child, and one within its TTL, stay.
pub async fn ttl_node_reaped_when_expired_and_empty(h: &dyn Harness) {
    let (s, base) = setup(h, "ttl_node_reaped_when_expired_and_empty").await;
    let caps = s.capabilities();
    if !caps.ttl_nodes {
        // `create_ttl_nodes` checks the `Unimplemented` answer.
        s.close().await;
        return;
    }
    let reap = caps.reap_interval;
    let ttl = Duration::from_millis(500);
    let ttl_opts = |t: Duration| opts(CreateMode::PersistentWithTtl).with_ttl(t);
    let empty = format!("{base}/empty");
    let busy = format!("{base}/busy");
    let long = format!("{base}/long");
    s.create(&empty, b"", &ttl_opts(ttl)).await.unwrap();
    s.create(&busy, b"", &ttl_opts(ttl)).await.unwrap();
    s.create(&long, b"", &ttl_opts(Duration::from_secs(3600)))
        .await
        .unwrap();
    let (seq, _) = s
        .create(
            &format!("{base}/seq-"),
            b"",
            &opts(CreateMode::PersistentSequentialWithTtl).with_ttl(ttl),
        )
        .await
        .unwrap();
    create(&*s, &format!("{busy}/child"), b"", CreateMode::Persistent).await;
    let within = ttl + reap * 5 + Duration::from_secs(5);
    let poll = (reap / 4).max(Duration::from_millis(10));
    assert!(
        gone_within(&*s, &empty, within, poll).await,
        "empty TTL node {empty} still exists {within:?} after creation (ttl {ttl:?}, reap {reap:?})"
    );
    assert!(
        gone_within(&*s, &seq, within, poll).await,
        "empty sequential TTL node {seq} still exists"
    );
    tokio::time::sleep(reap * 2 + Duration::from_millis(200)).await;
    assert!(
        s.exists(&busy).await.unwrap().is_some(),
        "a TTL node with a child stays"
    );
    assert!(
        s.exists(&long).await.unwrap().is_some(),
        "a TTL node within its TTL stays"
    );
    s.close().await;
}

// ---------------------------------------------------------------------------------------------
// ACLs

/// The open ACL is stored and returned as world:anyone with every permission (duplicates
/// collapsed), aversion 0.
pub async fn acl_world_anyone_default(h: &dyn Harness) {
    let (s, base) = setup(h, "acl_world_anyone_default").await;
    let p = format!("{base}/n");
    create(&*s, &p, b"", CreateMode::Persistent).await;
    let (acl, st) = s.get_acl(&p).await.unwrap();
    assert_eq!(acl, vec![Acl::new(Perms::ALL, Id::anyone())]);
    assert_eq!(st.aversion, 0);
    assert_eq!(st, stat_of(&*s, &p).await);
    let q = format!("{base}/dup");
    s.create(
        &q,
        b"",
        &persistent().with_acls([Acl::open_unsafe(), Acl::open_unsafe()].concat()),
    )
    .await
    .unwrap();
    assert_eq!(
        s.get_acl(&q).await.unwrap().0,
        Acl::open_unsafe(),
        "duplicate entries collapse"
    );
    let r = format!("{base}/read");
    s.create(&r, b"", &persistent().with_acls(Acl::read_unsafe()))
        .await
        .unwrap();
    assert_eq!(s.get_acl(&r).await.unwrap().0, Acl::read_unsafe());
    s.close().await;
}

/// A digest ACL admits exactly the sessions that added the matching `user:password`: others
/// (unauthenticated, or with a wrong password) get `NoAuth` on every checked operation; exists
/// is never checked.
pub async fn acl_digest_enforced(h: &dyn Harness) {
    let (owner, base) = setup(h, "acl_digest_enforced").await;
    owner.add_auth("digest", b"alice:secret").await.unwrap();
    let p = format!("{base}/d");
    let acl = vec![Acl::digest(Perms::ALL, "alice", "secret")];
    owner
        .create(&p, b"data", &persistent().with_acls(acl.clone()))
        .await
        .unwrap();
    owner.get_data(&p).await.unwrap();
    owner.set_data(&p, b"by alice", -1).await.unwrap();
    owner
        .create(&format!("{p}/c"), b"", &persistent())
        .await
        .unwrap();
    assert_eq!(owner.get_children(&p).await.unwrap(), ["c"]);
    assert_eq!(owner.get_acl(&p).await.unwrap().0, acl);
    let anon = h.connect(TIMEOUT).await;
    let wrong = h.connect(TIMEOUT).await;
    wrong.add_auth("digest", b"alice:wrong").await.unwrap();
    for (who, s) in [("unauthenticated", &anon), ("wrong password", &wrong)] {
        s.sync(&p).await.unwrap();
        assert!(
            s.exists(&p).await.unwrap().is_some(),
            "{who}: exists is not ACL-checked"
        );
        assert_eq!(
            s.get_data(&p).await.unwrap_err(),
            Error::NoAuth,
            "{who}: get_data"
        );
        assert_eq!(
            s.get_data_watch(&p).await.unwrap_err(),
            Error::NoAuth,
            "{who}: get_data_watch"
        );
        assert_eq!(
            s.set_data(&p, b"x", -1).await.unwrap_err(),
            Error::NoAuth,
            "{who}: set_data"
        );
        assert_eq!(
            s.get_children(&p).await.unwrap_err(),
            Error::NoAuth,
            "{who}: get_children"
        );
        assert_eq!(
            s.create(&format!("{p}/x"), b"", &persistent())
                .await
                .unwrap_err(),
            Error::NoAuth,
            "{who}: create child"
        );
        assert_eq!(
            s.delete(&format!("{p}/c"), -1).await.unwrap_err(),
            Error::NoAuth,
            "{who}: delete child"
        );
        assert_eq!(
            s.set_acl(&p, &Acl::open_unsafe(), -1).await.unwrap_err(),
            Error::NoAuth,
            "{who}: set_acl"
        );
        assert_eq!(
            s.multi(&[Op::set_data(&p, b"x".to_vec(), -1)])
                .await
                .unwrap_err(),
            MultiError::at(0, Error::NoAuth),
            "{who}: set_data in a multi"
        );
    }
    let friend = h.connect(TIMEOUT).await;
    friend.add_auth("digest", b"bob:pw").await.unwrap();
    friend.add_auth("digest", b"alice:secret").await.unwrap();
    friend.sync(&p).await.unwrap();
    assert_eq!(
        friend.get_data(&p).await.unwrap().0,
        b"by alice",
        "right password, second identity"
    );
    friend.delete(&format!("{p}/c"), -1).await.unwrap();
    assert_eq!(
        owner.get_data(&p).await.unwrap().0,
        b"by alice",
        "nothing changed by the denied"
    );
    for s in [anon, wrong, friend] {
        s.close().await;
    }
    owner.close().await;
}

/// Each permission governs exactly its operations: READ get_data/get_children, WRITE set_data,
/// CREATE creating children, DELETE deleting children, ADMIN set_acl; deleting a node needs
/// DELETE on its parent, not on itself.
pub async fn acl_each_permission_enforced(h: &dyn Harness) {
    let (s, base) = setup(h, "acl_each_permission_enforced").await;
    let only = |perms: Perms| persistent().with_acls(vec![Acl::new(perms, Id::anyone())]);
    let (r, w, c, d, a) = (
        format!("{base}/r"),
        format!("{base}/w"),
        format!("{base}/c"),
        format!("{base}/d"),
        format!("{base}/a"),
    );
    s.create(&r, b"r", &only(Perms::READ)).await.unwrap();
    s.create(&w, b"w", &only(Perms::WRITE)).await.unwrap();
    s.create(&c, b"c", &only(Perms::CREATE)).await.unwrap();
    s.create(&d, b"d", &only(Perms::DELETE)).await.unwrap();
    s.create(&a, b"a", &only(Perms::ADMIN)).await.unwrap();
    let child = |p: &str| format!("{p}/child");
    // READ
    assert_eq!(s.get_data(&r).await.unwrap().0, b"r");
    assert!(s.get_children(&r).await.unwrap().is_empty());
    s.get_children_watch(&r).await.unwrap();
    for p in [&w, &c, &d, &a] {
        assert_eq!(
            s.get_data(p).await.unwrap_err(),
            Error::NoAuth,
            "get_data {p} without READ"
        );
        assert_eq!(
            s.get_children(p).await.unwrap_err(),
            Error::NoAuth,
            "get_children {p} without READ"
        );
        assert_eq!(
            s.get_children_watch(p).await.unwrap_err(),
            Error::NoAuth,
            "child watch {p} without READ"
        );
        assert!(
            s.exists(p).await.unwrap().is_some(),
            "exists {p} needs no permission"
        );
    }
    // WRITE
    assert_eq!(s.set_data(&w, b"w2", -1).await.unwrap().version, 1);
    for p in [&r, &c, &d, &a] {
        assert_eq!(
            s.set_data(p, b"x", -1).await.unwrap_err(),
            Error::NoAuth,
            "set_data {p} without WRITE"
        );
    }
    // CREATE
    s.create(&child(&c), b"", &persistent()).await.unwrap();
    for p in [&r, &w, &d, &a] {
        assert_eq!(
            s.create(&child(p), b"", &persistent()).await.unwrap_err(),
            Error::NoAuth,
            "create below {p} without CREATE"
        );
    }
    assert_eq!(
        s.delete(&child(&c), -1).await.unwrap_err(),
        Error::NoAuth,
        "delete below {c} without DELETE"
    );
    // ADMIN
    for p in [&r, &w, &c, &d] {
        assert_eq!(
            s.set_acl(p, &Acl::open_unsafe(), -1).await.unwrap_err(),
            Error::NoAuth,
            "set_acl {p} without ADMIN"
        );
    }
    s.set_acl(
        &a,
        &[Acl::new(Perms::ADMIN | Perms::CREATE, Id::anyone())],
        -1,
    )
    .await
    .unwrap();
    s.create(&child(&a), b"", &persistent()).await.unwrap();
    // DELETE: d may delete its children; give it one through a temporary ACL-free path.
    assert_eq!(
        s.delete(&child(&a), -1).await.unwrap_err(),
        Error::NoAuth,
        "delete below {a} without DELETE"
    );
    s.set_acl(
        &a,
        &[Acl::new(Perms::ADMIN | Perms::DELETE, Id::anyone())],
        -1,
    )
    .await
    .unwrap();
    s.delete(&child(&a), -1).await.unwrap();
    assert_eq!(s.exists(&child(&a)).await.unwrap(), None);
    // Deleting the nodes themselves is governed by the (open) parent.
    for p in [&r, &w, &d, &a] {
        s.delete(p, -1)
            .await
            .unwrap_or_else(|e| panic!("delete {p} under an open parent: {e:?}"));
    }
    s.close().await;
}

/// ACLs are per node: a child of a restricted node has its own (open) ACL and is readable and
/// writable by anyone; the parent stays closed.
pub async fn acl_not_inherited(h: &dyn Harness) {
    let (owner, base) = setup(h, "acl_not_inherited").await;
    owner.add_auth("digest", b"carol:pw").await.unwrap();
    let p = format!("{base}/private");
    let c = format!("{p}/public");
    owner
        .create(
            &p,
            b"",
            &persistent().with_acls(vec![Acl::digest(Perms::ALL, "carol", "pw")]),
        )
        .await
        .unwrap();
    owner.create(&c, b"open", &persistent()).await.unwrap();
    let anon = h.connect(TIMEOUT).await;
    anon.sync(&c).await.unwrap();
    assert_eq!(anon.get_data(&c).await.unwrap().0, b"open");
    anon.set_data(&c, b"changed", -1).await.unwrap();
    assert_eq!(anon.get_acl(&c).await.unwrap().0, Acl::open_unsafe());
    anon.create(&format!("{c}/g"), b"", &persistent())
        .await
        .unwrap();
    assert_eq!(anon.get_data(&p).await.unwrap_err(), Error::NoAuth);
    assert_eq!(
        anon.delete(&c, -1).await.unwrap_err(),
        Error::NoAuth,
        "deleting needs DELETE on the parent"
    );
    anon.close().await;
    owner.close().await;
}

/// The `auth` scheme (CREATOR_ALL_ACL) stands for the session's authenticated identities:
/// `InvalidAcl` without any; after add_auth the stored ACL names the digest identity.
pub async fn acl_auth_scheme_uses_session_identities(h: &dyn Harness) {
    let (s, base) = setup(h, "acl_auth_scheme_uses_session_identities").await;
    let p = format!("{base}/mine");
    let err = s
        .create(&p, b"", &persistent().with_acls(Acl::creator_all()))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::InvalidAcl,
        "auth scheme without an authenticated identity"
    );
    let q = format!("{base}/q");
    create(&*s, &q, b"", CreateMode::Persistent).await;
    assert_eq!(
        s.set_acl(&q, &Acl::creator_all(), -1).await.unwrap_err(),
        Error::InvalidAcl,
        "set_acl with the auth scheme without an identity"
    );
    s.add_auth("digest", b"dave:pw").await.unwrap();
    s.create(&p, b"", &persistent().with_acls(Acl::creator_all()))
        .await
        .unwrap();
    assert_eq!(
        s.get_acl(&p).await.unwrap().0,
        vec![Acl::digest(Perms::ALL, "dave", "pw")]
    );
    let other = h.connect(TIMEOUT).await;
    other.sync(&p).await.unwrap();
    assert_eq!(other.get_data(&p).await.unwrap_err(), Error::NoAuth);
    other.close().await;
    s.close().await;
}

/// Malformed ACLs are `InvalidAcl` on create and set_acl: empty, unknown scheme, a digest id
/// without its hash, a bad ip, world with another id. Well-formed ip entries are accepted.
pub async fn acl_invalid_rejected(h: &dyn Harness) {
    let (s, base) = setup(h, "acl_invalid_rejected").await;
    let p = format!("{base}/n");
    create(&*s, &p, b"", CreateMode::Persistent).await;
    let bad: Vec<(&str, Vec<Acl>)> = vec![
        ("empty", vec![]),
        (
            "unknown scheme",
            vec![Acl::new(Perms::ALL, Id::new("nosuch", "x"))],
        ),
        (
            "digest without hash",
            vec![Acl::new(Perms::ALL, Id::new("digest", "alice"))],
        ),
        (
            "bad ip",
            vec![Acl::new(Perms::ALL, Id::new("ip", "not-an-address"))],
        ),
        (
            "ip bad mask",
            vec![Acl::new(Perms::ALL, Id::new("ip", "10.0.0.0/33"))],
        ),
        (
            "world:someone",
            vec![Acl::new(Perms::ALL, Id::new("world", "someone"))],
        ),
        (
            "one bad entry among good",
            vec![
                Acl::new(Perms::READ, Id::anyone()),
                Acl::new(Perms::ALL, Id::new("nosuch", "x")),
            ],
        ),
    ];
    for (what, acl) in bad {
        let err = s
            .create(
                &format!("{base}/x"),
                b"",
                &persistent().with_acls(acl.clone()),
            )
            .await
            .unwrap_err();
        assert_eq!(err, Error::InvalidAcl, "create with {what} ACL");
        assert_eq!(
            s.set_acl(&p, &acl, -1).await.unwrap_err(),
            Error::InvalidAcl,
            "set_acl with {what} ACL"
        );
    }
    assert_eq!(s.exists(&format!("{base}/x")).await.unwrap(), None);
    let (acl, st) = s.get_acl(&p).await.unwrap();
    assert_eq!(
        (acl, st.aversion),
        (Acl::open_unsafe(), 0),
        "rejected set_acl changed nothing"
    );
    let ips = vec![
        Acl::new(Perms::ALL, Id::new("ip", "127.0.0.1")),
        Acl::new(Perms::READ, Id::new("ip", "10.0.0.0/8")),
        Acl::new(Perms::ALL, Id::anyone()),
    ];
    s.create(
        &format!("{base}/ip"),
        b"",
        &persistent().with_acls(ips.clone()),
    )
    .await
    .unwrap();
    assert_same_acls(
        &s.get_acl(&format!("{base}/ip")).await.unwrap().0,
        &ips,
        "ip ACL",
    );
    s.close().await;
}

/// set_acl: aversion increments (data version, mzxid, cversion untouched), a wrong aversion fails
/// `BadVersion`, `-1` matches any; get_acl returns the ACL and the new aversion.
pub async fn set_acl_aversion(h: &dyn Harness) {
    let (s, base) = setup(h, "set_acl_aversion").await;
    let p = format!("{base}/n");
    let (_, st0) = create(&*s, &p, b"", CreateMode::Persistent).await;
    let acl1 = vec![Acl::new(Perms::READ | Perms::ADMIN, Id::anyone())];
    let acl2 = vec![
        Acl::new(Perms::READ | Perms::ADMIN, Id::anyone()),
        Acl::digest(Perms::ALL, "erin", "pw"),
    ];
    let st1 = s.set_acl(&p, &acl1, 0).await.unwrap();
    assert_eq!(st1.aversion, 1);
    assert_eq!(
        (st1.version, st1.mzxid, st1.cversion, st1.czxid, st1.pzxid),
        (st0.version, st0.mzxid, st0.cversion, st0.czxid, st0.pzxid),
        "set_acl changes only aversion"
    );
    assert_eq!(
        s.set_acl(&p, &acl2, 0).await.unwrap_err(),
        Error::BadVersion
    );
    assert_eq!(
        s.set_acl(&p, &acl2, 2).await.unwrap_err(),
        Error::BadVersion
    );
    let (acl, st) = s.get_acl(&p).await.unwrap();
    assert_eq!(
        (acl, st.aversion),
        (acl1.clone(), 1),
        "BadVersion changed nothing"
    );
    assert_eq!(s.set_acl(&p, &acl2, -1).await.unwrap().aversion, 2);
    let (acl, st) = s.get_acl(&p).await.unwrap();
    assert_same_acls(&acl, &acl2, "ACL after set_acl(-1)");
    assert_eq!(st.aversion, 2);
    assert_eq!(s.set_acl(&p, &acl1, 2).await.unwrap().aversion, 3);
    assert_eq!(stat_of(&*s, &p).await.aversion, 3);
    s.close().await;
}

/// ZooKeeper's order of checks: ACL before existence (create of an existing name, delete of a
/// missing child) and before versions; the ACL's validity before the parent's existence.
pub async fn acl_checked_before_existence_and_version(h: &dyn Harness) {
    let (s, base) = setup(h, "acl_checked_before_existence_and_version").await;
    let p = format!("{base}/p");
    let c = format!("{p}/c");
    create(&*s, &p, b"", CreateMode::Persistent).await;
    create(&*s, &c, b"", CreateMode::Persistent).await;
    s.set_acl(&p, &Acl::read_unsafe(), -1).await.unwrap();
    assert_eq!(
        s.create(&c, b"", &persistent()).await.unwrap_err(),
        Error::NoAuth,
        "create existing name"
    );
    assert_eq!(
        s.delete(&format!("{p}/missing"), -1).await.unwrap_err(),
        Error::NoAuth,
        "delete missing"
    );
    assert_eq!(
        s.delete(&c, 7).await.unwrap_err(),
        Error::NoAuth,
        "delete with a bad version"
    );
    let w = format!("{base}/w");
    create(&*s, &w, b"", CreateMode::Persistent).await;
    s.set_acl(&w, &[Acl::new(Perms::READ, Id::anyone())], -1)
        .await
        .unwrap();
    assert_eq!(
        s.set_data(&w, b"", 7).await.unwrap_err(),
        Error::NoAuth,
        "set_data with a bad version"
    );
    assert_eq!(
        s.set_acl(&w, &Acl::open_unsafe(), 7).await.unwrap_err(),
        Error::NoAuth,
        "set_acl with a bad aversion"
    );
    assert_eq!(
        s.create(
            &format!("{base}/missing/x"),
            b"",
            &persistent().with_acls(vec![])
        )
        .await
        .unwrap_err(),
        Error::InvalidAcl,
        "an empty ACL under a missing parent"
    );
    s.close().await;
}

/// get_acl needs READ or ADMIN (`NoAuth` otherwise); without ADMIN, digest hashes come back
/// masked as `user:x`.
pub async fn get_acl_needs_read_or_admin(h: &dyn Harness) {
    let (owner, base) = setup(h, "get_acl_needs_read_or_admin").await;
    owner.add_auth("digest", b"frank:pw").await.unwrap();
    let frank = Acl::digest(Perms::ALL, "frank", "pw");
    let masked = Acl::new(Perms::ALL, Id::new("digest", "frank:x"));
    let (none, read, admin) = (
        format!("{base}/none"),
        format!("{base}/read"),
        format!("{base}/admin"),
    );
    let read_acl = vec![frank.clone(), Acl::new(Perms::READ, Id::anyone())];
    let admin_acl = vec![frank.clone(), Acl::new(Perms::ADMIN, Id::anyone())];
    owner
        .create(&none, b"", &persistent().with_acls(vec![frank.clone()]))
        .await
        .unwrap();
    owner
        .create(&read, b"", &persistent().with_acls(read_acl.clone()))
        .await
        .unwrap();
    owner
        .create(&admin, b"", &persistent().with_acls(admin_acl.clone()))
        .await
        .unwrap();
    assert_same_acls(
        &owner.get_acl(&none).await.unwrap().0,
        std::slice::from_ref(&frank),
        "owner, none",
    );
    assert_same_acls(
        &owner.get_acl(&read).await.unwrap().0,
        &read_acl,
        "owner, read",
    );
    let anon = h.connect(TIMEOUT).await;
    anon.sync(&base).await.unwrap();
    assert_eq!(
        anon.get_acl(&none).await.unwrap_err(),
        Error::NoAuth,
        "get_acl without READ or ADMIN"
    );
    assert_same_acls(
        &anon.get_acl(&read).await.unwrap().0,
        &[masked, Acl::new(Perms::READ, Id::anyone())],
        "get_acl with READ only: digest masked",
    );
    assert_same_acls(
        &anon.get_acl(&admin).await.unwrap().0,
        &admin_acl,
        "get_acl with ADMIN",
    );
    anon.close().await;
    owner.close().await;
}

// ---------------------------------------------------------------------------------------------
// Ordering and conveniences

/// Every change gets a zxid above all earlier ones, across sessions and kinds of change.
pub async fn zxids_strictly_increase(h: &dyn Harness) {
    let (s, base) = setup(h, "zxids_strictly_increase").await;
    let t = h.connect(TIMEOUT).await;
    let a = format!("{base}/a");
    let b = format!("{base}/b");
    let mut last = stat_of(&*s, &base).await.czxid;
    let mut step = |what: &str, z: i64| {
        assert!(
            z > last,
            "{what}: zxid {z} is not above the previous change's {last}"
        );
        last = z;
    };
    let (_, st) = create(&*s, &a, b"", CreateMode::Persistent).await;
    step("create", st.czxid);
    step("set", s.set_data(&a, b"1", -1).await.unwrap().mzxid);
    t.sync(&a).await.unwrap();
    step(
        "set by another session",
        t.set_data(&a, b"2", -1).await.unwrap().mzxid,
    );
    let (_, st) = create(&*t, &b, b"", CreateMode::Ephemeral).await;
    step("ephemeral create by another session", st.czxid);
    t.delete(&b, -1).await.unwrap();
    s.sync(&base).await.unwrap();
    step("delete (parent pzxid)", stat_of(&*s, &base).await.pzxid);
    let r = s
        .multi(&[Op::set_data(&a, b"3".to_vec(), -1)])
        .await
        .unwrap();
    let OpResult::SetData { stat } = &r[0] else {
        panic!("{r:?}")
    };
    step("multi", stat.mzxid);
    for i in 0..20 {
        step(
            "repeated set",
            s.set_data(&a, format!("{i}").as_bytes(), -1)
                .await
                .unwrap()
                .mzxid,
        );
    }
    t.close().await;
    s.close().await;
}

/// `SessionExt::create_all` creates missing ancestors (empty, persistent) and reports whether it
/// created the node; `delete_recursive` removes a subtree and tolerates a missing one.
pub async fn create_all_and_delete_recursive(h: &dyn Harness) {
    let (s, base) = setup(h, "create_all_and_delete_recursive").await;
    let leaf = format!("{base}/a/b/c");
    assert!(
        s.create_all(&leaf, b"leaf", &persistent()).await.unwrap(),
        "created"
    );
    assert_eq!(s.get_data(&leaf).await.unwrap().0, b"leaf");
    for anc in [format!("{base}/a"), format!("{base}/a/b")] {
        let (data, st) = s.get_data(&anc).await.unwrap();
        assert_eq!((data.len(), st.ephemeral_owner), (0, 0), "ancestor {anc}");
    }
    assert!(
        !s.create_all(&leaf, b"other", &persistent()).await.unwrap(),
        "already there"
    );
    assert_eq!(
        s.get_data(&leaf).await.unwrap().0,
        b"leaf",
        "not overwritten"
    );
    assert!(
        !s.create_all(&format!("{base}/a"), b"", &persistent())
            .await
            .unwrap()
    );
    let eph = format!("{base}/x/y");
    assert!(
        s.create_all(&eph, b"", &opts(CreateMode::Ephemeral))
            .await
            .unwrap()
    );
    assert_eq!(stat_of(&*s, &eph).await.ephemeral_owner, s.session_id().0);
    assert_eq!(stat_of(&*s, &format!("{base}/x")).await.ephemeral_owner, 0);
    s.ensure_path(&leaf).await.unwrap();
    create(&*s, &format!("{base}/a/b/c2"), b"", CreateMode::Ephemeral).await;
    create(
        &*s,
        &format!("{base}/a/s-"),
        b"",
        CreateMode::PersistentSequential,
    )
    .await;
    s.delete_recursive(&format!("{base}/a")).await.unwrap();
    assert_eq!(s.exists(&format!("{base}/a")).await.unwrap(), None);
    assert!(s.exists(&base).await.unwrap().is_some(), "the parent stays");
    s.delete_recursive(&format!("{base}/a")).await.unwrap();
    s.delete_recursive(&base).await.unwrap();
    assert_eq!(s.exists(&base).await.unwrap(), None);
    s.close().await;
}

// ---------------------------------------------------------------------------------------------
// Further guarantees

/// ZooKeeper's ordering guarantee: a session never reads a change before the watch that change
/// fires has been delivered to it. Once a read returns the new data, the watch is already
/// resolved.
pub async fn watch_event_precedes_read_of_change(h: &dyn Harness) {
    let (s, base) = setup(h, "watch_event_precedes_read_of_change").await;
    let writer = h.connect(TIMEOUT).await;
    let p = format!("{base}/n");
    create(&*s, &p, b"old", CreateMode::Persistent).await;
    writer.sync(&p).await.unwrap();
    for round in 0..5u32 {
        let (_, _, mut w) = s.get_data_watch(&p).await.unwrap();
        let new = format!("new{round}");
        writer.set_data(&p, new.as_bytes(), -1).await.unwrap();
        let deadline = Instant::now() + EVENT_WAIT;
        while s.get_data(&p).await.unwrap().0 != new.as_bytes() {
            assert!(
                Instant::now() < deadline,
                "round {round}: the change never became visible"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let polled = tokio::task::unconstrained(std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::pin::Pin::new(&mut w).poll(cx))
        }))
        .await;
        match polled {
            std::task::Poll::Ready(ev) => assert_eq!(
                ev,
                WatchedEvent::node(EventType::NodeDataChanged, &p),
                "round {round}"
            ),
            std::task::Poll::Pending => panic!(
                "round {round}: the session read the new data before its watch was delivered"
            ),
        }
    }
    writer.close().await;
    s.close().await;
}

/// A session's close deletes only the ephemerals it still owns: a node of the same name deleted
/// and re-created by another session belongs to that session and stays.
pub async fn close_deletes_only_own_ephemerals(h: &dyn Harness) {
    let (b, base) = setup(h, "close_deletes_only_own_ephemerals").await;
    let a = h.connect(TIMEOUT).await;
    let e = format!("{base}/e");
    create(&*a, &e, b"a", CreateMode::Ephemeral).await;
    b.sync(&e).await.unwrap();
    b.delete(&e, -1)
        .await
        .expect("another session may delete an open ephemeral");
    let (_, st) = create(&*b, &e, b"b", CreateMode::Ephemeral).await;
    assert_eq!(st.ephemeral_owner, b.session_id().0);
    a.close().await;
    let seen = synced_exists(&*b, &e)
        .await
        .expect("b's ephemeral survives a's close");
    assert_eq!(seen.ephemeral_owner, b.session_id().0);
    b.close().await;
}

/// Watch events are filtered by READ permission (ZooKeeper 3.8, CVE-2024-23944): a recursive
/// watch does not reveal the creation, change or deletion of a node its session cannot read.
pub async fn recursive_watch_hides_unreadable_nodes(h: &dyn Harness) {
    let (s, base) = setup(h, "recursive_watch_hides_unreadable_nodes").await;
    let owner = h.connect(TIMEOUT).await;
    owner.add_auth("digest", b"gina:pw").await.unwrap();
    let mut w = s
        .watch(&base, AddWatchMode::PersistentRecursive)
        .await
        .unwrap();
    let secret = format!("{base}/secret");
    let open = format!("{base}/open");
    owner
        .create(
            &secret,
            b"",
            &persistent().with_acls(vec![Acl::digest(Perms::ALL, "gina", "pw")]),
        )
        .await
        .unwrap();
    owner.set_data(&secret, b"x", -1).await.unwrap();
    owner.delete(&secret, -1).await.unwrap();
    owner.create(&open, b"", &persistent()).await.unwrap();
    expect_next(
        &mut w,
        EventType::NodeCreated,
        &open,
        "first event: the readable node",
    )
    .await;
    owner.close().await;
    s.close().await;
}

/// Issue 19: a [`DefaultAcl`] session gives every node it creates without an ACL of its own
/// (plain creates, `create_all`'s ancestors, creates in a multi) its default — here a digest
/// identity — so other sessions, unauthenticated or with another password, can neither read,
/// list, change nor create below them; an ACL given explicitly is kept.
pub async fn default_acl_closes_nodes_created_without_an_acl(h: &dyn Harness) {
    let (plain, base) = setup(h, "default_acl_closes_nodes_created_without_an_acl").await;
    plain.add_auth("digest", b"hana:pw").await.unwrap();
    let own = vec![Acl::digest(Perms::ALL, "hana", "pw")];
    let s = DefaultAcl::wrap(plain, own.clone());
    let root = format!("{base}/medical");
    let deep = format!("{root}/resources/MRI");
    create(&*s, &root, b"tree", CreateMode::Persistent).await;
    s.create_all(&deep, b"unit", &persistent()).await.unwrap();
    let multi = s
        .multi(&[
            Op::create(format!("{root}/m"), b"".to_vec(), persistent()),
            Op::create(
                format!("{root}/e-"),
                b"".to_vec(),
                opts(CreateMode::EphemeralSequential),
            ),
        ])
        .await
        .unwrap();
    let OpResult::Create { path: eph } = &multi[1] else {
        panic!("multi result {multi:?}");
    };
    let explicit = format!("{base}/public");
    s.create(&explicit, b"", &persistent().with_acls(Acl::read_unsafe()))
        .await
        .unwrap();
    for p in [
        &root,
        &format!("{root}/resources"),
        &deep,
        &format!("{root}/m"),
        eph,
    ] {
        assert_eq!(s.get_acl(p).await.unwrap().0, own, "ACL of {p}");
    }
    assert_eq!(s.get_acl(&explicit).await.unwrap().0, Acl::read_unsafe());

    let anon = h.connect(TIMEOUT).await;
    let wrong = h.connect(TIMEOUT).await;
    wrong.add_auth("digest", b"hana:guess").await.unwrap();
    for (who, o) in [("unauthenticated", &anon), ("wrong password", &wrong)] {
        o.sync(&deep).await.unwrap();
        for p in [&root, &deep] {
            assert!(o.exists(p).await.unwrap().is_some(), "{who}: exists {p}");
            assert_eq!(
                o.get_data(p).await.unwrap_err(),
                Error::NoAuth,
                "{who}: get {p}"
            );
            assert_eq!(
                o.get_children(p).await.unwrap_err(),
                Error::NoAuth,
                "{who}: ls {p}"
            );
            assert_eq!(
                o.set_data(p, b"x", -1).await.unwrap_err(),
                Error::NoAuth,
                "{who}: set {p}"
            );
            assert_eq!(
                o.create(&format!("{p}/intruder"), b"", &persistent())
                    .await
                    .unwrap_err(),
                Error::NoAuth,
                "{who}: create below {p}"
            );
        }
        assert_eq!(o.get_data(&explicit).await.unwrap().0, b"");
    }
    assert_eq!(s.get_data(&deep).await.unwrap().0, b"unit");
    s.set_data(&deep, b"changed", 0).await.unwrap();
    s.delete_recursive(&root).await.unwrap();
    anon.close().await;
    wrong.close().await;
    s.close().await;
}
