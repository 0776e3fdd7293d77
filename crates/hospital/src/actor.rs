//! Who makes a change ([`Actor`]): the name the order history records, and — for a change an
//! API request asked for — the audit record that is stored with the change, in the same store
//! transaction (see [`ClinicalStore`](crate::store::ClinicalStore)'s "Audit records travel
//! with the change").

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::store::AuditRecord;

/// Who makes a change. Built from a plain name (`"cli"`, `"dispatcher:node-1"`) for changes
/// nobody audits, or with [`Actor::audited`] for a request's change. Cheap to clone; clones
/// share the audit record and whether it has been written.
#[derive(Debug, Clone)]
pub struct Actor {
    name: String,
    audit: Option<Arc<AuditSlot>>,
}

#[derive(Debug)]
struct AuditSlot {
    record: AuditRecord,
    written: AtomicBool,
}

impl Actor {
    /// An actor whose changes carry no audit record.
    pub fn new(name: impl Into<String>) -> Actor {
        Actor {
            name: name.into(),
            audit: None,
        }
    }

    /// An actor whose first change stored carries `record` (its outcome as it should read
    /// once the change is made, normally `ok`) in the same store transaction.
    pub fn audited(name: impl Into<String>, record: AuditRecord) -> Actor {
        Actor {
            name: name.into(),
            audit: Some(Arc::new(AuditSlot {
                record,
                written: AtomicBool::new(false),
            })),
        }
    }

    /// The name the order history records.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The role the audit trail records: the request's, or `system` for a change no request
    /// asked for (the dispatcher, the reconciler, the alarm evaluator).
    pub fn role(&self) -> &str {
        self.audit
            .as_ref()
            .map_or("system", |s| s.record.role.as_str())
    }

    /// True once a store write carried this actor's audit record: the change it asked for
    /// is made and accounted for.
    pub fn audit_written(&self) -> bool {
        self.audit
            .as_ref()
            .is_some_and(|s| s.written.load(Ordering::Acquire))
    }

    /// The audit record the next store write should carry, if any is still unwritten.
    pub(crate) fn pending_audit(&self) -> Option<&AuditRecord> {
        self.audit
            .as_ref()
            .filter(|s| !s.written.load(Ordering::Acquire))
            .map(|s| &s.record)
    }

    /// The store write that carried [`pending_audit`](Actor::pending_audit) committed.
    pub(crate) fn mark_audit_written(&self) {
        if let Some(s) = &self.audit {
            s.written.store(true, Ordering::Release);
        }
    }
}

impl From<&str> for Actor {
    fn from(name: &str) -> Actor {
        Actor::new(name)
    }
}

impl From<String> for Actor {
    fn from(name: String) -> Actor {
        Actor::new(name)
    }
}

impl From<&String> for Actor {
    fn from(name: &String) -> Actor {
        Actor::new(name.as_str())
    }
}

impl From<&Actor> for Actor {
    fn from(a: &Actor) -> Actor {
        a.clone()
    }
}
