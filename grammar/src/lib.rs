//! Constrained decoding for pied: the `grammar` and `matcher` resources of
//! `pie:core/inference`, on [llguidance](https://github.com/guidance-ai/llguidance).
//!
//! # Overview
//!
//! - [`TokEnv`]: a model's tokenizer as the grammar compiler sees it (every token's bytes in
//!   a trie, its EOS tokens) plus a cache of compiled grammars. One per served model.
//! - [`Grammar`]: a JSON Schema, any JSON, a regex or a Lark grammar, validated when made
//!   (no tokenizer needed, as the WIT's static constructors require).
//! - [`Matcher`]: one generation's state. [`Matcher::next_token_mask`] gives the allowed
//!   tokens as an [`engine::Brle`] (`true` = allowed, the engine's `logit_mask`
//!   convention); [`Matcher::accept_tokens`] advances, refusing a token the grammar does not
//!   allow there without changing state.
//!
//! ```no_run
//! use grammar::{Grammar, Matcher, TokEnv};
//! # fn main() -> Result<(), grammar::Error> {
//! let env = TokEnv::from_tokenizer_json(
//!     std::path::Path::new("state/models/smollm2-135m/tokenizer.json"),
//!     &[2, 0], // <|im_end|>, <|endoftext|>
//! )?;
//! let g = Grammar::json_schema(r#"{"type":"object","properties":{"n":{"type":"integer"}},"required":["n"]}"#)?;
//! let mut m = Matcher::new(&env, &g)?;
//! loop {
//!     let mask = m.next_token_mask();          // → ForwardRequest::logit_mask
//!     let token: u32 = todo!("sample with the mask");
//!     if env.eos_ids().contains(&token) { break }
//!     m.accept_tokens(&[token])?;
//! }
//! # Ok(()) }
//! ```
//!
//! # Choices
//!
//! - EBNF is GBNF (`root ::= ...`, what Pie's runtime takes; translated to Lark) or
//!   llguidance's Lark dialect (`start: ...`), told apart by the first rule ([`Grammar::ebnf`]).
//! - JSON is generated compact, `{"a": 1, "b": [2, 3]}`, unless the schema's `"x-guidance"`
//!   says otherwise ([`Grammar::json_schema`]).
//! - A matcher that fails internally allows only EOS from then on, so a generation ends
//!   rather than sampling from an empty mask; [`Matcher::error`] says why.

mod cache;
mod error;
mod gbnf;
mod grammar;
mod mask;
mod matcher;
mod tok_env;

pub use error::{Error, Result};
pub use grammar::{Grammar, GrammarKind};
pub use matcher::Matcher;
pub use tok_env::{TokEnv, TokenizerSource};
