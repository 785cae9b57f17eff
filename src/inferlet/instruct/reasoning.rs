//! `pie:instruct/reasoning`: the reasoning-block decoder (see [`crate::instruct::reasoning`]).

use wasmtime::component::Resource;

use crate::inferlet::model::Model;
use crate::inferlet::pie::instruct::reasoning::{Event, Host, HostDecoder};
use crate::inferlet::{PieView, stale};
use crate::instruct::{ReasoningDecoder, ReasoningEvent};

pub struct Decoder {
    inner: ReasoningDecoder,
}

impl Host for PieView<'_> {
    fn create_decoder(&mut self, model: Resource<Model>) -> wasmtime::Result<Resource<Decoder>> {
        let i = self.instruct_or_trap(&model, "reasoning.create-decoder")?;
        let inner = i.reasoning_decoder();
        Ok(self.table.push(Decoder { inner })?)
    }
}

impl HostDecoder for PieView<'_> {
    fn feed(
        &mut self,
        this: Resource<Decoder>,
        tokens: Vec<u32>,
    ) -> wasmtime::Result<Result<Event, String>> {
        let d = self
            .table
            .get_mut(&this)
            .map_err(|_| stale("reasoning decoder"))?;
        Ok(d.inner.feed(&tokens).map(|e| match e {
            ReasoningEvent::Start => Event::Start,
            ReasoningEvent::Delta(s) => Event::Delta(s),
            ReasoningEvent::Complete(s) => Event::Complete(s),
        }))
    }

    fn reset(&mut self, this: Resource<Decoder>) -> wasmtime::Result<()> {
        let d = self
            .table
            .get_mut(&this)
            .map_err(|_| stale("reasoning decoder"))?;
        d.inner.reset();
        Ok(())
    }

    fn drop(&mut self, this: Resource<Decoder>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
