//! `GET /metrics`: the instance in the Prometheus text exposition format (version 0.0.4),
//! encoded by `prometheus-client` (no global registry).
//!
//! # Where it is served
//! On its own listener ([`metrics_router`]; `medkeeper serve --metrics-listen ADDR`), without
//! a bearer token, and not on the API's port. Prometheus scrapes with a fixed configuration
//! and rotating API tokens into it is a chore; the figures carry no patient data (pool names,
//! priorities, order states, route templates — never an id), so a loopback or otherwise
//! firewalled address is the protection, as for most exporters.
//!
//! # What is measured, and what it costs
//! - HTTP requests of the API port, counted by method, route and status, with a latency
//!   histogram by method and route (a middleware on [`crate::router`]). The route
//!   is the matched template (`/api/orders/{id}`), never the raw path, so no id becomes a
//!   label; a request no route matches counts as `unmatched`. An event stream's latency is
//!   the time to its response headers.
//! - Per pool, from the pool's read model ([`Hospital::pool_model`]): units by status, units
//!   in service, and per priority the queue length and the oldest wait. No coordination
//!   request: the model is watched, and a scrape only waits for the events already received
//!   ([`PoolModel::settle`]). On an instance that has not read a pool yet, the first scrape
//!   starts its model (one read of the pool's subtree).
//! - Orders by state: one counting query of the clinical store
//!   ([`ClinicalStore::order_counts`]); `medkeeper_clinical_store_up` is 0 when it fails.
//! - Whether the coordination session is connected.
//! - Active alarms by priority and state (`medkeeper_alarms_active`), from the instance's copy
//!   of `/medical/alarms` ([`Hospital::alarm_model`]): every instance reports the cluster's
//!   alarms, so aggregate with `max`, not `sum`.
//! - Per pool and priority, for the orders this instance's dispatchers call
//!   ([`ServerState::dispatch_observer`], handed to each [`Dispatcher::with_observer`]):
//!   `medkeeper_dispatch_wait_seconds`, the order's wait from its arrival in the queue (its
//!   creation, or its return after a no-show) to the call (buckets 1 s to 8 h), and
//!   `medkeeper_dispatch_latency_seconds`, from the later of the order's arrival and the
//!   called unit's becoming available (as the read model saw it) to the call's multi
//!   committed (buckets 5 ms to 60 s) — the dispatcher's own share of the wait, precisely
//!   defined in [`medkeeper_hospital::dispatch`] ("Observing the calls"). Both by the
//!   hospital's clock, in milliseconds. Manual calls are not in them, and each instance
//!   reports only its own dispatchers' calls: sum over instances. Cost: two histogram
//!   observations per call, on the dispatcher's task.
//! - With the embedded engine only ([`ServerState::set_engine_figures`]; over ZooKeeper these
//!   families are absent): `medkeeper_engine_fsync_duration_seconds`, each fdatasync of the
//!   engine's log (buckets 100 µs to 2.5 s), and `medkeeper_engine_fsync_transactions`, how
//!   many transactions each made durable (the commit group's size; buckets 1 to 4096). The
//!   engine's sync thread keeps them in fixed buckets of atomic counters (nothing on the
//!   apply path, no lock); a scrape reads the counters and encodes them as histograms
//!   ([`HistogramFigures`]).
//!
//! Gauges are computed at scrape time; the HTTP counters and the histograms live as long as
//! the [`ServerState`] (the engine's, as long as the process: they restart at zero with it,
//! as Prometheus expects).
//!
//! [`Hospital::pool_model`]: medkeeper_hospital::orders::Hospital::pool_model
//! [`Hospital::alarm_model`]: medkeeper_hospital::orders::Hospital::alarm_model
//! [`Dispatcher::with_observer`]: medkeeper_hospital::dispatch::Dispatcher::with_observer
//! [`PoolModel::settle`]: medkeeper_hospital::readmodel::PoolModel::settle
//! [`ClinicalStore::order_counts`]: medkeeper_hospital::store::ClinicalStore::order_counts

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use medkeeper_hospital::alarms::{AlarmPriority, AlarmState};
use medkeeper_hospital::dispatch::DispatchObserver;
use medkeeper_hospital::orders::Hospital;
use medkeeper_hospital::{Pool, Priority, UnitStatus};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::ServerState;

/// Upper bounds of the request-latency buckets, seconds: 1 ms to 10 s (the default request
/// deadline).
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the waiting-time buckets, seconds: 1 s to 8 h (a stat order is called in
/// seconds to minutes, a routine one may wait for hours).
const WAIT_BUCKETS: [f64; 15] = [
    1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 2700.0, 3600.0, 7200.0,
    14400.0, 28800.0,
];

/// Upper bounds of the dispatch-latency buckets, seconds: 5 ms (the hospital's clock counts
/// milliseconds) to a minute.
const DISPATCH_LATENCY_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How long a scrape waits for the pools' figures: below Prometheus' default scrape timeout
/// (10 s).
const POOLS_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The route label of a request no route matched.
const UNMATCHED: &str = "unmatched";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PoolLabels {
    kind: &'static str,
    pool: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UnitLabels {
    kind: &'static str,
    pool: String,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueueLabels {
    kind: &'static str,
    pool: String,
    priority: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct AlarmLabels {
    priority: &'static str,
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// The HTTP counters of one server (shared by every request; cheap to clone).
#[derive(Debug, Clone)]
pub(crate) struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
        }
    }
}

impl HttpMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route template and status",
            self.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (to the response headers), by method and route \
             template",
            self.latency.clone(),
        );
    }
}

/// The dispatchers' histograms (see the module docs): this instance's dispatchers tell them of
/// each call ([`ServerState::dispatch_observer`]). Cheap to clone (the families are shared).
#[derive(Debug, Clone)]
pub(crate) struct DispatchMetrics {
    waited: Family<QueueLabels, Histogram, fn() -> Histogram>,
    latency: Family<QueueLabels, Histogram, fn() -> Histogram>,
}

impl Default for DispatchMetrics {
    fn default() -> Self {
        DispatchMetrics {
            waited: Family::new_with_constructor(|| Histogram::new(WAIT_BUCKETS)),
            latency: Family::new_with_constructor(|| Histogram::new(DISPATCH_LATENCY_BUCKETS)),
        }
    }
}

impl DispatchObserver for DispatchMetrics {
    fn called(&self, pool: &Pool, priority: Priority, waited: Duration, latency: Duration) {
        let PoolLabels { kind, pool } = pool_labels(pool);
        let labels = QueueLabels {
            kind,
            pool,
            priority: priority.code(),
        };
        self.waited
            .get_or_create(&labels)
            .observe(waited.as_secs_f64());
        self.latency
            .get_or_create(&labels)
            .observe(latency.as_secs_f64());
    }
}

impl DispatchMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "dispatch_wait_seconds",
            "How long an order called by this instance's dispatcher had waited in the queue \
             (from its arrival or return to the queue to the call), by pool and priority",
            self.waited.clone(),
        );
        registry.register(
            "dispatch_latency_seconds",
            "How long this instance's dispatcher took to call an order once it and the unit \
             it was called to could be paired (the later of the order's arrival and the \
             unit's becoming available, to the call), by pool and priority",
            self.latency.clone(),
        );
    }
}

/// A histogram kept outside this crate (the embedded engine's), as read at a scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramFigures {
    /// `(upper bound, observations at or below it)`, cumulative, the bounds increasing; the
    /// last bound may be `f64::INFINITY` (else one is added, with every observation).
    pub buckets: Vec<(f64, u64)>,
    /// Observations.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
}

impl TypedMetric for HistogramFigures {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for HistogramFigures {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder takes each bucket's own count and accumulates them.
        let mut buckets = Vec::with_capacity(self.buckets.len() + 1);
        let mut below = 0u64;
        for &(bound, cumulative) in &self.buckets {
            buckets.push((bound, cumulative.saturating_sub(below)));
            below = below.max(cumulative);
        }
        if self.buckets.last().is_none_or(|(b, _)| *b != f64::INFINITY) {
            buckets.push((f64::INFINITY, self.count.saturating_sub(below)));
        }
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The embedded coordination engine's figures, read at each scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineFigures {
    /// How long each fdatasync of the log took, seconds.
    pub fsync_seconds: HistogramFigures,
    /// How many transactions each fdatasync made durable.
    pub fsync_transactions: HistogramFigures,
}

/// Reads the embedded engine's figures ([`ServerState::set_engine_figures`]); called once per
/// scrape, so it should be cheap and must not block.
pub type EngineFiguresSource = Arc<dyn Fn() -> EngineFigures + Send + Sync>;

impl EngineFigures {
    fn register(self, registry: &mut Registry) {
        registry.register(
            "engine_fsync_duration_seconds",
            "How long each fdatasync of the embedded coordination engine's log took",
            self.fsync_seconds,
        );
        registry.register(
            "engine_fsync_transactions",
            "How many transactions each fdatasync of the embedded coordination engine's log \
             made durable (the size of a commit group)",
            self.fsync_transactions,
        );
    }
}

/// The methods the API uses; anything else is `other` (a label set stays bounded whatever
/// clients send).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Middleware: counts each request by method, matched route and status, and observes its
/// latency (layered on the whole [`crate::router`]).
pub(crate) async fn track(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_string(), |p| p.as_str().to_string());
    let method = method_label(req.method());
    let start = Instant::now();
    let resp = next.run(req).await;
    let elapsed = start.elapsed().as_secs_f64();
    m.latency
        .get_or_create(&RouteLabels {
            method,
            route: route.clone(),
        })
        .observe(elapsed);
    m.requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// The metrics service: `GET /metrics` only, without authentication (see the module docs on
/// where to serve it).
pub fn metrics_router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(state)
}

fn pool_labels(pool: &Pool) -> PoolLabels {
    PoolLabels {
        kind: match pool {
            Pool::Equipment(_) => "equipment",
            Pool::Department(_) => "department",
        },
        pool: pool.name().to_string(),
    }
}

fn status_label(s: UnitStatus) -> &'static str {
    match s {
        UnitStatus::Available => "available",
        UnitStatus::InUse => "in-use",
        UnitStatus::Maintenance => "maintenance",
        UnitStatus::Offline => "offline",
    }
}

const UNIT_STATUSES: [UnitStatus; 4] = [
    UnitStatus::Available,
    UnitStatus::InUse,
    UnitStatus::Maintenance,
    UnitStatus::Offline,
];

/// The per-pool gauges, from the pools' read models.
#[derive(Default)]
struct PoolGauges {
    units: Family<UnitLabels, Gauge>,
    in_service: Family<PoolLabels, Gauge>,
    queue_length: Family<QueueLabels, Gauge>,
    oldest_wait: Family<QueueLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl PoolGauges {
    async fn fill(&self, hospital: &Hospital) {
        for pc in &hospital.config().pools {
            let model = match hospital.pool_model(&pc.pool).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(pool = %pc.pool, error = %e, "metrics: no read model of the pool");
                    continue;
                }
            };
            model.settle().await;
            let labels = pool_labels(&pc.pool);
            let units = model.units();
            for status in UNIT_STATUSES {
                let n = units.iter().filter(|u| u.node.status == status).count();
                self.units
                    .get_or_create(&UnitLabels {
                        kind: labels.kind,
                        pool: labels.pool.clone(),
                        status: status_label(status),
                    })
                    .set(n as i64);
            }
            let in_service = units
                .iter()
                .filter(|u| matches!(u.node.status, UnitStatus::Available | UnitStatus::InUse))
                .count();
            self.in_service
                .get_or_create(&labels)
                .set(in_service as i64);
            let now = hospital.now_ms();
            let queue = model.queue();
            for p in Priority::ALL {
                let waiting = queue.iter().filter(|i| i.info.class == p.class());
                let (n, oldest_ms) = waiting.fold((0i64, 0i64), |(n, oldest), i| {
                    let waited = (now - i.info.id.enqueued_at_ms() as i64).max(0);
                    (n + 1, oldest.max(waited))
                });
                let ql = QueueLabels {
                    kind: labels.kind,
                    pool: labels.pool.clone(),
                    priority: p.code(),
                };
                self.queue_length.get_or_create(&ql).set(n);
                self.oldest_wait
                    .get_or_create(&ql)
                    .set(oldest_ms as f64 / 1000.0);
            }
        }
    }

    fn register(self, registry: &mut Registry) {
        registry.register(
            "pool_units",
            "Units (or doctors) of a pool by status, from the pool's read model",
            self.units,
        );
        registry.register(
            "pool_units_in_service",
            "Units (or doctors) of a pool available or in use",
            self.in_service,
        );
        registry.register(
            "queue_length",
            "Orders waiting in a pool's queue, by priority as ordered",
            self.queue_length,
        );
        registry.register(
            "queue_oldest_wait_seconds",
            "How long the longest-waiting order of this pool and priority has waited (0 when \
             none waits)",
            self.oldest_wait,
        );
    }
}

/// `GET /metrics`.
async fn scrape(State(state): State<Arc<ServerState>>) -> Response {
    let mut registry = Registry::with_prefix("medkeeper");
    state.http_metrics.register(&mut registry);
    state.dispatch_metrics.register(&mut registry);
    if let Some(engine) = state.engine_figures() {
        engine().register(&mut registry);
    }

    let connected = Gauge::<i64>::default();
    connected.set(i64::from(state.session_connected()));
    registry.register(
        "coordination_session_connected",
        "1 while this instance's coordination session is connected, else 0",
        connected,
    );

    let store_up = Gauge::<i64>::default();
    match state.store().order_counts().await {
        Ok(counts) => {
            store_up.set(1);
            let orders = Family::<StateLabels, Gauge>::default();
            for (s, n) in counts {
                orders
                    .get_or_create(&StateLabels { state: s.code() })
                    .set(n as i64);
            }
            registry.register("orders", "Orders in the clinical store by state", orders);
        }
        Err(e) => tracing::warn!(error = %e, "metrics: cannot count the orders"),
    }
    registry.register(
        "clinical_store_up",
        "1 if the clinical store answered this scrape's query, else 0",
        store_up,
    );

    if let Ok(hospital) = state.hospital() {
        let pools = PoolGauges::default();
        // Only a model not started yet sends a request (its first read); a suspended session
        // could hold that for long, so the scrape answers with what it has by then.
        if tokio::time::timeout(POOLS_WITHIN, pools.fill(&hospital))
            .await
            .is_err()
        {
            tracing::warn!(
                "metrics: the pools' read models did not answer within {POOLS_WITHIN:?}"
            );
        }
        pools.register(&mut registry);

        // Active alarms by priority and state, from this instance's copy of
        // `/medical/alarms` (no request once the copy is started).
        let alarms = Family::<AlarmLabels, Gauge>::default();
        let listed =
            tokio::time::timeout(POOLS_WITHIN, medkeeper_hospital::alarms::active(&hospital)).await;
        if let Ok(Ok(active)) = listed {
            for p in AlarmPriority::ALL {
                for st in ["raised", "acknowledged", "shelved"] {
                    alarms
                        .get_or_create(&AlarmLabels {
                            priority: p.as_str(),
                            state: st,
                        })
                        .set(0);
                }
            }
            let now = hospital.now_ms();
            for a in active {
                let state = match a.state(now) {
                    AlarmState::Raised => "raised",
                    AlarmState::Acknowledged => "acknowledged",
                    AlarmState::Shelved => "shelved",
                    AlarmState::Cleared => continue,
                };
                alarms
                    .get_or_create(&AlarmLabels {
                        priority: a.priority.as_str(),
                        state,
                    })
                    .inc();
            }
            registry.register(
                "alarms_active",
                "Active alarms by priority (IEC 60601-1-8) and state",
                alarms,
            );
        }
    }

    let mut body = String::new();
    if let Err(e) = prometheus_text::encode(&mut body, &registry) {
        tracing::error!(error = %e, "metrics: encoding failed");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    (
        [(header::CONTENT_TYPE, prometheus_text::CONTENT_TYPE)],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(h: HistogramFigures) -> String {
        let mut registry = Registry::with_prefix("medkeeper");
        registry.register("engine_fsync_transactions", "Group sizes", h);
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn foreign_histogram_is_encoded_cumulative_with_an_inf_bucket() {
        let h = HistogramFigures {
            buckets: vec![(1.0, 2), (4.0, 5)],
            count: 6,
            sum: 20.0,
        };
        let text = encoded(h.clone());
        for line in [
            "# TYPE medkeeper_engine_fsync_transactions histogram",
            "medkeeper_engine_fsync_transactions_bucket{le=\"1\"} 2",
            "medkeeper_engine_fsync_transactions_bucket{le=\"4\"} 5",
            "medkeeper_engine_fsync_transactions_bucket{le=\"+Inf\"} 6",
            "medkeeper_engine_fsync_transactions_sum 20.0",
            "medkeeper_engine_fsync_transactions_count 6",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        // An +Inf bucket given is kept, not doubled.
        let mut with_inf = h;
        with_inf.buckets.push((f64::INFINITY, 6));
        assert_eq!(encoded(with_inf), text);
    }
}
