//! `pie:core/context`: KV contexts (placeholder in the skeleton commit).

use wasmtime::component::Resource;

use super::model::Model;
use super::pie::core::context::{Host, HostContext};
use super::{PieView, not_yet};

pub struct Context {}

/// Tenant-scoped named snapshots.
#[derive(Default)]
pub struct Snapshots {}

fn nyi(what: &str) -> wasmtime::Error {
    wasmtime::Error::msg(not_yet(what))
}

impl Host for PieView<'_> {}

impl HostContext for PieView<'_> {
    fn create(
        &mut self,
        _model: Resource<Model>,
    ) -> wasmtime::Result<Result<Resource<Context>, String>> {
        Ok(Err(not_yet("context.create")))
    }
    fn open(
        &mut self,
        _model: Resource<Model>,
        _name: String,
    ) -> wasmtime::Result<Result<Resource<Context>, String>> {
        Ok(Err(not_yet("context.open")))
    }
    fn take(
        &mut self,
        _model: Resource<Model>,
        _name: String,
    ) -> wasmtime::Result<Result<Resource<Context>, String>> {
        Ok(Err(not_yet("context.take")))
    }
    fn delete(
        &mut self,
        _model: Resource<Model>,
        _name: String,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(Err(not_yet("context.delete")))
    }
    fn fork(
        &mut self,
        _this: Resource<Context>,
    ) -> wasmtime::Result<Result<Resource<Context>, String>> {
        Ok(Err(not_yet("context.fork")))
    }
    fn save(
        &mut self,
        _this: Resource<Context>,
        _name: String,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(Err(not_yet("context.save")))
    }
    fn snapshot(&mut self, _this: Resource<Context>) -> wasmtime::Result<Result<String, String>> {
        Ok(Err(not_yet("context.snapshot")))
    }
    fn destroy(&mut self, _this: Resource<Context>) -> wasmtime::Result<()> {
        Err(nyi("context.destroy"))
    }
    fn tokens_per_page(&mut self, _this: Resource<Context>) -> wasmtime::Result<u32> {
        Err(nyi("context.tokens-per-page"))
    }
    fn model(&mut self, _this: Resource<Context>) -> wasmtime::Result<Resource<Model>> {
        Err(nyi("context.model"))
    }
    fn committed_page_count(&mut self, _this: Resource<Context>) -> wasmtime::Result<u32> {
        Err(nyi("context.committed-page-count"))
    }
    fn working_page_count(&mut self, _this: Resource<Context>) -> wasmtime::Result<u32> {
        Err(nyi("context.working-page-count"))
    }
    fn commit_working_pages(
        &mut self,
        _this: Resource<Context>,
        _num_pages: u32,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(Err(not_yet("context.commit-working-pages")))
    }
    fn reserve_working_pages(
        &mut self,
        _this: Resource<Context>,
        _num_pages: u32,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(Err(not_yet("context.reserve-working-pages")))
    }
    fn release_working_pages(
        &mut self,
        _this: Resource<Context>,
        _num_pages: u32,
    ) -> wasmtime::Result<()> {
        Err(nyi("context.release-working-pages"))
    }
    fn working_page_token_count(&mut self, _this: Resource<Context>) -> wasmtime::Result<u32> {
        Err(nyi("context.working-page-token-count"))
    }
    fn truncate_working_page_tokens(
        &mut self,
        _this: Resource<Context>,
        _num_tokens: u32,
    ) -> wasmtime::Result<()> {
        Err(nyi("context.truncate-working-page-tokens"))
    }
    fn suspend(&mut self, _this: Resource<Context>) -> wasmtime::Result<Result<(), String>> {
        Ok(Err(not_yet("context.suspend")))
    }
    fn bid(&mut self, _this: Resource<Context>, _value: f64) -> wasmtime::Result<()> {
        Err(nyi("context.bid"))
    }
    fn drop(&mut self, this: Resource<Context>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
