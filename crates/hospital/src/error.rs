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
    /// The order does not allow this transition; nothing was changed.
    #[error("order {order} is {from}: it cannot become {to}")]
    IllegalTransition {
        /// The order.
        order: OrderId,
        /// Its state.
        from: OrderState,
        /// The state asked for.
        to: OrderState,
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

impl From<medkeeper_coord::MultiError> for Error {
    fn from(e: medkeeper_coord::MultiError) -> Self {
        Error::Coord(e.error)
    }
}

/// Result alias of the hospital layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;
