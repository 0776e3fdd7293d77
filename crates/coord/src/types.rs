//! Data types of the coordination API: node metadata, create modes, ACLs.

use std::fmt;
use std::time::Duration;

/// A ZooKeeper transaction id: every change to the tree gets the next one, so zxids order all
/// changes totally and are the natural fencing token.
pub type Zxid = i64;

/// A session id as ZooKeeper prints it (`0x...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub i64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:x}", self.0)
    }
}

/// The metadata of a znode, field for field ZooKeeper's `Stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Stat {
    /// Zxid of the change that created the node.
    pub czxid: Zxid,
    /// Zxid of the change that last modified the node's data.
    pub mzxid: Zxid,
    /// Creation time, milliseconds since the Unix epoch.
    pub ctime: i64,
    /// Last data modification time, milliseconds since the Unix epoch.
    pub mtime: i64,
    /// Number of changes to the node's data.
    pub version: i32,
    /// Number of changes to the node's children (creates and deletes), as ZooKeeper reports it
    /// (`2 * creates - numChildren`). The next sequential child's suffix is the number of child
    /// creates so far, `(cversion + num_children) / 2`.
    pub cversion: i32,
    /// Number of changes to the node's ACL.
    pub aversion: i32,
    /// Session id of the owner if the node is ephemeral; otherwise 0 (also 0 for container and
    /// TTL nodes, as ZooKeeper reports them).
    pub ephemeral_owner: i64,
    /// Length of the node's data in bytes.
    pub data_length: i32,
    /// Number of children.
    pub num_children: i32,
    /// Zxid of the change that last added or removed a child.
    pub pzxid: Zxid,
}

/// The largest TTL ZooKeeper accepts, in milliseconds (`EphemeralType.MAX_TTL`: 2^40 - 1).
pub const MAX_TTL_MS: u64 = (1 << 40) - 1;

impl Stat {
    /// True if the node is ephemeral (owned by a session).
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral_owner != 0
    }
}

/// How a node is created (ZooKeeper's `CreateMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CreateMode {
    /// Lives until deleted.
    Persistent,
    /// Persistent, with the parent's 10-digit sequence number appended to the name.
    PersistentSequential,
    /// Deleted when the creating session ends (closed or expired). Cannot have children.
    Ephemeral,
    /// Ephemeral, with a sequence suffix.
    EphemeralSequential,
    /// Deleted by the server once it has had children and has none left.
    Container,
    /// Persistent, deleted by the server once it has no children and has not been modified for
    /// its TTL (set with [`CreateOptions::with_ttl`]).
    PersistentWithTtl,
    /// Like `PersistentWithTtl`, with a sequence suffix.
    PersistentSequentialWithTtl,
}

impl CreateMode {
    /// True for modes that append a sequence suffix.
    pub fn is_sequential(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentSequential
                | CreateMode::EphemeralSequential
                | CreateMode::PersistentSequentialWithTtl
        )
    }

    /// True for the two ephemeral modes.
    pub fn is_ephemeral(self) -> bool {
        matches!(
            self,
            CreateMode::Ephemeral | CreateMode::EphemeralSequential
        )
    }

    /// True for the two TTL modes.
    pub fn is_ttl(self) -> bool {
        matches!(
            self,
            CreateMode::PersistentWithTtl | CreateMode::PersistentSequentialWithTtl
        )
    }

    /// ZooKeeper's numeric flag for this mode (as sent in a create request).
    pub fn flag(self) -> i32 {
        match self {
            CreateMode::Persistent => 0,
            CreateMode::Ephemeral => 1,
            CreateMode::PersistentSequential => 2,
            CreateMode::EphemeralSequential => 3,
            CreateMode::Container => 4,
            CreateMode::PersistentWithTtl => 5,
            CreateMode::PersistentSequentialWithTtl => 6,
        }
    }

    /// Options for this mode with the given ACL.
    pub fn with_acls(self, acls: Vec<Acl>) -> CreateOptions {
        CreateOptions {
            mode: self,
            acls,
            ttl: None,
        }
    }
}

/// What a create asks for: the mode, the ACL, and for TTL modes the TTL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CreateOptions {
    /// The create mode.
    pub mode: CreateMode,
    /// The node's ACL; must not be empty.
    pub acls: Vec<Acl>,
    /// The TTL, required by (and only allowed with) the TTL modes.
    pub ttl: Option<Duration>,
}

impl CreateOptions {
    /// Options for `mode` with ZooKeeper's `OPEN_ACL_UNSAFE` (world:anyone, all permissions).
    pub fn new(mode: CreateMode) -> Self {
        mode.with_acls(Acl::open_unsafe())
    }

    /// Sets the ACL.
    pub fn with_acls(mut self, acls: Vec<Acl>) -> Self {
        self.acls = acls;
        self
    }

    /// Sets the TTL (for the TTL modes).
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Checks the mode/TTL combination as ZooKeeper does: a TTL mode needs a TTL in
    /// `1..=MAX_TTL_MS` milliseconds; other modes must not carry one.
    pub fn validate(&self) -> Result<(), crate::Error> {
        match (self.mode.is_ttl(), self.ttl) {
            (true, Some(ttl)) => {
                let ms = ttl.as_millis();
                if ms == 0 || ms > MAX_TTL_MS as u128 {
                    Err(crate::Error::BadArguments("ttl out of range"))
                } else {
                    Ok(())
                }
            }
            (true, None) => Err(crate::Error::BadArguments("ttl mode requires a ttl")),
            (false, Some(_)) => Err(crate::Error::BadArguments(
                "ttl is only valid for ttl modes",
            )),
            (false, None) => Ok(()),
        }
    }
}

/// Permissions of an ACL entry (ZooKeeper's `ZooDefs.Perms`), a bit set.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Perms(pub i32);

impl Perms {
    /// Read the node's data and list its children.
    pub const READ: Perms = Perms(1);
    /// Set the node's data.
    pub const WRITE: Perms = Perms(2);
    /// Create children.
    pub const CREATE: Perms = Perms(4);
    /// Delete children.
    pub const DELETE: Perms = Perms(8);
    /// Set the node's ACL.
    pub const ADMIN: Perms = Perms(16);
    /// Every permission.
    pub const ALL: Perms = Perms(31);
    /// No permission.
    pub const NONE: Perms = Perms(0);

    /// True if every bit of `other` is set in `self`.
    pub fn contains(self, other: Perms) -> bool {
        self.0 & other.0 == other.0
    }

    /// True if any bit of `other` is set in `self`.
    pub fn intersects(self, other: Perms) -> bool {
        self.0 & other.0 != 0
    }

    /// Parses zkCli's letters (`cdrwa`).
    pub fn from_letters(s: &str) -> Option<Perms> {
        let mut p = 0;
        for c in s.chars() {
            p |= match c {
                'r' => 1,
                'w' => 2,
                'c' => 4,
                'd' => 8,
                'a' => 16,
                _ => return None,
            };
        }
        Some(Perms(p))
    }
}

impl std::ops::BitOr for Perms {
    type Output = Perms;
    fn bitor(self, rhs: Perms) -> Perms {
        Perms(self.0 | rhs.0)
    }
}

impl fmt::Debug for Perms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Perms {
    /// zkCli's letters, in its order: `cdrwa`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, c) in [(4, 'c'), (8, 'd'), (1, 'r'), (2, 'w'), (16, 'a')] {
            if self.0 & bit != 0 {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// An identity in an ACL scheme (`world:anyone`, `digest:user:hash`, `ip:10.0.0.0/8`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id {
    /// The scheme: `world`, `digest`, `ip`, or `auth` (on create: every identity the session
    /// authenticated with).
    pub scheme: String,
    /// The identity within the scheme.
    pub id: String,
}

impl Id {
    /// An identity.
    pub fn new(scheme: impl Into<String>, id: impl Into<String>) -> Self {
        Id {
            scheme: scheme.into(),
            id: id.into(),
        }
    }

    /// `world:anyone`.
    pub fn anyone() -> Self {
        Id::new("world", "anyone")
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.scheme, self.id)
    }
}

/// One ACL entry: what `id` may do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Acl {
    /// The permissions granted.
    pub perms: Perms,
    /// Who they are granted to.
    pub id: Id,
}

impl Acl {
    /// An entry.
    pub fn new(perms: Perms, id: Id) -> Self {
        Acl { perms, id }
    }

    /// ZooKeeper's `OPEN_ACL_UNSAFE`: world:anyone may do everything.
    pub fn open_unsafe() -> Vec<Acl> {
        vec![Acl::new(Perms::ALL, Id::anyone())]
    }

    /// ZooKeeper's `READ_ACL_UNSAFE`: world:anyone may read.
    pub fn read_unsafe() -> Vec<Acl> {
        vec![Acl::new(Perms::READ, Id::anyone())]
    }

    /// ZooKeeper's `CREATOR_ALL_ACL`: every identity the session authenticated with may do
    /// everything.
    pub fn creator_all() -> Vec<Acl> {
        vec![Acl::new(Perms::ALL, Id::new("auth", ""))]
    }

    /// A digest entry for `user` with `password`, hashed exactly as ZooKeeper's
    /// `DigestAuthenticationProvider` does, so the ACL carries over to a real ensemble.
    pub fn digest(perms: Perms, user: &str, password: &str) -> Acl {
        Acl::new(perms, Id::new("digest", digest_id(user, password)))
    }
}

impl fmt::Display for Acl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "'{},'{}\n: {}", self.id.scheme, self.id.id, self.perms)
    }
}

/// ZooKeeper's digest identity for `user:password`: `user:base64(sha1("user:password"))`.
pub fn digest_id(user: &str, password: &str) -> String {
    digest_of_credentials(&format!("{user}:{password}"))
}

/// The digest identity ZooKeeper's `DigestAuthenticationProvider` derives from `add_auth`
/// credentials: the text before the first `:` (all of it if there is none), a colon, and the
/// base64 SHA-1 of the whole text.
pub fn digest_of_credentials(credentials: &str) -> String {
    let user = credentials.split(':').next().unwrap_or_default();
    let hash = sha1_smol::Sha1::from(credentials).digest().bytes();
    format!("{user}:{}", base64(&hash))
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_zookeeper() {
        // From ZooKeeper's documentation / DigestAuthenticationProvider.generateDigest("super:test").
        assert_eq!(
            digest_id("super", "test"),
            "super:D/InIHSb7yEEbrWz8b9l71RjZJU="
        );
    }

    #[test]
    fn perms_letters() {
        assert_eq!(Perms::ALL.to_string(), "cdrwa");
        assert_eq!(Perms::from_letters("rw"), Some(Perms::READ | Perms::WRITE));
        assert_eq!(Perms::from_letters("x"), None);
    }
}
