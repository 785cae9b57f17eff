//! A bounded FIFO whose receivers wait asynchronously: the one primitive under queues,
//! subscriptions and session inboxes.
//!
//! Bounds are in items and bytes (each item is charged its payload plus [`ITEM_OVERHEAD`], so
//! a flood of empty messages is bounded too). A full mailbox either refuses the item
//! ([`Mailbox::try_push`]) or evicts the oldest
//! ([`Mailbox::push_evicting`], for subscribers that must never block a publisher), and it
//! counts what it evicted so the loss can be reported instead of being silent.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;

/// Bytes charged per item on top of its payload (the `VecDeque` slot and the `String`).
pub const ITEM_OVERHEAD: usize = 64;

/// Something that has a payload size.
pub trait Payload {
    fn payload_len(&self) -> usize;
}

impl Payload for String {
    fn payload_len(&self) -> usize {
        self.len()
    }
}

impl Payload for Vec<u8> {
    fn payload_len(&self) -> usize {
        self.len()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_items: usize,
    pub max_bytes: usize,
}

/// Why an item was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The mailbox holds `items` items / `bytes` bytes, its bounds.
    Full { items: usize, bytes: usize },
    /// The item alone is larger than the mailbox may ever hold.
    TooLarge { size: usize, max: usize },
    /// Nobody will ever receive from it again.
    Closed,
}

pub struct Mailbox<T> {
    bounds: Bounds,
    inner: Mutex<Inner<T>>,
    /// Woken when an item arrives or the mailbox closes.
    arrived: Notify,
}

struct Inner<T> {
    items: VecDeque<T>,
    bytes: usize,
    closed: bool,
    /// Items dropped by `push_evicting` since the last `take_evicted`.
    evicted: u64,
}

fn cost<T: Payload>(item: &T) -> usize {
    item.payload_len() + ITEM_OVERHEAD
}

impl<T: Payload> Mailbox<T> {
    pub fn new(bounds: Bounds) -> Mailbox<T> {
        Mailbox {
            bounds,
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                bytes: 0,
                closed: false,
                evicted: 0,
            }),
            arrived: Notify::new(),
        }
    }

    fn check_size(&self, item: &T) -> Result<usize, PushError> {
        let c = cost(item);
        if c > self.bounds.max_bytes {
            return Err(PushError::TooLarge {
                size: item.payload_len(),
                max: self.bounds.max_bytes - ITEM_OVERHEAD,
            });
        }
        Ok(c)
    }

    /// Appends `item` if it fits.
    pub fn try_push(&self, item: T) -> Result<(), PushError> {
        let c = self.check_size(&item)?;
        let mut inner = self.inner.lock().unwrap();
        if inner.closed {
            return Err(PushError::Closed);
        }
        if inner.items.len() >= self.bounds.max_items || inner.bytes + c > self.bounds.max_bytes {
            return Err(PushError::Full {
                items: self.bounds.max_items,
                bytes: self.bounds.max_bytes,
            });
        }
        inner.bytes += c;
        inner.items.push_back(item);
        drop(inner);
        self.arrived.notify_waiters();
        Ok(())
    }

    /// Appends `item`, dropping the oldest items until it fits; returns how many it dropped.
    pub fn push_evicting(&self, item: T) -> Result<u64, PushError> {
        let c = self.check_size(&item)?;
        let mut inner = self.inner.lock().unwrap();
        if inner.closed {
            return Err(PushError::Closed);
        }
        let mut dropped = 0;
        while !inner.items.is_empty()
            && (inner.items.len() >= self.bounds.max_items
                || inner.bytes + c > self.bounds.max_bytes)
        {
            let old = inner.items.pop_front().unwrap();
            inner.bytes -= cost(&old);
            dropped += 1;
        }
        inner.evicted += dropped;
        inner.bytes += c;
        inner.items.push_back(item);
        drop(inner);
        self.arrived.notify_waiters();
        Ok(dropped)
    }

    /// The oldest item, if any.
    pub fn try_pop(&self) -> Option<T> {
        let mut inner = self.inner.lock().unwrap();
        let item = inner.items.pop_front()?;
        inner.bytes -= cost(&item);
        Some(item)
    }

    /// Every item, oldest first.
    #[cfg(test)]
    pub fn drain(&self) -> Vec<T> {
        let mut inner = self.inner.lock().unwrap();
        inner.bytes = 0;
        inner.items.drain(..).collect()
    }

    /// Waits for the oldest item; `None` once the mailbox is closed and empty. The item is
    /// taken in the same poll that completes the future, so dropping the future never
    /// loses one.
    pub async fn recv(&self) -> Option<T> {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(item) = self.try_pop() {
                return Some(item);
            }
            if self.inner.lock().unwrap().closed {
                return None;
            }
            arrived.await;
        }
    }

    /// Waits until an item is there (without taking it) or the mailbox is closed.
    pub async fn ready(&self) {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            {
                let inner = self.inner.lock().unwrap();
                if !inner.items.is_empty() || inner.closed {
                    return;
                }
            }
            arrived.await;
        }
    }

    /// Refuses further items and wakes every waiter; queued items can still be taken.
    pub fn close(&self) {
        self.inner.lock().unwrap().closed = true;
        self.arrived.notify_waiters();
    }

    pub fn is_empty(&self) -> bool {
        self.inner.lock().unwrap().items.is_empty()
    }

    /// Items evicted by [`Mailbox::push_evicting`] since the last call.
    pub fn take_evicted(&self) -> u64 {
        std::mem::take(&mut self.inner.lock().unwrap().evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    fn small() -> Bounds {
        Bounds {
            max_items: 3,
            max_bytes: 3 * (ITEM_OVERHEAD + 10),
        }
    }

    #[test]
    fn bounds_refuse_or_evict() {
        let m = Mailbox::new(small());
        for i in 0..3 {
            m.try_push(format!("m{i}")).unwrap();
        }
        assert!(matches!(
            m.try_push("m3".to_string()),
            Err(PushError::Full { items: 3, .. })
        ));
        assert_eq!(m.push_evicting("m3".to_string()), Ok(1));
        assert_eq!(m.take_evicted(), 1);
        assert_eq!(m.drain(), vec!["m1", "m2", "m3"]);
        assert!(matches!(
            m.try_push("x".repeat(11 + 2 * (ITEM_OVERHEAD + 10))),
            Err(PushError::TooLarge { .. })
        ));
    }

    #[tokio::test]
    async fn recv_wakes_when_an_item_arrives() {
        let m = Arc::new(Mailbox::<String>::new(small()));
        let m2 = m.clone();
        let waiter = tokio::spawn(async move { m2.recv().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        m.try_push("hello".into()).unwrap();
        assert_eq!(waiter.await.unwrap().as_deref(), Some("hello"));
    }

    #[tokio::test]
    async fn close_ends_receivers() {
        let m = Arc::new(Mailbox::<String>::new(small()));
        let m2 = m.clone();
        let waiter = tokio::spawn(async move { m2.recv().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        m.close();
        assert_eq!(waiter.await.unwrap(), None);
        assert_eq!(m.try_push("x".into()), Err(PushError::Closed));
    }
}
