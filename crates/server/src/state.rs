//! The server's shared state.

use std::sync::Arc;

use medkeeper_coord::SessionState;
use medkeeper_hospital::dispatch::DispatchObserver;
use medkeeper_hospital::model::now_ms;
use medkeeper_hospital::orders::Hospital;
use medkeeper_hospital::store::{AuditRecord, ClinicalStore, StoreError};
use medkeeper_hospital::{OrderId, PatientId};
use tokio::sync::watch;

use crate::auth::{Caller, TokenCache};
use crate::auth_failures::{AuthFailures, Refused};
use crate::error::{ApiError, ErrorCode};
use crate::metrics::EngineFiguresSource;
use crate::sse::{Hub, StreamSlots};
use crate::views::MemberInfo;

/// Limits of one server.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Requests handled at once before new ones are answered 503 `overloaded`.
    pub max_in_flight: usize,
    /// Open event streams before new ones are answered 503 `overloaded`.
    pub max_streams: usize,
    /// Open event streams of one token before its next is answered 429 `too_many_streams`
    /// (so one token cannot take all of [`max_streams`](Limits::max_streams)).
    pub max_streams_per_token: usize,
    /// How often an idle event stream sends a `: keep-alive` comment. A connection whose close
    /// the server cannot see at once (see [`crate::sse`]) frees its stream slot at the second
    /// write after the close, so this also bounds how long a closed stream holds its slot.
    pub stream_keep_alive: std::time::Duration,
    /// The longest a request may take before it is answered 503 `timeout`.
    pub request_timeout: std::time::Duration,
    /// The largest request body, in bytes.
    pub max_body: usize,
    /// How long tokens live: defaults and the longest lifetime (`serve --token-max-ttl`).
    pub tokens: crate::auth::TokenPolicy,
    /// When failed authentications from one address get it refused (429 `rate_limited`).
    pub auth_failures: crate::auth_failures::FailureLimit,
    /// The load balancers whose `X-Forwarded-For` names the client (`serve --trusted-proxy`;
    /// none by default): the address failed authentications are counted by
    /// ([`crate::proxies`]).
    pub trusted_proxies: crate::proxies::TrustedProxies,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_in_flight: 256,
            max_streams: 1024,
            max_streams_per_token: 8,
            stream_keep_alive: std::time::Duration::from_secs(1),
            request_timeout: std::time::Duration::from_secs(10),
            max_body: 64 * 1024,
            tokens: Default::default(),
            auth_failures: Default::default(),
            trusted_proxies: Default::default(),
        }
    }
}

/// The server's state, shared by every request (`Arc`).
pub struct ServerState {
    me: MemberInfo,
    store: Arc<dyn ClinicalStore>,
    hospital: watch::Sender<Option<Arc<Hospital>>>,
    pub(crate) tokens: TokenCache,
    pub(crate) auth_failures: AuthFailures,
    pub(crate) hub: Hub,
    pub(crate) streams: StreamSlots,
    pub(crate) limits: Limits,
    pub(crate) http_metrics: crate::metrics::HttpMetrics,
    pub(crate) dispatch_metrics: crate::metrics::DispatchMetrics,
    engine_figures: std::sync::Mutex<Option<EngineFiguresSource>>,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState").field("me", &self.me).finish()
    }
}

impl ServerState {
    /// The state of an instance `me` over the clinical `store`. The hospital (a coordination
    /// session) is set with [`set_hospital`](ServerState::set_hospital); until then the API
    /// answers 503 `unavailable`.
    pub fn new(me: MemberInfo, store: Arc<dyn ClinicalStore>, limits: Limits) -> Arc<ServerState> {
        let hospital = watch::channel(None).0;
        Arc::new(ServerState {
            hub: Hub::new(hospital.subscribe(), me.clone()),
            me,
            store,
            hospital,
            tokens: TokenCache::default(),
            auth_failures: AuthFailures::new(limits.auth_failures.clone()),
            streams: StreamSlots::new(limits.max_streams, limits.max_streams_per_token),
            limits,
            http_metrics: Default::default(),
            dispatch_metrics: Default::default(),
            engine_figures: std::sync::Mutex::new(None),
            shutdown: watch::channel(false).0,
        })
    }

    /// Serves `hospital` (a new session's) from now on; `None` while there is none.
    pub fn set_hospital(&self, hospital: Option<Arc<Hospital>>) {
        self.hospital.send_replace(hospital);
    }

    /// Follows the hospital being served (`None` while there is no session).
    pub fn hospitals(&self) -> watch::Receiver<Option<Arc<Hospital>>> {
        self.hospital.subscribe()
    }

    /// The hospital being served.
    ///
    /// # Notable errors
    /// `unavailable` while there is no session.
    pub fn hospital(&self) -> Result<Arc<Hospital>, ApiError> {
        self.hospital
            .borrow()
            .clone()
            .ok_or_else(|| ApiError::unavailable("no coordination session yet; retry"))
    }

    /// The clinical store.
    pub fn store(&self) -> &Arc<dyn ClinicalStore> {
        &self.store
    }

    /// Ends every event stream (for a graceful shutdown: the HTTP server waits for open
    /// connections, and streams never end by themselves). New streams end at once.
    pub fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Resolves once [`shut_down`](ServerState::shut_down) is called.
    pub(crate) fn shutting_down(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// The observer this instance's dispatchers tell of their calls
    /// ([`Dispatcher::with_observer`]): `GET /metrics` reports their waiting times and
    /// dispatch latencies.
    ///
    /// [`Dispatcher::with_observer`]: medkeeper_hospital::dispatch::Dispatcher::with_observer
    pub fn dispatch_observer(&self) -> Arc<dyn DispatchObserver> {
        Arc::new(self.dispatch_metrics.clone())
    }

    /// Has `GET /metrics` report the embedded coordination engine's figures, read from
    /// `source` at each scrape. Without it (a ZooKeeper backend has no such figures) those
    /// families are absent.
    pub fn set_engine_figures(&self, source: EngineFiguresSource) {
        *self
            .engine_figures
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// What [`set_engine_figures`](ServerState::set_engine_figures) set.
    pub(crate) fn engine_figures(&self) -> Option<EngineFiguresSource> {
        self.engine_figures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Event feeds running (one per watched pool, unit, patient or cluster with clients).
    pub fn live_feeds(&self) -> usize {
        self.hub.running()
    }

    /// Event streams open now (each holds one of [`Limits::max_streams`] slots until its
    /// connection closes).
    pub fn open_streams(&self) -> usize {
        self.streams.open()
    }

    /// This instance.
    pub fn me(&self) -> &MemberInfo {
        &self.me
    }

    /// True when a session is connected.
    pub fn session_connected(&self) -> bool {
        self.hospital
            .borrow()
            .as_ref()
            .is_some_and(|h| h.session().state() == SessionState::Connected)
    }

    /// The audit record of `entry`, as of now: for [`audit`](ServerState::audit), or to be
    /// stored with the change it accounts for (see [`medkeeper_hospital::Actor`]).
    pub(crate) fn audit_record(entry: Audit<'_>) -> AuditRecord {
        AuditRecord {
            seq: 0,
            at_ms: now_ms(),
            actor: entry.caller.token.clone(),
            role: entry.caller.role.to_string(),
            action: entry.action.to_string(),
            patient: entry.patient.cloned(),
            order: entry.order.cloned(),
            outcome: entry.outcome.as_str().to_string(),
            detail: entry.detail,
        }
    }

    /// Records that a client address is refused after too many failed authentications (once
    /// per refusal; see [`crate::auth_failures`]). Who: `client:<address>`, role `anonymous`.
    /// A failure to record is logged: the refusal stands either way.
    pub(crate) async fn audit_refusal(&self, refused: &Refused) {
        let record = AuditRecord {
            seq: 0,
            at_ms: now_ms(),
            actor: format!("client:{}", refused.client),
            role: "anonymous".to_string(),
            action: "auth.rate_limited".to_string(),
            patient: None,
            order: None,
            outcome: ErrorCode::RateLimited.as_str().to_string(),
            detail: format!(
                "{} failed authentications within {}; refused for {}",
                refused.failures,
                crate::auth::format_duration(self.limits.auth_failures.window),
                crate::auth::format_duration(refused.refuse_for)
            ),
        };
        tracing::warn!(client = %refused.client, failures = refused.failures,
            "client refused after failed authentications");
        if let Err(e) = self.store.append_audit(&record).await {
            tracing::error!(client = %refused.client, "cannot write the audit log (auth.rate_limited): {e}");
        }
    }

    /// Records an access in the audit log. A failure to record is logged and turns the answer
    /// into 500: an access that cannot be audited is not served silently.
    pub(crate) async fn audit(&self, entry: Audit<'_>) -> Result<(), ApiError> {
        let action = entry.action;
        let record = ServerState::audit_record(entry);
        match self.store.append_audit(&record).await {
            Ok(_) => Ok(()),
            Err(e @ StoreError::Unavailable(_)) => {
                tracing::warn!("cannot write the audit log ({action}): {e}");
                Err(ApiError::unavailable(
                    "the clinical store is not reachable; retry",
                ))
            }
            // Logged with its detail by `internal`.
            Err(e) => Err(ApiError::internal(format_args!(
                "cannot write the audit log ({action}): {e}"
            ))),
        }
    }
}

/// One audit entry being written.
pub(crate) struct Audit<'a> {
    pub caller: &'a Caller,
    pub action: &'static str,
    pub patient: Option<&'a PatientId>,
    pub order: Option<&'a OrderId>,
    pub outcome: Outcome,
    pub detail: String,
}

/// How an audited access ended, as the audit record's `outcome` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Done.
    Ok,
    /// A change whose first write is in the coordination tree is about to start; its
    /// outcome follows in a record of its own.
    Started,
    /// The caller may not do this (or see this patient's data).
    Denied,
    /// It failed with this error.
    Failed(ErrorCode),
}

impl Outcome {
    /// The name stored in the record: `ok`, `started`, `denied`, or the error's code.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Started => "started",
            Outcome::Denied => "denied",
            Outcome::Failed(code) => code.as_str(),
        }
    }
}
