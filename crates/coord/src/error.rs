//! The one error type of the coordination API.

/// An error of the coordination API. Each variant is one of ZooKeeper's error kinds
/// (`KeeperException.Code`), so code written against one backend branches the same way on any
/// other.
///
/// Errors are `Clone + Eq` so tests can compare them exactly. Two classifiers tell a caller what
/// to do next: [`Error::is_retryable`] (the outcome is unknown or transient: try again, after
/// checking whether the previous attempt took effect) and [`Error::is_session_fatal`] (the session
/// is gone: every ephemeral node, lock and leadership it held is lost).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node does not exist (or its parent does not, for a create).
    #[error("no node")]
    NoNode,
    /// The node already exists.
    #[error("node exists")]
    NodeExists,
    /// The expected version did not match the node's version.
    #[error("bad version")]
    BadVersion,
    /// The node has children and cannot be deleted.
    #[error("node not empty")]
    NotEmpty,
    /// Ephemeral nodes may not have children.
    #[error("ephemeral nodes may not have children")]
    NoChildrenForEphemerals,
    /// The session's identities lack the permission the operation needs.
    #[error("not authorized")]
    NoAuth,
    /// The ACL is empty, malformed, or uses an unknown scheme.
    #[error("invalid ACL")]
    InvalidAcl,
    /// The credentials given to `add_auth` were rejected.
    #[error("authentication failed")]
    AuthFailed,
    /// The request itself is invalid: a bad path, a TTL out of range, data over the size limit.
    /// The text says which rule was broken.
    #[error("bad arguments: {0}")]
    BadArguments(&'static str),
    /// The session has expired: its ephemeral nodes are gone. Open a new session.
    #[error("session expired")]
    SessionExpired,
    /// The session moved to another server (an ensemble-only condition).
    #[error("session moved")]
    SessionMoved,
    /// The connection was lost while the request was in flight: the request may or may not have
    /// been applied. The session may still be alive.
    #[error("connection loss")]
    ConnectionLoss,
    /// The operation timed out waiting for the server.
    #[error("operation timeout")]
    OperationTimeout,
    /// The client was closed by its owner; no more requests can be made on it.
    #[error("client closed")]
    ClientClosed,
    /// The server does not implement the operation (for example TTL nodes when ZooKeeper's
    /// `zookeeper.extendedTypesEnabled` is off).
    #[error("unimplemented")]
    Unimplemented,
    /// The server is throttling requests; retry later.
    #[error("throttled")]
    Throttled,
    /// A quota was exceeded.
    #[error("quota exceeded")]
    QuotaExceeded,
    /// A failure inside the server (for the embedded engine: its log could not be written, so
    /// it refuses all further writes rather than risk acknowledging one it could lose).
    #[error("system error")]
    SystemError,
    /// Any other error code a backend reported.
    #[error("unexpected error code {0}")]
    Unexpected(i32),
}

impl Error {
    /// True when the outcome is unknown or the failure transient (connection loss, timeout,
    /// throttling): the caller may retry, after checking whether a non-idempotent request took
    /// effect.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::ConnectionLoss | Error::OperationTimeout | Error::Throttled
        )
    }

    /// True when the session is gone and with it everything tied to it: ephemeral nodes, locks,
    /// leadership. Recipes treat this as fatal and report the loss to their callers.
    pub fn is_session_fatal(&self) -> bool {
        matches!(
            self,
            Error::SessionExpired | Error::ClientClosed | Error::AuthFailed | Error::SessionMoved
        )
    }

    /// ZooKeeper's numeric code for this error (`KeeperException.Code.intValue()`).
    pub fn code(&self) -> i32 {
        match self {
            Error::SystemError => -1,
            Error::ConnectionLoss => -4,
            Error::Unimplemented => -6,
            Error::OperationTimeout => -7,
            Error::BadArguments(_) => -8,
            Error::NoNode => -101,
            Error::NoAuth => -102,
            Error::BadVersion => -103,
            Error::NoChildrenForEphemerals => -108,
            Error::NodeExists => -110,
            Error::NotEmpty => -111,
            Error::SessionExpired => -112,
            Error::InvalidAcl => -114,
            Error::AuthFailed => -115,
            Error::SessionMoved => -118,
            Error::ClientClosed => -122,
            Error::QuotaExceeded => -125,
            Error::Throttled => -127,
            Error::Unexpected(code) => *code,
        }
    }

    /// ZooKeeper's name for this error kind, as zkCli prints it (`NoNode`, `BadVersion`, ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Error::NoNode => "NoNode",
            Error::NodeExists => "NodeExists",
            Error::BadVersion => "BadVersion",
            Error::NotEmpty => "NotEmpty",
            Error::NoChildrenForEphemerals => "NoChildrenForEphemerals",
            Error::NoAuth => "NoAuth",
            Error::InvalidAcl => "InvalidACL",
            Error::AuthFailed => "AuthFailed",
            Error::BadArguments(_) => "BadArguments",
            Error::SessionExpired => "SessionExpired",
            Error::SessionMoved => "SessionMoved",
            Error::ConnectionLoss => "ConnectionLoss",
            Error::OperationTimeout => "OperationTimeout",
            Error::ClientClosed => "ClientClosed",
            Error::Unimplemented => "Unimplemented",
            Error::Throttled => "Throttled",
            Error::QuotaExceeded => "QuotaExceeded",
            Error::SystemError => "SystemError",
            Error::Unexpected(_) => "Unexpected",
        }
    }
}

/// The failure of a [`multi`](crate::Session::multi): which operation failed (its index in the
/// request) and why. Nothing of the multi was applied. `index` is `None` when the failure was not
/// caused by one operation (for example a connection loss).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("multi failed at op {index:?}: {error}")]
pub struct MultiError {
    /// Index of the failing operation, if one failed.
    pub index: Option<usize>,
    /// The failure.
    pub error: Error,
}

impl MultiError {
    /// A failure of the operation at `index`.
    pub fn at(index: usize, error: Error) -> Self {
        MultiError {
            index: Some(index),
            error,
        }
    }

    /// A failure not attributable to one operation.
    pub fn whole(error: Error) -> Self {
        MultiError { index: None, error }
    }
}

impl From<MultiError> for Error {
    fn from(e: MultiError) -> Self {
        e.error
    }
}

/// Result alias of the coordination API.
pub type Result<T, E = Error> = std::result::Result<T, E>;
