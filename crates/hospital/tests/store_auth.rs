//! API tokens and the audit trail in the clinical store, through the public trait as the HTTP
//! server uses it: a file store shared by clones and surviving a reopen, concurrent appends
//! getting distinct increasing sequence numbers, and a store that does not keep tokens or an
//! audit trail refusing rather than pretending.

use std::collections::HashSet;
use std::sync::Arc;

use medkeeper_hospital::PatientId;
use medkeeper_hospital::store::{
    AUDIT_DEFAULT_LIMIT, AUDIT_MAX_LIMIT, AuditQuery, AuditRecord, ClinicalStore, SqliteStore,
    StoreError, TokenRecord,
};

fn token(id: &str, hash: &str, role: &str, created_ms: i64) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        hash: hash.into(),
        role: role.into(),
        patient: None,
        label: format!("{role} token"),
        created_ms,
        revoked_ms: None,
        expires_ms: None,
        replaced_by: None,
    }
}

fn record(at_ms: i64, actor: &str, action: &str, patient: Option<&PatientId>) -> AuditRecord {
    AuditRecord {
        seq: 0,
        at_ms,
        actor: actor.into(),
        role: "doctor".into(),
        action: action.into(),
        patient: patient.cloned(),
        order: None,
        outcome: "ok".into(),
        detail: String::new(),
    }
}

#[tokio::test]
async fn tokens_and_audit_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clinical.db");
    let patient = PatientId::generate();
    let mut mine = token("t-0000000a", &"0a".repeat(32), "patient", 10);
    mine.patient = Some(patient.clone());
    let admin = token("t-0000000b", &"0b".repeat(32), "admin", 20);
    let seq;
    {
        let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::open(&path).unwrap());
        store.insert_token(&mine, None).await.unwrap();
        store.insert_token(&admin, None).await.unwrap();
        assert!(store.revoke_token(&admin.id, 30, None).await.unwrap());
        seq = store
            .append_audit(&record(40, &mine.id, "patient.read", Some(&patient)))
            .await
            .unwrap();
    }
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::open(&path).unwrap());
    assert_eq!(
        store.token_by_hash(&mine.hash).await.unwrap(),
        Some(mine.clone())
    );
    let revoked = store.token_by_hash(&admin.hash).await.unwrap().unwrap();
    assert_eq!(revoked.revoked_ms, Some(30));
    assert_eq!(
        store
            .tokens()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect::<Vec<_>>(),
        [mine.id.clone(), admin.id.clone()]
    );
    let trail = store
        .audit(&AuditQuery {
            patient: Some(patient.clone()),
            ..AuditQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(trail.len(), 1);
    assert_eq!(trail[0].seq, seq);
    assert_eq!(trail[0].actor, mine.id);
    // A new append continues the sequence.
    let next = store
        .append_audit(&record(50, "cli", "token.revoke", None))
        .await
        .unwrap();
    assert!(next > seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_get_distinct_increasing_seqs() {
    let store = SqliteStore::in_memory().unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                for j in 0..25 {
                    let r = record(i * 100 + j, &format!("t-{i}"), "order.read", None);
                    seqs.push(store.append_audit(&r).await.unwrap());
                }
                seqs
            })
        })
        .collect();
    let mut all = HashSet::new();
    for t in tasks {
        let seqs = t.await.unwrap();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        all.extend(seqs);
    }
    assert_eq!(all.len(), 200);
    // The default limit: the most recent hundred, ascending.
    let recent = store.audit(&AuditQuery::default()).await.unwrap();
    assert_eq!(recent.len(), AUDIT_DEFAULT_LIMIT as usize);
    assert!(recent.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(recent.last().unwrap().seq, *all.iter().max().unwrap());
    // Paging forward through everything, a page at a time.
    let mut seen = Vec::new();
    let mut q = AuditQuery {
        limit: Some(64),
        after_seq: Some(0),
        ..AuditQuery::default()
    };
    loop {
        let page = store.audit(&q).await.unwrap();
        let Some(last) = page.last() else { break };
        q.after_seq = Some(last.seq);
        seen.extend(page.into_iter().map(|r| r.seq));
    }
    let mut want: Vec<i64> = all.into_iter().collect();
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(
        AuditQuery {
            limit: Some(AUDIT_MAX_LIMIT + 1),
            ..AuditQuery::default()
        }
        .effective_limit(),
        AUDIT_MAX_LIMIT
    );
}

#[tokio::test]
async fn duplicate_tokens_are_exists() {
    let store: Arc<dyn ClinicalStore> = Arc::new(SqliteStore::in_memory().unwrap());
    let t = token("t-0000000a", "aa", "nurse", 1);
    store.insert_token(&t, None).await.unwrap();
    for dup in [
        token("t-0000000b", "aa", "admin", 2),
        token("t-0000000a", "bb", "admin", 2),
    ] {
        assert!(matches!(
            store.insert_token(&dup, None).await,
            Err(StoreError::Exists(_))
        ));
    }
    assert_eq!(store.tokens().await.unwrap(), vec![t]);
}
