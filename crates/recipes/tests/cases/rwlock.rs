//! The read-write lock: readers share, writers exclude, FIFO fairness (no writer starvation).

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use medkeeper_recipes::RwLock;

use medkeeper_testkit::Backend;

crate::backend_tests!(
    readers_share_writers_exclude,
    waiting_writer_is_not_overtaken_by_later_readers,
    curator_node_names
);

async fn readers_share_writers_exclude(b: &dyn Backend) {
    let dir = format!("{}/rw", b.base("share"));
    // +1 per reader inside, -100 for a writer inside: never both, never two writers.
    let inside = Arc::new(AtomicI32::new(0));
    let mut tasks = Vec::new();
    let mut sessions = Vec::new();
    for i in 0..8 {
        let s = b.session().await;
        sessions.push(s.clone());
        let rw = RwLock::new(s, &dir).unwrap();
        let inside = inside.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                if i % 4 == 0 {
                    let g = rw.write().await.unwrap();
                    assert_eq!(inside.fetch_sub(100, Ordering::SeqCst), 0, "writer shares");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    inside.fetch_add(100, Ordering::SeqCst);
                    g.release().await.unwrap();
                } else {
                    let g = rw.read().await.unwrap();
                    assert!(
                        inside.fetch_add(1, Ordering::SeqCst) >= 0,
                        "reader with writer"
                    );
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    g.release().await.unwrap();
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    for s in sessions {
        s.close().await;
    }
}

async fn waiting_writer_is_not_overtaken_by_later_readers(b: &dyn Backend) {
    let dir = format!("{}/rw", b.base("fair"));
    let (s1, s2, s3) = (b.session().await, b.session().await, b.session().await);
    let r1 = RwLock::new(s1.clone(), &dir).unwrap();
    let w = RwLock::new(s2.clone(), &dir).unwrap();
    let r2 = RwLock::new(s3.clone(), &dir).unwrap();
    let g1 = r1.read().await.unwrap();
    // Two readers at once are fine.
    let extra = r1.read_timeout(Duration::from_secs(5)).await.unwrap();
    extra.release().await.unwrap();
    let writer = tokio::spawn(async move { w.write().await });
    // Wait until the writer is in line.
    let probe = s1.clone();
    loop {
        let n = probe.get_children(&dir).await.unwrap();
        if n.iter().any(|c| c.contains("__WRIT__")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A reader arriving after the waiting writer waits for it.
    assert_eq!(
        r2.read_timeout(Duration::from_millis(200))
            .await
            .unwrap_err(),
        medkeeper_recipes::Error::Timeout
    );
    g1.release().await.unwrap();
    let wg = writer.await.unwrap().unwrap();
    assert_eq!(
        r2.read_timeout(Duration::from_millis(100))
            .await
            .unwrap_err(),
        medkeeper_recipes::Error::Timeout,
        "the writer holds"
    );
    wg.release().await.unwrap();
    r2.read().await.unwrap().release().await.unwrap();
    for s in [s1, s2, s3] {
        s.close().await;
    }
}

async fn curator_node_names(b: &dyn Backend) {
    let dir = format!("{}/rw", b.base("names"));
    let s = b.session().await;
    let rw = RwLock::new(s.clone(), &dir).unwrap();
    let r = rw.read().await.unwrap();
    assert!(r.path().contains("/_c_") && r.path().contains("-__READ__"));
    r.release().await.unwrap();
    let w = rw.write().await.unwrap();
    assert!(w.path().contains("-__WRIT__"));
    w.release().await.unwrap();
    s.close().await;
}
