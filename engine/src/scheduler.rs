//! The engine thread: takes forward requests from many callers over a channel and runs them
//! on the backend in batches. It fires as soon as the previous batch is done and something is
//! queued (continuous batching), puts every caller's short (decode) requests first, then fills
//! the token budget with prefill chunks shared fairly between callers (chunked prefill), and
//! samples each output slot before completing the request.
//!
//! Requests of one caller run in submission order; a later request of a caller joins a batch
//! only when all earlier ones are in it completely, so a caller may pipeline dependent steps.

use crate::backend::{Backend, BatchInput, OutputSlot, SeqInput};
use crate::brle::Brle;
use crate::completion::Completer;
use crate::error::{Error, Result};
use crate::kv::{KvPlan, PageId};
use crate::sampling::{SampleOutput, Sampler};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Requests of at most this many tokens count as decode steps and go first.
const DECODE_TOKENS: usize = 4;

/// One output slot: which input token's logits, and what to compute from them.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputSpec {
    pub index: usize,
    pub sampler: Sampler,
}

/// A forward pass over `tokens` of one sequence.
#[derive(Debug, Clone, Default)]
pub struct ForwardRequest {
    /// Who asks (an inferlet process); fairness is between callers.
    pub caller: u64,
    pub tokens: Vec<u32>,
    /// RoPE position of each token.
    pub positions: Vec<u32>,
    /// The sequence's pages; the tokens are written to slots `kv_len..kv_len + tokens.len()`.
    pub kv_pages: Vec<PageId>,
    pub kv_len: usize,
    /// Page copies to run before this request (copy-on-write; see `KvContext::plan`).
    pub page_copies: Vec<(PageId, PageId)>,
    /// Optional attention mask per token over slots `0..kv_len + tokens.len()` (`true` =
    /// attend), intersected with causality.
    pub attention_mask: Option<Vec<Brle>>,
    /// Optional mask over the vocabulary (`true` = allowed), applied to every slot except
    /// `RawLogits`.
    pub logit_mask: Option<Brle>,
    pub outputs: Vec<OutputSpec>,
}

impl ForwardRequest {
    /// A request for `tokens` following the context described by `plan`, at consecutive
    /// positions starting at `first_position`.
    pub fn new(caller: u64, tokens: Vec<u32>, first_position: u32, plan: KvPlan) -> Self {
        let positions = (first_position..first_position + tokens.len() as u32).collect();
        ForwardRequest {
            caller,
            tokens,
            positions,
            kv_pages: plan.pages,
            kv_len: plan.kv_len,
            page_copies: plan.copies,
            ..Default::default()
        }
    }

    /// Adds an output slot for token `index`.
    pub fn output(mut self, index: usize, sampler: Sampler) -> Self {
        self.outputs.push(OutputSpec { index, sampler });
        self
    }

    /// Checks the request against the pool geometry and vocabulary.
    pub(crate) fn validate(&self, num_pages: usize, page_size: usize, vocab: usize) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidRequest(m));
        let n = self.tokens.len();
        if n == 0 {
            return bad("no input tokens".into());
        }
        if self.positions.len() != n {
            return bad(format!("{} positions for {n} tokens", self.positions.len()));
        }
        if let Some(t) = self.tokens.iter().find(|&&t| t as usize >= vocab) {
            return bad(format!("token id {t} out of vocabulary ({vocab})"));
        }
        let need = (self.kv_len + n).div_ceil(page_size);
        if self.kv_pages.len() < need {
            return bad(format!(
                "{} KV pages for {} tokens need {need}",
                self.kv_pages.len(),
                self.kv_len + n
            ));
        }
        let in_range = |p: &PageId| (*p as usize) < num_pages;
        if !self.kv_pages.iter().all(in_range)
            || !self
                .page_copies
                .iter()
                .all(|(a, b)| in_range(a) && in_range(b))
        {
            return bad("KV page id out of range".into());
        }
        if let Some(m) = &self.attention_mask
            && m.len() != n
        {
            return bad(format!("{} attention mask rows for {n} tokens", m.len()));
        }
        if let Some(o) = self.outputs.iter().find(|o| o.index >= n) {
            return bad(format!(
                "output index {} out of range ({n} tokens)",
                o.index
            ));
        }
        Ok(())
    }
}

/// The outputs of a request, in the order of its output slots.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardOutput {
    pub outputs: Vec<SampleOutput>,
    /// Sequence number (1-based) of the batch that completed the request: for tracing and for
    /// checking scheduling order.
    pub batch: u64,
}

/// Counters the engine thread updates (read them with `Engine::stats`).
#[derive(Debug, Default)]
pub struct EngineStats {
    pub batches: AtomicU64,
    pub sequences: AtomicU64,
    pub tokens: AtomicU64,
    pub requests_done: AtomicU64,
    pub busy_ns: AtomicU64,
}

/// A snapshot of `EngineStats`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsSnapshot {
    pub batches: u64,
    /// Mean number of sequences (request chunks) per batch.
    pub mean_batch_size: f64,
    pub tokens_processed: u64,
    pub requests_done: u64,
    pub busy_seconds: f64,
}

impl EngineStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        let b = self.batches.load(Relaxed);
        StatsSnapshot {
            batches: b,
            mean_batch_size: if b == 0 {
                0.0
            } else {
                self.sequences.load(Relaxed) as f64 / b as f64
            },
            tokens_processed: self.tokens.load(Relaxed),
            requests_done: self.requests_done.load(Relaxed),
            busy_seconds: self.busy_ns.load(Relaxed) as f64 * 1e-9,
        }
    }
}

pub(crate) struct Pending {
    pub req: ForwardRequest,
    pub done: Completer<ForwardOutput>,
}

struct Active {
    req: ForwardRequest,
    pages: Arc<[PageId]>,
    mask: Option<Arc<[Brle]>>,
    /// Tokens already run (chunked prefill progress).
    progress: usize,
    results: Vec<Option<SampleOutput>>,
    done: Completer<ForwardOutput>,
}

impl Active {
    fn new(p: Pending) -> Self {
        Active {
            pages: p.req.kv_pages.clone().into(),
            mask: p.req.attention_mask.clone().map(Into::into),
            results: vec![None; p.req.outputs.len()],
            progress: 0,
            req: p.req,
            done: p.done,
        }
    }

    fn remaining(&self) -> usize {
        self.req.tokens.len() - self.progress
    }
}

/// One batch entry: (caller, index in that caller's queue, rows to run).
struct Pick {
    caller: u64,
    idx: usize,
    len: usize,
}

pub(crate) fn run(
    mut backend: Box<dyn Backend>,
    rx: Receiver<Vec<Pending>>,
    max_batch_tokens: usize,
    batch_wait: Duration,
    stats: Arc<EngineStats>,
) {
    let mut queues: BTreeMap<u64, VecDeque<Active>> = BTreeMap::new();
    let mut turn = 0usize;
    loop {
        if queues.is_empty() {
            match rx.recv() {
                Ok(ps) => enqueue(&mut queues, ps),
                Err(_) => return,
            }
        }
        while let Ok(ps) = rx.try_recv() {
            enqueue(&mut queues, ps);
        }
        let picks = pick(&queues, max_batch_tokens, turn);
        turn = turn.wrapping_add(1);
        let t0 = Instant::now();
        run_batch(backend.as_mut(), &mut queues, &picks, &stats);
        stats
            .busy_ns
            .fetch_add(t0.elapsed().as_nanos() as u64, Relaxed);
        // Completed requests are at the front of their queues.
        let mut waiting_for: Vec<u64> = Vec::new();
        for (&caller, q) in queues.iter_mut() {
            while q.front().is_some_and(|a| a.remaining() == 0) {
                if q.len() == 1 {
                    waiting_for.push(caller);
                }
                let a = q.pop_front().expect("checked");
                let outputs = a
                    .results
                    .into_iter()
                    .map(|o| o.expect("every slot computed"))
                    .collect();
                let batch = stats.batches.load(Relaxed);
                a.done.complete(Ok(ForwardOutput { outputs, batch }));
                stats.requests_done.fetch_add(1, Relaxed);
            }
        }
        queues.retain(|_, q| !q.is_empty());
        // Callers whose step just completed usually submit the next one within microseconds
        // (a decode loop). Give them up to `batch_wait` to do so, so that they join the next
        // batch instead of trickling in one batch later: it keeps decode batches full.
        if !waiting_for.is_empty() && !batch_wait.is_zero() {
            let deadline = Instant::now() + batch_wait;
            while waiting_for.iter().any(|c| !queues.contains_key(c)) {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                match rx.recv_timeout(deadline - now) {
                    Ok(ps) => enqueue(&mut queues, ps),
                    Err(_) => break,
                }
            }
        }
    }
}

fn enqueue(queues: &mut BTreeMap<u64, VecDeque<Active>>, ps: Vec<Pending>) {
    for p in ps {
        queues
            .entry(p.req.caller)
            .or_default()
            .push_back(Active::new(p));
    }
}

/// Chooses the next batch: decode steps of every caller first, then prefill chunks with the
/// remaining budget split evenly among callers, starting with a rotating caller.
fn pick(queues: &BTreeMap<u64, VecDeque<Active>>, budget: usize, turn: usize) -> Vec<Pick> {
    let callers: Vec<u64> = queues.keys().copied().collect();
    let n = callers.len();
    let order: Vec<u64> = (0..n).map(|i| callers[(i + turn) % n]).collect();
    let mut left = budget;
    let mut picks = Vec::new();
    // Per caller: how far into its queue we got (all before are fully picked).
    let mut next: BTreeMap<u64, usize> = BTreeMap::new();
    for &c in &order {
        let q = &queues[&c];
        let mut i = 0;
        while i < q.len() && q[i].remaining() <= DECODE_TOKENS && q[i].remaining() <= left {
            picks.push(Pick {
                caller: c,
                idx: i,
                len: q[i].remaining(),
            });
            left -= q[i].remaining();
            i += 1;
        }
        next.insert(c, i);
    }
    // Prefill: rounds of fair shares until the budget or the work runs out.
    loop {
        let wanting: Vec<u64> = order
            .iter()
            .copied()
            .filter(|c| next[c] < queues[c].len())
            .collect();
        if wanting.is_empty() || left == 0 {
            break;
        }
        let share = left.div_ceil(wanting.len()).max(1);
        for c in wanting {
            if left == 0 {
                break;
            }
            let q = &queues[&c];
            let i = next[&c];
            let take = q[i].remaining().min(share).min(left);
            picks.push(Pick {
                caller: c,
                idx: i,
                len: take,
            });
            left -= take;
            if take == q[i].remaining() {
                next.insert(c, i + 1);
            } else {
                // Partially picked: this caller is done for this batch.
                next.insert(c, usize::MAX);
            }
        }
        if next.values().all(|&v| v == usize::MAX) {
            break;
        }
        // Callers marked done stay done; others may take more in the next round.
        let more = order
            .iter()
            .any(|c| next[c] != usize::MAX && next[c] < queues[c].len());
        if !more {
            break;
        }
    }
    picks
}

fn run_batch(
    backend: &mut dyn Backend,
    queues: &mut BTreeMap<u64, VecDeque<Active>>,
    picks: &[Pick],
    stats: &EngineStats,
) {
    let mut batch = BatchInput::default();
    // (pick index, output slot index) for every output row.
    let mut out_map = Vec::new();
    for (pi, p) in picks.iter().enumerate() {
        let a = &queues[&p.caller][p.idx];
        if a.progress == 0 {
            for &(src, dst) in &a.req.page_copies {
                backend.copy_page(src, dst);
            }
        }
        let start = batch.tokens.len();
        let (lo, hi) = (a.progress, a.progress + p.len);
        batch.tokens.extend_from_slice(&a.req.tokens[lo..hi]);
        batch.positions.extend_from_slice(&a.req.positions[lo..hi]);
        batch.seqs.push(SeqInput {
            start,
            len: p.len,
            kv_pages: a.pages.clone(),
            kv_len: a.req.kv_len + lo,
            mask: a.mask.clone(),
            mask_row0: lo,
        });
        for (si, o) in a.req.outputs.iter().enumerate() {
            if (lo..hi).contains(&o.index) {
                batch.outputs.push(start + o.index - lo);
                out_map.push((pi, si));
            }
        }
    }
    stats.batches.fetch_add(1, Relaxed);
    stats.sequences.fetch_add(picks.len() as u64, Relaxed);
    stats.tokens.fetch_add(batch.tokens.len() as u64, Relaxed);
    let slots: Vec<OutputSlot<'_>> = out_map
        .iter()
        .map(|&(pi, si)| {
            let a = &queues[&picks[pi].caller][picks[pi].idx];
            OutputSlot {
                sampler: &a.req.outputs[si].sampler,
                logit_mask: a.req.logit_mask.as_ref(),
            }
        })
        .collect();
    // A panic in the backend (a bug) fails this batch's requests instead of killing the
    // engine thread and leaving every caller waiting.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        backend.forward_sample(&batch, &slots)
    }))
    .unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(Error::InvalidRequest(format!("backend panicked: {msg}")))
    });
    drop(slots);
    match result {
        Ok(outs) => {
            for (out, &(pi, si)) in outs.into_iter().zip(&out_map) {
                let p = &picks[pi];
                queues.get_mut(&p.caller).expect("picked")[p.idx].results[si] = Some(out);
            }
            for p in picks {
                queues.get_mut(&p.caller).expect("picked")[p.idx].progress += p.len;
            }
        }
        Err(e) => {
            // Fail every request of the batch: remove them back to front so indices hold.
            let msg = e.to_string();
            let mut gone: Vec<(u64, usize)> = picks.iter().map(|p| (p.caller, p.idx)).collect();
            gone.sort_unstable_by(|a, b| b.cmp(a));
            gone.dedup();
            for (c, i) in gone {
                if let Some(a) = queues.get_mut(&c).and_then(|q| q.remove(i)) {
                    a.done.complete(Err(Error::InvalidRequest(format!(
                        "forward pass failed: {msg}"
                    ))));
                }
            }
        }
    }
}
