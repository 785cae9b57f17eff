//! `pie:core/inference`: forward passes, their outputs, grammars and matchers.
//!
//! A `forward-pass` collects inputs, masks and sampler slots, then `execute` turns it into
//! one `engine::ForwardRequest`: it takes the context's reserved pages, plans the KV pages
//! (copy-on-write of a shared page included), submits to the model's engine (validated
//! there, so bad input fails `execute`, not the batch) and returns a `future-output` at once.
//! The request is batched by the engine thread with every other process' requests; when it
//! completes, the tokens are recorded in the context and the output is ready.
//!
//! Semantics the SDK relies on:
//! - `input-tokens` may be called several times (appended). Indices of `sampler` slots
//!   count over this pass' input tokens, then its speculative tokens.
//! - A pass with no input tokens (the SDK's "bootstrap" step after a `flush`) samples from
//!   the context's last token: the host feeds that token again at its own position (same
//!   K/V) and index 0 refers to it.
//! - `sampler(indices, s)` yields one output slot per index, in order. Token samplers:
//!   `top-p`/`top-k`/`min-p`/`top-k-top-p`/`multinomial` (temperature 0 = argmax; seeds come
//!   from the process id and a per-process counter, so runs are reproducible); `dist` → the
//!   top-k ids and probabilities; `raw-logits` → little-endian f32 bytes (unmasked);
//!   `logprob`/`logprobs` → log-softmax values without temperature; `entropy`. `embedding` is
//!   not supported by this engine (`execute` fails saying so). `multinomial`'s `draws` must
//!   be ≥ 1 and yields one token per index (a slot holds one token).
//! - Speculative tokens: drafts are written after the inputs; the first token sampler
//!   placed at the last input verifies them: its slot becomes the accepted run (the token at
//!   the last input, then one more token for every draft that equals the previous accepted
//!   one). The SDK truncates the rejected drafts. pied has no drafter of its own, so
//!   `output-speculative-tokens` returns empty `spec-tokens`.
//! - Masks are BRLE with `true` = allowed (attend / keep the token). An attention mask has one
//!   row per token (inputs then drafts) over the context's tokens plus this pass' tokens.
//! - `future-output.get` returns `none` until the pass completes, and `none` for a pass that
//!   failed in the engine (the reason is written to the process' stderr).

use std::sync::{Arc, Mutex};

use engine::{
    Brle, Completion, ForwardOutput, ForwardRequest, OutputSpec, SampleOutput, SampleParams,
};
use wasmtime::component::Resource;
use wasmtime_wasi::p2::{DynPollable, Pollable};

use super::adapter::{Adapter, UNSUPPORTED};
use super::context::{Context, CtxState};
use super::model::{Model, Tokenizer};
use super::pie::core::inference::{
    Host, HostForwardPass, HostFutureOutput, HostGrammar, HostMatcher, Output, Sampler, SlotOutput,
};
use super::{PieView, stale};
use crate::events::EventLog;

/// Most tokens (inputs + drafts) one forward pass may carry.
pub const MAX_PASS_TOKENS: usize = 1 << 16;
/// Most output slots one forward pass may ask for.
pub const MAX_PASS_SLOTS: usize = 1 << 14;

pub struct ForwardPass {
    model: Model,
    context: Option<Arc<Mutex<CtxState>>>,
    tokens: Vec<u32>,
    positions: Vec<u32>,
    spec_tokens: Vec<u32>,
    spec_positions: Vec<u32>,
    attention_mask: Option<Vec<Vec<u32>>>,
    logit_mask: Option<Vec<u32>>,
    samplers: Vec<(Vec<u32>, Sampler)>,
    /// Output slots asked for so far (one per sampler index).
    slots: usize,
    adapter: bool,
    /// A problem found while building the pass, reported by `execute`.
    error: Option<String>,
}

impl ForwardPass {
    /// Checks tokens about to be added by `call` (input-tokens or input-speculative-tokens):
    /// a length mismatch with `positions` marks the pass failed (it fails at `execute`); more
    /// than [`MAX_PASS_TOKENS`] in the pass marks it failed and refuses the tokens (false).
    fn accepts_input(&mut self, call: &str, tokens: &[u32], positions: &[u32]) -> bool {
        if tokens.len() != positions.len() {
            self.error = Some(format!(
                "{call}: {} tokens but {} positions",
                tokens.len(),
                positions.len()
            ));
        }
        if self.tokens.len() + self.spec_tokens.len() + tokens.len() > MAX_PASS_TOKENS {
            self.error = Some(format!(
                "a forward pass takes at most {MAX_PASS_TOKENS} tokens"
            ));
            return false;
        }
        true
    }
}

/// How the engine's output slots map back to the guest's.
enum SlotPlan {
    /// One engine output.
    One,
    /// A speculative verification run: `1 + drafts` engine outputs, compared with `drafts`.
    Verify { drafts: Vec<u32> },
}

/// What completes a pass: recording its tokens in the context.
struct Finish {
    state: Arc<Mutex<CtxState>>,
    /// Leading tokens that were the context's pending tail (restored if the pass fails).
    pending: usize,
    tokens: Vec<u32>,
    positions: Vec<u32>,
    plan: Vec<SlotPlan>,
    log: Arc<EventLog>,
}

pub struct FutureOutput {
    completion: Option<Completion<ForwardOutput>>,
    finish: Option<Finish>,
    output: Option<Output>,
}

fn lock(state: &Mutex<CtxState>) -> std::sync::MutexGuard<'_, CtxState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Finish {
    fn apply(self, result: engine::Result<ForwardOutput>) -> Option<Output> {
        let mut s = lock(&self.state);
        s.inflight = false;
        let out = match result {
            Ok(o) => o,
            Err(e) => {
                s.pending = self.tokens[..self.pending].to_vec();
                s.pending_positions = self.positions[..self.pending].to_vec();
                drop(s);
                self.log.append(proto::EventKind::Stderr(
                    format!("forward pass failed: {e}\n").into_bytes(),
                ));
                return None;
            }
        };
        if let Some(kv) = s.kv.as_mut() {
            kv.commit(&self.tokens, &self.positions);
            s.positions.extend_from_slice(&self.positions);
        }
        drop(s);
        let mut outs = out.outputs.into_iter();
        let mut slots = Vec::with_capacity(self.plan.len());
        for p in self.plan {
            match p {
                SlotPlan::One => slots.push(slot(outs.next()?)),
                SlotPlan::Verify { drafts } => {
                    let run: Vec<SampleOutput> = outs.by_ref().take(drafts.len() + 1).collect();
                    let mut prev = None;
                    for (i, o) in run.into_iter().enumerate() {
                        let SampleOutput::Token(t) = o else { break };
                        if i > 0 && prev != Some(drafts[i - 1]) {
                            break;
                        }
                        slots.push(SlotOutput::Token(t));
                        prev = Some(t);
                    }
                }
            }
        }
        Some(Output {
            slots,
            spec_tokens: Vec::new(),
            spec_positions: Vec::new(),
        })
    }
}

fn slot(o: SampleOutput) -> SlotOutput {
    match o {
        SampleOutput::Token(t) => SlotOutput::Token(t),
        SampleOutput::Distribution { ids, probs } => SlotOutput::Distribution((ids, probs)),
        SampleOutput::Logits(v) => {
            SlotOutput::Logits(v.iter().flat_map(|x| x.to_le_bytes()).collect())
        }
        SampleOutput::Logprob(x) => SlotOutput::Logprobs(vec![x]),
        SampleOutput::Logprobs(v) => SlotOutput::Logprobs(v),
        SampleOutput::Entropy(e) => SlotOutput::Entropy(e),
    }
}

impl FutureOutput {
    fn settle(&mut self, result: engine::Result<ForwardOutput>) {
        self.completion = None;
        if let Some(f) = self.finish.take() {
            self.output = f.apply(result);
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for FutureOutput {
    async fn ready(&mut self) {
        if let Some(c) = self.completion.as_mut() {
            let r = c.await;
            self.settle(r);
        }
    }
}

impl Drop for FutureOutput {
    /// Dropped before completion: record the pass' tokens when it completes anyway, so the
    /// context stays consistent with its pages.
    fn drop(&mut self) {
        if let (Some(c), Some(f)) = (self.completion.take(), self.finish.take()) {
            match tokio::runtime::Handle::try_current() {
                Ok(h) => {
                    h.spawn(async move {
                        let r = c.await;
                        f.apply(r);
                    });
                }
                Err(_) => {
                    f.apply(c.wait());
                }
            }
        }
    }
}

/// The engine sampler for a WIT sampler (`Err` for what this engine cannot do).
fn engine_sampler(s: &Sampler, seed: u64, vocab: usize) -> Result<engine::Sampler, String> {
    use engine::Sampler as E;
    let sample = |t: f32, k: Option<u32>, p: Option<f32>, min_p: Option<f32>| {
        if !t.is_finite() || t < 0.0 {
            return Err(format!("temperature must be >= 0, got {t}"));
        }
        if let Some(p) = p.or(min_p)
            && !(0.0..=1.0).contains(&p)
        {
            return Err(format!("p must be within 0..=1, got {p}"));
        }
        if t == 0.0 {
            return Ok(E::Greedy);
        }
        Ok(E::Sample(SampleParams {
            temperature: t,
            top_k: k.map(|k| k as usize),
            top_p: p,
            min_p,
            seed,
        }))
    };
    match s {
        Sampler::Multinomial((t, draws)) => {
            if *draws == 0 {
                return Err("multinomial draws must be >= 1".into());
            }
            sample(*t, None, None, None)
        }
        Sampler::TopK((t, k)) => sample(*t, Some(*k), None, None),
        Sampler::TopP((t, p)) => sample(*t, None, Some(*p), None),
        Sampler::MinP((t, p)) => sample(*t, None, None, Some(*p)),
        Sampler::TopKTopP((t, k, p)) => sample(*t, Some(*k), Some(*p), None),
        Sampler::Embedding => Err("the embedding sampler is not supported by this engine".into()),
        // k = 0: the whole vocabulary, as the SDK documents.
        Sampler::Dist((t, k)) => Ok(E::TopKDistribution {
            k: if *k == 0 { vocab } else { *k as usize },
            temperature: *t,
        }),
        Sampler::RawLogits => Ok(E::RawLogits),
        Sampler::Logprob(t) => Ok(E::Logprob { token: *t }),
        Sampler::Logprobs(ts) => Ok(E::Logprobs { tokens: ts.clone() }),
        Sampler::Entropy => Ok(E::Entropy),
    }
}

fn is_token_sampler(s: &Sampler) -> bool {
    matches!(
        s,
        Sampler::Multinomial(_)
            | Sampler::TopK(_)
            | Sampler::TopP(_)
            | Sampler::MinP(_)
            | Sampler::TopKTopP(_)
    )
}

impl PieView<'_> {
    fn pass(&mut self, p: &Resource<ForwardPass>) -> wasmtime::Result<&mut ForwardPass> {
        self.table.get_mut(p).map_err(|_| stale("forward-pass"))
    }

    /// A seed for one sampler slot: process id, a per-process counter and the slot.
    fn next_seed(&mut self) -> u64 {
        self.ctx.sched.passes += 1;
        let mut z = self.ctx.process.id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.ctx.sched.passes;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z ^ (z >> 31)
    }

    fn execute_pass(
        &mut self,
        this: &Resource<ForwardPass>,
    ) -> wasmtime::Result<Result<FutureOutput, String>> {
        let seed = self.next_seed();
        let caller = self.ctx.process.id;
        let log = self.ctx.log.clone();
        let p = self.pass(this)?;
        if let Some(e) = &p.error {
            return Ok(Err(e.clone()));
        }
        if p.adapter {
            return Ok(Err(UNSUPPORTED.into()));
        }
        let Some(state) = p.context.clone() else {
            return Ok(Err(
                "the forward pass has no context (call `context` first)".into(),
            ));
        };
        let engine = p.model.engine.clone();
        let vocab = engine.config().vocab_size;
        let mut s = lock(&state);
        if s.inflight {
            return Ok(Err(
                "a forward pass on this context is still running; wait for its output first".into(),
            ));
        }
        if s.kv.is_none() {
            return Ok(Err("the context was destroyed".into()));
        }

        // A pass with no inputs samples after the context's last token: that token moves to
        // the pending tail (fed again at its own position, same K/V). The state stays valid
        // whatever fails below: pending tokens are only consumed by a submitted pass.
        if p.tokens.is_empty() && !p.samplers.is_empty() && s.pending.is_empty() {
            let kv = s.kv.as_mut().expect("checked");
            if kv.is_empty() {
                return Ok(Err(
                    "nothing to sample from: the pass has no input tokens and the context is empty"
                        .into(),
                ));
            }
            let last = *kv.tokens().last().expect("non-empty");
            let pos = kv.next_position() - 1;
            let keep = kv.len() - 1;
            kv.truncate(keep);
            s.positions.truncate(keep);
            s.pending.push(last);
            s.pending_positions.push(pos);
        }
        // Tokens of this request: the pending tail, the inputs, the drafts. Sampler indices
        // count from the first input, or from the last pending token when there is no input.
        let n_pending = s.pending.len();
        let mut tokens = s.pending.clone();
        let mut positions = s.pending_positions.clone();
        let prefix = if p.tokens.is_empty() && !p.samplers.is_empty() {
            tokens.len() - 1
        } else {
            tokens.len()
        };
        tokens.extend_from_slice(&p.tokens);
        positions.extend_from_slice(&p.positions);
        let n_main = tokens.len() - prefix;
        tokens.extend_from_slice(&p.spec_tokens);
        positions.extend_from_slice(&p.spec_positions);
        if tokens.is_empty() {
            return Ok(Err("the forward pass has no input tokens".into()));
        }
        let n_pass = tokens.len() - prefix;

        // Output slots.
        let mut outputs = Vec::new();
        let mut plan = Vec::new();
        let mut verified = false;
        let last_input = n_main.checked_sub(1);
        for (indices, sampler) in &p.samplers {
            let es = match engine_sampler(sampler, seed ^ outputs.len() as u64, vocab) {
                Ok(e) => e,
                Err(e) => return Ok(Err(e)),
            };
            for &i in indices {
                let i = i as usize;
                if i >= n_pass {
                    return Ok(Err(format!(
                        "sampler index {i} is past this pass' {n_pass} tokens"
                    )));
                }
                if !verified
                    && !p.spec_tokens.is_empty()
                    && is_token_sampler(sampler)
                    && Some(i) == last_input
                {
                    verified = true;
                    for k in 0..=p.spec_tokens.len() {
                        outputs.push(OutputSpec {
                            index: prefix + i + k,
                            sampler: match &es {
                                engine::Sampler::Sample(sp) => {
                                    let mut sp = sp.clone();
                                    sp.seed ^= (k as u64) << 32;
                                    engine::Sampler::Sample(sp)
                                }
                                other => other.clone(),
                            },
                        });
                    }
                    plan.push(SlotPlan::Verify {
                        drafts: p.spec_tokens.clone(),
                    });
                } else {
                    outputs.push(OutputSpec {
                        index: prefix + i,
                        sampler: es.clone(),
                    });
                    plan.push(SlotPlan::One);
                }
            }
        }

        let attention_mask = match &p.attention_mask {
            None => None,
            Some(rows) => {
                if rows.len() != n_pass {
                    return Ok(Err(format!(
                        "the attention mask has {} rows for {n_pass} tokens",
                        rows.len()
                    )));
                }
                let kv_len = s.kv.as_ref().expect("checked").len();
                let mut all: Vec<Brle> = (0..prefix)
                    .map(|j| Brle::filled(kv_len + j + 1, true))
                    .collect();
                all.extend(rows.iter().map(|r| Brle { runs: r.clone() }));
                Some(all)
            }
        };
        let logit_mask = p.logit_mask.as_ref().map(|m| Brle { runs: m.clone() });

        s.use_reserved(tokens.len());
        let kv = s.kv.as_mut().expect("checked");
        let kv_plan = match kv.plan(tokens.len()) {
            Ok(pl) => pl,
            Err(e) => return Ok(Err(format!("cannot get KV pages: {e}"))),
        };
        let req = ForwardRequest {
            caller,
            tokens: tokens.clone(),
            positions: positions.clone(),
            kv_pages: kv_plan.pages,
            kv_len: kv_plan.kv_len,
            page_copies: kv_plan.copies,
            attention_mask,
            logit_mask,
            outputs,
        };
        let completion = match engine.submit(req) {
            Ok(c) => c,
            Err(e) => return Ok(Err(format!("invalid forward pass: {e}"))),
        };
        s.inflight = true;
        s.pending.clear();
        s.pending_positions.clear();
        drop(s);
        Ok(Ok(FutureOutput {
            completion: Some(completion),
            finish: Some(Finish {
                state,
                pending: n_pending,
                tokens,
                positions,
                plan,
                log,
            }),
            output: None,
        }))
    }
}

impl Host for PieView<'_> {}

impl HostForwardPass for PieView<'_> {
    fn new(&mut self, model: Resource<Model>) -> wasmtime::Result<Resource<ForwardPass>> {
        let model = self.model_of(&model)?;
        Ok(self.table.push(ForwardPass {
            model,
            context: None,
            tokens: Vec::new(),
            positions: Vec::new(),
            spec_tokens: Vec::new(),
            spec_positions: Vec::new(),
            attention_mask: None,
            logit_mask: None,
            samplers: Vec::new(),
            slots: 0,
            adapter: false,
            error: None,
        })?)
    }

    fn context(
        &mut self,
        this: Resource<ForwardPass>,
        context: Resource<Context>,
    ) -> wasmtime::Result<()> {
        let c: &Context = self.table.get(&context).map_err(|_| stale("context"))?;
        let (cm, cs) = (c.model.name.clone(), c.state.clone());
        let p = self.pass(&this)?;
        if cm != p.model.name {
            p.error = Some(format!(
                "the context belongs to model {cm}, the forward pass to {}",
                p.model.name
            ));
        }
        p.context = Some(cs);
        Ok(())
    }

    fn input_tokens(
        &mut self,
        this: Resource<ForwardPass>,
        tokens: Vec<u32>,
        positions: Vec<u32>,
    ) -> wasmtime::Result<()> {
        let p = self.pass(&this)?;
        if !p.accepts_input("input-tokens", &tokens, &positions) {
            return Ok(());
        }
        p.tokens.extend(tokens);
        p.positions.extend(positions);
        Ok(())
    }

    fn input_speculative_tokens(
        &mut self,
        this: Resource<ForwardPass>,
        tokens: Vec<u32>,
        positions: Vec<u32>,
    ) -> wasmtime::Result<()> {
        let p = self.pass(&this)?;
        if !p.accepts_input("input-speculative-tokens", &tokens, &positions) {
            return Ok(());
        }
        p.spec_tokens.extend(tokens);
        p.spec_positions.extend(positions);
        Ok(())
    }

    /// Accepted for compatibility; pied has no drafter, so `spec-tokens` stays empty.
    fn output_speculative_tokens(
        &mut self,
        this: Resource<ForwardPass>,
        _flag: bool,
    ) -> wasmtime::Result<()> {
        self.pass(&this)?;
        Ok(())
    }

    fn attention_mask(
        &mut self,
        this: Resource<ForwardPass>,
        mask: Vec<Vec<u32>>,
    ) -> wasmtime::Result<()> {
        self.pass(&this)?.attention_mask = Some(mask);
        Ok(())
    }

    fn logit_mask(&mut self, this: Resource<ForwardPass>, mask: Vec<u32>) -> wasmtime::Result<()> {
        self.pass(&this)?.logit_mask = Some(mask);
        Ok(())
    }

    fn sampler(
        &mut self,
        this: Resource<ForwardPass>,
        indices: Vec<u32>,
        sampler: Sampler,
    ) -> wasmtime::Result<()> {
        let p = self.pass(&this)?;
        if p.slots + indices.len() > MAX_PASS_SLOTS {
            p.error = Some(format!(
                "a forward pass has at most {MAX_PASS_SLOTS} output slots"
            ));
            return Ok(());
        }
        p.slots += indices.len();
        p.samplers.push((indices, sampler));
        Ok(())
    }

    /// Adapters are not supported: `execute` then fails saying so.
    fn adapter(
        &mut self,
        this: Resource<ForwardPass>,
        _adapter: Resource<Adapter>,
    ) -> wasmtime::Result<()> {
        self.pass(&this)?.adapter = true;
        Ok(())
    }

    fn execute(
        &mut self,
        this: Resource<ForwardPass>,
    ) -> wasmtime::Result<Result<Resource<FutureOutput>, String>> {
        Ok(match self.execute_pass(&this)? {
            Ok(f) => Ok(self.table.push(f)?),
            Err(e) => Err(e),
        })
    }

    fn drop(&mut self, this: Resource<ForwardPass>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl HostFutureOutput for PieView<'_> {
    fn pollable(
        &mut self,
        this: Resource<FutureOutput>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let borrowed = Resource::<FutureOutput>::new_borrow(this.rep());
        wasmtime_wasi::p2::subscribe(self.table, borrowed)
    }

    fn get(&mut self, this: Resource<FutureOutput>) -> wasmtime::Result<Option<Output>> {
        let f = self
            .table
            .get_mut(&this)
            .map_err(|_| stale("future-output"))?;
        if let Some(c) = f.completion.as_mut()
            && let Some(r) = c.try_take()
        {
            f.settle(r);
        }
        Ok(f.output.take())
    }

    fn drop(&mut self, this: Resource<FutureOutput>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

/// A grammar (JSON Schema, any JSON, regex, or EBNF: GBNF or Lark), validated when made.
pub struct Grammar(pub grammar::Grammar);

/// A matcher walking a grammar for one model's tokenizer.
pub struct Matcher(pub grammar::Matcher);

/// The grammar compiler's view of a model's tokenizer, built once per model (about a second
/// for a 49k vocabulary) and shared by every process; it also caches compiled grammars.
pub fn tok_env(model: &Model) -> Result<grammar::TokEnv, String> {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static ENVS: OnceLock<Mutex<HashMap<usize, grammar::TokEnv>>> = OnceLock::new();
    let key = Arc::as_ptr(&model.engine) as usize;
    let envs = ENVS.get_or_init(Default::default);
    if let Some(e) = envs.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
        return Ok(e.clone());
    }
    let tok = model
        .engine
        .tokenizer()
        .ok_or_else(|| format!("model {} has no tokenizer", model.name))?;
    // End of generation: the model's eos ids plus the usual end-of-turn/text specials.
    let mut eos = model.engine.config().eos_token_ids.clone();
    for name in [
        "<|im_end|>",
        "<|endoftext|>",
        "<|eot_id|>",
        "<|end_of_text|>",
        "</s>",
    ] {
        if let Some(id) = tok.token_to_id(name)
            && !eos.contains(&id)
        {
            eos.push(id);
        }
    }
    let env = grammar::TokEnv::from_tokenizer(
        tok.inner().clone(),
        &eos,
        Some(model.engine.config().vocab_size),
    )
    .map_err(|e| format!("cannot prepare the tokenizer for grammars: {e}"))?;
    envs.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, env.clone());
    Ok(env)
}

impl PieView<'_> {
    fn push_grammar(
        &mut self,
        g: Result<grammar::Grammar, grammar::Error>,
    ) -> wasmtime::Result<Result<Resource<Grammar>, String>> {
        Ok(match g {
            Ok(g) => Ok(self.table.push(Grammar(g))?),
            Err(e) => Err(e.to_string()),
        })
    }

    fn matcher(&mut self, m: &Resource<Matcher>) -> wasmtime::Result<&mut grammar::Matcher> {
        Ok(&mut self.table.get_mut(m).map_err(|_| stale("matcher"))?.0)
    }
}

impl HostGrammar for PieView<'_> {
    fn from_json_schema(
        &mut self,
        schema: String,
    ) -> wasmtime::Result<Result<Resource<Grammar>, String>> {
        self.push_grammar(grammar::Grammar::json_schema(&schema))
    }

    fn json(&mut self) -> wasmtime::Result<Resource<Grammar>> {
        Ok(self.table.push(Grammar(grammar::Grammar::json()))?)
    }

    fn from_regex(
        &mut self,
        pattern: String,
    ) -> wasmtime::Result<Result<Resource<Grammar>, String>> {
        self.push_grammar(grammar::Grammar::regex(&pattern))
    }

    fn from_ebnf(&mut self, ebnf: String) -> wasmtime::Result<Result<Resource<Grammar>, String>> {
        self.push_grammar(grammar::Grammar::ebnf(&ebnf))
    }

    fn to_string(&mut self, this: Resource<Grammar>) -> wasmtime::Result<String> {
        Ok(self
            .table
            .get(&this)
            .map_err(|_| stale("grammar"))?
            .0
            .describe())
    }

    fn drop(&mut self, this: Resource<Grammar>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl HostMatcher for PieView<'_> {
    /// A grammar that does not compile for this tokenizer gives a failed matcher (the
    /// constructor cannot return an error): `accept-tokens` then fails with the reason and the
    /// mask allows only end-of-sequence tokens.
    fn new(
        &mut self,
        grammar: Resource<Grammar>,
        tokenizer: Resource<Tokenizer>,
    ) -> wasmtime::Result<Resource<Matcher>> {
        let g = self
            .table
            .get(&grammar)
            .map_err(|_| stale("grammar"))?
            .0
            .clone();
        let model = self
            .table
            .get(&tokenizer)
            .map_err(|_| stale("tokenizer"))?
            .model
            .clone();
        let env = tok_env(&model).map_err(wasmtime::Error::msg)?;
        Ok(self
            .table
            .push(Matcher(grammar::Matcher::new_or_failed(&env, &g)))?)
    }

    fn accept_tokens(
        &mut self,
        this: Resource<Matcher>,
        token_ids: Vec<u32>,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(self
            .matcher(&this)?
            .accept_tokens(&token_ids)
            .map_err(|e| e.to_string()))
    }

    fn next_token_logit_mask(&mut self, this: Resource<Matcher>) -> wasmtime::Result<Vec<u32>> {
        Ok(self.matcher(&this)?.next_token_mask().runs)
    }

    fn is_terminated(&mut self, this: Resource<Matcher>) -> wasmtime::Result<bool> {
        Ok(self.matcher(&this)?.is_terminated())
    }

    fn reset(&mut self, this: Resource<Matcher>) -> wasmtime::Result<()> {
        self.matcher(&this)?.reset();
        Ok(())
    }

    fn drop(&mut self, this: Resource<Matcher>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
