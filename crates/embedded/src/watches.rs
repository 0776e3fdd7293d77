//! The watch table: which watch fires for which change (ZooKeeper's `WatchManager` rules).
//!
//! One-shot watches are removed when they fire; persistent watches stay until their value is
//! dropped. Firing happens in two steps: at apply time the table decides who gets which event
//! ([`Delivery`]), and the deliveries are sent only once the change is durable.

use std::collections::HashMap;

use medkeeper_coord::{EventType, SessionState, WatchedEvent, path};
use tokio::sync::{mpsc, oneshot};

use crate::tree::Change;

/// Which table a watch is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    /// Set by get_data or exists: fires on created, data changed, deleted.
    Data,
    /// Set by get_children: fires on child created/deleted and on deletion of the node.
    Child,
    /// Persistent, this node only.
    Persistent,
    /// Persistent, this node and every descendant.
    Recursive,
}

enum Sink {
    Once(oneshot::Sender<WatchedEvent>),
    Stream(mpsc::UnboundedSender<WatchedEvent>),
}

struct Entry {
    id: u64,
    session: i64,
    sink: Sink,
}

/// An event ready to be sent once its change is durable.
pub(crate) enum Delivery {
    Once(oneshot::Sender<WatchedEvent>, WatchedEvent),
    Stream(mpsc::UnboundedSender<WatchedEvent>, WatchedEvent),
}

impl Delivery {
    pub(crate) fn send(self) {
        match self {
            Delivery::Once(tx, e) => {
                let _ = tx.send(e);
            }
            Delivery::Stream(tx, e) => {
                let _ = tx.send(e);
            }
        }
    }
}

/// All registered watches.
#[derive(Default)]
pub(crate) struct WatchTable {
    next_id: u64,
    tables: HashMap<Kind, HashMap<String, Vec<Entry>>>,
    recursive_count: usize,
    /// One-shot watches consumed by a change their session could not read.
    muted: Vec<(Kind, String, Entry)>,
}

impl WatchTable {
    /// Registers a one-shot watch.
    pub(crate) fn add_once(
        &mut self,
        kind: Kind,
        p: &str,
        session: i64,
    ) -> (u64, oneshot::Receiver<WatchedEvent>) {
        let (tx, rx) = oneshot::channel();
        (self.add(kind, p, session, Sink::Once(tx)), rx)
    }

    /// Registers a persistent watch.
    pub(crate) fn add_stream(
        &mut self,
        kind: Kind,
        p: &str,
        session: i64,
    ) -> (u64, mpsc::UnboundedReceiver<WatchedEvent>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (self.add(kind, p, session, Sink::Stream(tx)), rx)
    }

    fn add(&mut self, kind: Kind, p: &str, session: i64, sink: Sink) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        if kind == Kind::Recursive {
            self.recursive_count += 1;
        }
        self.tables
            .entry(kind)
            .or_default()
            .entry(p.to_string())
            .or_default()
            .push(Entry { id, session, sink });
        id
    }

    /// Unregisters a watch (its value was dropped). A watch that already fired is gone already.
    pub(crate) fn remove(&mut self, kind: Kind, p: &str, id: u64) {
        self.muted.retain(|(_, _, e)| e.id != id);
        let Some(t) = self.tables.get_mut(&kind) else {
            return;
        };
        if let Some(v) = t.get_mut(p) {
            let before = v.len();
            v.retain(|e| e.id != id);
            if kind == Kind::Recursive {
                self.recursive_count -= before - v.len();
            }
            if v.is_empty() {
                t.remove(p);
            }
        }
    }

    /// Number of registered watches.
    pub(crate) fn len(&self) -> usize {
        self.tables
            .values()
            .flat_map(|t| t.values())
            .map(Vec::len)
            .sum()
    }

    /// Fires the watches of `kind` on `p`. A session that may not read the node (by
    /// `can_read`) gets nothing: its one-shot watch is consumed silently (kept pending until
    /// the session ends or the value is dropped), its persistent watch skips the event.
    fn fire(
        &mut self,
        kind: Kind,
        p: &str,
        event: EventType,
        can_read: &dyn Fn(i64) -> bool,
        out: &mut Vec<Delivery>,
    ) {
        let Some(t) = self.tables.get_mut(&kind) else {
            return;
        };
        let ev = || WatchedEvent::node(event, p);
        match kind {
            Kind::Data | Kind::Child => {
                if let Some(v) = t.remove(p) {
                    for e in v {
                        if !can_read(e.session) {
                            self.muted.push((kind, p.to_string(), e));
                            continue;
                        }
                        match e.sink {
                            Sink::Once(tx) => out.push(Delivery::Once(tx, ev())),
                            Sink::Stream(tx) => out.push(Delivery::Stream(tx, ev())),
                        }
                    }
                }
            }
            Kind::Persistent | Kind::Recursive => {
                if let Some(v) = t.get(p) {
                    for e in v {
                        if let Sink::Stream(tx) = &e.sink
                            && can_read(e.session)
                        {
                            out.push(Delivery::Stream(tx.clone(), ev()));
                        }
                    }
                }
            }
        }
    }

    fn fire_recursive(
        &mut self,
        p: &str,
        event: EventType,
        can_read: &dyn Fn(i64) -> bool,
        out: &mut Vec<Delivery>,
    ) {
        if self.recursive_count == 0 {
            return;
        }
        let Some(t) = self.tables.get(&Kind::Recursive) else {
            return;
        };
        let mut cur = Some(p);
        while let Some(c) = cur {
            if let Some(v) = t.get(c) {
                for e in v {
                    if let Sink::Stream(tx) = &e.sink
                        && can_read(e.session)
                    {
                        out.push(Delivery::Stream(tx.clone(), WatchedEvent::node(event, p)));
                    }
                }
            }
            cur = path::parent(c);
        }
    }

    /// Decides the deliveries for one change. `can_read(session, acl)` tells whether a
    /// session may read a node with that ACL; recursive watches skip nodes it may not
    /// (ZooKeeper's fix for CVE-2024-23944).
    pub(crate) fn trigger(
        &mut self,
        change: &Change,
        can_read: &dyn Fn(i64, u32) -> bool,
        out: &mut Vec<Delivery>,
    ) {
        use EventType::*;
        match change {
            Change::Created(p, acl, parent_acl) => {
                let node = |s| can_read(s, *acl);
                let parent_ok = |s| can_read(s, *parent_acl);
                self.fire(Kind::Data, p, NodeCreated, &node, out);
                self.fire(Kind::Persistent, p, NodeCreated, &node, out);
                self.fire_recursive(p, NodeCreated, &node, out);
                if let Some(parent) = path::parent(p) {
                    self.fire(Kind::Child, parent, NodeChildrenChanged, &parent_ok, out);
                    self.fire(
                        Kind::Persistent,
                        parent,
                        NodeChildrenChanged,
                        &parent_ok,
                        out,
                    );
                }
            }
            Change::Deleted(p, acl, parent_acl) => {
                let node = |s| can_read(s, *acl);
                let parent_ok = |s| can_read(s, *parent_acl);
                self.fire(Kind::Data, p, NodeDeleted, &node, out);
                self.fire(Kind::Child, p, NodeDeleted, &node, out);
                self.fire(Kind::Persistent, p, NodeDeleted, &node, out);
                self.fire_recursive(p, NodeDeleted, &node, out);
                if let Some(parent) = path::parent(p) {
                    self.fire(Kind::Child, parent, NodeChildrenChanged, &parent_ok, out);
                    self.fire(
                        Kind::Persistent,
                        parent,
                        NodeChildrenChanged,
                        &parent_ok,
                        out,
                    );
                }
            }
            Change::DataChanged(p, acl) => {
                let node = |s| can_read(s, *acl);
                self.fire(Kind::Data, p, NodeDataChanged, &node, out);
                self.fire(Kind::Persistent, p, NodeDataChanged, &node, out);
                self.fire_recursive(p, NodeDataChanged, &node, out);
            }
        }
    }

    /// Removes every watch of an ended session; each gets a session event with `state`.
    pub(crate) fn session_ended(
        &mut self,
        session: i64,
        state: SessionState,
        out: &mut Vec<Delivery>,
    ) {
        let mut i = 0;
        while i < self.muted.len() {
            if self.muted[i].2.session == session {
                let (_, _, e) = self.muted.swap_remove(i);
                let ev = WatchedEvent::session(state);
                out.push(match e.sink {
                    Sink::Once(tx) => Delivery::Once(tx, ev),
                    Sink::Stream(tx) => Delivery::Stream(tx, ev),
                });
            } else {
                i += 1;
            }
        }
        for (kind, t) in self.tables.iter_mut() {
            for v in t.values_mut() {
                let mut i = 0;
                while i < v.len() {
                    if v[i].session == session {
                        let e = v.swap_remove(i);
                        if *kind == Kind::Recursive {
                            self.recursive_count -= 1;
                        }
                        let ev = WatchedEvent::session(state);
                        out.push(match e.sink {
                            Sink::Once(tx) => Delivery::Once(tx, ev),
                            Sink::Stream(tx) => Delivery::Stream(tx, ev),
                        });
                    } else {
                        i += 1;
                    }
                }
            }
            t.retain(|_, v| !v.is_empty());
        }
    }
}
