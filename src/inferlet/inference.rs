//! `pie:core/inference` (placeholder in the skeleton commit).

use wasmtime::component::Resource;
use wasmtime_wasi::p2::DynPollable;

use super::adapter::Adapter;
use super::context::Context;
use super::model::{Model, Tokenizer};
use super::pie::core::inference::{
    Host, HostForwardPass, HostFutureOutput, HostGrammar, HostMatcher, Output, Sampler,
};
use super::{PieView, not_yet};

pub struct ForwardPass {}
pub struct FutureOutput {}
pub struct Grammar {}
pub struct Matcher {}

fn nyi(what: &str) -> wasmtime::Error {
    wasmtime::Error::msg(not_yet(what))
}

impl Host for PieView<'_> {}

impl HostForwardPass for PieView<'_> {
    fn new(&mut self, _model: Resource<Model>) -> wasmtime::Result<Resource<ForwardPass>> {
        Err(nyi("forward-pass"))
    }
    fn context(
        &mut self,
        _this: Resource<ForwardPass>,
        _context: Resource<Context>,
    ) -> wasmtime::Result<()> {
        Err(nyi("forward-pass.context"))
    }
    fn input_tokens(
        &mut self,
        _this: Resource<ForwardPass>,
        _tokens: Vec<u32>,
        _positions: Vec<u32>,
    ) -> wasmtime::Result<()> {
        Err(nyi("forward-pass.input-tokens"))
    }
    fn input_speculative_tokens(
        &mut self,
        _this: Resource<ForwardPass>,
        _tokens: Vec<u32>,
        _positions: Vec<u32>,
    ) -> wasmtime::Result<()> {
        Err(nyi("forward-pass.input-speculative-tokens"))
    }
    fn output_speculative_tokens(
        &mut self,
        _this: Resource<ForwardPass>,
        _flag: bool,
    ) -> wasmtime::Result<()> {
        Err(nyi("forward-pass.output-speculative-tokens"))
    }
    fn attention_mask(
        &mut self,
        _this: Resource<ForwardPass>,
        _mask: Vec<Vec<u32>>,
    ) -> wasmtime::Result<()> {
        Err(nyi("forward-pass.attention-mask"))
    }
    fn logit_mask(
        &mut self,
        _this: Resource<ForwardPass>,
        _mask: Vec<u32>,
    ) -> wasmtime::Result<()> {
        Err(nyi("forward-pass.logit-mask"))
    }
    fn sampler(
        &mut self,
        _this: Resource<ForwardPass>,
        _indices: Vec<u32>,
        _sampler: Sampler,
    ) -> wasmtime::Result<()> {
        Err(nyi("forward-pass.sampler"))
    }
    fn adapter(
        &mut self,
        _this: Resource<ForwardPass>,
        _adapter: Resource<Adapter>,
    ) -> wasmtime::Result<()> {
        Err(nyi("forward-pass.adapter"))
    }
    fn execute(
        &mut self,
        _this: Resource<ForwardPass>,
    ) -> wasmtime::Result<Result<Resource<FutureOutput>, String>> {
        Ok(Err(not_yet("forward-pass.execute")))
    }
    fn drop(&mut self, this: Resource<ForwardPass>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl HostFutureOutput for PieView<'_> {
    fn pollable(
        &mut self,
        _this: Resource<FutureOutput>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        Err(nyi("future-output.pollable"))
    }
    fn get(&mut self, _this: Resource<FutureOutput>) -> wasmtime::Result<Option<Output>> {
        Err(nyi("future-output.get"))
    }
    fn drop(&mut self, this: Resource<FutureOutput>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl HostGrammar for PieView<'_> {
    fn from_json_schema(
        &mut self,
        _schema: String,
    ) -> wasmtime::Result<Result<Resource<Grammar>, String>> {
        Ok(Err(not_yet("grammar.from-json-schema")))
    }
    fn json(&mut self) -> wasmtime::Result<Resource<Grammar>> {
        Err(nyi("grammar.json"))
    }
    fn from_regex(
        &mut self,
        _pattern: String,
    ) -> wasmtime::Result<Result<Resource<Grammar>, String>> {
        Ok(Err(not_yet("grammar.from-regex")))
    }
    fn from_ebnf(&mut self, _ebnf: String) -> wasmtime::Result<Result<Resource<Grammar>, String>> {
        Ok(Err(not_yet("grammar.from-ebnf")))
    }
    fn to_string(&mut self, _this: Resource<Grammar>) -> wasmtime::Result<String> {
        Err(nyi("grammar.to-string"))
    }
    fn drop(&mut self, this: Resource<Grammar>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl HostMatcher for PieView<'_> {
    fn new(
        &mut self,
        _grammar: Resource<Grammar>,
        _tokenizer: Resource<Tokenizer>,
    ) -> wasmtime::Result<Resource<Matcher>> {
        Err(nyi("matcher"))
    }
    fn accept_tokens(
        &mut self,
        _this: Resource<Matcher>,
        _token_ids: Vec<u32>,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(Err(not_yet("matcher.accept-tokens")))
    }
    fn next_token_logit_mask(&mut self, _this: Resource<Matcher>) -> wasmtime::Result<Vec<u32>> {
        Err(nyi("matcher.next-token-logit-mask"))
    }
    fn is_terminated(&mut self, _this: Resource<Matcher>) -> wasmtime::Result<bool> {
        Err(nyi("matcher.is-terminated"))
    }
    fn reset(&mut self, _this: Resource<Matcher>) -> wasmtime::Result<()> {
        Err(nyi("matcher.reset"))
    }
    fn drop(&mut self, this: Resource<Matcher>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
