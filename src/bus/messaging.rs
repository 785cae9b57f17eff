//! `pie:core/messaging` semantics: push/pull queues and broadcast/subscribe topics between
//! processes, namespaced per tenant (a topic name means nothing across tenants).
//!
//! - A **queue** delivers each pushed message to exactly one puller, in push order. `pull`
//!   waits for a message; `push` into a full queue is refused (the WIT's `push` cannot wait
//!   or fail, so the host traps the pusher with the reason), so a producer cannot outrun
//!   its consumers by more than the queue's bounds.
//! - A **topic** delivers each broadcast to every subscription that exists at that moment
//!   (there is no history). A subscription holds its own bounded backlog; when a subscriber
//!   falls that far behind, its oldest messages are dropped and counted
//!   ([`Subscription::take_dropped`]) so the host can report the loss: a slow subscriber
//!   never blocks a publisher.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::mailbox::{Bounds, Mailbox, PushError};

/// Largest message (bytes of UTF-8) a queue or topic carries.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Longest topic name.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Queues plus topics a tenant may have at once (empty, unused ones are reclaimed first).
pub const MAX_NAMES_PER_TENANT: usize = 4096;
/// Bounds of one queue: a push beyond these is refused.
pub const QUEUE_BOUNDS: Bounds = Bounds {
    max_items: 4096,
    max_bytes: 8 << 20,
};
/// Backlog of one subscription: the oldest messages are dropped beyond these.
pub const SUBSCRIPTION_BOUNDS: Bounds = Bounds {
    max_items: 4096,
    max_bytes: 4 << 20,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusError {
    MessageTooLarge { size: usize },
    BadTopic(String),
    TooManyTopics { tenant: String },
    QueueFull { topic: String },
}

impl std::fmt::Display for BusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusError::MessageTooLarge { size } => write!(
                f,
                "message of {size} bytes is above the {MAX_MESSAGE_BYTES}-byte limit"
            ),
            BusError::BadTopic(why) => write!(f, "bad topic name: {why}"),
            BusError::TooManyTopics { tenant } => write!(
                f,
                "tenant {tenant} already uses {MAX_NAMES_PER_TENANT} queues and topics"
            ),
            BusError::QueueFull { topic } => write!(
                f,
                "queue {topic:?} is full ({} messages or {} bytes): nobody is pulling from it",
                QUEUE_BOUNDS.max_items, QUEUE_BOUNDS.max_bytes
            ),
        }
    }
}

impl std::error::Error for BusError {}

type Key = (String, String);

/// The daemon's message bus: every tenant's queues and topics.
#[derive(Default)]
pub struct Bus {
    queues: Mutex<HashMap<Key, Arc<Mailbox<String>>>>,
    topics: Mutex<HashMap<Key, Topic>>,
}

#[derive(Default)]
struct Topic {
    next_id: u64,
    subscribers: Vec<(u64, Arc<Mailbox<String>>)>,
}

fn check_topic(topic: &str) -> Result<(), BusError> {
    if topic.is_empty() {
        return Err(BusError::BadTopic("it is empty".into()));
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(BusError::BadTopic(format!(
            "{} bytes, the limit is {MAX_TOPIC_BYTES}",
            topic.len()
        )));
    }
    Ok(())
}

fn check_message(message: &str) -> Result<(), BusError> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(BusError::MessageTooLarge {
            size: message.len(),
        });
    }
    Ok(())
}

impl Bus {
    #[cfg(test)]
    pub fn new() -> Arc<Bus> {
        Arc::new(Bus::default())
    }

    /// The messaging view of one tenant: what a process of that tenant may reach.
    pub fn tenant(self: &Arc<Bus>, tenant: &str) -> TenantBus {
        TenantBus {
            bus: self.clone(),
            tenant: tenant.to_string(),
        }
    }

    fn names_of(&self, tenant: &str) -> usize {
        let q = self.queues.lock().unwrap();
        let t = self.topics.lock().unwrap();
        q.keys().filter(|k| k.0 == tenant).count() + t.keys().filter(|k| k.0 == tenant).count()
    }

    /// Drops queues nobody holds and that are empty, and topics without subscribers.
    fn reclaim(&self, tenant: &str) {
        self.queues
            .lock()
            .unwrap()
            .retain(|k, q| k.0 != tenant || Arc::strong_count(q) > 1 || !q.is_empty());
        self.topics
            .lock()
            .unwrap()
            .retain(|k, t| k.0 != tenant || !t.subscribers.is_empty());
    }

    fn ensure_room(&self, tenant: &str) -> Result<(), BusError> {
        if self.names_of(tenant) < MAX_NAMES_PER_TENANT {
            return Ok(());
        }
        self.reclaim(tenant);
        if self.names_of(tenant) < MAX_NAMES_PER_TENANT {
            Ok(())
        } else {
            Err(BusError::TooManyTopics {
                tenant: tenant.to_string(),
            })
        }
    }

    fn queue(&self, tenant: &str, topic: &str) -> Result<Arc<Mailbox<String>>, BusError> {
        check_topic(topic)?;
        let key = (tenant.to_string(), topic.to_string());
        if let Some(q) = self.queues.lock().unwrap().get(&key) {
            return Ok(q.clone());
        }
        self.ensure_room(tenant)?;
        Ok(self
            .queues
            .lock()
            .unwrap()
            .entry(key)
            .or_insert_with(|| Arc::new(Mailbox::new(QUEUE_BOUNDS)))
            .clone())
    }
}

/// One tenant's queues and topics.
#[derive(Clone)]
pub struct TenantBus {
    bus: Arc<Bus>,
    tenant: String,
}

impl TenantBus {
    /// Appends `message` to the queue `topic` without waiting: a full queue is an error.
    pub fn try_push(&self, topic: &str, message: String) -> Result<(), BusError> {
        check_message(&message)?;
        let queue = self.bus.queue(&self.tenant, topic)?;
        queue.try_push(message).map_err(|e| match e {
            PushError::TooLarge { size, .. } => BusError::MessageTooLarge { size },
            PushError::Full { .. } | PushError::Closed => BusError::QueueFull {
                topic: topic.to_string(),
            },
        })
    }

    /// A future resolving to the next message of the queue `topic`. The message is taken
    /// only when the future completes, so dropping it unpolled loses nothing.
    pub fn pull(
        &self,
        topic: &str,
    ) -> Result<impl Future<Output = Option<String>> + Send + 'static, BusError> {
        let queue = self.bus.queue(&self.tenant, topic)?;
        Ok(async move { queue.recv().await })
    }

    /// Delivers `message` to every current subscription of `topic`; returns how many.
    pub fn broadcast(&self, topic: &str, message: &str) -> Result<usize, BusError> {
        check_topic(topic)?;
        check_message(message)?;
        let key = (self.tenant.clone(), topic.to_string());
        let topics = self.bus.topics.lock().unwrap();
        let Some(t) = topics.get(&key) else {
            return Ok(0);
        };
        for (_, sub) in &t.subscribers {
            // Cannot fail: the size is below the backlog's bound and subscriptions are
            // closed only after they left the list.
            let _ = sub.push_evicting(message.to_string());
        }
        Ok(t.subscribers.len())
    }

    /// Subscribes to `topic`: every later broadcast lands in the subscription's backlog.
    pub fn subscribe(&self, topic: &str) -> Result<Subscription, BusError> {
        check_topic(topic)?;
        let key = (self.tenant.clone(), topic.to_string());
        if !self.bus.topics.lock().unwrap().contains_key(&key) {
            self.bus.ensure_room(&self.tenant)?;
        }
        let mailbox = Arc::new(Mailbox::new(SUBSCRIPTION_BOUNDS));
        let mut topics = self.bus.topics.lock().unwrap();
        let t = topics.entry(key.clone()).or_default();
        let id = t.next_id;
        t.next_id += 1;
        t.subscribers.push((id, mailbox.clone()));
        Ok(Subscription {
            bus: self.bus.clone(),
            key,
            id,
            mailbox,
            subscribed: true,
        })
    }
}

/// A subscription to a topic; dropping it unsubscribes.
pub struct Subscription {
    bus: Arc<Bus>,
    key: Key,
    id: u64,
    mailbox: Arc<Mailbox<String>>,
    subscribed: bool,
}

impl Subscription {
    /// The oldest undelivered message, if any.
    pub fn get(&self) -> Option<String> {
        self.mailbox.try_pop()
    }

    /// Resolves once a message is waiting (or the subscription ended).
    pub fn ready(&self) -> impl Future<Output = ()> + Send + 'static {
        let mailbox = self.mailbox.clone();
        async move { mailbox.ready().await }
    }

    /// Messages dropped because the backlog was full, since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.mailbox.take_evicted()
    }

    /// Stops deliveries; messages already received can still be read with `get`.
    pub fn unsubscribe(&mut self) {
        if !std::mem::take(&mut self.subscribed) {
            return;
        }
        let mut topics = self.bus.topics.lock().unwrap();
        if let Some(t) = topics.get_mut(&self.key) {
            t.subscribers.retain(|(id, _)| *id != self.id);
            if t.subscribers.is_empty() {
                topics.remove(&self.key);
            }
        }
        drop(topics);
        self.mailbox.close();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.unsubscribe();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_queue_delivers_each_message_once_in_order() {
        let bus = Bus::new();
        let a = bus.tenant("alice");
        a.try_push("jobs", "one".into()).unwrap();
        a.try_push("jobs", "two".into()).unwrap();
        assert_eq!(a.pull("jobs").unwrap().await.as_deref(), Some("one"));
        assert_eq!(a.pull("jobs").unwrap().await.as_deref(), Some("two"));
        // A pull waits for the next push.
        let waiting = tokio::spawn(a.pull("jobs").unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        a.try_push("jobs", "three".into()).unwrap();
        assert_eq!(waiting.await.unwrap().as_deref(), Some("three"));
    }

    #[tokio::test]
    async fn tenants_do_not_share_names() {
        let bus = Bus::new();
        bus.tenant("alice")
            .try_push("t", "for alice".into())
            .unwrap();
        let bob = bus.tenant("bob");
        let pull = tokio::spawn(bob.pull("t").unwrap());
        let mut sub = bob.subscribe("news").unwrap();
        assert_eq!(bus.tenant("alice").broadcast("news", "x").unwrap(), 0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!pull.is_finished());
        assert_eq!(sub.get(), None);
        pull.abort();
        sub.unsubscribe();
        // Alice's message is still hers.
        assert_eq!(
            bus.tenant("alice").pull("t").unwrap().await.as_deref(),
            Some("for alice")
        );
    }

    #[tokio::test]
    async fn broadcast_reaches_every_subscriber() {
        let bus = Bus::new();
        let t = bus.tenant("alice");
        let s1 = t.subscribe("news").unwrap();
        let mut s2 = t.subscribe("news").unwrap();
        assert_eq!(t.broadcast("news", "hello").unwrap(), 2);
        s1.ready().await;
        assert_eq!(s1.get().as_deref(), Some("hello"));
        assert_eq!(s2.get().as_deref(), Some("hello"));
        s2.unsubscribe();
        assert_eq!(t.broadcast("news", "again").unwrap(), 1);
        assert_eq!(s2.get(), None);
        drop(s1);
        assert_eq!(t.broadcast("news", "nobody").unwrap(), 0);
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_the_oldest_and_is_told() {
        let bus = Bus::new();
        let t = bus.tenant("alice");
        let s = t.subscribe("firehose").unwrap();
        for i in 0..SUBSCRIPTION_BOUNDS.max_items + 5 {
            t.broadcast("firehose", &i.to_string()).unwrap();
        }
        assert_eq!(s.take_dropped(), 5);
        assert_eq!(s.get().as_deref(), Some("5"));
    }

    #[tokio::test]
    async fn bad_input_is_refused_clearly() {
        let bus = Bus::new();
        let t = bus.tenant("alice");
        assert!(matches!(t.pull(""), Err(BusError::BadTopic(_))));
        assert!(matches!(
            t.subscribe(&"x".repeat(MAX_TOPIC_BYTES + 1)),
            Err(BusError::BadTopic(_))
        ));
        let big = "x".repeat(MAX_MESSAGE_BYTES + 1);
        let e = t.try_push("q", big.clone()).unwrap_err();
        assert!(e.to_string().contains("above the"), "{e}");
        assert!(t.broadcast("q", &big).is_err());
        for i in 0..QUEUE_BOUNDS.max_items {
            t.try_push("full", i.to_string()).unwrap();
        }
        let e = t.try_push("full", "one more".into()).unwrap_err();
        assert!(e.to_string().contains("nobody is pulling"), "{e}");
    }
}
