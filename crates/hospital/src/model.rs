//! The hospital's vocabulary: opaque ids, FHIR request priorities, resource pools, the order
//! lifecycle, unit status.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Checks an opaque id or resource name: 1–64 characters of `A-Z a-z 0-9 - _ .`, not `.`
/// or `..`, so it is one safe znode name. Names and record numbers never go here.
pub fn validate_name(what: &str, s: &str) -> Result<(), Error> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        return Ok(());
    }
    // Echo a long name only in part: the message reaches the client and the audit log.
    let shown: String = s.chars().take(80).collect();
    let more = if shown.len() < s.len() { "..." } else { "" };
    Err(Error::Invalid(format!(
        "{what} {shown:?}{more}: use 1-64 characters of A-Z a-z 0-9 - _ . (not . or ..)"
    )))
}

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident, $what:literal, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// A fresh random id: the type's prefix (`p-`, `o-`) and 32 hex digits.
            pub fn generate() -> Self {
                $name(format!("{}{}", $prefix, uuid::Uuid::new_v4().simple()))
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = Error;
            fn try_from(s: String) -> Result<Self, Error> {
                validate_name($what, &s)?;
                Ok($name(s))
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                $name::try_from(s.to_string())
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

opaque_id!(
    /// A patient's opaque id: what the coordination tree knows of a patient
    /// (`/medical/patients/<id>`). Demographics live only in the clinical store.
    PatientId,
    "patient id",
    "p-"
);
opaque_id!(
    /// An order's id.
    OrderId,
    "order id",
    "o-"
);

/// A FHIR request priority (`ServiceRequest.priority`, value set `request-priority`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Normal priority.
    Routine,
    /// Issued at a higher priority than routine.
    Urgent,
    /// As soon as possible, higher than urgent.
    Asap,
    /// Highest: immediately.
    Stat,
}

impl Priority {
    /// All priorities, most urgent first.
    pub const ALL: [Priority; 4] = [
        Priority::Stat,
        Priority::Asap,
        Priority::Urgent,
        Priority::Routine,
    ];

    /// The FHIR code.
    pub fn code(self) -> &'static str {
        match self {
            Priority::Routine => "routine",
            Priority::Urgent => "urgent",
            Priority::Asap => "asap",
            Priority::Stat => "stat",
        }
    }

    /// The queue class (0 most urgent): stat 0, asap 1, urgent 2, routine 3.
    pub fn class(self) -> u8 {
        match self {
            Priority::Stat => 0,
            Priority::Asap => 1,
            Priority::Urgent => 2,
            Priority::Routine => 3,
        }
    }

    /// The priority of a queue class.
    pub fn from_class(class: u8) -> Option<Priority> {
        Priority::ALL.get(class as usize).copied()
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Priority {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "routine" => Ok(Priority::Routine),
            "urgent" => Ok(Priority::Urgent),
            "asap" => Ok(Priority::Asap),
            "stat" => Ok(Priority::Stat),
            _ => Err(Error::Invalid(format!(
                "priority {s:?}: expected routine, urgent, asap or stat"
            ))),
        }
    }
}

/// What an order asks for: a unit of an equipment kind, or a doctor of a department.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "pool", content = "name", rename_all = "lowercase")]
pub enum Pool {
    /// An equipment kind (`MRI`, `CT`): its units are `/medical/resources/equipment/<kind>/<unit>`.
    Equipment(String),
    /// A department (`cardiology`): its doctors are `/medical/resources/doctors/<dept>/<doctor>`.
    Department(String),
}

impl Pool {
    /// The pool's name (kind or department).
    pub fn name(&self) -> &str {
        match self {
            Pool::Equipment(n) | Pool::Department(n) => n,
        }
    }
}

impl fmt::Display for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pool::Equipment(k) => write!(f, "equipment {k}"),
            Pool::Department(d) => write!(f, "department {d}"),
        }
    }
}

/// Where an order is in its life.
///
/// ```text
/// queued ──► called ──► in-progress ──► completed ──► reported
///   │  ▲        │ │            │
///   │  └────────┘ └─► no-show  │
///   └──────► cancelled ◄───────┘ (also from called)
/// ```
/// `called → queued` is a re-queue after a patient did not arrive (by policy).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrderState {
    /// Waiting in its pool's queue.
    Queued,
    /// Assigned to a unit or doctor; the patient has been called.
    Called,
    /// The exam has started.
    InProgress,
    /// The exam is done; results pending.
    Completed,
    /// Results are ready.
    Reported,
    /// Cancelled before completion.
    Cancelled,
    /// The patient did not arrive within the grace period.
    NoShow,
}

impl OrderState {
    /// Every state.
    pub const ALL: [OrderState; 7] = [
        OrderState::Queued,
        OrderState::Called,
        OrderState::InProgress,
        OrderState::Completed,
        OrderState::Reported,
        OrderState::Cancelled,
        OrderState::NoShow,
    ];

    /// The state's name as the API and the store spell it.
    pub fn code(self) -> &'static str {
        match self {
            OrderState::Queued => "queued",
            OrderState::Called => "called",
            OrderState::InProgress => "in-progress",
            OrderState::Completed => "completed",
            OrderState::Reported => "reported",
            OrderState::Cancelled => "cancelled",
            OrderState::NoShow => "no-show",
        }
    }

    /// True if `self → next` is a legal transition.
    pub fn can_become(self, next: OrderState) -> bool {
        use OrderState::*;
        matches!(
            (self, next),
            (Queued, Called)
                | (Queued, Cancelled)
                | (Called, InProgress)
                | (Called, NoShow)
                | (Called, Queued)
                | (Called, Cancelled)
                | (InProgress, Completed)
                | (InProgress, Cancelled)
                | (Completed, Reported)
        )
    }

    /// True for states an order never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrderState::Reported | OrderState::Cancelled | OrderState::NoShow
        )
    }

    /// True while the order holds a unit or doctor.
    pub fn occupies(self) -> bool {
        matches!(self, OrderState::Called | OrderState::InProgress)
    }
}

impl fmt::Display for OrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for OrderState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        OrderState::ALL
            .into_iter()
            .find(|st| st.code() == s)
            .ok_or_else(|| Error::Invalid(format!("order state {s:?}")))
    }
}

/// An order for an exam (FHIR `ServiceRequest`): who, what, how urgent, why.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The order's id.
    pub id: OrderId,
    /// The patient (opaque id).
    pub patient: PatientId,
    /// The equipment kind or department asked for.
    pub pool: Pool,
    /// Capabilities the unit must have (e.g. `contrast`, `3T`).
    pub capabilities: Vec<String>,
    /// The FHIR priority.
    pub priority: Priority,
    /// The clinical reason. Kept in the clinical store only, never in the coordination tree.
    pub reason: String,
    /// The current state.
    pub state: OrderState,
    /// The unit or doctor while called or in progress (and after, for the record).
    pub assigned: Option<String>,
    /// When it was created, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// When it last changed state, milliseconds since the Unix epoch.
    pub updated_ms: i64,
}

/// The status of a unit or doctor, as its node's data says.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitStatus {
    /// Free for the next patient.
    Available,
    /// Occupied by an order.
    InUse,
    /// Out of service for maintenance: skipped by the dispatcher.
    Maintenance,
    /// Offline: skipped by the dispatcher.
    Offline,
}

impl fmt::Display for UnitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnitStatus::Available => "available",
            UnitStatus::InUse => "in-use",
            UnitStatus::Maintenance => "maintenance",
            UnitStatus::Offline => "offline",
        })
    }
}

/// One state change of an order, as the clinical store records it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The order.
    pub order: OrderId,
    /// The state before (`None` for the creation).
    pub from: Option<OrderState>,
    /// The state after.
    pub to: OrderState,
    /// When, milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Who: a user, or `dispatcher:<instance>`.
    pub actor: String,
    /// The unit or doctor, for assignments.
    pub unit: Option<String>,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle() {
        use OrderState::*;
        assert!(Queued.can_become(Called));
        assert!(!Queued.can_become(InProgress));
        assert!(!Reported.can_become(Queued));
        assert!(!Completed.can_become(Cancelled));
        for s in OrderState::ALL {
            if s.is_terminal() {
                assert!(OrderState::ALL.iter().all(|n| !s.can_become(*n)));
            }
            assert_eq!(s.code().parse::<OrderState>().unwrap(), s);
        }
    }

    #[test]
    fn priorities_and_ids() {
        for p in Priority::ALL {
            assert_eq!(Priority::from_class(p.class()), Some(p));
            assert_eq!(p.code().parse::<Priority>().unwrap(), p);
        }
        assert!("urgentish".parse::<Priority>().is_err());
        let id = PatientId::generate();
        assert!(id.as_str().starts_with("p-"));
        assert!("a/b".parse::<PatientId>().is_err());
        assert!("..".parse::<OrderId>().is_err());
        assert!("".parse::<OrderId>().is_err());
        assert_eq!(
            serde_json::to_string(&Pool::Equipment("MRI".into())).unwrap(),
            r#"{"pool":"equipment","name":"MRI"}"#
        );
    }
}
