//! A durable priority queue with ageing and crash-safe takes: a patient's place in line that
//! no server crash can lose, served by clinical priority without starving anyone.
//!
//! # Guarantees
//! - **Durable.** An item is a persistent node: it stays until a consumer completes it or
//!   someone removes it, whatever happens to the session that enqueued or took it.
//! - **Order.** Items are served by *(effective class, sequence)*. Classes are `0..targets.len()`,
//!   0 the most urgent; [`STAT`], [`ASAP`], [`URGENT`] and [`ROUTINE`] are FHIR's request
//!   priorities, but the recipe is generic. Within a class items are served in arrival order
//!   (the sequence number the items directory assigns: FIFO, independent of client clocks).
//! - **Ageing, so no class starves.** An item's effective class is
//!   `class.saturating_sub(floor(waited / target[class]))` ([`effective_class`]): an item that
//!   has waited one whole target of its class is served as if it were one class more urgent,
//!   after two targets two classes, down to class 0. Among items of the same effective class the
//!   one that arrived first goes first, so an aged routine item overtakes urgent items that
//!   arrived after it, never those that arrived before it. `waited` is measured from the
//!   enqueue time in the item's name, on the clock of [`QueueConfig::clock`]: clients' clocks
//!   should be synchronised (NTP); skew shifts ageing, never FIFO order within a class.
//! - **Ageing floor.** With [`QueueConfig::with_ageing_floor`]`(f)` ageing never lifts an item
//!   above class `f` unless it was enqueued there ([`effective_class_floored`]): an item
//!   enqueued in a class more urgent than `f` is never behind an aged one. The default floor,
//!   0, ages all the way to class 0. Then a class below the floor cannot starve unless the
//!   classes at or above it saturate the consumers on their own.
//! - **At least once, never lost.** [`PriorityQueue::take`] does not remove the item: it
//!   creates an ephemeral claim beside it. [`Claim::complete`] removes item and claim in one
//!   multi (with [`Claim::complete_with`], together with the caller's own writes — the
//!   dispatcher's atomic assignment); [`Claim::abandon`] or dropping the claim returns the item.
//!   If the consumer's session ends, ZooKeeper deletes the claim and the item is taken again by
//!   another consumer.
//! - **No herd.** Waiting consumers form a fair line (ephemeral-sequential nodes under
//!   `takers/`); only the head reads the queue. If nothing is claimable the head sets one child
//!   watch on `items/` (and, when items exist but all are claimed, one on `claims/`, since an
//!   abandoned claim returns an item); every other consumer watches only its predecessor.
//!   [`PriorityQueue::try_take`] does not wait and so does not join the line.
//!
//! # Consuming without a claim
//! A consumer that alone has the right to consume the queue — medkeeper's dispatcher, which
//! holds the pool's lock — need not claim: it reads the items (from a listing, or from its own
//! copy of the directory, ordered by [`PriorityQueue::order_of`]) and deletes the chosen item
//! ([`PriorityQueue::item_path`]) in the same multi as its own writes, fenced by its lock. The
//! delete fails (`NoNode`) if the item left meanwhile, so the item is still consumed exactly
//! once. [`PriorityQueue::enqueue_with`] is the producer's counterpart: the item created in
//! one multi with the producer's own writes.
//!
//! # Node layout
//! ```text
//! <dir>/items/item-<c>-<ms>-<tag>-<seq>     an item (persistent sequential; data: the caller's)
//! <dir>/claims/<item name>                  a claim (ephemeral; data: "<attempt tag>\n<label>")
//! <dir>/takers/_c_<uuid>-take-0000000003    a waiting consumer (ephemeral sequential)
//! ```
//! The item name `item-<c>-<ms>-<tag>-<seq>` (40 characters) is:
//! `<c>` the class, one digit; `<ms>` the enqueue time, Unix milliseconds, 13 digits; `<tag>` 8
//! hex digits, random per enqueue, so that an enqueue whose reply is lost can find its own item
//! instead of enqueueing twice; `<seq>` the 10-digit sequence number ZooKeeper appended.
//! [`PriorityQueue::reprioritise`] replaces an item by one with the same name but another class
//! digit, created explicitly (not sequentially) in the same multi that deletes the old one, so
//! the item keeps its place in time and in arrival order. ZooKeeper's sequence counter for the
//! directory only moves forward (every create advances it), so it never hands out those digits
//! again and names stay unique. Children of `items/` that do not parse are skipped.
//!
//! # Cost, for n items in the queue
//! - enqueue: one create (O(1) requests);
//! - take: one `get_children` of the n names (and one of the claims, about as many as there are
//!   consumers), O(n log n) local parsing and sorting, one `get_data` of the chosen item and one
//!   multi (claim + leave the line) — plus the line's own create and watch when consumers wait;
//! - complete: one multi; reprioritise: one `get_data` and one multi; list: two `get_children`.
//!
//! A `get_children` answer must fit ZooKeeper's `jute.maxbuffer` (1 MiB by default): at 44
//! bytes per name that is about 23,000 items per queue directory.
//!
//! # Connection loss and session expiry
//! Every write is resolved after a connection loss without duplication: an enqueue finds its
//! item by its tag; a claim is adopted if the claim node exists with this attempt's tag and
//! this session as its `ephemeralOwner` (checked after a write has passed behind the lost
//! request), else tried again; a reprioritise is done when the new name exists; a complete is
//! done when the claim is gone while the session lives. A held [`Claim`]'s
//! [`state`](Claim::state) follows the session by [`ConnectionPolicy`]; when the session
//! expires the claim is gone (another consumer may take the item) and
//! [`Claim::complete`] fails with `Lost(SessionEnded)`.
//!
//! # Cancellation safety
//! [`PriorityQueue::take`] and its variants are cancellation-safe: dropping the future deletes
//! its line node and any claim it created (after the session's earlier requests are applied).
//! An enqueue dropped before its reply may or may not have enqueued the item.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use medkeeper_coord::{CreateMode, CreateOptions, Error as CoordError, Op, OpResult, Session};
use medkeeper_coord::{OneshotWatch, SessionExt, Stat, path};
use tokio::time::Instant;

use crate::hold::{self, Hold, Monitor};
use crate::line::{self, PendingTagged, Waited};
use crate::lock::{mutex_turn, validate_dir};
use crate::{ConnectionPolicy, Error, FencingToken, HoldState, LostReason, Result};

/// FHIR request priority `stat`: class 0, the most urgent.
pub const STAT: u8 = 0;
/// FHIR request priority `asap`: class 1.
pub const ASAP: u8 = 1;
/// FHIR request priority `urgent`: class 2.
pub const URGENT: u8 = 2;
/// FHIR request priority `routine`: class 3.
pub const ROUTINE: u8 = 3;

/// The name part of a waiting consumer's node.
pub const TAKE_MARKER: &str = "take-";

const ITEM_PREFIX: &str = "item-";
const ITEM_NAME_LEN: usize = 40;

fn is_taker(name: &str) -> bool {
    name.contains(TAKE_MARKER) && line::sequence_of(name).is_some()
}

/// Where the queue reads the time (enqueue times, ageing). The system clock by default; tests
/// and simulations inject their own.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> SystemTime + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(Arc::new(SystemTime::now))
    }

    /// A clock that reads `now`.
    pub fn new(now: impl Fn() -> SystemTime + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(now))
    }

    /// The time now.
    pub fn now(&self) -> SystemTime {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// The configuration of a [`PriorityQueue`]: one target wait per class. Every client of one
/// queue should use the same targets (they decide the order).
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The target wait of each class, class 0 first: the classes are `0..targets.len()` (at
    /// most 10). An item that has waited `targets[c]` is served as class `c - 1`, and so on.
    pub targets: Vec<Duration>,
    /// What a connection loss does to a held claim.
    pub policy: ConnectionPolicy,
    /// The consumer's label in its claims (an instance name; never patient data).
    pub label: String,
    /// The clock for enqueue times and ageing.
    pub clock: Clock,
    /// The most urgent class ageing lifts an item to (0 by default: all the way). An item
    /// enqueued in a more urgent class keeps it. Every client of one queue should use the
    /// same floor (it decides the order).
    pub ageing_floor: u8,
}

impl QueueConfig {
    /// A configuration with these targets, the system clock and default policy.
    pub fn new(targets: Vec<Duration>) -> QueueConfig {
        QueueConfig {
            targets,
            policy: ConnectionPolicy::default(),
            label: String::new(),
            clock: Clock::system(),
            ageing_floor: 0,
        }
    }

    /// FHIR's four priorities with example targets: stat 10 min, asap 30 min, urgent 60 min,
    /// routine 4 h (a routine order is served as urgent after 4 h, as stat after 12 h).
    pub fn fhir() -> QueueConfig {
        QueueConfig::new(vec![
            Duration::from_secs(600),
            Duration::from_secs(1800),
            Duration::from_secs(3600),
            Duration::from_secs(4 * 3600),
        ])
    }

    /// With this clock.
    pub fn with_clock(mut self, clock: Clock) -> QueueConfig {
        self.clock = clock;
        self
    }

    /// With this label.
    pub fn with_label(mut self, label: impl Into<String>) -> QueueConfig {
        self.label = label.into();
        self
    }

    /// With this ageing floor: ageing never lifts an item above class `floor` unless it was
    /// enqueued there ([`effective_class_floored`]). With FHIR's classes and floor [`ASAP`], a
    /// genuine stat item is never behind an aged one, while routine items still age to asap.
    pub fn with_ageing_floor(mut self, floor: u8) -> QueueConfig {
        self.ageing_floor = floor;
        self
    }
}

/// The effective class of an item of `class` that has waited `waited`:
/// `class.saturating_sub(floor(waited / targets[class]))`. A class without a target (beyond
/// `targets`, or a zero target) does not age.
pub fn effective_class(class: u8, waited: Duration, targets: &[Duration]) -> u8 {
    match targets.get(usize::from(class)) {
        Some(t) if !t.is_zero() => {
            let steps = waited.as_nanos() / t.as_nanos();
            class.saturating_sub(u8::try_from(steps).unwrap_or(u8::MAX))
        }
        _ => class,
    }
}

/// The effective class of an item of `class` that has waited `waited`, with ageing stopped at
/// class `floor` unless the item was enqueued in a more urgent class:
/// `max(effective_class(class, waited, targets), min(class, floor))`. With `floor` 0 it is
/// [`effective_class`].
pub fn effective_class_floored(class: u8, waited: Duration, targets: &[Duration], floor: u8) -> u8 {
    effective_class(class, waited, targets).max(class.min(floor))
}

/// The identity of an item: its node name, `item-<c>-<ms>-<tag>-<seq>`, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ItemId {
    name: String,
}

impl ItemId {
    /// Parses an item name; `None` if it is not one.
    pub fn parse(name: &str) -> Option<ItemId> {
        ItemId::from_name(name.to_string())
    }

    fn from_name(name: String) -> Option<ItemId> {
        let ok = name.len() == ITEM_NAME_LEN
            && name.is_ascii()
            && name.starts_with(ITEM_PREFIX)
            && name.as_bytes()[5].is_ascii_digit()
            && name.as_bytes()[6] == b'-'
            && name[7..20].bytes().all(|b| b.is_ascii_digit())
            && name.as_bytes()[20] == b'-'
            && name[21..29].bytes().all(|b| b.is_ascii_hexdigit())
            && name.as_bytes()[29] == b'-'
            && name[30..40].bytes().all(|b| b.is_ascii_digit());
        ok.then_some(ItemId { name })
    }

    /// The node name.
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// The class the item was enqueued (or last reprioritised) with.
    pub fn class(&self) -> u8 {
        self.name.as_bytes()[5] - b'0'
    }

    /// The enqueue time, Unix milliseconds.
    pub fn enqueued_at_ms(&self) -> u64 {
        self.name[7..20].parse().unwrap_or(0)
    }

    /// The enqueue time.
    pub fn enqueued_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.enqueued_at_ms())
    }

    /// The sequence number (arrival order in the queue).
    pub fn sequence(&self) -> i64 {
        self.name[30..40].parse().unwrap_or(0)
    }

    /// The same item with another class: the name [`PriorityQueue::reprioritise`] creates.
    fn with_class(&self, class: u8) -> ItemId {
        let mut name = self.name.clone();
        name.replace_range(5..6, &class.to_string());
        ItemId { name }
    }
}

impl std::fmt::Display for ItemId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// An item as [`PriorityQueue::list`] and [`dequeue_order`] report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemInfo {
    /// The item.
    pub id: ItemId,
    /// Its class.
    pub class: u8,
    /// Its class after ageing, at the time of the listing.
    pub effective_class: u8,
    /// When it was enqueued.
    pub enqueued_at: SystemTime,
    /// Its sequence number.
    pub sequence: i64,
    /// Whether a consumer holds a claim on it (always false from [`dequeue_order`]).
    pub claimed: bool,
}

/// The items among `names` (others skipped) in dequeue order at `now`: by effective class
/// ([`effective_class`]), then sequence number. Pure: the clock is the caller's. Ages all the
/// way to class 0; [`dequeue_order_floored`] stops ageing at a floor.
pub fn dequeue_order(
    names: impl IntoIterator<Item = String>,
    now: SystemTime,
    targets: &[Duration],
) -> Vec<ItemInfo> {
    dequeue_order_floored(names, now, targets, 0)
}

/// The items among `names` (others skipped) in dequeue order at `now` with ageing stopped at
/// class `floor`: by effective class ([`effective_class_floored`]), then sequence number. Pure:
/// the clock is the caller's.
pub fn dequeue_order_floored(
    names: impl IntoIterator<Item = String>,
    now: SystemTime,
    targets: &[Duration],
    floor: u8,
) -> Vec<ItemInfo> {
    let mut items: Vec<ItemInfo> = names
        .into_iter()
        .filter_map(ItemId::from_name)
        .map(|id| {
            let enqueued_at = id.enqueued_at();
            let waited = now.duration_since(enqueued_at).unwrap_or_default();
            ItemInfo {
                class: id.class(),
                effective_class: effective_class_floored(id.class(), waited, targets, floor),
                enqueued_at,
                sequence: id.sequence(),
                claimed: false,
                id,
            }
        })
        .collect();
    items.sort_by(|a, b| {
        (a.effective_class, a.sequence, &a.id).cmp(&(b.effective_class, b.sequence, &b.id))
    });
    items
}

/// A durable priority queue under a directory. Cheap to clone.
///
/// ```no_run
/// # async fn demo(session: std::sync::Arc<dyn medkeeper_coord::Session>) -> medkeeper_recipes::Result<()> {
/// use medkeeper_recipes::queue::{PriorityQueue, QueueConfig, STAT};
/// let q = PriorityQueue::new(session, "/medical/resources/equipment/MRI/queue", QueueConfig::fhir())?;
/// q.enqueue(STAT, b"order-7f3a").await?;
/// let claim = q.take().await?;
/// // ... assign the order; fence the assignment with claim.complete_with(&ops) ...
/// claim.complete().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PriorityQueue {
    session: Arc<dyn Session>,
    dir: String,
    items_dir: String,
    claims_dir: String,
    takers_dir: String,
    config: QueueConfig,
}

impl std::fmt::Debug for PriorityQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriorityQueue")
            .field("dir", &self.dir)
            .field("targets", &self.config.targets)
            .finish()
    }
}

impl PriorityQueue {
    /// A queue on `dir`.
    ///
    /// # Notable errors
    /// `InvalidArgument` if there are no targets, more than 10, or a zero one;
    /// `Coord(BadArguments)` for an invalid `dir`, `InvalidArgument` for the root.
    pub fn new(
        session: Arc<dyn Session>,
        dir: impl Into<String>,
        config: QueueConfig,
    ) -> Result<PriorityQueue> {
        let dir = dir.into();
        validate_dir(&dir)?;
        if config.targets.is_empty() || config.targets.len() > 10 {
            return Err(Error::InvalidArgument(
                "a queue needs between 1 and 10 classes".into(),
            ));
        }
        if config.targets.iter().any(Duration::is_zero) {
            return Err(Error::InvalidArgument(
                "a class's target wait must be positive".into(),
            ));
        }
        Ok(PriorityQueue {
            session,
            items_dir: path::join(&dir, "items"),
            claims_dir: path::join(&dir, "claims"),
            takers_dir: path::join(&dir, "takers"),
            dir,
            config,
        })
    }

    /// The queue's directory.
    pub fn path(&self) -> &str {
        &self.dir
    }

    /// The items among `names` (children of [`items_path`](PriorityQueue::items_path); others
    /// skipped) in dequeue order now, by this queue's targets, ageing floor and clock — for a
    /// caller that keeps its own copy of the directory (a tree cache) and needs no listing.
    /// `claimed` is false: the caller knows the claims (children of
    /// [`claims_path`](PriorityQueue::claims_path)).
    pub fn order_of(&self, names: impl IntoIterator<Item = String>) -> Vec<ItemInfo> {
        dequeue_order_floored(
            names,
            self.config.clock.now(),
            &self.config.targets,
            self.config.ageing_floor,
        )
    }

    fn check_class(&self, class: u8) -> Result<()> {
        if usize::from(class) >= self.config.targets.len() {
            return Err(Error::InvalidArgument(format!(
                "class {class} is not one of 0..{}",
                self.config.targets.len()
            )));
        }
        Ok(())
    }

    /// Adds an item of `class` with `data` (an opaque order id; never patient data).
    ///
    /// # Notable errors
    /// `InvalidArgument` for a class without a target. A connection loss during the create is
    /// resolved (the item is found by its tag, or created again): never enqueued twice.
    ///
    /// # Cancellation safety
    /// Not idempotent across cancellation: a dropped enqueue may or may not have enqueued.
    pub async fn enqueue(&self, class: u8, data: &[u8]) -> Result<ItemId> {
        self.enqueue_at(class, data, self.config.clock.now()).await
    }

    /// Adds an item of `class` with `data` as if enqueued at `enqueued_at`: ageing counts from
    /// then (for an item that goes back in line, such as a called patient who did not come).
    /// The sequence number is new, so the item joins its class behind every item enqueued
    /// before this call, whatever their enqueue times. A time after now counts as no wait
    /// until it passes.
    ///
    /// # Notable errors
    /// As [`enqueue`](PriorityQueue::enqueue).
    ///
    /// # Cancellation safety
    /// As [`enqueue`](PriorityQueue::enqueue).
    pub async fn enqueue_at(
        &self,
        class: u8,
        data: &[u8],
        enqueued_at: SystemTime,
    ) -> Result<ItemId> {
        let prefix = self.item_prefix(class, enqueued_at)?;
        let full = path::join(&self.items_dir, &prefix);
        let s = self.session.as_ref();
        let options = CreateOptions::new(CreateMode::PersistentSequential);
        loop {
            match s.create(&full, data, &options).await {
                Ok((created, _)) => return parse_created(&created),
                Err(CoordError::NoNode) => s.ensure_path(&self.items_dir).await?,
                Err(e) if e.is_retryable() => {
                    if let Some(name) = self.find_prefixed(&prefix).await? {
                        return parse_created(&name);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// [`enqueue_at`](PriorityQueue::enqueue_at) in one multi with the caller's `with`
    /// operations (the item's create first): the item and the caller's writes happen
    /// together or not at all — say, a patient's own queue node created with their place in
    /// line. A connection loss is resolved as for an enqueue (the multi applied if the item,
    /// found by its tag, exists).
    ///
    /// # Notable errors
    /// `Multi { index: Some(i), .. }` if the caller's operation `with[i]` failed (nothing was
    /// written); as [`enqueue`](PriorityQueue::enqueue) otherwise.
    pub async fn enqueue_with(
        &self,
        class: u8,
        data: &[u8],
        enqueued_at: SystemTime,
        with: &[Op],
    ) -> Result<ItemId> {
        let prefix = self.item_prefix(class, enqueued_at)?;
        let full = path::join(&self.items_dir, &prefix);
        let s = self.session.as_ref();
        let mut ops = vec![Op::create(
            full,
            data.to_vec(),
            CreateOptions::new(CreateMode::PersistentSequential),
        )];
        ops.extend_from_slice(with);
        loop {
            match s.multi(&ops).await {
                Ok(results) => match results.first() {
                    Some(OpResult::Create { path }) => return parse_created(path),
                    other => {
                        return Err(Error::Malformed {
                            path: self.items_dir.clone(),
                            reason: format!("the enqueue's multi answered {other:?}"),
                        });
                    }
                },
                Err(e) if e.index == Some(0) && e.error == CoordError::NoNode => {
                    s.ensure_path(&self.items_dir).await?
                }
                Err(e) if e.error.is_retryable() => {
                    if let Some(name) = self.find_prefixed(&prefix).await? {
                        return parse_created(&name);
                    }
                }
                Err(e) => {
                    return Err(Error::Multi {
                        index: e.index.and_then(|i| i.checked_sub(1)),
                        error: e.error,
                    });
                }
            }
        }
    }

    /// The name prefix of a new item of `class` enqueued at `enqueued_at`, with a fresh tag.
    fn item_prefix(&self, class: u8, enqueued_at: SystemTime) -> Result<String> {
        self.check_class(class)?;
        let ms = enqueued_at
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis()
            .min(9_999_999_999_999);
        let tag = &line::attempt_tag()[..8];
        Ok(format!("{ITEM_PREFIX}{class}-{ms:013}-{tag}-"))
    }

    /// After a connection loss cut a create's reply: waits for the connection, then finds the
    /// item created with `prefix` (its tag makes it unique), if the create was applied.
    async fn find_prefixed(&self, prefix: &str) -> Result<Option<String>> {
        let s = self.session.as_ref();
        line::await_connected(s, None).await?;
        line::retrying(s, None, || async {
            if !line::flush(s, &self.items_dir).await? {
                return Ok(None);
            }
            let children = s.get_children(&self.items_dir).await?;
            Ok(children.into_iter().find(|n| n.starts_with(prefix)))
        })
        .await
    }

    /// Moves `item` to `class`, keeping its enqueue time and sequence number (so its place in
    /// arrival order): one multi deletes the old node (version-checked), creates the new name
    /// with the same data, and asserts that the item is not claimed. Returns the new id (the
    /// same id if the class is unchanged).
    ///
    /// # Notable errors
    /// `Coord(NoNode)` if the item is not in the queue; `Coord(NodeExists)` if a consumer has
    /// claimed it (it is being served; reprioritising would let a second consumer take it);
    /// `InvalidArgument` for a class without a target.
    pub async fn reprioritise(&self, item: &ItemId, class: u8) -> Result<ItemId> {
        self.check_class(class)?;
        if item.class() == class {
            return Ok(item.clone());
        }
        let new = item.with_class(class);
        let old_path = path::join(&self.items_dir, item.as_str());
        let new_path = path::join(&self.items_dir, new.as_str());
        let claim_path = path::join(&self.claims_dir, item.as_str());
        let s = self.session.as_ref();
        loop {
            let (data, stat) = match s.get_data(&old_path).await {
                Ok(v) => v,
                Err(CoordError::NoNode) => {
                    // Done by an earlier attempt whose reply was lost, or not in the queue.
                    return match s.exists(&new_path).await? {
                        Some(_) => Ok(new),
                        None => Err(Error::Coord(CoordError::NoNode)),
                    };
                }
                Err(e) if e.is_retryable() => {
                    line::await_connected(s, None).await?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            // Creating and deleting the claim's name in the same multi fails it (NodeExists)
            // if the item is claimed: ZooKeeper's multi has no "check absent".
            let ops = [
                Op::delete(old_path.clone(), stat.version),
                Op::create(
                    new_path.clone(),
                    data,
                    CreateOptions::new(CreateMode::Persistent),
                ),
                Op::create(
                    claim_path.clone(),
                    Vec::new(),
                    CreateOptions::new(CreateMode::Persistent),
                ),
                Op::delete(claim_path.clone(), -1),
            ];
            match s.multi(&ops).await {
                Ok(_) => return Ok(new),
                Err(e) if e.index == Some(0) => {} // changed or gone meanwhile: read again
                Err(e) if e.index == Some(2) && e.error == CoordError::NoNode => {
                    s.ensure_path(&self.claims_dir).await?;
                }
                Err(e) if e.index == Some(2) && e.error == CoordError::NodeExists => {
                    return Err(Error::Coord(CoordError::NodeExists));
                }
                Err(e) if e.error.is_retryable() => {
                    line::await_connected(s, None).await?;
                    line::retrying(s, None, || line::flush(s, &self.items_dir)).await?;
                }
                Err(e) => return Err(Error::Coord(e.error)),
            }
        }
    }

    /// Removes `item` whether or not it is claimed (a cancelled order; a consumer holding a
    /// claim on it then fails to complete with `Lost(NodeDeleted)`). `false` if it was not in
    /// the queue. After a connection loss the answer can be `false` for an item this call
    /// removed.
    pub async fn remove(&self, item: &ItemId) -> Result<bool> {
        let p = path::join(&self.items_dir, item.as_str());
        let s = self.session.as_ref();
        line::retrying(s, None, || async {
            match s.delete(&p, -1).await {
                Ok(()) => Ok(true),
                Err(CoordError::NoNode) => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    /// The node of `item` (for callers that remove an item inside a multi of their own, such as
    /// a dispatcher that holds the only right to consume this queue).
    pub fn item_path(&self, item: &ItemId) -> String {
        path::join(&self.items_dir, item.as_str())
    }

    /// The directory holding the items (a child watch on it wakes on every enqueue).
    pub fn items_path(&self) -> &str {
        &self.items_dir
    }

    /// The directory of the claims (one per claimed item, named as the item).
    pub fn claims_path(&self) -> &str {
        &self.claims_dir
    }

    /// The item's data, or `None` if it is not in the queue.
    pub async fn data(&self, item: &ItemId) -> Result<Option<Vec<u8>>> {
        match self
            .session
            .get_data(&path::join(&self.items_dir, item.as_str()))
            .await
        {
            Ok((d, _)) => Ok(Some(d)),
            Err(CoordError::NoNode) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every item, in dequeue order now, with whether it is claimed.
    pub async fn list(&self) -> Result<Vec<ItemInfo>> {
        let s = self.session.as_ref();
        let names = line::children_or_empty(s, &self.items_dir).await?;
        let claimed: HashSet<String> = line::children_or_empty(s, &self.claims_dir)
            .await?
            .into_iter()
            .collect();
        let mut items = self.order_of(names);
        for i in &mut items {
            i.claimed = claimed.contains(i.id.as_str());
        }
        Ok(items)
    }

    /// Waits for its turn among consumers and then for a claimable item, and claims the first
    /// in dequeue order.
    ///
    /// # Notable errors
    /// A session-fatal `Coord` error if the session ends while waiting.
    ///
    /// # Cancellation safety
    /// Safe: dropping the future deletes the consumer's line node and any claim it created.
    pub async fn take(&self) -> Result<Claim> {
        self.take_until(Some(None)).await?.ok_or(Error::Timeout)
    }

    /// As [`take`](PriorityQueue::take), for at most `timeout`.
    ///
    /// # Notable errors
    /// `Timeout` if nothing was claimed in time (nothing is left behind).
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn take_timeout(&self, timeout: Duration) -> Result<Claim> {
        self.take_until(Some(Some(Instant::now() + timeout)))
            .await?
            .ok_or(Error::Timeout)
    }

    /// Claims the first claimable item if there is one now; `None` otherwise. Does not wait,
    /// and so does not join the consumers' line.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn try_take(&self) -> Result<Option<Claim>> {
        self.take_until(None).await
    }

    /// `wait`: `None` for one look without waiting; `Some(deadline)` to wait in line.
    async fn take_until(&self, wait: Option<Option<Instant>>) -> Result<Option<Claim>> {
        let taker = match wait {
            None => None,
            Some(deadline) => {
                let Some(taker) = hold::acquire(
                    &self.session,
                    &self.takers_dir,
                    TAKE_MARKER,
                    self.config.label.as_bytes(),
                    self.config.policy,
                    deadline,
                    &is_taker,
                    &mutex_turn,
                )
                .await?
                else {
                    return Ok(None);
                };
                Some(taker)
            }
        };
        let mut pending =
            PendingTagged::new(self.session.clone(), &self.claims_dir, &line::attempt_tag());
        let outcome = self
            .claim_next(taker.as_ref(), &mut pending, wait.flatten(), wait.is_some())
            .await;
        match outcome {
            Ok(Some(claim)) => {
                pending.disarm();
                if let Some(t) = taker {
                    // The claim's multi deleted the line node.
                    t.forget();
                }
                Ok(Some(claim))
            }
            Ok(None) | Err(Error::Timeout) => {
                pending.delete_now().await?;
                if let Some(t) = taker {
                    t.release().await?;
                }
                Ok(None)
            }
            Err(e) => {
                if !e.is_session_fatal() {
                    let _ = pending.delete_now().await;
                    if let Some(t) = taker {
                        let _ = t.release().await;
                    }
                }
                Err(e)
            }
        }
    }

    /// Claims the first claimable item (as the line's head, if `taker`), waiting for one if
    /// `wait`.
    async fn claim_next(
        &self,
        taker: Option<&Hold>,
        pending: &mut PendingTagged,
        deadline: Option<Instant>,
        wait: bool,
    ) -> Result<Option<Claim>> {
        let s = self.session.as_ref();
        let claim_data = line::tagged_data(pending.tag(), &self.config.label);
        loop {
            let Some((names, items_watch)) = watch_children(s, &self.items_dir, deadline).await?
            else {
                continue;
            };
            let order = self.order_of(names);
            let mut claims_watch = None;
            let mut raced = false;
            if !order.is_empty() {
                let Some((claimed, w)) = watch_children(s, &self.claims_dir, deadline).await?
                else {
                    continue;
                };
                claims_watch = Some(w);
                let claimed: HashSet<String> = claimed.into_iter().collect();
                for item in order
                    .into_iter()
                    .filter(|i| !claimed.contains(i.id.as_str()))
                {
                    match self.try_claim(s, item, taker, pending, &claim_data).await? {
                        Attempt::Claimed(claim) => return Ok(Some(*claim)),
                        Attempt::Raced => raced = true,
                        Attempt::Reread => {
                            raced = true;
                            break;
                        }
                    }
                }
            }
            if raced {
                continue;
            }
            if !wait || deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            let event = async move {
                match claims_watch {
                    Some(cw) => tokio::select! {
                        e = items_watch => e,
                        e = cw => e,
                    },
                    None => items_watch.await,
                }
            };
            if line::wait_event(s, event, deadline).await? == Waited::TimedOut {
                return Ok(None);
            }
        }
    }

    async fn try_claim(
        &self,
        s: &dyn Session,
        item: ItemInfo,
        taker: Option<&Hold>,
        pending: &mut PendingTagged,
        claim_data: &[u8],
    ) -> Result<Attempt> {
        let item_path = path::join(&self.items_dir, item.id.as_str());
        let claim_path = path::join(&self.claims_dir, item.id.as_str());
        let (data, stat) = match s.get_data(&item_path).await {
            Ok(v) => v,
            Err(CoordError::NoNode) => return Ok(Attempt::Raced),
            Err(e) if e.is_retryable() => {
                line::await_connected(s, None).await?;
                return Ok(Attempt::Reread);
            }
            Err(e) => return Err(e.into()),
        };
        let mut ops = vec![
            Op::check(item_path.clone(), stat.version),
            Op::create(
                claim_path.clone(),
                claim_data.to_vec(),
                CreateOptions::new(CreateMode::Ephemeral),
            ),
        ];
        if let Some(t) = taker {
            ops.push(Op::delete(t.path(), -1));
        }
        pending.attempt(std::slice::from_ref(&claim_path));
        let claim_stat = match s.multi(&ops).await {
            Ok(_) => {
                let stat =
                    line::retrying(s, None, || async { Ok(s.exists(&claim_path).await?) }).await?;
                match stat {
                    Some(st) if st.ephemeral_owner == s.session_id().0 => st,
                    _ => return Err(line::lost_now(s)),
                }
            }
            // The item changed or went, or someone claimed it: try the next one.
            Err(e) if e.index == Some(0) || e.error == CoordError::NodeExists => {
                return Ok(Attempt::Raced);
            }
            Err(e) if e.index == Some(1) && e.error == CoordError::NoNode => {
                s.ensure_path(&self.claims_dir).await?;
                return Ok(Attempt::Reread);
            }
            Err(e) if e.index == Some(2) && e.error == CoordError::NoNode => {
                return Err(line::lost_now(s));
            }
            Err(e) if e.error.is_retryable() => {
                line::await_connected(s, None).await?;
                let found =
                    line::retrying(s, None, || pending.find(std::slice::from_ref(&claim_path)))
                        .await?;
                match found.into_iter().next() {
                    Some((_, st)) => st,
                    None => return Ok(Attempt::Reread),
                }
            }
            Err(e) => return Err(Error::Coord(e.error)),
        };
        Ok(Attempt::Claimed(Box::new(Claim::new(
            self.session.clone(),
            item,
            data,
            stat,
            item_path,
            claim_path,
            claim_stat,
            self.config.policy,
        ))))
    }
}

enum Attempt {
    Claimed(Box<Claim>),
    /// This item was taken, changed or removed meanwhile: try the next.
    Raced,
    /// Read the queue again.
    Reread,
}

fn parse_created(created: &str) -> Result<ItemId> {
    ItemId::parse(path::name(created)).ok_or_else(|| Error::Malformed {
        path: created.to_string(),
        reason: "the created item's name does not parse".into(),
    })
}

/// The children of `dir` with a child watch; `None` — look again — once a missing `dir` has
/// been created or a connection loss waited out.
async fn watch_children(
    s: &dyn Session,
    dir: &str,
    deadline: Option<Instant>,
) -> Result<Option<(Vec<String>, OneshotWatch)>> {
    match s.get_children_watch(dir).await {
        Ok((children, _, w)) => Ok(Some((children, w))),
        Err(CoordError::NoNode) => {
            s.ensure_path(dir).await?;
            Ok(None)
        }
        Err(e) if e.is_retryable() => {
            line::await_connected(s, deadline).await?;
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// A taken item: the item stays in the queue, marked by an ephemeral claim, until
/// [`complete`](Claim::complete)d. Dropping the claim (or [`abandon`](Claim::abandon)) returns
/// the item to the queue, at its old place.
#[must_use = "dropping the claim returns the item to the queue"]
pub struct Claim {
    session: Arc<dyn Session>,
    item: ItemInfo,
    data: Vec<u8>,
    item_stat: Stat,
    item_path: String,
    claim_path: String,
    claim_stat: Stat,
    monitor: Monitor,
    released: bool,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("item", &self.item.id)
            .field("state", &self.state())
            .finish()
    }
}

impl Claim {
    #[allow(clippy::too_many_arguments)]
    fn new(
        session: Arc<dyn Session>,
        item: ItemInfo,
        data: Vec<u8>,
        item_stat: Stat,
        item_path: String,
        claim_path: String,
        claim_stat: Stat,
        policy: ConnectionPolicy,
    ) -> Claim {
        Claim {
            monitor: Monitor::spawn(session.as_ref(), policy),
            session,
            item,
            data,
            item_stat,
            item_path,
            claim_path,
            claim_stat,
            released: false,
        }
    }

    /// The item's id.
    pub fn id(&self) -> &ItemId {
        &self.item.id
    }

    /// The item as it was when taken (class, effective class, enqueue time, sequence).
    pub fn item(&self) -> &ItemInfo {
        &self.item
    }

    /// The item's data.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The claim node's path.
    pub fn path(&self) -> &str {
        &self.claim_path
    }

    /// The zxid that created the claim: larger for every later claim of any item of this
    /// queue's tree, so a consumer's downstream writes can be fenced.
    pub fn fencing_token(&self) -> FencingToken {
        FencingToken(self.claim_stat.czxid)
    }

    /// Held, suspended (connection lost, session may live) or lost.
    pub fn state(&self) -> HoldState {
        self.monitor.state()
    }

    /// Resolves when the claim is lost (see [`ConnectionPolicy`]), with the reason.
    ///
    /// # Cancellation safety
    /// Safe.
    pub async fn lost(&self) -> LostReason {
        self.monitor.lost().await
    }

    /// The operation that makes a multi conditional on still holding this claim.
    pub fn check_op(&self) -> Op {
        Op::check(self.claim_path.clone(), -1)
    }

    /// Applies `ops` atomically, only while this claim is held (one multi led by
    /// [`check_op`](Claim::check_op)); the item stays claimed. Results are the caller's ops'.
    ///
    /// # Notable errors
    /// `Lost(reason)` if the claim is gone (nothing applied); `Multi { index, .. }` with the
    /// index into `ops` if one of them failed (nothing applied).
    pub async fn write(&self, ops: &[Op]) -> Result<Vec<OpResult>> {
        self.fenced(vec![self.check_op()], ops).await
    }

    /// Removes the item and the claim in one multi.
    ///
    /// # Notable errors
    /// `Lost(SessionEnded)` if the session ended (the claim went with it; another consumer
    /// may have the item); `Lost(NodeDeleted)` if the item was removed meanwhile (a cancelled
    /// order). Nothing is applied then.
    pub async fn complete(self) -> Result<()> {
        self.complete_with(&[]).await.map(|_| ())
    }

    /// Removes the item and the claim and applies `ops`, all in one multi: the atomic
    /// "take from the queue and assign" of a dispatcher. Results are the caller's ops'.
    /// Resolved after a connection loss (done if the claim is gone while the session lives).
    ///
    /// # Notable errors
    /// As [`complete`](Claim::complete); `Multi { index, .. }` with the index into `ops` if
    /// one of them failed (nothing applied, the item stays claimed).
    pub async fn complete_with(mut self, ops: &[Op]) -> Result<Vec<OpResult>> {
        let head = vec![
            Op::delete(self.claim_path.clone(), -1),
            Op::delete(self.item_path.clone(), self.item_stat.version),
        ];
        let s = self.session.clone();
        loop {
            match self.fenced(head.clone(), ops).await {
                Ok(r) => {
                    self.released = true;
                    self.monitor.stop();
                    return Ok(r);
                }
                Err(e) if e.is_retryable() => {
                    line::await_connected(s.as_ref(), None).await?;
                    let dir = path::parent(&self.claim_path).unwrap_or("/").to_string();
                    let gone = line::retrying(s.as_ref(), None, || async {
                        line::flush(s.as_ref(), &dir).await?;
                        Ok(s.exists(&self.claim_path).await?.is_none())
                    })
                    .await?;
                    if gone {
                        // Our own ephemeral claim can only have gone by this multi (the
                        // session lives): it was applied. Its results are lost.
                        self.released = true;
                        self.monitor.stop();
                        return Ok(Vec::new());
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn fenced(&self, head: Vec<Op>, ops: &[Op]) -> Result<Vec<OpResult>> {
        if let HoldState::Lost(r) = self.state() {
            return Err(Error::Lost(r));
        }
        let k = head.len();
        let mut all = head;
        all.extend_from_slice(ops);
        match self.session.multi(&all).await {
            Ok(mut results) => Ok(results.split_off(k)),
            Err(e) if e.error.is_session_fatal() => Err(Error::Lost(LostReason::SessionEnded)),
            Err(e) if e.index.is_some_and(|i| i < k) => match e.error {
                CoordError::NoNode | CoordError::BadVersion => {
                    Err(Error::Lost(LostReason::NodeDeleted))
                }
                other => Err(Error::Coord(other)),
            },
            Err(e) if e.error.is_retryable() => Err(Error::Coord(e.error)),
            Err(e) => Err(Error::Multi {
                index: e.index.map(|i| i - k),
                error: e.error,
            }),
        }
    }

    /// Gives the item back: deletes the claim (retrying through connection losses); the item
    /// is taken again by the next consumer, at its old place. Succeeds if the session has
    /// ended meanwhile (the claim went with it).
    pub async fn abandon(mut self) -> Result<()> {
        self.released = true;
        self.monitor.stop();
        line::delete_ephemeral(self.session.as_ref(), &self.claim_path).await
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if !self.released {
            let session = self.session.clone();
            let p = std::mem::take(&mut self.claim_path);
            line::spawn_cleanup(async move {
                if let Err(e) = line::delete_ephemeral(session.as_ref(), &p).await {
                    tracing::warn!(error = %e, "could not abandon a dropped claim");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: [Duration; 4] = [
        Duration::from_secs(10),
        Duration::from_secs(30),
        Duration::from_secs(60),
        Duration::from_secs(240),
    ];

    fn name(class: u8, ms: u64, seq: u32) -> String {
        format!("item-{class}-{ms:013}-0a1b2c3d-{seq:010}")
    }

    #[test]
    fn effective_class_formula() {
        let s = Duration::from_secs;
        assert_eq!(effective_class(ROUTINE, s(0), &T), 3);
        assert_eq!(effective_class(ROUTINE, s(239), &T), 3);
        assert_eq!(effective_class(ROUTINE, s(240), &T), 2);
        assert_eq!(effective_class(ROUTINE, s(480), &T), 1);
        assert_eq!(effective_class(ROUTINE, s(720), &T), 0);
        assert_eq!(effective_class(ROUTINE, s(100_000), &T), 0);
        assert_eq!(effective_class(URGENT, s(59), &T), 2);
        assert_eq!(effective_class(URGENT, s(60), &T), 1);
        assert_eq!(effective_class(STAT, s(1_000), &T), 0);
        // A class without a target does not age.
        assert_eq!(effective_class(7, s(1_000_000), &T), 7);
        // Enormous waits saturate instead of overflowing.
        assert_eq!(effective_class(ROUTINE, Duration::MAX, &T), 0);
    }

    #[test]
    fn effective_class_floored_stops_ageing_at_the_floor() {
        let s = Duration::from_secs;
        // Floor 0 is plain ageing.
        for (c, w) in [(ROUTINE, 720), (URGENT, 60), (ASAP, 30), (STAT, 5)] {
            assert_eq!(
                effective_class_floored(c, s(w), &T, 0),
                effective_class(c, s(w), &T)
            );
        }
        // Floor asap: routine ages to urgent, then asap, never stat.
        assert_eq!(effective_class_floored(ROUTINE, s(239), &T, ASAP), ROUTINE);
        assert_eq!(effective_class_floored(ROUTINE, s(240), &T, ASAP), URGENT);
        assert_eq!(effective_class_floored(ROUTINE, s(480), &T, ASAP), ASAP);
        assert_eq!(effective_class_floored(ROUTINE, s(720), &T, ASAP), ASAP);
        assert_eq!(
            effective_class_floored(ROUTINE, Duration::MAX, &T, ASAP),
            ASAP
        );
        assert_eq!(effective_class_floored(URGENT, s(60), &T, ASAP), ASAP);
        assert_eq!(effective_class_floored(URGENT, s(600), &T, ASAP), ASAP);
        assert_eq!(effective_class_floored(ASAP, s(600), &T, ASAP), ASAP);
        // An item enqueued above the floor keeps its class.
        assert_eq!(effective_class_floored(STAT, s(600), &T, ASAP), STAT);
        // Floor urgent: asap may not age to stat either.
        assert_eq!(effective_class_floored(ASAP, s(600), &T, URGENT), ASAP);
        assert_eq!(
            effective_class_floored(ROUTINE, s(10_000), &T, URGENT),
            URGENT
        );
        // A floor beyond the classes stops all ageing.
        assert_eq!(effective_class_floored(ROUTINE, s(10_000), &T, 9), ROUTINE);
    }

    #[test]
    fn a_fresh_stat_item_goes_before_aged_ones_with_a_floor() {
        let t0 = 1_700_000_000_000u64;
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let names = vec![
            name(URGENT, t0, 1),
            name(ROUTINE, t0, 2),
            name(STAT, t0 + 700_000, 3),
            name(ASAP, t0 + 700_000, 4),
        ];
        let seqs = |floor| -> Vec<i64> {
            dequeue_order_floored(names.clone(), at(t0 + 720_000), &T, floor)
                .iter()
                .map(|i| i.sequence)
                .collect()
        };
        // Without a floor the aged urgent and routine items are stat and arrived first.
        assert_eq!(seqs(0), [1, 2, 3, 4]);
        assert_eq!(
            dequeue_order(names.clone(), at(t0 + 720_000), &T),
            dequeue_order_floored(names.clone(), at(t0 + 720_000), &T, 0)
        );
        // With floor asap the fresh stat item goes first; the aged ones are asap, FIFO with
        // the fresh asap item.
        assert_eq!(seqs(ASAP), [3, 1, 2, 4]);
        let listed = dequeue_order_floored(names.clone(), at(t0 + 720_000), &T, ASAP);
        assert_eq!(
            listed.iter().map(|i| i.effective_class).collect::<Vec<_>>(),
            [STAT, ASAP, ASAP, ASAP]
        );
    }

    #[test]
    fn item_names_parse() {
        let id = ItemId::parse(&name(2, 1_700_000_000_123, 42)).unwrap();
        assert_eq!(id.class(), 2);
        assert_eq!(id.enqueued_at_ms(), 1_700_000_000_123);
        assert_eq!(id.sequence(), 42);
        assert_eq!(
            id.with_class(0).as_str(),
            "item-0-1700000000123-0a1b2c3d-0000000042"
        );
        for bad in [
            "item-2-1700000000123-0a1b2c3d-000000004",
            "item-x-1700000000123-0a1b2c3d-0000000042",
            "item-2-170000000012x-0a1b2c3d-0000000042",
            "item-2-1700000000123-0a1b2c3g-0000000042",
            "lock-2-1700000000123-0a1b2c3d-0000000042",
            "itemé-1700000000123-0a1b2c3d-0000000042",
            "",
        ] {
            assert!(ItemId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn order_is_class_then_fifo_with_ageing() {
        let t0 = 1_700_000_000_000u64;
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        let names = vec![
            name(ROUTINE, t0, 1),
            name(URGENT, t0 + 1_000, 2),
            name(STAT, t0 + 2_000, 3),
            name(URGENT, t0 + 3_000, 4),
            "foreign".to_string(),
        ];
        // Just after the last arrival: stat, then urgent FIFO, then routine.
        let seqs = |now| -> Vec<i64> {
            dequeue_order(names.clone(), now, &T)
                .iter()
                .map(|i| i.sequence)
                .collect()
        };
        assert_eq!(seqs(at(t0 + 3_000)), [3, 2, 4, 1]);
        // At 240 s the urgent items have waited four urgent targets (60 s): they are served as
        // stat, FIFO with the stat item; the routine item has aged one class, to urgent.
        assert_eq!(seqs(at(t0 + 240_000)), [2, 3, 4, 1]);
        let aged = dequeue_order(names.clone(), at(t0 + 240_000), &T);
        assert_eq!(aged[3].effective_class, URGENT);
        assert_eq!(aged[3].class, ROUTINE);
        // After three routine targets (720 s) everything is class 0, served in arrival order.
        assert_eq!(seqs(at(t0 + 720_000)), [1, 2, 3, 4]);
        // With a long urgent target, the aged routine item passes the newer urgent items.
        let targets = [T[0], T[1], Duration::from_secs(3_600), T[3]];
        let order: Vec<i64> = dequeue_order(names.clone(), at(t0 + 240_000), &targets)
            .iter()
            .map(|i| i.sequence)
            .collect();
        assert_eq!(order, [3, 1, 2, 4]);
        // A clock behind the enqueue time counts as no wait.
        assert_eq!(seqs(at(t0 - 5_000)), [3, 2, 4, 1]);
    }
}
