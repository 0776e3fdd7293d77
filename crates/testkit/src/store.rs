//! A forwarding [`ClinicalStore`] wrapper with hooks: a test implements [`StoreHooks`] for its
//! own type, overriding only the methods it changes (fails a write, reports one); every other
//! method goes to [`StoreHooks::inner`] unchanged.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use medkeeper_hospital::Transition;
//! use medkeeper_hospital::store::{AuditRecord, ClinicalStore, SqliteStore, StoreError};
//! use medkeeper_testkit::store::{HookedStore, StoreHooks};
//!
//! /// Fails the next transition, as if the process died before writing it.
//! struct DiesBeforeTransition {
//!     inner: SqliteStore,
//!     dead: AtomicBool,
//! }
//!
//! #[async_trait::async_trait]
//! impl StoreHooks for DiesBeforeTransition {
//!     fn inner(&self) -> &dyn ClinicalStore {
//!         &self.inner
//!     }
//!     async fn transition(
//!         &self,
//!         t: &Transition,
//!         audit: Option<&AuditRecord>,
//!     ) -> Result<bool, StoreError> {
//!         if self.dead.swap(false, Ordering::SeqCst) {
//!             return Err(StoreError::Backend("injected".into()));
//!         }
//!         self.inner.transition(t, audit).await
//!     }
//! }
//!
//! let store = Arc::new(HookedStore(DiesBeforeTransition {
//!     inner: SqliteStore::in_memory().unwrap(),
//!     dead: AtomicBool::new(false),
//! }));
//! store.dead.store(true, Ordering::SeqCst); // the wrapper's own fields, through `Deref`
//! let as_store: Arc<dyn ClinicalStore> = store.clone();
//! # let _ = as_store;
//! ```

use async_trait::async_trait;
use medkeeper_hospital::store::{
    AlarmEvent, AlarmQuery, AuditQuery, AuditRecord, ClinicalStore, ExamResult, Patient,
    StoreError, TokenRecord,
};
use medkeeper_hospital::{Order, OrderId, OrderState, PatientId, Priority, Transition};

/// The methods of a [`ClinicalStore`], each forwarded to [`inner`](StoreHooks::inner) unless
/// overridden. [`HookedStore`] makes the implementor a store.
#[async_trait]
#[allow(missing_docs)] // each method is the `ClinicalStore` method of the same name
pub trait StoreHooks: Send + Sync + 'static {
    /// The store every method not overridden goes to.
    fn inner(&self) -> &dyn ClinicalStore;

    async fn upsert_patient(&self, patient: &Patient) -> Result<(), StoreError> {
        self.inner().upsert_patient(patient).await
    }
    async fn insert_patient(
        &self,
        patient: &Patient,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.inner().insert_patient(patient, audit).await
    }
    async fn patient(&self, id: &PatientId) -> Result<Option<Patient>, StoreError> {
        self.inner().patient(id).await
    }
    async fn insert_order(
        &self,
        order: &Order,
        actor: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.inner().insert_order(order, actor, audit).await
    }
    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        self.inner().order(id).await
    }
    async fn transition(
        &self,
        t: &Transition,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        self.inner().transition(t, audit).await
    }
    async fn set_priority(
        &self,
        id: &OrderId,
        priority: Priority,
        at_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        self.inner().set_priority(id, priority, at_ms, audit).await
    }
    async fn orders_updated(
        &self,
        since_ms: i64,
        before_ms: i64,
        after: Option<(i64, OrderId)>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        self.inner()
            .orders_updated(since_ms, before_ms, after, limit)
            .await
    }
    async fn reconciled_until(&self) -> Result<Option<i64>, StoreError> {
        self.inner().reconciled_until().await
    }
    async fn set_reconciled_until(&self, ms: i64) -> Result<(), StoreError> {
        self.inner().set_reconciled_until(ms).await
    }
    async fn transitions(&self, id: &OrderId) -> Result<Vec<Transition>, StoreError> {
        self.inner().transitions(id).await
    }
    async fn orders_in(&self, states: &[OrderState]) -> Result<Vec<Order>, StoreError> {
        self.inner().orders_in(states).await
    }
    async fn order_counts(&self) -> Result<Vec<(OrderState, u64)>, StoreError> {
        self.inner().order_counts().await
    }
    async fn orders_of(&self, patient: &PatientId) -> Result<Vec<Order>, StoreError> {
        self.inner().orders_of(patient).await
    }
    async fn put_result(&self, result: &ExamResult) -> Result<(), StoreError> {
        self.inner().put_result(result).await
    }
    async fn result(&self, id: &OrderId) -> Result<Option<ExamResult>, StoreError> {
        self.inner().result(id).await
    }
    async fn insert_token(
        &self,
        token: &TokenRecord,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.inner().insert_token(token, audit).await
    }
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.inner().token_by_hash(hash).await
    }
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.inner().tokens().await
    }
    async fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.inner().token_by_id(id).await
    }
    async fn rotate_token(
        &self,
        old: &str,
        old_expires_ms: i64,
        new: &TokenRecord,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        self.inner()
            .rotate_token(old, old_expires_ms, new, audit)
            .await
    }
    async fn revoke_token(
        &self,
        id: &str,
        at_ms: i64,
        audit: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        self.inner().revoke_token(id, at_ms, audit).await
    }
    async fn append_audit(&self, record: &AuditRecord) -> Result<i64, StoreError> {
        self.inner().append_audit(record).await
    }
    async fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.inner().audit(query).await
    }
    async fn record_alarm_events(&self, events: &[AlarmEvent]) -> Result<usize, StoreError> {
        self.inner().record_alarm_events(events).await
    }
    async fn alarm_events(&self, query: &AlarmQuery) -> Result<Vec<AlarmEvent>, StoreError> {
        self.inner().alarm_events(query).await
    }
    async fn write_observations(
        &self,
        observations: &[(
            medkeeper_hospital::vitals::Observation,
            medkeeper_hospital::store::Revision,
        )],
        raw: &medkeeper_hospital::store::RawMessage,
        audit: Option<&AuditRecord>,
    ) -> Result<Vec<medkeeper_hospital::vitals::Observation>, StoreError> {
        self.inner()
            .write_observations(observations, raw, audit)
            .await
    }
    async fn observations(
        &self,
        query: &medkeeper_hospital::store::ObservationQuery,
    ) -> Result<Vec<medkeeper_hospital::vitals::Observation>, StoreError> {
        self.inner().observations(query).await
    }
    async fn patient_by_identifier(
        &self,
        system: &str,
        value: &str,
    ) -> Result<Option<PatientId>, StoreError> {
        self.inner().patient_by_identifier(system, value).await
    }
    async fn set_identifier(
        &self,
        patient: &PatientId,
        system: &str,
        value: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.inner()
            .set_identifier(patient, system, value, audit)
            .await
    }
    async fn patient_settings(
        &self,
        patient: &PatientId,
    ) -> Result<medkeeper_hospital::store::PatientSettings, StoreError> {
        self.inner().patient_settings(patient).await
    }
    async fn set_patient_settings(
        &self,
        patient: &PatientId,
        settings: &medkeeper_hospital::store::PatientSettings,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.inner()
            .set_patient_settings(patient, settings, audit)
            .await
    }
    async fn insert_news2(
        &self,
        record: &medkeeper_hospital::store::News2Record,
    ) -> Result<bool, StoreError> {
        self.inner().insert_news2(record).await
    }
    async fn news2_scores(
        &self,
        patient: &PatientId,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<medkeeper_hospital::store::News2Record>, StoreError> {
        self.inner().news2_scores(patient, since_ms, limit).await
    }
    async fn insert_pool_samples(
        &self,
        samples: &[medkeeper_hospital::store::PoolSample],
    ) -> Result<usize, StoreError> {
        self.inner().insert_pool_samples(samples).await
    }
    async fn pool_samples(
        &self,
        since_ms: i64,
        until_ms: i64,
        pool: Option<&medkeeper_hospital::Pool>,
    ) -> Result<Vec<medkeeper_hospital::store::PoolSample>, StoreError> {
        self.inner().pool_samples(since_ms, until_ms, pool).await
    }
    async fn prune_pool_samples(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.inner().prune_pool_samples(before_ms).await
    }
}

/// `H` as a [`ClinicalStore`]: every method goes to the hook of the same name. Dereferences
/// to `H`, so a test keeps reaching its wrapper's own fields (its switches).
pub struct HookedStore<H>(pub H);

impl<H> std::ops::Deref for HookedStore<H> {
    type Target = H;
    fn deref(&self) -> &H {
        &self.0
    }
}

#[async_trait]
impl<H: StoreHooks> ClinicalStore for HookedStore<H> {
    async fn upsert_patient(&self, p: &Patient) -> Result<(), StoreError> {
        self.0.upsert_patient(p).await
    }
    async fn insert_patient(&self, p: &Patient, a: Option<&AuditRecord>) -> Result<(), StoreError> {
        self.0.insert_patient(p, a).await
    }
    async fn patient(&self, id: &PatientId) -> Result<Option<Patient>, StoreError> {
        self.0.patient(id).await
    }
    async fn insert_order(
        &self,
        o: &Order,
        actor: &str,
        a: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.0.insert_order(o, actor, a).await
    }
    async fn order(&self, id: &OrderId) -> Result<Option<Order>, StoreError> {
        self.0.order(id).await
    }
    async fn transition(
        &self,
        t: &Transition,
        a: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        self.0.transition(t, a).await
    }
    async fn set_priority(
        &self,
        id: &OrderId,
        p: Priority,
        at_ms: i64,
        a: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        self.0.set_priority(id, p, at_ms, a).await
    }
    async fn orders_updated(
        &self,
        since: i64,
        before: i64,
        after: Option<(i64, OrderId)>,
        limit: u32,
    ) -> Result<Vec<Order>, StoreError> {
        self.0.orders_updated(since, before, after, limit).await
    }
    async fn reconciled_until(&self) -> Result<Option<i64>, StoreError> {
        self.0.reconciled_until().await
    }
    async fn set_reconciled_until(&self, ms: i64) -> Result<(), StoreError> {
        self.0.set_reconciled_until(ms).await
    }
    async fn transitions(&self, id: &OrderId) -> Result<Vec<Transition>, StoreError> {
        self.0.transitions(id).await
    }
    async fn orders_in(&self, states: &[OrderState]) -> Result<Vec<Order>, StoreError> {
        self.0.orders_in(states).await
    }
    async fn order_counts(&self) -> Result<Vec<(OrderState, u64)>, StoreError> {
        self.0.order_counts().await
    }
    async fn orders_of(&self, p: &PatientId) -> Result<Vec<Order>, StoreError> {
        self.0.orders_of(p).await
    }
    async fn put_result(&self, r: &ExamResult) -> Result<(), StoreError> {
        self.0.put_result(r).await
    }
    async fn result(&self, id: &OrderId) -> Result<Option<ExamResult>, StoreError> {
        self.0.result(id).await
    }
    async fn insert_token(
        &self,
        t: &TokenRecord,
        a: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.0.insert_token(t, a).await
    }
    async fn token_by_hash(&self, h: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.0.token_by_hash(h).await
    }
    async fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.0.tokens().await
    }
    async fn token_by_id(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.0.token_by_id(id).await
    }
    async fn rotate_token(
        &self,
        old: &str,
        old_expires_ms: i64,
        new: &TokenRecord,
        audit: &[AuditRecord],
    ) -> Result<bool, StoreError> {
        self.0.rotate_token(old, old_expires_ms, new, audit).await
    }
    async fn revoke_token(
        &self,
        id: &str,
        at_ms: i64,
        a: Option<&AuditRecord>,
    ) -> Result<bool, StoreError> {
        self.0.revoke_token(id, at_ms, a).await
    }
    async fn append_audit(&self, r: &AuditRecord) -> Result<i64, StoreError> {
        self.0.append_audit(r).await
    }
    async fn audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.0.audit(q).await
    }
    async fn record_alarm_events(&self, events: &[AlarmEvent]) -> Result<usize, StoreError> {
        self.0.record_alarm_events(events).await
    }
    async fn alarm_events(&self, q: &AlarmQuery) -> Result<Vec<AlarmEvent>, StoreError> {
        self.0.alarm_events(q).await
    }
    async fn write_observations(
        &self,
        observations: &[(
            medkeeper_hospital::vitals::Observation,
            medkeeper_hospital::store::Revision,
        )],
        raw: &medkeeper_hospital::store::RawMessage,
        audit: Option<&AuditRecord>,
    ) -> Result<Vec<medkeeper_hospital::vitals::Observation>, StoreError> {
        self.0.write_observations(observations, raw, audit).await
    }
    async fn observations(
        &self,
        query: &medkeeper_hospital::store::ObservationQuery,
    ) -> Result<Vec<medkeeper_hospital::vitals::Observation>, StoreError> {
        self.0.observations(query).await
    }
    async fn patient_by_identifier(
        &self,
        system: &str,
        value: &str,
    ) -> Result<Option<PatientId>, StoreError> {
        self.0.patient_by_identifier(system, value).await
    }
    async fn set_identifier(
        &self,
        patient: &PatientId,
        system: &str,
        value: &str,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.0.set_identifier(patient, system, value, audit).await
    }
    async fn patient_settings(
        &self,
        patient: &PatientId,
    ) -> Result<medkeeper_hospital::store::PatientSettings, StoreError> {
        self.0.patient_settings(patient).await
    }
    async fn set_patient_settings(
        &self,
        patient: &PatientId,
        settings: &medkeeper_hospital::store::PatientSettings,
        audit: Option<&AuditRecord>,
    ) -> Result<(), StoreError> {
        self.0.set_patient_settings(patient, settings, audit).await
    }
    async fn insert_news2(
        &self,
        record: &medkeeper_hospital::store::News2Record,
    ) -> Result<bool, StoreError> {
        self.0.insert_news2(record).await
    }
    async fn news2_scores(
        &self,
        patient: &PatientId,
        since_ms: i64,
        limit: u32,
    ) -> Result<Vec<medkeeper_hospital::store::News2Record>, StoreError> {
        self.0.news2_scores(patient, since_ms, limit).await
    }
    async fn insert_pool_samples(
        &self,
        samples: &[medkeeper_hospital::store::PoolSample],
    ) -> Result<usize, StoreError> {
        self.0.insert_pool_samples(samples).await
    }
    async fn pool_samples(
        &self,
        since_ms: i64,
        until_ms: i64,
        pool: Option<&medkeeper_hospital::Pool>,
    ) -> Result<Vec<medkeeper_hospital::store::PoolSample>, StoreError> {
        self.0.pool_samples(since_ms, until_ms, pool).await
    }
    async fn prune_pool_samples(&self, before_ms: i64) -> Result<u64, StoreError> {
        self.0.prune_pool_samples(before_ms).await
    }
}
