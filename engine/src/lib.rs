//! pied's LLM engine: a Llama-family model loaded from a Hugging Face directory, a paged KV
//! cache with prefix sharing, a scheduler thread that batches forward passes from many
//! callers, per-slot samplers, and a pure-Rust SIMD CPU backend.
//!
//! Brief overview of the main types:
//! - [`Engine`]: load a model, [`Engine::submit`] a [`ForwardRequest`], get a [`Completion`].
//! - [`KvPool`] / [`KvContext`]: page accounting, prefix sharing, copy-on-write fork.
//! - [`Sampler`] / [`SampleOutput`]: what each output slot computes.
//! - [`backend::Backend`]: the device boundary; [`backend::cpu::CpuBackend`] implements it.

pub mod backend;
pub mod brle;
pub mod chat_template;
pub mod completion;
pub mod config;
mod engine;
pub mod error;
pub mod kv;
pub mod model;
pub mod sampling;
pub mod scheduler;
pub mod tokenizer;
pub mod weights;

pub use brle::Brle;
pub use chat_template::{ChatTemplate, Message};
pub use completion::Completion;
pub use config::ModelConfig;
pub use engine::{CUDA_BUILT, Device, Engine, EngineOptions, cuda_device_count};
pub use error::{Error, Result};
pub use kv::{KvContext, KvPlan, KvPool, OnExhausted, PageId, PoolStats};
pub use sampling::{SampleOutput, SampleParams, Sampler};
pub use scheduler::{ForwardOutput, ForwardRequest, OutputSpec, StatsSnapshot};
pub use tokenizer::Tokenizer;
