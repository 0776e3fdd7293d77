//! The MRI queue: orders enqueued by FHIR priority (stat, asap, urgent, routine), taken in
//! effective-priority order, each completed only after it was processed — a consumer that
//! crashes mid-way gives its item back.
//!
//! ```sh
//! cargo run -p medkeeper-recipes --example queue -- embedded:/tmp/medkeeper-example
//! cargo run -p medkeeper-recipes --example queue -- zk:127.0.0.1:2181
//! ```

#[path = "common/connect.rs"]
mod common;

use std::time::Duration;

use medkeeper_recipes::PriorityQueue;
use medkeeper_recipes::queue::{ASAP, QueueConfig, ROUTINE, STAT, URGENT};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let conn = common::connect(&common::target_from_args()).await?;
    // Waiting targets per class (stat 10 min, asap 30 min, urgent 60 min, routine a day).
    let queue = PriorityQueue::new(
        conn.session.clone(),
        "/medical/resources/equipment/MRI/queue",
        QueueConfig::fhir(),
    )?;
    // Opaque order ids only: no patient data in the coordination tree.
    for (class, order) in [
        (ROUTINE, "order-1001"),
        (URGENT, "order-1002"),
        (STAT, "order-1003"),
        (ASAP, "order-1004"),
        (ROUTINE, "order-1005"),
    ] {
        let id = queue.enqueue(class, order.as_bytes()).await?;
        println!("enqueued {order} as {}", id.as_str());
    }
    for item in queue.list().await? {
        println!(
            "  waiting: class {} (effective {}), seq {}",
            item.class, item.effective_class, item.sequence
        );
    }
    while let Some(claim) = queue.try_take().await? {
        println!(
            "taking {} (class {})",
            String::from_utf8_lossy(claim.data()),
            claim.item().class
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // the exam is scheduled here
        claim.complete().await?;
    }
    conn.session.close().await;
    Ok(())
}
