//! The durable priority queue: class order and FIFO within a class, ageing, reprioritising,
//! claims that return their item when abandoned, dropped or expired, exactly-once delivery
//! to concurrent consumers, and a dequeue measurement at depth 10,000.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use medkeeper_coord::{CreateMode, CreateOptions, Op, Session, SessionExt};
use medkeeper_recipes::queue::{ASAP, ROUTINE, STAT, URGENT};
use medkeeper_recipes::{Error, LostReason, PriorityQueue, QueueConfig};

use medkeeper_testkit::{Backend, Faulty};

crate::backend_tests!(
    stat_before_routine_and_fifo_within_a_class,
    ageing_promotes_an_old_routine_item_past_newer_urgent_ones,
    ageing_floor_keeps_a_fresh_stat_item_first_and_enqueue_at_keeps_the_time,
    reprioritise_keeps_the_place_and_refuses_a_claimed_item,
    abandoned_or_dropped_claim_returns_the_item,
    consumer_expiry_returns_the_claimed_item,
    complete_removes_and_complete_with_is_atomic,
    concurrent_consumers_take_each_item_exactly_once,
    dequeue_rate_at_depth_10000,
    lost_replies_neither_duplicate_nor_leak,
    enqueue_with_is_one_multi_with_the_callers_writes,
);

fn hour_targets() -> QueueConfig {
    QueueConfig::new(vec![Duration::from_secs(3600); 4])
}

fn queue(s: Arc<dyn Session>, dir: &str, config: QueueConfig) -> PriorityQueue {
    PriorityQueue::new(s, dir, config).unwrap()
}

async fn stat_before_routine_and_fifo_within_a_class(b: &dyn Backend) {
    let dir = b.base("q-order");
    let s = b.session().await;
    let q = queue(s.clone(), &dir, hour_targets());
    for (class, data) in [
        (ROUTINE, "r1"),
        (ROUTINE, "r2"),
        (STAT, "s1"),
        (URGENT, "u1"),
        (ASAP, "a1"),
        (ROUTINE, "r3"),
        (STAT, "s2"),
        (URGENT, "u2"),
    ] {
        q.enqueue(class, data.as_bytes()).await.unwrap();
    }
    assert!(matches!(
        q.enqueue(4, b"x").await.unwrap_err(),
        Error::InvalidArgument(_)
    ));
    let listed: Vec<u8> = q.list().await.unwrap().iter().map(|i| i.class).collect();
    assert_eq!(listed, [0, 0, 1, 2, 2, 3, 3, 3]);
    let mut taken = Vec::new();
    while let Some(c) = q.try_take().await.unwrap() {
        taken.push(String::from_utf8(c.data().to_vec()).unwrap());
        c.complete().await.unwrap();
    }
    assert_eq!(taken, ["s1", "s2", "a1", "u1", "u2", "r1", "r2", "r3"]);
    assert!(q.list().await.unwrap().is_empty());
    s.close().await;
}

async fn ageing_promotes_an_old_routine_item_past_newer_urgent_ones(b: &dyn Backend) {
    let dir = b.base("q-ageing");
    let s = b.session().await;
    let q = queue(
        s.clone(),
        &dir,
        QueueConfig::new(vec![Duration::from_millis(200); 4]),
    );
    let old = q.enqueue(ROUTINE, b"old routine").await.unwrap();
    // Fresh, the routine item is behind a new urgent one.
    let u0 = q.enqueue(URGENT, b"u0").await.unwrap();
    let first = q.list().await.unwrap();
    if first[0].effective_class == URGENT {
        assert_eq!(first[0].id, u0);
    }
    q.remove(&u0).await.unwrap();
    // Three routine targets later the routine item is served as stat.
    tokio::time::sleep(Duration::from_millis(650)).await;
    q.enqueue(URGENT, b"u1").await.unwrap();
    q.enqueue(URGENT, b"u2").await.unwrap();
    let listed = q.list().await.unwrap();
    assert_eq!(listed[0].id, old);
    assert_eq!(listed[0].class, ROUTINE);
    assert_eq!(listed[0].effective_class, STAT);
    let c = q.take().await.unwrap();
    assert_eq!(c.data(), b"old routine");
    c.complete().await.unwrap();
    let c = q.take().await.unwrap();
    assert_eq!(c.data(), b"u1");
    c.complete().await.unwrap();
    s.close().await;
}

async fn ageing_floor_keeps_a_fresh_stat_item_first_and_enqueue_at_keeps_the_time(b: &dyn Backend) {
    let dir = b.base("q-floor");
    let s = b.session().await;
    let q = queue(
        s.clone(),
        &dir,
        QueueConfig::new(vec![Duration::from_secs(60); 4]).with_ageing_floor(ASAP),
    );
    // Ordered an hour ago: ageing counts from then, so it has aged past stat — but the floor
    // holds it at asap.
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    let old = q
        .enqueue_at(ROUTINE, b"old routine", an_hour_ago)
        .await
        .unwrap();
    assert_eq!(old.enqueued_at_ms() / 1000, {
        let ms = an_hour_ago
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        ms / 1000
    });
    let asap = q.enqueue(ASAP, b"fresh asap").await.unwrap();
    let stat = q.enqueue(STAT, b"fresh stat").await.unwrap();
    // A late-enqueued old item still joins behind the earlier arrivals of its class.
    let late = q.enqueue_at(ASAP, b"late asap", an_hour_ago).await.unwrap();
    assert!(late.sequence() > stat.sequence());
    let listed = q.list().await.unwrap();
    let ids: Vec<_> = listed.iter().map(|i| i.id.clone()).collect();
    assert_eq!(ids, [stat, old.clone(), asap, late]);
    assert_eq!(listed[1].class, ROUTINE);
    assert_eq!(listed[1].effective_class, ASAP);
    let c = q.take().await.unwrap();
    assert_eq!(c.data(), b"fresh stat");
    c.complete().await.unwrap();
    let c = q.take().await.unwrap();
    assert_eq!(c.id(), &old);
    c.complete().await.unwrap();
    s.close().await;
}

async fn reprioritise_keeps_the_place_and_refuses_a_claimed_item(b: &dyn Backend) {
    let dir = b.base("q-reprio");
    let s = b.session().await;
    let q = queue(s.clone(), &dir, hour_targets());
    let r1 = q.enqueue(ROUTINE, b"r1").await.unwrap();
    let u1 = q.enqueue(URGENT, b"u1").await.unwrap();
    let r2 = q.enqueue(ROUTINE, b"r2").await.unwrap();
    let r2s = q.reprioritise(&r2, STAT).await.unwrap();
    assert_eq!(r2s.class(), STAT);
    assert_eq!(r2s.sequence(), r2.sequence());
    assert_eq!(r2s.enqueued_at_ms(), r2.enqueued_at_ms());
    assert_eq!(q.data(&r2).await.unwrap(), None);
    assert_eq!(q.data(&r2s).await.unwrap().unwrap(), b"r2");
    // r1 moved to urgent keeps its earlier arrival: it goes before u1.
    let r1u = q.reprioritise(&r1, URGENT).await.unwrap();
    assert_eq!(q.reprioritise(&r1u, URGENT).await.unwrap(), r1u);
    let order: Vec<_> = q.list().await.unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(order, [r2s.clone(), r1u.clone(), u1.clone()]);
    // Not in the queue any more.
    assert_eq!(
        q.reprioritise(&r1, STAT).await.unwrap_err(),
        Error::Coord(medkeeper_coord::Error::NoNode)
    );
    // A claimed item is being served: it cannot be moved.
    let c = q.take().await.unwrap();
    assert_eq!(c.id(), &r2s);
    assert_eq!(
        q.reprioritise(&r2s, ROUTINE).await.unwrap_err(),
        Error::Coord(medkeeper_coord::Error::NodeExists)
    );
    assert!(q.list().await.unwrap()[0].claimed);
    c.complete().await.unwrap();
    let ids: Vec<_> = q.list().await.unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(ids, [r1u, u1]);
    s.close().await;
}

async fn abandoned_or_dropped_claim_returns_the_item(b: &dyn Backend) {
    let dir = b.base("q-abandon");
    let s1 = b.session().await;
    let s2 = b.session().await;
    let q1 = queue(s1.clone(), &dir, hour_targets());
    let q2 = queue(s2.clone(), &dir, hour_targets());
    let a = q1.enqueue(URGENT, b"a").await.unwrap();
    let c = q1.take().await.unwrap();
    assert_eq!(c.id(), &a);
    assert!(
        q2.try_take().await.unwrap().is_none(),
        "the only item is claimed"
    );
    assert_eq!(
        q2.take_timeout(Duration::from_millis(150))
            .await
            .unwrap_err(),
        Error::Timeout
    );
    c.abandon().await.unwrap();
    let c = q2.take_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(c.id(), &a);
    // A consumer waiting in line gets the item when the claim is dropped.
    let waiter = {
        let q1 = q1.clone();
        tokio::spawn(async move { q1.take().await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished());
    drop(c);
    let c = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the dropped claim returns the item")
        .unwrap()
        .unwrap();
    assert_eq!(c.id(), &a);
    c.complete().await.unwrap();
    assert!(q2.list().await.unwrap().is_empty());
    // A dropped take leaves neither line node nor claim behind.
    q1.enqueue(URGENT, b"b").await.unwrap();
    let held = q1.take().await.unwrap();
    for cut in [0u64, 1, 3, 10] {
        let _ = tokio::time::timeout(Duration::from_millis(cut), q2.take()).await;
    }
    let mut clean = false;
    for _ in 0..500 {
        let takers = s1
            .get_children(&format!("{dir}/takers"))
            .await
            .unwrap_or_default();
        let claims = s1.get_children(&format!("{dir}/claims")).await.unwrap();
        if takers.is_empty() && claims.len() == 1 {
            clean = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(clean, "a cancelled take left a line node or a claim");
    held.complete().await.unwrap();
    s1.close().await;
    s2.close().await;
}

async fn consumer_expiry_returns_the_claimed_item(b: &dyn Backend) {
    let dir = b.base("q-expire");
    let crashed = b.session().await;
    let other = b.session().await;
    let q_crashed = queue(crashed.clone(), &dir, hour_targets());
    let q_other = queue(other.clone(), &dir, hour_targets());
    let item = q_other.enqueue(STAT, b"exam").await.unwrap();
    let claim = q_crashed.take().await.unwrap();
    assert_eq!(claim.id(), &item);
    let waiter = tokio::spawn(async move { q_other.take().await.map(|c| (q_other, c)) });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiter.is_finished());
    b.expire(crashed.as_ref()).await;
    let (q_other, again) = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the item is taken again after the consumer's expiry")
        .unwrap()
        .unwrap();
    assert_eq!(again.id(), &item);
    assert!(again.fencing_token() > claim.fencing_token());
    assert_eq!(
        claim.complete().await.unwrap_err(),
        Error::Lost(LostReason::SessionEnded)
    );
    again.complete().await.unwrap();
    assert!(q_other.list().await.unwrap().is_empty());
    other.close().await;
}

async fn complete_removes_and_complete_with_is_atomic(b: &dyn Backend) {
    let base = b.base("q-complete");
    let dir = format!("{base}/queue");
    let unit = format!("{base}/unit");
    let s = b.session().await;
    let q = queue(s.clone(), &dir, hour_targets());
    q.enqueue(URGENT, b"order-1").await.unwrap();
    q.enqueue(URGENT, b"order-2").await.unwrap();
    let c = q.take().await.unwrap();
    // A failing op of the caller's: nothing applied, the item stays claimed.
    let bad = [Op::check(format!("{base}/missing"), -1)];
    let c2 = q.take().await.unwrap();
    assert_eq!(
        c2.write(&bad).await.unwrap_err(),
        Error::Multi {
            index: Some(0),
            error: medkeeper_coord::Error::NoNode
        }
    );
    let err = c.complete_with(&bad).await.unwrap_err();
    assert_eq!(
        err,
        Error::Multi {
            index: Some(0),
            error: medkeeper_coord::Error::NoNode
        }
    );
    assert_eq!(q.list().await.unwrap().len(), 2);
    // The claim was consumed by the failed call and dropped: its item returns.
    let c = q.take_timeout(Duration::from_secs(10)).await.unwrap();
    assert_eq!(c.data(), b"order-1");
    let r = c
        .complete_with(&[Op::create(
            unit.clone(),
            b"order-1".to_vec(),
            CreateOptions::new(CreateMode::Persistent),
        )])
        .await
        .unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(s.get_data(&unit).await.unwrap().0, b"order-1");
    let left = q.list().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, *c2.id());
    // An item removed (an order cancelled) while claimed cannot be completed.
    assert!(q.remove(c2.id()).await.unwrap());
    assert!(!q.remove(c2.id()).await.unwrap());
    assert_eq!(
        c2.complete().await.unwrap_err(),
        Error::Lost(LostReason::NodeDeleted)
    );
    assert!(q.list().await.unwrap().is_empty());
    s.close().await;
}

async fn concurrent_consumers_take_each_item_exactly_once(b: &dyn Backend) {
    let dir = b.base("q-concurrent");
    let producer = b.session().await;
    let q = queue(producer.clone(), &dir, hour_targets());
    let taken: Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let s = b.session().await;
        sessions.push(s.clone());
        let qc = queue(s, &dir, hour_targets());
        let taken = taken.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            while done.load(Ordering::SeqCst) < 100 {
                match qc.take_timeout(Duration::from_millis(300)).await {
                    Ok(c) => {
                        taken
                            .lock()
                            .unwrap()
                            .push(String::from_utf8(c.data().to_vec()).unwrap());
                        c.complete().await.unwrap();
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(Error::Timeout) => {}
                    Err(e) => panic!("take: {e}"),
                }
            }
        }));
    }
    // Produce while the consumers consume.
    for i in 0..100u8 {
        q.enqueue(i % 4, format!("item-{i}").as_bytes())
            .await
            .unwrap();
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("consumers finish")
            .unwrap();
    }
    let taken = taken.lock().unwrap().clone();
    assert_eq!(taken.len(), 100, "each item taken once");
    let distinct: HashSet<_> = taken.iter().collect();
    assert_eq!(distinct.len(), 100, "no item taken twice");
    assert!(q.list().await.unwrap().is_empty());
    for s in sessions {
        s.close().await;
    }
    producer.close().await;
}

async fn dequeue_rate_at_depth_10000(b: &dyn Backend) {
    const DEPTH: usize = 10_000;
    const TAKES: usize = 200;
    let dir = b.base("q-depth");
    let s = b.session().await;
    let q = queue(s.clone(), &dir, hour_targets());
    q.enqueue(ROUTINE, b"first").await.unwrap();
    // Pipelined enqueues: 256 in flight at a time.
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 1..DEPTH {
        if set.len() >= 256 {
            set.join_next().await.unwrap().unwrap();
        }
        let q = q.clone();
        set.spawn(async move {
            q.enqueue((i % 4) as u8, format!("order-{i}").as_bytes())
                .await
                .unwrap();
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let enqueue_secs = started.elapsed().as_secs_f64();
    let listed = q.list().await.unwrap();
    assert_eq!(listed.len(), DEPTH);
    let started = Instant::now();
    let mut last = (0u8, -1i64);
    for _ in 0..TAKES {
        let c = q.try_take().await.unwrap().expect("items");
        let key = (c.item().effective_class, c.item().sequence);
        assert!(key > last, "dequeue order: {key:?} after {last:?}");
        last = key;
        c.complete().await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "[{}] depth {DEPTH}: enqueued {:.0} items/s (256 in flight); take+complete {:.1} items/s ({:.1} ms each)",
        b.name(),
        (DEPTH as f64) / enqueue_secs,
        TAKES as f64 / secs,
        secs * 1000.0 / TAKES as f64
    );
    // Clean up, also pipelined.
    let items = format!("{dir}/items");
    let names = s.get_children(&items).await.unwrap();
    assert_eq!(names.len(), DEPTH - TAKES);
    let mut set = tokio::task::JoinSet::new();
    for n in names {
        if set.len() >= 256 {
            set.join_next().await.unwrap().unwrap();
        }
        let s = s.clone();
        let p = format!("{items}/{n}");
        set.spawn(async move { s.delete(&p, -1).await.unwrap() });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    s.close().await;
}

async fn lost_replies_neither_duplicate_nor_leak(b: &dyn Backend) {
    let dir = b.base("q-lostreply");
    let s = b.session().await;
    s.ensure_path(&format!("{dir}/items")).await.unwrap();
    s.ensure_path(&format!("{dir}/claims")).await.unwrap();
    // The enqueue's create is applied but its reply lost: it finds its item by its tag.
    let producer = queue(
        Faulty::wrap(s.clone())
            .lose_next_create_reply()
            .into_session(),
        &dir,
        hour_targets(),
    );
    let id = producer.enqueue(URGENT, b"once").await.unwrap();
    let listed = producer.list().await.unwrap();
    assert_eq!(listed.len(), 1, "enqueued exactly once");
    assert_eq!(listed[0].id, id);
    // The claim's multi is applied but its reply lost: the take adopts its own claim.
    let consumer = queue(
        Faulty::wrap(s.clone())
            .lose_next_multi_reply()
            .into_session(),
        &dir,
        hour_targets(),
    );
    let c = tokio::time::timeout(Duration::from_secs(10), consumer.take())
        .await
        .expect("the take resolves the lost reply")
        .unwrap();
    assert_eq!(c.id(), &id);
    assert_eq!(
        s.get_children(&format!("{dir}/claims"))
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        s.get_children(&format!("{dir}/takers"))
            .await
            .unwrap_or_default()
            .is_empty()
    );
    c.complete().await.unwrap();
    assert!(consumer.list().await.unwrap().is_empty());
    s.close().await;
}

/// `enqueue_with`: the item and the caller's operations together or not at all; a failing
/// caller operation is reported with the caller's own index and enqueues nothing; a lost
/// reply is resolved by the item's tag (applied once).
async fn enqueue_with_is_one_multi_with_the_callers_writes(b: &dyn Backend) {
    let dir = b.base("q-with");
    let s = b.session().await;
    s.ensure_path(&format!("{dir}/side")).await.unwrap();
    let q = queue(s.clone(), &dir, hour_targets());
    let side = |n: &str| {
        Op::create(
            format!("{dir}/side/{n}"),
            n.as_bytes().to_vec(),
            CreateOptions::new(CreateMode::Persistent),
        )
    };
    let at = std::time::SystemTime::now();
    let id = q
        .enqueue_with(URGENT, b"one", at, &[side("a")])
        .await
        .unwrap();
    assert_eq!(q.list().await.unwrap()[0].id, id);
    assert_eq!(s.get_data(&format!("{dir}/side/a")).await.unwrap().0, b"a");
    // The caller's op fails: nothing is enqueued, the index is the caller's.
    match q
        .enqueue_with(URGENT, b"two", at, &[side("b"), side("a")])
        .await
    {
        Err(Error::Multi {
            index: Some(1),
            error,
        }) => assert_eq!(error, medkeeper_coord::Error::NodeExists),
        other => panic!("{other:?}"),
    }
    assert_eq!(q.list().await.unwrap().len(), 1);
    assert!(s.exists(&format!("{dir}/side/b")).await.unwrap().is_none());
    // Applied but the reply lost: found by its tag, once.
    let lossy = queue(
        Faulty::wrap(s.clone())
            .lose_next_multi_reply()
            .into_session(),
        &dir,
        hour_targets(),
    );
    let again = lossy
        .enqueue_with(ROUTINE, b"three", at, &[side("c")])
        .await
        .unwrap();
    let listed = q.list().await.unwrap();
    assert_eq!(listed.len(), 2, "enqueued exactly once: {listed:?}");
    assert!(listed.iter().any(|i| i.id == again));
    assert!(s.exists(&format!("{dir}/side/c")).await.unwrap().is_some());
    s.close().await;
}
