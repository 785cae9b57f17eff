//! The device boundary. A backend owns the model weights and the KV page storage of one device
//! and runs a batched forward pass; everything above it (pool accounting, scheduling,
//! sampling) is device-independent. The CPU backend is the default and the reference that a
//! CUDA backend is tested against.

pub mod cpu;

use crate::brle::Brle;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::kv::PageId;
use std::sync::Arc;

/// One sequence's slice of a batch: `len` consecutive batch rows starting at `start`.
#[derive(Debug, Clone)]
pub struct SeqInput {
    pub start: usize,
    pub len: usize,
    /// The sequence's KV pages in order; slot `j` lives in page `kv_pages[j / page_size]`.
    pub kv_pages: Arc<[PageId]>,
    /// Slots already filled before this slice; row `i` writes slot `kv_len + i`.
    pub kv_len: usize,
    /// Optional attention masks, one per row of the whole request; `mask_row0` is the index of
    /// this slice's first row in it (chunked prefill). Row `i` may attend to slot `j` only if
    /// `j <= kv_len + i` and the mask says `true` at `j` (slots past the mask's end: allowed).
    pub mask: Option<Arc<[Brle]>>,
    pub mask_row0: usize,
}

/// A ragged batch: the rows of all sequences, concatenated.
#[derive(Debug, Clone, Default)]
pub struct BatchInput {
    pub tokens: Vec<u32>,
    pub positions: Vec<u32>,
    pub seqs: Vec<SeqInput>,
    /// Rows whose logits are wanted, in output order.
    pub outputs: Vec<usize>,
}

/// A device that runs the model.
pub trait Backend: Send {
    /// Short name for logs and stats ("cpu/avx512-bf16").
    fn name(&self) -> String;
    fn config(&self) -> &ModelConfig;
    /// Number of KV pages the device holds and tokens per page.
    fn kv_geometry(&self) -> (usize, usize);
    /// Copies one KV page (all layers) onto another: copy-on-write of shared pages.
    fn copy_page(&mut self, src: PageId, dst: PageId);
    /// Runs the batch, writes its K/V into the pages, and returns the logits of `outputs`,
    /// row-major `[outputs.len(), vocab_size]`.
    fn forward(&mut self, batch: &BatchInput) -> Result<Vec<f32>>;
}
