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
//!
//! ## Lifetimes
//! A token may carry an expiry ([`TokenRecord::expires_ms`]); from then on it is refused with
//! 401 `token_expired`. A cached answer never outlives its token's expiry (the entry is
//! trusted until the earlier of [`CACHE_TTL`] and the expiry), so an expiry takes effect to
//! the millisecond on every instance that knows it. [`TokenPolicy`] gives a token its expiry
//! when it is issued: patient tokens always expire (by default after
//! [`TokenPolicy::DEFAULT_PATIENT_TTL`]), staff tokens only if asked to or if the server sets
//! a longest lifetime (`serve --token-max-ttl`). [`rotate_token`] issues a token's successor
//! and has the old one expire after an overlap, so that whoever holds it can change over
//! without downtime.

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

use crate::error::{ApiError, ErrorCode};

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
    /// revoked or expires).
    pub hash: String,
    /// When the token expires, ms since the epoch (`None`: it does not).
    pub expires_ms: Option<i64>,
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
    issue_token_audited(store, role, patient, label, None, None).await
}

/// [`issue_token`] for a token that expires at `expires_ms` (ms since the epoch; `None`: never).
/// [`TokenPolicy::expiry`] says when a token should expire.
pub async fn issue_token_expiring(
    store: &dyn ClinicalStore,
    role: Role,
    patient: Option<PatientId>,
    label: &str,
    expires_ms: Option<i64>,
) -> Result<(TokenRecord, String), ApiError> {
    issue_token_audited(store, role, patient, label, expires_ms, None).await
}

/// [`issue_token_expiring`], storing `audit` with the token in one transaction.
pub(crate) async fn issue_token_audited(
    store: &dyn ClinicalStore,
    role: Role,
    patient: Option<PatientId>,
    label: &str,
    expires_ms: Option<i64>,
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
    let (record, token) = new_token(role, patient, label, now_ms(), expires_ms)?;
    store.insert_token(&record, audit).await?;
    Ok((record, token))
}

/// A fresh token's record and text.
fn new_token(
    role: Role,
    patient: Option<PatientId>,
    label: &str,
    created_ms: i64,
    expires_ms: Option<i64>,
) -> Result<(TokenRecord, String), ApiError> {
    let token = format!("{TOKEN_PREFIX}{}", random_hex(32)?);
    let record = TokenRecord {
        id: format!("t-{}", random_hex(6)?),
        hash: hash_token(&token),
        role: role.as_str().to_string(),
        patient,
        label: label.to_string(),
        created_ms,
        revoked_ms: None,
        expires_ms,
        replaced_by: None,
    };
    Ok((record, token))
}

/// How long tokens live (docs/security.md, "Token lifetimes").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// How long a patient token lives when its issuer gives no lifetime.
    pub patient_ttl: Duration,
    /// The longest lifetime a token may be given, and the lifetime of a staff token issued
    /// without one; `None`: no limit, and a staff token issued without a lifetime never
    /// expires.
    pub max_ttl: Option<Duration>,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            patient_ttl: TokenPolicy::DEFAULT_PATIENT_TTL,
            max_ttl: None,
        }
    }
}

impl TokenPolicy {
    /// A patient token's lifetime unless its issuer gives one: a week, long enough for an
    /// exam's day and its results, short enough that a slip left behind stops working.
    pub const DEFAULT_PATIENT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

    /// When a token of `role` issued at `now_ms` expires, given the lifetime its issuer asked
    /// for (`None`: the policy's default for the role).
    ///
    /// # Notable errors
    /// `invalid` for a zero lifetime or one longer than [`max_ttl`](TokenPolicy::max_ttl).
    pub fn expiry(
        &self,
        role: Role,
        ttl: Option<Duration>,
        now_ms: i64,
    ) -> Result<Option<i64>, ApiError> {
        let ttl = match ttl {
            Some(t) if t.is_zero() => {
                return Err(ApiError::invalid("ttl: a token must live longer than 0 s"));
            }
            // Beyond any date the tools can show (and than any token should live).
            Some(t) if t > MAX_TOKEN_LIFETIME => {
                return Err(ApiError::invalid(
                    "ttl / expires_ms: a token may live at most 100 years",
                ));
            }
            Some(t) => {
                if let Some(max) = self.max_ttl
                    && t > max
                {
                    return Err(ApiError::invalid(format!(
                        "ttl: at most {} on this server (serve --token-max-ttl)",
                        format_duration(max)
                    )));
                }
                Some(t)
            }
            None if role == Role::Patient => Some(
                self.max_ttl
                    .map_or(self.patient_ttl, |m| m.min(self.patient_ttl)),
            ),
            None => self.max_ttl,
        };
        Ok(ttl.map(|t| now_ms.saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX))))
    }
}

/// Parses a lifetime: `90s`, `15m`, `12h`, `7d`, `1d12h` (the hospital file's durations, and
/// days); `None` if malformed.
pub fn parse_ttl(text: &str) -> Option<Duration> {
    let first_unit = text.find(|c: char| !c.is_ascii_digit())?;
    if text[first_unit..].starts_with('d') {
        let days: u64 = text[..first_unit].parse().ok()?;
        let days = Duration::from_secs(days.checked_mul(86_400)?);
        let rest = &text[first_unit + 1..];
        if rest.is_empty() {
            return Some(days);
        }
        return days.checked_add(medkeeper_hospital::config::parse_duration(rest)?);
    }
    medkeeper_hospital::config::parse_duration(text)
}

/// `90s`, `15m`, `12h`, `7d`: the largest whole unit.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The longest lifetime a token may be given.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The longest overlap a rotation may give the old token.
pub const MAX_ROTATION_OVERLAP: Duration = Duration::from_secs(7 * 24 * 3600);

/// A rotation: the old token's id, its successor (and the successor's text, shown once).
#[derive(Debug)]
pub struct Rotation {
    /// The token rotated, as it was before.
    pub old: TokenRecord,
    /// When the old token now expires.
    pub old_expires_ms: i64,
    /// Its successor.
    pub new: TokenRecord,
    /// The successor's text: shown once.
    pub token: String,
}

/// Rotates the token `id`: issues its successor (same role, patient and label) and has the
/// old token expire `overlap` from now (or keep an earlier expiry), with `audit(old, new)`'s
/// records, in one transaction. The successor lives `ttl` if given, else as long as the old
/// token was issued for (no expiry stays none), within the policy's longest lifetime, else the
/// policy's default for the role.
///
/// A token is rotated once: rotating it again — or racing rotations, of which the store lets
/// one through — would leave several live successors of one credential, each taking its
/// lifetime from the overlap the first rotation set rather than from the token's own.
///
/// # Notable errors
/// `not_found` for a token that does not exist, is revoked or has expired; `conflict` for a
/// token already rotated (the message names its successor: rotate that one); `invalid` for an
/// overlap over [`MAX_ROTATION_OVERLAP`] or a lifetime the policy refuses; `internal` if the
/// store fails.
pub async fn rotate_token(
    store: &dyn ClinicalStore,
    policy: &TokenPolicy,
    id: &str,
    overlap: Duration,
    ttl: Option<Duration>,
    audit: impl FnOnce(&TokenRecord, &TokenRecord, i64) -> Vec<AuditRecord>,
) -> Result<Rotation, ApiError> {
    if overlap > MAX_ROTATION_OVERLAP {
        return Err(ApiError::invalid(format!(
            "overlap: at most {}",
            format_duration(MAX_ROTATION_OVERLAP)
        )));
    }
    let now = now_ms();
    let gone = || ApiError::not_found(format!("token {id:?} not found, revoked or expired"));
    let rotated = |successor: &str| {
        ApiError::conflict(format!(
            "token {id} was already rotated: its successor is {successor}; rotate that one \
             instead (a token is rotated once)"
        ))
    };
    let old = store.token_by_id(id).await?.ok_or_else(gone)?;
    if !old.valid_at(now) {
        return Err(gone());
    }
    if let Some(successor) = &old.replaced_by {
        return Err(rotated(successor));
    }
    let role: Role = caller_of(&old)?.role;
    let ttl = ttl.or_else(|| {
        old.expires_ms
            .map(|e| Duration::from_millis(e.saturating_sub(old.created_ms).max(1) as u64))
    });
    let ttl = match (ttl, policy.max_ttl) {
        // The old token's own lifetime, from before a limit was set, is brought within it.
        (Some(t), Some(max)) if t > max => Some(max),
        (t, _) => t,
    };
    let expires_ms = policy.expiry(role, ttl, now)?;
    let (new, token) = new_token(role, old.patient.clone(), &old.label, now, expires_ms)?;
    let old_expires_ms = now.saturating_add(i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX));
    let records = audit(&old, &new, old_expires_ms);
    if !store
        .rotate_token(&old.id, old_expires_ms, &new, &records)
        .await?
    {
        // Rotated by a racing request, or revoked or expired meanwhile.
        return Err(match store.token_by_id(id).await? {
            Some(TokenRecord {
                replaced_by: Some(successor),
                ..
            }) => rotated(&successor),
            _ => gone(),
        });
    }
    let old_expires_ms = old
        .expires_ms
        .map_or(old_expires_ms, |e| e.min(old_expires_ms));
    Ok(Rotation {
        old,
        old_expires_ms,
        new,
        token,
    })
}

/// Token look-ups with a short cache (see the module docs). Each entry holds the instant
/// until which it may be trusted: [`CACHE_TTL`] after the look-up, or the token's expiry if
/// that is sooner.
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
        if let Some(caller) = self.cached_hash(hash) {
            return Ok(caller);
        }
        let now = now_ms();
        let caller = match store.token_by_hash(hash).await {
            Ok(Some(rec)) if rec.revoked_ms.is_none() && rec.expired_at(now) => {
                return Err(ApiError::new(
                    ErrorCode::TokenExpired,
                    "token expired: ask an admin for a new one",
                ));
            }
            Ok(Some(rec)) if rec.revoked_ms.is_none() => caller_of(&rec)?,
            // Unknown and revoked tokens are not cached: a flood of made-up tokens must not
            // grow the cache.
            Ok(_) => return Err(ApiError::unauthorized("unknown or revoked token")),
            Err(e) => return Err(store_failed(e)),
        };
        // Trusted for CACHE_TTL, never past the token's expiry.
        let left = caller.expires_ms.map_or(CACHE_TTL, |e| {
            Duration::from_millis(e.saturating_sub(now).max(0) as u64).min(CACHE_TTL)
        });
        let until = Instant::now() + left;
        let mut entries = self.lock();
        if entries.len() >= MAX_CACHED {
            let now = Instant::now();
            entries.retain(|_, (until, _)| now < *until);
            if entries.len() >= MAX_CACHED {
                entries.clear();
            }
        }
        entries.insert(hash.to_string(), (until, caller.clone()));
        Ok(caller)
    }

    /// The caller a token stands for if this cache holds it as valid now (no store read).
    pub fn cached(&self, token: &str) -> Option<Caller> {
        self.cached_hash(&hash_token(token))
    }

    fn cached_hash(&self, hash: &str) -> Option<Caller> {
        let mut entries = self.lock();
        match entries.get(hash) {
            Some((until, caller)) if Instant::now() < *until => Some(caller.clone()),
            Some(_) => {
                entries.remove(hash);
                None
            }
            None => None,
        }
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
        expires_ms: rec.expires_ms,
    })
}

/// A store failure while looking a token up: 503 to retry if the store is unreachable (see
/// `From<StoreError> for ApiError`), 500 otherwise.
fn store_failed(e: StoreError) -> ApiError {
    e.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_lookup_on_an_unreachable_store_is_a_503() {
        // Every request looks its token up: during a PostgreSQL restart this was a 500.
        let e = store_failed(StoreError::Unavailable("connection refused".into()));
        assert_eq!(e.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        let e = store_failed(StoreError::Corrupt("bad role".into()));
        assert_eq!(e.status(), axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn roles_round_trip_and_unknown_is_invalid() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), r);
        }
        assert_eq!("root".parse::<Role>().unwrap_err().code, ErrorCode::Invalid);
    }

    #[test]
    fn ttls_parse_with_days_and_format_back() {
        assert_eq!(parse_ttl("12h"), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_ttl("30d"), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_ttl("1d12h"), Some(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_ttl("1500ms"), Some(Duration::from_millis(1500)));
        for bad in ["", "d", "12", "h12", "1d-", "1w", "99999999999999999999d"] {
            assert_eq!(parse_ttl(bad), None, "{bad:?}");
        }
        for d in ["90s", "15m", "12h", "7d"] {
            assert_eq!(format_duration(parse_ttl(d).unwrap()), d);
        }
    }

    #[test]
    fn policy_patient_tokens_expire_staff_only_under_a_limit() {
        let day = Duration::from_secs(86_400);
        let open = TokenPolicy::default();
        assert_eq!(
            open.expiry(Role::Patient, None, 1_000).unwrap(),
            Some(1_000 + 7 * 86_400_000)
        );
        assert_eq!(open.expiry(Role::Nurse, None, 1_000).unwrap(), None);
        assert_eq!(
            open.expiry(Role::Admin, Some(day), 1_000).unwrap(),
            Some(1_000 + 86_400_000)
        );
        assert_eq!(
            open.expiry(Role::Admin, Some(Duration::ZERO), 1_000)
                .unwrap_err()
                .code,
            ErrorCode::Invalid
        );
        // A lifetime no date can show (it used to be kept, at i64::MAX ms) is refused.
        assert_eq!(
            open.expiry(Role::Nurse, Some(MAX_TOKEN_LIFETIME * 2), 1_000)
                .unwrap_err()
                .code,
            ErrorCode::Invalid
        );
        assert!(
            open.expiry(Role::Nurse, Some(MAX_TOKEN_LIFETIME), 1_000)
                .is_ok()
        );
        let capped = TokenPolicy {
            max_ttl: Some(day),
            ..TokenPolicy::default()
        };
        // The limit is the staff default and caps the patient default.
        assert_eq!(
            capped.expiry(Role::Nurse, None, 0).unwrap(),
            Some(86_400_000)
        );
        assert_eq!(
            capped.expiry(Role::Patient, None, 0).unwrap(),
            Some(86_400_000)
        );
        assert_eq!(
            capped
                .expiry(Role::Nurse, Some(2 * day), 0)
                .unwrap_err()
                .code,
            ErrorCode::Invalid
        );
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
            expires_ms: None,
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
