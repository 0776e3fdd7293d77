//! [`Faulty`]: a session that forwards every call to another and injects the faults a test
//! switches on — a lost reply to a `create` or a `multi` that was applied — or counts the
//! watch notifications delivered through it.
//!
//! It exists so that code above the [`Session`] API (recipes, the hospital domain) can test
//! its handling of a lost reply — the request applied, the client told `ConnectionLoss` — on
//! any backend.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use medkeeper_coord::{
    CreateOptions, Error, EventType, MultiError, OneshotWatch, Op, OpResult, Result, Session, Stat,
};

use crate::session::SessionHooks;

/// A session that forwards every call to another, with the faults and counters a case switches
/// on: `Faulty::wrap(s).count_watches(fired).lose_next_create_reply().into_session()`.
pub struct Faulty {
    inner: Arc<dyn Session>,
    /// Where fired one-shot watch notifications are counted (node events only, not
    /// session-end events), if anywhere.
    fired: Option<Arc<AtomicUsize>>,
    /// The next `create` is applied but answered with `ConnectionLoss`.
    lose_create_reply: AtomicBool,
    /// The next multi that creates something is applied but answered with `ConnectionLoss`.
    lose_multi_reply: AtomicBool,
}

impl Faulty {
    /// `inner`, unchanged until a fault or counter is switched on.
    pub fn wrap(inner: Arc<dyn Session>) -> Faulty {
        Faulty {
            inner,
            fired: None,
            lose_create_reply: AtomicBool::new(false),
            lose_multi_reply: AtomicBool::new(false),
        }
    }

    /// Counts the one-shot watch notifications delivered through this session into `fired`.
    pub fn count_watches(mut self, fired: Arc<AtomicUsize>) -> Faulty {
        self.fired = Some(fired);
        self
    }

    /// Applies the next `create` but answers it with `ConnectionLoss`, as when the connection
    /// drops after the request was sent and before its reply arrived.
    pub fn lose_next_create_reply(self) -> Faulty {
        self.lose_create_reply.store(true, Ordering::SeqCst);
        self
    }

    /// Applies the next multi that creates something but answers it with `ConnectionLoss`.
    pub fn lose_next_multi_reply(self) -> Faulty {
        self.lose_multi_reply.store(true, Ordering::SeqCst);
        self
    }

    /// The wrapper as a session.
    pub fn into_session(self) -> Arc<dyn Session> {
        SessionHooks::into_session(self)
    }

    fn count(&self, watch: OneshotWatch) -> OneshotWatch {
        let Some(fired) = self.fired.clone() else {
            return watch;
        };
        OneshotWatch::from_future(async move {
            let event = watch.await;
            if event.event_type != EventType::Session {
                fired.fetch_add(1, Ordering::SeqCst);
            }
            event
        })
    }
}

#[async_trait]
impl SessionHooks for Faulty {
    fn inner(&self) -> &dyn Session {
        self.inner.as_ref()
    }
    async fn create(&self, p: &str, d: &[u8], o: &CreateOptions) -> Result<(String, Stat)> {
        let r = self.inner.create(p, d, o).await;
        if r.is_ok() && self.lose_create_reply.swap(false, Ordering::SeqCst) {
            return Err(Error::ConnectionLoss);
        }
        r
    }
    async fn exists_watch(&self, p: &str) -> Result<(Option<Stat>, OneshotWatch)> {
        let (s, w) = self.inner.exists_watch(p).await?;
        Ok((s, self.count(w)))
    }
    async fn get_data_watch(&self, p: &str) -> Result<(Vec<u8>, Stat, OneshotWatch)> {
        let (d, s, w) = self.inner.get_data_watch(p).await?;
        Ok((d, s, self.count(w)))
    }
    async fn get_children_watch(&self, p: &str) -> Result<(Vec<String>, Stat, OneshotWatch)> {
        let (c, s, w) = self.inner.get_children_watch(p).await?;
        Ok((c, s, self.count(w)))
    }
    async fn multi(&self, ops: &[Op]) -> Result<Vec<OpResult>, MultiError> {
        let r = self.inner.multi(ops).await;
        let creates = ops.iter().any(|o| matches!(o, Op::Create { .. }));
        if r.is_ok() && creates && self.lose_multi_reply.swap(false, Ordering::SeqCst) {
            return Err(MultiError::whole(Error::ConnectionLoss));
        }
        r
    }
}
