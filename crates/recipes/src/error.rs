//! The recipes' error type.

use medkeeper_coord::MultiError;

/// Why a held lock, lease or leadership was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LostReason {
    /// The session expired, was closed, or failed authentication: its ephemeral nodes are gone,
    /// so another client may hold the lock now.
    SessionEnded,
    /// The connection was lost and the recipe's [`ConnectionPolicy`](crate::ConnectionPolicy)
    /// treats that as a loss (Curator's standard policy): the node may still exist, but the
    /// holder cannot know whether its session will survive.
    Disconnected,
    /// The node that stood for the hold no longer exists (deleted by someone else).
    NodeDeleted,
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LostReason::SessionEnded => "the session ended",
            LostReason::Disconnected => "the connection was lost",
            LostReason::NodeDeleted => "the node was deleted",
        })
    }
}

/// An error of a recipe. Coordination errors are wrapped unchanged, so a caller branches on
/// ZooKeeper's error kinds as before; the recipes add what only they can know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A coordination request failed.
    #[error(transparent)]
    Coord(#[from] medkeeper_coord::Error),
    /// A multi failed at an operation of the caller's (the index is the caller's own, not
    /// counting operations the recipe added).
    #[error("multi failed at op {index:?}: {error}")]
    Multi {
        /// Index into the caller's operations, if one failed.
        index: Option<usize>,
        /// The failure.
        error: medkeeper_coord::Error,
    },
    /// The lock, lease or leadership this operation depends on is no longer held.
    #[error("no longer held: {0}")]
    Lost(LostReason),
    /// A timed operation ran out of time.
    #[error("timed out")]
    Timeout,
    /// An argument is invalid (the text says which and why).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A node the recipe must own exists and belongs to someone else: for a
    /// [`membership`](crate::membership), another live session's member of the same id.
    /// Retrying helps only once that node is gone.
    #[error("node {path} is held by session {owner}")]
    Occupied {
        /// The node.
        path: String,
        /// Its ephemeral owner (`SessionId(0)` for a persistent node).
        owner: medkeeper_coord::SessionId,
    },
    /// A node the recipe manages has content it cannot read (written by something else).
    #[error("malformed node {path}: {reason}")]
    Malformed {
        /// The node.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// True when the session is gone (see [`medkeeper_coord::Error::is_session_fatal`]): every
    /// hold of this session is lost; open a new session.
    pub fn is_session_fatal(&self) -> bool {
        match self {
            Error::Coord(e) | Error::Multi { error: e, .. } => e.is_session_fatal(),
            Error::Lost(r) => *r == LostReason::SessionEnded,
            _ => false,
        }
    }

    /// True when the failure is transient (a connection loss, a timeout of the service).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Coord(e) | Error::Multi { error: e, .. } => e.is_retryable(),
            _ => false,
        }
    }

    /// The coordination error kind underneath, if any.
    pub fn coord(&self) -> Option<&medkeeper_coord::Error> {
        match self {
            Error::Coord(e) | Error::Multi { error: e, .. } => Some(e),
            _ => None,
        }
    }
}

impl From<MultiError> for Error {
    fn from(e: MultiError) -> Self {
        Error::Multi {
            index: e.index,
            error: e.error,
        }
    }
}

/// Result alias of the recipes.
pub type Result<T, E = Error> = std::result::Result<T, E>;
