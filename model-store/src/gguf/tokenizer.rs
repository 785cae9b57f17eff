//! Rebuild HF `tokenizer.json` / `tokenizer_config.json` from a GGUF's `tokenizer.*` metadata.
//!
//! Only byte-level BPE (`tokenizer.ggml.model == "gpt2"`) is supported: the token strings in the
//! GGUF are already in GPT-2's byte-to-unicode alphabet, and merges are "left right" strings, so
//! they map one to one onto a `tokenizers` BPE model. What the GGUF does not store is the
//! pre-tokenizer; llama.cpp names it in `tokenizer.ggml.pre`, and we translate the names we know
//! (as the reference converter does) and refuse the rest rather than guess: a wrong
//! pre-tokenizer silently changes token ids.

use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};

use super::reader::GgufFile;

/// llama.cpp token types that are special tokens: CONTROL (3) and USER_DEFINED (4).
const SPECIAL_TYPES: [i64; 2] = [3, 4];

/// Token ids and strings that configs refer to.
pub struct Vocab {
    pub tokens: Vec<String>,
    pub bos: Option<u64>,
    pub eos: Option<u64>,
    pub unk: Option<u64>,
    pub pad: Option<u64>,
    pub special: Vec<usize>,
}

impl Vocab {
    pub fn read(g: &GgufFile) -> Result<Self> {
        let model = g.req_str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            bail!(
                "{}: tokenizer model `{model}` is not supported (only byte-level BPE, `gpt2`)",
                g.path.display()
            );
        }
        let tokens: Vec<String> = g
            .req_str_array("tokenizer.ggml.tokens")?
            .into_iter()
            .map(String::from)
            .collect();
        let types = g
            .opt_i64_array("tokenizer.ggml.token_type")?
            .unwrap_or_default();
        if !types.is_empty() && types.len() != tokens.len() {
            bail!(
                "{}: {} token types for {} tokens",
                g.path.display(),
                types.len(),
                tokens.len()
            );
        }
        let special = types
            .iter()
            .enumerate()
            .filter(|(_, t)| SPECIAL_TYPES.contains(t))
            .map(|(i, _)| i);
        let id = |key: &str| -> Result<Option<u64>> {
            let v = g.opt_u64(key)?;
            if let Some(i) = v.filter(|&i| i >= tokens.len() as u64) {
                bail!(
                    "{}: `{key}` = {i} is outside the vocabulary",
                    g.path.display()
                );
            }
            Ok(v)
        };
        Ok(Vocab {
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            pad: id("tokenizer.ggml.padding_token_id")?,
            special: special.collect(),
            tokens,
        })
    }

    fn token(&self, id: Option<u64>) -> Value {
        id.map_or(Value::Null, |i| {
            Value::String(self.tokens[i as usize].clone())
        })
    }
}

/// Pre-tokenizer for llama.cpp's `tokenizer.ggml.pre` name.
fn pre_tokenizer(g: &GgufFile) -> Result<Value> {
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                            "use_regex": true});
    match g.opt_str("tokenizer.ggml.pre")? {
        // These split every digit on its own before the GPT-2 regex.
        Some("smollm" | "starcoder" | "refact" | "qwen2") => Ok(json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level]
        })),
        None | Some("gpt2" | "default") => Ok(byte_level),
        Some(other) => bail!(
            "{}: pre-tokenizer `{other}` (tokenizer.ggml.pre) is not supported; known: smollm, \
             starcoder, refact, qwen2, gpt2, default",
            g.path.display()
        ),
    }
}

/// `tokenizer.json`.
pub fn tokenizer_json(g: &GgufFile, v: &Vocab) -> Result<Value> {
    let merges = g.req_str_array("tokenizer.ggml.merges")?;
    for (i, m) in merges.iter().enumerate() {
        // tokenizers splits legacy string merges on the single space; anything else would
        // fail to load, so catch it here with a message that points at the GGUF.
        if m.split(' ').count() != 2 {
            bail!(
                "{}: merge {i} `{m}` is not of the form `left right`",
                g.path.display()
            );
        }
    }
    let added: Vec<Value> = v
        .special
        .iter()
        .map(|&i| {
            json!({"id": i, "content": v.tokens[i], "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let vocab: Map<String, Value> = v
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    Ok(json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(g)?,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false,
                           "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "vocab": vocab,
            "merges": merges,
        }
    }))
}

/// `tokenizer_config.json`, carrying the chat template the engine renders.
pub fn tokenizer_config_json(g: &GgufFile, v: &Vocab, max_len: u64) -> Result<Value> {
    let named = [v.bos, v.eos, v.unk, v.pad];
    let additional: Vec<&str> = v
        .special
        .iter()
        .filter(|&&i| !named.contains(&Some(i as u64)))
        .map(|&i| v.tokens[i].as_str())
        .collect();
    let template = g
        .opt_str("tokenizer.chat_template")
        .context("reading the chat template")?
        .map_or(Value::Null, |t| Value::String(t.to_string()));
    Ok(json!({
        "add_bos_token": g.opt_bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false),
        "add_prefix_space": false,
        "bos_token": v.token(v.bos),
        "eos_token": v.token(v.eos),
        "pad_token": v.token(v.pad),
        "unk_token": v.token(v.unk),
        "clean_up_tokenization_spaces": false,
        "model_max_length": max_len,
        "tokenizer_class": "GPT2Tokenizer",
        "additional_special_tokens": additional,
        "chat_template": template,
    }))
}
