//! Leader election among dispatcher instances: campaign, lead until leadership is lost or a
//! few seconds pass, resign. Run several against one ZooKeeper to watch leadership move.
//!
//! ```sh
//! cargo run -p medkeeper-recipes --example election -- zk:127.0.0.1:2181 instance-1
//! cargo run -p medkeeper-recipes --example election -- embedded:/tmp/medkeeper-example
//! ```

#[path = "common/connect.rs"]
mod common;

use std::time::Duration;

use medkeeper_recipes::Election;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conn = common::connect(&common::target_from_args()).await?;
    let id = std::env::args()
        .nth(2)
        .unwrap_or_else(|| format!("instance-{}", std::process::id()));
    let election = Election::new(conn.session.clone(), "/medical/leader", id.clone())?;
    if let Some(current) = election.leader().await? {
        println!("current leader: {}", current.id);
    }
    let leadership = election.campaign().await?;
    println!(
        "{id} leads (fencing token {}); others see it at /medical/leader",
        leadership.fencing_token()
    );
    tokio::select! {
        reason = leadership.lost() => println!("leadership lost: {reason}"),
        _ = tokio::time::sleep(Duration::from_secs(3)) => {
            leadership.resign().await?;
            println!("{id} resigned");
        }
    }
    conn.session.close().await;
    Ok(())
}
