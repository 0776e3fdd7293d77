//! Conversions between `zookeeper-client`'s types and the coordination API's.

use medkeeper_coord::{Acl, EventType, Id, Perms, SessionState, Stat, WatchedEvent};
use zookeeper_client as zk;

/// Maps a `zookeeper-client` error to the API's error kind.
///
/// Client-side failures without a ZooKeeper code (`NoHosts`, `Timeout`) become the kind a
/// caller acts on the same way: `ConnectionLoss` and `OperationTimeout`. Codes the API has no
/// variant for keep their number in `Unexpected`; failures inside the client library (a
/// response it could not decode) are `SystemError` and logged.
pub(crate) fn error(e: zk::Error) -> medkeeper_coord::Error {
    use medkeeper_coord::Error as E;
    match e {
        zk::Error::NoNode => E::NoNode,
        zk::Error::NodeExists => E::NodeExists,
        zk::Error::BadVersion => E::BadVersion,
        zk::Error::NotEmpty => E::NotEmpty,
        zk::Error::NoChildrenForEphemerals => E::NoChildrenForEphemerals,
        zk::Error::NoAuth => E::NoAuth,
        zk::Error::InvalidAcl => E::InvalidAcl,
        zk::Error::AuthFailed => E::AuthFailed,
        zk::Error::BadArguments(reason) => E::BadArguments(reason),
        zk::Error::SessionExpired => E::SessionExpired,
        zk::Error::SessionMoved => E::SessionMoved,
        zk::Error::ConnectionLoss | zk::Error::NoHosts => E::ConnectionLoss,
        zk::Error::Timeout => E::OperationTimeout,
        zk::Error::ClientClosed => E::ClientClosed,
        zk::Error::Unimplemented => E::Unimplemented,
        zk::Error::Throttled => E::Throttled,
        zk::Error::QuotaExceeded => E::QuotaExceeded,
        zk::Error::RuntimeInconsistent => E::Unexpected(-2),
        zk::Error::MarshallingError => E::Unexpected(-5),
        zk::Error::NotReadOnly => E::Unexpected(-119),
        zk::Error::NoWatcher => E::Unexpected(-121),
        zk::Error::ReconfigDisabled => E::Unexpected(-123),
        zk::Error::UnexpectedErrorCode(code) => match code {
            -1 => E::SystemError,
            -4 => E::ConnectionLoss,
            -6 => E::Unimplemented,
            -7 => E::OperationTimeout,
            -8 => E::BadArguments("server error"),
            code => E::Unexpected(code),
        },
        // The connection failed under a request — the socket (reset, broken pipe) or the
        // client's own liveness timeout: the request's outcome is unknown and the client
        // reconnects, which is what ConnectionLoss means.
        other if caused_by_io(&other) || is_connection_failure(&other.to_string()) => {
            tracing::debug!(error = %other, "zookeeper-client I/O failure mapped to ConnectionLoss");
            E::ConnectionLoss
        }
        other => {
            tracing::warn!(error = %other, "zookeeper-client failure mapped to SystemError");
            E::SystemError
        }
    }
}

/// True for the words of `zookeeper-client` 0.11's connection failures, should the error's
/// chain not show the `io::Error` as a type: a silent connection past its timeout, or an OS
/// error of the socket (`Connection reset by peer (os error 104)`, `Broken pipe (os error 32)`).
fn is_connection_failure(text: &str) -> bool {
    text.starts_with("no response from connection") || text.contains("(os error ")
}

/// True if an I/O error is somewhere in `e`'s chain of causes. `zookeeper-client` keeps a
/// socket's error in its `Custom` error behind an `Arc<dyn Error>`, which is the cause the
/// chain shows, so an `Arc` is looked into.
fn caused_by_io(e: &(dyn std::error::Error + 'static)) -> bool {
    type Shared = std::sync::Arc<dyn std::error::Error + Send + Sync>;
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        if let Some(inner) = c.downcast_ref::<Shared>()
            && caused_by_io(inner.as_ref())
        {
            return true;
        }
        cause = c.source();
    }
    false
}

/// The API's stat from ZooKeeper's.
pub(crate) fn stat(s: &zk::Stat) -> Stat {
    Stat {
        czxid: s.czxid,
        mzxid: s.mzxid,
        ctime: s.ctime,
        mtime: s.mtime,
        version: s.version,
        cversion: s.cversion,
        aversion: s.aversion,
        ephemeral_owner: s.ephemeral_owner,
        data_length: s.data_length,
        num_children: s.num_children,
        pzxid: s.pzxid,
    }
}

const PERMS: [(Perms, zk::Permission); 5] = [
    (Perms::READ, zk::Permission::READ),
    (Perms::WRITE, zk::Permission::WRITE),
    (Perms::CREATE, zk::Permission::CREATE),
    (Perms::DELETE, zk::Permission::DELETE),
    (Perms::ADMIN, zk::Permission::ADMIN),
];

/// ZooKeeper's ACL entry from the API's.
pub(crate) fn acl_to_zk(a: &Acl) -> zk::Acl {
    let perms = PERMS
        .iter()
        .filter(|(p, _)| a.perms.contains(*p))
        .fold(zk::Permission::NONE, |acc, (_, z)| acc | *z);
    zk::Acl::new(perms, zk::AuthId::new(&a.id.scheme, &a.id.id))
}

/// The API's ACL entry from ZooKeeper's.
pub(crate) fn acl_from_zk(a: &zk::Acl) -> Acl {
    let perms = PERMS
        .iter()
        .filter(|(_, z)| a.permission().has(*z))
        .fold(Perms::NONE, |acc, (p, _)| acc | *p);
    Acl::new(perms, Id::new(a.scheme(), a.id()))
}

/// The API's session state from ZooKeeper's. A read-only connection counts as connected.
pub(crate) fn state(s: zk::SessionState) -> SessionState {
    match s {
        zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
            SessionState::Connected
        }
        zk::SessionState::Disconnected => SessionState::Disconnected,
        zk::SessionState::Expired => SessionState::Expired,
        zk::SessionState::AuthFailed => SessionState::AuthFailed,
        zk::SessionState::Closed => SessionState::Closed,
    }
}

/// The API's watch event from ZooKeeper's.
pub(crate) fn event(e: zk::WatchedEvent) -> WatchedEvent {
    let event_type = match e.event_type {
        zk::EventType::Session => return WatchedEvent::session(state(e.session_state)),
        zk::EventType::NodeCreated => EventType::NodeCreated,
        zk::EventType::NodeDeleted => EventType::NodeDeleted,
        zk::EventType::NodeDataChanged => EventType::NodeDataChanged,
        zk::EventType::NodeChildrenChanged => EventType::NodeChildrenChanged,
    };
    WatchedEvent::node(event_type, e.path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_failure_is_a_connection_loss() {
        // As zookeeper-client's Custom error holds it: behind an Arc<dyn Error>.
        #[derive(Debug)]
        struct Wrapped(std::sync::Arc<dyn std::error::Error + Send + Sync>);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "wrapped: {}", self.0)
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let reset = Wrapped(std::sync::Arc::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert!(caused_by_io(&reset));
        let other = Wrapped(std::sync::Arc::new(std::fmt::Error));
        assert!(!caused_by_io(&other));
        assert!(is_connection_failure(
            "Connection reset by peer (os error 104)"
        ));
        assert!(is_connection_failure(
            "no response from connection in 800ms"
        ));
        assert!(!is_connection_failure(
            "unable to unmarshal reply due to eof"
        ));
        assert!(!caused_by_io(&zk::Error::MarshallingError));
        assert_eq!(
            error(zk::Error::ConnectionLoss),
            medkeeper_coord::Error::ConnectionLoss
        );
    }

    #[test]
    fn acl_round_trip() {
        for bits in 0..32 {
            let a = Acl::new(Perms(bits), Id::new("digest", "u:h"));
            assert_eq!(acl_from_zk(&acl_to_zk(&a)), a);
        }
    }

    #[test]
    fn errors_keep_their_kind() {
        use medkeeper_coord::Error as E;
        assert_eq!(error(zk::Error::NoHosts), E::ConnectionLoss);
        assert_eq!(error(zk::Error::BadArguments(&"x")), E::BadArguments("x"));
        assert_eq!(
            error(zk::Error::UnexpectedErrorCode(-7)),
            E::OperationTimeout
        );
        assert_eq!(error(zk::Error::NoWatcher).code(), -121);
    }
}
