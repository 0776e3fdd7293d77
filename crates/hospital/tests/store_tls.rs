//! TLS to PostgreSQL (issue 17): libpq's `sslmode` semantics against a real server with TLS
//! on, the one `MEDKEEPER_PG_TLS_URL` names — `scripts/postgres start DIR --tls` prints it
//! (`...?sslmode=verify-full&sslrootcert=DIR/tls/ca.crt`) and `scripts/test` sets it; unset,
//! each test prints a skip line and passes. That server takes TLS only on TCP (`hostssl`),
//! and its DIR/tls holds, beside the CA, a client certificate for the role `mk_cert`; role
//! `mk_scram` logs in with SCRAM (scripts/postgres).
//!
//! The clinical store conformance suite also runs whole over this server
//! (`store_conformance::postgres_tls::*`).

use std::path::PathBuf;

use medkeeper_hospital::store::{ClinicalStore, PostgresOptions, PostgresStore, StoreError};

/// The server of `MEDKEEPER_PG_TLS_URL`: its port and its directory of certificates.
struct TlsServer {
    port: u16,
    tls_dir: PathBuf,
}

impl TlsServer {
    fn from_env(test: &str) -> Option<TlsServer> {
        let Some(url) = std::env::var("MEDKEEPER_PG_TLS_URL")
            .ok()
            .filter(|s| !s.is_empty())
        else {
            println!(
                "SKIP {test}: MEDKEEPER_PG_TLS_URL is not set (scripts/postgres start DIR --tls \
                 prints one)"
            );
            return None;
        };
        let port = url
            .split_once("@127.0.0.1:")
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("MEDKEEPER_PG_TLS_URL {url}: expected …@127.0.0.1:PORT/…"));
        let root = url
            .split_once("sslrootcert=")
            .map(|(_, rest)| rest.split('&').next().unwrap())
            .unwrap_or_else(|| panic!("MEDKEEPER_PG_TLS_URL {url}: no sslrootcert"));
        let tls_dir = PathBuf::from(root).parent().unwrap().to_path_buf();
        Some(TlsServer { port, tls_dir })
    }

    fn file(&self, name: &str) -> String {
        self.tls_dir.join(name).to_str().unwrap().to_string()
    }

    /// `postgres://USER@HOST:PORT/medkeeper?QUERY` (HOST resolved to 127.0.0.1 by `hostaddr`,
    /// so a name the certificate does not hold can be tried).
    fn url(&self, user: &str, host: &str, query: &str) -> String {
        format!(
            "postgres://{user}@{host}:{}/medkeeper?hostaddr=127.0.0.1&{query}",
            self.port
        )
    }

    fn verify_full(&self) -> String {
        self.url(
            "medkeeper",
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={}", self.file("ca.crt")),
        )
    }
}

async fn one(url: &str) -> Result<tokio_postgres::Client, StoreError> {
    PostgresStore::connect_one(url, &PostgresOptions::default()).await
}

/// Whether the connection is encrypted, as PostgreSQL sees it.
async fn ssl(c: &tokio_postgres::Client) -> bool {
    c.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

fn message(r: Result<tokio_postgres::Client, StoreError>) -> String {
    match r {
        Ok(_) => panic!("connected, but should have been refused"),
        Err(e) => e.to_string(),
    }
}

/// A CA of its own, which signed nothing the server has.
fn other_ca(dir: &std::path::Path) -> String {
    let crt = dir.join("other-ca.crt");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=some other CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-keyout",
        ])
        .arg(dir.join("other-ca.key"))
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("the openssl command");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    crt.to_str().unwrap().to_string()
}

#[tokio::test]
async fn verify_full_with_the_right_ca_connects_encrypted() {
    let Some(s) = TlsServer::from_env("verify_full_with_the_right_ca_connects_encrypted") else {
        return;
    };
    let c = one(&s.verify_full()).await.unwrap();
    assert!(ssl(&c).await);
    // The store itself, schema migrated, every pooled connection made the same way.
    let store = PostgresStore::connect(&s.verify_full(), PostgresOptions::default())
        .await
        .unwrap();
    assert!(store.uses_tls().await.unwrap());
    let id = "p-tls-check".parse().unwrap();
    store.patient(&id).await.unwrap();
    // By IP address too: the certificate names 127.0.0.1.
    let by_ip = s.url(
        "medkeeper",
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={}", s.file("ca.crt")),
    );
    assert!(ssl(&one(&by_ip).await.unwrap()).await);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused() {
    let Some(s) = TlsServer::from_env("a_certificate_from_another_ca_is_refused") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let other = other_ca(dir.path());
    for mode in ["verify-full", "verify-ca", "require"] {
        // `require` with a root certificate checks the chain, as libpq does.
        let url = s.url(
            "medkeeper",
            "localhost",
            &format!("sslmode={mode}&sslrootcert={other}"),
        );
        let m = message(one(&url).await);
        assert!(
            m.contains("not signed by the CA in sslrootcert") && m.contains(&other),
            "{mode}: {m}"
        );
        assert!(m.contains(&format!("sslmode={mode}")), "{m}");
    }
}

#[tokio::test]
async fn a_host_name_the_certificate_does_not_hold_is_refused_under_verify_full_only() {
    let Some(s) = TlsServer::from_env("a_host_name_the_certificate_does_not_hold_is_refused")
    else {
        return;
    };
    let ca = s.file("ca.crt");
    let wrong = s.url(
        "medkeeper",
        "db.wrong.invalid",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let m = message(one(&wrong).await);
    assert!(
        m.contains("not valid for the host name `db.wrong.invalid`"),
        "{m}"
    );
    // verify-ca checks the chain, not the name (libpq).
    let ca_only = s.url(
        "medkeeper",
        "db.wrong.invalid",
        &format!("sslmode=verify-ca&sslrootcert={ca}"),
    );
    assert!(ssl(&one(&ca_only).await.unwrap()).await);
}

#[tokio::test]
async fn sslmode_disable_is_refused_by_a_tls_only_server() {
    let Some(s) = TlsServer::from_env("sslmode_disable_is_refused_by_a_tls_only_server") else {
        return;
    };
    let m = message(one(&s.url("medkeeper", "localhost", "sslmode=disable")).await);
    assert!(
        m.contains("no pg_hba.conf entry") && m.contains("no encryption"),
        "{m}"
    );
    assert!(m.contains("sslmode=disable"), "{m}");
}

/// libpq's `require` without a root certificate: encrypted, nothing about the server checked
/// (here a name it does not hold); `prefer` takes TLS when the server offers it.
#[tokio::test]
async fn require_and_prefer_encrypt_without_checking_the_server() {
    let Some(s) = TlsServer::from_env("require_and_prefer_encrypt_without_checking_the_server")
    else {
        return;
    };
    if std::env::var_os("HOME").is_some_and(|h| {
        std::path::Path::new(&h)
            .join(".postgresql/root.crt")
            .exists()
    }) {
        println!("SKIP: ~/.postgresql/root.crt exists (libpq's default root certificate)");
        return;
    }
    for mode in ["require", "prefer"] {
        let url = s.url("medkeeper", "db.wrong.invalid", &format!("sslmode={mode}"));
        assert!(ssl(&one(&url).await.unwrap()).await, "{mode}");
    }
    // The default is prefer.
    let url = s.url("medkeeper", "localhost", "application_name=x");
    assert!(ssl(&one(&url).await.unwrap()).await);
}

#[tokio::test]
async fn a_client_certificate_logs_in_where_the_server_asks_for_one() {
    let Some(s) = TlsServer::from_env("a_client_certificate_logs_in") else {
        return;
    };
    let base = format!("sslmode=verify-full&sslrootcert={}", s.file("ca.crt"));
    let with_cert = s.url(
        "mk_cert",
        "localhost",
        &format!(
            "{base}&sslcert={}&sslkey={}",
            s.file("client.crt"),
            s.file("client.key")
        ),
    );
    let c = one(&with_cert).await.unwrap();
    let user: String = c
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(user, "mk_cert");
    let m = message(one(&s.url("mk_cert", "localhost", &base)).await);
    assert!(m.contains("certificate"), "{m}");
}

/// SCRAM over TLS binds the exchange to the server's certificate (SCRAM-SHA-256-PLUS,
/// `tls-server-end-point`): `channel_binding=require` refuses to log in without it.
#[tokio::test]
async fn scram_over_tls_uses_channel_binding() {
    let Some(s) = TlsServer::from_env("scram_over_tls_uses_channel_binding") else {
        return;
    };
    let url = s.url(
        "mk_scram",
        "localhost",
        &format!(
            "sslmode=verify-full&sslrootcert={}&channel_binding=require",
            s.file("ca.crt")
        ),
    );
    let options = PostgresOptions {
        password: Some("mk-scram-test".into()),
        ..PostgresOptions::default()
    };
    let c = PostgresStore::connect_one(&url, &options).await.unwrap();
    assert!(ssl(&c).await);
    let wrong = PostgresOptions {
        password: Some("not-the-password".into()),
        ..PostgresOptions::default()
    };
    let m = message(PostgresStore::connect_one(&url, &wrong).await);
    assert!(m.contains("password authentication failed"), "{m}");
}
