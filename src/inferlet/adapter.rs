//! `pie:core/adapter`: LoRA-style adapters. This engine has none yet: every call that would
//! create or use one fails with a clear error (a later issue adds them).

use wasmtime::component::Resource;

use super::PieView;
use super::model::Model;
use super::pie::core::adapter::{Host, HostAdapter};

pub const UNSUPPORTED: &str =
    "adapters are not supported by this engine (pied's CPU engine serves base models only)";

/// Never constructed: no call returns an adapter.
pub struct Adapter {}

impl Host for PieView<'_> {}

impl HostAdapter for PieView<'_> {
    fn create(
        &mut self,
        _model: Resource<Model>,
        _name: String,
    ) -> wasmtime::Result<Result<Resource<Adapter>, String>> {
        Ok(Err(UNSUPPORTED.to_string()))
    }

    fn destroy(&mut self, _this: Resource<Adapter>) -> wasmtime::Result<()> {
        Ok(())
    }

    /// No adapter exists, so none opens.
    fn open(
        &mut self,
        _model: Resource<Model>,
        _name: String,
    ) -> wasmtime::Result<Option<Resource<Adapter>>> {
        Ok(None)
    }

    fn fork(
        &mut self,
        _this: Resource<Adapter>,
        _name: String,
    ) -> wasmtime::Result<Resource<Adapter>> {
        Err(wasmtime::Error::msg(UNSUPPORTED))
    }

    fn load(
        &mut self,
        _this: Resource<Adapter>,
        _path: String,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(Err(UNSUPPORTED.to_string()))
    }

    fn save(
        &mut self,
        _this: Resource<Adapter>,
        _path: String,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(Err(UNSUPPORTED.to_string()))
    }

    fn drop(&mut self, this: Resource<Adapter>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
