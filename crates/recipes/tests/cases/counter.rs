//! The shared counter: contending increments sum exactly, compare-and-set, and following
//! changes.

use std::collections::BTreeSet;
use std::time::Duration;

use medkeeper_coord::SessionExt;
use medkeeper_recipes::Error;
use medkeeper_recipes::counter::Counter;

use medkeeper_testkit::Backend;

crate::backend_tests!(
    contending_increments_sum_exactly,
    compare_and_set_and_watch,
    malformed_counter_is_reported,
);

async fn contending_increments_sum_exactly(b: &dyn Backend) {
    const TASKS: usize = 8;
    const ADDS: usize = 50;
    let path = format!("{}/tickets", b.base("counter"));
    let mut sessions = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let s = b.session().await;
        sessions.push(s.clone());
        let counter = Counter::new(s, &path).unwrap();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::with_capacity(ADDS);
            for _ in 0..ADDS {
                seen.push(counter.add(1).await.unwrap());
            }
            seen
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        for v in t.await.unwrap() {
            assert!(all.insert(v), "value {v} handed out twice");
        }
    }
    let total = (TASKS * ADDS) as i64;
    assert_eq!(all, (1..=total).collect::<BTreeSet<_>>());
    let counter = Counter::new(sessions[0].clone(), &path).unwrap();
    assert_eq!(counter.get().await.unwrap(), total);
    assert_eq!(counter.add(-total).await.unwrap(), 0);
    for s in sessions {
        s.close().await;
    }
}

async fn compare_and_set_and_watch(b: &dyn Backend) {
    let path = format!("{}/beds", b.base("counter-cas"));
    let s1 = b.session().await;
    let s2 = b.session().await;
    let c1 = Counter::new(s1.clone(), &path).unwrap();
    let c2 = Counter::new(s2.clone(), &path).unwrap();
    assert_eq!(c1.get().await.unwrap(), 0, "a missing counter is 0");
    let v = c1.read().await.unwrap();
    assert_eq!(v.value, 0);
    let set = c1.compare_and_set(v.version, 10).await.unwrap().unwrap();
    assert_eq!(set.value, 10);
    assert_eq!(set.version, v.version + 1);
    assert_eq!(
        c2.compare_and_set(v.version, 11).await.unwrap(),
        None,
        "stale version"
    );
    assert_eq!(c2.get().await.unwrap(), 10);
    assert!(matches!(
        c2.compare_and_set(-1, 1).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c2.add(i64::MAX).await,
        Err(Error::InvalidArgument(_))
    ));

    let mut follow = c2.watch().await.unwrap();
    assert_eq!(follow.current().unwrap().value, 10);
    let next = tokio::spawn(async move { follow.next().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(c1.add(5).await.unwrap(), 15);
    let changed = tokio::time::timeout(Duration::from_secs(10), next)
        .await
        .expect("the change is seen")
        .unwrap();
    assert_eq!(changed.value, 15);
    s1.close().await;
    s2.close().await;
}

async fn malformed_counter_is_reported(b: &dyn Backend) {
    let path = format!("{}/odd", b.base("counter-bad"));
    let s = b.session().await;
    s.create_all(
        &path,
        b"abc",
        &medkeeper_coord::CreateOptions::new(medkeeper_coord::CreateMode::Persistent),
    )
    .await
    .unwrap();
    let c = Counter::new(s.clone(), &path).unwrap();
    assert!(matches!(c.get().await, Err(Error::Malformed { .. })));
    assert!(matches!(c.add(1).await, Err(Error::Malformed { .. })));
    assert!(Counter::new(s.clone(), "/").is_err());
    assert!(Counter::new(s.clone(), "relative").is_err());
    s.close().await;
}
