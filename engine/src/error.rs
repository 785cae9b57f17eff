//! The engine's error type. Each variant says which layer failed so that the daemon can map
//! recoverable conditions (a full KV pool, a bad request) to guest-visible errors and the rest
//! to traps.

use thiserror::Error;

/// Everything the engine can fail with.
#[derive(Debug, Error)]
pub enum Error {
    /// A file of the model directory could not be read.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is missing a field, has a bad value or names an unsupported architecture.
    #[error("config: {0}")]
    Config(String),
    /// A safetensors file is malformed, or a tensor is missing or has the wrong shape or dtype.
    #[error("weights: {0}")]
    Weights(String),
    /// `tokenizer.json` could not be loaded, or encoding/decoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The chat template failed to compile or render.
    #[error("chat template: {0}")]
    Template(String),
    /// The KV page pool has fewer free pages than asked for. Recoverable: release pages or
    /// wait, then retry.
    #[error("KV cache exhausted: {requested} pages requested, {free} free of {total}")]
    KvExhausted {
        requested: usize,
        free: usize,
        total: usize,
    },
    /// A forward request is inconsistent (lengths, page ids, token ids, output indices).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The scheduler thread has stopped; no more requests are accepted.
    #[error("engine is shut down")]
    Shutdown,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
