//! Server-Sent Event streams of live views (see [`crate::sse`]), with their slots and the
//! token re-check that ends a revoked token's streams.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::{Stream, StreamExt};

use super::{ApiResult, St, audited, parse_patient_id};
use crate::auth::{Caller, Role};
use crate::error::ApiError;
use crate::extract::PathParams;
use crate::sse::Topic;
use crate::state::ServerState;
use crate::views::{self, PatientQueueView};

type BoxedEvents = std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>>;
type EventStream = Sse<axum::response::sse::KeepAliveStream<BoxedEvents>>;

/// Streams a topic's views (see [`crate::sse`]).
pub(super) fn stream(
    st: &Arc<ServerState>,
    caller: &Caller,
    topic: Topic,
) -> ApiResult<EventStream> {
    stream_many(st, caller, vec![topic])
}

/// Streams the views of several topics on one connection (a browser holds only six
/// connections to a server, and an open stream holds one).
fn stream_many(
    st: &Arc<ServerState>,
    caller: &Caller,
    topics: Vec<Topic>,
) -> ApiResult<EventStream> {
    let slot = st.streams.take(&caller.token)?;
    let each: Vec<BoxedEvents> = topics.into_iter().map(|t| topic_events(st, t)).collect();
    // The token is checked again every CACHE_TTL: a revoked token's streams end.
    let (state, hash) = (Arc::downgrade(st), caller.hash.clone());
    let revoked = async move {
        loop {
            tokio::time::sleep(crate::auth::CACHE_TTL).await;
            let Some(st) = state.upgrade() else { return };
            if let Err(e) = st
                .tokens
                .authenticate_hash(st.store().as_ref(), &hash)
                .await
                && e.is_auth_failure()
            {
                return;
            }
        }
    };
    let merged = futures_util::stream::select_all(each)
        .take_until(Box::pin(revoked))
        .map(move |ev| {
            // The stream holds its slot among the open streams for as long as it lives.
            let _slot = &slot;
            ev
        });
    // A short keep-alive also bounds how long a closed connection that hyper does not see
    // closed holds its slot (see `StreamSlots`).
    Ok(Sse::new(Box::pin(merged) as BoxedEvents)
        .keep_alive(KeepAlive::new().interval(st.limits.stream_keep_alive)))
}

/// One topic's views as events: the current one first, then every change, until shutdown.
fn topic_events(st: &Arc<ServerState>, topic: Topic) -> BoxedEvents {
    let name = topic.event();
    // The receiver is the stream's place in the feed: the feed runs while one lives.
    let mut rx = st.hub.subscribe(topic);
    rx.mark_changed();
    let end = Box::pin(st.shutting_down());
    Box::pin(futures_util::stream::unfold(
        (rx, end),
        move |(mut rx, mut end)| async move {
            loop {
                tokio::select! {
                    r = rx.changed() => r.ok()?,
                    _ = &mut end => return None,
                }
                let v = rx.borrow_and_update().clone();
                if let Some(v) = v {
                    let ev = Event::default().event(name).data(&*v);
                    return Some((Ok(ev), (rx, end)));
                }
            }
        },
    ))
}

/// Every pool's live view (event `pool`, one per pool and change), the cluster's (event
/// `cluster`) and the active alarms (event `alarms`) on one stream: what a dashboard needs, on
/// one connection.
#[utoipa::path(get, path = "/api/events", tag = "streams", security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream")))]
pub async fn all_events(State(st): St, caller: Caller) -> ApiResult<EventStream> {
    let r = async {
        caller.require(Role::STAFF)?;
        let h = st.hospital()?;
        let mut topics: Vec<Topic> = h
            .config()
            .pools
            .iter()
            .map(|p| Topic::Pool(p.pool.clone()))
            .collect();
        topics.push(Topic::Cluster);
        topics.push(Topic::Alarms);
        stream_many(&st, &caller, topics)
    }
    .await;
    audited(&st, &caller, "queue.stream", None, None, r).await
}

/// Live view of a pool: units and queue (event `pool`).
#[utoipa::path(get, path = "/api/pools/{pool}/events", tag = "streams", security(("bearer" = [])),
    params(("pool" = String, Path)), responses((status = 200, content_type = "text/event-stream")))]
pub async fn pool_events(
    State(st): St,
    caller: Caller,
    PathParams(name): PathParams<String>,
) -> ApiResult<EventStream> {
    let r = async {
        caller.require(Role::STAFF)?;
        let h = st.hospital()?;
        let p = views::resolve_pool(&h, &name)?;
        stream(&st, &caller, Topic::Pool(p))
    }
    .await;
    audited(&st, &caller, "queue.stream", None, None, r).await
}

/// Live view of one unit (event `unit`).
#[utoipa::path(get, path = "/api/pools/{pool}/units/{unit}/events", tag = "streams",
    security(("bearer" = [])), params(("pool" = String, Path), ("unit" = String, Path)),
    responses((status = 200, content_type = "text/event-stream")))]
pub async fn unit_events(
    State(st): St,
    caller: Caller,
    PathParams((name, unit)): PathParams<(String, String)>,
) -> ApiResult<EventStream> {
    let r = async {
        caller.require(Role::STAFF)?;
        let h = st.hospital()?;
        let p = views::resolve_pool(&h, &name)?;
        views::unit(&h, &p, &unit).await?;
        stream(&st, &caller, Topic::Unit(p, unit))
    }
    .await;
    audited(&st, &caller, "unit.stream", None, None, r).await
}

/// Live view of a patient's own exams (event `patient`): staff, or the patient's own token.
#[utoipa::path(get, path = "/api/patients/{id}/events", tag = "streams", security(("bearer" = [])),
    params(("id" = String, Path)), responses((status = 200, content_type = "text/event-stream")))]
pub async fn patient_events(
    State(st): St,
    caller: Caller,
    PathParams(id): PathParams<String>,
) -> ApiResult<EventStream> {
    let id = parse_patient_id(&id)?;
    let r = async {
        caller.require_staff_or_self(Role::STAFF, &id)?;
        // As `GET /api/patients/{id}`: a patient nobody registered or ordered for is unknown.
        if st.store().patient(&id).await?.is_none() && st.store().orders_of(&id).await?.is_empty() {
            return Err(ApiError::not_found(format!("patient {id} not found")));
        }
        stream(&st, &caller, Topic::Patient(id.clone()))
    }
    .await;
    audited(&st, &caller, "patient.stream", Some(&id), None, r).await
}

/// Live view of the cluster (event `cluster`). Opening it is audited (`cluster.stream`).
#[utoipa::path(get, path = "/api/cluster/events", tag = "streams", security(("bearer" = [])),
    responses((status = 200, content_type = "text/event-stream")))]
pub async fn cluster_events(State(st): St, caller: Caller) -> ApiResult<EventStream> {
    let r = caller
        .require(Role::STAFF)
        .and_then(|()| stream(&st, &caller, Topic::Cluster));
    super::audited(&st, &caller, "cluster.stream", None, None, r).await
}

/// The patient's queue view type, for the OpenAPI document.
pub type PatientStreamView = PatientQueueView;
