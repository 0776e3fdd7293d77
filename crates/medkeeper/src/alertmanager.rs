//! Delivery of alarms to a Prometheus Alertmanager (API v2), the way Prometheus itself delivers
//! them.
//!
//! [`run`] watches the complete set of alarms active now (a [`watch`] of [`Alert`]s, kept by
//! whoever raises them) and keeps one Alertmanager (`POST {url}/api/v2/alerts`) in step with it
//! until its shutdown future resolves. Alertmanager then groups, silences, inhibits and routes
//! them to on-call staff; nothing here pages anyone directly.
//!
//! # What is sent
//!
//! An alert's identity is its label set (Alertmanager's fingerprint), which must include a
//! non-empty `alertname`. Every POST carries the whole picture:
//!
//! - **every active alert**, with `endsAt` = now + 4 × max(`resend`, `max_backoff`). As with
//!   Prometheus (4 × max(evaluation interval, resend delay)), the alert stays firing in
//!   Alertmanager across a few missed re-sends, and resolves by itself only if medkeeper stops
//!   sending altogether (it died, or cannot reach Alertmanager for that long). A medkeeper that
//!   is down is for Prometheus' `up == 0` to report, not for these alerts.
//! - **every alert that has left the set** since Alertmanager last acknowledged a POST, with
//!   `endsAt` = the time it left: it is resolved, so Alertmanager sends its "resolved"
//!   notification (to receivers with `send_resolved`) at the group's next flush, and the alert
//!   drops out of `GET /api/v2/alerts` (which lists unresolved alerts only). A
//!   resolution stays pending until a POST that carries it is answered 2xx, whatever happens
//!   in between; only an alert that never reached a POST needs no resolution. An alert that
//!   comes back before its resolution was delivered is simply active again (the newest state
//!   wins; Alertmanager never hears of the gap).
//!
//! Timestamps are RFC 3339 in UTC. `startsAt` is the alert's own start, except that one in the
//! future (another server's clock) or at or before the epoch (unset) is sent as now.
//!
//! # When it is sent
//!
//! - **On change.** Whenever the watched set differs from the one last delivered (an alert
//!   added, removed, or with other annotations, start or link), or a resolution is pending.
//!   Watch updates that leave the set as it was send nothing; nor does a set that flaps and
//!   ends where it started between two POSTs.
//! - **Every `resend`** while any alert is active, so that Alertmanager never reaches an
//!   active alert's `endsAt`, and so that an Alertmanager restarted with an empty memory
//!   (it keeps alerts in memory only) learns them again.
//! - **After a failure** (no answer within `timeout`, or a non-2xx answer): again after a
//!   backoff that starts at 500 ms and doubles up to `max_backoff`, each wait jittered by
//!   ±10% so that many senders do not retry in lockstep. A change during a backoff does not cut
//!   it short; the retry sends the newest state, with every resolution still pending. The
//!   first success resets the backoff.
//!
//! # Bad input
//!
//! Nothing here panics on what it is given. Alertmanager answers a POST holding one invalid
//! alert with HTTP 400 (keeping the valid ones), which would count as a failure and be retried
//! for ever; so each alert is made valid before it is sent, and what cannot be is left out and
//! logged as an error (once, until the input changes): an alert without an `alertname` is not
//! sent; label and annotation names outside `[a-zA-Z_][a-zA-Z0-9_]*` have their other
//! characters replaced by `_` (the alert still pages); labels with an empty value are dropped
//! (Alertmanager treats them as absent); of two alerts with the same labels the first is sent;
//! a generator URL that is not a plain absolute `http(s)` URL is left out. Durations in
//! [`Options`] are clamped to sane ranges (see its fields).
//!
//! # Logs
//!
//! `tracing`: a warning when Alertmanager stops accepting alerts (with the reason), a reminder
//! every ten minutes while it stays so, and an info line when it accepts them again (with the
//! number of failed attempts and how long). Each retry in between logs at debug level only.
//!
//! # Cancellation safety
//!
//! [`run`] returns as soon as `shutdown` resolves, even during a request (the request's
//! blocking thread then finishes within `timeout`). Active alerts are not resolved on
//! shutdown: a stopping medkeeper does not mean the alarms are over; they expire in
//! Alertmanager at their `endsAt` unless a successor keeps sending them. If the watch's sender
//! is dropped, the last set keeps being delivered until shutdown.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;
use tokio::time::Instant;

/// An alert's labels: its identity.
pub type Labels = BTreeMap<String, String>;

/// One alert as Alertmanager's API v2 takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The alert's identity (Alertmanager's fingerprint); must include a non-empty
    /// `alertname`. Routing, grouping, silences and inhibitions match on these.
    pub labels: BTreeMap<String, String>,
    /// What on-call staff read (`summary`, `description`, `runbook_url`, ...); not part of the
    /// identity, so a change here updates the alert rather than raising another.
    pub annotations: BTreeMap<String, String>,
    /// When the condition began, in milliseconds since the Unix epoch.
    pub starts_at_ms: i64,
    /// A link back to the medkeeper API or dashboard page showing the condition (absolute
    /// `http(s)` URL; empty for none).
    pub generator_url: String,
}

/// Settings of [`run`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Alertmanager's base URL, e.g. `http://127.0.0.1:9093`; `https://` needs [`Options::tls`].
    pub url: String,
    /// For an `https://` URL: rustls on aws-lc-rs trusting only the CA given
    /// ([`tls_trusting`]); `None` for plain HTTP.
    pub tls: Option<ureq::tls::TlsConfig>,
    /// How often active alerts are sent again when nothing changed ([`DEFAULT_RESEND`]; 100 ms
    /// to 24 h). Active alerts are sent with `endsAt` 4 × max(`resend`, `max_backoff`) ahead.
    pub resend: Duration,
    /// How long one POST may take before it counts as failed ([`DEFAULT_TIMEOUT`]; 100 ms to
    /// 10 min).
    pub timeout: Duration,
    /// The longest wait between retries after failures ([`DEFAULT_MAX_BACKOFF`]; 10 ms to 1 h).
    pub max_backoff: Duration,
}

/// [`Options::resend`] by default, as Prometheus' `--rules.alert.resend-delay` (1 min).
pub const DEFAULT_RESEND: Duration = Duration::from_secs(60);
/// [`Options::timeout`] by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// [`Options::max_backoff`] by default.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(30);

impl Options {
    /// Options for the Alertmanager at `url`, with the default durations.
    pub fn new(url: impl Into<String>) -> Options {
        Options {
            url: url.into(),
            tls: None,
            resend: DEFAULT_RESEND,
            timeout: DEFAULT_TIMEOUT,
            max_backoff: DEFAULT_MAX_BACKOFF,
        }
    }

    /// The options with every duration inside its documented range.
    fn clamped(&self) -> Options {
        let clamp = |d: Duration, lo: u64, hi: u64| {
            d.clamp(Duration::from_millis(lo), Duration::from_millis(hi))
        };
        Options {
            url: self.url.trim().trim_end_matches('/').to_string(),
            tls: self.tls.clone(),
            resend: clamp(self.resend, 100, 24 * 3600 * 1000),
            timeout: clamp(self.timeout, 100, 600 * 1000),
            max_backoff: clamp(self.max_backoff, 10, 3600 * 1000),
        }
    }
}

/// TLS for an `https://` Alertmanager: rustls on aws-lc-rs (set on the agent, not installed
/// process-wide), trusting only the CAs in the PEM file `ca` (`serve --alertmanager-ca`). The
/// file is read and checked here, so a bad one stops the start.
pub fn tls_trusting(ca: &std::path::Path) -> anyhow::Result<ureq::tls::TlsConfig> {
    use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
    let roots = crate::client::read_certs(ca, "--alertmanager-ca")?;
    let mut store = rustls::RootCertStore::empty();
    for cert in &roots {
        store.add(cert.clone()).map_err(|e| {
            anyhow::anyhow!(
                "--alertmanager-ca {}: a certificate that cannot be a CA: {e}",
                ca.display()
            )
        })?;
    }
    let roots: Vec<Certificate<'static>> = roots
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    Ok(TlsConfig::builder()
        .provider(TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .root_certs(RootCerts::new_with_certs(&roots))
        .build())
}

/// The first wait after a failure; it doubles per failure up to `max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Active alerts' `endsAt` is this many times max(resend, max_backoff) ahead (as Prometheus).
const VALIDITY_FACTOR: u32 = 4;
/// While Alertmanager keeps failing, a reminder in the log this often.
const REMIND_EVERY: Duration = Duration::from_secs(600);
/// How much of a failed answer's body goes into the log.
const BODY_SNIPPET: usize = 300;

/// Delivers the set of active alerts that `alerts` holds to the Alertmanager at
/// `options.url` until `shutdown` resolves (see the module docs for what is sent and when).
///
/// # Cancellation safety
///
/// Returns when `shutdown` resolves, also during a request; active alerts are left to expire
/// at their `endsAt` rather than resolved.
pub async fn run(
    options: Options,
    mut alerts: watch::Receiver<Vec<Alert>>,
    shutdown: impl Future<Output = ()>,
) {
    let options = options.clamped();
    let endpoint = format!("{}/api/v2/alerts", options.url);
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(options.timeout))
        .http_status_as_error(false);
    if let Some(tls) = options.tls.clone() {
        config = config.tls_config(tls);
    }
    let agent: ureq::Agent = config.build().into();
    let mut delivery = Delivery::new(&options);
    let mut rng = SmallRng::try_from_os_rng()
        .unwrap_or_else(|_| SmallRng::seed_from_u64(now_ms().unsigned_abs()));
    let mut watching = true;
    tokio::pin!(shutdown);
    // The set the watch holds at the start counts as seen, so it is taken in here.
    delivery.absorb(&alerts.borrow_and_update(), now_ms());
    loop {
        if watching && alerts.has_changed().unwrap_or(false) {
            delivery.absorb(&alerts.borrow_and_update(), now_ms());
        }
        let due = delivery.next_post(Instant::now());
        tokio::select! {
            biased;
            () = &mut shutdown => return,
            () = sleep_until(due) => {
                let mut batch = delivery.batch(now_ms());
                let agent = agent.clone();
                let endpoint = endpoint.clone();
                let body = std::mem::take(&mut batch.body);
                let request = tokio::task::spawn_blocking(move || post(&agent, &endpoint, &body));
                let outcome = tokio::select! {
                    biased;
                    () = &mut shutdown => return,
                    joined = request => joined.unwrap_or_else(|e| {
                        Err(format!("the request thread failed: {e}"))
                    }),
                };
                let jitter = rng.random_range(0.9..=1.1);
                delivery.settle(batch, outcome, Instant::now(), jitter);
            }
            changed = alerts.changed(), if watching => {
                if changed.is_err() {
                    // The sender is gone: keep delivering the last set until shutdown.
                    watching = false;
                } else {
                    delivery.absorb(&alerts.borrow_and_update(), now_ms());
                }
            }
        }
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// An alert as sent, apart from its labels and `endsAt`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outgoing {
    annotations: BTreeMap<String, String>,
    starts_at_ms: i64,
    generator_url: Option<String>,
}

/// What one POST carried, to settle it by.
struct Batch {
    body: Value,
    active: BTreeMap<Labels, Outgoing>,
    resolved: BTreeMap<Labels, (Outgoing, i64)>,
}

/// The delivery state between POSTs; all of it is changed by the one task of [`run`], so a
/// POST's outcome always applies to the state it was built from.
struct Delivery {
    resend: Duration,
    max_backoff: Duration,
    /// `endsAt` of active alerts is this far ahead.
    validity: Duration,
    /// The newest active set, made valid.
    wanted: BTreeMap<Labels, Outgoing>,
    /// Alerts that left the set and may be active in Alertmanager, with the time they left.
    resolved: BTreeMap<Labels, (Outgoing, i64)>,
    /// Alerts some POST carried as active and no acknowledged POST has resolved since:
    /// those Alertmanager may hold as active.
    announced: BTreeSet<Labels>,
    /// The active set of the last acknowledged POST.
    delivered: BTreeMap<Labels, Outgoing>,
    /// When the last POST was acknowledged.
    last_ok: Option<Instant>,
    /// While failing: when to try again.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Consecutive failed POSTs, when the first of them failed, and the last reminder.
    failures: u32,
    failing_since: Option<Instant>,
    reminded_at: Option<Instant>,
    /// The input problems currently logged (each is logged once while it lasts).
    problems: BTreeSet<String>,
}

impl Delivery {
    fn new(options: &Options) -> Delivery {
        Delivery {
            resend: options.resend,
            max_backoff: options.max_backoff,
            validity: options.resend.max(options.max_backoff) * VALIDITY_FACTOR,
            wanted: BTreeMap::new(),
            resolved: BTreeMap::new(),
            announced: BTreeSet::new(),
            delivered: BTreeMap::new(),
            last_ok: None,
            retry_at: None,
            backoff: FIRST_BACKOFF.min(options.max_backoff),
            failures: 0,
            failing_since: None,
            reminded_at: None,
            problems: BTreeSet::new(),
        }
    }

    /// Takes in the newest set: alerts that left it and may be active in Alertmanager get a
    /// pending resolution (timed now), alerts that came back lose theirs.
    fn absorb(&mut self, alerts: &[Alert], now_ms: i64) {
        let mut next = BTreeMap::new();
        let mut problems = BTreeSet::new();
        for alert in alerts {
            let Some((labels, outgoing)) = prepare(alert, now_ms, &mut problems) else {
                continue;
            };
            if next.contains_key(&labels) {
                problems.insert(format!(
                    "two alerts with the labels {labels:?}: only the first is delivered"
                ));
                continue;
            }
            next.insert(labels, outgoing);
        }
        for problem in problems.difference(&self.problems) {
            tracing::error!("alert to Alertmanager: {problem}");
        }
        self.problems = problems;
        for (labels, outgoing) in &self.wanted {
            if !next.contains_key(labels) && self.announced.contains(labels) {
                let ends_at_ms = now_ms.max(outgoing.starts_at_ms);
                self.resolved
                    .entry(labels.clone())
                    .or_insert_with(|| (outgoing.clone(), ends_at_ms));
            }
        }
        self.resolved.retain(|labels, _| !next.contains_key(labels));
        self.wanted = next;
    }

    /// When the next POST is due, if one is.
    fn next_post(&self, now: Instant) -> Option<Instant> {
        let changed = self.wanted != self.delivered || !self.resolved.is_empty();
        if !changed && self.wanted.is_empty() {
            return None;
        }
        if let Some(at) = self.retry_at {
            return Some(at);
        }
        match self.last_ok {
            Some(ok) if !changed => Some(ok + self.resend),
            _ => Some(now),
        }
    }

    /// The POST of the current state; from now on its active alerts may be active in
    /// Alertmanager (even if the POST fails: it may have got there).
    fn batch(&mut self, now_ms: i64) -> Batch {
        let validity_ms = i64::try_from(self.validity.as_millis()).unwrap_or(i64::MAX);
        let ends_active = now_ms.saturating_add(validity_ms);
        let mut body = Vec::with_capacity(self.wanted.len() + self.resolved.len());
        for (labels, outgoing) in &self.wanted {
            body.push(wire(
                labels,
                outgoing,
                ends_active.max(outgoing.starts_at_ms),
            ));
            self.announced.insert(labels.clone());
        }
        for (labels, (outgoing, ends_at_ms)) in &self.resolved {
            body.push(wire(labels, outgoing, *ends_at_ms));
        }
        Batch {
            body: Value::Array(body),
            active: self.wanted.clone(),
            resolved: self.resolved.clone(),
        }
    }

    /// Applies a POST's outcome: on success its resolutions are done and its active set is
    /// the delivered one; on failure the next try is scheduled after the backoff (scaled by
    /// `jitter`).
    fn settle(&mut self, batch: Batch, outcome: Result<(), String>, now: Instant, jitter: f64) {
        match outcome {
            Ok(()) => {
                for (labels, sent) in &batch.resolved {
                    if self.resolved.get(labels) == Some(sent) {
                        self.resolved.remove(labels);
                        self.announced.remove(labels);
                    }
                }
                tracing::debug!(
                    "Alertmanager took {} active and {} resolved alerts",
                    batch.active.len(),
                    batch.resolved.len()
                );
                self.delivered = batch.active;
                self.last_ok = Some(now);
                self.retry_at = None;
                self.backoff = FIRST_BACKOFF.min(self.max_backoff);
                if self.failures > 0 {
                    let down = self
                        .failing_since
                        .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                    tracing::info!(
                        "Alertmanager accepts alerts again after {} failed attempts over {:.1}s",
                        self.failures,
                        down.as_secs_f64()
                    );
                }
                self.failures = 0;
                self.failing_since = None;
                self.reminded_at = None;
            }
            Err(reason) => {
                self.failures = self.failures.saturating_add(1);
                let jitter = if jitter.is_finite() {
                    jitter.clamp(0.5, 1.5)
                } else {
                    1.0
                };
                let wait = self.backoff.mul_f64(jitter);
                self.retry_at = Some(now + wait);
                self.backoff = (self.backoff * 2).min(self.max_backoff);
                let pending = self.resolved.len();
                let active = batch.active.len();
                match (self.failing_since, self.reminded_at) {
                    (None, _) => {
                        self.failing_since = Some(now);
                        self.reminded_at = Some(now);
                        tracing::warn!(
                            "Alertmanager does not accept alerts: {reason}; retrying with \
                             backoff up to {:?} ({active} active, {pending} resolutions pending)",
                            self.max_backoff
                        );
                    }
                    (Some(since), Some(last))
                        if now.saturating_duration_since(last) >= REMIND_EVERY =>
                    {
                        self.reminded_at = Some(now);
                        tracing::warn!(
                            "Alertmanager still does not accept alerts after {} attempts over \
                             {:.0}s: {reason} ({active} active, {pending} resolutions pending)",
                            self.failures,
                            now.saturating_duration_since(since).as_secs_f64()
                        );
                    }
                    _ => tracing::debug!(
                        "Alertmanager attempt {} failed: {reason}; next in {wait:?}",
                        self.failures
                    ),
                }
            }
        }
    }
}

/// The alert made valid for Alertmanager (labels and the rest), or `None` if it cannot be;
/// what was changed or refused goes into `problems`.
fn prepare(
    alert: &Alert,
    now_ms: i64,
    problems: &mut BTreeSet<String>,
) -> Option<(Labels, Outgoing)> {
    let mut labels = Labels::new();
    for (name, value) in &alert.labels {
        if value.is_empty() {
            continue;
        }
        labels.insert(valid_name(name, "label", problems), value.clone());
    }
    if !labels.contains_key("alertname") {
        problems.insert(format!(
            "an alert without an alertname is not delivered (labels {:?})",
            alert.labels
        ));
        return None;
    }
    let annotations = alert
        .annotations
        .iter()
        .map(|(name, value)| (valid_name(name, "annotation", problems), value.clone()))
        .collect();
    let starts_at_ms = if alert.starts_at_ms <= 0 || alert.starts_at_ms > now_ms {
        now_ms
    } else {
        alert.starts_at_ms
    };
    let generator_url = if alert.generator_url.is_empty() {
        None
    } else if plain_http_url(&alert.generator_url) {
        Some(alert.generator_url.clone())
    } else {
        problems.insert(format!(
            "the generator URL {:?} of {labels:?} is not a plain absolute http(s) URL; sent \
             without it",
            alert.generator_url
        ));
        None
    };
    Some((
        labels,
        Outgoing {
            annotations,
            starts_at_ms,
            generator_url,
        },
    ))
}

/// `name` as a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`): other characters become `_`, and a
/// leading digit (or an empty name) gets a `_` in front.
fn valid_name(name: &str, what: &str, problems: &mut BTreeSet<String>) -> String {
    let ok =
        |i: usize, c: char| c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
    if !name.is_empty() && name.chars().enumerate().all(|(i, c)| ok(i, c)) {
        return name.to_string();
    }
    let mut fixed: String = name
        .chars()
        .map(|c| {
            if c == '_' || c.is_ascii_alphanumeric() {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !fixed.starts_with(|c: char| c == '_' || c.is_ascii_alphabetic()) {
        fixed.insert(0, '_');
    }
    problems.insert(format!("the {what} name {name:?} is sent as {fixed:?}"));
    fixed
}

/// Whether `url` is an absolute `http(s)` URL that Alertmanager's URI check accepts: printable
/// ASCII without spaces, every `%` followed by two hex digits, a non-empty host, brackets only
/// around an IPv6 host.
fn plain_http_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    let bytes = url.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return false;
        }
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    if tail.contains(['[', ']']) || authority.is_empty() || host_port.is_empty() {
        return false;
    }
    match host_port.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, port)) => {
                !addr.is_empty()
                    && addr
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
                    && (port.is_empty()
                        || port
                            .strip_prefix(':')
                            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())))
            }
            None => false,
        },
        None => {
            let (host, port) = host_port.split_once(':').unwrap_or((host_port, ""));
            !host.is_empty()
                && !host_port.contains(['[', ']'])
                && port.bytes().all(|b| b.is_ascii_digit())
        }
    }
}

/// One alert in API v2's JSON.
fn wire(labels: &Labels, outgoing: &Outgoing, ends_at_ms: i64) -> Value {
    let mut alert = Map::new();
    alert.insert("labels".into(), string_map(labels));
    alert.insert("annotations".into(), string_map(&outgoing.annotations));
    alert.insert("startsAt".into(), rfc3339(outgoing.starts_at_ms).into());
    alert.insert("endsAt".into(), rfc3339(ends_at_ms).into());
    if let Some(url) = &outgoing.generator_url {
        alert.insert("generatorURL".into(), url.clone().into());
    }
    Value::Object(alert)
}

fn string_map(map: &BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// `ms` since the epoch in RFC 3339, UTC; times past year 9999 as its last second.
fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| "9999-12-31T23:59:59Z".to_string())
}

/// One POST; `Err` says why it did not count as delivered.
fn post(agent: &ureq::Agent, endpoint: &str, body: &Value) -> Result<(), String> {
    let mut response = agent
        .post(endpoint)
        .send_json(body)
        .map_err(|e| format!("POST {endpoint}: {e}"))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = response
        .body_mut()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    let text = text.trim();
    let snippet: String = text.chars().take(BODY_SNIPPET).collect();
    let more = if snippet.len() < text.len() {
        "..."
    } else {
        ""
    };
    Err(format!(
        "POST {endpoint} answered HTTP {status}: {snippet}{more}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;
    use std::process::Command;

    use tokio::sync::oneshot;

    const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/alertmanager");

    /// A real Alertmanager in a temporary directory (scripts/alertmanager), stopped on drop.
    struct TestAlertmanager {
        dir: tempfile::TempDir,
        url: String,
    }

    impl TestAlertmanager {
        async fn start() -> TestAlertmanager {
            TestAlertmanager::start_on(None).await
        }

        async fn start_on(port: Option<u16>) -> TestAlertmanager {
            tokio::task::spawn_blocking(move || {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let url = script("start", dir.path(), port);
                TestAlertmanager { dir, url }
            })
            .await
            .expect("start thread")
        }

        /// HTTPS only, its certificate signed by the CA at [`TestAlertmanager::ca`].
        async fn start_tls() -> TestAlertmanager {
            tokio::task::spawn_blocking(move || {
                let dir = tempfile::tempdir().expect("a temporary directory");
                let out = Command::new(SCRIPT)
                    .arg("start")
                    .arg(dir.path())
                    .arg("--tls")
                    .output()
                    .expect("scripts/alertmanager runs");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let url = String::from_utf8(out.stdout)
                    .expect("UTF-8")
                    .trim()
                    .to_string();
                TestAlertmanager { dir, url }
            })
            .await
            .expect("start thread")
        }

        fn ca(&self) -> std::path::PathBuf {
            self.dir.path().join("tls/ca.crt")
        }

        fn port(&self) -> u16 {
            let port = self.url.rsplit(':').next().expect("a port in the URL");
            port.parse().expect("a port number")
        }

        /// Stops it (and starts nothing else on its port).
        async fn stop(self) {
            tokio::task::spawn_blocking(move || drop(self))
                .await
                .expect("stop thread");
        }

        /// `GET /api/v2/alerts` with every filter open (active, silenced, inhibited,
        /// unprocessed).
        async fn alerts(&self) -> Vec<Value> {
            let url = format!(
                "{}/api/v2/alerts?active=true&silenced=true&inhibited=true&unprocessed=true",
                self.url
            );
            let body = get(url).await;
            serde_json::from_str::<Vec<Value>>(&body).expect("a JSON array of alerts")
        }

        /// Alerts received since it started (`alertmanager_alerts_received_total`), `status`
        /// `firing` or `resolved`.
        async fn received(&self, status: &str) -> u64 {
            let metrics = get(format!("{}/metrics", self.url)).await;
            let series =
                format!("alertmanager_alerts_received_total{{status=\"{status}\",version=\"v2\"}}");
            metrics
                .lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .map_or(0, |v| {
                    v.trim().parse::<f64>().expect("a counter value") as u64
                })
        }
    }

    impl Drop for TestAlertmanager {
        fn drop(&mut self) {
            let _ = Command::new(SCRIPT)
                .arg("stop")
                .arg(self.dir.path())
                .status();
        }
    }

    fn script(command: &str, dir: &Path, port: Option<u16>) -> String {
        let mut cmd = Command::new(SCRIPT);
        cmd.arg(command).arg(dir);
        if let Some(port) = port {
            cmd.arg(port.to_string());
        }
        let out = cmd.output().expect("scripts/alertmanager runs");
        assert!(
            out.status.success(),
            "scripts/alertmanager {command} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("UTF-8")
            .trim()
            .to_string()
    }

    async fn get(url: String) -> String {
        tokio::task::spawn_blocking(move || {
            let mut response = ureq::get(&url).call().expect("GET answers");
            response.body_mut().read_to_string().expect("a body")
        })
        .await
        .expect("GET thread")
    }

    /// Polls `check` every 50 ms until it holds; panics with `what` after `limit`.
    async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + limit;
        while !check().await {
            assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn alert(name: &str, pool: &str) -> Alert {
        Alert {
            labels: [("alertname", name), ("pool", pool), ("severity", "page")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: [("summary", format!("{pool} is out of service"))]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            starts_at_ms: now_ms() - 60_000,
            generator_url: format!("http://127.0.0.1:8080/api/pools/{pool}"),
        }
    }

    fn options(url: &str) -> Options {
        Options {
            url: url.to_string(),
            tls: None,
            resend: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            max_backoff: Duration::from_millis(200),
        }
    }

    /// `run` on its own task; dropping the sender of the returned channel (or sending) stops it.
    fn spawn(options: Options, rx: watch::Receiver<Vec<Alert>>) -> Running {
        // The delivery's log lines in the test's output (shown when it fails).
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_max_level(tracing::Level::DEBUG)
            .try_init();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(options, rx, async {
            let _ = stopped.await;
        }));
        Running { stop, task }
    }

    struct Running {
        stop: oneshot::Sender<()>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Running {
        async fn stop(self) {
            let _ = self.stop.send(());
            tokio::time::timeout(Duration::from_secs(5), self.task)
                .await
                .expect("run returns on shutdown")
                .expect("run does not panic");
        }
    }

    fn labelled<'a>(alerts: &'a [Value], a: &Alert) -> Vec<&'a Value> {
        let labels = string_map(&a.labels);
        alerts.iter().filter(|v| v["labels"] == labels).collect()
    }

    fn ms_of(v: &Value) -> i64 {
        let t =
            OffsetDateTime::parse(v.as_str().expect("a timestamp"), &Rfc3339).expect("RFC 3339");
        i64::try_from(t.unix_timestamp_nanos() / 1_000_000).expect("in range")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_https_alertmanager_gets_alerts_from_the_ca_it_is_trusted_by_only() {
        let am = TestAlertmanager::start_tls().await;
        assert!(am.url.starts_with("https://"), "{}", am.url);
        let tls = tls_trusting(&am.ca()).expect("the CA loads");
        // Through the same TLS: what Alertmanager received.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .tls_config(tls.clone())
            .build()
            .into();
        let metrics_url = format!("{}/metrics", am.url);
        let firing = move || {
            let (agent, url) = (agent.clone(), metrics_url.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    let mut r = agent.get(&url).call().expect("GET /metrics over TLS");
                    let body = r.body_mut().read_to_string().expect("a body");
                    body.lines()
                        .find_map(|l| {
                            l.strip_prefix(
                                "alertmanager_alerts_received_total{status=\"firing\",version=\"v2\"}",
                            )
                        })
                        .map_or(0, |v| v.trim().parse::<f64>().expect("a counter") as u64)
                })
                .await
                .expect("GET thread")
            }
        };
        let mri = alert("PoolOutOfService", "MRI");
        // Trusting another CA: nothing gets through (each send fails its handshake).
        let stranger = TestAlertmanager::start_tls().await;
        let (_tx0, rx0) = watch::channel(vec![mri.clone()]);
        let wrong = spawn(
            Options {
                tls: Some(tls_trusting(&stranger.ca()).expect("loads")),
                ..options(&am.url)
            },
            rx0,
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        wrong.stop().await;
        assert_eq!(
            firing().await,
            0,
            "an alert got through a certificate of another CA"
        );
        // Trusting the right one: delivered.
        let (_tx, rx) = watch::channel(vec![mri]);
        let running = spawn(
            Options {
                tls: Some(tls),
                ..options(&am.url)
            },
            rx,
        );
        eventually(
            Duration::from_secs(5),
            "a firing alert received over HTTPS",
            || {
                let f = firing.clone();
                async move { f().await >= 1 }
            },
        )
        .await;
        running.stop().await;
        stranger.stop().await;
        am.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_alert_is_delivered_with_its_labels_annotations_start_and_link() {
        let am = TestAlertmanager::start().await;
        let mri = alert("PoolOutOfService", "MRI");
        let (_tx, rx) = watch::channel(vec![mri.clone()]);
        let running = spawn(options(&am.url), rx);
        eventually(
            Duration::from_secs(5),
            "the alert in GET /api/v2/alerts",
            || async { !labelled(&am.alerts().await, &mri).is_empty() },
        )
        .await;
        let sent_ms = now_ms();
        let alerts = am.alerts().await;
        let got = labelled(&alerts, &mri)[0];
        assert_eq!(got["annotations"], string_map(&mri.annotations));
        assert_eq!(ms_of(&got["startsAt"]), mri.starts_at_ms);
        assert_eq!(got["generatorURL"], mri.generator_url.as_str());
        assert_eq!(got["status"]["state"], "active");
        // endsAt = 4 × max(resend 10 s, max_backoff): 40 s ahead.
        let ahead = ms_of(&got["endsAt"]) - sent_ms;
        assert!(
            (35_000..=41_000).contains(&ahead),
            "endsAt {ahead} ms ahead"
        );
        assert_eq!(alerts.len(), 1);
        running.stop().await;
        am.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_removed_alert_is_resolved_and_leaves_the_api() {
        let am = TestAlertmanager::start().await;
        let (mri, ct) = (
            alert("PoolOutOfService", "MRI"),
            alert("PoolOutOfService", "CT"),
        );
        let (tx, rx) = watch::channel(vec![mri.clone(), ct.clone()]);
        let running = spawn(options(&am.url), rx);
        eventually(Duration::from_secs(5), "both alerts delivered", || async {
            am.alerts().await.len() == 2
        })
        .await;
        tx.send_replace(vec![ct.clone()]);
        // Resolved alerts drop out of API v2's list whatever the filter; its endsAt (40 s
        // ahead) is far off, so only an explicit resolution removes it this soon.
        eventually(Duration::from_secs(5), "the MRI alert resolved", || async {
            labelled(&am.alerts().await, &mri).is_empty()
        })
        .await;
        let left = am.alerts().await;
        assert_eq!(labelled(&left, &ct).len(), 1);
        assert_eq!(left.len(), 1);
        assert_eq!(am.received("resolved").await, 1);
        running.stop().await;
        am.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_alert_waits_out_an_alertmanager_that_is_down_at_first() {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().expect("its address").port()
        };
        let mri = alert("PoolOutOfService", "MRI");
        let (_tx, rx) = watch::channel(vec![mri.clone()]);
        let running = spawn(options(&format!("http://127.0.0.1:{port}")), rx);
        // A few refused attempts (backoff 200 ms at most) before it is there.
        tokio::time::sleep(Duration::from_millis(800)).await;
        let am = TestAlertmanager::start_on(Some(port)).await;
        eventually(
            Duration::from_secs(5),
            "the alert after the retry",
            || async { labelled(&am.alerts().await, &mri).len() == 1 },
        )
        .await;
        running.stop().await;
        am.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resolution_is_kept_through_an_outage() {
        let am = TestAlertmanager::start().await;
        let port = am.port();
        let (mri, ct) = (
            alert("PoolOutOfService", "MRI"),
            alert("PoolOutOfService", "CT"),
        );
        let (tx, rx) = watch::channel(vec![mri.clone(), ct.clone()]);
        let running = spawn(options(&am.url), rx);
        eventually(Duration::from_secs(5), "both alerts delivered", || async {
            am.alerts().await.len() == 2
        })
        .await;
        am.stop().await;
        tx.send_replace(vec![ct.clone()]);
        tokio::time::sleep(Duration::from_millis(800)).await;
        // A fresh Alertmanager on the same port (it forgets alerts on restart): the retry
        // brings the newest state, the resolution of MRI included.
        let am = TestAlertmanager::start_on(Some(port)).await;
        eventually(
            Duration::from_secs(5),
            "the CT alert after the retry",
            || async { labelled(&am.alerts().await, &ct).len() == 1 },
        )
        .await;
        assert_eq!(am.received("resolved").await, 1);
        assert!(labelled(&am.alerts().await, &mri).is_empty());
        running.stop().await;
        am.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flapping_set_that_ends_where_it_started_makes_no_second_alert() {
        let am = TestAlertmanager::start().await;
        let mri = alert("PoolOutOfService", "MRI");
        let (tx, rx) = watch::channel(vec![mri.clone()]);
        let running = spawn(options(&am.url), rx);
        eventually(Duration::from_secs(5), "the alert delivered", || async {
            am.alerts().await.len() == 1
        })
        .await;
        for pause in [0, 30, 0, 30, 0, 30] {
            tx.send_replace(vec![]);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            tx.send_replace(vec![mri.clone()]);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        // Updates that change nothing send nothing.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let firing = am.received("firing").await;
        for _ in 0..5 {
            tx.send_replace(vec![mri.clone()]);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(am.received("firing").await, firing);
        let alerts = am.alerts().await;
        assert_eq!(alerts.len(), 1, "{alerts:?}");
        let got = labelled(&alerts, &mri)[0];
        assert_eq!(got["status"]["state"], "active");
        assert_eq!(ms_of(&got["startsAt"]), mri.starts_at_ms);
        running.stop().await;
        am.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn active_alerts_are_sent_again_every_resend_and_not_between() {
        let am = TestAlertmanager::start().await;
        let mri = alert("PoolOutOfService", "MRI");
        let (_tx, rx) = watch::channel(vec![mri.clone()]);
        let resend = Duration::from_millis(300);
        let running = spawn(
            Options {
                resend,
                ..options(&am.url)
            },
            rx,
        );
        eventually(Duration::from_secs(5), "the alert delivered", || async {
            am.received("firing").await >= 1
        })
        .await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // About 1000 / 300 resends; not a POST per loop turn.
        let firing = am.received("firing").await;
        assert!((3..=6).contains(&firing), "{firing} POSTs in about 1 s");
        assert_eq!(am.alerts().await.len(), 1);
        running.stop().await;
        am.stop().await;
    }

    #[test]
    fn input_alertmanager_would_reject_is_made_valid_or_left_out() {
        let now = 1_767_225_600_000; // 2026-01-01T00:00:00Z
        let mut problems = BTreeSet::new();
        let mut bad = alert("PoolOutOfService", "MRI");
        bad.labels.insert("pool-name".into(), "MRI".into());
        bad.labels.insert("9lives".into(), "x".into());
        bad.labels.insert("empty".into(), String::new());
        bad.annotations.insert("run book".into(), "x".into());
        bad.starts_at_ms = now + 3_600_000;
        bad.generator_url = "http://x/%zz".into();
        let (labels, outgoing) = prepare(&bad, now, &mut problems).expect("still delivered");
        let names: Vec<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["_9lives", "alertname", "pool", "pool_name", "severity"]
        );
        assert!(outgoing.annotations.contains_key("run_book"));
        assert_eq!(outgoing.starts_at_ms, now);
        assert_eq!(outgoing.generator_url, None);
        assert_eq!(problems.len(), 4, "{problems:?}");

        for labels in [Labels::new(), [("alertname".into(), String::new())].into()] {
            let nameless = Alert {
                labels,
                ..alert("x", "MRI")
            };
            assert!(prepare(&nameless, now, &mut problems).is_none());
        }
        for start in [i64::MIN, -1, 0, i64::MAX] {
            let odd = Alert {
                starts_at_ms: start,
                ..alert("x", "MRI")
            };
            let (_, out) = prepare(&odd, now, &mut problems).expect("delivered");
            assert_eq!(out.starts_at_ms, now);
        }
        assert_eq!(rfc3339(now + 5), "2026-01-01T00:00:00.005Z");
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59Z");

        for ok in [
            "http://h",
            "https://h:8080/p?q=1#token=x",
            "http://[::1]:9/x",
            "http://u@h/%2F",
        ] {
            assert!(plain_http_url(ok), "{ok}");
        }
        for bad in [
            "",
            "/rel",
            "ftp://h",
            "http://",
            "http://[bad",
            "http://h/a b",
            "http://h/é",
        ] {
            assert!(!plain_http_url(bad), "{bad}");
        }
    }

    #[test]
    fn a_resolution_stays_pending_until_a_post_carrying_it_succeeds() {
        let options = Options {
            max_backoff: Duration::from_secs(2),
            ..Options::new("http://127.0.0.1:1")
        };
        let mut d = Delivery::new(&options.clamped());
        let now = Instant::now();
        let (mri, ct) = (
            alert("PoolOutOfService", "MRI"),
            alert("PoolOutOfService", "CT"),
        );
        assert_eq!(d.next_post(now), None, "nothing to send");
        d.absorb(&[mri.clone(), ct.clone()], 1_000);
        assert_eq!(d.next_post(now), Some(now));
        let batch = d.batch(1_000);
        d.settle(batch, Ok(()), now, 1.0);
        assert_eq!(d.next_post(now), Some(now + DEFAULT_RESEND));

        d.absorb(std::slice::from_ref(&ct), 2_000);
        for (i, wait) in [500, 1000, 2000, 2000].into_iter().enumerate() {
            let batch = d.batch(3_000);
            let sent = batch.body.as_array().expect("an array").clone();
            assert_eq!(sent.len(), 2, "attempt {i}");
            let resolution = &sent[1];
            assert_eq!(resolution["labels"], string_map(&mri.labels));
            assert_eq!(resolution["endsAt"], rfc3339(2_000).as_str());
            d.settle(batch, Err("down".into()), now, 1.0);
            assert_eq!(d.next_post(now), Some(now + Duration::from_millis(wait)));
        }
        let batch = d.batch(4_000);
        d.settle(batch, Ok(()), now, 1.0);
        assert!(d.resolved.is_empty() && !d.announced.contains(&mri.labels));
        assert_eq!(d.batch(5_000).body.as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn options_are_clamped_so_nothing_overflows() {
        let wild = Options {
            url: " http://h:9093/ ".into(),
            tls: None,
            resend: Duration::ZERO,
            timeout: Duration::MAX,
            max_backoff: Duration::MAX,
        };
        let o = wild.clamped();
        assert_eq!(o.url, "http://h:9093");
        assert_eq!(o.resend, Duration::from_millis(100));
        assert_eq!(o.timeout, Duration::from_secs(600));
        assert_eq!(o.max_backoff, Duration::from_secs(3600));
        let mut d = Delivery::new(&o);
        d.absorb(&[alert("x", "MRI")], i64::MAX - 1);
        let batch = d.batch(i64::MAX - 1);
        d.settle(batch, Err("down".into()), Instant::now(), f64::NAN);
    }
}
