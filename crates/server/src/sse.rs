//! Live views for Server-Sent Events, driven by coordination watches.
//!
//! A [`Hub`] keeps one feed per watched thing (a pool, a unit, a patient, the cluster), shared
//! by every client streaming it: one persistent recursive watch on the thing's subtree, one
//! recomputed view per burst of changes (the events that arrived while the last view was
//! computed are taken together), sent on a `tokio::sync::watch` channel
//! so a slow client skips to the newest view instead of buffering old ones. The feed ends as
//! soon as its last client goes (the channel says so: every receiver dropped, see
//! `watch::Sender::closed`), and follows the instance to a new session after an expiry.
//!
//! The hub knows only what a view needs: the instance's hospital (a `watch` of it, which the
//! server's state sets per session) and who this instance is. It does not know the server's
//! state; [`views`] knows neither.
//!
//! After a reconnection the view is recomputed (a persistent watch is re-registered by the
//! client library, but what changed while disconnected is read afresh rather than trusted).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use medkeeper_coord::{AddWatchMode, PersistentWatch, SessionState};
use medkeeper_hospital::orders::Hospital;
use medkeeper_hospital::{PatientId, Pool, tree};
use medkeeper_recipes::{CacheEvent, CacheEvents};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::error::{ApiError, ErrorCode};
use crate::views::{self, MemberInfo};

/// How long a feed waits before watching again after a failure.
const RETRY: Duration = Duration::from_millis(500);

/// What a feed watches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Topic {
    /// A pool: its units and its queue.
    Pool(Pool),
    /// One unit of a pool.
    Unit(Pool, String),
    /// A patient's own view.
    Patient(PatientId),
    /// Members and leader.
    Cluster,
    /// The active alarms.
    Alarms,
}

impl Topic {
    /// The SSE event name.
    pub fn event(&self) -> &'static str {
        match self {
            Topic::Pool(_) => "pool",
            Topic::Unit(..) => "unit",
            Topic::Patient(_) => "patient",
            Topic::Cluster => "cluster",
            Topic::Alarms => "alarms",
        }
    }

    /// The subtrees whose changes change the view.
    fn paths(&self) -> Vec<String> {
        match self {
            Topic::Pool(p) => vec![tree::pool_path(p)],
            Topic::Unit(p, u) => vec![tree::unit_path(p, u)],
            Topic::Patient(id) => vec![tree::patient_path(id)],
            Topic::Cluster => vec![tree::MEMBERS.to_string(), tree::LEADER.to_string()],
            Topic::Alarms => vec![tree::ALARMS.to_string()],
        }
    }

    /// True if a change at `path` does not change the view (the dispatcher's lock line).
    fn ignores(&self, path: &str) -> bool {
        match self {
            Topic::Pool(p) => path.starts_with(&tree::lock_path(p)),
            _ => false,
        }
    }
}

/// A view as sent: JSON text.
pub type View = Option<Arc<str>>;

/// The running feeds by topic: each one's id and sender (to subscribe new clients to).
type Feeds = Arc<Mutex<HashMap<Topic, (u64, watch::Sender<View>)>>>;

/// The feeds of one server (see the module docs).
pub struct Hub {
    hospitals: watch::Receiver<Option<Arc<Hospital>>>,
    me: MemberInfo,
    feeds: Feeds,
    next_id: AtomicU64,
    running: Arc<AtomicUsize>,
}

impl Hub {
    /// The hub of instance `me`, serving views of the hospital `hospitals` holds (`None` while
    /// there is no session: feeds then wait for one).
    pub fn new(hospitals: watch::Receiver<Option<Arc<Hospital>>>, me: MemberInfo) -> Hub {
        Hub {
            hospitals,
            me,
            feeds: Arc::default(),
            next_id: AtomicU64::new(0),
            running: Arc::default(),
        }
    }

    /// A follower of `topic`'s view, starting a feed if none runs. The first value may be
    /// `None` until the feed has computed the view. The feed runs while any receiver of it
    /// (this one or its clones, or another client's) lives.
    pub fn subscribe(&self, topic: Topic) -> watch::Receiver<View> {
        let mut feeds = lock(&self.feeds);
        if let Some((_, tx)) = feeds.get(&topic) {
            return tx.subscribe();
        }
        let (tx, rx) = watch::channel(None);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        feeds.insert(topic.clone(), (id, tx.clone()));
        self.running.fetch_add(1, Ordering::Relaxed);
        let feed = Feed {
            id,
            topic,
            tx,
            feeds: self.feeds.clone(),
            running: self.running.clone(),
        };
        tokio::spawn(feed.run(self.hospitals.clone(), self.me.clone()));
        rx
    }

    /// How many feeds are running (for tests and metrics): a feed ends as soon as its last
    /// client leaves.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The slots of open event streams: at most [`Limits::max_streams`] in all (beyond it 503
/// `overloaded`) and [`Limits::max_streams_per_token`] per token (beyond it 429
/// `too_many_streams`), so one token cannot take every slot and lock the staff out.
///
/// A stream holds its [`StreamSlot`] for as long as its response body lives, which is until the
/// connection is seen closed: at once when the client closes it, or at the second keep-alive
/// write after that ([`Limits::stream_keep_alive`]) when hyper cannot see the close (it does not
/// read a connection whose client sent more bytes after the request, such as a stray CRLF or a
/// pipelined request).
///
/// [`Limits::max_streams`]: crate::Limits::max_streams
/// [`Limits::max_streams_per_token`]: crate::Limits::max_streams_per_token
/// [`Limits::stream_keep_alive`]: crate::Limits::stream_keep_alive
pub(crate) struct StreamSlots {
    all: Arc<Semaphore>,
    max: usize,
    per_token: usize,
    by_token: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream's slot; given back when dropped.
pub(crate) struct StreamSlot {
    _all: OwnedSemaphorePermit,
    token: String,
    by_token: Arc<Mutex<HashMap<String, usize>>>,
}

impl StreamSlots {
    /// Slots for `max` streams in all and `per_token` per token.
    pub(crate) fn new(max: usize, per_token: usize) -> StreamSlots {
        StreamSlots {
            all: Arc::new(Semaphore::new(max)),
            max,
            per_token,
            by_token: Arc::default(),
        }
    }

    /// A slot for a stream of the token with public id `token`.
    ///
    /// # Notable errors
    /// 429 `too_many_streams` when the token has its most streams open; 503 `overloaded` when
    /// the server has.
    pub(crate) fn take(&self, token: &str) -> Result<StreamSlot, ApiError> {
        let mut by_token = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        let held = by_token.get(token).copied().unwrap_or(0);
        if held >= self.per_token {
            return Err(ApiError::new(
                ErrorCode::TooManyStreams,
                format!(
                    "this token has {held} event streams open, the most one token may hold; \
                     close one first"
                ),
            ));
        }
        let permit = self
            .all
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded("too many open event streams"))?;
        by_token.insert(token.to_string(), held + 1);
        Ok(StreamSlot {
            _all: permit,
            token: token.to_string(),
            by_token: self.by_token.clone(),
        })
    }

    /// Streams open now.
    pub(crate) fn open(&self) -> usize {
        self.max - self.all.available_permits()
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut by_token = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = by_token.get_mut(&self.token) {
            *n -= 1;
            if *n == 0 {
                by_token.remove(&self.token);
            }
        }
    }
}

/// One running feed: its task's state. Dropped when the task ends, however it ends: then it
/// leaves the hub (unless a newer feed of its topic has taken its place) and the count.
struct Feed {
    id: u64,
    topic: Topic,
    tx: watch::Sender<View>,
    feeds: Feeds,
    running: Arc<AtomicUsize>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        let mut feeds = lock(&self.feeds);
        if feeds.get(&self.topic).is_some_and(|(id, _)| *id == self.id) {
            feeds.remove(&self.topic);
        }
        self.running.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Follow {
    Stop,
    NewSession,
    Retry,
}

impl Feed {
    /// Runs the feed until its last client is gone or the server is (the hospitals' sender).
    async fn run(self, mut hospitals: watch::Receiver<Option<Arc<Hospital>>>, me: MemberInfo) {
        loop {
            let hospital = hospitals.borrow_and_update().clone();
            let Some(hospital) = hospital else {
                tokio::select! {
                    r = hospitals.changed() => if r.is_err() { return },
                    _ = self.abandoned() => return,
                }
                continue;
            };
            match self.follow(&me, &hospital, &mut hospitals).await {
                Follow::Stop => return,
                Follow::NewSession => continue,
                Follow::Retry => {
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => {}
                        _ = hospitals.changed() => {}
                        _ = self.abandoned() => return,
                    }
                }
            }
        }
    }

    /// Resolves when the feed's last client has gone; the feed has then left the hub, so no
    /// new client can join it (one that comes later starts a new feed). Checked under the
    /// hub's lock, which [`Hub::subscribe`] holds while joining: a client that joins after
    /// the channel closed, before this took the lock, keeps the feed running.
    async fn abandoned(&self) {
        loop {
            self.tx.closed().await;
            let mut feeds = lock(&self.feeds);
            if self.tx.is_closed() {
                if feeds.get(&self.topic).is_some_and(|(id, _)| *id == self.id) {
                    feeds.remove(&self.topic);
                }
                return;
            }
        }
    }

    /// Follows one session's changes of the topic.
    async fn follow(
        &self,
        me: &MemberInfo,
        hospital: &Arc<Hospital>,
        hospitals: &mut watch::Receiver<Option<Arc<Hospital>>>,
    ) -> Follow {
        let topic = &self.topic;
        let session = hospital.session().clone();
        let mut changes = match Changes::of(hospital, topic).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(?topic, error = %e, "cannot follow changes; retrying");
                return Follow::Retry;
            }
        };
        let mut events = session.session_events();
        loop {
            // Publish the current view.
            match view_of(me, hospital, topic).await {
                Ok(v) => {
                    self.tx.send_if_modified(|old| {
                        if old.as_deref() == Some(v.as_str()) {
                            false
                        } else {
                            *old = Some(v.into());
                            true
                        }
                    });
                }
                Err(e) => {
                    tracing::debug!(?topic, error = %e.message, "cannot compute a view; retrying");
                    return Follow::Retry;
                }
            }
            // Wait for a change that matters.
            let first = async {
                loop {
                    match changes.next().await {
                        Some(path) if topic.ignores(&path) => continue,
                        other => return other.is_some(),
                    }
                }
            };
            tokio::select! {
                alive = first => {
                    if !alive {
                        return Follow::Retry;
                    }
                    // Drain what else has arrived: one recomputation covers it all. Changes
                    // that arrive while the view is recomputed are drained the same way next
                    // time, so a burst costs a few recomputations, and a single change no
                    // waiting.
                    changes.drain();
                }
                st = events.changed() => {
                    if st.is_terminal() {
                        // This session is over: wait for the instance's next one.
                        return tokio::select! {
                            r = hospitals.changed() => {
                                if r.is_ok() { Follow::NewSession } else { Follow::Stop }
                            }
                            _ = self.abandoned() => Follow::Stop,
                        };
                    }
                    if st != SessionState::Connected {
                        let again = events.wait_for(|s| s == SessionState::Connected || s.is_terminal()).await;
                        if again.is_terminal() {
                            continue;
                        }
                    }
                }
                r = hospitals.changed() => {
                    return if r.is_ok() { Follow::NewSession } else { Follow::Stop };
                }
                _ = self.abandoned() => return Follow::Stop,
            }
        }
    }
}

/// Where a feed hears of changes: for a pool or a unit, the pool's read model
/// ([`Hospital::pool_model`]: shared with the dispatcher and the API, no watch of the feed's
/// own, and the view is computed from it without a request); for a patient or the cluster,
/// persistent recursive watches on the topic's subtrees.
enum Changes {
    Model(CacheEvents),
    Watches(Vec<PersistentWatch>),
}

impl Changes {
    async fn of(hospital: &Hospital, topic: &Topic) -> Result<Changes, ApiError> {
        if let Topic::Pool(p) | Topic::Unit(p, _) = topic {
            return Ok(Changes::Model(hospital.pool_model(p).await?.subscribe()));
        }
        if let Topic::Alarms = topic {
            return Ok(Changes::Model(hospital.alarm_model().await?.subscribe()));
        }
        let session = hospital.session();
        let mut watches = Vec::new();
        for path in topic.paths() {
            // Watching an absent node is fine: its creation is an event.
            watches.push(
                session
                    .watch(&path, AddWatchMode::PersistentRecursive)
                    .await?,
            );
        }
        Ok(Changes::Watches(watches))
    }

    /// The path of the next change (empty when the model reloaded or a subscriber fell
    /// behind: anything may have changed); `None` when the source has ended.
    async fn next(&mut self) -> Option<String> {
        match self {
            Changes::Model(events) => match events.next().await? {
                CacheEvent::Added { path, .. }
                | CacheEvent::Updated { path, .. }
                | CacheEvent::Removed { path } => Some(path),
                CacheEvent::Ended(_) => None,
                _ => Some(String::new()),
            },
            Changes::Watches(watches) => match watches.as_mut_slice() {
                [a] => a.next().await.map(|e| e.path),
                [a, b] => tokio::select! {
                    e = a.next() => e.map(|e| e.path),
                    e = b.next() => e.map(|e| e.path),
                },
                _ => None,
            },
        }
    }

    /// Drops the changes that have already arrived (one recomputation covers them).
    fn drain(&mut self) {
        match self {
            Changes::Model(events) => while events.try_next().is_some() {},
            Changes::Watches(watches) => {
                for w in watches.iter_mut() {
                    while w.try_next().is_some() {}
                }
            }
        }
    }
}

/// The view a stream of `topic` sends, as JSON text.
async fn view_of(me: &MemberInfo, hospital: &Hospital, topic: &Topic) -> Result<String, ApiError> {
    let json = match topic {
        Topic::Pool(p) => serde_json::to_string(&views::pool(hospital, p, true).await?),
        Topic::Unit(p, u) => serde_json::to_string(&views::unit(hospital, p, u).await?),
        Topic::Patient(id) => serde_json::to_string(&views::patient_queue(hospital, id).await?),
        Topic::Cluster => serde_json::to_string(&views::cluster(me, hospital).await?),
        Topic::Alarms => serde_json::to_string(&crate::api::active_views(hospital).await?),
    };
    json.map_err(|e| ApiError::internal(format_args!("cannot encode a view: {e}")))
}
