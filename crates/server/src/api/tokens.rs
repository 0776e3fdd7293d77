//! Who the caller is, tokens (admins create, list, show, rotate and revoke them) and the
//! audit log. Reading tokens and the audit log is audited too (`token.list`, `token.read`,
//! `audit.read`): who looked, when, not what they saw.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use medkeeper_hospital::PatientId;
use medkeeper_hospital::model::{now_ms, validate_name};
use medkeeper_hospital::store::{AuditQuery, AuditRecord, TokenRecord};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::ToSchema;

use super::{ApiResult, St, audited, audited_change, change_record, detached};
use crate::auth::{Caller, Role, issue_token_audited, parse_ttl, rotate_token};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Body, PathParams, QueryParams};
use crate::state::Audit;
use Role::Admin;

/// The caller's token.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoAmI {
    /// The token's id.
    pub token: String,
    /// Its role.
    pub role: Role,
    /// The patient, for a patient token.
    pub patient: Option<PatientId>,
    /// When the token expires, ms since the epoch (`null`: it does not).
    pub expires_ms: Option<i64>,
    /// The instance that answered.
    pub instance: String,
    /// The hospital's time zone, an IANA name (`Asia/Shanghai`): the hospital file's
    /// `time_zone`, which the dashboard shows every date and time in. `null` when the file
    /// names none (or before the instance's first coordination session): show the device's.
    #[schema(example = "Asia/Shanghai")]
    pub time_zone: Option<String>,
}

/// The caller's identity, and the hospital's time zone (what the dashboard loads first).
#[utoipa::path(get, path = "/api/whoami", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub async fn whoami(State(st): St, caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        token: caller.token,
        role: caller.role,
        patient: caller.patient,
        expires_ms: caller.expires_ms,
        instance: st.me().id.clone(),
        time_zone: st
            .hospital()
            .ok()
            .and_then(|h| h.config().time_zone.as_ref().map(|z| z.to_string())),
    })
}

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// The role.
    pub role: Role,
    /// The patient, for a patient token.
    #[serde(default)]
    pub patient: Option<PatientId>,
    /// A label for people (who or what holds it): one line, no control characters.
    #[serde(default)]
    pub label: String,
    /// How long it lives: `12h`, `30d`, `90m`. Without it (and without `expires_ms`): a patient
    /// token lives 7 days, a staff token does not expire — unless the server sets a longest
    /// lifetime (`serve --token-max-ttl`), which is then the default and the limit.
    #[serde(default)]
    pub ttl: Option<String>,
    /// When it expires, ms since the epoch (instead of `ttl`).
    #[serde(default)]
    pub expires_ms: Option<i64>,
}

/// The lifetime asked for: `ttl` or `expires_ms` (not both), as a duration from `now_ms`.
fn requested_ttl(
    ttl: Option<&str>,
    expires_ms: Option<i64>,
    now_ms: i64,
) -> Result<Option<Duration>, ApiError> {
    match (ttl, expires_ms) {
        (Some(_), Some(_)) => Err(ApiError::invalid("give ttl or expires_ms, not both")),
        (Some(t), None) => parse_ttl(t).map(Some).ok_or_else(|| {
            ApiError::invalid(format!("ttl {t:?}: use a duration such as 12h or 30d"))
        }),
        (None, Some(at)) if at <= now_ms => {
            Err(ApiError::invalid("expires_ms: must be in the future"))
        }
        (None, Some(at)) => Ok(Some(Duration::from_millis((at - now_ms) as u64))),
        (None, None) => Ok(None),
    }
}

/// A created token: the only time its text is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedToken {
    /// The token's public id.
    pub id: String,
    /// The bearer token.
    pub token: String,
    /// Its role.
    pub role: Role,
    /// Its patient.
    pub patient: Option<PatientId>,
    /// Its label.
    pub label: String,
    /// When it expires, ms since the epoch (`null`: it does not).
    pub expires_ms: Option<i64>,
}

/// Creates a token (admins).
#[utoipa::path(post, path = "/api/tokens", tag = "auth", security(("bearer" = [])),
    request_body = NewToken, responses((status = 201, body = IssuedToken),
        (status = 422, body = ErrorBody)))]
pub async fn create_token(
    State(st): St,
    caller: Caller,
    Body(body): Body<NewToken>,
) -> ApiResult<impl IntoResponse> {
    detached(async move {
        let patient = body.patient.clone();
        let r = match caller.require(&[Admin]) {
            Ok(()) => {
                let record = change_record(&caller, "token.create", patient.as_ref(), None);
                let store = st.store().as_ref();
                let now = now_ms();
                // The label is listed and shown beside the token: one line, no disguise.
                match crate::text::single_line("label", &body.label)
                    .and_then(|()| requested_ttl(body.ttl.as_deref(), body.expires_ms, now))
                    .and_then(|ttl| st.limits.tokens.expiry(body.role, ttl, now))
                {
                    Ok(expires_ms) => {
                        issue_token_audited(
                            store,
                            body.role,
                            body.patient,
                            &body.label,
                            expires_ms,
                            Some(&record),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        let written = r.is_ok();
        let r = audited_change(
            &st,
            &caller,
            "token.create",
            patient.as_ref(),
            None,
            written,
            r,
        )
        .await?;
        let (rec, token) = r;
        Ok((
            StatusCode::CREATED,
            Json(IssuedToken {
                id: rec.id,
                token,
                role: body.role,
                patient: rec.patient,
                label: rec.label,
                expires_ms: rec.expires_ms,
            }),
        ))
    })
    .await
}

/// A rotation: how long the old token keeps working, and the new one's lifetime.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateToken {
    /// How long the old token keeps working alongside the new one: `1h` by default, `0s` to
    /// end it now, at most `7d`. An earlier expiry it already has is kept.
    #[serde(default)]
    pub overlap: Option<String>,
    /// The new token's lifetime (`12h`, `30d`); by default as long as the old token was issued
    /// for, or the server's default for its role.
    #[serde(default)]
    pub ttl: Option<String>,
}

/// A rotated token: its successor (shown this once) and when the old one stops working.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedToken {
    /// The successor: same role, patient and label.
    #[serde(flatten)]
    pub token: IssuedToken,
    /// The token it replaces.
    pub replaces: String,
    /// When the replaced token expires, ms since the epoch.
    pub replaced_expires_ms: i64,
}

/// Rotates a token (admins): issues its successor and has the old one expire after an
/// overlap, both audited in the same transaction (`token.rotate` for the old, `token.create`
/// for the new). A token is rotated once: again, or concurrently, is 409 `conflict` naming
/// the successor.
#[utoipa::path(post, path = "/api/tokens/{id}/rotate", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path)), request_body = RotateToken,
    responses((status = 201, body = RotatedToken), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn rotate(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
    Body(body): Body<RotateToken>,
) -> ApiResult<impl IntoResponse> {
    detached(async move {
        let r = async {
            caller.require(&[Admin])?;
            validate_name("token id", &id)?;
            let overlap = match body.overlap.as_deref() {
                None => DEFAULT_OVERLAP,
                Some(o) => parse_ttl(o).ok_or_else(|| {
                    ApiError::invalid(format!("overlap {o:?}: use a duration such as 1h"))
                })?,
            };
            let ttl = body
                .ttl
                .as_deref()
                .map(|t| {
                    parse_ttl(t).ok_or_else(|| {
                        ApiError::invalid(format!("ttl {t:?}: use a duration such as 12h or 30d"))
                    })
                })
                .transpose()?;
            let rotation = rotate_token(
                st.store().as_ref(),
                &st.limits.tokens,
                &id,
                overlap,
                ttl,
                |old, new, old_expires_ms| {
                    let mut rotated =
                        change_record(&caller, "token.rotate", old.patient.as_ref(), None);
                    rotated.detail = format!(
                        "{} replaced by {}; expires at {old_expires_ms} (ms) at the latest",
                        old.id, new.id
                    );
                    let mut created =
                        change_record(&caller, "token.create", new.patient.as_ref(), None);
                    created.detail = format!("{} succeeds {}", new.id, old.id);
                    vec![rotated, created]
                },
            )
            .await?;
            // The old token's cached answer (no expiry) must not outlive the new expiry here.
            st.tokens.clear();
            Ok(rotation)
        }
        .await;
        let written = r.is_ok();
        let rotation = audited_change(&st, &caller, "token.rotate", None, None, written, r).await?;
        let role: Role = rotation.new.role.parse()?;
        Ok((
            StatusCode::CREATED,
            Json(RotatedToken {
                token: IssuedToken {
                    id: rotation.new.id,
                    token: rotation.token,
                    role,
                    patient: rotation.new.patient,
                    label: rotation.new.label,
                    expires_ms: rotation.new.expires_ms,
                },
                replaces: rotation.old.id,
                replaced_expires_ms: rotation.old_expires_ms,
            }),
        ))
    })
    .await
}

/// How long a rotated token keeps working unless the rotation says otherwise.
pub const DEFAULT_OVERLAP: Duration = Duration::from_secs(3600);

/// A token as listed (never its text or hash).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenInfo {
    /// Its public id.
    pub id: String,
    /// Its role.
    pub role: String,
    /// Its patient.
    pub patient: Option<PatientId>,
    /// Its label.
    pub label: String,
    /// When created.
    pub created_ms: i64,
    /// When revoked.
    pub revoked_ms: Option<i64>,
    /// When it expires (or expired); `null`: it does not.
    pub expires_ms: Option<i64>,
    /// True once it has expired (as of the answer).
    pub expired: bool,
    /// The token that replaced it, once rotated (a token is rotated once).
    pub replaced_by: Option<String>,
}

impl TokenInfo {
    fn of(t: TokenRecord, now_ms: i64) -> TokenInfo {
        TokenInfo {
            expired: t.expired_at(now_ms),
            id: t.id,
            role: t.role,
            patient: t.patient,
            label: t.label,
            created_ms: t.created_ms,
            revoked_ms: t.revoked_ms,
            expires_ms: t.expires_ms,
            replaced_by: t.replaced_by,
        }
    }
}

/// Lists tokens (admins). Audited (`token.list`).
#[utoipa::path(get, path = "/api/tokens", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Vec<TokenInfo>)))]
pub async fn tokens(State(st): St, caller: Caller) -> ApiResult<Json<Vec<TokenInfo>>> {
    let r = async {
        caller.require(&[Admin])?;
        let all = st.store().tokens().await?;
        let now = now_ms();
        Ok(Json(
            all.into_iter().map(|t| TokenInfo::of(t, now)).collect(),
        ))
    }
    .await;
    audited(&st, &caller, "token.list", None, None, r).await
}

/// One token (admins). Audited (`token.read`).
#[utoipa::path(get, path = "/api/tokens/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path)),
    responses((status = 200, body = TokenInfo), (status = 404, body = ErrorBody)))]
pub async fn token(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<TokenInfo>> {
    let r = async {
        caller.require(&[Admin])?;
        validate_name("token id", &id)?;
        match st.store().token_by_id(&id).await? {
            Some(t) => Ok(Json(TokenInfo::of(t, now_ms()))),
            None => Err(ApiError::not_found(format!("token {id:?} not found"))),
        }
    }
    .await;
    let mut detail_id = id.clone();
    detail_id.truncate(64);
    audited_detail(&st, &caller, "token.read", detail_id, r).await
}

/// Revokes a token (admins).
#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke_token(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<StatusCode> {
    let record = change_record(&caller, "token.revoke", None, None);
    let r = async {
        caller.require(&[Admin])?;
        validate_name("token id", &id)?;
        if st
            .store()
            .revoke_token(&id, now_ms(), Some(&record))
            .await?
        {
            st.tokens.clear();
            Ok(StatusCode::NO_CONTENT)
        } else {
            Err(ApiError::not_found(format!(
                "token {id:?} not found or already revoked"
            )))
        }
    }
    .await;
    let written = r.is_ok();
    audited_change(&st, &caller, "token.revoke", None, None, written, r).await
}

/// The audit log (admins). Reading it is audited too (`audit.read`, with the search's
/// patient and its other criteria, not what was found).
#[utoipa::path(get, path = "/api/audit", tag = "auth", security(("bearer" = [])),
    params(AuditQuery), responses((status = 200, body = Vec<Object>)))]
pub async fn audit(
    State(st): St,
    caller: Caller,
    QueryParams(query): QueryParams<AuditQuery>,
) -> ApiResult<Json<Vec<AuditRecord>>> {
    let r = async {
        caller.require(&[Admin])?;
        Ok(Json(st.store().audit(&query).await?))
    }
    .await;
    let mut criteria = Vec::new();
    if let Some(a) = &query.actor {
        criteria.push(format!("actor={}", a.chars().take(64).collect::<String>()));
    }
    if let Some(s) = query.since_ms {
        criteria.push(format!("since_ms={s}"));
    }
    if let Some(s) = query.after_seq {
        criteria.push(format!("after_seq={s}"));
    }
    if let Some(l) = query.limit {
        criteria.push(format!("limit={l}"));
    }
    let (out, detail) = super::outcome(&r);
    let detail = match (detail.is_empty(), criteria.is_empty()) {
        (true, _) => criteria.join(" "),
        (false, true) => detail,
        (false, false) => format!("{}; {detail}", criteria.join(" ")),
    };
    st.audit(Audit {
        caller: &caller,
        action: "audit.read",
        patient: query.patient.as_ref(),
        order: None,
        outcome: out,
        detail,
    })
    .await?;
    r
}

/// Records `r`'s outcome with `detail` (what was read, never its content) and passes it on.
async fn audited_detail<T>(
    st: &crate::state::ServerState,
    caller: &Caller,
    action: &'static str,
    what: String,
    r: ApiResult<T>,
) -> ApiResult<T> {
    let (out, detail) = super::outcome(&r);
    let detail = if detail.is_empty() {
        what
    } else {
        format!("{what}: {detail}")
    };
    st.audit(Audit {
        caller,
        action,
        patient: None,
        order: None,
        outcome: out,
        detail,
    })
    .await?;
    r
}
