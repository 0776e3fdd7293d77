//! Group membership and the service registry: listing with data, conflicts and adoption, loss
//! on expiry seen by a member watch, and re-registration on a new session after an expiry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use medkeeper_coord::{Session, SessionId};
use medkeeper_recipes::membership::{
    MemberEntry, Membership, Registration, RegistrationState, SessionSource,
};
use medkeeper_recipes::{Error, HoldState, LostReason};
use tokio::sync::watch;

use medkeeper_testkit::Backend;

crate::backend_tests!(
    members_are_listed_with_data,
    join_conflict_is_reported_and_own_node_adopted,
    expired_member_disappears_from_watch,
    registration_rejoins_on_a_new_session_after_expiry,
);

fn entry(id: &str, data: &str) -> MemberEntry {
    (id.to_string(), data.as_bytes().to_vec())
}

async fn members_are_listed_with_data(b: &dyn Backend) {
    let dir = format!("{}/members", b.base("members"));
    let watcher = b.session().await;
    let group = Membership::new(watcher.clone(), &dir).unwrap();
    assert!(
        group.members().await.unwrap().is_empty(),
        "no directory yet"
    );
    let mut sessions = Vec::new();
    let mut members = Vec::new();
    for (id, data) in [("sched-b", r#"{"port":2}"#), ("sched-a", r#"{"port":1}"#)] {
        let s = b.session().await;
        sessions.push(s.clone());
        let m = Membership::new(s, &dir)
            .unwrap()
            .join(id, data.as_bytes().to_vec())
            .await
            .unwrap();
        assert_eq!(m.state(), HoldState::Held);
        members.push(m);
    }
    assert_eq!(
        group.members().await.unwrap(),
        [
            entry("sched-a", r#"{"port":1}"#),
            entry("sched-b", r#"{"port":2}"#)
        ]
    );
    let stat = watcher
        .exists(&format!("{dir}/sched-a"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stat.ephemeral_owner, sessions[1].session_id().0);

    let mut follow = group.watch();
    assert_eq!(follow.next().await.unwrap().len(), 2);
    members[0].update(br#"{"port":3}"#).await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), follow.next())
            .await
            .unwrap()
            .unwrap(),
        [
            entry("sched-a", r#"{"port":1}"#),
            entry("sched-b", r#"{"port":3}"#)
        ],
        "a data update is seen"
    );
    let b_member = members.remove(0);
    b_member.leave().await.unwrap();
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), follow.next())
            .await
            .unwrap()
            .unwrap(),
        [entry("sched-a", r#"{"port":1}"#)]
    );
    drop(members);
    wait_members(&group, &[]).await;
    for s in sessions {
        s.close().await;
    }
    watcher.close().await;
}

async fn wait_members(group: &Membership, want: &[MemberEntry]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = group.members().await.unwrap();
        if now == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "members {now:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn join_conflict_is_reported_and_own_node_adopted(b: &dyn Backend) {
    let dir = format!("{}/members", b.base("conflict"));
    let s1 = b.session().await;
    let s2 = b.session().await;
    let g1 = Membership::new(s1.clone(), &dir).unwrap();
    let g2 = Membership::new(s2.clone(), &dir).unwrap();
    let m1 = g1.join("ct-1", b"one".to_vec()).await.unwrap();
    assert_eq!(
        g2.join("ct-1", b"two".to_vec()).await.unwrap_err(),
        Error::Occupied {
            path: format!("{dir}/ct-1"),
            owner: s1.session_id(),
        }
    );
    // The same session joining again adopts its node, with the new data.
    let again = g1.join("ct-1", b"uno".to_vec()).await.unwrap();
    assert_eq!(again.path(), m1.path());
    assert_eq!(g2.members().await.unwrap(), [entry("ct-1", "uno")]);
    for bad in ["", "a/b", "..", "x\u{1}y"] {
        assert!(
            matches!(
                g1.join(bad, Vec::new()).await,
                Err(Error::InvalidArgument(_))
            ),
            "{bad:?}"
        );
    }
    let huge = vec![0u8; s1.capabilities().max_data_len + 1];
    assert!(matches!(
        g1.join("big", huge).await,
        Err(Error::InvalidArgument(_))
    ));
    // The two members share the node: the first to leave removes it, the other sees that.
    again.leave().await.unwrap();
    assert!(g2.members().await.unwrap().is_empty());
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), m1.lost())
            .await
            .unwrap(),
        LostReason::NodeDeleted
    );
    m1.leave().await.unwrap();
    // Now free for the other session.
    let m2 = g2.join("ct-1", b"two".to_vec()).await.unwrap();
    m2.leave().await.unwrap();
    s1.close().await;
    s2.close().await;
}

async fn expired_member_disappears_from_watch(b: &dyn Backend) {
    let dir = format!("{}/members", b.base("expiry"));
    let watcher = b.session().await;
    let group = Membership::new(watcher.clone(), &dir).unwrap();
    let doomed = b.session().await;
    let steady = b.session().await;
    let lost_member = Membership::new(doomed.clone(), &dir)
        .unwrap()
        .join("mri-1", b"a".to_vec())
        .await
        .unwrap();
    let kept = Membership::new(steady.clone(), &dir)
        .unwrap()
        .join("mri-2", b"b".to_vec())
        .await
        .unwrap();
    let mut follow = group.watch();
    assert_eq!(
        follow.next().await.unwrap(),
        [entry("mri-1", "a"), entry("mri-2", "b")]
    );
    b.expire(doomed.as_ref()).await;
    let reason = tokio::time::timeout(Duration::from_secs(10), lost_member.lost())
        .await
        .expect("the member learns it is lost");
    assert_eq!(reason, LostReason::SessionEnded);
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), follow.next())
            .await
            .expect("the watch reports the departure")
            .unwrap(),
        [entry("mri-2", "b")]
    );
    assert_eq!(
        lost_member.update(b"x").await.unwrap_err(),
        Error::Lost(LostReason::SessionEnded)
    );
    lost_member.leave().await.unwrap();
    assert_eq!(kept.state(), HoldState::Held);
    kept.leave().await.unwrap();
    steady.close().await;
    watcher.close().await;
}

/// A session source for a registration: a new session from the backend on every call,
/// remembered so the test can expire it.
struct Reconnecting<'a> {
    backend: &'a dyn Backend,
    handed_out: Mutex<Vec<Arc<dyn Session>>>,
}

#[async_trait]
impl SessionSource for Reconnecting<'_> {
    async fn session(&self) -> medkeeper_recipes::Result<Arc<dyn Session>> {
        let s = self.backend.session().await;
        self.handed_out.lock().unwrap().push(s.clone());
        Ok(s)
    }
}

async fn registered_on(state: &mut watch::Receiver<RegistrationState>) -> SessionId {
    let s = tokio::time::timeout(
        Duration::from_secs(20),
        state.wait_for(|s| matches!(s, RegistrationState::Registered { .. })),
    )
    .await
    .expect("registered in time")
    .unwrap()
    .clone();
    match s {
        RegistrationState::Registered { session } => session,
        _ => unreachable!(),
    }
}

async fn registration_rejoins_on_a_new_session_after_expiry(b: &dyn Backend) {
    let dir = format!("{}/members", b.base("registration"));
    let observer = b.session().await;
    let group = Membership::new(observer.clone(), &dir).unwrap();
    let source = Reconnecting {
        backend: b,
        handed_out: Mutex::new(Vec::new()),
    };
    let registration = Registration::new(&dir, "dispatcher-1", b"v1".to_vec()).unwrap();
    let mut state = registration.state();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = registration.run(&source, async {
        let _ = stopped.await;
    });
    let check = async {
        let first = registered_on(&mut state).await;
        wait_members(&group, &[entry("dispatcher-1", "v1")]).await;
        let s1 = source.handed_out.lock().unwrap().last().unwrap().clone();
        assert_eq!(s1.session_id(), first);
        b.expire(s1.as_ref()).await;
        // Re-registered on a new session, with the data it had.
        state
            .wait_for(
                |s| !matches!(s, RegistrationState::Registered { session } if *session == first),
            )
            .await
            .unwrap();
        let second = registered_on(&mut state).await;
        assert_ne!(second, first);
        wait_members(&group, &[entry("dispatcher-1", "v1")]).await;
        let stat = observer
            .exists(&format!("{dir}/dispatcher-1"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stat.ephemeral_owner, second.0);
        registration.set_data(b"v2".to_vec());
        wait_members(&group, &[entry("dispatcher-1", "v2")]).await;
        stop.send(()).unwrap();
    };
    let (ran, ()) = tokio::join!(run, check);
    ran.unwrap();
    assert_eq!(*registration.state().borrow(), RegistrationState::Stopped);
    assert!(group.members().await.unwrap().is_empty(), "left on stop");
    assert_eq!(source.handed_out.lock().unwrap().len(), 2);
    let handed_out: Vec<_> = source.handed_out.lock().unwrap().drain(..).collect();
    for s in handed_out {
        s.close().await;
    }
    observer.close().await;
}
