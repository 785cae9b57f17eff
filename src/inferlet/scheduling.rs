//! `pie:core/scheduling`: the market figures Pie's SDK bids with, as this engine defines
//! them. pied runs no page auction and charges nothing: the engine schedules callers
//! round-robin (decode steps first) and never evicts a context's pages. The figures are
//! real measurements of that system, in Pie's units (1 credit = the cost of one KV page):
//! - `price`: 1.0, the cost of producing one KV page (constant, as in Pie).
//! - `rent(ctx)`: what holding a page costs per step on the context's engine: 0.0 while its
//!   KV pool has pages free or reclaimable (no contention, as Pie charges then too), else
//!   1.0 (the pool is full: a new page costs as much as making one).
//! - `dividend(model)`: 0.0, since no rent is collected, none is paid out.
//! - `latency(ctx)`: seconds per engine step on the context's device: the engine's busy time
//!   divided by its batches so far (0.0 before the first batch).
//! - `balance(model)`: the pages this process could still get: free plus reclaimable pages
//!   of the model's KV pool (what a bid could buy at most).

use wasmtime::component::Resource;

use super::context::Context;
use super::model::Model;
use super::pie::core::scheduling::Host;
use super::{PieView, stale};

/// Per-process scheduling counters.
#[derive(Default)]
pub struct Account {
    /// Forward passes executed (also seeds the samplers).
    pub passes: u64,
}

impl PieView<'_> {
    fn ctx_engine(
        &self,
        c: &Resource<Context>,
    ) -> wasmtime::Result<std::sync::Arc<engine::Engine>> {
        Ok(self
            .table
            .get(c)
            .map_err(|_| stale("context"))?
            .model
            .engine
            .clone())
    }
}

impl Host for PieView<'_> {
    fn price(&mut self) -> wasmtime::Result<f64> {
        Ok(1.0)
    }

    fn rent(&mut self, ctx: Resource<Context>) -> wasmtime::Result<f64> {
        let e = self.ctx_engine(&ctx)?;
        let s = e.kv_pool().stats();
        Ok(if s.free + s.cached > 0 { 0.0 } else { 1.0 })
    }

    fn dividend(&mut self, model: Resource<Model>) -> wasmtime::Result<f64> {
        self.model_of(&model)?;
        Ok(0.0)
    }

    fn latency(&mut self, ctx: Resource<Context>) -> wasmtime::Result<f64> {
        let e = self.ctx_engine(&ctx)?;
        let s = e.stats();
        Ok(if s.batches == 0 {
            0.0
        } else {
            s.busy_seconds / s.batches as f64
        })
    }

    fn balance(&mut self, model: Resource<Model>) -> wasmtime::Result<f64> {
        let m = self.model_of(&model)?;
        let s = m.engine.kv_pool().stats();
        Ok((s.free + s.cached) as f64)
    }
}
