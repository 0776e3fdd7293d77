//! The read model of a pool: an in-memory copy of the pool's subtree (its units, its queue and
//! its dispatch lock), kept current by one persistent recursive watch ([`TreeCache`]), one per
//! pool and coordination session ([`Hospital::pool_model`](crate::orders::Hospital::pool_model)).
//!
//! # What reads it
//! The pool's dispatcher: its rounds, the no-show deadlines and the patients' places in line
//! are computed from the copy, so a round sends no read at all — only its writes (the
//! assignment multi, the call's store and patient-node writes). Time-driven work (ageing,
//! no-shows, estimated waits) is recomputed from the copy on the dispatcher's tick without a
//! request.
//!
//! # Staleness, and why it is safe
//! The copy is eventually consistent: after a change it lags by the watch event's delivery and
//! the cache's read of the node. Nothing decided from it is trusted: every assignment is the
//! version-checked, fenced multi ([`crate::dispatch`]) against the unit version the copy holds,
//! and deletes the queue item the copy lists. A stale copy costs one failed multi (the unit
//! changed: `BadVersion`; the item is gone: `NoNode`) and a later round; it can never call two
//! patients to one unit or one patient twice. [`PoolModel::settle`] brings the copy up to every
//! event received so far — after it the copy shows this session's own writes — without a
//! request, which a round does first.
//!
//! # Cost
//! Starting it reads the subtree once. Then each change costs the cache one read of the
//! changed node (two for a created node: its data and, if it has any, its children); deletions
//! cost nothing.

use std::sync::Arc;

use medkeeper_coord::Session;
use medkeeper_recipes::PriorityQueue;
use medkeeper_recipes::queue::ItemInfo;
use medkeeper_recipes::{CacheEvents, CacheState, TreeCache};

use crate::model::Pool;
use crate::tree::{self, QueueEntry, UnitNode};
use crate::{Error, Result};

/// A unit (or doctor) as the read model holds it: its name, its node and the node's version
/// (what an assignment's multi checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedUnit {
    /// The unit's name.
    pub name: String,
    /// What its node says.
    pub node: UnitNode,
    /// The node's version as cached.
    pub version: i32,
}

/// A waiting order as the read model holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedItem {
    /// The queue item (its class, effective class now, arrival; `claimed` from the claims).
    pub info: ItemInfo,
    /// What the item holds.
    pub entry: QueueEntry,
}

/// The read model of one pool (see the module docs).
pub struct PoolModel {
    pool: Pool,
    pool_path: String,
    queue: PriorityQueue,
    cache: TreeCache,
}

impl std::fmt::Debug for PoolModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolModel")
            .field("pool", &self.pool)
            .field("state", &self.cache.state())
            .finish()
    }
}

impl PoolModel {
    /// Loads the pool's subtree and starts following it. `queue` is the pool's queue (its
    /// directory, targets, ageing floor and clock order the items).
    ///
    /// # Notable errors
    /// A session-fatal error if the session has ended.
    pub async fn start(
        session: Arc<dyn Session>,
        pool: Pool,
        queue: PriorityQueue,
    ) -> Result<PoolModel> {
        let pool_path = tree::pool_path(&pool);
        let cache = TreeCache::start(session, pool_path.clone()).await?;
        Ok(PoolModel {
            pool,
            pool_path,
            queue,
            cache,
        })
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Live, suspended (connection lost: maybe stale) or ended (the session is gone).
    pub fn state(&self) -> CacheState {
        self.cache.state()
    }

    /// Returns once every watch event received so far is applied: the model then shows this
    /// session's own writes. Sends no request.
    pub async fn settle(&self) {
        self.cache.settle().await
    }

    /// The changes from now on (every event of the pool's subtree, the lock line's included).
    pub fn subscribe(&self) -> CacheEvents {
        self.cache.subscribe()
    }

    /// The pool's units (or doctors), by name. A node that does not parse is skipped (and
    /// logged): a round must not stop for one bad node.
    pub fn units(&self) -> Vec<CachedUnit> {
        self.cache
            .children(&self.pool_path)
            .into_iter()
            .filter(|n| !tree::RESERVED.contains(&n.as_str()))
            .filter_map(|name| {
                let node = self.cache.get(&tree::unit_path(&self.pool, &name))?;
                match tree::from_json::<UnitNode>("unit", &node.data) {
                    Ok(u) => Some(CachedUnit {
                        name,
                        node: u,
                        version: node.stat.version,
                    }),
                    Err(e) => {
                        tracing::warn!(pool = %self.pool, unit = %name, error = %e, "skipping a malformed unit node");
                        None
                    }
                }
            })
            .collect()
    }

    /// The waiting orders in dequeue order now (effective class after ageing, then arrival),
    /// each with whether a consumer claims it. Items that do not parse are skipped.
    pub fn queue(&self) -> Vec<CachedItem> {
        let claimed = self.cache.children(self.queue.claims_path());
        let mut items = self
            .queue
            .order_of(self.cache.children(self.queue.items_path()));
        for i in &mut items {
            i.claimed = claimed.binary_search(&i.id.as_str().to_string()).is_ok();
        }
        items
            .into_iter()
            .filter_map(|info| {
                let node = self.cache.get(&self.queue.item_path(&info.id))?;
                match tree::from_json::<QueueEntry>("queue item", &node.data) {
                    Ok(entry) => Some(CachedItem { info, entry }),
                    Err(e) => {
                        tracing::warn!(item = info.id.as_str(), error = %e, "skipping a malformed queue item");
                        None
                    }
                }
            })
            .collect()
    }

    /// The names of the instances standing for the pool's dispatch lock, in line order (the
    /// first holds it): the lock's children, by sequence.
    pub fn lock_line(&self) -> Vec<String> {
        let mut line = self.cache.children(&tree::lock_path(&self.pool));
        line.sort_by_key(|n| medkeeper_recipes::sequence_of(n).unwrap_or(i64::MAX));
        line
    }

    /// Fails unless the model is following the tree (for a caller that must not act on a
    /// frozen copy).
    pub fn ensure_live(&self) -> Result<()> {
        match self.state() {
            CacheState::Ended(_) => Err(Error::Coord(medkeeper_coord::Error::SessionExpired)),
            _ => Ok(()),
        }
    }
}
