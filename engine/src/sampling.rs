//! What a forward pass returns for one output slot: a sampled token, a distribution, logits,
//! log-probabilities or entropy. Sampling is seeded per slot (SplitMix64), so the same seed
//! and logits give the same token on every run and every batch composition.

use crate::brle::Brle;

/// Token sampling parameters; every filter is optional and they compose in the usual order:
/// temperature, then top-k, then top-p (nucleus), then min-p, then a multinomial draw.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleParams {
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub seed: u64,
}

impl SampleParams {
    pub fn multinomial(temperature: f32, seed: u64) -> Self {
        SampleParams {
            temperature,
            top_k: None,
            top_p: None,
            min_p: None,
            seed,
        }
    }
}

/// What to compute for an output slot.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampler {
    /// The arg-max token.
    Greedy,
    /// A random token (temperature / top-k / top-p / min-p).
    Sample(SampleParams),
    /// The `k` most likely tokens and their probabilities (softmax at `temperature`).
    TopKDistribution { k: usize, temperature: f32 },
    /// All logits, unmasked.
    RawLogits,
    /// log p(token).
    Logprob { token: u32 },
    /// log p for each token of a list.
    Logprobs { tokens: Vec<u32> },
    /// Entropy (nats) of the distribution.
    Entropy,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SampleOutput {
    Token(u32),
    Distribution { ids: Vec<u32>, probs: Vec<f32> },
    Logits(Vec<f32>),
    Logprob(f32),
    Logprobs(Vec<f32>),
    Entropy(f32),
}

/// SplitMix64: tiny, fast, and good enough for drawing tokens.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Applies an allowed-token mask: disallowed logits become -inf.
pub fn apply_logit_mask(logits: &mut [f32], mask: &Brle) {
    let mut i = 0;
    for (k, &r) in mask.runs.iter().enumerate() {
        let end = (i + r as usize).min(logits.len());
        if k % 2 == 0 {
            logits[i..end].fill(f32::NEG_INFINITY);
        }
        i = end;
    }
}

/// log-softmax normalizer: (max, log Σ exp(x - max)).
fn log_norm(logits: &[f32]) -> (f32, f32) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return (max, 0.0);
    }
    let sum: f64 = logits.iter().map(|&x| ((x - max) as f64).exp()).sum();
    (max, sum.ln() as f32)
}

fn logprob(logits: &[f32], norm: (f32, f32), tok: u32) -> f32 {
    match logits.get(tok as usize) {
        Some(&x) => x - norm.0 - norm.1,
        None => f32::NEG_INFINITY,
    }
}

fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The `k` highest (id, logit) pairs, sorted descending (ties by lower id).
fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut v: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, x)| **x > f32::NEG_INFINITY)
        .map(|(i, &x)| (i as u32, x))
        .collect();
    let cmp = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    let k = k.min(v.len());
    if k == 0 {
        return Vec::new();
    }
    if k < v.len() {
        v.select_nth_unstable_by(k - 1, cmp);
        v.truncate(k);
    }
    v.sort_by(cmp);
    v
}

fn sample(logits: &[f32], p: &SampleParams) -> u32 {
    if p.temperature <= 0.0 || p.top_k == Some(1) {
        return argmax(logits);
    }
    // Candidates sorted by logit; restricting to top-k first keeps the sort small.
    let k = p.top_k.unwrap_or(logits.len()).max(1);
    let mut cand = top_k(logits, k);
    if cand.is_empty() {
        return argmax(logits);
    }
    let max = cand[0].1;
    let mut probs: Vec<f64> = cand
        .iter()
        .map(|c| (((c.1 - max) / p.temperature) as f64).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|x| *x /= total);
    let mut keep = probs.len();
    if let Some(top_p) = p.top_p {
        let mut acc = 0.0;
        for (i, &x) in probs.iter().enumerate() {
            acc += x;
            if acc >= top_p as f64 {
                keep = i + 1;
                break;
            }
        }
    }
    if let Some(min_p) = p.min_p {
        let thresh = probs[0] * min_p as f64;
        keep = keep.min(probs.iter().take_while(|&&x| x >= thresh).count().max(1));
    }
    cand.truncate(keep);
    probs.truncate(keep);
    let total: f64 = probs.iter().sum();
    let mut r = Rng::new(p.seed).next_f64() * total;
    for (c, &x) in cand.iter().zip(&probs) {
        if r < x {
            return c.0;
        }
        r -= x;
    }
    cand[cand.len() - 1].0
}

/// Computes one slot's output from its unmasked logits row and the request's allowed-token
/// mask (ignored by `RawLogits`).
pub fn sample_slot(s: &Sampler, mask: Option<&Brle>, raw: &[f32]) -> SampleOutput {
    match mask {
        Some(m) if *s != Sampler::RawLogits => {
            let mut masked = raw.to_vec();
            apply_logit_mask(&mut masked, m);
            run_sampler(s, &masked, raw)
        }
        _ => run_sampler(s, raw, raw),
    }
}

/// Computes one slot's output from its logits row (the logit mask already applied, except for
/// `RawLogits`, which gets `raw`).
pub fn run_sampler(s: &Sampler, logits: &[f32], raw: &[f32]) -> SampleOutput {
    match s {
        Sampler::Greedy => SampleOutput::Token(argmax(logits)),
        Sampler::Sample(p) => SampleOutput::Token(sample(logits, p)),
        Sampler::TopKDistribution { k, temperature } => {
            let t = if *temperature > 0.0 {
                *temperature
            } else {
                1.0
            };
            let scaled: Vec<f32> = logits.iter().map(|x| x / t).collect();
            let norm = log_norm(&scaled);
            let top = top_k(&scaled, *k);
            SampleOutput::Distribution {
                ids: top.iter().map(|c| c.0).collect(),
                probs: top.iter().map(|c| (c.1 - norm.0 - norm.1).exp()).collect(),
            }
        }
        Sampler::RawLogits => SampleOutput::Logits(raw.to_vec()),
        Sampler::Logprob { token } => {
            SampleOutput::Logprob(logprob(logits, log_norm(logits), *token))
        }
        Sampler::Logprobs { tokens } => {
            let n = log_norm(logits);
            SampleOutput::Logprobs(tokens.iter().map(|&t| logprob(logits, n, t)).collect())
        }
        Sampler::Entropy => {
            let (max, lse) = log_norm(logits);
            let mut h = 0f64;
            for &x in logits {
                let lp = (x - max - lse) as f64;
                if lp > f64::NEG_INFINITY {
                    h -= lp.exp() * lp;
                }
            }
            SampleOutput::Entropy(h as f32)
        }
    }
}
