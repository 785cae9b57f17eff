//! `pie:instruct/chat`: turns from the model's own chat template, and the streaming decoder.
//!
//! Placeholder until the instruct implementation lands: every call fails with a clear error.

use wasmtime::component::Resource;

use crate::inferlet::model::Model;
use crate::inferlet::pie::instruct::chat::{Event, Host, HostDecoder};
use crate::inferlet::{PieView, not_yet};

pub struct Decoder {}

fn nyi(what: &str) -> wasmtime::Error {
    wasmtime::Error::msg(not_yet(what))
}

impl Host for PieView<'_> {
    fn system(&mut self, _model: Resource<Model>, _message: String) -> wasmtime::Result<Vec<u32>> {
        Err(nyi("chat.system"))
    }

    fn user(&mut self, _model: Resource<Model>, _message: String) -> wasmtime::Result<Vec<u32>> {
        Err(nyi("chat.user"))
    }

    fn assistant(
        &mut self,
        _model: Resource<Model>,
        _message: String,
    ) -> wasmtime::Result<Vec<u32>> {
        Err(nyi("chat.assistant"))
    }

    fn cue(&mut self, _model: Resource<Model>) -> wasmtime::Result<Vec<u32>> {
        Err(nyi("chat.cue"))
    }

    fn seal(&mut self, _model: Resource<Model>) -> wasmtime::Result<Vec<u32>> {
        Err(nyi("chat.seal"))
    }

    fn stop_tokens(&mut self, _model: Resource<Model>) -> wasmtime::Result<Vec<u32>> {
        Err(nyi("chat.stop-tokens"))
    }

    fn create_decoder(&mut self, _model: Resource<Model>) -> wasmtime::Result<Resource<Decoder>> {
        Err(nyi("chat.create-decoder"))
    }
}

impl HostDecoder for PieView<'_> {
    fn feed(
        &mut self,
        _this: Resource<Decoder>,
        _tokens: Vec<u32>,
    ) -> wasmtime::Result<Result<Event, String>> {
        Ok(Err(not_yet("chat decoder")))
    }

    fn reset(&mut self, _this: Resource<Decoder>) -> wasmtime::Result<()> {
        Ok(())
    }

    fn drop(&mut self, this: Resource<Decoder>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
