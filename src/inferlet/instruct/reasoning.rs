//! `pie:instruct/reasoning`: the reasoning-block decoder.
//!
//! Placeholder until the instruct implementation lands: every call fails with a clear error.

use wasmtime::component::Resource;

use crate::inferlet::model::Model;
use crate::inferlet::pie::instruct::reasoning::{Event, Host, HostDecoder};
use crate::inferlet::{PieView, not_yet};

pub struct Decoder {}

impl Host for PieView<'_> {
    fn create_decoder(&mut self, _model: Resource<Model>) -> wasmtime::Result<Resource<Decoder>> {
        Err(wasmtime::Error::msg(not_yet("reasoning.create-decoder")))
    }
}

impl HostDecoder for PieView<'_> {
    fn feed(
        &mut self,
        _this: Resource<Decoder>,
        _tokens: Vec<u32>,
    ) -> wasmtime::Result<Result<Event, String>> {
        Ok(Err(not_yet("reasoning decoder")))
    }

    fn reset(&mut self, _this: Resource<Decoder>) -> wasmtime::Result<()> {
        Ok(())
    }

    fn drop(&mut self, this: Resource<Decoder>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
