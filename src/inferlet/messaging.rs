//! `pie:core/messaging`: push/pull queues and broadcast/subscribe topics, per tenant.
//!
//! Placeholder until the messaging hub lands: every call fails with a clear error.

use wasmtime::component::Resource;
use wasmtime_wasi::p2::DynPollable;

use super::pie::core::messaging::{Host, HostSubscription};
use super::types::FutureString;
use super::{PieView, not_yet};

/// Daemon-wide queues and topics (stored in `Shared::messaging`).
#[derive(Default)]
pub struct Hub {}

/// A subscription to a broadcast topic.
pub struct Subscription {}

fn unimplemented_trap(what: &str) -> wasmtime::Error {
    wasmtime::Error::msg(not_yet(what))
}

impl Host for PieView<'_> {
    fn push(&mut self, _topic: String, _message: String) -> wasmtime::Result<()> {
        Err(unimplemented_trap("messaging.push"))
    }

    fn pull(&mut self, _topic: String) -> wasmtime::Result<Resource<FutureString>> {
        Err(unimplemented_trap("messaging.pull"))
    }

    fn broadcast(&mut self, _topic: String, _message: String) -> wasmtime::Result<()> {
        Err(unimplemented_trap("messaging.broadcast"))
    }

    fn subscribe(&mut self, _topic: String) -> wasmtime::Result<Resource<Subscription>> {
        Err(unimplemented_trap("messaging.subscribe"))
    }
}

impl HostSubscription for PieView<'_> {
    fn pollable(
        &mut self,
        _this: Resource<Subscription>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        Err(unimplemented_trap("subscription.pollable"))
    }

    fn get(&mut self, _this: Resource<Subscription>) -> wasmtime::Result<Option<String>> {
        Err(unimplemented_trap("subscription.get"))
    }

    fn unsubscribe(&mut self, _this: Resource<Subscription>) -> wasmtime::Result<()> {
        Err(unimplemented_trap("subscription.unsubscribe"))
    }

    fn drop(&mut self, this: Resource<Subscription>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
