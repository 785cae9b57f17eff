//! pied's model store: a directory of models the engine can load, and the importers that fill
//! it from a GGUF file or a Hugging Face directory.
//!
//! # Overview
//! - [`ModelStore`] owns `<state>/models`. Each entry `<models>/<name>/` is a complete Hugging
//!   Face directory (`config.json`, `model.safetensors` or shards with
//!   `model.safetensors.index.json`, `tokenizer.json`, `tokenizer_config.json`,
//!   `generation_config.json`) plus `pie-model.json`, the [`ModelEntry`] manifest.
//! - Imports are atomic: they are built in a hidden temp directory inside the store and renamed
//!   into place at the end, so a listed entry is always complete.
//! - GGUF import (`gguf`) is pure Rust: it dequantizes F32/F16/BF16/Q8_0/Q4_0/Q4_1 to bf16
//!   (or f16/f32), undoes llama.cpp's Q/K row permutation and rebuilds the tokenizer from the
//!   metadata. HF import (`hf`) validates the directory against the engine's Llama layout and
//!   hard-links it in.
//!
//! # Architecture invariant
//! Everything in a store entry was checked against [`arch::LlamaShape`]: the engine may assume
//! the tensor names and shapes implied by `config.json` are present.

pub mod arch;
pub mod gguf;
mod hf;
mod safetensors_write;
mod store;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use gguf::dequant::OutDtype;
pub use store::{ImportOptions, MANIFEST, ModelStore, validate_name};

/// The manifest of one store entry (`pie-model.json`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ModelEntry {
    pub name: String,
    /// The entry's directory; set from the store's location when read, not trusted from disk.
    pub dir: PathBuf,
    /// HF architecture, e.g. `LlamaForCausalLM`.
    pub architecture: String,
    /// `gguf:<file>` or `hf:<dir>` (absolute paths at import time).
    pub source: String,
    /// Weight dtype: `bf16`, `f16`, `f32`, or `mixed(...)` for an HF import mixing them.
    pub dtype: String,
    pub params: u64,
    /// Total size of the entry's files.
    pub bytes: u64,
    pub created_unix: u64,
    #[serde(default)]
    pub layers: u64,
    #[serde(default)]
    pub hidden: u64,
    #[serde(default)]
    pub intermediate: u64,
    #[serde(default)]
    pub heads: u64,
    #[serde(default)]
    pub kv_heads: u64,
    #[serde(default)]
    pub head_dim: u64,
    #[serde(default)]
    pub vocab: u64,
    #[serde(default)]
    pub max_position_embeddings: u64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
}

/// Import progress: `done` of `total` units (bytes) of the current `stage`
/// (`convert` for GGUF tensors, `copy` for HF files).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub stage: &'static str,
    pub done: u64,
    pub total: u64,
}

/// What an importer produced, before the store wraps it into a [`ModelEntry`].
pub(crate) struct Converted {
    pub architecture: String,
    pub dtype: String,
    pub params: u64,
    pub max_position_embeddings: u64,
    pub shape: arch::LlamaShape,
}
