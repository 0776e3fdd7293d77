//! The hospital layer's error type.

use crate::model::{OrderId, OrderState};

/// An error of the hospital domain. Lower layers are wrapped unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A recipe (lock, queue, election) failed.
    #[error(transparent)]
    Recipe(#[from] medkeeper_recipes::Error),
    /// A coordination request failed.
    #[error(transparent)]
    Coord(#[from] medkeeper_coord::Error),
    /// The clinical store failed.
    #[error("clinical store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// The hospital configuration is invalid (the message names the line).
    #[error("{0}")]
    Config(String),
    /// The order does not allow this transition; nothing was changed. The message says what
    /// was asked and in which state it can be done ("order o-… is queued: only a called order
    /// can be marked no-show").
    #[error("order {order} is {from}: {}", action.refusal(*from))]
    IllegalTransition {
        /// The order.
        order: OrderId,
        /// Its state.
        from: OrderState,
        /// The state asked for.
        to: OrderState,
        /// What was asked.
        action: OrderAction,
    },
    /// No such order, patient, pool or unit.
    #[error("{0} not found")]
    NotFound(String),
    /// An argument is invalid (the text says which and why).
    #[error("invalid: {0}")]
    Invalid(String),
    /// A value for something recorded with another value (an observation's patient, source,
    /// code and effective time), not sent as a correction; nothing was changed. Not worth a
    /// retry: a correction must say it is one.
    #[error("{0}")]
    ConflictingValue(String),
    /// Someone else changed the same thing meanwhile; nothing was changed. Retry.
    #[error("conflict: {0}")]
    Conflict(String),
}

/// What was asked of an order that its state refused ([`Error::IllegalTransition`]): two
/// requests can ask for the same state (a no-show under the requeue policy and a new priority
/// both put an order in line), so the state alone cannot say what went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OrderAction {
    /// Call the patient to a unit.
    Call,
    /// Start the exam.
    Start,
    /// Complete the exam.
    Complete,
    /// Report the results.
    Report,
    /// Mark the called patient as not arrived.
    NoShow,
    /// Cancel the order.
    Cancel,
    /// Change the priority.
    Reprioritise,
}

impl OrderAction {
    /// The request that moves an order to `to` (to `queued`: a no-show under the requeue
    /// policy; a new priority names itself).
    pub fn to(to: OrderState) -> OrderAction {
        match to {
            OrderState::Called => OrderAction::Call,
            OrderState::InProgress => OrderAction::Start,
            OrderState::Completed => OrderAction::Complete,
            OrderState::Reported => OrderAction::Report,
            OrderState::Queued | OrderState::NoShow => OrderAction::NoShow,
            OrderState::Cancelled => OrderAction::Cancel,
        }
    }

    /// Why an order in state `from` cannot have this done, in words for the person who asked.
    pub fn refusal(self, from: OrderState) -> String {
        match self {
            OrderAction::Call => "only a queued order can be called".into(),
            OrderAction::Start => "only a called order can be started".into(),
            OrderAction::Complete => "only an in-progress order can be completed".into(),
            OrderAction::Report if from == OrderState::Reported => {
                "it was reported with other text, and results are not amended here".into()
            }
            OrderAction::Report => "only a completed order can be reported".into(),
            OrderAction::NoShow => "only a called order can be marked no-show".into(),
            OrderAction::Cancel => {
                "it can no longer be cancelled (only a queued, called or in-progress order can)"
                    .into()
            }
            OrderAction::Reprioritise => "only a queued order's priority can be changed".into(),
        }
    }
}

impl From<medkeeper_coord::MultiError> for Error {
    fn from(e: medkeeper_coord::MultiError) -> Self {
        Error::Coord(e.error)
    }
}

/// Result alias of the hospital layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;
