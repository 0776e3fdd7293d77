//! Loading the hospital configuration into the tree: idempotent, never disturbing live unit
//! state, reporting what the file no longer declares. The cases take any [`Session`]; they run
//! on the embedded engine, and on ZooKeeper when `MEDKEEPER_ZK_CONNECT` is set.

use std::collections::BTreeSet;
use std::time::Duration;

use medkeeper_coord::{CreateMode, CreateOptions, Session, SessionExt};
use medkeeper_hospital::config::{
    ConfigNode, HospitalConfig, PoolConfig, PoolNode, UnitConfig, load,
};
use medkeeper_hospital::tree::{self, UnitNode};
use medkeeper_hospital::{OrderId, PatientId, Pool, UnitStatus};
use medkeeper_testkit::{Backend, Embedded, Zk};

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

async fn unit(session: &dyn Session, path: &str) -> UnitNode {
    let (data, _) = session.get_data(path).await.expect("unit node");
    tree::from_json("unit", &data).expect("a unit")
}

/// Every node `load` maintains for `config`.
fn maintained(config: &HospitalConfig) -> BTreeSet<String> {
    let mut paths: BTreeSet<String> = [
        tree::EQUIPMENT,
        tree::DOCTORS,
        tree::PATIENTS,
        tree::MEMBERS,
        tree::ALARMS,
        tree::ESCALATIONS,
        tree::CONFIG,
    ]
    .into_iter()
    .map(String::from)
    .collect();
    for pool in &config.pools {
        paths.insert(tree::pool_path(&pool.pool));
        for u in &pool.units {
            paths.insert(tree::unit_path(&pool.pool, &u.name));
        }
    }
    paths
}

/// Loading twice: the second load changes nothing, and the tree holds the configuration.
/// Works on a tree that already holds a hospital (a shared ZooKeeper).
async fn reload_changes_nothing(session: &dyn Session) {
    let demo = HospitalConfig::demo();
    let first = load(session, &demo).await.expect("first load");
    let touched = first.created.len() + first.updated.len() + first.unchanged;
    assert_eq!(touched, maintained(&demo).len(), "{first:?}");

    let second = load(session, &demo).await.expect("second load");
    assert!(second.is_unchanged(), "{second:?}");
    assert_eq!(second.unchanged, touched);
    assert_eq!(second.orphaned, first.orphaned);

    let (data, _) = session.get_data(tree::CONFIG).await.unwrap();
    let node: ConfigNode = tree::from_json("config", &data).unwrap();
    assert_eq!(node, ConfigNode::of(&demo));
    assert_eq!(node.targets(), demo.targets);
    for pool in &demo.pools {
        let (data, _) = session
            .get_data(&tree::pool_path(&pool.pool))
            .await
            .unwrap();
        let node: PoolNode = tree::from_json("pool", &data).unwrap();
        assert_eq!(node, PoolNode::of(pool));
        for u in &pool.units {
            let node = unit(session, &tree::unit_path(&pool.pool, &u.name)).await;
            assert_eq!(node.capabilities, u.capabilities);
        }
    }
    for dir in [
        tree::PATIENTS,
        tree::MEMBERS,
        tree::ALARMS,
        tree::ESCALATIONS,
    ] {
        assert!(session.exists(dir).await.unwrap().is_some(), "{dir}");
    }
}

/// A reload with changed capabilities keeps every unit's live state; units the file drops stay
/// and are reported, as are units of pools the file does not declare. `tag` makes the pools
/// unique, so the case can share a server.
async fn reload_keeps_live_state(session: &dyn Session, tag: &str) {
    let kind = Pool::Equipment(format!("CFG-{tag}"));
    let unit_config = |name: &str, caps: &[&str]| UnitConfig {
        name: name.into(),
        capabilities: strings(caps),
    };
    let mut config = HospitalConfig::demo();
    config.pools.push(PoolConfig {
        pool: kind.clone(),
        exam_duration: Duration::from_secs(20 * 60),
        units: vec![
            unit_config("U-1", &["contrast"]),
            unit_config("U-2", &["3T"]),
            unit_config("U-3", &[]),
        ],
        reserve_for_stat: false,
    });
    let report = load(session, &config).await.expect("load");
    let u1 = tree::unit_path(&kind, "U-1");
    let u2 = tree::unit_path(&kind, "U-2");
    let u3 = tree::unit_path(&kind, "U-3");
    for path in [&u1, &u2, &u3] {
        assert!(report.created.contains(path), "{report:?}");
        assert_eq!(unit(session, path).await.status, UnitStatus::Available);
    }

    // U-1 is occupied by an order, U-2 is in maintenance.
    let order = OrderId::generate();
    let patient = PatientId::generate();
    let mut occupied = unit(session, &u1).await;
    occupied.status = UnitStatus::InUse;
    occupied.order = Some(order.clone());
    occupied.patient = Some(patient.clone());
    occupied.since_ms = 1_234;
    session
        .set_data(&u1, &tree::to_json(&occupied), -1)
        .await
        .unwrap();
    let mut maintenance = unit(session, &u2).await;
    maintenance.status = UnitStatus::Maintenance;
    session
        .set_data(&u2, &tree::to_json(&maintenance), -1)
        .await
        .unwrap();
    // The pool's lock and queue are not units; a pool the file does not declare is orphaned.
    let persistent = CreateOptions::new(CreateMode::Persistent);
    for child in ["lock", "queue"] {
        session
            .create_all(
                &format!("{}/{child}", tree::pool_path(&kind)),
                b"",
                &persistent,
            )
            .await
            .unwrap();
    }
    let retired = Pool::Department(format!("retired-{tag}"));
    let retired_doctor = tree::unit_path(&retired, "dr-old");
    session
        .create_all(&retired_doctor, &tree::to_json(&occupied), &persistent)
        .await
        .unwrap();

    // The new file: U-1 gains a capability, U-2 changes one, U-3 is gone.
    let pool = config.pools.last_mut().unwrap();
    pool.units = vec![
        unit_config("U-1", &["contrast", "spectroscopy"]),
        unit_config("U-2", &["1.5T"]),
    ];
    let report = load(session, &config).await.expect("reload");
    let ours = |paths: &[String]| -> Vec<String> {
        paths.iter().filter(|p| p.contains(tag)).cloned().collect()
    };
    assert_eq!(ours(&report.created), Vec::<String>::new(), "{report:?}");
    // The pool node follows its units' capabilities.
    assert_eq!(
        ours(&report.updated),
        [tree::pool_path(&kind), u1.clone(), u2.clone()],
        "{report:?}"
    );
    assert_eq!(
        ours(&report.orphaned),
        [retired_doctor.clone(), u3.clone()],
        "{report:?}"
    );

    let now = unit(session, &u1).await;
    assert_eq!(now.status, UnitStatus::InUse);
    assert_eq!(now.order, Some(order));
    assert_eq!(now.patient, Some(patient));
    assert_eq!(now.since_ms, 1_234);
    assert_eq!(now.capabilities, strings(&["contrast", "spectroscopy"]));
    let now = unit(session, &u2).await;
    assert_eq!(now.status, UnitStatus::Maintenance);
    assert_eq!(now.capabilities, strings(&["1.5T"]));
    // Orphans are never deleted.
    assert!(session.exists(&u3).await.unwrap().is_some());
    assert!(session.exists(&retired_doctor).await.unwrap().is_some());

    // And a third load changes nothing.
    let report = load(session, &config).await.expect("third load");
    assert!(report.is_unchanged(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_loads_into_an_empty_tree() {
    let backend = Embedded::new();
    let session = backend.session().await;
    let demo = HospitalConfig::demo();
    let report = load(session.as_ref(), &demo).await.expect("load");
    let created: BTreeSet<String> = report.created.iter().cloned().collect();
    assert_eq!(created, maintained(&demo));
    assert_eq!(report.created.len(), created.len(), "created once each");
    assert!(report.updated.is_empty());
    assert_eq!(report.unchanged, 0);
    assert!(report.orphaned.is_empty());

    let mut kinds = session.get_children(tree::EQUIPMENT).await.unwrap();
    kinds.sort();
    assert_eq!(kinds, ["CT", "MRI", "XRAY"]);
    let mut ct = session
        .get_children(&tree::pool_path(&Pool::Equipment("CT".into())))
        .await
        .unwrap();
    ct.sort();
    assert_eq!(ct, ["CT-1", "CT-2", "CT-3"]);
    let mut departments = session.get_children(tree::DOCTORS).await.unwrap();
    departments.sort();
    assert_eq!(departments, ["cardiology", "neurology"]);
    let mri1 = unit(session.as_ref(), "/medical/resources/equipment/MRI/MRI-1").await;
    assert_eq!(mri1.status, UnitStatus::Available);
    assert_eq!(mri1.capabilities, strings(&["3T", "contrast"]));
    assert_eq!(mri1.order, None);
    assert_eq!(mri1.patient, None);
    assert!(mri1.since_ms > 0);
    let doctor = unit(
        session.as_ref(),
        "/medical/resources/doctors/neurology/dr-neuro-1",
    )
    .await;
    assert_eq!(doctor.status, UnitStatus::Available);

    reload_changes_nothing(session.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_nothing_embedded() {
    let backend = Embedded::new();
    reload_changes_nothing(backend.session().await.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_live_state_embedded() {
    let backend = Embedded::new();
    reload_keeps_live_state(backend.session().await.as_ref(), "embedded").await;
}

/// Two instances loading the same file at once: both succeed, each node is created once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_loads_create_each_node_once() {
    let backend = Embedded::new();
    let (a, b) = (backend.session().await, backend.session().await);
    let demo = HospitalConfig::demo();
    let (ra, rb) = tokio::join!(load(a.as_ref(), &demo), load(b.as_ref(), &demo));
    let (ra, rb) = (ra.expect("load a"), rb.expect("load b"));
    let mut created: Vec<String> = ra.created.iter().chain(&rb.created).cloned().collect();
    created.sort();
    let expected: Vec<String> = maintained(&demo).into_iter().collect();
    assert_eq!(created, expected);
    assert!(ra.updated.is_empty() && rb.updated.is_empty());
    assert!(load(a.as_ref(), &demo).await.unwrap().is_unchanged());
}

/// The same cases on ZooKeeper (`MEDKEEPER_ZK_CONNECT`), sharing the server's `/medical`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zk_load() {
    let Some(zk) = Zk::from_env() else {
        medkeeper_testkit::skip("zk_load");
        return;
    };
    let session = zk.session().await;
    let tag = format!(
        "zk-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    reload_changes_nothing(session.as_ref()).await;
    reload_keeps_live_state(session.as_ref(), &tag).await;
    session.close().await;
}
