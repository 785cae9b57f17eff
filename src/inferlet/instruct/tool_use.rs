//! `pie:instruct/tool-use`: equip tools, answer calls, the call decoder and the call grammar
//! (see [`crate::instruct::tools`]).

use wasmtime::component::Resource;

use super::trap;
use crate::inferlet::inference::{Grammar, Matcher, tok_env};
use crate::inferlet::model::Model;
use crate::inferlet::pie::instruct::tool_use::{Event, Host, HostDecoder};
use crate::inferlet::{PieView, stale};
use crate::instruct::{ToolDecoder, ToolEvent};

/// The grammar of one well-formed call of any of `tools` (Lark with their JSON schemas).
fn call_grammar(tools: &[String]) -> Result<grammar::Grammar, String> {
    let src = crate::instruct::tools::call_grammar(tools)?;
    grammar::Grammar::ebnf(&src).map_err(|e| e.to_string())
}

pub struct Decoder {
    inner: ToolDecoder,
}

impl Host for PieView<'_> {
    fn equip(
        &mut self,
        model: Resource<Model>,
        tools: Vec<String>,
    ) -> wasmtime::Result<Result<Vec<u32>, String>> {
        Ok(self
            .instruct(&model)?
            .and_then(|i| i.template().equip(&tools)))
    }

    fn answer(
        &mut self,
        model: Resource<Model>,
        name: String,
        value: String,
    ) -> wasmtime::Result<Vec<u32>> {
        let i = self.instruct_or_trap(&model, "tool-use.answer")?;
        i.template()
            .answer(&name, &value)
            .map_err(|e| trap("tool-use.answer", e))
    }

    fn create_decoder(&mut self, model: Resource<Model>) -> wasmtime::Result<Resource<Decoder>> {
        let i = self.instruct_or_trap(&model, "tool-use.create-decoder")?;
        let inner = i.tool_decoder();
        Ok(self.table.push(Decoder { inner })?)
    }

    /// `none` only for an empty tool list; tools that are not valid schemas trap with the
    /// reason (the WIT has no error here).
    fn format(
        &mut self,
        model: Resource<Model>,
        tools: Vec<String>,
    ) -> wasmtime::Result<Option<Resource<Grammar>>> {
        self.model(&model)?;
        if tools.is_empty() {
            return Ok(None);
        }
        let g = call_grammar(&tools).map_err(|e| trap("tool-use.format", e))?;
        Ok(Some(self.table.push(Grammar(g))?))
    }

    fn create_matcher(
        &mut self,
        model: Resource<Model>,
        tools: Vec<String>,
    ) -> wasmtime::Result<Resource<Matcher>> {
        let m = self.model(&model)?;
        let g = call_grammar(&tools).map_err(|e| trap("tool-use.create-matcher", e))?;
        let env = tok_env(&m).map_err(|e| trap("tool-use.create-matcher", e))?;
        Ok(self
            .table
            .push(Matcher(grammar::Matcher::new_or_failed(&env, &g)))?)
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
            .map_err(|_| stale("tool-use decoder"))?;
        Ok(d.inner.feed(&tokens).map(|e| match e {
            ToolEvent::Start => Event::Start,
            ToolEvent::Call(name, args) => Event::Call((name, args)),
        }))
    }

    fn reset(&mut self, this: Resource<Decoder>) -> wasmtime::Result<()> {
        let d = self
            .table
            .get_mut(&this)
            .map_err(|_| stale("tool-use decoder"))?;
        d.inner.reset();
        Ok(())
    }

    fn drop(&mut self, this: Resource<Decoder>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
