//! `pie:instruct`: chat templating, reasoning and tool-use decoders (one file per interface),
//! glue over [`crate::instruct`], which renders turns from the model's own chat template.

pub mod chat;
pub mod reasoning;
pub mod tool_use;

use wasmtime::component::Resource;

use crate::inferlet::PieView;
use crate::inferlet::model::Model;
use crate::instruct::Instruct;

impl PieView<'_> {
    /// The instruct pieces of a model handle; `Err` says why the model has none.
    pub(crate) fn instruct(
        &self,
        model: &Resource<Model>,
    ) -> wasmtime::Result<Result<Instruct, String>> {
        let m = self.model(model)?;
        Ok(Instruct::of(&m.engine, &m.name))
    }

    /// Like [`PieView::instruct`] for functions without an error in the WIT: a model without
    /// a tokenizer or chat template traps the guest with the reason.
    pub(crate) fn instruct_or_trap(
        &self,
        model: &Resource<Model>,
        what: &str,
    ) -> wasmtime::Result<Instruct> {
        self.instruct(model)?
            .map_err(|e| wasmtime::Error::msg(format!("{what}: {e}")))
    }
}

/// A failed rendering in a function without an error in the WIT: traps with the reason.
pub(crate) fn trap(what: &str, e: String) -> wasmtime::Error {
    wasmtime::Error::msg(format!("{what}: {e}"))
}
