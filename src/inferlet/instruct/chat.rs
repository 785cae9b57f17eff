//! `pie:instruct/chat`: turns from the model's own chat template, and the streaming decoder
//! (see [`crate::instruct::template`] and [`crate::instruct::chat`]).
//!
//! The fillers have no error in the WIT: a model without a chat template, or a template
//! that cannot render the turn, traps the guest with the reason.

use wasmtime::component::Resource;

use super::trap;
use crate::inferlet::model::Model;
use crate::inferlet::pie::instruct::chat::{Event, Host, HostDecoder};
use crate::inferlet::{PieView, stale};
use crate::instruct::{ChatDecoder, ChatEvent};

pub struct Decoder {
    inner: ChatDecoder,
}

impl Host for PieView<'_> {
    fn system(&mut self, model: Resource<Model>, message: String) -> wasmtime::Result<Vec<u32>> {
        let i = self.instruct_or_trap(&model, "chat.system")?;
        i.template()
            .system(&message)
            .map_err(|e| trap("chat.system", e))
    }

    fn user(&mut self, model: Resource<Model>, message: String) -> wasmtime::Result<Vec<u32>> {
        let i = self.instruct_or_trap(&model, "chat.user")?;
        i.template()
            .user(&message)
            .map_err(|e| trap("chat.user", e))
    }

    fn assistant(&mut self, model: Resource<Model>, message: String) -> wasmtime::Result<Vec<u32>> {
        let i = self.instruct_or_trap(&model, "chat.assistant")?;
        i.template()
            .assistant(&message)
            .map_err(|e| trap("chat.assistant", e))
    }

    fn cue(&mut self, model: Resource<Model>) -> wasmtime::Result<Vec<u32>> {
        let i = self.instruct_or_trap(&model, "chat.cue")?;
        i.template().cue().map_err(|e| trap("chat.cue", e))
    }

    fn seal(&mut self, model: Resource<Model>) -> wasmtime::Result<Vec<u32>> {
        let i = self.instruct_or_trap(&model, "chat.seal")?;
        i.template().seal().map_err(|e| trap("chat.seal", e))
    }

    fn stop_tokens(&mut self, model: Resource<Model>) -> wasmtime::Result<Vec<u32>> {
        let i = self.instruct_or_trap(&model, "chat.stop-tokens")?;
        i.template()
            .stop_tokens()
            .map_err(|e| trap("chat.stop-tokens", e))
    }

    fn create_decoder(&mut self, model: Resource<Model>) -> wasmtime::Result<Resource<Decoder>> {
        let i = self.instruct_or_trap(&model, "chat.create-decoder")?;
        let inner = i
            .chat_decoder()
            .map_err(|e| trap("chat.create-decoder", e))?;
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
            .map_err(|_| stale("chat decoder"))?;
        Ok(d.inner.feed(&tokens).map(|e| match e {
            ChatEvent::Delta(s) => Event::Delta(s),
            ChatEvent::Interrupt(t) => Event::Interrupt(t),
            ChatEvent::Done(s) => Event::Done(s),
        }))
    }

    fn reset(&mut self, this: Resource<Decoder>) -> wasmtime::Result<()> {
        let d = self
            .table
            .get_mut(&this)
            .map_err(|_| stale("chat decoder"))?;
        d.inner.reset();
        Ok(())
    }

    fn drop(&mut self, this: Resource<Decoder>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
