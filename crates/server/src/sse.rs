//! Live views for Server-Sent Events, driven by coordination watches.
//!
//! A [`Hub`] keeps one feed per watched thing (a pool, a unit, a patient, the cluster), shared
//! by every client streaming it: one persistent recursive watch on the thing's subtree, one
//! recomputed view per burst of changes (the events that arrived while the last view was
//! computed are taken together), sent on a `tokio::sync::watch` channel
//! so a slow client skips to the newest view instead of buffering old ones. The feed ends when
//! its last client goes, and follows the instance to a new session after an expiry.
//!
//! After a reconnection the view is recomputed (a persistent watch is re-registered by the
//! client library, but what changed while disconnected is read afresh rather than trusted).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use medkeeper_coord::{AddWatchMode, SessionState};
use medkeeper_hospital::orders::Hospital;
use medkeeper_hospital::{PatientId, Pool, tree};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::error::{ApiError, ErrorCode};
use crate::state::{Limits, ServerState};
use crate::views;

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
}

impl Topic {
    /// The SSE event name.
    pub fn event(&self) -> &'static str {
        match self {
            Topic::Pool(_) => "pool",
            Topic::Unit(..) => "unit",
            Topic::Patient(_) => "patient",
            Topic::Cluster => "cluster",
        }
    }

    /// The subtrees whose changes change the view.
    fn paths(&self) -> Vec<String> {
        match self {
            Topic::Pool(p) => vec![tree::pool_path(p)],
            Topic::Unit(p, u) => vec![tree::unit_path(p, u)],
            Topic::Patient(id) => vec![tree::patient_path(id)],
            Topic::Cluster => vec![tree::MEMBERS.to_string(), tree::LEADER.to_string()],
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

/// The feeds of one server (see the module docs).
#[derive(Default)]
pub struct Hub {
    feeds: Mutex<HashMap<Topic, Weak<watch::Sender<View>>>>,
    running: Arc<std::sync::atomic::AtomicUsize>,
}

impl Hub {
    /// A follower of `topic`'s view, starting a feed if none runs. The first value may be
    /// `None` until the feed has computed the view.
    pub fn subscribe(&self, state: &Arc<ServerState>, topic: Topic) -> Subscription {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        feeds.retain(|_, w| w.strong_count() > 0);
        if let Some(tx) = feeds.get(&topic).and_then(Weak::upgrade) {
            return Subscription {
                rx: tx.subscribe(),
                _feed: tx,
            };
        }
        let (tx, rx) = watch::channel(None);
        let tx = Arc::new(tx);
        feeds.insert(topic.clone(), Arc::downgrade(&tx));
        let running = self.running.clone();
        running.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let f = feed(Arc::downgrade(state), topic, Arc::downgrade(&tx));
        tokio::spawn(async move {
            f.await;
            running.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        });
        Subscription { rx, _feed: tx }
    }
}

impl Hub {
    /// How many feeds are running (for tests and metrics): a feed ends within a second of its
    /// last client leaving.
    pub fn running(&self) -> usize {
        self.running.load(std::sync::atomic::Ordering::Relaxed)
    }
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
    pub(crate) fn new(limits: &Limits) -> StreamSlots {
        StreamSlots {
            all: Arc::new(Semaphore::new(limits.max_streams)),
            max: limits.max_streams,
            per_token: limits.max_streams_per_token,
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

/// One client's follower of a feed; the feed runs while any subscription lives.
pub struct Subscription {
    /// The views.
    pub rx: watch::Receiver<View>,
    _feed: Arc<watch::Sender<View>>,
}

/// Runs a feed until its last subscription is gone or the server is.
async fn feed(state: Weak<ServerState>, topic: Topic, tx: Weak<watch::Sender<View>>) {
    let Some(mut hospitals) = state.upgrade().map(|s| s.hospitals()) else {
        return;
    };
    loop {
        let hospital = hospitals.borrow_and_update().clone();
        let Some(hospital) = hospital else {
            if hospitals.changed().await.is_err() {
                return;
            }
            continue;
        };
        match follow(&state, &topic, &tx, &hospital, &mut hospitals).await {
            Follow::Stop => return,
            Follow::NewSession => continue,
            Follow::Retry => {
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = hospitals.changed() => {}
                }
            }
        }
        if tx.strong_count() == 0 {
            return;
        }
    }
}

enum Follow {
    Stop,
    NewSession,
    Retry,
}

/// Follows one session's changes of `topic`.
async fn follow(
    state: &Weak<ServerState>,
    topic: &Topic,
    tx: &Weak<watch::Sender<View>>,
    hospital: &Arc<Hospital>,
    hospitals: &mut watch::Receiver<Option<Arc<Hospital>>>,
) -> Follow {
    let session = hospital.session().clone();
    let mut watches = Vec::new();
    for path in topic.paths() {
        // Watching an absent node is fine: its creation is an event.
        match session
            .watch(&path, AddWatchMode::PersistentRecursive)
            .await
        {
            Ok(w) => watches.push(w),
            Err(e) => {
                tracing::debug!(?topic, error = %e, "cannot watch; retrying");
                return Follow::Retry;
            }
        }
    }
    let mut events = session.session_events();
    loop {
        // Publish the current view.
        let Some(s) = state.upgrade() else {
            return Follow::Stop;
        };
        let view = views::of_topic(&s, hospital, topic).await;
        drop(s);
        match view {
            Ok(v) => {
                // The feed holds its sender only to send: the subscriptions' references alone
                // keep it alive, so the feed ends when the last client goes (`closed`).
                let Some(sender) = tx.upgrade() else {
                    return Follow::Stop;
                };
                sender.send_if_modified(|old| {
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
                let next = match watches.as_mut_slice() {
                    [a] => a.next().await,
                    [a, b] => tokio::select! { e = a.next() => e, e = b.next() => e },
                    _ => None,
                };
                match next {
                    Some(ev) if topic.ignores(&ev.path) => continue,
                    other => return other.is_some(),
                }
            }
        };
        if tx.strong_count() == 0 {
            return Follow::Stop;
        }
        tokio::select! {
            alive = first => {
                if !alive {
                    return Follow::Retry;
                }
                // Drain what else has arrived: one recomputation covers it all. Changes that
                // arrive while the view is recomputed are drained the same way next time, so
                // a burst costs a few recomputations, and a single change no waiting.
                for w in watches.iter_mut() {
                    while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, w.next()).await {}
                }
            }
            st = events.changed() => {
                if st.is_terminal() {
                    // This session is over: wait for the instance's next one.
                    return match hospitals.changed().await {
                        Ok(()) => Follow::NewSession,
                        Err(_) => Follow::Stop,
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
            _ = closed(tx) => return Follow::Stop,
        }
    }
}

/// Resolves when every subscription of the feed is gone.
async fn closed(tx: &Weak<watch::Sender<View>>) {
    let Some(sender) = tx.upgrade() else {
        return;
    };
    let weak = Arc::downgrade(&sender);
    drop(sender);
    // The sender lives in the subscriptions (Arc); poll its liveness at a modest rate: a feed
    // whose last client has gone ends within a second (with its watch).
    loop {
        if weak.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
