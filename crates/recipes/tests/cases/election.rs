//! Leader election: one leader at a time, hand-over in order, leadership lost on expiry,
//! the leader's identity readable by everyone.

use std::time::Duration;

use medkeeper_recipes::election::{self, Election};
use medkeeper_recipes::{Error, HoldState, LostReason};

use medkeeper_testkit::Backend;

crate::backend_tests!(
    one_leader_and_ordered_hand_over,
    expired_leader_loses_and_next_is_known_to_all,
);

async fn one_leader_and_ordered_hand_over(b: &dyn Backend) {
    let dir = format!("{}/leader", b.base("elect"));
    let (s1, s2, s3) = (b.session().await, b.session().await, b.session().await);
    let e1 = Election::new(s1.clone(), &dir, "instance-1").unwrap();
    let e2 = Election::new(s2.clone(), &dir, "instance-2").unwrap();
    let e3 = Election::new(s3.clone(), &dir, "instance-3").unwrap();
    assert_eq!(e3.leader().await.unwrap(), None);
    let l1 = e1.campaign().await.unwrap();
    assert!(l1.is_leader());
    let t2 = tokio::spawn(async move { e2.campaign().await });
    while e1.participants().await.unwrap().len() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        e3.campaign_timeout(Duration::from_millis(100))
            .await
            .unwrap_err(),
        Error::Timeout
    );
    let leader = e3.leader().await.unwrap().unwrap();
    assert_eq!(leader.id, "instance-1");
    let watcher = {
        let e3 = e3.clone();
        let known = leader.clone();
        tokio::spawn(async move { e3.leader_change(Some(&known)).await })
    };
    let t1 = l1.fencing_token();
    l1.resign().await.unwrap();
    let l2 = t2.await.unwrap().unwrap();
    assert_eq!(l2.id(), "instance-2");
    assert!(l2.fencing_token() > t1);
    let seen = watcher.await.unwrap().unwrap().unwrap();
    assert_eq!(seen.id, "instance-2");
    assert_eq!(
        election::leader(s1.as_ref(), &dir)
            .await
            .unwrap()
            .unwrap()
            .id,
        "instance-2"
    );
    l2.resign().await.unwrap();
    for s in [s1, s2, s3] {
        s.close().await;
    }
}

async fn expired_leader_loses_and_next_is_known_to_all(b: &dyn Backend) {
    let dir = format!("{}/leader", b.base("elect-expire"));
    let (s1, s2, obs) = (b.session().await, b.session().await, b.session().await);
    let e1 = Election::new(s1.clone(), &dir, "a").unwrap();
    let e2 = Election::new(s2.clone(), &dir, "b").unwrap();
    let observer = Election::new(obs.clone(), &dir, "observer").unwrap();
    let l1 = e1.campaign().await.unwrap();
    let t2 = tokio::spawn(async move { e2.campaign().await });
    while observer.participants().await.unwrap().len() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let known = observer.leader().await.unwrap().unwrap();
    b.expire(s1.as_ref()).await;
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), l1.lost())
            .await
            .unwrap(),
        LostReason::SessionEnded
    );
    assert_eq!(l1.state(), HoldState::Lost(LostReason::SessionEnded));
    let l2 = tokio::time::timeout(Duration::from_secs(20), t2)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let new = observer.leader_change(Some(&known)).await.unwrap().unwrap();
    assert_eq!(new.id, "b");
    assert!(l2.is_leader());
    assert_eq!(
        l1.write(&[]).await.unwrap_err(),
        Error::Lost(LostReason::SessionEnded)
    );
    l2.resign().await.unwrap();
    s2.close().await;
    obs.close().await;
}
