//! The clinical store conformance suite (issue 17): every behaviour the rest of medkeeper
//! relies on from a [`ClinicalStore`], written once and run on every backend.
//!
//! `store_tests!` makes, for each case `async fn case(h: &dyn Harness)`, a test
//! `sqlite::case` (a file store in a temporary directory), a test `postgres::case` (a fresh
//! schema in the PostgreSQL `MEDKEEPER_PG_URL` names; unset, the test prints a skip line and
//! passes — `scripts/test` starts one with `scripts/postgres` and sets it) and a test
//! `postgres_tls::case` (the same over TLS, `sslmode=verify-full`, on the server
//! `MEDKEEPER_PG_TLS_URL` names: `scripts/postgres start DIR --tls`). A case that needs
//! two instances on one database opens a second handle ([`Harness::open`]): two
//! `SqliteStore`s on one file, two `PostgresStore`s (two pools) on one schema.
//!
//! After the shared cases, what only PostgreSQL has: its migrations (refusing a newer schema,
//! several instances starting at once), the audit trigger, the copy from SQLite (`medkeeper
//! store migrate`), and PostgreSQL restarted under a workload (a server of the test's own,
//! started with `scripts/postgres`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use medkeeper_hospital::alarms::AlarmPriority;
use medkeeper_hospital::news2::SpO2Scale;
use medkeeper_hospital::store::{
    AlarmEvent, AlarmEventKind, AlarmQuery, AuditQuery, AuditRecord, ClinicalStore, ExamResult,
    News2Record, ObservationQuery, Patient, PatientSettings, PoolSample, PostgresOptions,
    PostgresStore, RawMessage, Revision, SqliteStore, StoreError, TokenRecord, Waiting,
    WaitingByPriority,
};
use medkeeper_hospital::vitals::{self, Observation, VitalCode};
use medkeeper_hospital::{Order, OrderId, OrderState, PatientId, Pool, Priority, Transition};

// ---------------------------------------------------------------------------------------------
// Harnesses

/// One database for one case.
#[async_trait]
trait Harness: Send + Sync {
    /// A new handle on the case's database: another instance of the store.
    async fn open(&self) -> Arc<dyn ClinicalStore>;
    /// Runs `sql` directly on the database (what the cases send reads the same in SQLite and
    /// PostgreSQL).
    async fn sql(&self, sql: &str);
    /// "sqlite" or "postgres".
    fn name(&self) -> &'static str;
}

struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    fn new() -> Sqlite {
        Sqlite {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("clinical.sqlite")
    }
}

#[async_trait]
impl Harness for Sqlite {
    async fn open(&self) -> Arc<dyn ClinicalStore> {
        Arc::new(SqliteStore::open(self.path()).unwrap())
    }
    async fn sql(&self, sql: &str) {
        rusqlite::Connection::open(self.path())
            .unwrap()
            .execute_batch(sql)
            .unwrap();
    }
    fn name(&self) -> &'static str {
        "sqlite"
    }
}

/// `MEDKEEPER_PG_URL`, if set and not empty.
fn pg_url() -> Option<String> {
    std::env::var("MEDKEEPER_PG_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

fn skip(test: &str) {
    println!("SKIP {test}: MEDKEEPER_PG_URL is not set (scripts/postgres start DIR prints one)");
}

const PG_URL: &str = "MEDKEEPER_PG_URL";
const PG_TLS_URL: &str = "MEDKEEPER_PG_TLS_URL";

static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A fresh schema in the database `MEDKEEPER_PG_URL` names, dropped at the end of the case.
struct Postgres {
    /// The URL with `search_path` set to the schema.
    url: String,
    admin: tokio_postgres::Client,
    schema: String,
}

/// A connection for the test's own statements (made as the store makes its own: TLS too).
async fn pg_client(url: &str) -> tokio_postgres::Client {
    PostgresStore::connect_one(url, &PostgresOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

impl Postgres {
    async fn from_env() -> Option<Postgres> {
        Postgres::from_env_var(PG_URL).await
    }

    /// A fresh schema on the server the environment variable `var` names.
    async fn from_env_var(var: &str) -> Option<Postgres> {
        let base = std::env::var(var).ok().filter(|s| !s.is_empty())?;
        let schema = format!(
            "t_{}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros(),
            NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let admin = pg_client(&base).await;
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        Some(Postgres {
            url: with_search_path(&base, &schema),
            admin,
            schema,
        })
    }

    async fn store(&self) -> PostgresStore {
        PostgresStore::connect(&self.url, PostgresOptions::default())
            .await
            .unwrap()
    }

    async fn drop_schema(&self) {
        let _ = self
            .admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await;
    }
}

#[async_trait]
impl Harness for Postgres {
    async fn open(&self) -> Arc<dyn ClinicalStore> {
        Arc::new(self.store().await)
    }
    async fn sql(&self, sql: &str) {
        let c = pg_client(&self.url).await;
        c.batch_execute(sql).await.unwrap();
    }
    fn name(&self) -> &'static str {
        "postgres"
    }
}

/// A test `sqlite::<case>` and a test `postgres::<case>` for each case.
macro_rules! store_tests {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let h = super::Sqlite::new();
                    super::$case(&h).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(h) = super::Postgres::from_env().await else {
                        super::skip(stringify!($case));
                        return;
                    };
                    super::$case(&h).await;
                    h.drop_schema().await;
                }
            )*
        }
        mod postgres_tls {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(h) = super::Postgres::from_env_var(super::PG_TLS_URL).await else {
                        println!(
                            "SKIP {}: MEDKEEPER_PG_TLS_URL is not set (scripts/postgres start \
                             DIR --tls prints one)",
                            stringify!($case)
                        );
                        return;
                    };
                    super::$case(&h).await;
                    h.drop_schema().await;
                }
            )*
        }
    };
}

store_tests!(
    order_round_trip_keeps_every_field,
    duplicate_order_is_exists_and_changes_nothing,
    transition_is_compare_and_set,
    racing_transitions_from_two_instances_have_one_winner,
    set_priority_only_while_queued,
    orders_in_and_orders_of_are_oldest_first,
    order_counts_list_every_state,
    orders_updated_pages_in_order_and_the_watermark_only_rises,
    results_are_replaced_until_reported,
    result_for_unknown_order_is_refused,
    patients_insert_refuses_a_taken_id,
    patients_upsert,
    token_round_trip_keeps_every_field,
    duplicate_token_id_or_hash_is_exists_and_changes_nothing,
    revoke_token_once,
    token_expiry_round_trips_and_is_exclusive,
    rotation_stores_the_successor_and_brings_the_old_expiry_forward,
    rotation_of_a_token_not_in_use_changes_nothing,
    rotation_with_a_taken_id_changes_nothing,
    racing_rotation_and_revocation_leave_a_consistent_pair,
    racing_rotations_of_a_token_have_one_successor,
    audit_append_assigns_increasing_seq_and_round_trips,
    audit_filters_limit_and_paging,
    audit_default_limit_is_the_most_recent_hundred,
    concurrent_audit_appends_page_forward_without_gaps,
    a_change_carries_its_audit_record_only_if_made,
    alarm_events_are_stored_once_with_their_audit,
    alarm_events_query_by_alarm_and_newest_first,
    observations_are_deduplicated_and_keep_their_first_id,
    observations_are_all_or_nothing,
    observation_corrections_replace_and_other_values_are_refused,
    observations_query_filters_and_keeps_the_newest,
    identifiers_map_once_and_refuse_another_patient,
    racing_identifiers_have_one_owner,
    patient_settings_default_and_replace,
    news2_scores_once_per_time_newest_limit,
    pool_samples_once_per_pool_and_interval,
    racing_leaders_store_one_sample_per_pool_and_interval,
    pool_samples_are_pruned_by_age,
    corrupt_values_are_reported_as_corrupt,
    a_nul_in_text_is_kept_or_refused_as_invalid_never_a_failure,
    a_second_instance_sees_every_write_and_reopening_keeps_it,
);

// ---------------------------------------------------------------------------------------------
// Helpers

fn oid(s: &str) -> OrderId {
    s.parse().unwrap()
}

fn pid(s: &str) -> PatientId {
    s.parse().unwrap()
}

fn order(id: &str, patient: &str, created_ms: i64) -> Order {
    Order {
        id: oid(id),
        patient: pid(patient),
        pool: Pool::Equipment("MRI".into()),
        capabilities: vec!["contrast".into(), "3T".into()],
        priority: Priority::Urgent,
        reason: "suspected stroke; \"quotes\", 'apostrophes' and ünïcode".into(),
        state: OrderState::Queued,
        assigned: None,
        created_ms,
        updated_ms: created_ms,
    }
}

fn step(id: &str, from: OrderState, to: OrderState, at_ms: i64, unit: Option<&str>) -> Transition {
    Transition {
        order: oid(id),
        from: Some(from),
        to,
        at_ms,
        actor: "dispatcher:a".into(),
        unit: unit.map(str::to_string),
    }
}

fn token(id: &str, hash: &str, created_ms: i64) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        hash: hash.into(),
        role: "doctor".into(),
        patient: None,
        label: "Dr. Quinn's laptop".into(),
        created_ms,
        revoked_ms: None,
        expires_ms: None,
        replaced_by: None,
    }
}

fn audit_rec(at_ms: i64, actor: &str, patient: Option<&str>) -> AuditRecord {
    AuditRecord {
        seq: -7, // ignored
        at_ms,
        actor: actor.into(),
        role: "nurse".into(),
        action: "patient.read".into(),
        patient: patient.map(pid),
        order: None,
        outcome: "ok".into(),
        detail: String::new(),
    }
}

fn action(a: &str) -> AuditRecord {
    AuditRecord {
        action: a.into(),
        ..audit_rec(5, "t-1", Some("p-1"))
    }
}

async fn actions(s: &dyn ClinicalStore) -> Vec<String> {
    s.audit(&AuditQuery {
        limit: Some(10_000),
        ..AuditQuery::default()
    })
    .await
    .unwrap()
    .into_iter()
    .map(|a| a.action)
    .collect()
}

fn event(alarm: &str, seq: u32, kind: AlarmEventKind, at_ms: i64) -> AlarmEvent {
    AlarmEvent {
        alarm: alarm.into(),
        seq,
        rule: "pool-down".into(),
        scope: "equipment.XRAY".into(),
        kind,
        priority: AlarmPriority::High,
        at_ms,
        actor: "evaluator:ward-a".into(),
        role: "system".into(),
        value: Some(0.5),
        note: "note 'quoted'".into(),
    }
}

fn obs(patient: &str, code: VitalCode, value: f64, effective_ms: i64) -> Observation {
    Observation {
        id: String::new(),
        patient: pid(patient),
        code,
        value,
        effective_ms,
        received_ms: effective_ms + 7,
        source: "monitor-3".into(),
        artefact: None,
    }
}

fn raw(body: &str) -> RawMessage {
    RawMessage {
        format: "hl7v2".into(),
        source: "monitor-3".into(),
        received_ms: 1,
        body: body.into(),
    }
}

fn ids(v: Vec<Order>) -> Vec<String> {
    v.into_iter().map(|o| o.id.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// Orders and transitions

async fn order_round_trip_keeps_every_field(h: &dyn Harness) {
    let store = h.open().await;
    let mut o = order("o-1", "p-1", 1_000);
    o.pool = Pool::Department("cardiology".into());
    o.priority = Priority::Stat;
    o.state = OrderState::Called;
    o.assigned = Some("dr-who".into());
    o.updated_ms = 1_500;
    store.insert_order(&o, "nurse:jo", None).await.unwrap();
    assert_eq!(store.order(&o.id).await.unwrap(), Some(o.clone()));
    assert_eq!(
        store.transitions(&o.id).await.unwrap(),
        vec![Transition {
            order: o.id.clone(),
            from: None,
            to: OrderState::Called,
            at_ms: 1_000,
            actor: "nurse:jo".into(),
            unit: Some("dr-who".into()),
        }]
    );
    let mut bare = order("o-2", "p-1", i64::MAX - 1);
    bare.capabilities.clear();
    bare.created_ms = -5; // before the epoch: a clock is not trusted to be sane
    store.insert_order(&bare, "nurse:jo", None).await.unwrap();
    assert_eq!(store.order(&bare.id).await.unwrap(), Some(bare));
    assert_eq!(store.order(&oid("o-none")).await.unwrap(), None);
    assert!(store.transitions(&oid("o-none")).await.unwrap().is_empty());
}

async fn duplicate_order_is_exists_and_changes_nothing(h: &dyn Harness) {
    let store = h.open().await;
    let o = order("o-1", "p-1", 1_000);
    store.insert_order(&o, "a", None).await.unwrap();
    let mut again = o.clone();
    again.reason = "other".into();
    assert_eq!(
        store.insert_order(&again, "b", None).await,
        Err(StoreError::Exists("order o-1".into()))
    );
    assert_eq!(store.order(&o.id).await.unwrap(), Some(o.clone()));
    assert_eq!(store.transitions(&o.id).await.unwrap().len(), 1);
    // The store still works after the refused insert (PostgreSQL: the aborted transaction
    // is gone, its connection reusable).
    store
        .insert_order(&order("o-2", "p-1", 2), "a", None)
        .await
        .unwrap();
}

async fn transition_is_compare_and_set(h: &dyn Harness) {
    use OrderState::*;
    let store = h.open().await;
    let o = order("o-1", "p-1", 1_000);
    store.insert_order(&o, "a", None).await.unwrap();

    let call = step("o-1", Queued, Called, 2_000, Some("MRI-1"));
    assert!(store.transition(&call, None).await.unwrap());
    let now = store.order(&o.id).await.unwrap().unwrap();
    assert_eq!(now.state, Called);
    assert_eq!(now.assigned.as_deref(), Some("MRI-1"));
    assert_eq!((now.updated_ms, now.created_ms), (2_000, 1_000));

    // Wrong from-state: false, nothing recorded, nothing changed.
    let stale = step("o-1", Queued, Cancelled, 3_000, Some("MRI-2"));
    assert!(!store.transition(&stale, None).await.unwrap());
    assert_eq!(store.order(&o.id).await.unwrap().unwrap(), now);
    // Unknown order and a "creation" are never moves.
    assert!(
        !store
            .transition(&step("o-x", Queued, Called, 1, None), None)
            .await
            .unwrap()
    );
    let creation = Transition {
        from: None,
        ..call.clone()
    };
    assert!(!store.transition(&creation, None).await.unwrap());

    // unit None keeps the assignment.
    let start = step("o-1", Called, InProgress, 4_000, None);
    assert!(store.transition(&start, None).await.unwrap());
    let now = store.order(&o.id).await.unwrap().unwrap();
    assert_eq!(
        (now.state, now.assigned.as_deref()),
        (InProgress, Some("MRI-1"))
    );
    let history = store.transitions(&o.id).await.unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[0].from, None);
    assert_eq!(history[1], call);
    assert_eq!(history[2], start);
}

/// Two instances (two stores on one database), four contenders each, racing on the same
/// orders: exactly one wins each order; its unit is the order's, its transition the only one.
async fn racing_transitions_from_two_instances_have_one_winner(h: &dyn Harness) {
    let stores = [h.open().await, h.open().await];
    const ORDERS: usize = 12;
    for i in 0..ORDERS {
        stores[0]
            .insert_order(&order(&format!("o-{i}"), "p-1", i as i64), "a", None)
            .await
            .unwrap();
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|c| {
            let store = Arc::clone(&stores[c % 2]);
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                let mut won = Vec::new();
                for i in 0..ORDERS {
                    if i == 0 {
                        barrier.wait().await;
                    }
                    let unit = format!("MRI-{c}");
                    let t = step(
                        &format!("o-{i}"),
                        OrderState::Queued,
                        OrderState::Called,
                        100 + c as i64,
                        Some(&unit),
                    );
                    let rec = AuditRecord {
                        detail: unit.clone(),
                        ..action("order.call")
                    };
                    if store.transition(&t, Some(&rec)).await.unwrap() {
                        won.push((i, unit));
                    }
                }
                won
            })
        })
        .collect();
    let mut winners: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for t in tasks {
        for (i, unit) in t.await.unwrap() {
            winners.entry(i).or_default().push(unit);
        }
    }
    assert_eq!(winners.len(), ORDERS, "every order won once: {winners:?}");
    let audit = stores[1]
        .audit(&AuditQuery {
            limit: Some(1_000),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(audit.len(), ORDERS, "one audit record per win");
    for (i, units) in winners {
        assert_eq!(units.len(), 1, "order {i}: {units:?}");
        let id = oid(&format!("o-{i}"));
        let now = stores[1].order(&id).await.unwrap().unwrap();
        assert_eq!(now.assigned.as_ref(), Some(&units[0]));
        let history = stores[1].transitions(&id).await.unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[1].unit.as_ref(), Some(&units[0]));
    }
}

async fn set_priority_only_while_queued(h: &dyn Harness) {
    let store = h.open().await;
    let o = order("o-1", "p-1", 1_000);
    store.insert_order(&o, "a", None).await.unwrap();
    assert!(
        store
            .set_priority(&o.id, Priority::Stat, 1_500, None)
            .await
            .unwrap()
    );
    let now = store.order(&o.id).await.unwrap().unwrap();
    assert_eq!((now.priority, now.updated_ms), (Priority::Stat, 1_500));
    assert_eq!(store.transitions(&o.id).await.unwrap().len(), 1);
    let call = step(
        "o-1",
        OrderState::Queued,
        OrderState::Called,
        2_000,
        Some("MRI-1"),
    );
    assert!(store.transition(&call, None).await.unwrap());
    assert!(
        !store
            .set_priority(&o.id, Priority::Routine, 1, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store.order(&o.id).await.unwrap().unwrap().priority,
        Priority::Stat
    );
    assert!(
        !store
            .set_priority(&oid("o-x"), Priority::Routine, 1, None)
            .await
            .unwrap()
    );
}

async fn orders_in_and_orders_of_are_oldest_first(h: &dyn Harness) {
    use OrderState::*;
    let store = h.open().await;
    // Inserted out of age order; o-b and o-c share a millisecond (ties break by id).
    for (id, patient, at) in [
        ("o-d", "p-2", 40),
        ("o-c", "p-1", 20),
        ("o-a", "p-1", 10),
        ("o-b", "p-1", 20),
    ] {
        store
            .insert_order(&order(id, patient, at), "a", None)
            .await
            .unwrap();
    }
    assert!(
        store
            .transition(&step("o-b", Queued, Called, 50, Some("MRI-1")), None)
            .await
            .unwrap()
    );
    assert!(
        store
            .transition(&step("o-a", Queued, Cancelled, 60, None), None)
            .await
            .unwrap()
    );
    assert_eq!(
        ids(store.orders_in(&[Queued]).await.unwrap()),
        ["o-c", "o-d"]
    );
    assert_eq!(
        ids(store.orders_in(&[Called, Queued]).await.unwrap()),
        ["o-b", "o-c", "o-d"]
    );
    assert_eq!(
        ids(store.orders_in(&OrderState::ALL).await.unwrap()),
        ["o-a", "o-b", "o-c", "o-d"]
    );
    assert!(store.orders_in(&[]).await.unwrap().is_empty());
    assert!(store.orders_in(&[Reported]).await.unwrap().is_empty());
    assert_eq!(
        ids(store.orders_of(&pid("p-1")).await.unwrap()),
        ["o-a", "o-b", "o-c"]
    );
    assert_eq!(ids(store.orders_of(&pid("p-2")).await.unwrap()), ["o-d"]);
    assert!(store.orders_of(&pid("p-3")).await.unwrap().is_empty());
}

async fn order_counts_list_every_state(h: &dyn Harness) {
    use OrderState::*;
    let store = h.open().await;
    let empty = store.order_counts().await.unwrap();
    assert_eq!(
        empty,
        OrderState::ALL.iter().map(|s| (*s, 0)).collect::<Vec<_>>()
    );
    for i in 0..5 {
        store
            .insert_order(&order(&format!("o-{i}"), "p-1", i), "a", None)
            .await
            .unwrap();
    }
    for i in 0..2 {
        let t = step(&format!("o-{i}"), Queued, Called, 10, Some("MRI-1"));
        assert!(store.transition(&t, None).await.unwrap());
    }
    let counts: BTreeMap<String, u64> = store
        .order_counts()
        .await
        .unwrap()
        .into_iter()
        .map(|(s, n)| (s.code().to_string(), n))
        .collect();
    assert_eq!(counts.len(), OrderState::ALL.len());
    assert_eq!(counts[Queued.code()], 3);
    assert_eq!(counts[Called.code()], 2);
    assert_eq!(counts.values().sum::<u64>(), 5);
}

/// The reconciler's pass: orders by (updated_ms, id) in [since, before), paged, and a
/// watermark that never moves back.
async fn orders_updated_pages_in_order_and_the_watermark_only_rises(h: &dyn Harness) {
    let store = h.open().await;
    for (id, at) in [
        ("o-c", 20),
        ("o-a", 10),
        ("o-b", 10),
        ("o-d", 30),
        ("o-e", 5),
    ] {
        store
            .insert_order(&order(id, "p-1", at), "a", None)
            .await
            .unwrap();
    }
    let page = |since, after, limit| {
        let store = &store;
        async move { ids(store.orders_updated(since, 30, after, limit).await.unwrap()) }
    };
    assert_eq!(page(10, None, 10).await, ["o-a", "o-b", "o-c"]);
    assert_eq!(page(10, None, 1).await, ["o-a"]);
    assert_eq!(page(10, Some((10, oid("o-a"))), 1).await, ["o-b"]);
    assert_eq!(page(10, Some((10, oid("o-b"))), 5).await, ["o-c"]);
    assert_eq!(page(i64::MIN, None, 0).await, Vec::<String>::new());
    assert_eq!(store.reconciled_until().await.unwrap(), None);
    store.set_reconciled_until(50).await.unwrap();
    store.set_reconciled_until(40).await.unwrap();
    assert_eq!(store.reconciled_until().await.unwrap(), Some(50));
    store.set_reconciled_until(60).await.unwrap();
    assert_eq!(store.reconciled_until().await.unwrap(), Some(60));
}

async fn results_are_replaced_until_reported(h: &dyn Harness) {
    let store = h.open().await;
    let o = order("o-1", "p-1", 1_000);
    store.insert_order(&o, "a", None).await.unwrap();
    assert_eq!(store.result(&o.id).await.unwrap(), None);
    let first = ExamResult {
        order: o.id.clone(),
        text: "no acute findings".into(),
        at_ms: 5_000,
        actor: "dr-a".into(),
    };
    store.put_result(&first).await.unwrap();
    assert_eq!(store.result(&o.id).await.unwrap(), Some(first));
    let amended = ExamResult {
        order: o.id.clone(),
        text: "addendum: small infarct".into(),
        at_ms: 6_000,
        actor: "dr-b".into(),
    };
    store.put_result(&amended).await.unwrap();
    assert_eq!(store.result(&o.id).await.unwrap(), Some(amended.clone()));
    for (from, to) in [
        (OrderState::Queued, OrderState::Called),
        (OrderState::Called, OrderState::InProgress),
        (OrderState::InProgress, OrderState::Completed),
        (OrderState::Completed, OrderState::Reported),
    ] {
        assert!(
            store
                .transition(&step("o-1", from, to, 7_000, None), None)
                .await
                .unwrap()
        );
    }
    let late = ExamResult {
        text: "a late report".into(),
        ..amended.clone()
    };
    store.put_result(&late).await.unwrap();
    assert_eq!(store.result(&o.id).await.unwrap(), Some(amended));
}

async fn result_for_unknown_order_is_refused(h: &dyn Harness) {
    let store = h.open().await;
    let r = ExamResult {
        order: oid("o-none"),
        text: "x".into(),
        at_ms: 1,
        actor: "dr-a".into(),
    };
    assert!(matches!(
        store.put_result(&r).await,
        Err(StoreError::Backend(_))
    ));
    assert_eq!(store.result(&r.order).await.unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// Patients

async fn patients_insert_refuses_a_taken_id(h: &dyn Harness) {
    let s = h.open().await;
    let p = Patient {
        id: pid("p-1"),
        name: "Ann O'Brien".into(),
        birth_date: None,
    };
    s.insert_patient(&p, Some(&action("patient.create")))
        .await
        .unwrap();
    let other = Patient {
        name: "Bob".into(),
        ..p.clone()
    };
    assert!(matches!(
        s.insert_patient(&other, Some(&action("patient.again")))
            .await,
        Err(StoreError::Exists(_))
    ));
    assert_eq!(s.patient(&pid("p-1")).await.unwrap(), Some(p));
    assert_eq!(actions(s.as_ref()).await, ["patient.create"]);
}

async fn patients_upsert(h: &dyn Harness) {
    let store = h.open().await;
    let id = pid("p-1");
    assert_eq!(store.patient(&id).await.unwrap(), None);
    let mut p = Patient {
        id: id.clone(),
        name: "Ada Lovelace".into(),
        birth_date: None,
    };
    store.upsert_patient(&p).await.unwrap();
    assert_eq!(store.patient(&id).await.unwrap(), Some(p.clone()));
    p.name = "Ada King".into();
    p.birth_date = Some("1815-12-10".into());
    store.upsert_patient(&p).await.unwrap();
    assert_eq!(store.patient(&id).await.unwrap(), Some(p.clone()));
    p.birth_date = None;
    store.upsert_patient(&p).await.unwrap();
    assert_eq!(store.patient(&id).await.unwrap(), Some(p));
}

// ---------------------------------------------------------------------------------------------
// Tokens

async fn token_round_trip_keeps_every_field(h: &dyn Harness) {
    let store = h.open().await;
    let mut t = token("t-00000001", &"ab".repeat(32), 1_000);
    t.role = "patient".into();
    t.patient = Some(pid("p-1"));
    t.revoked_ms = Some(2_000);
    store.insert_token(&t, None).await.unwrap();
    let plain = token("t-00000002", &"cd".repeat(32), 500);
    store.insert_token(&plain, None).await.unwrap();
    assert_eq!(store.token_by_hash(&t.hash).await.unwrap(), Some(t.clone()));
    assert_eq!(
        store.token_by_hash(&plain.hash).await.unwrap(),
        Some(plain.clone())
    );
    assert_eq!(store.token_by_hash("ef").await.unwrap(), None);
    assert_eq!(store.tokens().await.unwrap(), vec![plain, t]);
}

async fn duplicate_token_id_or_hash_is_exists_and_changes_nothing(h: &dyn Harness) {
    let store = h.open().await;
    let t = token("t-00000001", "aa", 1_000);
    store
        .insert_token(&t, Some(&action("token.create")))
        .await
        .unwrap();
    let same_hash = token("t-00000002", "aa", 2_000);
    assert!(matches!(
        store.insert_token(&same_hash, Some(&action("token.again"))).await,
        Err(StoreError::Exists(m)) if m.contains("t-00000002")
    ));
    let same_id = token("t-00000001", "bb", 3_000);
    assert!(matches!(
        store
            .insert_token(&same_id, Some(&action("token.again")))
            .await,
        Err(StoreError::Exists(_))
    ));
    assert_eq!(store.tokens().await.unwrap(), vec![t]);
    assert_eq!(store.token_by_hash("bb").await.unwrap(), None);
    assert_eq!(actions(store.as_ref()).await, ["token.create"]);
}

async fn revoke_token_once(h: &dyn Harness) {
    let store = h.open().await;
    let t = token("t-00000001", "aa", 1_000);
    store.insert_token(&t, None).await.unwrap();
    assert!(store.revoke_token("t-00000001", 5_000, None).await.unwrap());
    assert!(!store.revoke_token("t-00000001", 6_000, None).await.unwrap());
    assert!(!store.revoke_token("t-unknown", 6_000, None).await.unwrap());
    let now = store.token_by_hash("aa").await.unwrap().unwrap();
    assert_eq!(
        now,
        TokenRecord {
            revoked_ms: Some(5_000),
            ..t
        }
    );
}

async fn token_expiry_round_trips_and_is_exclusive(h: &dyn Harness) {
    let store = h.open().await;
    let mut t = token("t-00000001", "aa", 1_000);
    t.expires_ms = Some(5_000);
    store.insert_token(&t, None).await.unwrap();
    let never = token("t-00000002", "bb", 1_000);
    store.insert_token(&never, None).await.unwrap();
    assert_eq!(store.token_by_hash("aa").await.unwrap(), Some(t.clone()));
    assert_eq!(
        store.token_by_id("t-00000001").await.unwrap(),
        Some(t.clone())
    );
    assert_eq!(
        store.token_by_id("t-00000002").await.unwrap(),
        Some(never.clone())
    );
    assert_eq!(store.token_by_id("t-unknown").await.unwrap(), None);
    assert_eq!(
        store.tokens().await.unwrap(),
        vec![t.clone(), never.clone()]
    );
    assert!(t.valid_at(4_999) && !t.valid_at(5_000) && t.expired_at(5_000));
    assert!(never.valid_at(i64::MAX));
    // Revoking an expiring token keeps its expiry.
    assert!(store.revoke_token("t-00000001", 2_000, None).await.unwrap());
    let revoked = store.token_by_id("t-00000001").await.unwrap().unwrap();
    assert_eq!(
        (revoked.revoked_ms, revoked.expires_ms),
        (Some(2_000), Some(5_000))
    );
    assert!(!revoked.valid_at(1_500));
}

fn successor(id: &str, hash: &str, created_ms: i64) -> TokenRecord {
    TokenRecord {
        expires_ms: Some(created_ms + 100_000),
        ..token(id, hash, created_ms)
    }
}

async fn rotation_stores_the_successor_and_brings_the_old_expiry_forward(h: &dyn Harness) {
    let store = h.open().await;
    let old = token("t-00000001", "aa", 1_000);
    store.insert_token(&old, None).await.unwrap();
    let new = successor("t-00000002", "bb", 10_000);
    let audit = [action("token.rotate"), action("token.create")];
    assert!(
        store
            .rotate_token("t-00000001", 13_600, &new, &audit)
            .await
            .unwrap()
    );
    assert_eq!(store.token_by_hash("bb").await.unwrap(), Some(new.clone()));
    let after = store.token_by_id("t-00000001").await.unwrap().unwrap();
    assert_eq!(
        after,
        TokenRecord {
            expires_ms: Some(13_600),
            replaced_by: Some("t-00000002".into()),
            ..old.clone()
        }
    );
    assert!(after.valid_at(13_599) && !after.valid_at(13_600));
    assert_eq!(
        actions(store.as_ref()).await,
        ["token.rotate", "token.create"]
    );
    // A token is rotated once: again, within the overlap, changes and appends nothing.
    let third = successor("t-00000003", "cc", 11_000);
    assert!(
        !store
            .rotate_token("t-00000001", 12_000, &third, &[action("token.rotate")])
            .await
            .unwrap()
    );
    assert_eq!(store.token_by_id("t-00000001").await.unwrap(), Some(after));
    assert_eq!(store.token_by_hash("cc").await.unwrap(), None);
    assert_eq!(store.tokens().await.unwrap().len(), 2);
    assert_eq!(
        actions(store.as_ref()).await,
        ["token.rotate", "token.create"]
    );
    // The successor is rotated in its turn; an earlier expiry it has is kept, and the first
    // token is left alone.
    let fourth = successor("t-00000004", "dd", 12_500);
    assert!(
        store
            .rotate_token("t-00000002", 12_500, &fourth, &[])
            .await
            .unwrap()
    );
    let second = store.token_by_id("t-00000002").await.unwrap().unwrap();
    assert_eq!(second.expires_ms, Some(12_500));
    assert_eq!(second.replaced_by.as_deref(), Some("t-00000004"));
    let fifth = successor("t-00000005", "ee", 12_600);
    assert!(
        store
            .rotate_token("t-00000004", 999_999_999, &fifth, &[])
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .token_by_id("t-00000004")
            .await
            .unwrap()
            .unwrap()
            .expires_ms,
        fourth.expires_ms,
        "an earlier expiry is never pushed back"
    );
    assert_eq!(
        store
            .token_by_id("t-00000001")
            .await
            .unwrap()
            .unwrap()
            .expires_ms,
        Some(13_600)
    );
}

/// Racing rotations of one token, from two instances: exactly one stores its successor and
/// its records; the others change and append nothing.
async fn racing_rotations_of_a_token_have_one_successor(h: &dyn Harness) {
    for round in 0..5 {
        let a = h.open().await;
        let b = h.open().await;
        let old_id = format!("t-{round:08}");
        a.insert_token(&token(&old_id, &format!("old{round}"), 1_000), None)
            .await
            .unwrap();
        let news: Vec<TokenRecord> = (0..6)
            .map(|i| {
                successor(
                    &format!("t-n{round}x{i:04}"),
                    &format!("new{round}x{i}"),
                    2_000,
                )
            })
            .collect();
        let tries = news.iter().enumerate().map(|(i, new)| {
            let store = if i % 2 == 0 { &a } else { &b };
            let old_id = old_id.clone();
            async move {
                store
                    .rotate_token(&old_id, 3_000, new, &[action("token.rotate")])
                    .await
            }
        });
        let results: Vec<bool> = futures_util::future::join_all(tries)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let winners: Vec<usize> = (0..news.len()).filter(|&i| results[i]).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let after = a.token_by_id(&old_id).await.unwrap().unwrap();
        assert_eq!(
            after.replaced_by.as_deref(),
            Some(news[winners[0]].id.as_str())
        );
        for (i, new) in news.iter().enumerate() {
            let found = a.token_by_hash(&new.hash).await.unwrap();
            assert_eq!(
                found.is_some(),
                i == winners[0],
                "round {round}: {}",
                new.id
            );
        }
    }
    let all = h.open().await;
    assert_eq!(actions(all.as_ref()).await.len(), 5);
}

async fn rotation_of_a_token_not_in_use_changes_nothing(h: &dyn Harness) {
    let store = h.open().await;
    let revoked = token("t-00000001", "aa", 1_000);
    store.insert_token(&revoked, None).await.unwrap();
    assert!(store.revoke_token("t-00000001", 2_000, None).await.unwrap());
    let mut expiring = token("t-00000002", "bb", 1_000);
    expiring.expires_ms = Some(5_000);
    store.insert_token(&expiring, None).await.unwrap();
    let audit = [action("token.rotate"), action("token.create")];
    for (old, at) in [
        ("t-00000001", 3_000),
        ("t-00000002", 5_000),
        ("t-unknown", 3_000),
    ] {
        let new = successor("t-00000009", "zz", at);
        assert!(
            !store
                .rotate_token(old, at + 1_000, &new, &audit)
                .await
                .unwrap(),
            "{old} at {at}"
        );
    }
    assert_eq!(store.token_by_hash("zz").await.unwrap(), None);
    assert_eq!(
        store.token_by_id("t-00000002").await.unwrap(),
        Some(expiring.clone())
    );
    assert_eq!(store.tokens().await.unwrap().len(), 2);
    assert!(actions(store.as_ref()).await.is_empty());
    // One millisecond before its expiry it is still in use.
    let new = successor("t-00000009", "zz", 4_999);
    assert!(
        store
            .rotate_token("t-00000002", 9_000, &new, &audit)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .token_by_id("t-00000002")
            .await
            .unwrap()
            .unwrap()
            .expires_ms,
        Some(5_000),
        "an earlier expiry is kept"
    );
}

async fn rotation_with_a_taken_id_changes_nothing(h: &dyn Harness) {
    let store = h.open().await;
    let old = token("t-00000001", "aa", 1_000);
    store.insert_token(&old, None).await.unwrap();
    let other = token("t-00000002", "bb", 1_000);
    store.insert_token(&other, None).await.unwrap();
    let audit = [action("token.rotate"), action("token.create")];
    for new in [
        successor("t-00000002", "cc", 2_000),
        successor("t-00000003", "bb", 2_000),
    ] {
        assert!(matches!(
            store.rotate_token("t-00000001", 3_000, &new, &audit).await,
            Err(StoreError::Exists(_))
        ));
    }
    assert_eq!(store.tokens().await.unwrap(), vec![old, other]);
    assert!(actions(store.as_ref()).await.is_empty());
}

async fn racing_rotation_and_revocation_leave_a_consistent_pair(h: &dyn Harness) {
    // Two instances: one rotates a token while the other revokes it. Either the rotation
    // came first (a successor, and the old token revoked) or the revocation did (no
    // successor, no rotation record); never a successor of a token revoked before it.
    for round in 0..10 {
        let a = h.open().await;
        let b = h.open().await;
        let old_id = format!("t-{round:08}");
        let old = token(&old_id, &format!("old{round}"), 1_000);
        a.insert_token(&old, None).await.unwrap();
        let new = successor(&format!("t-new{round:05}"), &format!("new{round}"), 2_000);
        let (rotation, revocation) = ([action("token.rotate")], action("token.revoke"));
        let rotate = a.rotate_token(&old_id, 3_000, &new, &rotation);
        let revoke = b.revoke_token(&old_id, 2_500, Some(&revocation));
        let (rotated, revoked) = tokio::join!(rotate, revoke);
        let (rotated, revoked) = (rotated.unwrap(), revoked.unwrap());
        assert!(
            revoked,
            "round {round}: a revocation of a valid token always succeeds"
        );
        let found = a.token_by_hash(&new.hash).await.unwrap();
        assert_eq!(found.is_some(), rotated, "round {round}");
        let after = a.token_by_id(&old_id).await.unwrap().unwrap();
        assert_eq!(after.revoked_ms, Some(2_500));
        assert_eq!(after.expires_ms, rotated.then_some(3_000), "round {round}");
    }
}

// ---------------------------------------------------------------------------------------------
// Audit

async fn audit_append_assigns_increasing_seq_and_round_trips(h: &dyn Harness) {
    let store = h.open().await;
    let mut full = audit_rec(1_000, "t-00000001", Some("p-1"));
    full.order = Some(oid("o-1"));
    full.action = "order.create".into();
    full.outcome = "not_found".into();
    full.detail = "\"quotes\" and ünïcode".into();
    let s1 = store.append_audit(&full).await.unwrap();
    let s2 = store
        .append_audit(&audit_rec(900, "cli", None))
        .await
        .unwrap();
    assert!(s2 > s1, "{s1} then {s2}");
    let all = store.audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(
        all,
        vec![
            AuditRecord { seq: s1, ..full },
            AuditRecord {
                seq: s2,
                ..audit_rec(900, "cli", None)
            },
        ],
        "ascending seq, not time"
    );
}

async fn audit_filters_limit_and_paging(h: &dyn Harness) {
    let store = h.open().await;
    // 10 records: even ones about p-1 by t-a, odd ones about p-2 by t-b; at_ms = 100 * i.
    let mut seqs = Vec::new();
    for i in 0..10 {
        let (actor, patient) = if i % 2 == 0 {
            ("t-a", "p-1")
        } else {
            ("t-b", "p-2")
        };
        seqs.push(
            store
                .append_audit(&audit_rec(100 * i, actor, Some(patient)))
                .await
                .unwrap(),
        );
    }
    let at = |v: Vec<AuditRecord>| v.into_iter().map(|r| r.at_ms).collect::<Vec<_>>();
    let q = |f: fn(&mut AuditQuery)| {
        let mut q = AuditQuery::default();
        f(&mut q);
        q
    };
    assert_eq!(
        at(store
            .audit(&q(|q| q.patient = Some(pid("p-1"))))
            .await
            .unwrap()),
        [0, 200, 400, 600, 800]
    );
    assert_eq!(
        at(store
            .audit(&q(|q| q.actor = Some("t-b".into())))
            .await
            .unwrap()),
        [100, 300, 500, 700, 900]
    );
    assert_eq!(
        at(store.audit(&q(|q| q.since_ms = Some(700))).await.unwrap()),
        [700, 800, 900]
    );
    assert_eq!(
        at(store
            .audit(&q(|q| {
                q.patient = Some(pid("p-2"));
                q.since_ms = Some(400);
                q.actor = Some("t-b".into());
            }))
            .await
            .unwrap()),
        [500, 700, 900]
    );
    assert!(
        store
            .audit(&q(|q| {
                q.patient = Some(pid("p-1"));
                q.actor = Some("t-b".into());
            }))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        at(store.audit(&q(|q| q.limit = Some(3))).await.unwrap()),
        [700, 800, 900]
    );
    assert_eq!(
        at(store
            .audit(&q(|q| {
                q.limit = Some(2);
                q.patient = Some(pid("p-1"));
            }))
            .await
            .unwrap()),
        [600, 800]
    );
    let mut page = AuditQuery {
        after_seq: Some(seqs[2]),
        limit: Some(3),
        ..AuditQuery::default()
    };
    assert_eq!(at(store.audit(&page).await.unwrap()), [300, 400, 500]);
    page.after_seq = Some(seqs[5]);
    let rest = store.audit(&page).await.unwrap();
    assert_eq!(at(rest.clone()), [600, 700, 800]);
    page.after_seq = Some(rest[2].seq);
    assert_eq!(at(store.audit(&page).await.unwrap()), [900]);
    page.after_seq = Some(seqs[9]);
    assert!(store.audit(&page).await.unwrap().is_empty());
    assert!(
        store
            .audit(&q(|q| q.limit = Some(0)))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn audit_default_limit_is_the_most_recent_hundred(h: &dyn Harness) {
    let store = h.open().await;
    for i in 0..120 {
        store
            .append_audit(&audit_rec(i, "system", None))
            .await
            .unwrap();
    }
    let got = store.audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(got.len(), 100);
    assert_eq!((got[0].at_ms, got[99].at_ms), (20, 119));
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
}

/// Writers on two instances append (alone and with changes) while a reader pages forward
/// with `after_seq`: the reader ends with every record, none skipped — the trail becomes
/// visible in `seq` order, whatever the backend hands numbers out by.
async fn concurrent_audit_appends_page_forward_without_gaps(h: &dyn Harness) {
    let stores = [h.open().await, h.open().await];
    const WRITERS: usize = 6;
    const EACH: usize = 30;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&stores[w % 2]);
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..EACH {
                    if i % 3 == 0 {
                        // A change carrying its record (a longer transaction).
                        let o = order(&format!("o-{w}-{i}"), "p-1", i as i64);
                        store
                            .insert_order(&o, "a", Some(&action("order.create")))
                            .await
                            .unwrap();
                    } else {
                        seqs.push(
                            store
                                .append_audit(&audit_rec(i as i64, &format!("w{w}"), None))
                                .await
                                .unwrap(),
                        );
                    }
                }
                seqs
            })
        })
        .collect();
    let reader = {
        let store = Arc::clone(&stores[1]);
        tokio::spawn(async move {
            let mut seen: Vec<i64> = Vec::new();
            let mut idle = 0;
            while seen.len() < WRITERS * EACH && idle < 2_000 {
                let page = store
                    .audit(&AuditQuery {
                        after_seq: Some(seen.last().copied().unwrap_or(0)),
                        limit: Some(7),
                        ..AuditQuery::default()
                    })
                    .await
                    .unwrap();
                if page.is_empty() {
                    idle += 1;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                seen.extend(page.into_iter().map(|r| r.seq));
            }
            seen
        })
    };
    let mut appended = HashSet::new();
    for w in writers {
        for s in w.await.unwrap() {
            assert!(appended.insert(s), "seq {s} handed out twice");
        }
    }
    let seen = reader.await.unwrap();
    let all: Vec<i64> = stores[0]
        .audit(&AuditQuery {
            limit: Some(10_000),
            ..AuditQuery::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(all.len(), WRITERS * EACH);
    assert!(all.windows(2).all(|w| w[0] < w[1]));
    assert!(appended.iter().all(|s| all.contains(s)));
    assert_eq!(seen, all, "the reader paging forward skipped nothing");
}

/// A change and its audit record are one transaction: the record is stored exactly when the
/// change is, never for a change refused.
async fn a_change_carries_its_audit_record_only_if_made(h: &dyn Harness) {
    let store = h.open().await;
    let o = order("o-1", "p-1", 1);
    store
        .insert_order(&o, "a", Some(&action("order.create")))
        .await
        .unwrap();
    assert!(matches!(
        store
            .insert_order(&o, "a", Some(&action("order.again")))
            .await,
        Err(StoreError::Exists(_))
    ));
    let call = step(
        "o-1",
        OrderState::Queued,
        OrderState::Called,
        2,
        Some("MRI-1"),
    );
    assert!(
        store
            .transition(&call, Some(&action("order.call")))
            .await
            .unwrap()
    );
    assert!(
        !store
            .transition(&call, Some(&action("order.call.lost")))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_priority(
                &oid("o-1"),
                Priority::Stat,
                1,
                Some(&action("order.priority"))
            )
            .await
            .unwrap()
    );
    let patient = Patient {
        id: pid("p-1"),
        name: "A".into(),
        birth_date: None,
    };
    store
        .insert_patient(&patient, Some(&action("patient.create")))
        .await
        .unwrap();
    assert!(
        store
            .insert_patient(&patient, Some(&action("patient.again")))
            .await
            .is_err()
    );
    store
        .insert_token(&token("t-9", "h9", 1), Some(&action("token.create")))
        .await
        .unwrap();
    assert!(
        store
            .revoke_token("t-9", 3, Some(&action("token.revoke")))
            .await
            .unwrap()
    );
    assert!(
        !store
            .revoke_token("t-9", 4, Some(&action("token.revoke.again")))
            .await
            .unwrap()
    );
    assert_eq!(
        actions(store.as_ref()).await,
        [
            "order.create",
            "order.call",
            "patient.create",
            "token.create",
            "token.revoke"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Alarm events

async fn alarm_events_are_stored_once_with_their_audit(h: &dyn Harness) {
    let stores = [h.open().await, h.open().await];
    let a = "pool-down@equipment.XRAY@1000";
    let raised = event(a, 0, AlarmEventKind::Raised, 1_000);
    let acked = AlarmEvent {
        actor: "t-nurse".into(),
        role: "nurse".into(),
        value: None,
        ..event(a, 1, AlarmEventKind::Acknowledged, 2_000)
    };
    assert_eq!(stores[0].record_alarm_events(&[]).await.unwrap(), 0);
    assert_eq!(
        stores[0]
            .record_alarm_events(std::slice::from_ref(&raised))
            .await
            .unwrap(),
        1
    );
    // Copied again with the next event (a new leader copying the node's whole history), from
    // the other instance, twice at once: each event once, with one audit record.
    let both = [raised.clone(), acked.clone()];
    let (x, y) = tokio::join!(
        stores[0].record_alarm_events(&both),
        stores[1].record_alarm_events(&both)
    );
    assert_eq!(x.unwrap() + y.unwrap(), 1);
    assert_eq!(
        stores[1]
            .alarm_events(&AlarmQuery {
                alarm: Some(a.into()),
                ..AlarmQuery::default()
            })
            .await
            .unwrap(),
        vec![raised, acked]
    );
    let audit = stores[0].audit(&AuditQuery::default()).await.unwrap();
    let got: Vec<(&str, &str, &str, &str)> = audit
        .iter()
        .map(|r| {
            (
                r.action.as_str(),
                r.actor.as_str(),
                r.role.as_str(),
                r.detail.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("alarm.raised", "evaluator:ward-a", "system", a),
            ("alarm.acknowledged", "t-nurse", "nurse", a),
        ]
    );
    assert_eq!(audit[0].at_ms, 1_000);
    assert_eq!(audit[0].outcome, "ok");
}

async fn alarm_events_query_by_alarm_and_newest_first(h: &dyn Harness) {
    let store = h.open().await;
    let (a, b) = ("r@s@1", "r@s@2");
    let events = [
        event(a, 0, AlarmEventKind::Raised, 10),
        event(b, 0, AlarmEventKind::Raised, 20),
        event(a, 1, AlarmEventKind::Escalated, 30),
        event(b, 1, AlarmEventKind::Shelved, 30),
        event(a, 2, AlarmEventKind::Cleared, 40),
    ];
    assert_eq!(store.record_alarm_events(&events).await.unwrap(), 5);
    let key = |v: Vec<AlarmEvent>| {
        v.into_iter()
            .map(|e| (e.alarm, e.seq))
            .collect::<Vec<(String, u32)>>()
    };
    let q = |alarm: Option<&str>, since_ms: Option<i64>, limit: Option<u32>| AlarmQuery {
        alarm: alarm.map(str::to_string),
        since_ms,
        limit,
    };
    assert_eq!(
        key(store.alarm_events(&q(None, None, None)).await.unwrap()),
        [
            (a.into(), 2),
            (b.into(), 1),
            (a.into(), 1),
            (b.into(), 0),
            (a.into(), 0)
        ]
    );
    assert_eq!(
        key(store
            .alarm_events(&q(None, Some(30), Some(2)))
            .await
            .unwrap()),
        [(a.into(), 2), (b.into(), 1)]
    );
    assert_eq!(
        key(store.alarm_events(&q(Some(a), None, None)).await.unwrap()),
        [(a.into(), 0), (a.into(), 1), (a.into(), 2)]
    );
    assert_eq!(
        key(store
            .alarm_events(&q(Some(a), Some(20), Some(1)))
            .await
            .unwrap()),
        [(a.into(), 1)]
    );
    assert!(
        store
            .alarm_events(&q(Some("none"), None, None))
            .await
            .unwrap()
            .is_empty()
    );
    // A copy with staff's note fills in a note stored empty, and only an empty one; it is
    // not new and appends nothing.
    let mut quiet = event(a, 3, AlarmEventKind::Acknowledged, 50);
    quiet.note.clear();
    assert_eq!(
        store.record_alarm_events(&[quiet.clone()]).await.unwrap(),
        1
    );
    let noted = AlarmEvent {
        note: "engineer called".into(),
        ..quiet.clone()
    };
    let records = actions(store.as_ref()).await.len();
    assert_eq!(
        store
            .record_alarm_events(std::slice::from_ref(&noted))
            .await
            .unwrap(),
        0
    );
    let other = AlarmEvent {
        note: "another note".into(),
        ..quiet
    };
    assert_eq!(store.record_alarm_events(&[other]).await.unwrap(), 0);
    assert_eq!(
        store
            .alarm_events(&q(Some(a), Some(50), None))
            .await
            .unwrap(),
        vec![noted]
    );
    assert_eq!(actions(store.as_ref()).await.len(), records);
    // Every field comes back, a missing value too.
    let all = store.alarm_events(&q(Some(b), None, None)).await.unwrap();
    assert_eq!(all[1], events[3]);
}

// ---------------------------------------------------------------------------------------------
// Observations, identifiers, settings, NEWS2

async fn observations_are_deduplicated_and_keep_their_first_id(h: &dyn Harness) {
    let store = h.open().await;
    let first = [
        obs("p-1", VitalCode::HeartRate, 72.0, 1_000),
        obs("p-1", VitalCode::Spo2, 96.5, 1_000),
    ];
    let stored = store
        .insert_observations(&first, &raw("MSH|1"), Some(&action("vitals.ingest")))
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    for (s, o) in stored.iter().zip(&first) {
        assert!(s.id.starts_with("v-"), "{}", s.id);
        assert_eq!(
            Observation {
                id: String::new(),
                ..s.clone()
            },
            *o
        );
    }
    // The same message again, with a new one: the stored ones as they were (their ids,
    // their arrival), the new one stored.
    let mut again = first.to_vec();
    again[0].received_ms += 1;
    let mut artefact = obs("p-1", VitalCode::Temperature, 45.5, 1_000);
    artefact.artefact = Some("implausible".into());
    again.push(artefact.clone());
    let stored_again = store
        .insert_observations(&again, &raw("MSH|2"), None)
        .await
        .unwrap();
    assert_eq!(stored_again[..2], stored[..]);
    assert_eq!(stored_again[2].artefact.as_deref(), Some("implausible"));
    // Another source's reading at the same time is another observation.
    let mut other = first[0].clone();
    other.source = "monitor-4".into();
    let s = store
        .insert_observations(&[other], &raw("MSH|3"), None)
        .await
        .unwrap();
    assert_ne!(s[0].id, stored[0].id);
    let all = store
        .observations(&ObservationQuery {
            patient: Some(pid("p-1")),
            ..ObservationQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(actions(store.as_ref()).await, ["vitals.ingest"]);
}

/// One message's observations are stored all or nothing: the second one refused (a unique
/// index the case adds, which both dialects read alike), the first is not kept, nor the
/// message's audit record.
async fn observations_are_all_or_nothing(h: &dyn Harness) {
    let store = h.open().await;
    h.sql("CREATE UNIQUE INDEX one_reading_per_code ON observations (patient, code)")
        .await;
    let message = [
        obs("p-1", VitalCode::HeartRate, 72.0, 1_000),
        obs("p-1", VitalCode::HeartRate, 75.0, 2_000),
    ];
    let failed = store
        .insert_observations(&message, &raw("MSH|1"), Some(&action("vitals.ingest")))
        .await;
    assert!(matches!(failed, Err(StoreError::Backend(_))), "{failed:?}");
    let q = ObservationQuery {
        patient: Some(pid("p-1")),
        ..ObservationQuery::default()
    };
    assert!(store.observations(&q).await.unwrap().is_empty());
    assert!(actions(store.as_ref()).await.is_empty());
    h.sql("DROP INDEX one_reading_per_code").await;
    let stored = store
        .insert_observations(&message, &raw("MSH|1"), Some(&action("vitals.ingest")))
        .await
        .unwrap();
    assert_eq!(store.observations(&q).await.unwrap(), stored);
    assert_eq!(actions(store.as_ref()).await, ["vitals.ingest"]);
}

/// A second value for a stored key (patient, source, code, effective time) is never dropped
/// silently: an original is refused (`Exists`, nothing of its call stored), a correction
/// replaces the value in place (the id stays, the arrival and artefact flag are the
/// correction's) — also for a key written earlier in the same call.
async fn observation_corrections_replace_and_other_values_are_refused(h: &dyn Harness) {
    let store = h.open().await;
    let q = ObservationQuery {
        patient: Some(pid("p-1")),
        ..ObservationQuery::default()
    };
    let hr = obs("p-1", VitalCode::HeartRate, 60.0, 1_000);
    let stored = store
        .insert_observations(std::slice::from_ref(&hr), &raw("MSH|1"), None)
        .await
        .unwrap();
    let records = actions(store.as_ref()).await.len();
    // Another value as an original, beside a new reading: refused whole, naming both values.
    let mut other = hr.clone();
    other.value = 150.0;
    let spo2 = obs("p-1", VitalCode::Spo2, 97.0, 1_000);
    let refused = store
        .write_observations(
            &[
                (spo2.clone(), Revision::Original),
                (other.clone(), Revision::Original),
            ],
            &raw("MSH|2"),
            Some(&action("vitals.ingest")),
        )
        .await;
    match &refused {
        Err(StoreError::Exists(m)) => {
            assert!(m.contains("60") && m.contains("150"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(store.observations(&q).await.unwrap(), stored);
    assert_eq!(actions(store.as_ref()).await.len(), records);
    // The same value as a correction: a duplicate, nothing changes.
    let same = store
        .write_observations(&[(hr.clone(), Revision::Correction)], &raw("MSH|3"), None)
        .await
        .unwrap();
    assert_eq!(same, stored);
    // Another value as a correction: replaced in place.
    let mut corrected = other.clone();
    corrected.received_ms = hr.received_ms + 5;
    corrected.artefact = Some("implausible".into());
    let replaced = store
        .write_observations(
            &[(corrected.clone(), Revision::Correction)],
            &raw("MSH|4"),
            Some(&action("vitals.ingest")),
        )
        .await
        .unwrap();
    assert_eq!(
        replaced,
        [Observation {
            id: stored[0].id.clone(),
            ..corrected.clone()
        }]
    );
    assert_eq!(store.observations(&q).await.unwrap(), replaced);
    assert_eq!(actions(store.as_ref()).await.len(), records + 1);
    // Two values of one key in one call: the second an original is refused, a correction
    // wins.
    let a = obs("p-1", VitalCode::RespiratoryRate, 16.0, 2_000);
    let mut b = a.clone();
    b.value = 30.0;
    let twice = store
        .write_observations(
            &[
                (a.clone(), Revision::Original),
                (b.clone(), Revision::Original),
            ],
            &raw("MSH|5"),
            None,
        )
        .await;
    assert!(matches!(twice, Err(StoreError::Exists(_))), "{twice:?}");
    assert_eq!(store.observations(&q).await.unwrap().len(), 1);
    let twice = store
        .write_observations(
            &[(a, Revision::Original), (b.clone(), Revision::Correction)],
            &raw("MSH|6"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(twice[0].id, twice[1].id);
    assert_eq!((twice[0].value, twice[1].value), (16.0, 30.0));
    let rr = store
        .observations(&ObservationQuery {
            codes: vec![VitalCode::RespiratoryRate],
            ..q
        })
        .await
        .unwrap();
    assert_eq!(rr.iter().map(|o| o.value).collect::<Vec<_>>(), [30.0]);
}

async fn observations_query_filters_and_keeps_the_newest(h: &dyn Harness) {
    let store = h.open().await;
    let mut all = Vec::new();
    for (i, code) in [VitalCode::HeartRate, VitalCode::RespiratoryRate]
        .into_iter()
        .cycle()
        .take(10)
        .enumerate()
    {
        all.push(obs("p-1", code, 10.0 + i as f64 / 3.0, 100 * i as i64));
    }
    all.push(obs("p-2", VitalCode::HeartRate, 80.0, 450));
    let stored = store
        .insert_observations(&all, &raw("x"), None)
        .await
        .unwrap();
    // Values come back bit for bit.
    assert!(stored.iter().zip(&all).all(|(s, o)| s.value == o.value));
    let times = |v: Vec<Observation>| v.into_iter().map(|o| o.effective_ms).collect::<Vec<_>>();
    let q = |f: fn(&mut ObservationQuery)| {
        let mut q = ObservationQuery {
            patient: Some(pid("p-1")),
            ..ObservationQuery::default()
        };
        f(&mut q);
        q
    };
    assert_eq!(
        times(store.observations(&q(|_| {})).await.unwrap()),
        (0..10).map(|i| i * 100).collect::<Vec<_>>()
    );
    assert_eq!(
        times(
            store
                .observations(&q(|q| q.codes = vec![VitalCode::HeartRate]))
                .await
                .unwrap()
        ),
        [0, 200, 400, 600, 800]
    );
    assert_eq!(
        times(
            store
                .observations(&q(|q| {
                    q.since_ms = Some(200);
                    q.until_ms = Some(500);
                }))
                .await
                .unwrap()
        ),
        [200, 300, 400, 500]
    );
    assert_eq!(
        times(store.observations(&q(|q| q.limit = Some(3))).await.unwrap()),
        [700, 800, 900],
        "the newest, oldest first"
    );
    assert_eq!(
        times(
            store
                .observations(&q(|q| q.codes = vec![VitalCode::Spo2]))
                .await
                .unwrap()
        ),
        Vec::<i64>::new()
    );
    assert_eq!(
        store
            .observations(&ObservationQuery::default())
            .await
            .unwrap()
            .len(),
        11,
        "no patient: everyone's"
    );
}

async fn identifiers_map_once_and_refuse_another_patient(h: &dyn Harness) {
    let store = h.open().await;
    let mrn = "urn:oid:1.2.3";
    assert_eq!(store.patient_by_identifier(mrn, "123").await.unwrap(), None);
    store
        .set_identifier(&pid("p-1"), mrn, "123", Some(&action("identifier.set")))
        .await
        .unwrap();
    // Again to the same patient: nothing changes, nothing is appended.
    store
        .set_identifier(&pid("p-1"), mrn, "123", Some(&action("identifier.again")))
        .await
        .unwrap();
    assert!(matches!(
        store
            .set_identifier(&pid("p-2"), mrn, "123", Some(&action("identifier.taken")))
            .await,
        Err(StoreError::Exists(_))
    ));
    assert_eq!(
        store.patient_by_identifier(mrn, "123").await.unwrap(),
        Some(pid("p-1"))
    );
    // Another system, or another value, is another identifier.
    store
        .set_identifier(&pid("p-2"), "other", "123", None)
        .await
        .unwrap();
    store
        .set_identifier(&pid("p-2"), mrn, "124", None)
        .await
        .unwrap();
    assert_eq!(
        store.patient_by_identifier("other", "123").await.unwrap(),
        Some(pid("p-2"))
    );
    assert_eq!(actions(store.as_ref()).await, ["identifier.set"]);
}

async fn racing_identifiers_have_one_owner(h: &dyn Harness) {
    let stores = [h.open().await, h.open().await];
    for round in 0..10 {
        let value = format!("mrn-{round}");
        let (pa, pb, ra, rb) = (pid("p-a"), pid("p-b"), action("a"), action("b"));
        let (a, b) = tokio::join!(
            stores[0].set_identifier(&pa, "mrn", &value, Some(&ra)),
            stores[1].set_identifier(&pb, "mrn", &value, Some(&rb))
        );
        let owner = stores[0]
            .patient_by_identifier("mrn", &value)
            .await
            .unwrap()
            .unwrap();
        match (a, b) {
            (Ok(()), Err(StoreError::Exists(_))) => assert_eq!(owner, pid("p-a")),
            (Err(StoreError::Exists(_)), Ok(())) => assert_eq!(owner, pid("p-b")),
            other => panic!("round {round}: {other:?}"),
        }
    }
    assert_eq!(actions(stores[1].as_ref()).await.len(), 10);
}

async fn patient_settings_default_and_replace(h: &dyn Harness) {
    let store = h.open().await;
    let p = pid("p-1");
    assert_eq!(
        store.patient_settings(&p).await.unwrap(),
        PatientSettings::default()
    );
    let set = PatientSettings {
        spo2_scale: SpO2Scale::Scale2,
        scale_set_by: Some("t-doctor".into()),
        scale_set_ms: Some(5_000),
        ward: Some("respiratory".into()),
    };
    store
        .set_patient_settings(&p, &set, Some(&action("settings.set")))
        .await
        .unwrap();
    assert_eq!(store.patient_settings(&p).await.unwrap(), set);
    let back = PatientSettings {
        ward: None,
        ..PatientSettings::default()
    };
    store.set_patient_settings(&p, &back, None).await.unwrap();
    assert_eq!(store.patient_settings(&p).await.unwrap(), back);
    assert_eq!(
        store.patient_settings(&pid("p-2")).await.unwrap(),
        PatientSettings::default()
    );
    assert_eq!(actions(store.as_ref()).await, ["settings.set"]);
}

async fn news2_scores_once_per_time_newest_limit(h: &dyn Harness) {
    let store = h.open().await;
    let p = pid("p-1");
    let readings = [
        obs("p-1", VitalCode::RespiratoryRate, 24.0, 0),
        obs("p-1", VitalCode::Spo2, 93.0, 0),
        obs("p-1", VitalCode::HeartRate, 112.0, 0),
    ];
    let mut records = Vec::new();
    for i in 0..5 {
        let news2 = vitals::news2_at(&p, 1_000 * i, &readings, SpO2Scale::Scale1);
        records.push(News2Record {
            news2,
            computed_ms: 1_000 * i + 3,
        });
    }
    for r in &records {
        assert!(store.insert_news2(r).await.unwrap());
    }
    assert!(
        !store.insert_news2(&records[2]).await.unwrap(),
        "the same score again is not new"
    );
    assert_eq!(store.news2_scores(&p, 0, 100).await.unwrap(), records);
    // A moment scored again with other figures (a late arrival) replaces its score.
    let mut rescored = records[2].clone();
    rescored.computed_ms = 99;
    rescored.news2 = vitals::news2_at(&p, 2_000, &readings[..2], SpO2Scale::Scale1);
    assert!(store.insert_news2(&rescored).await.unwrap());
    records[2] = rescored;
    assert_eq!(
        store.news2_scores(&p, 2_000, 100).await.unwrap(),
        records[2..]
    );
    assert_eq!(store.news2_scores(&p, 0, 2).await.unwrap(), records[3..]);
    assert!(
        store
            .news2_scores(&pid("p-2"), 0, 100)
            .await
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// The charts' history (issue 16)

/// A sample of `pool` at `at_ms` whose figures all derive from `n`.
fn sample(pool: &Pool, at_ms: i64, n: u32) -> PoolSample {
    let w = |k: u32| Waiting {
        queued: n + k,
        oldest_wait_ms: i64::from(n) * 1_000 + i64::from(k),
    };
    PoolSample {
        at_ms,
        pool: pool.clone(),
        units: n + 3,
        in_use: n + 1,
        unavailable: n,
        waiting: WaitingByPriority {
            stat: w(0),
            asap: w(1),
            urgent: w(2),
            routine: w(3),
        },
    }
}

fn mri() -> Pool {
    Pool::Equipment("MRI".into())
}

fn cardiology() -> Pool {
    Pool::Department("cardiology".into())
}

async fn pool_samples_once_per_pool_and_interval(h: &dyn Harness) {
    let store = h.open().await;
    assert_eq!(store.insert_pool_samples(&[]).await.unwrap(), 0);
    let minute = 60_000;
    let mut all = Vec::new();
    for i in 0..3 {
        let batch = [
            sample(&mri(), i * minute, i as u32),
            sample(&cardiology(), i * minute, 10 + i as u32),
        ];
        assert_eq!(store.insert_pool_samples(&batch).await.unwrap(), 2);
        all.extend(batch);
    }
    // Ordered by time, then kind (department before equipment), then name.
    all.sort_by_key(|s| {
        (
            s.at_ms,
            matches!(s.pool, Pool::Equipment(_)),
            s.pool.clone(),
        )
    });
    assert_eq!(store.pool_samples(0, 3 * minute, None).await.unwrap(), all);
    // The same interval again, with other figures (a new leader's sample): the first stays.
    let again = [
        sample(&mri(), minute, 99),
        sample(&cardiology(), 3 * minute, 5),
    ];
    assert_eq!(store.insert_pool_samples(&again).await.unwrap(), 1);
    all.push(again[1].clone());
    assert_eq!(
        store.pool_samples(0, i64::MAX, None).await.unwrap(),
        all,
        "a stored sample is kept as it is"
    );
    // since inclusive, until exclusive; one pool.
    let mri_only: Vec<_> = all
        .iter()
        .filter(|s| s.pool == mri() && s.at_ms >= minute)
        .cloned()
        .collect();
    assert_eq!(mri_only.len(), 2);
    assert_eq!(
        store
            .pool_samples(minute, 3 * minute, Some(&mri()))
            .await
            .unwrap(),
        mri_only
    );
    assert_eq!(
        store
            .pool_samples(minute, 2 * minute, Some(&cardiology()))
            .await
            .unwrap(),
        [all[2].clone()]
    );
    // A pool of the other kind with the same name is another pool.
    assert!(
        store
            .pool_samples(0, i64::MAX, Some(&Pool::Department("MRI".into())))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .pool_samples(4 * minute, 5 * minute, None)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn racing_leaders_store_one_sample_per_pool_and_interval(h: &dyn Harness) {
    // An old leader that has not yet noticed it lost its term and the new one, on two
    // instances, write the same intervals at once.
    let (a, b) = (h.open().await, h.open().await);
    for round in 0..10 {
        let at = round * 60_000;
        let ours = [sample(&mri(), at, 1), sample(&cardiology(), at, 1)];
        let theirs = [sample(&cardiology(), at, 2), sample(&mri(), at, 2)];
        let (x, y) = tokio::join!(a.insert_pool_samples(&ours), b.insert_pool_samples(&theirs));
        assert_eq!(x.unwrap() + y.unwrap(), 2, "round {round}");
    }
    let stored = a.pool_samples(0, i64::MAX, None).await.unwrap();
    assert_eq!(stored.len(), 20);
    for pair in stored.chunks(2) {
        assert_eq!(pair[0].at_ms, pair[1].at_ms);
        assert_ne!(pair[0].pool, pair[1].pool);
    }
}

async fn pool_samples_are_pruned_by_age(h: &dyn Harness) {
    let store = h.open().await;
    let batch: Vec<_> = (0..5).map(|i| sample(&mri(), i * 1_000, 0)).collect();
    store.insert_pool_samples(&batch).await.unwrap();
    assert_eq!(store.prune_pool_samples(0).await.unwrap(), 0);
    assert_eq!(store.prune_pool_samples(2_000).await.unwrap(), 2);
    assert_eq!(store.prune_pool_samples(2_000).await.unwrap(), 0);
    assert_eq!(
        store.pool_samples(0, i64::MAX, None).await.unwrap(),
        batch[2..]
    );
    // A pruned interval may be written again (nothing remembers it).
    assert_eq!(store.insert_pool_samples(&batch[..1]).await.unwrap(), 1);
}

// ---------------------------------------------------------------------------------------------
// Reading back, and more than one instance

/// A NUL in text: SQLite keeps it, PostgreSQL's `text` cannot (SQLSTATE 22021). Either is
/// allowed, but a refusal is `Invalid` (the value's fault, a 4xx), never `Backend` (a 500),
/// and refuses nothing else: the store works on afterwards.
async fn a_nul_in_text_is_kept_or_refused_as_invalid_never_a_failure(h: &dyn Harness) {
    let store = h.open().await;
    fn kept_or_invalid<T: std::fmt::Debug>(what: &str, r: Result<T, StoreError>) {
        assert!(
            matches!(r, Ok(_) | Err(StoreError::Invalid(_))),
            "{what}: {r:?}"
        );
    }
    let named = Patient {
        id: pid("p-nul"),
        name: "Ann\0Example".into(),
        birth_date: None,
    };
    kept_or_invalid("patient name", store.upsert_patient(&named).await);
    kept_or_invalid(
        "order reason",
        store
            .insert_order(
                &Order {
                    reason: "a\0b".into(),
                    ..order("o-nul", "p-1", 10)
                },
                "a",
                Some(&action("order.create")),
            )
            .await,
    );
    kept_or_invalid(
        "token label",
        store
            .insert_token(
                &TokenRecord {
                    label: "lap\0top".into(),
                    ..token("t-nul", "nul", 1)
                },
                None,
            )
            .await,
    );
    kept_or_invalid(
        "audit query by actor",
        store
            .audit(&AuditQuery {
                actor: Some("a\0b".into()),
                ..AuditQuery::default()
            })
            .await,
    );
    // The store works on.
    store
        .upsert_patient(&Patient {
            id: pid("p-2"),
            name: "Ben".into(),
            birth_date: None,
        })
        .await
        .unwrap();
    assert_eq!(
        store.patient(&pid("p-2")).await.unwrap().unwrap().name,
        "Ben"
    );
}

async fn corrupt_values_are_reported_as_corrupt(h: &dyn Harness) {
    let store = h.open().await;
    for i in 1..=2 {
        store
            .insert_order(&order(&format!("o-{i}"), "p-1", i), "a", None)
            .await
            .unwrap();
    }
    store
        .insert_token(&token("t-1", "aa", 1), None)
        .await
        .unwrap();
    store
        .set_patient_settings(&pid("p-1"), &PatientSettings::default(), None)
        .await
        .unwrap();
    h.sql(
        "UPDATE orders SET state = 'teleported' WHERE id = 'o-1';
         UPDATE orders SET capabilities = '{oops' WHERE id = 'o-2';
         UPDATE transitions SET to_state = 'lost' WHERE order_id = 'o-2';
         UPDATE tokens SET patient = 'a/b';
         UPDATE patient_settings SET spo2_scale = 'scale9';",
    )
    .await;
    let corrupt = |r: Result<(), StoreError>, needle: &str| match r {
        Err(StoreError::Corrupt(m)) => assert!(m.contains(needle), "{m}"),
        other => panic!("expected Corrupt mentioning {needle}, got {other:?}"),
    };
    corrupt(store.order(&oid("o-1")).await.map(|_| ()), "teleported");
    corrupt(store.orders_of(&pid("p-1")).await.map(|_| ()), "teleported");
    corrupt(store.order(&oid("o-2")).await.map(|_| ()), "capabilities");
    corrupt(store.transitions(&oid("o-2")).await.map(|_| ()), "lost");
    corrupt(store.token_by_hash("aa").await.map(|_| ()), "t-1");
    corrupt(
        store.patient_settings(&pid("p-1")).await.map(|_| ()),
        "scale9",
    );
    // The rest of the store still works.
    assert_eq!(store.transitions(&oid("o-1")).await.unwrap().len(), 1);
}

async fn a_second_instance_sees_every_write_and_reopening_keeps_it(h: &dyn Harness) {
    let (a, b) = (h.open().await, h.open().await);
    a.insert_order(&order("o-1", "p-1", 1), "a", Some(&action("order.create")))
        .await
        .unwrap();
    assert!(
        b.transition(
            &step(
                "o-1",
                OrderState::Queued,
                OrderState::Called,
                2,
                Some("CT-1")
            ),
            None
        )
        .await
        .unwrap()
    );
    assert_eq!(
        a.order(&oid("o-1")).await.unwrap().unwrap().state,
        OrderState::Called
    );
    drop((a, b));
    let again = h.open().await;
    assert_eq!(again.transitions(&oid("o-1")).await.unwrap().len(), 2);
    assert_eq!(actions(again.as_ref()).await, ["order.create"]);
    let _ = h.name();
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only

mod postgres_only {
    use super::*;

    async fn fresh() -> Option<Postgres> {
        let h = Postgres::from_env().await;
        if h.is_none() {
            skip("postgres_only");
        }
        h
    }

    async fn schema_version(h: &Postgres) -> i64 {
        let c = pg_client(&h.url).await;
        c.query_one("SELECT version FROM medkeeper_schema", &[])
            .await
            .unwrap()
            .get(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn instances_starting_at_once_migrate_once() {
        let Some(h) = fresh().await else { return };
        let opens: Vec<_> = (0..6)
            .map(|_| {
                let url = h.url.clone();
                tokio::spawn(async move {
                    PostgresStore::connect(&url, PostgresOptions::default()).await
                })
            })
            .collect();
        for o in opens {
            o.await.unwrap().unwrap();
        }
        assert_eq!(
            schema_version(&h).await,
            medkeeper_hospital::store::POSTGRES_MIGRATIONS.len() as i64
        );
        h.drop_schema().await;
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let Some(h) = fresh().await else { return };
        drop(h.store().await);
        h.sql("UPDATE medkeeper_schema SET version = 99").await;
        match PostgresStore::connect(&h.url, PostgresOptions::default()).await {
            Err(StoreError::Backend(m)) => assert!(m.contains("99"), "{m}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        h.drop_schema().await;
    }

    /// A database a v1 build left (only the first script run) is brought to the newest
    /// version and keeps its data.
    #[tokio::test]
    async fn an_old_schema_is_migrated_and_keeps_its_data() {
        let Some(h) = fresh().await else { return };
        let v1 = medkeeper_hospital::store::POSTGRES_MIGRATIONS[0];
        h.sql(&format!(
            "CREATE TABLE medkeeper_schema (id INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
                                            version BIGINT NOT NULL);
             INSERT INTO medkeeper_schema VALUES (1, 1);
             {v1}
             INSERT INTO patients (id, name, birth_date) VALUES ('p-1', 'Ada', NULL);"
        ))
        .await;
        let store = h.store().await;
        assert_eq!(
            store.patient(&pid("p-1")).await.unwrap().unwrap().name,
            "Ada"
        );
        store
            .insert_token(&token("t-1", "aa", 1), None)
            .await
            .unwrap();
        assert_eq!(
            schema_version(&h).await,
            medkeeper_hospital::store::POSTGRES_MIGRATIONS.len() as i64
        );
        h.drop_schema().await;
    }

    #[tokio::test]
    async fn the_audit_trail_refuses_update_and_delete() {
        let Some(h) = fresh().await else { return };
        let store = h.store().await;
        store
            .append_audit(&audit_rec(1, "cli", Some("p-1")))
            .await
            .unwrap();
        let c = pg_client(&h.url).await;
        for sql in [
            "UPDATE audit SET actor = 'someone else'",
            "DELETE FROM audit",
        ] {
            let e = c.batch_execute(sql).await.unwrap_err();
            let db = e.as_db_error().expect("a database error");
            assert!(db.message().contains("append-only"), "{}", db.message());
        }
        assert_eq!(actions(&store).await, ["patient.read"]);
        h.drop_schema().await;
    }

    /// `medkeeper store migrate`'s copy: everything a SQLite store holds, read back the same
    /// through the trait, audit sequence numbers included; refused into a store with data.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_sqlite_store_is_copied_whole() {
        let Some(h) = fresh().await else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clinical.sqlite");
        let src = SqliteStore::open(&path).unwrap();
        src.upsert_patient(&Patient {
            id: pid("p-1"),
            name: "Ann O'Brien".into(),
            birth_date: Some("1970-01-31".into()),
        })
        .await
        .unwrap();
        src.append_audit(&audit_rec(1, "cli", None)).await.unwrap();
        src.insert_order(&order("o-1", "p-1", 10), "a", Some(&action("order.create")))
            .await
            .unwrap();
        assert!(
            src.transition(
                &step(
                    "o-1",
                    OrderState::Queued,
                    OrderState::Called,
                    20,
                    Some("MRI-1")
                ),
                Some(&action("order.call"))
            )
            .await
            .unwrap()
        );
        src.put_result(&ExamResult {
            order: oid("o-1"),
            text: "draft".into(),
            at_ms: 30,
            actor: "dr".into(),
        })
        .await
        .unwrap();
        src.insert_token(&token("t-1", "aa", 1), None)
            .await
            .unwrap();
        src.set_reconciled_until(77).await.unwrap();
        src.record_alarm_events(&[event("r@s@1", 0, AlarmEventKind::Raised, 5)])
            .await
            .unwrap();
        let readings = [
            obs("p-1", VitalCode::Temperature, 36.6, 100),
            obs("p-1", VitalCode::Spo2, 0.1 + 0.2, 100),
        ];
        src.insert_observations(&readings, &raw("MSH|1\r"), None)
            .await
            .unwrap();
        src.set_identifier(&pid("p-1"), "mrn", "1", None)
            .await
            .unwrap();
        src.set_patient_settings(
            &pid("p-1"),
            &PatientSettings {
                spo2_scale: SpO2Scale::Scale2,
                ..PatientSettings::default()
            },
            None,
        )
        .await
        .unwrap();
        src.insert_news2(&News2Record {
            news2: vitals::news2_at(&pid("p-1"), 100, &readings, SpO2Scale::Scale2),
            computed_ms: 101,
        })
        .await
        .unwrap();

        let dst = h.store().await;
        let copies = dst.import_sqlite(&path).await.unwrap();
        assert!(copies.iter().all(|c| c.source == c.target), "{copies:?}");
        assert_eq!(
            copies.iter().map(|c| c.table).collect::<Vec<_>>(),
            medkeeper_hospital::store::TABLES
        );
        let dst: Arc<dyn ClinicalStore> = Arc::new(dst);
        let all = AuditQuery {
            limit: Some(1_000),
            ..AuditQuery::default()
        };
        assert_eq!(
            dst.audit(&all).await.unwrap(),
            src.audit(&all).await.unwrap()
        );
        assert_eq!(
            dst.order(&oid("o-1")).await.unwrap(),
            src.order(&oid("o-1")).await.unwrap()
        );
        assert_eq!(
            dst.transitions(&oid("o-1")).await.unwrap(),
            src.transitions(&oid("o-1")).await.unwrap()
        );
        assert_eq!(
            dst.patient(&pid("p-1")).await.unwrap(),
            src.patient(&pid("p-1")).await.unwrap()
        );
        assert_eq!(
            dst.result(&oid("o-1")).await.unwrap(),
            src.result(&oid("o-1")).await.unwrap()
        );
        assert_eq!(dst.tokens().await.unwrap(), src.tokens().await.unwrap());
        assert_eq!(dst.reconciled_until().await.unwrap(), Some(77));
        let q = AlarmQuery::default();
        assert_eq!(
            dst.alarm_events(&q).await.unwrap(),
            src.alarm_events(&q).await.unwrap()
        );
        let q = ObservationQuery::default();
        assert_eq!(
            dst.observations(&q).await.unwrap(),
            src.observations(&q).await.unwrap()
        );
        assert_eq!(
            dst.patient_by_identifier("mrn", "1").await.unwrap(),
            Some(pid("p-1"))
        );
        assert_eq!(
            dst.patient_settings(&pid("p-1")).await.unwrap(),
            src.patient_settings(&pid("p-1")).await.unwrap()
        );
        assert_eq!(
            dst.news2_scores(&pid("p-1"), 0, 10).await.unwrap(),
            src.news2_scores(&pid("p-1"), 0, 10).await.unwrap()
        );
        // New rows continue the copied sequences.
        let next = dst.append_audit(&audit_rec(9, "cli", None)).await.unwrap();
        assert!(next > src.audit(&all).await.unwrap().last().unwrap().seq);
        dst.insert_observations(
            &[obs("p-1", VitalCode::HeartRate, 70.0, 200)],
            &raw("MSH|2\r"),
            None,
        )
        .await
        .unwrap();
        // Only into an empty store.
        let again = PostgresStore::connect(&h.url, PostgresOptions::default())
            .await
            .unwrap();
        assert!(matches!(
            again.import_sqlite(&path).await,
            Err(StoreError::Backend(m)) if m.contains("already holds data")
        ));
        h.drop_schema().await;
    }

    /// A NUL SQLite kept cannot be copied: the error names the table, the row's key and the
    /// column, so the operator can find and fix the row (it named none of them).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_nul_refused_by_the_copy_names_its_table_row_and_column() {
        let Some(h) = fresh().await else { return };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clinical.sqlite");
        let src = SqliteStore::open(&path).unwrap();
        src.upsert_patient(&Patient {
            id: pid("p-nul"),
            name: "Ann\0Example".into(),
            birth_date: None,
        })
        .await
        .unwrap();
        let dst = h.store().await;
        match dst.import_sqlite(&path).await {
            Err(StoreError::Corrupt(m)) => {
                for needle in ["table patients", "id=\"p-nul\"", "column name", "NUL"] {
                    assert!(m.contains(needle), "{needle:?} in {m}");
                }
                assert!(!m.contains("Example"), "a clinical value shown: {m}");
            }
            other => panic!("{other:?}"),
        }
        h.drop_schema().await;
    }

    /// A PostgreSQL of the test's own (scripts/postgres), crashed (`-m immediate`) and
    /// started again under a workload of orders moving with their audit records: calls fail
    /// with `Backend` while it is down, succeed again by themselves once it is back, and
    /// nothing is half-written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres_restarted_under_a_workload() {
        if pg_url().is_none() {
            skip("postgres_restarted_under_a_workload");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/postgres");
        let pg = |args: &[&str]| {
            let out = std::process::Command::new(script)
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "scripts/postgres {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        };
        let dir_s = dir.path().to_str().unwrap().to_string();
        let url = pg(&["start", &dir_s]);
        struct Stop(String, &'static str);
        impl Drop for Stop {
            fn drop(&mut self) {
                let _ = std::process::Command::new(self.1)
                    .args(["stop", &self.0, "immediate"])
                    .output();
            }
        }
        let _stop = Stop(dir_s.clone(), script);
        let store = Arc::new(
            PostgresStore::connect(
                &url,
                PostgresOptions {
                    connect_timeout: Duration::from_secs(2),
                    acquire_timeout: Duration::from_secs(2),
                    ..PostgresOptions::default()
                },
            )
            .await
            .unwrap(),
        );
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..3)
            .map(|w| {
                let store = Arc::clone(&store);
                let stop = Arc::clone(&stop);
                tokio::spawn(async move {
                    let (mut ok, mut errors) = (0, Vec::new());
                    let mut i = 0;
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        i += 1;
                        let id = format!("o-{w}-{i}");
                        let created = store
                            .insert_order(&order(&id, "p-1", i), "a", Some(&action("order.create")))
                            .await;
                        let called = match created {
                            Ok(()) => {
                                let t = step(
                                    &id,
                                    OrderState::Queued,
                                    OrderState::Called,
                                    i + 1,
                                    Some("MRI-1"),
                                );
                                store.transition(&t, Some(&action("order.call"))).await
                            }
                            Err(e) => Err(e),
                        };
                        match called {
                            Ok(_) => ok += 1,
                            Err(e) => {
                                errors.push(e);
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                        }
                    }
                    (ok, errors)
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(500)).await;
        pg(&["stop", &dir_s, "immediate"]);
        // Down: calls fail, quickly, as Unavailable (the API's 503: retry).
        let t0 = std::time::Instant::now();
        let down = store.order(&oid("o-0-1")).await;
        assert!(
            matches!(&down, Err(StoreError::Unavailable(m)) if m.contains("PostgreSQL")),
            "{down:?}"
        );
        assert!(t0.elapsed() < Duration::from_secs(5));
        tokio::time::sleep(Duration::from_millis(500)).await;
        pg(&["start", &dir_s]);
        // Back: calls succeed again by themselves.
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if store.order(&oid("o-0-1")).await.is_ok() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "no recovery in 15 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut total_ok = 0;
        let mut total_errors = 0;
        for w in workers {
            let (ok, errors) = w.await.unwrap();
            total_ok += ok;
            total_errors += errors.len();
            for e in errors {
                // Unavailable (connection refused or lost, the server starting up), or a
                // transaction cut short by the shutdown.
                assert!(
                    matches!(&e, StoreError::Unavailable(m) | StoreError::Backend(m)
                        if m.contains("PostgreSQL")),
                    "{e:?}"
                );
            }
        }
        assert!(
            total_ok > 0 && total_errors > 0,
            "{total_ok} {total_errors}"
        );
        // Nothing half-written: every stored order has its creation transition and record;
        // every called one its transition and record; no record without its change.
        let orders = store.orders_in(&OrderState::ALL).await.unwrap();
        let audit = store
            .audit(&AuditQuery {
                limit: Some(10_000),
                ..AuditQuery::default()
            })
            .await
            .unwrap();
        let count = |a: &str| audit.iter().filter(|r| r.action == a).count();
        let called = orders
            .iter()
            .filter(|o| o.state == OrderState::Called)
            .count();
        assert_eq!(count("order.create"), orders.len());
        assert_eq!(count("order.call"), called);
        for o in &orders {
            let history = store.transitions(&o.id).await.unwrap();
            let expected = if o.state == OrderState::Called { 2 } else { 1 };
            assert_eq!(history.len(), expected, "{}", o.id);
            assert_eq!(history.last().unwrap().to, o.state);
        }
        // And the store takes new work at once.
        store
            .insert_order(&order("o-after", "p-1", 1), "a", None)
            .await
            .unwrap();
    }
}
