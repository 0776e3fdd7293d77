//! Barriers with contending clients: a barrier holds waiters until removed; a double barrier
//! lets nobody in before the last participant enters and nobody out before all leave.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use medkeeper_coord::Session;
use medkeeper_recipes::Error;
use medkeeper_recipes::barrier::{Barrier, DoubleBarrier, READY_NODE};

use medkeeper_testkit::Backend;

crate::backend_tests!(
    barrier_holds_waiters_until_removed,
    double_barrier_enters_and_leaves_together,
    timed_out_entry_leaves_no_node,
);

async fn barrier_holds_waiters_until_removed(b: &dyn Backend) {
    let path = format!("{}/calibration", b.base("barrier"));
    let owner = b.session().await;
    let barrier = Barrier::new(owner.clone(), &path).unwrap();
    barrier.wait().await.unwrap(); // not set: passes
    barrier.set().await.unwrap();
    barrier.set().await.unwrap(); // idempotent
    assert!(barrier.is_set().await.unwrap());
    let passed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let s = b.session().await;
        sessions.push(s.clone());
        let w = Barrier::new(s, &path).unwrap();
        assert_eq!(
            w.wait_timeout(Duration::from_millis(100))
                .await
                .unwrap_err(),
            Error::Timeout
        );
        let passed = passed.clone();
        tasks.push(tokio::spawn(async move {
            w.wait().await.unwrap();
            passed.fetch_add(1, Ordering::SeqCst);
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        passed.load(Ordering::SeqCst),
        0,
        "nobody passes a set barrier"
    );
    barrier.remove().await.unwrap();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(10), t)
            .await
            .expect("waiters pass once removed")
            .unwrap();
    }
    assert_eq!(passed.load(Ordering::SeqCst), 3);
    barrier.remove().await.unwrap(); // idempotent
    for s in sessions {
        s.close().await;
    }
    owner.close().await;
}

async fn double_barrier_enters_and_leaves_together(b: &dyn Backend) {
    const N: usize = 4;
    let dir = format!("{}/drill", b.base("double"));
    let arrived = Arc::new(AtomicUsize::new(0));
    let passed = Arc::new(AtomicUsize::new(0));
    let leaving = Arc::new(AtomicUsize::new(0));
    let mut sessions: Vec<Arc<dyn Session>> = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..N {
        let s = b.session().await;
        sessions.push(s.clone());
        let barrier = DoubleBarrier::new(s, &dir, N).unwrap();
        let (arrived, in_, leaving) = (arrived.clone(), passed.clone(), leaving.clone());
        tasks.push(tokio::spawn(async move {
            arrived.fetch_add(1, Ordering::SeqCst);
            let entered = barrier.enter().await.unwrap();
            assert_eq!(
                arrived.load(Ordering::SeqCst),
                N,
                "entered before the last arrived"
            );
            in_.fetch_add(1, Ordering::SeqCst);
            // Leave at different times; nobody is out before the last starts leaving.
            tokio::time::sleep(Duration::from_millis(40 * i as u64)).await;
            leaving.fetch_add(1, Ordering::SeqCst);
            entered.leave().await.unwrap();
            assert_eq!(
                leaving.load(Ordering::SeqCst),
                N,
                "left before the last started leaving"
            );
        }));
        if i < N - 1 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(
                passed.load(Ordering::SeqCst),
                0,
                "in before the last arrived"
            );
        }
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("the round completes")
            .unwrap();
    }
    let left = sessions[0].get_children(&dir).await.unwrap_or_default();
    assert!(
        left.iter().all(|c| c != READY_NODE) && left.is_empty(),
        "nothing left: {left:?}"
    );
    for s in sessions {
        s.close().await;
    }
}

async fn timed_out_entry_leaves_no_node(b: &dyn Backend) {
    let dir = format!("{}/pair", b.base("double-timeout"));
    let s = b.session().await;
    let barrier = DoubleBarrier::new(s.clone(), &dir, 2).unwrap();
    assert_eq!(
        barrier
            .enter_timeout(Duration::from_millis(200))
            .await
            .unwrap_err(),
        Error::Timeout
    );
    assert!(s.get_children(&dir).await.unwrap_or_default().is_empty());
    // A cancelled entry leaves nothing behind either.
    let _ = tokio::time::timeout(Duration::from_millis(100), barrier.enter()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !s.get_children(&dir).await.unwrap_or_default().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cancelled entry's node remains"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        DoubleBarrier::new(s.clone(), &dir, 0),
        Err(Error::InvalidArgument(_))
    ));
    s.close().await;
}
