//! The cluster (live instances, the leader) and a read-only view of the coordination tree.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiResult, St, audited};
use crate::auth::{Caller, Role};
use crate::extract::QueryParams;
use crate::views::{self, ClusterView, TreeNode};
use Role::Admin;

/// Live instances and the leader. Audited (`cluster.read`: who looked, not what they saw).
#[utoipa::path(get, path = "/api/cluster", tag = "cluster", security(("bearer" = [])),
    responses((status = 200, body = ClusterView)))]
pub async fn cluster(State(st): St, caller: Caller) -> ApiResult<Json<ClusterView>> {
    let r = async {
        caller.require(Role::STAFF)?;
        let h = st.hospital()?;
        Ok(Json(views::cluster(st.me(), &h).await?))
    }
    .await;
    audited(&st, &caller, "cluster.read", None, None, r).await
}

/// Which subtree to show.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct TreeQuery {
    /// The node (default `/medical`).
    #[serde(default)]
    pub path: Option<String>,
    /// Levels to expand (default 1, at most 8).
    #[serde(default)]
    pub depth: Option<u32>,
}

/// A read-only view of the coordination tree (admins).
#[utoipa::path(get, path = "/api/tree", tag = "cluster", security(("bearer" = [])),
    params(TreeQuery), responses((status = 200, body = TreeNode)))]
pub async fn tree(
    State(st): St,
    caller: Caller,
    QueryParams(q): QueryParams<TreeQuery>,
) -> ApiResult<Json<TreeNode>> {
    caller.require(&[Admin])?;
    let h = st.hospital()?;
    let path = q
        .path
        .unwrap_or_else(|| medkeeper_hospital::tree::ROOT.to_string());
    let depth = q.depth.unwrap_or(1).min(views::TREE_MAX_DEPTH);
    let r = views::tree_node(h.session().as_ref(), &path, depth).await;
    // The tree holds patient ids (never PHI); reading it is audited like a queue.
    audited(&st, &caller, "tree.read", None, None, r)
        .await
        .map(Json)
}
