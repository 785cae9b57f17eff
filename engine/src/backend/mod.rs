//! The device boundary. A backend owns the model weights and the KV page storage of one device
//! and runs a batched forward pass; everything above it (pool accounting, scheduling,
//! sampling) is device-independent. The CPU backend is the default and the reference that a
//! CUDA backend is tested against.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;

use crate::brle::Brle;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::kv::PageId;
use crate::sampling::{SampleOutput, Sampler, sample_slot};
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

/// What one output row computes: its sampler and the request's allowed-token mask.
#[derive(Debug, Clone, Copy)]
pub struct OutputSlot<'a> {
    pub sampler: &'a Sampler,
    pub logit_mask: Option<&'a Brle>,
}

/// Checks a batch against the model and the KV pool before any device work.
pub fn validate_batch(
    b: &BatchInput,
    vocab: usize,
    num_pages: usize,
    page_size: usize,
) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidRequest(m));
    let t = b.tokens.len();
    if b.positions.len() != t {
        return bad("positions and tokens differ in length".into());
    }
    if let Some(&tok) = b.tokens.iter().find(|&&x| x as usize >= vocab) {
        return bad(format!("token id {tok} out of vocabulary ({vocab})"));
    }
    let mut covered = 0;
    for s in &b.seqs {
        if s.start != covered {
            return bad("sequences must cover the batch rows in order".into());
        }
        covered += s.len;
        let need = (s.kv_len + s.len).div_ceil(page_size);
        if s.kv_pages.len() < need {
            return bad(format!(
                "{} KV pages given, {need} needed",
                s.kv_pages.len()
            ));
        }
        if let Some(&p) = s.kv_pages.iter().find(|&&p| p as usize >= num_pages) {
            return bad(format!("KV page {p} out of range"));
        }
    }
    if covered != t {
        return bad("sequences do not cover the batch".into());
    }
    if b.outputs.iter().any(|&o| o >= t) {
        return bad("output row out of range".into());
    }
    Ok(())
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

    /// Runs the batch and computes every output slot (`slots[i]` belongs to
    /// `batch.outputs[i]`). The default samples on the host from [`Backend::forward`]'s
    /// logits; a GPU backend overrides it to sample where the logits are.
    fn forward_sample(
        &mut self,
        batch: &BatchInput,
        slots: &[OutputSlot<'_>],
    ) -> Result<Vec<SampleOutput>> {
        let logits = self.forward(batch)?;
        let vocab = self.config().vocab_size;
        Ok(slots
            .iter()
            .enumerate()
            .map(|(row, s)| {
                sample_slot(
                    s.sampler,
                    s.logit_mask,
                    &logits[row * vocab..(row + 1) * vocab],
                )
            })
            .collect())
    }
}
