//! Behaviour of the embedded engine beyond the shared contract: durability across restarts,
//! recovery from a torn log tail, snapshots, the directory lock, group commit, and session
//! expiry when a client's runtime stops.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use medkeeper_coord::{
    CreateMode, CreateOptions, Error, EventType, Session, SessionExt, SessionState,
};
use medkeeper_embedded::{Engine, EngineConfig, OpenError, SessionOptions};

fn config(dir: &Path) -> EngineConfig {
    let mut c = EngineConfig::new(dir);
    c.tick = Duration::from_millis(100);
    c.segment_size = 1 << 20;
    c
}

fn persistent() -> CreateOptions {
    CreateOptions::new(CreateMode::Persistent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_every_acknowledged_write_and_zxids_keep_increasing() {
    let dir = tempfile::tempdir().unwrap();
    let (last_zxid, stat_before) = {
        let engine = Engine::open(config(dir.path())).unwrap();
        let s = engine.connect(SessionOptions::default()).await;
        s.ensure_path("/medical/resources").await.unwrap();
        for i in 0..50 {
            s.create(
                &format!("/medical/resources/n{i}"),
                format!("v{i}").as_bytes(),
                &persistent(),
            )
            .await
            .unwrap();
        }
        let st = s
            .set_data("/medical/resources/n7", b"changed", 0)
            .await
            .unwrap();
        s.delete("/medical/resources/n8", -1).await.unwrap();
        let (_, parent) = s.get_data("/medical/resources").await.unwrap();
        s.close().await;
        (st.mzxid, parent)
    };
    let engine = Engine::open(config(dir.path())).unwrap();
    assert!(engine.recovery().replayed > 50);
    let s = engine.connect(SessionOptions::default()).await;
    let (data, st) = s.get_data("/medical/resources/n7").await.unwrap();
    assert_eq!(data, b"changed");
    assert_eq!(st.version, 1);
    assert_eq!(st.mzxid, last_zxid);
    assert_eq!(s.exists("/medical/resources/n8").await.unwrap(), None);
    let (_, parent) = s.get_data("/medical/resources").await.unwrap();
    assert_eq!(
        parent, stat_before,
        "the parent's stat (cversion, pzxid, ...) survives"
    );
    let (_, st) = s.create("/after", b"", &persistent()).await.unwrap();
    assert!(st.czxid > last_zxid, "zxid continues after restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemerals_of_the_previous_process_are_gone_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(config(dir.path())).unwrap();
        let s = engine.connect(SessionOptions::default()).await;
        s.create("/e1", b"", &CreateOptions::new(CreateMode::Ephemeral))
            .await
            .unwrap();
        s.create("/seq", b"", &persistent()).await.unwrap();
        s.create(
            "/seq/x-",
            b"",
            &CreateOptions::new(CreateMode::EphemeralSequential),
        )
        .await
        .unwrap();
        // The process "dies": the engine stops without closing the session.
        std::mem::forget(s);
        engine.shutdown();
    }
    let engine = Engine::open(config(dir.path())).unwrap();
    assert_eq!(engine.recovery().stale_sessions, 1);
    let s = engine.connect(SessionOptions::default()).await;
    assert_eq!(s.exists("/e1").await.unwrap(), None);
    assert!(s.get_children("/seq").await.unwrap().is_empty());
    // The sequence counter is not reset by the deletion.
    let (p, _) = s
        .create(
            "/seq/x-",
            b"",
            &CreateOptions::new(CreateMode::PersistentSequential),
        )
        .await
        .unwrap();
    assert_eq!(p, "/seq/x-0000000001");
}

/// The files in `dir` whose names start with `prefix` (`log.`, `snapshot.`), sorted.
fn files(dir: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with(prefix))
        .collect();
    v.sort();
    v
}

fn newest_segment(dir: &Path) -> std::path::PathBuf {
    files(dir, "log.").pop().unwrap()
}

/// End of the written records in a preallocated segment (records are framed [len][crc][...]).
fn record_ends(seg: &Path) -> Vec<u64> {
    let mut buf = Vec::new();
    fs::File::open(seg).unwrap().read_to_end(&mut buf).unwrap();
    let mut pos = 0usize;
    let mut ends = Vec::new();
    while pos + 8 <= buf.len() {
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        pos += 8 + len;
        ends.push(pos as u64);
    }
    ends
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_log_tail_is_discarded_and_the_engine_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(config(dir.path())).unwrap();
        let s = engine.connect(SessionOptions::default()).await;
        for i in 0..10 {
            s.create(&format!("/n{i}"), b"data", &persistent())
                .await
                .unwrap();
        }
        s.close().await;
    }
    // Tear the last record: keep its header, garble half its payload.
    let seg = newest_segment(dir.path());
    let ends = record_ends(&seg);
    let (start, end) = (ends[ends.len() - 2], ends[ends.len() - 1]);
    let mut f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.seek(SeekFrom::Start(start + 8 + (end - start - 8) / 2))
        .unwrap();
    f.write_all(&[0xAB; 4]).unwrap();
    drop(f);

    let engine = Engine::open(config(dir.path())).unwrap();
    assert!(engine.recovery().discarded_tail.is_some());
    let s = engine.connect(SessionOptions::default()).await;
    for i in 0..9 {
        assert!(
            s.exists(&format!("/n{i}")).await.unwrap().is_some(),
            "/n{i} survives"
        );
    }
    assert_eq!(
        s.exists("/n9").await.unwrap(),
        None,
        "the torn record is gone"
    );
    s.create("/n9", b"again", &persistent()).await.unwrap();
    s.close().await;
    drop(s);
    drop(engine);
    let engine = Engine::open(config(dir.path())).unwrap();
    assert!(
        engine.recovery().discarded_tail.is_none(),
        "the tail was cleaned up"
    );
    let s = engine.connect(SessionOptions::default()).await;
    assert_eq!(s.get_data("/n9").await.unwrap().0, b"again");
}

/// A snapshot is written only once the log holds everything in it, but a power loss can
/// still take the log's newest records (never acknowledged) and keep the snapshot file.
/// Recovery takes the snapshot, and the records after it start a segment of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_ahead_of_the_log_is_recovered_and_the_log_goes_on_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.snapshot_every = 100;
    {
        let engine = Engine::open(c.clone()).unwrap();
        let s = engine.connect(SessionOptions::default()).await;
        for i in 0..120 {
            s.create(&format!("/n{i}"), b"data", &persistent())
                .await
                .unwrap();
        }
        s.close().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(engine.stats().snapshots >= 1);
    }
    // The state of a crash between the snapshot and the new segment: only the first
    // segment, without its last ten records.
    let segs = files(dir.path(), "log.");
    assert!(segs.len() >= 2, "a segment was started after the snapshot");
    for later in &segs[1..] {
        fs::remove_file(later).unwrap();
    }
    let ends = record_ends(&segs[0]);
    let cut = ends[ends.len() - 11];
    let mut f = fs::OpenOptions::new().write(true).open(&segs[0]).unwrap();
    f.seek(SeekFrom::Start(cut)).unwrap();
    f.write_all(&vec![0u8; (ends[ends.len() - 1] - cut) as usize])
        .unwrap();
    drop(f);

    let snapshot_zxid = {
        let engine = Engine::open(c.clone()).unwrap();
        let snapshot_zxid = engine.recovery().snapshot_zxid.expect("a snapshot");
        let s = engine.connect(SessionOptions::default()).await;
        let (_, st) = s.get_children_with_stat("/").await.unwrap();
        // The snapshot's nodes are all there (a zookeeper node and the 100-odd creates).
        assert!(st.num_children >= 99, "{st:?}");
        s.create("/after", b"x", &persistent()).await.unwrap();
        s.close().await;
        snapshot_zxid
    };
    let newest = newest_segment(dir.path());
    assert_eq!(
        newest.file_name().unwrap().to_str().unwrap(),
        format!("log.{:016x}", snapshot_zxid + 1),
        "the records after the snapshot start their own segment"
    );
    let engine = Engine::open(c).unwrap();
    assert!(engine.recovery().discarded_tail.is_none());
    let s = engine.connect(SessionOptions::default()).await;
    assert_eq!(s.get_data("/after").await.unwrap().0, b"x");
}

/// The sync stage starts the segment after a snapshot with the next batch it writes. An
/// engine stopped right after a snapshot never starts it: the next process must not append to
/// the segment from before the snapshot, or pruning after the next snapshot would delete
/// records the older snapshot kept beside it still needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_right_after_a_snapshot_keeps_the_log_recoverable_from_the_older_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.snapshot_every = 100;
    let segments = |dir: &Path| -> Vec<String> {
        files(dir, "log.")
            .into_iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .collect()
    };
    {
        let engine = Engine::open(c.clone()).unwrap();
        let s = engine.connect(SessionOptions::default()).await;
        // One create per batch until the first snapshot is on disk; nothing after it.
        let mut i = 0;
        'writing: loop {
            s.create(&format!("/a{i}"), b"data", &persistent())
                .await
                .unwrap();
            i += 1;
            if i >= 95 {
                for _ in 0..20 {
                    if engine.stats().snapshots >= 1 {
                        break 'writing;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            assert!(i < 200, "no snapshot after {i} creates");
        }
        // Stop the engine before the session (whose close would be a batch of its own).
        drop(engine);
        drop(s);
    }
    assert_eq!(
        segments(dir.path()).len(),
        1,
        "the stop came before the new segment"
    );
    let first = {
        let engine = Engine::open(c.clone()).unwrap();
        let first = engine.recovery().snapshot_zxid.expect("a snapshot");
        let s = engine.connect(SessionOptions::default()).await;
        s.create("/after", b"x", &persistent()).await.unwrap();
        // Enough for a second snapshot, which prunes the segments before the first.
        for i in 0..150 {
            s.create(&format!("/b{i}"), b"data", &persistent())
                .await
                .unwrap();
        }
        s.close().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(engine.stats().snapshots >= 1);
        first
    };
    assert!(
        segments(dir.path()).contains(&format!("log.{:016x}", first + 1)),
        "the records after the first snapshot have their own segment: {:?}",
        segments(dir.path())
    );
    // The newest snapshot unreadable: recovery falls back to the first and its log.
    let snaps = files(dir.path(), "snapshot.");
    assert_eq!(snaps.len(), 2);
    fs::write(snaps.last().unwrap(), b"garbled").unwrap();
    let engine = Engine::open(c).unwrap();
    assert_eq!(engine.recovery().snapshot_zxid, Some(first));
    assert!(engine.recovery().discarded_tail.is_none());
    let s = engine.connect(SessionOptions::default()).await;
    assert_eq!(s.get_data("/after").await.unwrap().0, b"x");
    assert!(s.exists("/b149").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_bound_the_log_and_restore_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.snapshot_every = 100;
    {
        let engine = Engine::open(c.clone()).unwrap();
        let s = engine.connect(SessionOptions::default()).await;
        s.create("/q", b"", &persistent()).await.unwrap();
        for i in 0..1000 {
            s.create(
                "/q/item-",
                format!("{i}").as_bytes(),
                &CreateOptions::new(CreateMode::PersistentSequential),
            )
            .await
            .unwrap();
        }
        for i in (0..1000).step_by(3) {
            s.delete(&format!("/q/item-{i:010}"), -1).await.unwrap();
        }
        s.close().await;
        // Let the background snapshot writer finish.
        tokio::time::sleep(Duration::from_millis(300)).await;
        // 1,334 transactions; the interval is 100 or the tree's size: at least 3 snapshots.
        assert!(engine.stats().snapshots >= 3);
    }
    let snaps = fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_str()
                .unwrap()
                .starts_with("snapshot.")
        })
        .count();
    assert!(snaps <= 3, "old snapshots are pruned (found {snaps})");
    let engine = Engine::open(c).unwrap();
    assert!(engine.recovery().snapshot_zxid.is_some());
    let s = engine.connect(SessionOptions::default()).await;
    let (children, st) = s.get_children_with_stat("/q").await.unwrap();
    assert_eq!(children.len(), 666);
    assert_eq!(st.num_children, 666);
    assert_eq!(st.cversion, 1000 + 334);
    assert_eq!(s.get_data("/q/item-0000000998").await.unwrap().0, b"998");
    let (p, _) = s
        .create(
            "/q/item-",
            b"",
            &CreateOptions::new(CreateMode::PersistentSequential),
        )
        .await
        .unwrap();
    assert_eq!(p, "/q/item-0000001000");
}

#[test]
fn a_second_engine_on_the_same_directory_is_refused_with_the_holder_named() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Engine::open(config(dir.path())).unwrap();
    match Engine::open(config(dir.path())) {
        Err(OpenError::Locked(msg)) => {
            assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        }
        other => panic!("expected Locked, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(config(dir.path())).unwrap();
    let s = Arc::new(engine.connect(SessionOptions::default()).await);
    s.create("/g", b"", &persistent()).await.unwrap();
    let before = engine.stats();
    let mut tasks = Vec::new();
    for w in 0..64 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                s.create(
                    &format!("/g/w{w}-{i}"),
                    b"x",
                    &CreateOptions::new(CreateMode::Persistent),
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let after = engine.stats();
    let txns = after.txns_logged - before.txns_logged;
    let fsyncs = after.fsyncs - before.fsyncs;
    assert_eq!(txns, 64 * 20);
    assert!(fsyncs < txns, "{fsyncs} fsyncs for {txns} writes");
    assert_eq!(after.durable_zxid, after.zxid);
}

#[test]
fn a_client_whose_runtime_stops_loses_its_session() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::open(config(dir.path())).unwrap());
    let observer_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let observer = observer_rt.block_on(engine.connect(SessionOptions {
        timeout: Duration::from_secs(2),
    }));

    // The client lives on its own single-threaded runtime, which we then block, as a long GC
    // pause or a stopped process would.
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = client_rt.block_on(engine.connect(SessionOptions {
        timeout: Duration::from_millis(300),
    }));
    assert_eq!(client.session_timeout(), Duration::from_millis(300));
    client_rt
        .block_on(client.create("/holder", b"", &CreateOptions::new(CreateMode::Ephemeral)))
        .unwrap();
    let (stat, watch) = observer_rt
        .block_on(observer.exists_watch("/holder"))
        .unwrap();
    assert_eq!(stat.unwrap().ephemeral_owner, client.session_id().0);

    std::thread::sleep(Duration::from_millis(1200)); // the client's runtime does nothing

    let event = observer_rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), watch).await })
        .expect("the ephemeral is deleted when the session expires");
    assert_eq!(event.event_type, EventType::NodeDeleted);
    assert_eq!(client.state(), SessionState::Expired);
    let err = client_rt.block_on(client.get_data("/")).unwrap_err();
    assert_eq!(err, Error::SessionExpired);
    assert!(err.is_session_fatal());
}

/// A session's pipelined requests are applied in the order it sent them, whether each is
/// applied on the caller's thread or queued for the apply thread (another session's writes
/// and snapshots make both happen here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_of_a_session_apply_in_order() {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.snapshot_every = 50;
    let engine = Engine::open(c).unwrap();
    let a = engine.connect(SessionOptions::default()).await;
    let b = Arc::new(engine.connect(SessionOptions::default()).await);
    a.create("/fifo", b"", &persistent()).await.unwrap();
    let seq = CreateOptions::new(CreateMode::PersistentSequential);
    for round in 0..5 {
        let other = {
            let (b, seq) = (b.clone(), seq.clone());
            tokio::spawn(async move {
                for _ in 0..200 {
                    b.create("/fifo/b-", b"", &seq).await.unwrap();
                }
            })
        };
        type Create<'a> = Pin<
            Box<
                dyn Future<Output = medkeeper_coord::Result<(String, medkeeper_coord::Stat)>>
                    + Send
                    + 'a,
            >,
        >;
        let mut futs: Vec<Create> = (0..200)
            .map(|_| Box::pin(a.create("/fifo/a-", b"", &seq)) as Create)
            .collect();
        let mut done: Vec<Option<String>> = vec![None; futs.len()];
        std::future::poll_fn(|cx| {
            let mut pending = false;
            for (i, f) in futs.iter_mut().enumerate() {
                if done[i].is_none() {
                    match f.as_mut().poll(cx) {
                        Poll::Ready(r) => done[i] = Some(r.unwrap().0),
                        Poll::Pending => pending = true,
                    }
                }
            }
            if pending {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        })
        .await;
        let numbers: Vec<u64> = done
            .into_iter()
            .map(|p| p.unwrap().rsplit('-').next().unwrap().parse().unwrap())
            .collect();
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "round {round}: sequence numbers out of send order: {numbers:?}"
        );
        other.await.unwrap();
    }
    assert!(engine.stats().snapshots >= 1);
}
