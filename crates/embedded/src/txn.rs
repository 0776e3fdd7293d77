//! Transactions: the resolved, deterministic form of a change, as written to the log and
//! replayed on recovery. A request (with its checks, sequence numbers and ACL fix-ups) becomes a
//! transaction only once it has been validated; applying a transaction never fails.

use medkeeper_coord::{Acl, Zxid};

use crate::codec::{Dec, Enc, Malformed};

/// A resolved change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Txn {
    /// Create a node at exactly this path.
    Create {
        path: String,
        data: Vec<u8>,
        acl: Vec<Acl>,
        /// Session id for ephemerals, the container/TTL markers, or 0.
        ephemeral_owner: i64,
    },
    /// Delete the node (it has no children).
    Delete { path: String },
    /// Replace the node's data; its version increments.
    SetData { path: String, data: Vec<u8> },
    /// Replace the node's ACL; its aversion increments.
    SetAcl { path: String, acl: Vec<Acl> },
    /// End a session: delete every ephemeral it owns.
    CloseSession { session: i64 },
    /// Several changes applied as one.
    Multi(Vec<Txn>),
}

/// A transaction with its zxid and wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) zxid: Zxid,
    pub(crate) time: i64,
    pub(crate) txn: Txn,
}

impl Record {
    pub(crate) fn encode(&self, e: &mut Enc) {
        e.i64(self.zxid);
        e.i64(self.time);
        self.txn.encode(e);
    }

    pub(crate) fn decode(d: &mut Dec<'_>) -> Result<Record, Malformed> {
        let zxid = d.i64()?;
        let time = d.i64()?;
        let txn = Txn::decode(d, 0)?;
        if !d.buf.is_empty() {
            return Err(Malformed);
        }
        Ok(Record { zxid, time, txn })
    }
}

impl Txn {
    fn encode(&self, e: &mut Enc) {
        match self {
            Txn::Create {
                path,
                data,
                acl,
                ephemeral_owner,
            } => {
                e.u8(1);
                e.str(path);
                e.bytes(data);
                e.acls(acl);
                e.i64(*ephemeral_owner);
            }
            Txn::Delete { path } => {
                e.u8(2);
                e.str(path);
            }
            Txn::SetData { path, data } => {
                e.u8(3);
                e.str(path);
                e.bytes(data);
            }
            Txn::SetAcl { path, acl } => {
                e.u8(4);
                e.str(path);
                e.acls(acl);
            }
            Txn::CloseSession { session } => {
                e.u8(5);
                e.i64(*session);
            }
            Txn::Multi(txns) => {
                e.u8(6);
                e.u32(txns.len() as u32);
                for t in txns {
                    t.encode(e);
                }
            }
        }
    }

    fn decode(d: &mut Dec<'_>, depth: u32) -> Result<Txn, Malformed> {
        Ok(match d.u8()? {
            1 => Txn::Create {
                path: d.string()?,
                data: d.bytes()?.to_vec(),
                acl: d.acls()?,
                ephemeral_owner: d.i64()?,
            },
            2 => Txn::Delete { path: d.string()? },
            3 => Txn::SetData {
                path: d.string()?,
                data: d.bytes()?.to_vec(),
            },
            4 => Txn::SetAcl {
                path: d.string()?,
                acl: d.acls()?,
            },
            5 => Txn::CloseSession { session: d.i64()? },
            6 if depth == 0 => {
                let n = d.u32()? as usize;
                if n > d.buf.len() {
                    return Err(Malformed);
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(Txn::decode(d, depth + 1)?);
                }
                Txn::Multi(v)
            }
            _ => return Err(Malformed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medkeeper_coord::{Id, Perms};

    #[test]
    fn round_trip() {
        let r = Record {
            zxid: 42,
            time: 1_700_000_000_000,
            txn: Txn::Multi(vec![
                Txn::Create {
                    path: "/a".into(),
                    data: b"x".to_vec(),
                    acl: vec![Acl::new(Perms::ALL, Id::anyone())],
                    ephemeral_owner: 7,
                },
                Txn::SetData {
                    path: "/a".into(),
                    data: vec![],
                },
                Txn::SetAcl {
                    path: "/a".into(),
                    acl: vec![],
                },
                Txn::Delete { path: "/a".into() },
                Txn::CloseSession { session: 7 },
            ]),
        };
        let mut e = Enc::default();
        r.encode(&mut e);
        assert_eq!(Record::decode(&mut Dec::new(&e.buf)).unwrap(), r);
        for cut in 0..e.buf.len() {
            assert!(Record::decode(&mut Dec::new(&e.buf[..cut])).is_err());
        }
    }
}
