//! `pie:core/messaging`: push/pull queues and broadcast/subscribe topics, glue over
//! [`crate::bus::Bus`] (which holds the semantics and the bounds), scoped to the process'
//! tenant: two tenants using the same topic name never see each other's messages.
//!
//! `push` and `broadcast` have no error in the WIT, so a refused message (too large, a bad
//! topic name, a full queue nobody pulls from) traps the guest with the reason rather than
//! vanishing. A subscription's backlog drops its oldest messages when the inferlet reads too
//! slowly; the count is written to the process' log as a notice.

use std::sync::Arc;

use proto::EventKind;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::{DynPollable, Pollable};

use super::pie::core::messaging::{Host, HostSubscription};
use super::types::FutureString;
use super::{PieView, stale};
use crate::bus::{Bus, BusError, TenantBus};

/// Daemon-wide queues and topics (stored in `Shared::messaging`).
pub type Hub = Arc<Bus>;

/// A subscription to a broadcast topic.
pub struct Subscription {
    topic: String,
    inner: crate::bus::Subscription,
}

#[wasmtime_wasi::async_trait]
impl Pollable for Subscription {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

fn trap(what: &str, e: BusError) -> wasmtime::Error {
    wasmtime::Error::msg(format!("messaging.{what}: {e}"))
}

impl PieView<'_> {
    fn bus(&self) -> TenantBus {
        self.ctx.shared.messaging.tenant(&self.ctx.process.tenant)
    }
}

impl Host for PieView<'_> {
    fn push(&mut self, topic: String, message: String) -> wasmtime::Result<()> {
        self.bus()
            .try_push(&topic, message)
            .map_err(|e| trap("push", e))
    }

    fn pull(&mut self, topic: String) -> wasmtime::Result<Resource<FutureString>> {
        let fut = self.bus().pull(&topic).map_err(|e| trap("pull", e))?;
        Ok(self.table.push(FutureString::new(fut))?)
    }

    fn broadcast(&mut self, topic: String, message: String) -> wasmtime::Result<()> {
        self.bus()
            .broadcast(&topic, &message)
            .map(|_| ())
            .map_err(|e| trap("broadcast", e))
    }

    fn subscribe(&mut self, topic: String) -> wasmtime::Result<Resource<Subscription>> {
        let inner = self
            .bus()
            .subscribe(&topic)
            .map_err(|e| trap("subscribe", e))?;
        Ok(self.table.push(Subscription { topic, inner })?)
    }
}

impl HostSubscription for PieView<'_> {
    fn pollable(
        &mut self,
        this: Resource<Subscription>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let borrowed = Resource::<Subscription>::new_borrow(this.rep());
        wasmtime_wasi::p2::subscribe(self.table, borrowed)
    }

    fn get(&mut self, this: Resource<Subscription>) -> wasmtime::Result<Option<String>> {
        let sub = self.table.get(&this).map_err(|_| stale("subscription"))?;
        let dropped = sub.inner.take_dropped();
        if dropped > 0 {
            self.ctx.log.append(EventKind::Notice(format!(
                "messaging: the subscription to {:?} dropped {dropped} messages (its backlog was full: the inferlet reads too slowly)",
                sub.topic
            )));
        }
        Ok(sub.inner.get())
    }

    fn unsubscribe(&mut self, this: Resource<Subscription>) -> wasmtime::Result<()> {
        let sub = self
            .table
            .get_mut(&this)
            .map_err(|_| stale("subscription"))?;
        sub.inner.unsubscribe();
        Ok(())
    }

    fn drop(&mut self, this: Resource<Subscription>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
