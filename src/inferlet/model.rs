//! `pie:core/model`: models served by this daemon and their tokenizers.
//!
//! `model.load(name)` opens one of the `[[model]]`s the daemon loaded (see `runtime.models`,
//! the default model first); the handle shares the model's engine, so every process that
//! loads it is batched by the same engine thread.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::pie::core::model::{Host, HostModel, HostTokenizer};
use super::{PieView, stale};

/// A loaded model as the guest sees it.
#[derive(Clone)]
pub struct Model {
    pub name: String,
    pub engine: Arc<engine::Engine>,
}

/// A model's tokenizer.
#[derive(Clone)]
pub struct Tokenizer {
    pub model: Model,
}

impl PieView<'_> {
    /// The model behind a handle (cheap clone).
    /// Same as `model_of` (where a `Host…` trait with a `model` method is in scope, use that).
    pub fn model(&self, m: &Resource<Model>) -> wasmtime::Result<Model> {
        self.model_of(m)
    }

    /// The model behind a handle (cheap clone).
    pub fn model_of(&self, m: &Resource<Model>) -> wasmtime::Result<Model> {
        self.table.get(m).cloned().map_err(|_| stale("model"))
    }
}

fn tokenizer_of(m: &Model) -> Result<&Arc<engine::Tokenizer>, String> {
    m.engine
        .tokenizer()
        .ok_or_else(|| format!("model {} has no tokenizer (tokenizer.json missing)", m.name))
}

/// GPT-2's byte → printable char table, inverted: byte-level BPE vocabularies spell bytes
/// with these chars.
fn byte_level_decoder() -> std::collections::HashMap<char, u8> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    bs.into_iter()
        .zip(cs)
        .map(|(b, c)| (char::from_u32(c).expect("valid"), b as u8))
        .collect()
}

/// Whether the tokenizer spells bytes GPT-2 style (a ByteLevel pre-tokenizer or decoder).
fn is_byte_level(tok: &engine::Tokenizer) -> bool {
    let inner = tok.inner();
    let has = |v: serde_json::Value| v.to_string().contains("\"ByteLevel\"");
    inner
        .get_pre_tokenizer()
        .and_then(|p| serde_json::to_value(p).ok())
        .is_some_and(has)
        || inner
            .get_decoder()
            .and_then(|d| serde_json::to_value(d).ok())
            .is_some_and(has)
}

/// The bytes each token id stands for (byte-level BPE or SentencePiece spelling).
pub fn token_bytes(tok: &engine::Tokenizer) -> (Vec<u32>, Vec<Vec<u8>>) {
    let inner = tok.inner();
    let vocab = inner.get_vocab(true);
    let mut entries: Vec<(u32, String)> = vocab.into_iter().map(|(s, id)| (id, s)).collect();
    entries.sort_unstable_by_key(|e| e.0);
    let byte_level = is_byte_level(tok);
    let table = byte_level.then(byte_level_decoder);
    let specials: std::collections::HashSet<u32> = inner
        .get_added_tokens_decoder()
        .into_iter()
        .filter(|(_, t)| t.special)
        .map(|(id, _)| id)
        .collect();
    let mut ids = Vec::with_capacity(entries.len());
    let mut bytes = Vec::with_capacity(entries.len());
    for (id, s) in entries {
        let b = if specials.contains(&id) {
            s.into_bytes()
        } else if let Some(t) = &table {
            s.chars()
                .map(|c| t.get(&c).copied())
                .collect::<Option<Vec<u8>>>()
                .unwrap_or_else(|| s.clone().into_bytes())
        } else if s.len() == 6 && s.starts_with("<0x") && s.ends_with('>') {
            u8::from_str_radix(&s[3..5], 16).map_or_else(|_| s.clone().into_bytes(), |b| vec![b])
        } else {
            s.replace('\u{2581}', " ").into_bytes()
        };
        ids.push(id);
        bytes.push(b);
    }
    (ids, bytes)
}

/// GPT-2's pre-tokenization pattern, used by `ByteLevel { use_regex: true }`.
const GPT2_SPLIT: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// The split regex of the tokenizer's pre-tokenizer: an explicit `Split` pattern if there is
/// one, GPT-2's for a regex-using ByteLevel, else empty.
pub fn split_regex(tok: &engine::Tokenizer) -> String {
    let Some(v) = tok
        .inner()
        .get_pre_tokenizer()
        .and_then(|p| serde_json::to_value(p).ok())
    else {
        return String::new();
    };
    fn find(v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::Object(o) => {
                if o.get("type").and_then(|t| t.as_str()) == Some("Split")
                    && let Some(r) = o
                        .get("pattern")
                        .and_then(|p| p.get("Regex"))
                        .and_then(|r| r.as_str())
                {
                    return Some(r.to_owned());
                }
                if o.get("type").and_then(|t| t.as_str()) == Some("ByteLevel")
                    && o.get("use_regex").and_then(|u| u.as_bool()) != Some(false)
                {
                    return Some(GPT2_SPLIT.to_owned());
                }
                o.values().find_map(find)
            }
            serde_json::Value::Array(a) => a.iter().find_map(find),
            _ => None,
        }
    }
    find(&v).unwrap_or_default()
}

impl Host for PieView<'_> {}

impl HostModel for PieView<'_> {
    fn load(&mut self, name: String) -> wasmtime::Result<Result<Resource<Model>, String>> {
        let Some(engine) = self.ctx.shared.models.get(&name) else {
            return Ok(Err(format!(
                "no model named {name:?} is served (served: {})",
                crate::util::names_or_none(self.ctx.shared.models.keys())
            )));
        };
        let m = Model {
            name,
            engine: engine.clone(),
        };
        Ok(Ok(self.table.push(m)?))
    }

    fn tokenizer(&mut self, this: Resource<Model>) -> wasmtime::Result<Resource<Tokenizer>> {
        let model = self.model_of(&this)?;
        Ok(self.table.push(Tokenizer { model })?)
    }

    fn drop(&mut self, this: Resource<Model>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl PieView<'_> {
    fn tok(&self, t: &Resource<Tokenizer>) -> wasmtime::Result<Model> {
        Ok(self
            .table
            .get(t)
            .map_err(|_| stale("tokenizer"))?
            .model
            .clone())
    }
}

impl HostTokenizer for PieView<'_> {
    fn encode(&mut self, this: Resource<Tokenizer>, text: String) -> wasmtime::Result<Vec<u32>> {
        let m = self.tok(&this)?;
        // The interface has no error case: a model without a tokenizer traps with the reason.
        let tok = tokenizer_of(&m).map_err(wasmtime::Error::msg)?;
        tok.encode(&text, false)
            .map_err(|e| wasmtime::Error::msg(format!("tokenizer.encode: {e}")))
    }

    fn decode(
        &mut self,
        this: Resource<Tokenizer>,
        tokens: Vec<u32>,
    ) -> wasmtime::Result<Result<String, String>> {
        let m = self.tok(&this)?;
        let tok = match tokenizer_of(&m) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let vocab = tok.vocab_size() as u32;
        if let Some(bad) = tokens.iter().find(|&&t| t >= vocab) {
            return Ok(Err(format!(
                "token id {bad} is outside the vocabulary (size {vocab})"
            )));
        }
        Ok(tok.decode(&tokens, false).map_err(|e| e.to_string()))
    }

    fn vocabs(&mut self, this: Resource<Tokenizer>) -> wasmtime::Result<(Vec<u32>, Vec<Vec<u8>>)> {
        let m = self.tok(&this)?;
        let tok = tokenizer_of(&m).map_err(wasmtime::Error::msg)?;
        Ok(token_bytes(tok))
    }

    fn split_regex(&mut self, this: Resource<Tokenizer>) -> wasmtime::Result<String> {
        let m = self.tok(&this)?;
        let tok = tokenizer_of(&m).map_err(wasmtime::Error::msg)?;
        Ok(split_regex(tok))
    }

    fn special_tokens(
        &mut self,
        this: Resource<Tokenizer>,
    ) -> wasmtime::Result<(Vec<u32>, Vec<Vec<u8>>)> {
        let m = self.tok(&this)?;
        let tok = tokenizer_of(&m).map_err(wasmtime::Error::msg)?;
        let mut specials: Vec<(u32, Vec<u8>)> = tok
            .inner()
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special)
            .map(|(id, t)| (id, t.content.into_bytes()))
            .collect();
        specials.sort_unstable_by_key(|s| s.0);
        Ok(specials.into_iter().unzip())
    }

    fn drop(&mut self, this: Resource<Tokenizer>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
