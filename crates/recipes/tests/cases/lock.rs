//! The fair mutex: exclusion, fairness, one notification per hand-off, protected and
//! cancellation-safe acquires, fencing, loss on expiry.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use medkeeper_coord::{CreateMode, CreateOptions, Op, SessionExt};
use medkeeper_recipes::{Error, HoldState, LostReason, Mutex};

use medkeeper_testkit::{Backend, Faulty};

crate::backend_tests!(
    excludes_and_hands_off_in_order,
    one_notification_per_hand_off,
    try_acquire_and_timeout_leave_no_node,
    dropped_acquire_leaves_no_node,
    dropped_guard_releases,
    fencing_token_increases_across_recreated_parent,
    expired_holder_loses_and_fenced_write_fails,
    fenced_write_reports_callers_index,
    lost_create_reply_is_found_again,
    requeue_goes_to_the_back_of_the_line,
    requeue_of_a_lost_guard_joins_the_line,
);

async fn excludes_and_hands_off_in_order(b: &dyn Backend) {
    let dir = format!("{}/lock", b.base("excl"));
    let inside = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let first = b.session().await;
    let m0 = Mutex::new(first.clone(), &dir).unwrap();
    let g0 = m0.acquire().await.unwrap();
    let mut tasks = Vec::new();
    let mut sessions = Vec::new();
    for i in 0..6 {
        let s = b.session().await;
        sessions.push(s.clone());
        let m = Mutex::new(s, &dir).unwrap();
        // Join the line in a known order.
        let before = m0.contenders().await.unwrap().len();
        let inside = inside.clone();
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let g = m.acquire().await.unwrap();
            assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(5)).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            g.release().await.unwrap();
        }));
        while m0.contenders().await.unwrap().len() == before {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    g0.release().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), (0..6).collect::<Vec<_>>(), "FIFO");
    // The others released on their sessions; on an ensemble `first` may be on another member.
    first.sync(&dir).await.unwrap();
    assert!(m0.contenders().await.unwrap().is_empty());
    for s in sessions {
        s.close().await;
    }
    first.close().await;
}

async fn one_notification_per_hand_off(b: &dyn Backend) {
    let dir = format!("{}/lock", b.base("herd"));
    let fired = Arc::new(AtomicUsize::new(0));
    let holder = b.session().await;
    let m = Mutex::new(holder.clone(), &dir).unwrap();
    let g = m.acquire().await.unwrap();
    let waiters = 20;
    let mut tasks = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..waiters {
        let s = b.session().await;
        sessions.push(s.clone());
        let counted = Faulty::wrap(s).count_watches(fired.clone()).into_session();
        let mw = Mutex::new(counted, &dir).unwrap();
        tasks.push(tokio::spawn(async move {
            let g = mw.acquire().await.unwrap();
            g.release().await.unwrap();
        }));
    }
    while m.contenders().await.unwrap().len() < waiters + 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    g.release().await.unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    // Each of the 20 hand-offs woke at most one waiter (a herd wakes every waiter at every
    // hand-off: about waiters² / 2 notifications). Fewer than one per hand-off happens when a
    // waiter's predecessor has already left by the time it sets its watch: it then takes the
    // lock without being woken (being in line does not mean watching yet).
    let woken = fired.load(Ordering::SeqCst);
    assert!(
        woken <= waiters,
        "{woken} notifications for {waiters} hand-offs"
    );
    for s in sessions {
        s.close().await;
    }
    holder.close().await;
}

async fn try_acquire_and_timeout_leave_no_node(b: &dyn Backend) {
    let dir = format!("{}/lock", b.base("try"));
    let s1 = b.session().await;
    let s2 = b.session().await;
    let m1 = Mutex::new(s1.clone(), &dir).unwrap();
    let m2 = Mutex::new(s2.clone(), &dir).unwrap();
    let g = m1.try_acquire().await.unwrap().expect("free lock is taken");
    assert!(m2.try_acquire().await.unwrap().is_none());
    assert_eq!(
        m2.acquire_timeout(Duration::from_millis(150))
            .await
            .unwrap_err(),
        Error::Timeout
    );
    // s2 deleted its node; on an ensemble s1 may be connected to another member.
    s1.sync(&dir).await.unwrap();
    assert_eq!(m1.contenders().await.unwrap().len(), 1, "only the holder");
    let (holder, _) = m2.holder().await.unwrap().unwrap();
    assert_eq!(holder, g.path());
    assert!(g.path().contains("/_c_") && g.path().contains("-lock-"));
    g.release().await.unwrap();
    let g2 = m2
        .try_acquire()
        .await
        .unwrap()
        .expect("released lock is free");
    g2.release().await.unwrap();
    s1.close().await;
    s2.close().await;
}

async fn dropped_acquire_leaves_no_node(b: &dyn Backend) {
    let dir = format!("{}/lock", b.base("cancel"));
    let s1 = b.session().await;
    let s2 = b.session().await;
    let m1 = Mutex::new(s1.clone(), &dir).unwrap();
    let m2 = Mutex::new(s2.clone(), &dir).unwrap();
    let g = m1.acquire().await.unwrap();
    for cut in [0u64, 1, 3, 10, 30] {
        let fut = m2.acquire();
        let _ = tokio::time::timeout(Duration::from_millis(cut), fut).await;
        // The clean-up runs in the background: wait for it.
        let mut left = usize::MAX;
        for _ in 0..200 {
            left = m1.contenders().await.unwrap().len();
            if left == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            left, 1,
            "a cancelled acquire (after {cut} ms) left its node"
        );
    }
    g.release().await.unwrap();
    s1.close().await;
    s2.close().await;
}

async fn dropped_guard_releases(b: &dyn Backend) {
    let dir = format!("{}/lock", b.base("dropguard"));
    let s1 = b.session().await;
    let s2 = b.session().await;
    let m1 = Mutex::new(s1.clone(), &dir).unwrap();
    let m2 = Mutex::new(s2.clone(), &dir).unwrap();
    let g = m1.acquire().await.unwrap();
    drop(g);
    let g2 = m2.acquire_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(g2.state(), HoldState::Held);
    g2.release().await.unwrap();
    s1.close().await;
    s2.close().await;
}

async fn fencing_token_increases_across_recreated_parent(b: &dyn Backend) {
    let dir = format!("{}/lock", b.base("fence"));
    let s = b.session().await;
    let m = Mutex::new(s.clone(), &dir).unwrap();
    let g1 = m.acquire().await.unwrap();
    let t1 = g1.fencing_token();
    g1.release().await.unwrap();
    // Re-create the lock directory: sequence numbers restart, tokens do not.
    s.delete_recursive(&dir).await.unwrap();
    let g2 = m.acquire().await.unwrap();
    assert!(g2.path().ends_with("lock-0000000000"), "{}", g2.path());
    assert!(g2.fencing_token() > t1);
    g2.release().await.unwrap();
    s.close().await;
}

async fn expired_holder_loses_and_fenced_write_fails(b: &dyn Backend) {
    let base = b.base("expire");
    let dir = format!("{base}/lock");
    let record = format!("{base}/record");
    let old = b.session().await;
    let new = b.session().await;
    new.create_all(&record, b"", &CreateOptions::new(CreateMode::Persistent))
        .await
        .unwrap();
    let m_old = Mutex::new(old.clone(), &dir).unwrap();
    let m_new = Mutex::new(new.clone(), &dir).unwrap();
    let g_old = m_old.acquire().await.unwrap();
    g_old
        .write(&[Op::set_data(&record, b"old".to_vec(), -1)])
        .await
        .unwrap();
    let waiter = tokio::spawn(async move { m_new.acquire().await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The holder stops being heard from past its session timeout.
    b.expire(old.as_ref()).await;
    let g_new = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the waiter acquires after the holder's expiry")
        .unwrap()
        .unwrap();
    assert!(g_new.fencing_token() > g_old.fencing_token());
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), g_old.lost())
            .await
            .unwrap(),
        LostReason::SessionEnded
    );
    let err = g_old
        .write(&[Op::set_data(&record, b"stale".to_vec(), -1)])
        .await
        .unwrap_err();
    assert_eq!(err, Error::Lost(LostReason::SessionEnded));
    g_new
        .write(&[Op::set_data(&record, b"new".to_vec(), -1)])
        .await
        .unwrap();
    assert_eq!(new.get_data(&record).await.unwrap().0, b"new");
    g_old.release().await.unwrap();
    g_new.release().await.unwrap();
    new.close().await;
}

async fn fenced_write_reports_callers_index(b: &dyn Backend) {
    let base = b.base("fidx");
    let s = b.session().await;
    let m = Mutex::new(s.clone(), format!("{base}/lock")).unwrap();
    let g = m.acquire().await.unwrap();
    let err = g
        .write(&[
            Op::create(
                format!("{base}/a"),
                b"".to_vec(),
                CreateOptions::new(CreateMode::Persistent),
            ),
            Op::check(format!("{base}/missing"), -1),
        ])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::Multi {
            index: Some(1),
            error: medkeeper_coord::Error::NoNode
        }
    );
    assert!(s.exists(&format!("{base}/a")).await.unwrap().is_none());
    g.release().await.unwrap();
    s.close().await;
}

async fn lost_create_reply_is_found_again(b: &dyn Backend) {
    let dir = format!("{}/lock", b.base("lostreply"));
    let s = b.session().await;
    s.ensure_path(&dir).await.unwrap();
    let m = Mutex::new(
        Faulty::wrap(s.clone())
            .lose_next_create_reply()
            .into_session(),
        &dir,
    )
    .unwrap();
    // The create is applied but its reply is lost: the acquire finds its node by the protected
    // prefix instead of creating a second one (which would wait forever behind the first).
    let g = tokio::time::timeout(Duration::from_secs(10), m.acquire())
        .await
        .expect("no self-deadlock")
        .unwrap();
    let contenders = m.contenders().await.unwrap();
    assert_eq!(contenders.len(), 1, "{contenders:?}");
    assert!(g.path().ends_with(&contenders[0]));
    g.release().await.unwrap();
    assert!(m.contenders().await.unwrap().is_empty());
    s.close().await;
}

/// `requeue` releases and re-joins in one request: every contender already waiting goes first,
/// mutual exclusion holds throughout, fencing tokens keep increasing, and no node is left over.
async fn requeue_goes_to_the_back_of_the_line(b: &dyn Backend) {
    let dir = format!("{}/lock", b.base("requeue"));
    let inside = Arc::new(AtomicUsize::new(0));
    let turns = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let mut sessions = Vec::new();
    let rounds = 5;
    for i in 0..3usize {
        let s = b.session().await;
        sessions.push(s.clone());
        let m = Mutex::new(s, &dir).unwrap();
        let (inside, turns) = (inside.clone(), turns.clone());
        tasks.push(tokio::spawn(async move {
            let mut g = m.acquire().await.unwrap();
            // The first holder starts once all three are in line (sessions open at different
            // times); from then on the turns must rotate.
            while m.contenders().await.unwrap().len() < 3 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            let mut last = None;
            for _ in 0..rounds {
                assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                turns.lock().unwrap().push(i);
                let token = g.fencing_token();
                assert!(last.is_none_or(|t| t < token), "fencing token went back");
                last = Some(token);
                tokio::time::sleep(Duration::from_millis(3)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                g = m.requeue(g).await.unwrap();
            }
            g.release().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let turns = turns.lock().unwrap().clone();
    assert_eq!(turns.len(), 3 * rounds);
    // All three are in line from the first turn on: the turns rotate, nobody takes the lock
    // twice in a row while the others wait.
    for w in turns.windows(3) {
        let mut sorted = w.to_vec();
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2], "unfair rotation: {turns:?}");
    }
    let m = Mutex::new(sessions[0].clone(), &dir).unwrap();
    sessions[0].sync(&dir).await.unwrap();
    assert!(m.contenders().await.unwrap().is_empty(), "a node was left");
    for s in sessions {
        s.close().await;
    }
}

/// A guard whose node was deleted by someone else: `requeue` joins the line anyway.
async fn requeue_of_a_lost_guard_joins_the_line(b: &dyn Backend) {
    let dir = format!("{}/lock", b.base("requeue-lost"));
    let s = b.session().await;
    let m = Mutex::new(s.clone(), &dir).unwrap();
    let g = m.acquire().await.unwrap();
    let old = g.path().to_string();
    s.delete(&old, -1).await.unwrap();
    let g = m.requeue(g).await.unwrap();
    assert_ne!(g.path(), old);
    assert_eq!(m.contenders().await.unwrap().len(), 1);
    // A guard of another lock is refused (and released).
    let other = Mutex::new(s.clone(), format!("{dir}-other")).unwrap();
    let og = other.acquire().await.unwrap();
    assert!(matches!(
        m.requeue(og).await,
        Err(Error::InvalidArgument(_))
    ));
    g.release().await.unwrap();
    s.close().await;
}
