//! GGUF import: container parsing, block dequantization, tokenizer reconstruction and the
//! conversion into a Hugging Face directory.

pub mod convert;
pub mod dequant;
pub mod reader;
pub mod tokenizer;
