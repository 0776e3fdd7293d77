//! Watches as values, and session state.
//!
//! A one-shot watch is a future ([`OneshotWatch`]) that resolves once; a persistent watch is a
//! stream of events ([`PersistentWatch`]). Dropping either unregisters it at the backend. No
//! callbacks.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::{mpsc, oneshot, watch};

/// The kind of a watch event (ZooKeeper's `Watcher.Event.EventType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A session state change, not a node change (`EventType.None`); see the event's `state`.
    Session,
    /// The watched node was created (exist watches; persistent watches).
    NodeCreated,
    /// The watched node was deleted (data, exist and child watches; persistent watches).
    NodeDeleted,
    /// The watched node's data was set (data and exist watches; persistent watches).
    NodeDataChanged,
    /// A child was created or deleted (child watches; non-recursive persistent watches).
    NodeChildrenChanged,
}

/// The state of a session (ZooKeeper's `Watcher.Event.KeeperState`, reduced to what callers act
/// on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// Connected: requests are served.
    Connected,
    /// The connection is lost; the session may still be alive on the server and the client is
    /// reconnecting. Ephemeral nodes may still be held. Requests fail with `ConnectionLoss`.
    Disconnected,
    /// The session expired: its ephemeral nodes are gone. Terminal.
    Expired,
    /// The session's credentials were rejected. Terminal.
    AuthFailed,
    /// The owner closed the session: its ephemeral nodes are gone. Terminal.
    Closed,
}

impl SessionState {
    /// True for states a session never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SessionState::Expired | SessionState::AuthFailed | SessionState::Closed
        )
    }

    /// The error requests get in this state, if any.
    pub fn to_error(self) -> Option<crate::Error> {
        match self {
            SessionState::Connected => None,
            SessionState::Disconnected => Some(crate::Error::ConnectionLoss),
            SessionState::Expired => Some(crate::Error::SessionExpired),
            SessionState::AuthFailed => Some(crate::Error::AuthFailed),
            SessionState::Closed => Some(crate::Error::ClientClosed),
        }
    }
}

/// A watch event (ZooKeeper's `WatchedEvent`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WatchedEvent {
    /// What happened.
    pub event_type: EventType,
    /// The session state when the event was delivered.
    pub state: SessionState,
    /// The node the event is about (empty for session events).
    pub path: String,
}

impl WatchedEvent {
    /// A node event.
    pub fn node(event_type: EventType, path: impl Into<String>) -> Self {
        WatchedEvent {
            event_type,
            state: SessionState::Connected,
            path: path.into(),
        }
    }

    /// A session event: delivered to every outstanding watch when its session ends.
    pub fn session(state: SessionState) -> Self {
        WatchedEvent {
            event_type: EventType::Session,
            state,
            path: String::new(),
        }
    }
}

/// Whatever a backend keeps alive for a watch; dropping it unregisters the watch.
pub type WatchGuard = Box<dyn Any + Send + Sync>;

/// A one-shot watch: a future that resolves with the first event. It fires at most once; after
/// that a new watch must be set (as on ZooKeeper). Dropping it unregisters it.
///
/// If the session ends before the watch fires, it resolves with a [`EventType::Session`] event
/// carrying the terminal state.
pub struct OneshotWatch {
    source: OneshotSource,
    _guard: Option<WatchGuard>,
}

enum OneshotSource {
    Channel(oneshot::Receiver<WatchedEvent>),
    Future(Pin<Box<dyn Future<Output = WatchedEvent> + Send>>),
}

impl OneshotWatch {
    /// A watch fed by `rx`; `guard` is dropped (unregistering the watch) when the watch is.
    /// A sender dropped without sending resolves the watch with `Closed`.
    pub fn new(rx: oneshot::Receiver<WatchedEvent>, guard: Option<WatchGuard>) -> Self {
        OneshotWatch {
            source: OneshotSource::Channel(rx),
            _guard: guard,
        }
    }

    /// A watch that is the backend's own future, polled directly (no task in between, so an
    /// event the backend has already received is seen before any later reply). Dropping the
    /// watch drops the future, which must unregister the watch.
    pub fn from_future(f: impl Future<Output = WatchedEvent> + Send + 'static) -> Self {
        OneshotWatch {
            source: OneshotSource::Future(Box::pin(f)),
            _guard: None,
        }
    }
}

impl Future for OneshotWatch {
    type Output = WatchedEvent;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<WatchedEvent> {
        match &mut self.source {
            OneshotSource::Channel(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or_else(|_| WatchedEvent::session(SessionState::Closed))),
            OneshotSource::Future(f) => f.as_mut().poll(cx),
        }
    }
}

impl fmt::Debug for OneshotWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OneshotWatch")
    }
}

/// How a persistent watch follows the tree (ZooKeeper's `AddWatchMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddWatchMode {
    /// Data, child, created and deleted events of the node itself; stays registered.
    Persistent,
    /// Created, deleted and data events of the node and every descendant (no child events);
    /// stays registered.
    PersistentRecursive,
}

/// A persistent (optionally recursive) watch: a stream of events that stays registered until
/// dropped. Events are queued without bound in delivery order. When the session ends the stream
/// yields a session event and then ends.
///
/// On a real ZooKeeper, events can be lost across a reconnection (ZOOKEEPER-4698): a consumer
/// that must not miss a change re-reads the state it follows after a `Disconnected` session event.
pub struct PersistentWatch {
    source: PersistentSource,
    _guard: Option<WatchGuard>,
}

enum PersistentSource {
    Channel(mpsc::UnboundedReceiver<WatchedEvent>),
    Backend(Box<dyn WatchSource>),
}

/// A backend's own stream of persistent-watch events, polled directly by [`PersistentWatch`].
pub trait WatchSource: Send {
    /// The next event, or `None` once no more can come. Must be cancellation-safe: a future
    /// dropped before it completes loses no event.
    fn next(&mut self) -> Pin<Box<dyn Future<Output = Option<WatchedEvent>> + Send + '_>>;
}

impl PersistentWatch {
    /// A watch fed by `rx`; `guard` is dropped (unregistering the watch) when the watch is.
    pub fn new(rx: mpsc::UnboundedReceiver<WatchedEvent>, guard: Option<WatchGuard>) -> Self {
        PersistentWatch {
            source: PersistentSource::Channel(rx),
            _guard: guard,
        }
    }

    /// A watch read straight from the backend's source (dropping the watch drops the source,
    /// which must unregister it).
    pub fn from_source(source: impl WatchSource + 'static) -> Self {
        PersistentWatch {
            source: PersistentSource::Backend(Box::new(source)),
            _guard: None,
        }
    }

    /// The next event, or `None` once the session has ended and every event was delivered.
    pub async fn next(&mut self) -> Option<WatchedEvent> {
        match &mut self.source {
            PersistentSource::Channel(rx) => rx.recv().await,
            PersistentSource::Backend(s) => s.next().await,
        }
    }

    /// The next event if one is already queued.
    pub fn try_next(&mut self) -> Option<WatchedEvent> {
        match &mut self.source {
            PersistentSource::Channel(rx) => rx.try_recv().ok(),
            PersistentSource::Backend(s) => {
                let mut cx = Context::from_waker(std::task::Waker::noop());
                match s.next().as_mut().poll(&mut cx) {
                    Poll::Ready(e) => e,
                    Poll::Pending => None,
                }
            }
        }
    }
}

impl fmt::Debug for PersistentWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PersistentWatch")
    }
}

/// The states a session goes through, as a value that always knows the latest one. A consumer
/// that is slow may miss a short `Disconnected` between two `Connected`; it never misses a
/// terminal state.
#[derive(Debug, Clone)]
pub struct SessionEvents {
    rx: watch::Receiver<SessionState>,
}

impl SessionEvents {
    /// Follows the states sent on `rx`.
    pub fn new(rx: watch::Receiver<SessionState>) -> Self {
        SessionEvents { rx }
    }

    /// The current state.
    pub fn current(&self) -> SessionState {
        *self.rx.borrow()
    }

    /// Waits for the state to change and returns the new one. Once the state is terminal and
    /// nothing more can change, returns that terminal state at once.
    pub async fn changed(&mut self) -> SessionState {
        if self.rx.changed().await.is_err() {
            return *self.rx.borrow();
        }
        *self.rx.borrow_and_update()
    }

    /// Waits until `pred` holds for the current state and returns it.
    pub async fn wait_for(&mut self, pred: impl Fn(SessionState) -> bool) -> SessionState {
        loop {
            let s = *self.rx.borrow_and_update();
            if pred(s) || (s.is_terminal() && self.rx.has_changed().is_err()) {
                return s;
            }
            if self.rx.changed().await.is_err() {
                return *self.rx.borrow();
            }
        }
    }
}
