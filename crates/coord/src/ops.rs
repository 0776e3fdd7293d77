//! The operations of a [`multi`](crate::Session::multi).

use crate::{CreateOptions, Stat};

/// Version argument meaning "any version" (ZooKeeper's `-1`).
pub const ANY_VERSION: i32 = -1;

/// One operation of a multi. All operations of a multi are applied atomically, in order, as one
/// transaction with one zxid, or none is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Create a node.
    Create {
        /// The path (a prefix, for sequential modes).
        path: String,
        /// The data.
        data: Vec<u8>,
        /// Mode, ACL and TTL.
        options: CreateOptions,
    },
    /// Delete a node if its version matches (`-1`: any).
    Delete {
        /// The path.
        path: String,
        /// Expected version.
        version: i32,
    },
    /// Set a node's data if its version matches (`-1`: any).
    SetData {
        /// The path.
        path: String,
        /// The new data.
        data: Vec<u8>,
        /// Expected version.
        version: i32,
    },
    /// Fail the multi unless the node exists with this version (`-1`: any).
    Check {
        /// The path.
        path: String,
        /// Expected version.
        version: i32,
    },
}

impl Op {
    /// A create.
    pub fn create(path: impl Into<String>, data: impl Into<Vec<u8>>, options: CreateOptions) -> Op {
        Op::Create {
            path: path.into(),
            data: data.into(),
            options,
        }
    }

    /// A delete.
    pub fn delete(path: impl Into<String>, version: i32) -> Op {
        Op::Delete {
            path: path.into(),
            version,
        }
    }

    /// A set-data.
    pub fn set_data(path: impl Into<String>, data: impl Into<Vec<u8>>, version: i32) -> Op {
        Op::SetData {
            path: path.into(),
            data: data.into(),
            version,
        }
    }

    /// A version check.
    pub fn check(path: impl Into<String>, version: i32) -> Op {
        Op::Check {
            path: path.into(),
            version,
        }
    }

    /// The path the operation names.
    pub fn path(&self) -> &str {
        match self {
            Op::Create { path, .. }
            | Op::Delete { path, .. }
            | Op::SetData { path, .. }
            | Op::Check { path, .. } => path,
        }
    }
}

/// The result of one operation of a successful multi.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// The node was created at this path (with its sequence suffix, if any).
    Create {
        /// The created path.
        path: String,
    },
    /// The node was deleted.
    Delete,
    /// The data was set; the node's new stat.
    SetData {
        /// The node's stat after the change.
        stat: Stat,
    },
    /// The check passed.
    Check,
}
