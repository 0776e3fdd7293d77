//! The tree cache: initial load, events in order with the right data, a deep subtree created
//! after the start, contending writers (the cache ends equal to a fresh read), and the end of
//! the cache with its session.

use std::collections::{BTreeMap, VecDeque};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use medkeeper_coord::{CreateMode, CreateOptions, Session, SessionExt, SessionState};
use medkeeper_recipes::cache::{CacheEvent, CacheEvents, CacheState, CachedNode, TreeCache};

use medkeeper_testkit::Backend;

crate::backend_tests!(
    initial_load_then_events_in_order,
    deep_subtree_created_after_start,
    contending_writers_cache_equals_fresh_read,
    cache_ends_with_its_session,
    resyncs_after_reconnect,
);

fn persistent() -> CreateOptions {
    CreateOptions::new(CreateMode::Persistent)
}

/// A fresh breadth-first read of the subtree at `root`, as the cache should hold it.
async fn fresh_read(s: &dyn Session, root: &str) -> BTreeMap<String, CachedNode> {
    let mut out = BTreeMap::new();
    let mut queue = VecDeque::from([root.to_string()]);
    while let Some(p) = queue.pop_front() {
        let Ok((data, stat)) = s.get_data(&p).await else {
            continue;
        };
        if let Ok(children) = s.get_children(&p).await {
            queue.extend(children.iter().map(|c| format!("{p}/{c}")));
        }
        out.insert(p, CachedNode { data, stat });
    }
    out
}

/// What the cache promises to keep current: data and the stat of the last data change (the
/// child fields of a cached stat are as of the node's last read).
type Comparable = BTreeMap<String, (Vec<u8>, i64, i64, i32)>;

fn comparable(nodes: BTreeMap<String, CachedNode>) -> Comparable {
    nodes
        .into_iter()
        .map(|(p, n)| (p, (n.data, n.stat.czxid, n.stat.mzxid, n.stat.version)))
        .collect()
}

/// Waits until the cache equals a fresh read (the tree must have stopped changing).
async fn converge(cache: &TreeCache, s: &dyn Session, root: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let want = comparable(fresh_read(s, root).await);
        let got = comparable(cache.snapshot());
        if got == want {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            let got_keys: Vec<_> = got.keys().collect();
            let want_keys: Vec<_> = want.keys().collect();
            panic!("cache did not converge:\n got {got_keys:?}\nwant {want_keys:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn next_event(events: &mut CacheEvents) -> CacheEvent {
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event in time")
        .expect("the cache is running")
}

async fn initial_load_then_events_in_order(b: &dyn Backend) {
    let root = format!("{}/units", b.base("cache-load"));
    let writer = b.session().await;
    writer
        .create_all(&format!("{root}/mri/mri-1"), b"free", &persistent())
        .await
        .unwrap();
    writer
        .create(&format!("{root}/ct"), b"kind", &persistent())
        .await
        .unwrap();
    writer.set_data(&root, b"root", -1).await.unwrap();

    let reader = b.session().await;
    let cache = TreeCache::start(reader.clone(), &root).await.unwrap();
    assert_eq!(cache.state(), CacheState::Live);
    assert_eq!(cache.len(), 4);
    assert_eq!(cache.get(&root).unwrap().data, b"root");
    assert_eq!(
        cache.get(&format!("{root}/mri/mri-1")).unwrap().data,
        b"free"
    );
    assert_eq!(cache.children(&root), ["ct", "mri"]);
    assert_eq!(cache.children(&format!("{root}/mri")), ["mri-1"]);
    assert!(cache.get(&format!("{root}/xray")).is_none());
    assert_eq!(
        cache.snapshot(),
        fresh_read(writer.as_ref(), &root).await,
        "stats too"
    );

    let (before, mut events) = cache.snapshot_and_subscribe();
    assert_eq!(before.len(), 4);
    let mri1 = format!("{root}/mri/mri-1");
    let xray = format!("{root}/xray");
    let ct = format!("{root}/ct");
    writer.create(&xray, b"new", &persistent()).await.unwrap();
    writer.set_data(&mri1, b"busy", -1).await.unwrap();
    writer.delete(&ct, -1).await.unwrap();
    writer.set_data(&mri1, b"free", -1).await.unwrap();

    match next_event(&mut events).await {
        CacheEvent::Added { path, node } => {
            assert_eq!(path, xray);
            assert_eq!(node.data, b"new");
        }
        other => panic!("expected xray added, got {other:?}"),
    }
    // The first data change's read may already see the second: then only one update comes.
    let mut last_data = Vec::new();
    let mut removed = false;
    while !(removed && last_data == b"free") {
        match next_event(&mut events).await {
            CacheEvent::Updated { path, node } => {
                assert_eq!(path, mri1);
                assert!(!removed || node.data == b"free", "updates in order");
                last_data = node.data;
            }
            CacheEvent::Removed { path } => {
                assert_eq!(path, ct);
                assert!(!last_data.is_empty(), "the update came first");
                removed = true;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(events.try_next().is_none(), "no duplicates");
    assert_eq!(cache.get(&mri1).unwrap().data, b"free");
    assert!(cache.get(&ct).is_none());
    assert_eq!(cache.children(&root), ["mri", "xray"]);
    converge(&cache, writer.as_ref(), &root).await;
    cache.close();
    reader.close().await;
    writer.close().await;
}

async fn deep_subtree_created_after_start(b: &dyn Backend) {
    let root = format!("{}/tree", b.base("cache-deep"));
    let reader = b.session().await;
    let cache = TreeCache::start(reader.clone(), &root).await.unwrap();
    assert!(cache.is_empty(), "a missing root is an empty cache");
    let mut events = cache.subscribe();
    let writer = b.session().await;
    writer
        .ensure_path(medkeeper_coord::path::parent(&root).unwrap())
        .await
        .unwrap();
    // Created in one multi, so the nodes below exist before the root's event is handled.
    let mut ops = vec![medkeeper_coord::Op::create(
        &root,
        b"r".to_vec(),
        persistent(),
    )];
    let mut p = root.clone();
    for depth in 0..5 {
        p = format!("{p}/d{depth}");
        ops.push(medkeeper_coord::Op::create(
            &p,
            format!("{depth}").into_bytes(),
            persistent(),
        ));
        ops.push(medkeeper_coord::Op::create(
            format!("{p}-leaf"),
            b"leaf".to_vec(),
            persistent(),
        ));
    }
    writer.multi(&ops).await.unwrap();
    let mut added = Vec::new();
    while added.len() < ops.len() {
        match next_event(&mut events).await {
            CacheEvent::Added { path, .. } => added.push(path),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(added[0], root, "parents before children");
    assert_eq!(cache.len(), ops.len());
    assert_eq!(cache.get(&p).unwrap().data, b"4");
    converge(&cache, writer.as_ref(), &root).await;
    // The same subtree deleted bottom-up, then created again: the cache follows.
    writer.delete_recursive(&root).await.unwrap();
    converge(&cache, writer.as_ref(), &root).await;
    assert!(cache.is_empty());
    writer.multi(&ops).await.unwrap();
    converge(&cache, writer.as_ref(), &root).await;
    assert_eq!(cache.len(), ops.len());
    drop(cache);
    reader.close().await;
    writer.close().await;
}

async fn contending_writers_cache_equals_fresh_read(b: &dyn Backend) {
    let root = format!("{}/wards", b.base("cache-contend"));
    let setup = b.session().await;
    setup.ensure_path(&root).await.unwrap();
    let reader = b.session().await;
    let cache = TreeCache::start(reader.clone(), &root).await.unwrap();
    let mut tasks = Vec::new();
    let mut sessions = Vec::new();
    for w in 0..4 {
        let s = b.session().await;
        sessions.push(s.clone());
        let root = root.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..30u32 {
                let bed = format!("{root}/w{w}/bed{}", i % 5);
                match i % 3 {
                    0 => {
                        s.create_all(&bed, format!("{i}").as_bytes(), &persistent())
                            .await
                            .unwrap();
                    }
                    1 => {
                        let _ = s.set_data(&bed, format!("set{i}").as_bytes(), -1).await;
                        let _ = s
                            .create(&format!("{bed}/note{i}"), b"n", &persistent())
                            .await;
                    }
                    _ => {
                        let _ = s
                            .delete_recursive(&format!("{root}/w{w}/bed{}", (i + 2) % 5))
                            .await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    converge(&cache, setup.as_ref(), &root).await;
    assert!(cache.len() > 1);
    for s in sessions {
        s.close().await;
    }
    reader.close().await;
    setup.close().await;
}

async fn cache_ends_with_its_session(b: &dyn Backend) {
    let root = format!("{}/ending", b.base("cache-end"));
    let writer = b.session().await;
    writer
        .create_all(&format!("{root}/a"), b"1", &persistent())
        .await
        .unwrap();
    let reader = b.session().await;
    let cache = TreeCache::start(reader.clone(), &root).await.unwrap();
    let mut events = cache.subscribe();
    b.expire(reader.as_ref()).await;
    let ended = tokio::time::timeout(Duration::from_secs(10), cache.ended())
        .await
        .expect("the cache stops");
    assert_eq!(ended, SessionState::Expired);
    assert_eq!(cache.state(), CacheState::Ended(SessionState::Expired));
    // On ZooKeeper the kill moves the session to another connection first: the reader may
    // reconnect (and resync, finding nothing changed) before it learns of the expiry.
    loop {
        match next_event(&mut events).await {
            CacheEvent::Resynced => {}
            other => {
                assert_eq!(other, CacheEvent::Ended(SessionState::Expired));
                break;
            }
        }
    }
    // The contents stay readable, frozen.
    assert_eq!(cache.get(&format!("{root}/a")).unwrap().data, b"1");
    assert!(
        TreeCache::start(reader.clone(), &root)
            .await
            .unwrap_err()
            .is_session_fatal()
    );
    writer.close().await;
}

/// A TCP proxy in front of ZooKeeper whose connections the test can cut, so a session loses its
/// connection (and the watch events meanwhile) without expiring. Plain threads: no runtime.
struct Proxy {
    addr: String,
    open: Arc<AtomicBool>,
    conns: Arc<StdMutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(upstream: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let open = Arc::new(AtomicBool::new(true));
        let conns = Arc::new(StdMutex::new(Vec::new()));
        let (o, c) = (open.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !o.load(Ordering::SeqCst) {
                    continue; // refused: dropped at once
                }
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let mut list = c.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        Proxy { addr, open, conns }
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// ZooKeeper only (the embedded engine has no connection to lose; the diff is unit-tested):
/// changes made while the cache's connection is cut are found by the reload after reconnecting.
async fn resyncs_after_reconnect(b: &dyn Backend) {
    if b.name() != "zk" {
        return;
    }
    let connect = std::env::var("MEDKEEPER_ZK_CONNECT").unwrap();
    let upstream = connect
        .split(',')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let proxy = Proxy::start(upstream);
    let options = medkeeper_zk::ConnectOptions::new(&proxy.addr)
        .unwrap()
        .with_session_timeout(Duration::from_secs(20));
    let reader: Arc<dyn Session> = Arc::new(medkeeper_zk::connect(options).await.unwrap());
    let writer = b.session().await;
    let root = format!("{}/resync", b.base("cache-resync"));
    writer
        .create_all(&format!("{root}/a"), b"1", &persistent())
        .await
        .unwrap();
    writer
        .create(&format!("{root}/gone"), b"", &persistent())
        .await
        .unwrap();
    let cache = TreeCache::start(reader.clone(), &root).await.unwrap();
    let mut events = cache.subscribe();

    proxy.cut();
    let mut states = reader.session_events();
    tokio::time::timeout(
        Duration::from_secs(20),
        states.wait_for(|s| s == SessionState::Disconnected),
    )
    .await
    .expect("the reader notices the cut");
    tokio::time::timeout(Duration::from_secs(5), async {
        while cache.state() != CacheState::Suspended {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the cache is suspended");
    writer
        .set_data(&format!("{root}/a"), b"2", -1)
        .await
        .unwrap();
    writer
        .create(&format!("{root}/b"), b"new", &persistent())
        .await
        .unwrap();
    writer.delete(&format!("{root}/gone"), -1).await.unwrap();
    proxy.restore();

    let mut seen = Vec::new();
    loop {
        let e = tokio::time::timeout(Duration::from_secs(30), events.next())
            .await
            .expect("a resync in time")
            .unwrap();
        if e == CacheEvent::Resynced {
            break;
        }
        seen.push(e);
    }
    assert_eq!(cache.state(), CacheState::Live);
    assert_eq!(cache.get(&format!("{root}/a")).unwrap().data, b"2");
    assert_eq!(cache.get(&format!("{root}/b")).unwrap().data, b"new");
    assert!(cache.get(&format!("{root}/gone")).is_none());
    assert!(
        seen.iter()
            .any(|e| matches!(e, CacheEvent::Removed { path } if path.ends_with("/gone"))),
        "{seen:?}"
    );
    converge(&cache, writer.as_ref(), &root).await;

    // The watch still delivers after the reconnection, without another one: zookeeper-client
    // 0.11.2 re-registers no persistent watch on reconnecting (its SetWatches carries only the
    // one-shot kinds), so the backend must; a cache that only reloads would freeze here.
    for round in 0..2 {
        let value = format!("after-{round}");
        writer
            .set_data(&format!("{root}/a"), value.as_bytes(), -1)
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match events.next().await.unwrap() {
                    CacheEvent::Updated { path, node }
                        if path.ends_with("/a") && node.data == value.as_bytes() =>
                    {
                        break;
                    }
                    _ => {}
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("round {round}: no event after the reconnection"));
        // Cut again: the re-registered watch must itself survive a reconnection.
        proxy.cut();
        tokio::time::timeout(
            Duration::from_secs(20),
            states.wait_for(|s| s == SessionState::Disconnected),
        )
        .await
        .expect("the reader notices the cut");
        proxy.restore();
        tokio::time::timeout(Duration::from_secs(30), async {
            while events.next().await.unwrap() != CacheEvent::Resynced {}
        })
        .await
        .expect("a resync in time");
    }
    reader.close().await;
    writer.close().await;
}
