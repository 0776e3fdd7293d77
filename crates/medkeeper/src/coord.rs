//! `medkeeper coord`: zkCli-like commands against any backend.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use medkeeper_coord::{
    Acl, CreateMode, CreateOptions, DefaultAcl, Error, Id, Perms, Session, SessionExt, Stat,
    digest_of_credentials, path,
};
use medkeeper_embedded::{Engine, EngineConfig, SessionOptions, SyncStats};

/// Where to connect and with which credentials.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// `embedded:DIR` (the embedded engine's data directory) or
    /// `zk:HOST:PORT[,HOST:PORT...][/chroot]` (`zk+tls:` for TLS).
    #[arg(
        long,
        env = "MEDKEEPER_CONNECT",
        default_value = "embedded:./medkeeper-data/coord"
    )]
    pub connect: String,
    /// Credentials added to the session, `digest:user:password`; every node created then
    /// carries an ACL for this identity alone. On the command line they are visible to every
    /// user of the machine (`ps`): prefer `MEDKEEPER_AUTH`, or a file named by `--auth-file`
    /// (`coord`) or `MEDKEEPER_AUTH_FILE` (every command; docs/security.md).
    #[arg(long, env = "MEDKEEPER_AUTH", hide_env_values = true)]
    pub auth: Option<String>,
    /// CA certificate (PEM) for `zk+tls:` (`--tls-ca` is an old name for it).
    #[arg(long, alias = "tls-ca", env = "MEDKEEPER_ZK_TLS_CA")]
    pub zk_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS to ZooKeeper (old name `--tls-cert`).
    #[arg(
        long,
        alias = "tls-cert",
        env = "MEDKEEPER_ZK_TLS_CERT",
        requires = "zk_tls_key"
    )]
    pub zk_tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS to ZooKeeper (old name `--tls-key`).
    #[arg(
        long,
        alias = "tls-key",
        env = "MEDKEEPER_ZK_TLS_KEY",
        requires = "zk_tls_cert"
    )]
    pub zk_tls_key: Option<PathBuf>,
    /// Session timeout in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    pub session_timeout_ms: u64,
    /// Create a ZooKeeper chroot that does not exist yet (`serve` does; the zkCli-like
    /// commands do not write unasked).
    #[arg(skip)]
    pub create_chroot: bool,
    /// Where an embedded engine records its fsync histograms: `serve` gives every engine it
    /// opens (one per session) the same, for `/metrics`. Unset: each engine its own.
    #[arg(skip)]
    pub sync_stats: Option<Arc<SyncStats>>,
}

/// `medkeeper coord` arguments.
#[derive(Args, Debug)]
pub struct CoordArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// A file holding the credentials, `digest:user:password` (one line; not readable by
    /// others: `chmod 600 FILE`). The way to give them: unlike `--auth`, they never appear in
    /// the process list.
    #[arg(long, env = AUTH_FILE_ENV, conflicts_with = "auth")]
    auth_file: Option<PathBuf>,
    #[command(subcommand)]
    command: CoordCommand,
}

#[derive(Subcommand, Debug)]
enum CoordCommand {
    /// Create a node; prints the created path.
    Create {
        /// Ephemeral (deleted when this command's session ends).
        #[arg(long, short = 'e')]
        ephemeral: bool,
        /// Append the parent's 10-digit sequence number.
        #[arg(long, short = 's')]
        sequential: bool,
        /// A container node (deleted by the server once its last child is gone).
        #[arg(long, short = 'c', conflicts_with_all = ["ephemeral", "sequential", "ttl"])]
        container: bool,
        /// A TTL node, deleted once empty and unmodified for this many milliseconds.
        #[arg(long, short = 't', conflicts_with = "ephemeral")]
        ttl: Option<u64>,
        /// Create missing parents (as persistent nodes).
        #[arg(long, short = 'p')]
        parents: bool,
        /// The path.
        path: String,
        /// The data (UTF-8).
        data: Option<String>,
    },
    /// Print a node's data.
    Get {
        /// The path.
        path: String,
    },
    /// Set a node's data.
    Set {
        /// Expected version (-1: any).
        #[arg(long, short = 'v', default_value_t = -1, allow_negative_numbers = true)]
        version: i32,
        /// The path.
        path: String,
        /// The data (UTF-8).
        data: String,
    },
    /// Delete a node.
    Delete {
        /// Expected version (-1: any).
        #[arg(long, short = 'v', default_value_t = -1, allow_negative_numbers = true)]
        version: i32,
        /// Delete the node and everything below it.
        #[arg(long, short = 'r', conflicts_with = "version")]
        recursive: bool,
        /// The path.
        path: String,
    },
    /// List a node's children.
    Ls {
        /// The path.
        path: String,
    },
    /// Print a node's ACL (zkCli's `getAcl`).
    Getacl {
        /// The path.
        path: String,
    },
    /// Print a node's stat.
    Stat {
        /// As JSON.
        #[arg(long)]
        json: bool,
        /// The path.
        path: String,
    },
    /// Print the tree below a node.
    Tree {
        /// The path.
        #[arg(default_value = "/")]
        path: String,
    },
}

/// An open session and what keeps it alive.
pub struct Connection {
    /// The session.
    pub session: Arc<dyn Session>,
    engine: Option<Engine>,
}

/// If `args` name an embedded engine whose data directory another live process holds now:
/// the directory and that process's pid (`"unknown"` if its lock file names none). An engine
/// of this process that is still closing (a session expired; the next one opens the engine
/// again) is not another process: that is retried, this is refused.
pub fn held_by_another_process(args: &ConnectArgs) -> Option<(String, String)> {
    let dir = args.connect.strip_prefix("embedded:")?;
    let pid = Engine::holder(std::path::Path::new(dir))?;
    (pid != std::process::id().to_string()).then(|| (dir.to_string(), pid))
}

impl Connection {
    /// True if this process alone writes the coordination data: an embedded engine holds its
    /// data directory's lock, so after the previous session's engine is closed nothing else
    /// can be between two writes of an operation (a repair need not wait for one to finish).
    pub fn sole_writer(&self) -> bool {
        self.engine.is_some()
    }

    /// Closes the session (its ephemerals go at once) and stops an embedded engine.
    pub async fn close(self) {
        self.session.close().await;
        drop(self.session);
        if let Some(engine) = self.engine {
            engine.shutdown();
        }
    }
}

/// The environment variable naming a credentials file, read by every command that connects
/// when no `--auth` (or `MEDKEEPER_AUTH`) is given.
pub const AUTH_FILE_ENV: &str = "MEDKEEPER_AUTH_FILE";

/// Reads credentials (`digest:user:password`, surrounding white space ignored) from `path`,
/// refusing a file others may read or anyone but its owner may write (`chmod 600`).
pub fn read_auth_file(path: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the credentials file {}", path.display()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o027 != 0 {
        bail!(
            "the credentials file {} has mode {mode:03o}: others may read or change it; \
             run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the credentials file {}", path.display()))?;
    let text = text.trim();
    if text.is_empty() {
        bail!("the credentials file {} is empty", path.display());
    }
    Ok(text.to_string())
}

/// The session's credentials (`user:password`): `--auth` / `MEDKEEPER_AUTH`, else the file
/// `MEDKEEPER_AUTH_FILE` names.
fn credentials(args: &ConnectArgs) -> anyhow::Result<Option<String>> {
    let given = match &args.auth {
        Some(a) => a.clone(),
        None => match std::env::var_os(AUTH_FILE_ENV).filter(|p| !p.is_empty()) {
            Some(p) => read_auth_file(Path::new(&p))?,
            None => return Ok(None),
        },
    };
    match given.split_once(':') {
        Some(("digest", cred)) if cred.split_once(':').is_some_and(|(u, _)| !u.is_empty()) => {
            Ok(Some(cred.to_string()))
        }
        // Never echo the value: it may be a password given in the wrong shape.
        _ => bail!("the ZooKeeper credentials must be digest:user:password"),
    }
}

/// Opens a session as `args` say.
///
/// With credentials, every node the session creates without an ACL of its own (all of
/// medkeeper's) gets an ACL for that digest identity alone ([`DefaultAcl`]), on either backend,
/// and so does a ZooKeeper chroot created here: another tenant of the ensemble can neither
/// read nor change the tree.
pub async fn connect(args: &ConnectArgs) -> anyhow::Result<Connection> {
    let timeout = Duration::from_millis(args.session_timeout_ms);
    let auth = credentials(args)?;
    // The identity's ACL, for every node created without one.
    let owned = |session: Arc<dyn Session>| -> Arc<dyn Session> {
        match &auth {
            Some(cred) => DefaultAcl::wrap(
                session,
                vec![Acl::new(
                    Perms::ALL,
                    Id::new("digest", digest_of_credentials(cred)),
                )],
            ),
            None => session,
        }
    };
    if let Some(dir) = args.connect.strip_prefix("embedded:") {
        if dir.is_empty() {
            bail!("--connect embedded: needs a directory, e.g. embedded:./data/coord");
        }
        let mut config = EngineConfig::new(dir);
        config.sync_stats = args.sync_stats.clone();
        let engine = Engine::open(config)
            .with_context(|| format!("cannot open the embedded engine at {dir}"))?;
        let session = engine.connect(SessionOptions { timeout }).await;
        if let Some(cred) = &auth {
            session.add_auth("digest", cred.as_bytes()).await?;
        }
        return Ok(Connection {
            session: owned(Arc::new(session)),
            engine: Some(engine),
        });
    }
    if args.connect.starts_with("zk:") || args.connect.starts_with("zk+tls:") {
        let mut options =
            medkeeper_zk::ConnectOptions::new(&args.connect)?.with_session_timeout(timeout);
        if let Some(cred) = &auth {
            options = options.with_digest(cred)?;
        }
        if let Some(ca) = &args.zk_tls_ca {
            let mut tls = medkeeper_zk::TlsConfig::new(ca);
            if let (Some(cert), Some(key)) = (&args.zk_tls_cert, &args.zk_tls_key) {
                tls = tls.with_identity(cert, key);
            }
            options = options.with_tls(tls);
        } else if args.connect.starts_with("zk+tls:") {
            bail!("zk+tls: needs --zk-tls-ca");
        }
        let session = medkeeper_zk::connect(options.clone())
            .await
            .with_context(|| format!("cannot connect to {}", args.connect))?;
        if args.create_chroot
            && let Some(chroot) = &options.connect.chroot
        {
            // Cheap when it exists: one read through the session itself.
            let missing = match session.exists("/").await {
                Ok(stat) => stat.is_none(),
                Err(e) => {
                    session.close().await;
                    return Err(e).with_context(|| format!("cannot read the chroot {chroot}"));
                }
            };
            if missing {
                match medkeeper_zk::ensure_chroot(&options).await {
                    Ok(true) => tracing::info!("created the ZooKeeper chroot {chroot}"),
                    Ok(false) => {}
                    Err(e) => {
                        session.close().await;
                        return Err(e).with_context(|| {
                            format!(
                                "the chroot {chroot} does not exist and cannot be created; \
                                 create it (`medkeeper coord --connect zk:SERVERS create -p \
                                 {chroot}`) or give --auth credentials that may"
                            )
                        });
                    }
                }
            }
        }
        return Ok(Connection {
            session: owned(Arc::new(session)),
            engine: None,
        });
    }
    bail!(
        "unknown --connect {:?}: expected embedded:DIR or zk:HOST:PORT[,HOST:PORT...][/chroot]",
        args.connect
    )
}

/// Runs a `medkeeper coord` command.
pub async fn run(mut args: CoordArgs) -> anyhow::Result<ExitCode> {
    if let Some(file) = &args.auth_file {
        args.connect.auth = Some(read_auth_file(file)?);
    }
    // Only `create` makes an embedded engine where there is none: the other commands look at
    // a tree, and at a mistyped path would make one and answer with an empty tree, as if the
    // hospital were gone.
    if let Some(dir) = args.connect.connect.strip_prefix("embedded:")
        && !dir.is_empty()
        && !matches!(args.command, CoordCommand::Create { .. })
        && !std::path::Path::new(dir).exists()
    {
        bail!(
            "no embedded engine at {dir}: the directory does not exist (`medkeeper serve \
             --data DIR` makes DIR/coord, `medkeeper coord create` an engine of its own)"
        );
    }
    let conn = connect(&args.connect).await?;
    let result = command(&*conn.session, args.command).await;
    conn.close().await;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(CommandError::Coord(e, p)) => {
            eprintln!("{}: {p}: {e}", e.kind_name());
            Ok(ExitCode::from(2))
        }
        Err(CommandError::Other(e)) => Err(e),
    }
}

enum CommandError {
    /// A coordination error on a path: printed as `Kind: path: message`, exit status 2.
    Coord(Error, String),
    Other(anyhow::Error),
}

fn on(p: &str) -> impl FnOnce(Error) -> CommandError + '_ {
    move |e| CommandError::Coord(e, p.to_string())
}

async fn command(s: &dyn Session, cmd: CoordCommand) -> Result<(), CommandError> {
    match cmd {
        CoordCommand::Create {
            ephemeral,
            sequential,
            container,
            ttl,
            parents,
            path: p,
            data,
        } => {
            let mode = match (ephemeral, sequential, container, ttl.is_some()) {
                (_, _, true, _) => CreateMode::Container,
                (true, false, _, _) => CreateMode::Ephemeral,
                (true, true, _, _) => CreateMode::EphemeralSequential,
                (false, false, _, true) => CreateMode::PersistentWithTtl,
                (false, true, _, true) => CreateMode::PersistentSequentialWithTtl,
                (false, false, _, false) => CreateMode::Persistent,
                (false, true, _, false) => CreateMode::PersistentSequential,
            };
            let mut options = CreateOptions::new(mode);
            if let Some(ms) = ttl {
                options = options.with_ttl(Duration::from_millis(ms));
            }
            let data = data.unwrap_or_default();
            if parents && let Some(parent) = path::parent(&p) {
                s.ensure_path(parent).await.map_err(on(parent))?;
            }
            let (created, _) = s
                .create(&p, data.as_bytes(), &options)
                .await
                .map_err(on(&p))?;
            println!("{created}");
        }
        CoordCommand::Get { path: p } => {
            let (data, _) = s.get_data(&p).await.map_err(on(&p))?;
            use std::io::Write;
            let mut out = std::io::stdout();
            out.write_all(&data)
                .and_then(|_| {
                    if data.ends_with(b"\n") {
                        Ok(())
                    } else {
                        out.write_all(b"\n")
                    }
                })
                .map_err(|e| CommandError::Other(e.into()))?;
        }
        CoordCommand::Set {
            version,
            path: p,
            data,
        } => {
            s.set_data(&p, data.as_bytes(), version)
                .await
                .map_err(on(&p))?;
        }
        CoordCommand::Delete {
            version,
            recursive,
            path: p,
        } => {
            if recursive {
                s.delete_recursive(&p).await.map_err(on(&p))?;
            } else {
                s.delete(&p, version).await.map_err(on(&p))?;
            }
        }
        CoordCommand::Ls { path: p } => {
            let mut children = s.get_children(&p).await.map_err(on(&p))?;
            children.sort();
            println!("[{}]", children.join(", "));
        }
        CoordCommand::Getacl { path: p } => {
            let (acl, _) = s.get_acl(&p).await.map_err(on(&p))?;
            for a in acl {
                println!("{a}");
            }
        }
        CoordCommand::Stat { json, path: p } => {
            let st = s
                .exists(&p)
                .await
                .map_err(on(&p))?
                .ok_or_else(|| on(&p)(Error::NoNode))?;
            if json {
                println!("{}", stat_json(&st));
            } else {
                print!("{}", stat_text(&st));
            }
        }
        CoordCommand::Tree { path: p } => {
            path::validate_path(&p, false).map_err(on(&p))?;
            let mut stack = vec![(p.clone(), 0usize)];
            while let Some((node, depth)) = stack.pop() {
                let name = if depth == 0 {
                    node.clone()
                } else {
                    path::name(&node).to_string()
                };
                println!("{}{}", "  ".repeat(depth), name);
                let mut children = match s.get_children(&node).await {
                    Ok(c) => c,
                    Err(Error::NoNode) if depth > 0 => continue, // deleted meanwhile
                    Err(e) => return Err(on(&node)(e)),
                };
                children.sort();
                for c in children.into_iter().rev() {
                    stack.push((path::join(&node, &c), depth + 1));
                }
            }
        }
    }
    Ok(())
}

/// A stat as JSON, with ZooKeeper's field names.
pub fn stat_json(st: &Stat) -> serde_json::Value {
    serde_json::json!({
        "czxid": st.czxid,
        "mzxid": st.mzxid,
        "pzxid": st.pzxid,
        "ctime": st.ctime,
        "mtime": st.mtime,
        "version": st.version,
        "cversion": st.cversion,
        "aversion": st.aversion,
        "ephemeralOwner": st.ephemeral_owner,
        "dataLength": st.data_length,
        "numChildren": st.num_children,
    })
}

/// A stat as zkCli prints it.
pub fn stat_text(st: &Stat) -> String {
    format!(
        "cZxid = {:#x}\nctime = {}\nmZxid = {:#x}\nmtime = {}\npZxid = {:#x}\ncversion = {}\ndataVersion = {}\naclVersion = {}\nephemeralOwner = {:#x}\ndataLength = {}\nnumChildren = {}\n",
        st.czxid,
        st.ctime,
        st.mzxid,
        st.mtime,
        st.pzxid,
        st.cversion,
        st.version,
        st.aversion,
        st.ephemeral_owner,
        st.data_length,
        st.num_children
    )
}
