//! Leases on named units: never more than N units in use and never one unit in two leases
//! under contention, all-or-nothing takes of k units, expiry freeing units, cancellation and
//! release leaving nothing behind.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use medkeeper_coord::{CreateMode, CreateOptions, Op, SessionExt};
use medkeeper_recipes::{Error, HoldState, LostReason, Semaphore};

use medkeeper_testkit::{Backend, Faulty};

crate::backend_tests!(
    never_overbooks_and_leases_name_distinct_units,
    takes_k_units_atomically_without_deadlock,
    expired_holder_frees_units_for_a_waiter,
    dropped_acquire_leaves_no_waiter_and_no_lease,
    release_and_drop_free_units,
    lost_multi_reply_adopts_the_units,
);

fn units(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("MRI-{i}")).collect()
}

/// Waits (at most 5 s) until `f` holds.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn never_overbooks_and_leases_name_distinct_units(b: &dyn Backend) {
    let dir = b.base("sem-excl");
    // Which contender each unit is in use by, as the contenders themselves record it.
    let in_use: Arc<std::sync::Mutex<HashMap<String, usize>>> = Default::default();
    let mut tasks = Vec::new();
    let mut sessions = Vec::new();
    for i in 0..8 {
        let s = b.session().await;
        sessions.push(s.clone());
        let sem = Semaphore::new(s, &dir, units(3)).unwrap();
        let in_use = in_use.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for round in 0..4 {
                let k = 1 + (i + round) % 2;
                let lease = sem.acquire(k).await.unwrap();
                let got = lease.units().to_vec();
                assert_eq!(got.len(), k);
                {
                    let mut map = in_use.lock().unwrap();
                    for u in &got {
                        assert!(
                            map.insert(u.clone(), i).is_none(),
                            "{u} in two leases at once"
                        );
                    }
                    assert!(map.len() <= 3, "more than N units in use");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                {
                    let mut map = in_use.lock().unwrap();
                    for u in &got {
                        assert_eq!(map.remove(u), Some(i));
                    }
                }
                seen.push(got);
                lease.release().await.unwrap();
            }
            seen
        }));
    }
    let mut leases = 0;
    for t in tasks {
        for got in tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("no deadlock")
            .unwrap()
        {
            let mut distinct = got.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), got.len(), "a lease names a unit twice");
            assert!(got.iter().all(|u| units(3).contains(u)));
            leases += 1;
        }
    }
    assert_eq!(leases, 32);
    let sem = Semaphore::new(sessions[0].clone(), &dir, units(3)).unwrap();
    sessions[0].sync(&dir).await.unwrap();
    assert_eq!(sem.free_units().await.unwrap(), units(3));
    assert!(sem.waiters().await.unwrap().is_empty());
    for s in sessions {
        s.close().await;
    }
}

async fn takes_k_units_atomically_without_deadlock(b: &dyn Backend) {
    let dir = b.base("sem-atomic");
    let (sa, sb, sc) = (b.session().await, b.session().await, b.session().await);
    let a = Semaphore::new(sa.clone(), &dir, units(3)).unwrap();
    let bb = Semaphore::new(sb.clone(), &dir, units(3)).unwrap();
    let c = Semaphore::new(sc.clone(), &dir, units(3)).unwrap();

    // C holds one unit; A takes the other two; B, wanting two, must wait with nothing held.
    let lc = c.acquire(1).await.unwrap();
    let la = a.acquire(2).await.unwrap();
    assert!(la.units().iter().all(|u| !lc.units().contains(u)));
    let waiter = tokio::spawn(async move { bb.acquire(2).await.map(|l| (bb, l)) });
    eventually("B waits in line", || async {
        a.waiters().await.unwrap().len() == 1
    })
    .await;
    lc.release().await.unwrap();
    // One unit is free, B wants two: it takes none (no partial hold).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.holders().await.unwrap().len(), 2);
    assert!(!waiter.is_finished());
    la.release().await.unwrap();
    let (bb, lb) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("B gets two units once A releases")
        .unwrap()
        .unwrap();
    assert_eq!(lb.units().len(), 2);
    let holders = a.holders().await.unwrap();
    assert_eq!(holders.len(), 2);
    assert!(holders.iter().all(|(u, h)| lb.units().contains(u)
        && h.lease == lb.tag()
        && h.session == sb.session_id()));
    lb.release().await.unwrap();

    // Two clients each wanting 2 of 3, again and again: never both stuck holding one each.
    let record: Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let mut tasks = Vec::new();
    for sem in [a.clone(), bb.clone()] {
        let record = record.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                let l = sem.acquire(2).await.unwrap();
                {
                    let mut r = record.lock().unwrap();
                    assert!(
                        l.units().iter().all(|u| !r.contains(u)),
                        "unit in two leases"
                    );
                    r.extend(l.units().iter().cloned());
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
                record.lock().unwrap().retain(|u| !l.units().contains(u));
                l.release().await.unwrap();
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("no deadlock")
            .unwrap();
    }
    sa.close().await;
    sb.close().await;
    sc.close().await;
}

async fn expired_holder_frees_units_for_a_waiter(b: &dyn Backend) {
    let base = b.base("sem-expire");
    let dir = format!("{base}/mri");
    let record = format!("{base}/record");
    let old = b.session().await;
    let new = b.session().await;
    new.create_all(&record, b"", &CreateOptions::new(CreateMode::Persistent))
        .await
        .unwrap();
    let s_old = Semaphore::new(old.clone(), &dir, units(3)).unwrap();
    let s_new = Semaphore::new(new.clone(), &dir, units(3)).unwrap();
    let l_old = s_old.acquire(3).await.unwrap();
    l_old
        .write(&[Op::set_data(&record, b"old".to_vec(), -1)])
        .await
        .unwrap();
    let waiter = tokio::spawn(async move { s_new.acquire(2).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished());
    b.expire(old.as_ref()).await;
    let l_new = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the waiter gets units after the holder's expiry")
        .unwrap()
        .unwrap();
    assert_eq!(l_new.units(), &units(3)[..2]);
    assert!(l_new.fencing_token() > l_old.fencing_token());
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), l_old.lost())
            .await
            .unwrap(),
        LostReason::SessionEnded
    );
    assert_eq!(
        l_old
            .write(&[Op::set_data(&record, b"stale".to_vec(), -1)])
            .await
            .unwrap_err(),
        Error::Lost(LostReason::SessionEnded)
    );
    l_new
        .write(&[Op::set_data(&record, b"new".to_vec(), -1)])
        .await
        .unwrap();
    assert_eq!(new.get_data(&record).await.unwrap().0, b"new");
    // Releasing a lease of an ended session succeeds: its units went with it.
    l_old.release().await.unwrap();
    l_new.release().await.unwrap();
    new.close().await;
}

async fn dropped_acquire_leaves_no_waiter_and_no_lease(b: &dyn Backend) {
    let dir = b.base("sem-cancel");
    let s1 = b.session().await;
    let s2 = b.session().await;
    let sem1 = Semaphore::new(s1.clone(), &dir, units(3)).unwrap();
    let sem2 = Semaphore::new(s2.clone(), &dir, units(3)).unwrap();
    let held = sem1.acquire(2).await.unwrap();
    // Waiting for 2 when only 1 is free, and taking 1 when 1 is free: cut at every stage.
    for k in [2usize, 1] {
        for cut in [0u64, 1, 2, 3, 5, 10, 30] {
            let _ = tokio::time::timeout(Duration::from_millis(cut), sem2.acquire(k)).await;
            eventually("the cancelled acquire's nodes are gone", || async {
                sem1.waiters().await.unwrap().is_empty()
                    && sem1.free_units().await.unwrap().len() == 1
            })
            .await;
            let holders = sem1.holders().await.unwrap();
            assert!(holders.iter().all(|(_, h)| h.lease == held.tag()));
        }
    }
    held.release().await.unwrap();
    s2.sync(&dir).await.unwrap();
    assert_eq!(sem2.free_units().await.unwrap(), units(3));
    s1.close().await;
    s2.close().await;
}

async fn release_and_drop_free_units(b: &dyn Backend) {
    let dir = b.base("sem-release");
    let s1 = b.session().await;
    let s2 = b.session().await;
    let sem1 = Semaphore::new(s1.clone(), &dir, units(3)).unwrap();
    let sem2 = Semaphore::new(s2.clone(), &dir, units(3)).unwrap();
    for k in [0, 4] {
        assert!(matches!(
            sem1.acquire(k).await.unwrap_err(),
            Error::InvalidArgument(_)
        ));
    }
    assert!(matches!(
        Semaphore::new(s1.clone(), &dir, vec!["a/b".into()]).unwrap_err(),
        Error::InvalidArgument(_)
    ));
    assert!(matches!(
        Semaphore::new(s1.clone(), &dir, vec!["x".into(), "x".into()]).unwrap_err(),
        Error::InvalidArgument(_)
    ));

    let all = sem1.acquire(3).await.unwrap();
    assert_eq!(all.units(), units(3));
    assert_eq!(all.state(), HoldState::Held);
    assert!(sem2.try_acquire(1).await.unwrap().is_none());
    assert_eq!(
        sem2.acquire_timeout(1, Duration::from_millis(150))
            .await
            .unwrap_err(),
        Error::Timeout
    );
    // s2 deleted its waiter node; on an ensemble s1 may be connected to another member.
    s1.sync(&dir).await.unwrap();
    assert!(sem1.waiters().await.unwrap().is_empty(), "no waiter left");
    let t1 = all.fencing_token();
    all.release().await.unwrap();
    s2.sync(&dir).await.unwrap();
    assert_eq!(sem2.free_units().await.unwrap(), units(3));

    // A filter picks among the free units; a dropped lease frees its units in the background.
    let odd = sem2.acquire_units(2, |u| u != "MRI-2", None).await.unwrap();
    assert_eq!(odd.units(), ["MRI-1", "MRI-3"]);
    assert!(odd.fencing_token() > t1);
    drop(odd);
    let again = sem1
        .acquire_timeout(3, Duration::from_secs(10))
        .await
        .unwrap();
    drop(again);
    eventually("a dropped lease's units are free", || async {
        sem2.free_units().await.unwrap().len() == 3
    })
    .await;
    let one = sem2.try_acquire(1).await.unwrap().expect("free units");
    assert_eq!(one.units(), ["MRI-1"]);
    one.release().await.unwrap();
    s1.close().await;
    s2.close().await;
}

async fn lost_multi_reply_adopts_the_units(b: &dyn Backend) {
    let dir = b.base("sem-lostreply");
    let s = b.session().await;
    let sem = Semaphore::new(
        Faulty::wrap(s.clone())
            .lose_next_multi_reply()
            .into_session(),
        &dir,
        units(3),
    )
    .unwrap();
    // The multi that takes the units is applied but its reply is lost: the acquire adopts the
    // units it finds with its tag instead of taking two more (or leaking these).
    let lease = tokio::time::timeout(Duration::from_secs(10), sem.acquire(2))
        .await
        .expect("the acquire resolves the lost reply")
        .unwrap();
    assert_eq!(lease.units(), &units(3)[..2]);
    let holders = sem.holders().await.unwrap();
    assert_eq!(holders.len(), 2);
    assert!(holders.iter().all(|(_, h)| h.lease == lease.tag()));
    assert!(sem.waiters().await.unwrap().is_empty());
    lease.release().await.unwrap();
    assert_eq!(sem.free_units().await.unwrap(), units(3));
    s.close().await;
}
