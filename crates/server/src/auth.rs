//! Bearer tokens and roles.
//!
//! A token is `mkt_` followed by 64 hex digits (256 random bits from the operating system). The
//! clinical store keeps only its SHA-256 ([`hash_token`]) with its public id, role, and — for a
//! patient token — the patient it belongs to. A plain hash is enough: the token is random, not a
//! password, so there is nothing to guess from the hash; a slow password hash would only slow
//! every request.
//!
//! Looking a token up costs a store read; answers are cached for [`CACHE_TTL`], so a revoked
//! token stops working on this instance at once and on other instances within that time.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use medkeeper_hospital::PatientId;
use medkeeper_hospital::model::now_ms;
use medkeeper_hospital::store::{AuditRecord, ClinicalStore, StoreError, TokenRecord};
use rand::TryRngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// How long a looked-up token is trusted without asking the store again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);

/// The most valid tokens cached at once.
const MAX_CACHED: usize = 10_000;

/// The text every token starts with.
pub const TOKEN_PREFIX: &str = "mkt_";

/// What a token may do. See the role matrix in docs/api.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including tokens, the audit log and the tree view.
    Admin,
    /// Charge nurse / scheduler: queues, priorities, unit status, calls.
    Scheduler,
    /// Orders exams, reports results.
    Doctor,
    /// Patients, priorities, starting exams.
    Nurse,
    /// At a scanner: unit status, calls, starts and completes exams.
    Technician,
    /// One patient: their own orders and place in line, nothing else.
    Patient,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 6] = [
        Role::Admin,
        Role::Scheduler,
        Role::Doctor,
        Role::Nurse,
        Role::Technician,
        Role::Patient,
    ];

    /// Every role but the patient's: hospital staff.
    pub const STAFF: &'static [Role] = &[
        Role::Admin,
        Role::Scheduler,
        Role::Doctor,
        Role::Nurse,
        Role::Technician,
    ];

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Scheduler => "scheduler",
            Role::Doctor => "doctor",
            Role::Nurse => "nurse",
            Role::Technician => "technician",
            Role::Patient => "patient",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = ApiError;
    fn from_str(s: &str) -> Result<Role, ApiError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "role {s:?}: expected admin, scheduler, doctor, nurse, technician or patient"
                ))
            })
    }
}

/// Who is calling: the token's id and role, and for a patient token the patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's public id (`t-…`).
    pub token: String,
    /// Its role.
    pub role: Role,
    /// The patient, for a patient token.
    pub patient: Option<PatientId>,
    /// The token's hash, to check it again (a long-lived event stream ends once its token is
    /// revoked).
    pub hash: String,
}

impl Caller {
    /// Allows the call if the caller's role is one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the {} role may not do this",
                self.role
            )))
        }
    }

    /// Allows the call if the caller is staff with one of `roles`, or the patient `patient`
    /// themself.
    pub fn require_staff_or_self(
        &self,
        roles: &[Role],
        patient: &PatientId,
    ) -> Result<(), ApiError> {
        if self.role == Role::Patient {
            if self.patient.as_ref() == Some(patient) {
                Ok(())
            } else {
                Err(ApiError::forbidden(
                    "a patient token sees only its own patient",
                ))
            }
        } else {
            self.require(roles)
        }
    }
}

/// The SHA-256 of a token's text, lowercase hex: what the store keeps.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> Result<String, ApiError> {
    let mut buf = vec![0u8; n];
    rand::rngs::OsRng
        .try_fill_bytes(&mut buf)
        .map_err(|e| ApiError::internal(format!("no randomness from the OS: {e}")))?;
    Ok(hex(&buf))
}

/// Creates a token: stores its record (hash only) and returns the record and the token text,
/// which is shown once and never again.
///
/// # Notable errors
/// `invalid` for a patient token without a patient, or for a patient the store does not
/// know, or a staff token with one; `internal` if the store fails.
pub async fn issue_token(
    store: &dyn ClinicalStore,
    role: Role,
    patient: Option<PatientId>,
    label: &str,
) -> Result<(TokenRecord, String), ApiError> {
    issue_token_audited(store, role, patient, label, None).await
}

/// [`issue_token`], storing `audit` with the token in one transaction.
pub(crate) async fn issue_token_audited(
    store: &dyn ClinicalStore,
    role: Role,
    patient: Option<PatientId>,
    label: &str,
    audit: Option<&AuditRecord>,
) -> Result<(TokenRecord, String), ApiError> {
    match (role, &patient) {
        (Role::Patient, None) => {
            return Err(ApiError::invalid("a patient token needs the patient's id"));
        }
        (r, Some(_)) if r != Role::Patient => {
            return Err(ApiError::invalid(format!(
                "a {r} token is not tied to a patient; drop the patient"
            )));
        }
        _ => {}
    }
    if let Some(p) = &patient
        && store.patient(p).await?.is_none()
        && store.orders_of(p).await?.is_empty()
    {
        return Err(ApiError::invalid(format!(
            "patient {p} is not known (register the patient or order an exam first)"
        )));
    }
    if label.len() > 200 {
        return Err(ApiError::invalid("label: at most 200 bytes"));
    }
    let token = format!("{TOKEN_PREFIX}{}", random_hex(32)?);
    let record = TokenRecord {
        id: format!("t-{}", random_hex(6)?),
        hash: hash_token(&token),
        role: role.as_str().to_string(),
        patient,
        label: label.to_string(),
        created_ms: now_ms(),
        revoked_ms: None,
    };
    store.insert_token(&record, audit).await?;
    Ok((record, token))
}

/// Token look-ups with a short cache (see the module docs).
#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (Instant, Caller)>>,
}

impl TokenCache {
    /// The caller a bearer token stands for.
    ///
    /// # Notable errors
    /// `unauthorized` for a malformed, unknown or revoked token; `internal` if the store fails.
    pub async fn authenticate(
        &self,
        store: &dyn ClinicalStore,
        token: &str,
    ) -> Result<Caller, ApiError> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() != TOKEN_PREFIX.len() + 64 {
            return Err(ApiError::unauthorized("malformed token"));
        }
        self.authenticate_hash(store, &hash_token(token)).await
    }

    /// As [`authenticate`](TokenCache::authenticate), by the token's hash.
    pub async fn authenticate_hash(
        &self,
        store: &dyn ClinicalStore,
        hash: &str,
    ) -> Result<Caller, ApiError> {
        if let Some((at, caller)) = self.lock().get(hash).cloned()
            && at.elapsed() < CACHE_TTL
        {
            return Ok(caller);
        }
        let caller = match store.token_by_hash(hash).await {
            Ok(Some(rec)) if rec.revoked_ms.is_none() => caller_of(&rec)?,
            // Unknown and revoked tokens are not cached: a flood of made-up tokens must not
            // grow the cache.
            Ok(_) => return Err(ApiError::unauthorized("unknown or revoked token")),
            Err(e) => return Err(store_failed(e)),
        };
        let mut entries = self.lock();
        if entries.len() >= MAX_CACHED {
            entries.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if entries.len() >= MAX_CACHED {
                entries.clear();
            }
        }
        entries.insert(hash.to_string(), (Instant::now(), caller.clone()));
        Ok(caller)
    }

    /// Forgets every cached answer (after a revocation on this instance).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Caller)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn caller_of(rec: &TokenRecord) -> Result<Caller, ApiError> {
    let role: Role = rec
        .role
        .parse()
        .map_err(|_| ApiError::internal(format!("token {} has a bad role", rec.id)))?;
    Ok(Caller {
        token: rec.id.clone(),
        role,
        patient: rec.patient.clone(),
        hash: rec.hash.clone(),
    })
}

fn store_failed(e: StoreError) -> ApiError {
    ApiError::internal(format!("clinical store: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn roles_round_trip_and_unknown_is_invalid() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert_eq!("root".parse::<Role>().unwrap_err().code, ErrorCode::Invalid);
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn patient_may_see_only_self() {
        let me: PatientId = "p-1".parse().unwrap();
        let other: PatientId = "p-2".parse().unwrap();
        let c = Caller {
            token: "t-1".into(),
            role: Role::Patient,
            patient: Some(me.clone()),
            hash: String::new(),
        };
        assert!(c.require_staff_or_self(Role::STAFF, &me).is_ok());
        assert_eq!(
            c.require_staff_or_self(Role::STAFF, &other)
                .unwrap_err()
                .code,
            ErrorCode::Forbidden
        );
        assert_eq!(
            c.require(Role::STAFF).unwrap_err().code,
            ErrorCode::Forbidden
        );
    }
}
