//! What the API and the event streams show: pools, units, queues, a patient's exams, the
//! cluster, the tree. Computed from the coordination tree (live state) and, for orders, the
//! clinical store. Each view takes what it is computed from (the [`Hospital`], a session, who
//! this instance is) as parameters, not the server's state, so this module depends on neither
//! the state nor the event feeds ([`crate::sse`]) that call it.

use medkeeper_coord::{Error as CoordError, Session, Stat};
use medkeeper_hospital::model::validate_name;
use medkeeper_hospital::orders::{Hospital, QueueRow, UnitView};
use medkeeper_hospital::tree::PatientEntry;
use medkeeper_hospital::{PatientId, Pool, tree};
use medkeeper_recipes::election;
use medkeeper_recipes::membership;
use serde::Serialize;

use crate::error::{ApiError, ErrorCode};

/// Who this instance is, as the cluster view shows it (and as it announces itself in the
/// membership group).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct MemberInfo {
    /// The instance id.
    pub id: String,
    /// Where it serves the API.
    pub url: String,
    /// When it started, ms since the epoch.
    pub started_ms: i64,
}

/// A pool (equipment kind or department) with its units and, in streams, its queue.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PoolView {
    /// `equipment` or `department`.
    pub pool: &'static str,
    /// The kind or department.
    pub name: String,
    /// Its units or doctors.
    #[schema(value_type = Vec<Object>)]
    pub units: Vec<UnitView>,
    /// How many orders wait.
    pub queue_length: usize,
    /// The waiting orders in dispatch order (event streams only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub queue: Option<Vec<QueueRow>>,
}

/// A patient's own exams as the patient may see them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PatientQueueView {
    /// One entry per exam ordered.
    pub queue: Vec<PatientEntry>,
}

/// The cluster: live instances and the leader.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClusterView {
    /// The hospital's name (from its configuration).
    pub hospital: String,
    /// The instance that answered.
    pub instance: String,
    /// Live instances.
    pub members: Vec<MemberInfo>,
    /// The leader's id, if one is elected.
    pub leader: Option<String>,
}

/// A node of the coordination tree (read-only admin view).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TreeNode {
    /// Its path.
    pub path: String,
    /// Its data as UTF-8 text; `null` if empty or not UTF-8.
    pub data: Option<String>,
    /// Its data's length in bytes.
    pub data_length: i32,
    /// Data version.
    pub version: i32,
    /// Number of children.
    pub num_children: i32,
    /// Session owning it if ephemeral (0 otherwise).
    pub ephemeral_owner: i64,
    /// Creation time, ms since the epoch.
    pub ctime: i64,
    /// Last modification time, ms since the epoch.
    pub mtime: i64,
    /// Its children, to the depth asked for (names beyond it are listed in `more`).
    #[schema(no_recursion)]
    pub children: Vec<TreeNode>,
    /// Children not expanded (beyond the depth or the breadth limit).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub more: Vec<String>,
}

/// The pool an API path names: `MRI`, or `equipment:MRI` / `department:cardiology` when a
/// name is both. A malformed name (not one safe znode name: `..`, `a/b`, a NUL byte, over 64
/// characters) is `invalid`, a well-formed one not configured `not_found`.
pub fn resolve_pool(hospital: &Hospital, name: &str) -> Result<Pool, ApiError> {
    let pools = &hospital.config().pools;
    let bare = name
        .strip_prefix("equipment:")
        .or_else(|| name.strip_prefix("department:"))
        .unwrap_or(name);
    validate_name("pool", bare)?;
    if let Some(k) = name.strip_prefix("equipment:") {
        let p = Pool::Equipment(k.to_string());
        return pools
            .iter()
            .any(|c| c.pool == p)
            .then_some(p)
            .ok_or_else(|| ApiError::not_found(format!("equipment kind {k:?} not found")));
    }
    if let Some(d) = name.strip_prefix("department:") {
        let p = Pool::Department(d.to_string());
        return pools
            .iter()
            .any(|c| c.pool == p)
            .then_some(p)
            .ok_or_else(|| ApiError::not_found(format!("department {d:?} not found")));
    }
    let found: Vec<&Pool> = pools
        .iter()
        .map(|c| &c.pool)
        .filter(|p| p.name() == name)
        .collect();
    match found.as_slice() {
        [p] => Ok((*p).clone()),
        [] => Err(ApiError::not_found(format!("pool {name:?} not found"))),
        _ => Err(ApiError::invalid(format!(
            "{name:?} is both a kind and a department: say equipment:{name} or department:{name}"
        ))),
    }
}

fn pool_kind(pool: &Pool) -> &'static str {
    match pool {
        Pool::Equipment(_) => "equipment",
        Pool::Department(_) => "department",
    }
}

/// A pool's units and queue length (and the queue itself if `with_queue`).
pub async fn pool(
    hospital: &Hospital,
    pool: &Pool,
    with_queue: bool,
) -> Result<PoolView, ApiError> {
    let units = hospital.units(pool).await?;
    let queue = hospital.queue_view(pool).await?;
    Ok(PoolView {
        pool: pool_kind(pool),
        name: pool.name().to_string(),
        units,
        queue_length: queue.len(),
        queue: with_queue.then_some(queue),
    })
}

/// One unit: `invalid` for a malformed name, `not_found` for a well-formed one the pool lacks.
pub async fn unit(hospital: &Hospital, pool: &Pool, unit: &str) -> Result<UnitView, ApiError> {
    validate_name("unit", unit)?;
    hospital
        .units(pool)
        .await?
        .into_iter()
        .find(|u| u.name == unit)
        .ok_or_else(|| ApiError::not_found(format!("unit {unit:?} of {pool} not found")))
}

/// Live instances and the leader, as instance `me` sees them.
pub async fn cluster(me: &MemberInfo, hospital: &Hospital) -> Result<ClusterView, ApiError> {
    let session = hospital.session().as_ref();
    let mut members = Vec::new();
    for (id, data) in membership::members(session, tree::MEMBERS).await? {
        members.push(
            serde_json::from_slice::<MemberInfo>(&data).unwrap_or(MemberInfo {
                id,
                url: String::new(),
                started_ms: 0,
            }),
        );
    }
    members.sort_by(|a, b| a.id.cmp(&b.id));
    let leader = match election::leader(session, tree::LEADER).await {
        Ok(l) => l.map(|p| p.id),
        Err(medkeeper_recipes::Error::Coord(CoordError::NoNode)) => None,
        Err(e) => return Err(e.into()),
    };
    Ok(ClusterView {
        hospital: hospital.config().name.clone(),
        instance: me.id.clone(),
        members,
        leader,
    })
}

/// A patient's own exams.
pub async fn patient_queue(
    hospital: &Hospital,
    patient: &PatientId,
) -> Result<PatientQueueView, ApiError> {
    Ok(PatientQueueView {
        queue: hospital.patient_view(patient).await?,
    })
}

/// The most children listed under one node of the tree view.
pub const TREE_BREADTH: usize = 1000;
/// The deepest the tree view expands.
pub const TREE_MAX_DEPTH: u32 = 8;

/// The subtree at `path`, `depth` levels deep. A malformed path (relative, a trailing `/`, a
/// `.` or `..` segment, a NUL byte) is `invalid`, checked here whatever the backend checks.
pub async fn tree_node(
    session: &dyn Session,
    path: &str,
    depth: u32,
) -> Result<TreeNode, ApiError> {
    if let Err(e) = medkeeper_coord::path::validate_path(path, false) {
        return Err(ApiError::invalid(format!("path {path:?}: {e}")));
    }
    let (data, stat) = match session.get_data(path).await {
        Ok(v) => v,
        Err(CoordError::NoNode) => {
            return Err(ApiError::not_found(format!("node {path} not found")));
        }
        Err(CoordError::BadArguments(why)) => {
            return Err(ApiError::invalid(format!("path {path:?}: {why}")));
        }
        Err(e) => return Err(e.into()),
    };
    let mut node = leaf(path, &data, &stat);
    if stat.num_children == 0 {
        return Ok(node);
    }
    let mut names = match session.get_children(path).await {
        Ok(c) => c,
        Err(CoordError::NoNode) => return Ok(node),
        Err(e) => return Err(e.into()),
    };
    names.sort();
    if depth == 0 {
        node.more = names;
        return Ok(node);
    }
    let rest = names.split_off(names.len().min(TREE_BREADTH));
    for n in names {
        let child = if path == "/" {
            format!("/{n}")
        } else {
            format!("{path}/{n}")
        };
        match Box::pin(tree_node(session, &child, depth - 1)).await {
            Ok(c) => node.children.push(c),
            Err(e) if e.code == ErrorCode::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    node.more = rest;
    Ok(node)
}

fn leaf(path: &str, data: &[u8], stat: &Stat) -> TreeNode {
    TreeNode {
        path: path.to_string(),
        data: if data.is_empty() {
            None
        } else {
            std::str::from_utf8(data).ok().map(str::to_string)
        },
        data_length: stat.data_length,
        version: stat.version,
        num_children: stat.num_children,
        ephemeral_owner: stat.ephemeral_owner,
        ctime: stat.ctime,
        mtime: stat.mtime,
        children: Vec::new(),
        more: Vec::new(),
    }
}
