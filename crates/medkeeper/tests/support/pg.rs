//! A fresh PostgreSQL database per test, on the server `MEDKEEPER_PG_URL` names (the URL of a
//! role that may create databases: `scripts/postgres start DIR` prints one; `scripts/test`
//! and `scripts/test-zk` set it). Dropped (with any connection still open) when the value is.

use std::time::{SystemTime, UNIX_EPOCH};

use medkeeper_hospital::store::{PostgresOptions, PostgresStore};

/// A database of the test's own.
pub struct Database {
    /// Its URL: `MEDKEEPER_PG_URL` with the database name replaced.
    pub url: String,
    admin: String,
    name: String,
}

/// `MEDKEEPER_PG_URL`, if set and not empty.
pub fn admin_url() -> Option<String> {
    std::env::var("MEDKEEPER_PG_URL")
        .ok()
        .filter(|s| !s.is_empty())
}

impl Database {
    /// Creates one, named after the test, the process and the time; `None` (and a skip line)
    /// without `MEDKEEPER_PG_URL`.
    pub async fn create(test: &str) -> Option<Database> {
        let Some(admin) = admin_url() else {
            println!(
                "SKIP {test}: MEDKEEPER_PG_URL is not set (scripts/postgres start DIR prints one)"
            );
            return None;
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!(
            "mk_{}_{}_{nanos:x}",
            &test[..test.len().min(20)],
            std::process::id()
        );
        let c = PostgresStore::connect_one(&admin, &PostgresOptions::default())
            .await
            .unwrap_or_else(|e| panic!("MEDKEEPER_PG_URL: {e}"));
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let (head, query) = match admin.split_once('?') {
            Some((h, q)) => (h, format!("?{q}")),
            None => (admin.as_str(), String::new()),
        };
        let (server, _) = head
            .rsplit_once('/')
            .filter(|(s, _)| s.contains("://") && !s.ends_with('/'))
            .unwrap_or_else(|| panic!("MEDKEEPER_PG_URL {admin}: expected postgres://…/DB"));
        Some(Database {
            url: format!("{server}/{name}{query}"),
            admin,
            name,
        })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Its own runtime on its own thread: this may run inside a test's runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let c = PostgresStore::connect_one(&admin, &PostgresOptions::default()).await?;
                c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| medkeeper_hospital::store::StoreError::Backend(e.to_string()))
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "could not drop the test database {}: {dropped:?}",
                self.name
            );
        }
    }
}
