//! Who the caller is, tokens (admins create, list and revoke them) and the audit log.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use medkeeper_hospital::PatientId;
use medkeeper_hospital::model::{now_ms, validate_name};
use medkeeper_hospital::store::{AuditQuery, AuditRecord, TokenRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiResult, St, audited_change, change_record, detached};
use crate::auth::{Caller, Role, issue_token_audited};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{Body, PathParams, QueryParams};
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
    /// The instance that answered.
    pub instance: String,
}

/// The caller's identity.
#[utoipa::path(get, path = "/api/whoami", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = WhoAmI), (status = 401, body = ErrorBody)))]
pub async fn whoami(State(st): St, caller: Caller) -> Json<WhoAmI> {
    Json(WhoAmI {
        token: caller.token,
        role: caller.role,
        patient: caller.patient,
        instance: st.me().id.clone(),
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
    /// A label for people (who or what holds it).
    #[serde(default)]
    pub label: String,
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
}

/// Creates a token (admins).
#[utoipa::path(post, path = "/api/tokens", tag = "auth", security(("bearer" = [])),
    request_body = NewToken, responses((status = 201, body = IssuedToken)))]
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
                issue_token_audited(store, body.role, body.patient, &body.label, Some(&record))
                    .await
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
            }),
        ))
    })
    .await
}

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
}

impl From<TokenRecord> for TokenInfo {
    fn from(t: TokenRecord) -> TokenInfo {
        TokenInfo {
            id: t.id,
            role: t.role,
            patient: t.patient,
            label: t.label,
            created_ms: t.created_ms,
            revoked_ms: t.revoked_ms,
        }
    }
}

/// Lists tokens (admins).
#[utoipa::path(get, path = "/api/tokens", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = Vec<TokenInfo>)))]
pub async fn tokens(State(st): St, caller: Caller) -> ApiResult<Json<Vec<TokenInfo>>> {
    caller.require(&[Admin])?;
    let all = st.store().tokens().await?;
    Ok(Json(all.into_iter().map(TokenInfo::from).collect()))
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

/// The audit log (admins).
#[utoipa::path(get, path = "/api/audit", tag = "auth", security(("bearer" = [])),
    params(AuditQuery), responses((status = 200, body = Vec<Object>)))]
pub async fn audit(
    State(st): St,
    caller: Caller,
    QueryParams(query): QueryParams<AuditQuery>,
) -> ApiResult<Json<Vec<AuditRecord>>> {
    caller.require(&[Admin])?;
    Ok(Json(st.store().audit(&query).await?))
}
