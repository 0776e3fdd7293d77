//! The MRI lock of seed §4.3: take it, show the fencing token, make a fenced write, release.
//!
//! ```sh
//! cargo run -p medkeeper-recipes --example lock -- embedded:/tmp/medkeeper-example
//! # Several at once against ZooKeeper: they take turns, tokens increase.
//! cargo run -p medkeeper-recipes --example lock -- zk:127.0.0.1:2181
//! ```

#[path = "common/connect.rs"]
mod common;

use std::time::Duration;

use medkeeper_coord::{Op, SessionExt};
use medkeeper_recipes::Mutex;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conn = common::connect(&common::target_from_args()).await?;
    let session = conn.session.clone();
    let unit = "/medical/resources/equipment/MRI/MRI-1";
    session.ensure_path(unit).await?;

    let lock = Mutex::new(session.clone(), "/medical/resources/equipment/MRI/lock")?;
    println!("waiting for the MRI lock ...");
    let guard = lock.acquire_timeout(Duration::from_secs(30)).await?;
    println!(
        "holding {} (fencing token {})",
        guard.path(),
        guard.fencing_token()
    );

    // A coordination write that only lands while the lock is still held.
    let note = format!("maintenance by token {}", guard.fencing_token());
    guard
        .write(&[Op::set_data(unit, note.into_bytes(), -1)])
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    guard.release().await?;
    println!("released");
    session.close().await;
    Ok(())
}
