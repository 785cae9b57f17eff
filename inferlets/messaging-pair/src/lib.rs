//! A pair of processes talking through `pie:core/messaging`, scoped to their tenant:
//!
//! - the consumer subscribes to the topic `<topic>.news`, then pushes `ready` onto the queue
//!   `<topic>.ready` (so the producer knows the subscription exists: broadcasts reach only
//!   current subscribers);
//! - the producer pulls that `ready`, broadcasts `hello from the producer` on `<topic>.news`,
//!   then pushes `count` jobs onto the queue `<topic>.jobs` and ends;
//! - the consumer reads the broadcast, pulls the jobs, and returns what it got.
//!
//! `pie-ctl launch -d messaging-pair.wasm -- --role consumer`
//! `pie-ctl launch messaging-pair.wasm -- --role producer --count 3`

use inferlet::{FutureStringExt, Result, SubscriptionExt, messaging};
use serde::Deserialize;

#[derive(Deserialize)]
struct Input {
    role: String,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    count: Option<u32>,
}

async fn pull(queue: &str) -> Result<String> {
    messaging::pull(queue)
        .wait_async()
        .await
        .ok_or_else(|| format!("queue {queue} closed"))
}

#[inferlet::main]
async fn main(input: Input) -> Result<String> {
    let topic = input.topic.unwrap_or_else(|| "pair".into());
    let (news, ready, jobs) = (
        format!("{topic}.news"),
        format!("{topic}.ready"),
        format!("{topic}.jobs"),
    );
    match input.role.as_str() {
        "producer" => {
            let count = input.count.unwrap_or(3);
            let hello = pull(&ready).await?;
            messaging::broadcast(&news, "hello from the producer");
            for i in 0..count {
                messaging::push(&jobs, &format!("job-{i}"));
            }
            messaging::push(&jobs, "done");
            Ok(format!("consumer said {hello}; sent {count} jobs"))
        }
        "consumer" => {
            let subscription = messaging::subscribe(&news);
            messaging::push(&ready, "ready");
            let broadcast = subscription
                .get_async()
                .await
                .ok_or("the subscription ended")?;
            subscription.unsubscribe();
            let mut got = Vec::new();
            loop {
                let job = pull(&jobs).await?;
                if job == "done" {
                    break;
                }
                got.push(job);
            }
            Ok(format!("broadcast: {broadcast}; jobs: {}", got.join(",")))
        }
        other => Err(format!(
            "--role must be producer or consumer, not {other:?}"
        )),
    }
}
