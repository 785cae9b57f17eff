//! `pie:instruct/tool-use`: equip tools, answer calls, the call decoder and call grammar.
//!
//! Placeholder until the instruct implementation lands: every call fails with a clear error.

use wasmtime::component::Resource;

use crate::inferlet::inference::{Grammar, Matcher};
use crate::inferlet::model::Model;
use crate::inferlet::pie::instruct::tool_use::{Event, Host, HostDecoder};
use crate::inferlet::{PieView, not_yet};

pub struct Decoder {}

fn nyi(what: &str) -> wasmtime::Error {
    wasmtime::Error::msg(not_yet(what))
}

impl Host for PieView<'_> {
    fn equip(
        &mut self,
        _model: Resource<Model>,
        _tools: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<u32>, String>> {
        Ok(Err(not_yet("tool-use.equip")))
    }

    fn answer(
        &mut self,
        _model: Resource<Model>,
        _name: String,
        _value: String,
    ) -> wasmtime::Result<Vec<u32>> {
        Err(nyi("tool-use.answer"))
    }

    fn create_decoder(&mut self, _model: Resource<Model>) -> wasmtime::Result<Resource<Decoder>> {
        Err(nyi("tool-use.create-decoder"))
    }

    fn format(
        &mut self,
        _model: Resource<Model>,
        _tools: Vec<String>,
    ) -> wasmtime::Result<Option<Resource<Grammar>>> {
        Ok(None)
    }

    fn create_matcher(
        &mut self,
        _model: Resource<Model>,
        _tools: Vec<String>,
    ) -> wasmtime::Result<Resource<Matcher>> {
        Err(nyi("tool-use.create-matcher"))
    }
}

impl HostDecoder for PieView<'_> {
    fn feed(
        &mut self,
        _this: Resource<Decoder>,
        _tokens: Vec<u32>,
    ) -> wasmtime::Result<Result<Event, String>> {
        Ok(Err(not_yet("tool-use decoder")))
    }

    fn reset(&mut self, _this: Resource<Decoder>) -> wasmtime::Result<()> {
        Ok(())
    }

    fn drop(&mut self, this: Resource<Decoder>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
