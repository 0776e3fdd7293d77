//! The in-memory tree: every znode with its data, ACL and stat, and the indexes ZooKeeper's
//! `DataTree` keeps (ephemerals by session, containers, TTL nodes).
//!
//! Nodes own their children (`BTreeMap<name, Node>`), so a node costs its name once and no full
//! path is stored; lookups walk the path. ACL lists are interned (ZooKeeper's
//! `ReferenceCountedACLCache`): a node holds a 4-byte index.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use medkeeper_coord::{Acl, Stat, Zxid, path};

use crate::codec::{Dec, Enc, Malformed};
use crate::txn::Txn;

/// `ephemeral_owner` stored for container nodes (ZooKeeper's `EphemeralType.CONTAINER`).
pub(crate) const CONTAINER_OWNER: i64 = i64::MIN;
/// High byte of `ephemeral_owner` stored for TTL nodes (ZooKeeper's `EphemeralType.TTL`).
pub(crate) const TTL_MASK: i64 = 0xFF00_0000_0000_0000_u64 as i64;

/// The kind of node an `ephemeral_owner` value encodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnerKind {
    Persistent,
    Ephemeral(i64),
    Container,
    Ttl(i64),
}

pub(crate) fn owner_kind(owner: i64) -> OwnerKind {
    if owner == 0 {
        OwnerKind::Persistent
    } else if owner == CONTAINER_OWNER {
        OwnerKind::Container
    } else if owner & TTL_MASK == TTL_MASK {
        OwnerKind::Ttl(owner & !TTL_MASK)
    } else {
        OwnerKind::Ephemeral(owner)
    }
}

/// One znode.
pub(crate) struct Node {
    pub(crate) data: Box<[u8]>,
    pub(crate) children: BTreeMap<Box<str>, Node>,
    pub(crate) czxid: Zxid,
    pub(crate) mzxid: Zxid,
    pub(crate) pzxid: Zxid,
    pub(crate) ctime: i64,
    pub(crate) mtime: i64,
    pub(crate) version: i32,
    /// Number of children ever created (ZooKeeper's stored cversion): the next sequence number.
    pub(crate) cversion: i32,
    pub(crate) aversion: i32,
    pub(crate) acl: u32,
    pub(crate) ephemeral_owner: i64,
}

impl Node {
    fn new(data: Box<[u8]>, acl: u32, owner: i64, zxid: Zxid, time: i64) -> Node {
        Node {
            data,
            children: BTreeMap::new(),
            czxid: zxid,
            mzxid: zxid,
            pzxid: zxid,
            ctime: time,
            mtime: time,
            version: 0,
            cversion: 0,
            aversion: 0,
            acl,
            ephemeral_owner: owner,
        }
    }

    /// The stat as ZooKeeper reports it (`DataNode.copyStat`): cversion counts creates and
    /// deletes; container and TTL markers read as 0.
    pub(crate) fn stat(&self) -> Stat {
        let n = self.children.len() as i32;
        Stat {
            czxid: self.czxid,
            mzxid: self.mzxid,
            ctime: self.ctime,
            mtime: self.mtime,
            version: self.version,
            cversion: self.cversion.wrapping_mul(2).wrapping_sub(n),
            aversion: self.aversion,
            ephemeral_owner: match owner_kind(self.ephemeral_owner) {
                OwnerKind::Ephemeral(s) => s,
                _ => 0,
            },
            data_length: self.data.len() as i32,
            num_children: n,
            pzxid: self.pzxid,
        }
    }
}

/// Interned ACL lists.
#[derive(Default)]
pub(crate) struct AclTable {
    lists: Vec<Vec<Acl>>,
    index: HashMap<Vec<Acl>, u32>,
}

impl AclTable {
    pub(crate) fn intern(&mut self, acl: &[Acl]) -> u32 {
        if let Some(i) = self.index.get(acl) {
            return *i;
        }
        let i = self.lists.len() as u32;
        self.lists.push(acl.to_vec());
        self.index.insert(acl.to_vec(), i);
        i
    }

    pub(crate) fn get(&self, i: u32) -> &[Acl] {
        &self.lists[i as usize]
    }
}

/// What to undo when a multi fails after some of its transactions were applied.
pub(crate) enum Undo {
    Created {
        path: String,
        parent_cversion: i32,
        parent_pzxid: Zxid,
    },
    Deleted {
        path: String,
        node: Node,
        parent_pzxid: Zxid,
    },
    DataSet {
        path: String,
        data: Box<[u8]>,
        mzxid: Zxid,
        mtime: i64,
        version: i32,
    },
    AclSet {
        path: String,
        acl: u32,
        aversion: i32,
    },
}

/// A change a watch may be waiting for, in the order it happened, with the changed node's
/// ACL (index into the tree's ACL table): recursive watches only see nodes their session can
/// read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// Path, its ACL, its parent's ACL.
    Created(String, u32, u32),
    /// Path, its ACL, its parent's ACL.
    Deleted(String, u32, u32),
    /// Path, its ACL.
    DataChanged(String, u32),
}

/// The tree and its indexes.
pub(crate) struct DataTree {
    pub(crate) root: Node,
    pub(crate) acls: AclTable,
    pub(crate) ephemerals: HashMap<i64, BTreeSet<String>>,
    pub(crate) containers: BTreeSet<String>,
    pub(crate) ttls: BTreeSet<String>,
    pub(crate) node_count: usize,
    /// Zxid of the last applied transaction.
    pub(crate) zxid: Zxid,
    /// Zxid of the last ACL change applied since the tree was loaded (a node's stat records
    /// no zxid for it); see [`DataTree::observed_zxid`].
    pub(crate) acl_zxid: Zxid,
}

/// Applying a logged transaction failed: the log does not match the state it was written from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inconsistent(pub(crate) String);

fn segments(p: &str) -> impl Iterator<Item = &str> {
    p.split('/').filter(|s| !s.is_empty())
}

impl DataTree {
    /// A tree with ZooKeeper's initial nodes (`/`, `/zookeeper`, `/zookeeper/quota`,
    /// `/zookeeper/config`).
    pub(crate) fn new() -> DataTree {
        let mut acls = AclTable::default();
        let open = acls.intern(&Acl::open_unsafe());
        let mut root = Node::new(Box::default(), open, 0, 0, 0);
        let mut zk = Node::new(Box::default(), open, 0, 0, 0);
        zk.children
            .insert("quota".into(), Node::new(Box::default(), open, 0, 0, 0));
        let read = acls.intern(&Acl::read_unsafe());
        zk.children
            .insert("config".into(), Node::new(Box::default(), read, 0, 0, 0));
        zk.cversion = 2;
        root.children.insert("zookeeper".into(), zk);
        root.cversion = 1;
        DataTree {
            root,
            acls,
            ephemerals: HashMap::new(),
            containers: BTreeSet::new(),
            ttls: BTreeSet::new(),
            node_count: 4,
            zxid: 0,
            acl_zxid: 0,
        }
    }

    pub(crate) fn get(&self, p: &str) -> Option<&Node> {
        let mut n = &self.root;
        for s in segments(p) {
            n = n.children.get(s)?;
        }
        Some(n)
    }

    /// The newest transaction whose effect a read of `p` can observe: the node's creation,
    /// data and children zxids, or for a missing node its nearest existing ancestor's
    /// children zxid (which moved when the missing one was created or deleted), and any ACL
    /// change (permission checks can depend on one). A read need only wait until this is
    /// durable, not until the whole tree is: it never shows a change a crash could take back,
    /// and it does not wait for other nodes' writes.
    pub(crate) fn observed_zxid(&self, p: &str) -> Zxid {
        let mut n = &self.root;
        for s in segments(p) {
            match n.children.get(s) {
                Some(c) => n = c,
                None => return n.pzxid.max(self.acl_zxid),
            }
        }
        n.czxid.max(n.mzxid).max(n.pzxid).max(self.acl_zxid)
    }

    pub(crate) fn get_mut(&mut self, p: &str) -> Option<&mut Node> {
        let mut n = &mut self.root;
        for s in segments(p) {
            n = n.children.get_mut(s)?;
        }
        Some(n)
    }

    pub(crate) fn acl_of(&self, node: &Node) -> &[Acl] {
        self.acls.get(node.acl)
    }

    /// Applies one transaction at `zxid`/`time`, recording changes for watches and undo steps.
    pub(crate) fn apply(
        &mut self,
        txn: &Txn,
        zxid: Zxid,
        time: i64,
        changes: &mut Vec<Change>,
        undo: &mut Vec<Undo>,
    ) -> Result<(), Inconsistent> {
        match txn {
            Txn::Create {
                path: p,
                data,
                acl,
                ephemeral_owner,
            } => {
                let (parent_path, name) = split(p)?;
                let acl = self.acls.intern(acl);
                let parent = self
                    .get_mut(parent_path)
                    .ok_or_else(|| Inconsistent(format!("create {p}: no parent")))?;
                let std::collections::btree_map::Entry::Vacant(slot) =
                    parent.children.entry(name.into())
                else {
                    return Err(Inconsistent(format!("create {p}: exists")));
                };
                undo.push(Undo::Created {
                    path: p.clone(),
                    parent_cversion: parent.cversion,
                    parent_pzxid: parent.pzxid,
                });
                parent.cversion = parent.cversion.wrapping_add(1);
                parent.pzxid = zxid;
                let parent_acl = parent.acl;
                let node = Node::new(
                    data.clone().into_boxed_slice(),
                    acl,
                    *ephemeral_owner,
                    zxid,
                    time,
                );
                slot.insert(node);
                self.node_count += 1;
                self.index_add(p, *ephemeral_owner);
                changes.push(Change::Created(p.clone(), acl, parent_acl));
            }
            Txn::Delete { path: p } => {
                let (node, parent_pzxid, parent_acl) = self.remove(p, zxid)?;
                changes.push(Change::Deleted(p.clone(), node.acl, parent_acl));
                undo.push(Undo::Deleted {
                    path: p.clone(),
                    node,
                    parent_pzxid,
                });
            }
            Txn::SetData { path: p, data } => {
                let node = self
                    .get_mut(p)
                    .ok_or_else(|| Inconsistent(format!("set {p}: no node")))?;
                let old = std::mem::replace(&mut node.data, data.clone().into_boxed_slice());
                undo.push(Undo::DataSet {
                    path: p.clone(),
                    data: old,
                    mzxid: node.mzxid,
                    mtime: node.mtime,
                    version: node.version,
                });
                node.mzxid = zxid;
                node.mtime = time;
                node.version = node.version.wrapping_add(1);
                changes.push(Change::DataChanged(p.clone(), node.acl));
            }
            Txn::SetAcl { path: p, acl } => {
                let acl = self.acls.intern(acl);
                let node = self
                    .get_mut(p)
                    .ok_or_else(|| Inconsistent(format!("setAcl {p}: no node")))?;
                undo.push(Undo::AclSet {
                    path: p.clone(),
                    acl: node.acl,
                    aversion: node.aversion,
                });
                node.acl = acl;
                node.aversion = node.aversion.wrapping_add(1);
                self.acl_zxid = zxid;
            }
            Txn::CloseSession { session } => {
                let paths = self.ephemerals.get(session).cloned().unwrap_or_default();
                for p in paths {
                    self.apply(&Txn::Delete { path: p }, zxid, time, changes, undo)?;
                }
                self.ephemerals.remove(session);
            }
            Txn::Multi(txns) => {
                for t in txns {
                    self.apply(t, zxid, time, changes, undo)?;
                }
            }
        }
        self.zxid = zxid;
        Ok(())
    }

    /// Reverts applied transactions, newest first.
    pub(crate) fn undo(&mut self, undo: Vec<Undo>) {
        for u in undo.into_iter().rev() {
            match u {
                Undo::Created {
                    path: p,
                    parent_cversion,
                    parent_pzxid,
                } => {
                    if let Ok((parent_path, name)) = split(&p) {
                        let removed = self.get_mut(parent_path).and_then(|parent| {
                            parent.cversion = parent_cversion;
                            parent.pzxid = parent_pzxid;
                            parent.children.remove(name)
                        });
                        if let Some(node) = removed {
                            self.node_count -= 1;
                            self.index_remove(&p, node.ephemeral_owner);
                        }
                    }
                }
                Undo::Deleted {
                    path: p,
                    node,
                    parent_pzxid,
                } => {
                    if let Ok((parent_path, name)) = split(&p) {
                        let owner = node.ephemeral_owner;
                        if let Some(parent) = self.get_mut(parent_path) {
                            parent.pzxid = parent_pzxid;
                            parent.children.insert(name.into(), node);
                            self.node_count += 1;
                            self.index_add(&p, owner);
                        }
                    }
                }
                Undo::DataSet {
                    path: p,
                    data,
                    mzxid,
                    mtime,
                    version,
                } => {
                    if let Some(n) = self.get_mut(&p) {
                        n.data = data;
                        n.mzxid = mzxid;
                        n.mtime = mtime;
                        n.version = version;
                    }
                }
                Undo::AclSet {
                    path: p,
                    acl,
                    aversion,
                } => {
                    if let Some(n) = self.get_mut(&p) {
                        n.acl = acl;
                        n.aversion = aversion;
                    }
                }
            }
        }
    }

    /// Removes a childless node; returns it, the parent's previous pzxid, and the parent's ACL.
    fn remove(&mut self, p: &str, zxid: Zxid) -> Result<(Node, Zxid, u32), Inconsistent> {
        let (parent_path, name) = split(p)?;
        let parent = self
            .get_mut(parent_path)
            .ok_or_else(|| Inconsistent(format!("delete {p}: no parent")))?;
        match parent.children.get(name) {
            None => return Err(Inconsistent(format!("delete {p}: no node"))),
            Some(n) if !n.children.is_empty() => {
                return Err(Inconsistent(format!("delete {p}: not empty")));
            }
            Some(_) => {}
        }
        let node = parent.children.remove(name).expect("checked above");
        let old_pzxid = parent.pzxid;
        let parent_acl = parent.acl;
        if zxid > parent.pzxid {
            parent.pzxid = zxid;
        }
        self.node_count -= 1;
        self.index_remove(p, node.ephemeral_owner);
        Ok((node, old_pzxid, parent_acl))
    }

    fn index_add(&mut self, p: &str, owner: i64) {
        match owner_kind(owner) {
            OwnerKind::Persistent => {}
            OwnerKind::Ephemeral(s) => {
                self.ephemerals.entry(s).or_default().insert(p.to_string());
            }
            OwnerKind::Container => {
                self.containers.insert(p.to_string());
            }
            OwnerKind::Ttl(_) => {
                self.ttls.insert(p.to_string());
            }
        }
    }

    fn index_remove(&mut self, p: &str, owner: i64) {
        match owner_kind(owner) {
            OwnerKind::Persistent => {}
            OwnerKind::Ephemeral(s) => {
                if let Some(set) = self.ephemerals.get_mut(&s) {
                    set.remove(p);
                    if set.is_empty() {
                        self.ephemerals.remove(&s);
                    }
                }
            }
            OwnerKind::Container => {
                self.containers.remove(p);
            }
            OwnerKind::Ttl(_) => {
                self.ttls.remove(p);
            }
        }
    }

    /// Containers and TTL nodes due for deletion at `now` (ZooKeeper's `ContainerManager`): an
    /// empty container that has had children; an empty TTL node not modified for its TTL.
    pub(crate) fn reapable(&self, now: i64) -> Vec<(String, i32)> {
        let mut out = Vec::new();
        for p in &self.containers {
            if let Some(n) = self.get(p)
                && n.children.is_empty()
                && n.cversion > 0
            {
                out.push((p.clone(), n.version));
            }
        }
        for p in &self.ttls {
            if let Some(n) = self.get(p)
                && n.children.is_empty()
                && let OwnerKind::Ttl(ttl) = owner_kind(n.ephemeral_owner)
                && now - n.mtime > ttl
            {
                out.push((p.clone(), n.version));
            }
        }
        out
    }

    /// Writes the tree in postorder (children before their parent), so loading can build each
    /// child map from already-sorted entries without looking anything up.
    pub(crate) fn write_snapshot(&self, e: &mut Enc) {
        e.i64(self.zxid);
        e.u32(self.acls.lists.len() as u32);
        for l in &self.acls.lists {
            e.acls(l);
        }
        e.i64(self.node_count as i64);
        // Iterative postorder: a stack of (name, node, child iterator).
        type Frame<'a> = (
            &'a str,
            &'a Node,
            std::collections::btree_map::Iter<'a, Box<str>, Node>,
        );
        let mut stack: Vec<Frame<'_>> = vec![("", &self.root, self.root.children.iter())];
        while let Some(top) = stack.last_mut() {
            if let Some((name, child)) = top.2.next() {
                stack.push((name, child, child.children.iter()));
            } else {
                let (name, n, _) = stack.pop().expect("non-empty");
                e.str(name);
                e.u32(n.children.len() as u32);
                e.bytes(&n.data);
                for v in [
                    n.czxid,
                    n.mzxid,
                    n.pzxid,
                    n.ctime,
                    n.mtime,
                    n.ephemeral_owner,
                ] {
                    e.i64(v);
                }
                for v in [n.version, n.cversion, n.aversion] {
                    e.i32(v);
                }
                e.u32(n.acl);
            }
        }
    }

    pub(crate) fn read_snapshot(d: &mut Dec<'_>) -> Result<DataTree, Malformed> {
        let zxid = d.i64()?;
        let mut acls = AclTable::default();
        let nacl = d.u32()? as usize;
        for _ in 0..nacl {
            let l = d.acls()?;
            acls.index.insert(l.clone(), acls.lists.len() as u32);
            acls.lists.push(l);
        }
        let count = d.i64()? as usize;
        let mut tree = DataTree {
            root: Node::new(Box::default(), 0, 0, 0, 0),
            acls,
            ephemerals: HashMap::new(),
            containers: BTreeSet::new(),
            ttls: BTreeSet::new(),
            node_count: count,
            zxid,
            acl_zxid: 0,
        };
        let mut stack: Vec<(Box<str>, Node)> = Vec::new();
        for i in 0..count {
            let name: Box<str> = d.string()?.into_boxed_str();
            let nchildren = d.u32()? as usize;
            let data: Box<[u8]> = d.bytes()?.into();
            let mut v = [0i64; 6];
            for x in &mut v {
                *x = d.i64()?;
            }
            let mut w = [0i32; 3];
            for x in &mut w {
                *x = d.i32()?;
            }
            let acl = d.u32()?;
            if acl as usize >= nacl || nchildren > stack.len() {
                return Err(Malformed);
            }
            let children: BTreeMap<Box<str>, Node> =
                stack.drain(stack.len() - nchildren..).collect();
            if children.len() != nchildren {
                return Err(Malformed);
            }
            let node = Node {
                data,
                children,
                czxid: v[0],
                mzxid: v[1],
                pzxid: v[2],
                ctime: v[3],
                mtime: v[4],
                ephemeral_owner: v[5],
                version: w[0],
                cversion: w[1],
                aversion: w[2],
                acl,
            };
            if i + 1 == count {
                if !name.is_empty() || !stack.is_empty() {
                    return Err(Malformed);
                }
                tree.root = node;
            } else {
                stack.push((name, node));
            }
        }
        // Rebuild the indexes.
        let mut todo: Vec<(String, &Node)> = vec![("/".to_string(), &tree.root)];
        let mut index = Vec::new();
        while let Some((p, n)) = todo.pop() {
            if n.ephemeral_owner != 0 {
                index.push((p.clone(), n.ephemeral_owner));
            }
            for (name, c) in &n.children {
                todo.push((path::join(&p, name), c));
            }
        }
        for (p, owner) in index {
            tree.index_add(&p, owner);
        }
        Ok(tree)
    }
}

impl Drop for DataTree {
    /// Drops deep trees without recursion (a chain of nested nodes could overflow the stack).
    fn drop(&mut self) {
        let mut stack: Vec<Node> = std::mem::take(&mut self.root.children)
            .into_values()
            .collect();
        while let Some(mut n) = stack.pop() {
            stack.extend(std::mem::take(&mut n.children).into_values());
        }
    }
}

fn split(p: &str) -> Result<(&str, &str), Inconsistent> {
    match path::parent(p) {
        Some(parent) => Ok((parent, path::name(p))),
        None => Err(Inconsistent(format!("no parent for {p}"))),
    }
}
