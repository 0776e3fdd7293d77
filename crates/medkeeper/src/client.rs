//! The everyday commands against a running `medkeeper serve`: pools, queues, units, patients,
//! orders, alarms, the cluster, the tree, tokens and the audit log, over the JSON API
//! (`docs/api.md`).
//!
//! Every command takes `--server URL` (`MEDKEEPER_SERVER`), `--token TOKEN`
//! (`MEDKEEPER_TOKEN`) and `--json` (the raw answer instead of a table). An `https://` server
//! needs `--server-ca FILE` (`MEDKEEPER_SERVER_CA`): the CA that signed its certificate, and the
//! only one trusted (no system or bundled roots, no way to skip verification); a server that asks
//! for client certificates (`serve --tls-client-ca`) takes `--client-cert`/`--client-key`. A server error
//! `{"error":{"code","message"}}` is printed as `error: MESSAGE (CODE, HTTP STATUS)`; the exit
//! status is 2 for a 4xx answer and 1 otherwise. `token create` and `audit` also work offline
//! with `--data DIR`, straight on the clinical store `DIR/clinical.sqlite`; `token create
//! --store STORE` on any clinical store `serve` takes (an SQLite file, a PostgreSQL URL).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::{Value, json};

/// `println!` that ignores a closed stdout (`medkeeper pools | head -1`) instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Which server to talk to, as whom, and how to print the answer.
#[derive(Args, Debug, Clone)]
#[command(next_help_heading = "Server")]
pub struct ServerArgs {
    /// The server's base URL.
    #[arg(
        long,
        env = "MEDKEEPER_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// The bearer token (`mkt_...`).
    #[arg(long, env = "MEDKEEPER_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// For an https:// server: the CA certificate (PEM) that signed the server's certificate.
    /// Only the CAs in this file are trusted.
    #[arg(long, env = "MEDKEEPER_SERVER_CA", value_name = "FILE")]
    server_ca: Option<PathBuf>,
    /// For an https:// server that asks for client certificates (`serve --tls-client-ca`):
    /// this client's certificate chain (PEM), with --client-key.
    #[arg(long, env = "MEDKEEPER_CLIENT_CERT", value_name = "FILE")]
    client_cert: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of --client-cert.
    #[arg(long, env = "MEDKEEPER_CLIENT_KEY", value_name = "FILE")]
    client_key: Option<PathBuf>,
    /// Print the server's JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

/// The commands against a running server (flattened into `medkeeper ...`).
#[derive(Subcommand, Debug)]
pub enum ClientCommand {
    /// Pools with their units (status, and the order and patient while in use) and queue
    /// lengths.
    Pools {
        #[command(flatten)]
        server: ServerArgs,
        /// Only this pool (`MRI`, `cardiology`, `equipment:NAME`, `department:NAME`).
        pool: Option<String>,
    },
    /// A pool's queue in dispatch order: position, order, patient, priority (ordered and after
    /// ageing), time waited, estimated wait.
    Queue {
        #[command(flatten)]
        server: ServerArgs,
        /// The pool.
        pool: String,
    },
    /// Set a unit's (or doctor's) status.
    Unit {
        #[command(flatten)]
        server: ServerArgs,
        /// The pool.
        pool: String,
        /// The unit or doctor.
        unit: String,
        /// The new status.
        #[arg(long, value_parser = ["available", "maintenance", "offline"])]
        status: String,
    },
    /// Create or show patients.
    #[command(subcommand)]
    Patient(PatientCommand),
    /// A patient's vital signs (normalised units; artefacts flagged), oldest first.
    Vitals {
        #[command(flatten)]
        server: ServerArgs,
        /// The patient's id.
        patient: String,
        /// Only these codes, comma-separated (`heart_rate,spo2`, ...).
        #[arg(long)]
        code: Option<String>,
        /// Only observations effective at or after this time, ms since the Unix epoch.
        #[arg(long)]
        since_ms: Option<i64>,
        /// Only observations effective at or before this time.
        #[arg(long)]
        until_ms: Option<i64>,
    },
    /// A patient's NEWS2 now (each parameter's score, the risk, the response and monitoring,
    /// what is missing or stale) and the last 24 hours: decision support, not a diagnosis.
    News2 {
        #[command(flatten)]
        server: ServerArgs,
        /// The patient's id.
        patient: String,
    },
    /// Create, show and move orders through their life.
    #[command(subcommand)]
    Order(OrderCommand),
    /// The cluster's members and its leader.
    Cluster {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The coordination tree, read-only, through the server (admin only; `medkeeper coord`
    /// talks to the coordination service directly).
    Tree {
        #[command(flatten)]
        server: ServerArgs,
        /// The path (the server's default when omitted).
        path: Option<String>,
        /// How many levels below the path.
        #[arg(long)]
        depth: Option<u32>,
    },
    /// Active alarms, highest priority first, and the newest alarm events.
    Alarms {
        #[command(flatten)]
        server: ServerArgs,
        /// How many of the newest alarm events to list.
        #[arg(long, default_value_t = 10)]
        history: u32,
    },
    /// Show, acknowledge or shelve one alarm.
    #[command(subcommand)]
    Alarm(AlarmCommand),
    /// Issue, list and revoke API tokens (admin).
    #[command(subcommand)]
    Token(TokenCommand),
    /// The audit log: who read patient data or changed anything, when, with what outcome
    /// (admin).
    Audit {
        #[command(flatten)]
        server: ServerArgs,
        /// Only records about this patient.
        #[arg(long)]
        patient: Option<String>,
        /// Only records by this actor (a token id, `t-...`).
        #[arg(long)]
        actor: Option<String>,
        /// Only records at or after this time, ms since the Unix epoch.
        #[arg(long)]
        since_ms: Option<i64>,
        /// Only records after this sequence number.
        #[arg(long)]
        after_seq: Option<i64>,
        /// At most this many records.
        #[arg(long)]
        limit: Option<u32>,
        /// Read the clinical store `DIR/clinical.sqlite` directly instead of asking a server.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
    },
}

/// `medkeeper alarm ...`.
#[derive(Subcommand, Debug)]
pub enum AlarmCommand {
    /// One alarm: as it is now if active, and its events.
    Show {
        #[command(flatten)]
        server: ServerArgs,
        /// The alarm's id (`<rule>@<scope>@<episode>`, from `medkeeper alarms`).
        id: String,
    },
    /// Acknowledge an active alarm (any staff role).
    Ack {
        #[command(flatten)]
        server: ServerArgs,
        /// The alarm's id.
        id: String,
        /// A note (kept in the clinical store).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Shelve an active alarm: not delivered nor escalated for a while (admin, scheduler).
    Shelve {
        #[command(flatten)]
        server: ServerArgs,
        /// The alarm's id.
        id: String,
        /// How long (`30m`, `2h`; at most 24h).
        #[arg(long = "for", value_name = "DURATION")]
        duration: String,
        /// Why (required).
        #[arg(long)]
        reason: String,
    },
}

/// `medkeeper patient ...`.
#[derive(Subcommand, Debug)]
pub enum PatientCommand {
    /// Register a patient; prints the patient's id.
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// Display name.
        #[arg(long)]
        name: String,
        /// Birth date, YYYY-MM-DD.
        #[arg(long)]
        birth_date: Option<String>,
        /// The opaque id to use (a fresh `p-...` when omitted).
        #[arg(long)]
        id: Option<String>,
    },
    /// A patient's demographics, orders and queue entries.
    Show {
        #[command(flatten)]
        server: ServerArgs,
        /// The patient's id.
        id: String,
    },
}

/// `medkeeper order ...`.
#[derive(Subcommand, Debug)]
pub enum OrderCommand {
    /// Order an exam; prints the order's id on the first line, then a summary.
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// The patient's id.
        #[arg(long)]
        patient: String,
        /// The pool (`MRI`, `cardiology`, ...).
        #[arg(long)]
        pool: String,
        /// The FHIR priority.
        #[arg(long, value_parser = PRIORITIES)]
        priority: String,
        /// A capability the unit must have (repeatable).
        #[arg(long = "capability", value_name = "C")]
        capabilities: Vec<String>,
        /// The clinical reason.
        #[arg(long, value_name = "TEXT")]
        reason: Option<String>,
    },
    /// An order, its transitions and its result.
    Show {
        #[command(flatten)]
        server: ServerArgs,
        /// The order's id.
        id: String,
    },
    /// Change a queued order's priority.
    Priority {
        #[command(flatten)]
        server: ServerArgs,
        /// The order's id.
        id: String,
        /// The new priority.
        #[arg(value_parser = PRIORITIES)]
        priority: String,
    },
    /// Cancel an order.
    Cancel {
        #[command(flatten)]
        server: ServerArgs,
        /// The order's id.
        id: String,
    },
    /// Call the patient to a unit now (any free compatible unit unless --unit).
    Call {
        #[command(flatten)]
        server: ServerArgs,
        /// The order's id.
        id: String,
        /// The unit or doctor.
        #[arg(long)]
        unit: Option<String>,
    },
    /// The exam has started.
    Start {
        #[command(flatten)]
        server: ServerArgs,
        /// The order's id.
        id: String,
    },
    /// The exam is done (results pending).
    Complete {
        #[command(flatten)]
        server: ServerArgs,
        /// The order's id.
        id: String,
    },
    /// Report the results (the order becomes `reported`: results ready).
    Report {
        #[command(flatten)]
        server: ServerArgs,
        /// The order's id.
        id: String,
        /// The report.
        #[arg(long)]
        text: String,
    },
    /// The patient did not arrive.
    NoShow {
        #[command(flatten)]
        server: ServerArgs,
        /// The order's id.
        id: String,
    },
}

/// `medkeeper token ...`.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue a token; prints the token (shown only this once) on the first line.
    Create {
        #[command(flatten)]
        server: ServerArgs,
        /// The role.
        #[arg(long, value_parser = ROLES)]
        role: String,
        /// The patient a `patient` token belongs to.
        #[arg(long)]
        patient: Option<String>,
        /// A note on whom it is for.
        #[arg(long, value_name = "TEXT")]
        label: Option<String>,
        /// How long it lives: `12h`, `30d`, `90m`. Default: 7 days for a patient token, no
        /// expiry for staff (unless the server sets `--token-max-ttl`).
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
        /// Issue offline, straight into the clinical store `DIR/clinical.sqlite` (no server
        /// needed; works while one runs).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Issue offline into this clinical store: `serve`'s `--store`, an SQLite file or
        /// `postgres://USER@HOST:PORT/DB` (TLS as for `serve`; the password from
        /// `MEDKEEPER_STORE_PASSWORD`, else `PGPASSWORD`).
        #[arg(long, value_name = "STORE", conflicts_with = "data")]
        store: Option<PathBuf>,
    },
    /// Every token (never the secret): id, role, patient, label, created, expires, state.
    List {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Replace a token without downtime: issue its successor (same role, patient and label;
    /// printed on the first line, shown only this once) and have the old one expire after
    /// the overlap.
    Rotate {
        #[command(flatten)]
        server: ServerArgs,
        /// The token's id (`t-...`).
        id: String,
        /// How long the old token keeps working: `1h` (the default), `0s` to end it now.
        #[arg(long, value_name = "DURATION")]
        overlap: Option<String>,
        /// The new token's lifetime; by default the old one's.
        #[arg(long, value_name = "DURATION")]
        ttl: Option<String>,
    },
    /// Revoke a token.
    Revoke {
        #[command(flatten)]
        server: ServerArgs,
        /// The token's id (`t-...`).
        id: String,
    },
}

const PRIORITIES: [&str; 4] = ["routine", "urgent", "asap", "stat"];
const ROLES: [&str; 6] = [
    "admin",
    "scheduler",
    "doctor",
    "nurse",
    "technician",
    "patient",
];

/// The server answered with an error status.
#[derive(Debug)]
struct ApiError {
    status: u16,
    code: String,
    message: String,
    /// What to try, when the client can tell.
    hint: Option<&'static str>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}, HTTP {})", self.message, self.code, self.status)
    }
}

impl std::error::Error for ApiError {}

/// Runs a client command.
pub async fn run(cmd: ClientCommand) -> anyhow::Result<ExitCode> {
    match command(cmd).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => match e.downcast_ref::<ApiError>() {
            Some(api) => {
                eprintln!("error: {api}");
                if let Some(hint) = api.hint {
                    eprintln!("  hint: {hint}");
                }
                Ok(if (400..500).contains(&api.status) {
                    ExitCode::from(2)
                } else {
                    ExitCode::FAILURE
                })
            }
            None => Err(e),
        },
    }
}

async fn command(cmd: ClientCommand) -> anyhow::Result<()> {
    match cmd {
        ClientCommand::Pools { server, pool } => {
            let c = Client::new(&server)?;
            match pool {
                Some(p) => {
                    let v = c.get(&format!("/api/pools/{}", seg(&p))).await?;
                    c.print(&v, |v| print_pools(std::slice::from_ref(v)));
                }
                None => {
                    let v = c.get("/api/pools").await?;
                    c.print(&v, |v| print_pools(arr(v)));
                }
            }
        }
        ClientCommand::Queue { server, pool } => {
            let c = Client::new(&server)?;
            let v = c.get(&format!("/api/pools/{}/queue", seg(&pool))).await?;
            c.print(&v, print_queue);
        }
        ClientCommand::Unit {
            server,
            pool,
            unit,
            status,
        } => {
            let c = Client::new(&server)?;
            let v = c
                .send(
                    Method::Put,
                    &format!("/api/pools/{}/units/{}/status", seg(&pool), seg(&unit)),
                    Some(json!({ "status": status })),
                )
                .await?;
            c.print(&v, |v| print_units(std::slice::from_ref(v)));
        }
        ClientCommand::Patient(PatientCommand::Create {
            server,
            name,
            birth_date,
            id,
        }) => {
            let c = Client::new(&server)?;
            let mut body = json!({ "name": name });
            if let Some(b) = birth_date {
                body["birth_date"] = json!(b);
            }
            if let Some(id) = id {
                body["id"] = json!(id);
            }
            let v = c.send(Method::Post, "/api/patients", Some(body)).await?;
            c.print(&v, |v| outln!("{}", text(&v["id"])));
        }
        ClientCommand::Patient(PatientCommand::Show { server, id }) => {
            let c = Client::new(&server)?;
            let v = c.get(&format!("/api/patients/{}", seg(&id))).await?;
            c.print(&v, print_patient);
        }
        ClientCommand::Vitals {
            server,
            patient,
            code,
            since_ms,
            until_ms,
        } => {
            let c = Client::new(&server)?;
            let mut query = Vec::new();
            if let Some(code) = code {
                query.push(("code", code));
            }
            if let Some(t) = since_ms {
                query.push(("since_ms", t.to_string()));
            }
            if let Some(t) = until_ms {
                query.push(("until_ms", t.to_string()));
            }
            let path = format!("/api/patients/{}/vitals", seg(&patient));
            let v = c.get(&with_query(&path, &query)).await?;
            c.print(&v, print_vitals);
        }
        ClientCommand::News2 { server, patient } => {
            let c = Client::new(&server)?;
            let v = c
                .get(&format!("/api/patients/{}/news2", seg(&patient)))
                .await?;
            c.print(&v, print_news2);
        }
        ClientCommand::Order(cmd) => order_command(cmd).await?,
        ClientCommand::Cluster { server } => {
            let c = Client::new(&server)?;
            let v = c.get("/api/cluster").await?;
            c.print(&v, print_cluster);
        }
        ClientCommand::Tree {
            server,
            path,
            depth,
        } => {
            let c = Client::new(&server)?;
            let mut query = Vec::new();
            if let Some(p) = &path {
                query.push(("path", p.clone()));
            }
            if let Some(d) = depth {
                query.push(("depth", d.to_string()));
            }
            let v = c.get(&with_query("/api/tree", &query)).await?;
            c.print(&v, |v| print_tree(v, 0));
        }
        ClientCommand::Alarms { server, history } => {
            let c = Client::new(&server)?;
            let v = c
                .get(&with_query(
                    "/api/alarms",
                    &[("limit", history.to_string())],
                ))
                .await?;
            c.print(&v, print_alarms);
        }
        ClientCommand::Alarm(cmd) => {
            let (server, path, body) = match cmd {
                AlarmCommand::Show { server, id } => {
                    let c = Client::new(&server)?;
                    let v = c.get(&format!("/api/alarms/{}", seg(&id))).await?;
                    c.print(&v, print_alarm_record);
                    return Ok(());
                }
                AlarmCommand::Ack { server, id, note } => (
                    server,
                    format!("/api/alarms/{}/ack", seg(&id)),
                    json!({ "note": note }),
                ),
                AlarmCommand::Shelve {
                    server,
                    id,
                    duration,
                    reason,
                } => (
                    server,
                    format!("/api/alarms/{}/shelve", seg(&id)),
                    json!({ "for": duration, "reason": reason }),
                ),
            };
            let c = Client::new(&server)?;
            let v = c.send(Method::Post, &path, Some(body)).await?;
            c.print(&v, |v| print_alarm_rows(std::slice::from_ref(v)));
        }
        ClientCommand::Token(cmd) => token_command(cmd).await?,
        ClientCommand::Audit {
            server,
            patient,
            actor,
            since_ms,
            after_seq,
            limit,
            data,
        } => {
            let v = match data {
                Some(dir) => {
                    offline::audit(&dir, patient, actor, since_ms, after_seq, limit).await?
                }
                None => {
                    let c = Client::new(&server)?;
                    let mut query = Vec::new();
                    if let Some(p) = patient {
                        query.push(("patient", p));
                    }
                    if let Some(a) = actor {
                        query.push(("actor", a));
                    }
                    if let Some(s) = since_ms {
                        query.push(("since_ms", s.to_string()));
                    }
                    if let Some(s) = after_seq {
                        query.push(("after_seq", s.to_string()));
                    }
                    if let Some(l) = limit {
                        query.push(("limit", l.to_string()));
                    }
                    c.get(&with_query("/api/audit", &query)).await?
                }
            };
            output(server.json, &v, print_audit);
        }
    }
    Ok(())
}

async fn order_command(cmd: OrderCommand) -> anyhow::Result<()> {
    let (server, id, action, body) = match cmd {
        OrderCommand::Create {
            server,
            patient,
            pool,
            priority,
            capabilities,
            reason,
        } => {
            let c = Client::new(&server)?;
            let body = json!({
                "patient": patient,
                "pool": pool,
                "priority": priority,
                "capabilities": capabilities,
                "reason": reason.unwrap_or_default(),
            });
            let v = c.send(Method::Post, "/api/orders", Some(body)).await?;
            c.print(&v, |v| {
                outln!("{}", text(&v["id"]));
                print_order_summary(v);
            });
            return Ok(());
        }
        OrderCommand::Show { server, id } => {
            let c = Client::new(&server)?;
            let v = c.get(&format!("/api/orders/{}", seg(&id))).await?;
            c.print(&v, print_order_details);
            return Ok(());
        }
        OrderCommand::Priority {
            server,
            id,
            priority,
        } => (
            server,
            id,
            "priority",
            Some(json!({ "priority": priority })),
        ),
        OrderCommand::Cancel { server, id } => (server, id, "cancel", None),
        OrderCommand::Call { server, id, unit } => {
            let body = match unit {
                Some(u) => json!({ "unit": u }),
                None => json!({}),
            };
            (server, id, "call", Some(body))
        }
        OrderCommand::Start { server, id } => (server, id, "start", None),
        OrderCommand::Complete { server, id } => (server, id, "complete", None),
        OrderCommand::Report { server, id, text } => {
            (server, id, "report", Some(json!({ "text": text })))
        }
        OrderCommand::NoShow { server, id } => (server, id, "no-show", None),
    };
    let c = Client::new(&server)?;
    let v = c
        .send(
            Method::Post,
            &format!("/api/orders/{}/{action}", seg(&id)),
            body,
        )
        .await?;
    c.print(&v, print_order_line);
    Ok(())
}

async fn token_command(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create {
            server,
            role,
            patient,
            label,
            ttl,
            data,
            store,
        } => {
            let v = match offline::Source::of(data, store) {
                Some(source) => offline::issue_token(&source, &role, patient, label, ttl).await?,
                None => {
                    let c = Client::new(&server)?;
                    let mut body = json!({ "role": role });
                    if let Some(p) = patient {
                        body["patient"] = json!(p);
                    }
                    if let Some(l) = label {
                        body["label"] = json!(l);
                    }
                    if let Some(t) = ttl {
                        body["ttl"] = json!(t);
                    }
                    c.send(Method::Post, "/api/tokens", Some(body)).await?
                }
            };
            output(server.json, &v, print_issued);
        }
        TokenCommand::Rotate {
            server,
            id,
            overlap,
            ttl,
        } => {
            let c = Client::new(&server)?;
            let mut body = json!({});
            if let Some(o) = overlap {
                body["overlap"] = json!(o);
            }
            if let Some(t) = ttl {
                body["ttl"] = json!(t);
            }
            let path = format!("/api/tokens/{}/rotate", seg(&id));
            let v = c.send(Method::Post, &path, Some(body)).await?;
            output(server.json, &v, |v| {
                print_issued(v);
                eprintln!(
                    "{} keeps working until {} (then expired)",
                    text(&v["replaces"]),
                    time(&v["replaced_expires_ms"])
                );
            });
        }
        TokenCommand::List { server } => {
            let c = Client::new(&server)?;
            let v = c.get("/api/tokens").await?;
            c.print(&v, print_tokens);
        }
        TokenCommand::Revoke { server, id } => {
            let c = Client::new(&server)?;
            let v = c
                .send(Method::Delete, &format!("/api/tokens/{}", seg(&id)), None)
                .await?;
            c.print(&v, |_| outln!("revoked {id}"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// HTTP

#[derive(Debug, Clone, Copy)]
enum Method {
    Get,
    Post,
    Put,
    Delete,
}

/// A blocking ureq agent, called from the blocking pool.
struct Client {
    agent: ureq::Agent,
    base: String,
    /// `--server-ca`, for error messages (https only).
    ca: Option<PathBuf>,
    token: Option<String>,
    json: bool,
}

impl Client {
    fn new(args: &ServerArgs) -> anyhow::Result<Client> {
        let base = args.server.trim_end_matches('/').to_string();
        let https = base.starts_with("https://");
        if !(base.starts_with("http://") || https) {
            bail!(
                "--server {:?}: expected a URL such as http://127.0.0.1:8080",
                args.server
            );
        }
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false);
        if let Some(tls) = tls_config(args, &base, https)? {
            config = config.tls_config(tls);
        }
        Ok(Client {
            agent: config.build().into(),
            base,
            ca: args.server_ca.clone().filter(|_| https),
            token: args.token.clone().filter(|t| !t.is_empty()),
            json: args.json,
        })
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(Method::Get, path, None).await
    }

    /// Sends one request; a 2xx answer's JSON (`null` when empty), else an [`ApiError`].
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let agent = self.agent.clone();
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let base = self.base.clone();
        let ca = self.ca.clone();
        let no_token = auth.is_none();
        let result = tokio::task::spawn_blocking(move || {
            request(&agent, method, &url, auth, body, &base, ca.as_deref())
        })
        .await
        .context("the request thread failed")?;
        result.map_err(|e| match e.downcast::<ApiError>() {
            Ok(mut api) => {
                if api.status == 401 && no_token {
                    api.hint = Some("pass --token or set MEDKEEPER_TOKEN");
                }
                api.into()
            }
            Err(e) => e,
        })
    }

    /// Prints `v` as JSON with `--json`, else with `human`.
    fn print(&self, v: &Value, human: impl FnOnce(&Value)) {
        output(self.json, v, human)
    }
}

fn output(json: bool, v: &Value, human: impl FnOnce(&Value)) {
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
        );
    } else {
        human(v)
    }
}

fn request(
    agent: &ureq::Agent,
    method: Method,
    url: &str,
    auth: Option<String>,
    body: Option<Value>,
    base: &str,
    ca: Option<&Path>,
) -> anyhow::Result<Value> {
    macro_rules! with_auth {
        ($req:expr) => {{
            let req = $req.header("Accept", "application/json");
            match &auth {
                Some(a) => req.header("Authorization", a),
                None => req,
            }
        }};
    }
    let result = match (method, body) {
        (Method::Get, _) => with_auth!(agent.get(url)).call(),
        (Method::Delete, _) => with_auth!(agent.delete(url)).call(),
        (Method::Post, Some(b)) => with_auth!(agent.post(url)).send_json(&b),
        (Method::Post, None) => with_auth!(agent.post(url)).send_empty(),
        (Method::Put, Some(b)) => with_auth!(agent.put(url)).send_json(&b),
        (Method::Put, None) => with_auth!(agent.put(url)).send_empty(),
    };
    let mut response = result.map_err(|e| transport_error(e, base, ca))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("cannot read the answer from {base} (HTTP {status})"))?;
    let parsed: Option<Value> = if text.trim().is_empty() {
        None
    } else {
        serde_json::from_str(&text).ok()
    };
    if (200..300).contains(&status) {
        return match parsed {
            Some(v) => Ok(v),
            None if text.trim().is_empty() => Ok(Value::Null),
            None => Err(anyhow!(
                "{base} answered HTTP {status} with something that is not JSON: {}",
                snippet(&text)
            )),
        };
    }
    let error = parsed.as_ref().map(|v| &v["error"]);
    match error {
        Some(e) if e["code"].is_string() => Err(ApiError {
            status,
            code: text_of(&e["code"]),
            message: text_of(&e["message"]),
            hint: None,
        }
        .into()),
        _ => Err(ApiError {
            status,
            code: "http".into(),
            message: if text.trim().is_empty() {
                format!("{base} answered without a body")
            } else {
                snippet(&text)
            },
            hint: None,
        }
        .into()),
    }
}

/// TLS for an `https://` server: rustls on aws-lc-rs (set on the agent, not installed
/// process-wide), trusting only the CAs in `--server-ca`, with a client certificate from
/// `--client-cert`/`--client-key` if given. `None` for `http://`. The files are read and checked
/// here, so a bad one is an error before any connection (ureq itself would skip a CA it cannot
/// parse and panic on a key that does not fit the certificate).
fn tls_config(
    args: &ServerArgs,
    base: &str,
    https: bool,
) -> anyhow::Result<Option<ureq::tls::TlsConfig>> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig, TlsProvider};

    let client_files = match (&args.client_cert, &args.client_key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (None, None) => None,
        (Some(_), None) => bail!("--client-cert needs --client-key (MEDKEEPER_CLIENT_KEY)"),
        (None, Some(_)) => bail!("--client-key needs --client-cert (MEDKEEPER_CLIENT_CERT)"),
    };
    if !https {
        if args.server_ca.is_some() || client_files.is_some() {
            bail!(
                "--server {base} is plain http://, but --server-ca or --client-cert is set \
                 (MEDKEEPER_SERVER_CA, MEDKEEPER_CLIENT_CERT): use the server's https:// URL"
            );
        }
        return Ok(None);
    }
    let Some(ca) = &args.server_ca else {
        bail!(
            "--server {base} is https://: pass --server-ca FILE (or set MEDKEEPER_SERVER_CA), \
             the PEM certificate of the CA that signed the server's certificate; the CLI trusts \
             no other CA"
        );
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = read_certs(ca, "--server-ca")?;
    let mut store = rustls::RootCertStore::empty();
    for cert in &roots {
        store.add(cert.clone()).map_err(|e| {
            anyhow!(
                "--server-ca {}: a certificate that cannot be a CA: {e}",
                ca.display()
            )
        })?;
    }
    let client_cert = match client_files {
        None => None,
        Some((cert, key)) => {
            let chain = read_certs(cert, "--client-cert")?;
            let pem = std::fs::read(key)
                .map_err(|e| anyhow!("cannot read --client-key {}: {e}", key.display()))?;
            let der = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| anyhow!("no private key in --client-key {}: {e}", key.display()))?;
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .context("TLS protocol versions")?
                .with_root_certificates(store)
                .with_client_auth_cert(chain.clone(), der)
                .map_err(|e| {
                    anyhow!(
                        "the key in --client-key {} does not fit the certificate in \
                         --client-cert {} ({e})",
                        key.display(),
                        cert.display()
                    )
                })?;
            let key = PrivateKey::from_pem(&pem)
                .map_err(|e| anyhow!("no private key in --client-key {}: {e}", key.display()))?;
            let chain: Vec<Certificate<'static>> = chain
                .iter()
                .map(|c| Certificate::from_der(c.as_ref()).to_owned())
                .collect();
            Some(ClientCert::new_with_certs(&chain, key))
        }
    };
    let roots: Vec<Certificate<'static>> = roots
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    Ok(Some(
        TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(provider)
            .root_certs(RootCerts::new_with_certs(&roots))
            .client_cert(client_cert)
            .build(),
    ))
}

/// The certificates in a PEM file (`flag` names it in errors); at least one.
pub(crate) fn read_certs(
    path: &Path,
    flag: &str,
) -> anyhow::Result<Vec<rustls::pki_types::CertificateDer<'static>>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let pem =
        std::fs::read(path).map_err(|e| anyhow!("cannot read {flag} {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("{flag} {}: not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{flag} {}: no certificate in it (expected PEM, -----BEGIN CERTIFICATE-----)",
            path.display()
        );
    }
    Ok(certs)
}

/// The rustls error behind a failed request, if TLS is what failed.
fn tls_failure(e: &ureq::Error) -> Option<&rustls::Error> {
    match e {
        ureq::Error::Rustls(r) => Some(r),
        ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<rustls::Error>(),
        _ => None,
    }
}

/// One line saying why the request did not get an answer: the server is not reachable, its
/// certificate does not verify (not from `ca`, for another name), it speaks no TLS, or it
/// speaks TLS to a plain `http://` request.
fn transport_error(e: ureq::Error, base: &str, ca: Option<&Path>) -> anyhow::Error {
    use rustls::{AlertDescription, CertificateError};

    if let Some(tls) = tls_failure(&e) {
        let ca = ca.map(|p| p.display().to_string()).unwrap_or_default();
        return match tls {
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => anyhow!(
                "the server at {base} presented a certificate not signed by a CA in --server-ca \
                 {ca} (rustls: {tls}); nothing was sent"
            ),
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => anyhow!(
                "the server at {base} presented a certificate for another name (rustls: {tls}); \
                 use a host name in --server that the certificate names; nothing was sent"
            ),
            rustls::Error::InvalidCertificate(_) => anyhow!(
                "the server at {base} presented a certificate that does not verify (rustls: \
                 {tls}); nothing was sent"
            ),
            rustls::Error::InvalidMessage(_) => anyhow!(
                "the server at {base} does not speak TLS (rustls: {tls}); is it plain HTTP? \
                 then use http://"
            ),
            rustls::Error::AlertReceived(AlertDescription::CertificateRequired) => anyhow!(
                "the server at {base} requires a client certificate: pass --client-cert and \
                 --client-key (rustls: {tls})"
            ),
            rustls::Error::AlertReceived(_) => anyhow!(
                "the server at {base} refused the TLS handshake (rustls: {tls}); if it asks for \
                 client certificates, pass --client-cert and --client-key from the CA it trusts"
            ),
            _ => anyhow!("TLS with the server at {base} failed (rustls: {tls})"),
        };
    }
    // Plain HTTP to an HTTPS port: the TLS server answers the request with a TLS alert (not
    // HTTP) or closes the connection.
    let not_http = base.starts_with("http://")
        && match &e {
            ureq::Error::Protocol(_) => true,
            ureq::Error::Io(io) => matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::UnexpectedEof
            ),
            _ => false,
        };
    let refused = match &e {
        ureq::Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::ConnectionReset
        ),
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
        _ => false,
    };
    if not_http {
        anyhow!(
            "the server at {base} did not answer plain HTTP ({e}); if it serves HTTPS (`serve \
             --tls-cert`), use its https:// URL with --server-ca"
        )
    } else if refused {
        anyhow!(
            "cannot reach the medkeeper server at {base}: {e} (is `medkeeper serve` running \
             there? set --server or MEDKEEPER_SERVER)"
        )
    } else if matches!(e, ureq::Error::Timeout(_)) {
        anyhow!(
            "no answer from the medkeeper server at {base} within {}s: {e}",
            TIMEOUT.as_secs()
        )
    } else {
        anyhow!("request to the medkeeper server at {base} failed: {e}")
    }
}

fn snippet(s: &str) -> String {
    let s = s.trim();
    let cut: String = s.chars().take(200).collect();
    if cut.len() < s.len() {
        format!("{cut}...")
    } else {
        cut
    }
}

/// What [`seg`] leaves as is: RFC 3986's unreserved characters, and `:` (pool names such as
/// `equipment:MRI` read better unencoded; a segment may hold it).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b':');
/// What a query value leaves as is: as a segment, and `/` (paths in `?path=`).
const QUERY_VALUE: &AsciiSet = &SEGMENT.remove(b'/');

/// Percent-encodes one path segment.
fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

fn with_query(path: &str, query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return path.to_string();
    }
    let q: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", utf8_percent_encode(v, QUERY_VALUE)))
        .collect();
    format!("{path}?{}", q.join("&"))
}

// ---------------------------------------------------------------------------------------------
// Offline (on the clinical store)

mod offline {
    use std::path::{Path, PathBuf};

    use anyhow::{Context, anyhow};
    use medkeeper_hospital::PatientId;
    use medkeeper_hospital::store::{AuditQuery, ClinicalStore, SqliteStore};
    use medkeeper_server::ApiError;
    use medkeeper_server::auth::Role;
    use serde_json::Value;

    fn open(dir: &Path) -> anyhow::Result<SqliteStore> {
        let file = dir.join("clinical.sqlite");
        if !file.exists() {
            anyhow::bail!(
                "no clinical store at {} (the --data directory of `medkeeper serve`)",
                file.display()
            );
        }
        SqliteStore::open(&file)
            .with_context(|| format!("cannot open the clinical store {}", file.display()))
    }

    /// Where an offline command finds the clinical store.
    pub enum Source {
        /// `--data DIR`: `DIR/clinical.sqlite`.
        Data(PathBuf),
        /// `--store STORE`: an SQLite file or a PostgreSQL URL.
        Store(PathBuf),
    }

    impl Source {
        /// The one given, if any (clap refuses both).
        pub fn of(data: Option<PathBuf>, store: Option<PathBuf>) -> Option<Source> {
            data.map(Source::Data).or(store.map(Source::Store))
        }
    }

    /// Opens the store `source` names; an SQLite file must exist already.
    async fn open_store(source: &Source) -> anyhow::Result<std::sync::Arc<dyn ClinicalStore>> {
        match source {
            Source::Data(dir) => Ok(std::sync::Arc::new(open(dir)?)),
            Source::Store(store) => {
                let target = crate::serve::StoreTarget::parse(store.clone(), None)?;
                if !target.is_postgres() && !store.exists() {
                    anyhow::bail!("no clinical store at {}", store.display());
                }
                target.open().await
            }
        }
    }

    /// Issues a token into the store; the answer shaped like `POST /api/tokens`.
    pub async fn issue_token(
        source: &Source,
        role: &str,
        patient: Option<String>,
        label: Option<String>,
        ttl: Option<String>,
    ) -> anyhow::Result<Value> {
        let role: Role = role
            .parse()
            .map_err(|e: ApiError| anyhow!("{}", e.message))?;
        let ttl = ttl
            .map(|t| {
                medkeeper_server::auth::parse_ttl(&t)
                    .ok_or_else(|| anyhow!("--ttl {t:?}: use a duration such as 12h or 30d"))
            })
            .transpose()?;
        // Offline there is no server's --token-max-ttl: the default policy.
        let expires_ms = medkeeper_server::TokenPolicy::default()
            .expiry(role, ttl, medkeeper_hospital::model::now_ms())
            .map_err(|e| anyhow!("{}", e.message))?;
        let patient = patient
            .map(|p| p.parse::<PatientId>())
            .transpose()
            .map_err(|e| anyhow!("{e}"))?;
        let store = open_store(source).await?;
        let (record, secret) = medkeeper_server::auth::issue_token_expiring(
            store.as_ref(),
            role,
            patient,
            label.as_deref().unwrap_or(""),
            expires_ms,
        )
        .await
        .map_err(|e| anyhow!("cannot issue the token: {} ({})", e.message, e.code))?;
        let mut v = serde_json::to_value(&record)?;
        if let Some(fields) = v.as_object_mut() {
            fields.remove("hash");
        }
        v["token"] = Value::String(secret);
        Ok(v)
    }

    /// The audit records the query selects, as JSON like `GET /api/audit`.
    pub async fn audit(
        dir: &Path,
        patient: Option<String>,
        actor: Option<String>,
        since_ms: Option<i64>,
        after_seq: Option<i64>,
        limit: Option<u32>,
    ) -> anyhow::Result<Value> {
        let store = open(dir)?;
        let query = AuditQuery {
            patient: patient
                .map(|p| p.parse::<PatientId>())
                .transpose()
                .map_err(|e| anyhow!("{e}"))?,
            actor,
            since_ms,
            after_seq,
            limit,
        };
        let records = store
            .audit(&query)
            .await
            .map_err(|e| anyhow!("cannot read the audit log: {e}"))?;
        Ok(serde_json::to_value(&records)?)
    }
}

// ---------------------------------------------------------------------------------------------
// Text output

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// A JSON value as a table cell: `-` for null or empty.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.is_empty() => "-".into(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A JSON string as is (empty when absent).
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `{"pool":"equipment","name":"MRI"}` as `MRI (equipment)`.
fn pool_name(v: &Value) -> String {
    match (v["name"].as_str(), v["pool"].as_str()) {
        (Some(n), Some(k)) => format!("{n} ({k})"),
        _ => text(v),
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS` (UTC); the raw value if it is not a
/// time `time` can represent.
fn time(v: &Value) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    v.as_i64()
        .and_then(|ms| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
        })
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| text(v))
}

/// Seconds as `42s`, `3m05s`, `2h07m`: the two largest units, fixed width after the first, so
/// a column of waits reads at a glance (the compact form the simulation report uses too).
fn duration(v: &Value) -> String {
    let Some(s) = v.as_u64() else {
        return text(v);
    };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

/// Prints [`table_lines`].
fn table(indent: &str, headers: &[&str], rows: &[Vec<String>]) {
    for line in table_lines(indent, headers, rows) {
        outln!("{line}");
    }
}

/// Left-aligned columns, two spaces apart, no borders; the last column is not padded.
fn table_lines(indent: &str, headers: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut t = comfy_table::Table::new();
    t.load_style(comfy_table::presets::NOTHING)
        .set_header(headers.to_vec())
        .add_rows(rows.iter().cloned());
    let last = t.column_count().saturating_sub(1);
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, if i == last { 0 } else { 2 }));
    }
    t.lines()
        .map(|line| format!("{indent}{}", line.trim_end()))
        .collect()
}

fn print_pools(pools: &[Value]) {
    if pools.is_empty() {
        outln!("no pools");
    }
    for (i, p) in pools.iter().enumerate() {
        if i > 0 {
            outln!();
        }
        outln!(
            "{} {}  queue {}",
            text(&p["pool"]),
            text(&p["name"]),
            text(&p["queue_length"])
        );
        let units = arr(&p["units"]);
        if units.is_empty() {
            outln!("  no units");
        } else {
            print_units_indented("  ", units);
        }
    }
}

fn print_units(units: &[Value]) {
    print_units_indented("", units)
}

fn print_units_indented(indent: &str, units: &[Value]) {
    let rows: Vec<Vec<String>> = units
        .iter()
        .map(|u| {
            vec![
                text(&u["name"]),
                text(&u["status"]),
                text(&u["order"]),
                text(&u["patient"]),
                text(&u["capabilities"]),
                time(&u["since_ms"]),
            ]
        })
        .collect();
    table(
        indent,
        &[
            "UNIT",
            "STATUS",
            "ORDER",
            "PATIENT",
            "CAPABILITIES",
            "SINCE",
        ],
        &rows,
    );
}

fn print_queue(v: &Value) {
    let rows: Vec<Vec<String>> = arr(v)
        .iter()
        .map(|r| {
            vec![
                text(&r["position"]),
                text(&r["order"]),
                text(&r["patient"]),
                format!(
                    "{}/{}",
                    text(&r["priority"]),
                    text(&r["effective_priority"])
                ),
                duration(&r["waited_s"]),
                duration(&r["estimated_wait_s"]),
                text(&r["capabilities"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        outln!("the queue is empty");
        return;
    }
    table(
        "",
        &[
            "POS",
            "ORDER",
            "PATIENT",
            "PRIORITY/EFFECTIVE",
            "WAITED",
            "EST.WAIT",
            "CAPABILITIES",
        ],
        &rows,
    );
}

/// The unit a vital sign's normalised value is in, for the table.
fn vital_unit(code: &Value) -> &'static str {
    match code.as_str() {
        Some("respiratory_rate" | "heart_rate") => "/min",
        Some("spo2") => "%",
        Some("temperature") => "°C",
        Some("systolic_bp") => "mmHg",
        _ => "",
    }
}

/// A normalised value as read: oxygen as air/oxygen, consciousness as its ACVPU letter.
fn vital_value(o: &Value) -> String {
    let v = &o["value"];
    let Some(x) = v.as_f64() else {
        return text(v);
    };
    match o["code"].as_str() {
        Some("inhaled_oxygen") => (if x >= 0.5 { "oxygen" } else { "air" }).into(),
        Some("consciousness") => ["A", "C", "V", "P", "U"]
            .get(x as usize)
            .map_or_else(|| text(v), |l| (*l).to_string()),
        _ => format!("{} {}", (x * 10.0).round() / 10.0, vital_unit(&o["code"]))
            .trim_end()
            .to_string(),
    }
}

fn print_vitals(v: &Value) {
    let rows: Vec<Vec<String>> = arr(v)
        .iter()
        .map(|o| {
            vec![
                time(&o["effective_ms"]),
                text(&o["code"]),
                vital_value(o),
                text(&o["source"]),
                if o["artefact"].is_null() {
                    String::new()
                } else {
                    "artefact (not scored)".into()
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        outln!("no vital signs");
        return;
    }
    table("", &["EFFECTIVE", "CODE", "VALUE", "SOURCE", "FLAG"], &rows);
}

fn print_news2(v: &Value) {
    outln!("NEWS2 of {} ({})", text(&v["patient"]), text(&v["label"]));
    let c = &v["current"];
    if c.is_null() {
        outln!("no vital signs observed yet");
    } else {
        let incomplete = if c["complete"] == json!(true) {
            ""
        } else {
            " (incomplete: a lower bound)"
        };
        outln!(
            "score       {} at {}, SpO2 {}",
            text(&c["aggregate"]),
            time(&c["at_ms"]),
            text(&c["scale"])
        );
        outln!("risk        {}{incomplete}", text(&c["risk"]));
        outln!("response    {}", text(&c["response"]));
        outln!("monitoring  {}", text(&c["monitoring"]));
        outln!();
        let mut rows: Vec<Vec<String>> = arr(&c["parameters"])
            .iter()
            .map(|p| vec![text(&p["parameter"]), text(&p["score"]), String::new()])
            .collect();
        for m in arr(&c["missing"]) {
            rows.push(vec![text(&m["parameter"]), "-".into(), "missing".into()]);
        }
        for m in arr(&c["stale"]) {
            rows.push(vec![
                text(&m["parameter"]),
                "-".into(),
                format!("stale (last {})", time(&m["last_ms"])),
            ]);
        }
        table("", &["PARAMETER", "SCORE", "NOTE"], &rows);
    }
    let trend = arr(&v["trend"]);
    outln!();
    if trend.is_empty() {
        outln!("no scores in the last 24 h");
    } else {
        let rows: Vec<Vec<String>> = trend
            .iter()
            .map(|t| {
                vec![
                    time(&t["at_ms"]),
                    text(&t["aggregate"]),
                    text(&t["risk"]),
                    if t["complete"] == json!(true) {
                        String::new()
                    } else {
                        "incomplete".into()
                    },
                ]
            })
            .collect();
        table("", &["LAST 24 H", "SCORE", "RISK", ""], &rows);
    }
}

fn print_patient(v: &Value) {
    let p = &v["patient"];
    if p.is_null() {
        outln!("patient: (no demographics on record)");
    } else {
        outln!("patient     {}", text(&p["id"]));
        outln!("name        {}", text(&p["name"]));
        outln!("birth date  {}", text(&p["birth_date"]));
    }
    let orders = arr(&v["orders"]);
    outln!();
    if orders.is_empty() {
        outln!("no orders");
    } else {
        let rows: Vec<Vec<String>> = orders
            .iter()
            .map(|o| {
                vec![
                    text(&o["id"]),
                    pool_name(&o["pool"]),
                    text(&o["priority"]),
                    text(&o["state"]),
                    text(&o["assigned"]),
                    time(&o["created_ms"]),
                ]
            })
            .collect();
        table(
            "",
            &["ORDER", "POOL", "PRIORITY", "STATE", "ASSIGNED", "CREATED"],
            &rows,
        );
    }
    let queue = arr(&v["queue"]);
    if !queue.is_empty() {
        outln!();
        let rows: Vec<Vec<String>> = queue
            .iter()
            .map(|e| {
                vec![
                    text(&e["order"]),
                    pool_name(&e["pool"]),
                    text(&e["state"]),
                    text(&e["position"]),
                    duration(&e["estimated_wait_s"]),
                    text(&e["called_to"]),
                    if e["results_ready"].as_bool() == Some(true) {
                        "yes".into()
                    } else {
                        "no".into()
                    },
                ]
            })
            .collect();
        table(
            "",
            &[
                "QUEUED ORDER",
                "POOL",
                "STATE",
                "POS",
                "EST.WAIT",
                "CALLED TO",
                "RESULTS",
            ],
            &rows,
        );
    }
}

fn print_order_summary(o: &Value) {
    let rows = [
        ("patient", text(&o["patient"])),
        ("pool", pool_name(&o["pool"])),
        ("priority", text(&o["priority"])),
        ("state", text(&o["state"])),
        ("assigned", text(&o["assigned"])),
        ("capabilities", text(&o["capabilities"])),
        ("reason", text(&o["reason"])),
        ("created", time(&o["created_ms"])),
        ("updated", time(&o["updated_ms"])),
    ];
    for (k, v) in rows {
        outln!("{k:<13}{v}");
    }
}

fn print_order_line(o: &Value) {
    let mut line = format!("{}: {}", text(&o["id"]), text(&o["state"]));
    if !o["assigned"].is_null() {
        line.push_str(&format!(" ({})", text(&o["assigned"])));
    }
    line.push_str(&format!(", priority {}", text(&o["priority"])));
    outln!("{line}");
}

fn print_order_details(v: &Value) {
    let o = &v["order"];
    outln!("{:<13}{}", "order", text(&o["id"]));
    print_order_summary(o);
    let transitions = arr(&v["transitions"]);
    if !transitions.is_empty() {
        outln!();
        let rows: Vec<Vec<String>> = transitions
            .iter()
            .map(|t| {
                vec![
                    time(&t["at_ms"]),
                    text(&t["from"]),
                    text(&t["to"]),
                    text(&t["actor"]),
                    text(&t["unit"]),
                ]
            })
            .collect();
        table("", &["AT", "FROM", "TO", "ACTOR", "UNIT"], &rows);
    }
    let r = &v["result"];
    outln!();
    if r.is_null() {
        outln!("result: none yet");
    } else {
        outln!(
            "result (reported {} by {}):",
            time(&r["at_ms"]),
            text(&r["actor"])
        );
        for line in text_of(&r["text"]).lines() {
            outln!("  {line}");
        }
    }
}

/// Active alarms, then the newest events.
fn print_alarms(v: &Value) {
    let active = arr(&v["active"]);
    if active.is_empty() {
        outln!("no active alarms");
    } else {
        print_alarm_rows(active);
    }
    let history = arr(&v["history"]);
    if !history.is_empty() {
        outln!();
        print_alarm_events(history);
    }
}

fn print_alarm_rows(alarms: &[Value]) {
    let rows: Vec<Vec<String>> = alarms
        .iter()
        .map(|a| {
            let by = a["acknowledged"]["by"]
                .as_str()
                .map(str::to_string)
                .or_else(|| {
                    a["shelved"]["until_ms"]
                        .as_i64()
                        .map(|_| format!("until {}", time(&a["shelved"]["until_ms"])))
                })
                .unwrap_or_default();
            vec![
                text(&a["priority"]).to_uppercase(),
                text(&a["state"]),
                text(&a["summary"]),
                time(&a["raised_ms"]),
                by,
                text(&a["id"]),
            ]
        })
        .collect();
    table(
        "",
        &["PRIORITY", "STATE", "ALARM", "RAISED", "BY / UNTIL", "ID"],
        &rows,
    );
}

fn print_alarm_events(events: &[Value]) {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                time(&e["at_ms"]),
                text(&e["kind"]),
                text(&e["priority"]),
                text(&e["actor"]),
                text(&e["note"]),
                text(&e["alarm"]),
            ]
        })
        .collect();
    table(
        "",
        &["AT", "EVENT", "PRIORITY", "BY", "NOTE", "ALARM"],
        &rows,
    );
}

fn print_alarm_record(v: &Value) {
    if v["active"].is_null() {
        outln!("cleared");
    } else {
        print_alarm_rows(std::slice::from_ref(&v["active"]));
    }
    outln!();
    print_alarm_events(arr(&v["events"]));
}

fn print_cluster(v: &Value) {
    outln!("instance  {}", text(&v["instance"]));
    outln!("leader    {}", text(&v["leader"]));
    outln!();
    let leader = v["leader"].as_str();
    let rows: Vec<Vec<String>> = arr(&v["members"])
        .iter()
        .map(|m| {
            let id = text(&m["id"]);
            vec![
                if Some(id.as_str()) == leader {
                    "*".into()
                } else {
                    String::new()
                },
                id,
                text(&m["url"]),
                time(&m["started_ms"]),
            ]
        })
        .collect();
    table("", &["", "MEMBER", "URL", "STARTED"], &rows);
}

/// A field of a tree node: at its top level (what the server sends) or under `stat`.
fn stat_field<'a>(node: &'a Value, snake: &str, camel: &str) -> &'a Value {
    [&node[snake], &node["stat"][snake], &node["stat"][camel]]
        .into_iter()
        .find(|v| !v.is_null())
        .unwrap_or(&Value::Null)
}

/// One node per line, indented; data (UTF-8, cut at 80 characters) after `=`. Children the
/// server listed by name only (`more`, beyond `--depth`) are printed as bare names.
fn print_tree(node: &Value, depth: usize) {
    let indent = "  ".repeat(depth);
    let Some(path) = node["path"].as_str() else {
        outln!("{indent}{}", text(node));
        return;
    };
    let name = if depth == 0 {
        path
    } else {
        path.rsplit('/').next().unwrap_or(path)
    };
    let mut line = format!("{indent}{name}");
    let data_length = stat_field(node, "data_length", "dataLength")
        .as_u64()
        .unwrap_or(0);
    match node["data"].as_str() {
        Some(data) if !data.is_empty() => {
            let one_line = data.replace('\n', " ");
            let cut: String = one_line.chars().take(80).collect();
            let ellipsis = if cut.len() < one_line.len() {
                "..."
            } else {
                ""
            };
            line.push_str(&format!("  = {cut}{ellipsis}"));
        }
        None if data_length > 0 => line.push_str(&format!("  = ({data_length} bytes, not UTF-8)")),
        _ => {}
    }
    let children = arr(&node["children"]);
    let more = arr(&node["more"]);
    let num_children = stat_field(node, "num_children", "numChildren")
        .as_u64()
        .unwrap_or(0);
    let listed = (children.len() + more.len()) as u64;
    if num_children > listed {
        line.push_str(&format!("  (+{} more)", num_children - listed));
    }
    outln!("{line}");
    for c in children {
        print_tree(c, depth + 1);
    }
    let inner = "  ".repeat(depth + 1);
    for m in more {
        outln!("{inner}{}", text(m));
    }
}

/// A token just issued: its text alone on stdout's first line, the rest on stderr.
fn print_issued(v: &Value) {
    outln!("{}", text(&v["token"]));
    let mut line = format!("id {}  role {}", text(&v["id"]), text(&v["role"]));
    if !v["patient"].is_null() {
        line.push_str(&format!("  patient {}", text(&v["patient"])));
    }
    if v["expires_ms"].is_null() {
        line.push_str("  does not expire");
    } else {
        line.push_str(&format!("  expires {}", time(&v["expires_ms"])));
    }
    eprintln!("{line}  (the token is shown only this once)");
}

fn print_tokens(v: &Value) {
    let rows: Vec<Vec<String>> = arr(v)
        .iter()
        .map(|t| {
            let state = if !t["revoked_ms"].is_null() {
                "revoked"
            } else if t["expired"].as_bool() == Some(true) {
                "expired"
            } else {
                "active"
            };
            vec![
                text(&t["id"]),
                text(&t["role"]),
                text(&t["patient"]),
                text(&t["label"]),
                time(&t["created_ms"]),
                if t["expires_ms"].is_null() {
                    "never".to_string()
                } else {
                    time(&t["expires_ms"])
                },
                state.to_string(),
                time(&t["revoked_ms"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        outln!("no tokens");
        return;
    }
    table(
        "",
        &[
            "ID", "ROLE", "PATIENT", "LABEL", "CREATED", "EXPIRES", "STATE", "REVOKED",
        ],
        &rows,
    );
}

fn print_audit(v: &Value) {
    let rows: Vec<Vec<String>> = arr(v)
        .iter()
        .map(|r| {
            vec![
                text(&r["seq"]),
                time(&r["at_ms"]),
                text(&r["actor"]),
                text(&r["role"]),
                text(&r["action"]),
                text(&r["patient"]),
                text(&r["order"]),
                text(&r["outcome"]),
                text(&r["detail"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        outln!("no audit records");
        return;
    }
    table(
        "",
        &[
            "SEQ", "AT", "ACTOR", "ROLE", "ACTION", "PATIENT", "ORDER", "OUTCOME", "DETAIL",
        ],
        &rows,
    );
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn times_are_utc_seconds_and_odd_values_print_as_they_are() {
        assert_eq!(time(&json!(0)), "1970-01-01 00:00:00");
        assert_eq!(time(&json!(1_700_000_000_999_i64)), "2023-11-14 22:13:20");
        assert_eq!(time(&json!(-1)), "1969-12-31 23:59:59");
        assert_eq!(time(&json!(951_782_400_000_i64)), "2000-02-29 00:00:00");
        assert_eq!(time(&json!(i64::MAX)), i64::MAX.to_string());
        assert_eq!(time(&Value::Null), "-");
    }

    #[test]
    fn durations_keep_the_two_largest_units() {
        assert_eq!(duration(&json!(42)), "42s");
        assert_eq!(duration(&json!(185)), "3m05s");
        assert_eq!(duration(&json!(7_620)), "2h07m");
        assert_eq!(duration(&Value::Null), "-");
    }

    #[test]
    fn segments_and_query_values_are_percent_encoded() {
        assert_eq!(seg("equipment:MRI-1"), "equipment:MRI-1");
        assert_eq!(seg("a b/c%ü"), "a%20b%2Fc%25%C3%BC");
        assert_eq!(
            with_query(
                "/api/tree",
                &[("path", "/medical/units x".into()), ("depth", "2".into())]
            ),
            "/api/tree?path=/medical/units%20x&depth=2"
        );
        assert_eq!(with_query("/api/audit", &[]), "/api/audit");
    }

    #[test]
    fn tables_align_left_two_spaces_apart_without_trailing_blanks() {
        let rows = vec![
            vec![
                "MRI-1".to_string(),
                "available".to_string(),
                "-".to_string(),
            ],
            vec![
                "MRI-22".to_string(),
                "in-use".to_string(),
                "o-1".to_string(),
            ],
        ];
        assert_eq!(
            table_lines("  ", &["UNIT", "STATUS", "ORDER"], &rows),
            [
                "  UNIT    STATUS     ORDER",
                "  MRI-1   available  -",
                "  MRI-22  in-use     o-1",
            ]
        );
        let empty_last = vec![vec!["*".to_string(), String::new()]];
        assert_eq!(
            table_lines("", &["", "MEMBER"], &empty_last),
            ["   MEMBER", "*"]
        );
    }
}
