//! The HTTP JSON API's handlers. The route table and the role matrix are in docs/api.md; each
//! handler checks its roles first, and every access to patient data is audited
//! (`ServerState::audit`) with its outcome.
//!
//! One module per resource, re-exported here (the router and the OpenAPI document name the
//! handlers as `api::<handler>`):
//! - `alarms`: active alarms and their history, acknowledging, shelving, their stream;
//! - `health`: `/healthz`, `/readyz`;
//! - `history`: the charts' history (each pool sampled by the leader) and the waiting targets;
//! - `pools`: pools, units, a pool's queue, a unit's status;
//! - `patients`: registering a patient, a patient's record;
//! - `orders`: creating, reading and acting on orders;
//! - `cluster`: the cluster and the coordination tree view;
//! - `tokens`: who am I, tokens, the audit log;
//! - `streams`: the Server-Sent Event streams.
//!
//! What they share lives here: the audit helpers (`audited`, `audited_change`,
//! `audit_started`, `change_record`), `detached` for writes that must finish with their
//! audit record whatever the client does, and the id parsers.

use std::sync::Arc;

use axum::extract::State;
use medkeeper_hospital::store::AuditRecord;
use medkeeper_hospital::{OrderId, PatientId};

use crate::auth::Caller;
use crate::error::{ApiError, ErrorCode};
use crate::state::{Audit, Outcome, ServerState};

mod alarms;
mod cluster;
mod health;
mod history;
mod orders;
mod patients;
mod pools;
mod streams;
mod tokens;
mod vitals;

pub use alarms::*;
pub use cluster::*;
pub use health::*;
pub use history::*;
pub use orders::*;
pub use patients::*;
pub use pools::*;
pub use streams::*;
pub use tokens::*;
pub use vitals::*;

type St = State<Arc<ServerState>>;
type ApiResult<T> = Result<T, ApiError>;

fn parse_order_id(s: &str) -> ApiResult<OrderId> {
    s.parse()
        .map_err(|e: medkeeper_hospital::Error| ApiError::invalid(e.to_string()))
}

fn parse_patient_id(s: &str) -> ApiResult<PatientId> {
    s.parse()
        .map_err(|e: medkeeper_hospital::Error| ApiError::invalid(e.to_string()))
}

/// The audit outcome of a result.
fn outcome<T>(r: &ApiResult<T>) -> (Outcome, String) {
    match r {
        Ok(_) => (Outcome::Ok, String::new()),
        Err(e) if e.code == ErrorCode::Forbidden => (Outcome::Denied, e.message.clone()),
        Err(e) => (Outcome::Failed(e.code), e.message.clone()),
    }
}

/// The audit record a change asked for by `caller` carries into the store (outcome `ok`):
/// written with the change, in its transaction (see [`medkeeper_hospital::Actor`]).
fn change_record(
    caller: &Caller,
    action: &'static str,
    patient: Option<&PatientId>,
    order: Option<&OrderId>,
) -> AuditRecord {
    ServerState::audit_record(Audit {
        caller,
        action,
        patient,
        order,
        outcome: Outcome::Ok,
        detail: String::new(),
    })
}

/// Records that `caller` starts `action`, before a change whose first write is in the
/// coordination tree (a unit's status, a manual call, a re-prioritisation): the store cannot
/// take that write's audit record in the same transaction, so the trail says beforehand who
/// started it; the outcome follows as its own record (or, for a call, with the store's
/// write). After a crash in between, a `started` record without an outcome is what is left.
async fn audit_started(
    st: &ServerState,
    caller: &Caller,
    action: &'static str,
    patient: Option<&PatientId>,
    order: Option<&OrderId>,
) -> ApiResult<()> {
    st.audit(Audit {
        caller,
        action,
        patient,
        order,
        outcome: Outcome::Started,
        detail: String::new(),
    })
    .await
}

/// Like [`audited`], for a change whose audit record may already have been stored with it
/// (`written`): then a success needs no other record, and a failure after it (the change was
/// made, something after it failed) gets its own record saying so.
async fn audited_change<T>(
    st: &ServerState,
    caller: &Caller,
    action: &'static str,
    patient: Option<&PatientId>,
    order: Option<&OrderId>,
    written: bool,
    r: ApiResult<T>,
) -> ApiResult<T> {
    if !written {
        return audited(st, caller, action, patient, order, r).await;
    }
    if let Err(e) = &r {
        st.audit(Audit {
            caller,
            action,
            patient,
            order,
            outcome: Outcome::Failed(e.code),
            detail: format!("after the change was recorded: {}", e.message),
        })
        .await?;
    }
    r
}

/// Records `r`'s outcome and passes it on.
async fn audited<T>(
    st: &ServerState,
    caller: &Caller,
    action: &'static str,
    patient: Option<&PatientId>,
    order: Option<&OrderId>,
    r: ApiResult<T>,
) -> ApiResult<T> {
    let (out, detail) = outcome(&r);
    st.audit(Audit {
        caller,
        action,
        patient,
        order,
        outcome: out,
        detail,
    })
    .await?;
    r
}

/// Runs a write and its audit record to the end in a task of its own: a client that goes away,
/// or a request past its deadline, must not leave a change without its audit record (or a call
/// decided in the tree but not recorded in the store until the reconciler finds it). The client
/// may then not learn the outcome (503 `timeout`), as with any lost reply.
async fn detached<T: Send + 'static>(
    f: impl std::future::Future<Output = ApiResult<T>> + Send + 'static,
) -> ApiResult<T> {
    tokio::spawn(f)
        .await
        .map_err(|e| ApiError::internal(format!("the request's task failed: {e}")))?
}
