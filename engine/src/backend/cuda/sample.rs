//! Host side of sampling on the device: packs each output slot's sampler into the
//! `sample_slots` kernel's parameter arrays, runs it over the logits that never left the
//! device, and turns the small result records back into [`SampleOutput`]s. Only `RawLogits`
//! slots copy a whole row to the host.

use super::{CudaBackend, cuda_err, push_bits};
use crate::backend::OutputSlot;
use crate::error::Result;
use crate::sampling::{Rng, SampleOutput, Sampler};
use cudarc::driver::{LaunchConfig, PushKernelArg};

const KIND_GREEDY: i32 = 0;
const KIND_SAMPLE: i32 = 1;
const KIND_DIST: i32 = 2;
const KIND_LOGPROB: i32 = 3;
const KIND_ENTROPY: i32 = 4;

/// Struct-of-arrays parameters, in the kernel's argument order.
#[derive(Default)]
struct Params {
    slot_row: Vec<i32>,
    kind: Vec<i32>,
    temp: Vec<f32>,
    top_k: Vec<i32>,
    top_p: Vec<f32>,
    min_p: Vec<f32>,
    unif: Vec<f32>,
    mask_off: Vec<i32>,
    res_off: Vec<i32>,
    cap: Vec<i32>,
    tok_off: Vec<i32>,
    tok_n: Vec<i32>,
    toks: Vec<i32>,
    mask_bits: Vec<u32>,
}

/// The uniform draw the CPU sampler would make for this seed (so a seed means the same
/// random number on either backend).
fn uniform(seed: u64) -> f32 {
    (Rng::new(seed).next_f64() as f32).min(0.999_999_9)
}

/// Samples every slot from the logits rows at `logits` (row i for slot i, `vocab` wide).
pub(super) fn run(
    be: &mut CudaBackend,
    logits: u64,
    vocab: usize,
    slots: &[OutputSlot<'_>],
) -> Result<Vec<SampleOutput>> {
    if slots.is_empty() {
        // A prefill chunk without output rows: nothing to launch (a 0-block grid is invalid).
        return Ok(Vec::new());
    }
    let mut p = Params::default();
    let mut res_len = 0usize;
    let mut allowed = Vec::new();
    for (i, s) in slots.iter().enumerate() {
        p.slot_row.push(i as i32);
        let (mut kind, mut temp, mut top_k, mut top_p, mut min_p, mut u) =
            (KIND_GREEDY, 1f32, 0i32, 2f32, 0f32, 0f32);
        let mut cap = 0usize;
        let tok_off = p.toks.len();
        match s.sampler {
            Sampler::Greedy | Sampler::RawLogits => {}
            Sampler::Sample(sp) => {
                kind = KIND_SAMPLE;
                temp = sp.temperature;
                // The CPU treats top-k 0 like 1 (`max(1)`).
                top_k = sp.top_k.map_or(0, |k| k.clamp(1, i32::MAX as usize) as i32);
                top_p = sp.top_p.unwrap_or(2.0);
                min_p = sp.min_p.unwrap_or(0.0);
                u = uniform(sp.seed);
            }
            Sampler::TopKDistribution { k, temperature } => {
                kind = KIND_DIST;
                temp = *temperature;
                top_k = (*k).min(vocab) as i32;
                // Room for ties at the threshold.
                cap = (*k + 64).min(vocab);
            }
            Sampler::Logprob { token } => {
                kind = KIND_LOGPROB;
                p.toks.push(clamp_tok(*token, vocab));
            }
            Sampler::Logprobs { tokens } => {
                kind = KIND_LOGPROB;
                p.toks.extend(tokens.iter().map(|&t| clamp_tok(t, vocab)));
            }
            Sampler::Entropy => kind = KIND_ENTROPY,
        }
        let mask = match (s.sampler, s.logit_mask) {
            (Sampler::RawLogits, _) | (_, None) => -1,
            (_, Some(m)) => {
                allowed.clear();
                allowed.resize(vocab, false);
                m.decode_into(&mut allowed, false);
                let off = p.mask_bits.len() * 32;
                push_bits(&mut p.mask_bits, &allowed);
                off as i32
            }
        };
        p.kind.push(kind);
        p.temp.push(temp);
        p.top_k.push(top_k);
        p.top_p.push(top_p);
        p.min_p.push(min_p);
        p.unif.push(u);
        p.mask_off.push(mask);
        p.res_off.push(res_len as i32);
        p.cap.push(cap as i32);
        p.tok_off.push(tok_off as i32);
        p.tok_n.push((p.toks.len() - tok_off) as i32);
        res_len += 5 + 2 * cap + (p.toks.len() - tok_off);
    }
    // One upload: every array concatenated, floats as their bits.
    let n = slots.len();
    let mut packed: Vec<i32> = Vec::new();
    let mut offs = Vec::new();
    let f2i = |v: &[f32]| v.iter().map(|x| x.to_bits() as i32).collect::<Vec<_>>();
    for arr in [
        p.slot_row.clone(),
        p.kind.clone(),
        f2i(&p.temp),
        p.top_k.clone(),
        f2i(&p.top_p),
        f2i(&p.min_p),
        f2i(&p.unif),
        p.mask_off.clone(),
        p.mask_bits.iter().map(|&w| w as i32).collect(),
        p.res_off.clone(),
        p.cap.clone(),
        p.tok_off.clone(),
        p.tok_n.clone(),
        p.toks.clone(),
    ] {
        offs.push(packed.len());
        packed.extend(arr);
    }
    let st = be.stream.clone();
    let base = be.bufs.sparams.get(&st, packed.len())?;
    {
        let buf = be.bufs.sparams.buf.as_mut().expect("allocated");
        let mut dst = buf.slice_mut(0..packed.len());
        st.memcpy_htod(&packed, &mut dst)
            .map_err(|e| cuda_err("uploading sampler parameters", e))?;
    }
    let res = be.bufs.sres.get(&st, res_len)?;
    let a: Vec<u64> = offs.iter().map(|&o| base + 4 * o as u64).collect();
    let v32 = vocab as i32;
    {
        let mut l = st.launch_builder(&be.k.sample_slots);
        l.arg(&logits).arg(&v32);
        for ptr in &a {
            l.arg(ptr);
        }
        l.arg(&res);
        let cfg = LaunchConfig {
            grid_dim: (n as u32, 1, 1),
            block_dim: (1024, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: parameter arrays hold n entries; result offsets fit `res_len`.
        unsafe { l.launch(cfg) }.map_err(|e| cuda_err("launching sample_slots", e))?;
    }
    be.mark("sample_slots");
    let out = be.download(res, res_len)?;
    let mut results = Vec::with_capacity(n);
    for (i, s) in slots.iter().enumerate() {
        let r = &out[p.res_off[i] as usize..];
        let tok = r[0].to_bits();
        results.push(match s.sampler {
            Sampler::Greedy | Sampler::Sample(_) => SampleOutput::Token(tok),
            Sampler::RawLogits => {
                SampleOutput::Logits(be.download(logits + (4 * i * vocab) as u64, vocab)?)
            }
            Sampler::TopKDistribution { k, .. } => {
                let (max, lse) = (r[1], r[2]);
                let cnt = (r[4].to_bits() as usize).min(p.cap[i] as usize);
                let mut cand: Vec<(u32, f32)> = (0..cnt)
                    .map(|c| (r[5 + 2 * c].to_bits(), r[6 + 2 * c]))
                    .collect();
                cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                cand.truncate(*k);
                SampleOutput::Distribution {
                    ids: cand.iter().map(|c| c.0).collect(),
                    probs: cand.iter().map(|c| (c.1 - max - lse).exp()).collect(),
                }
            }
            Sampler::Logprob { .. } => SampleOutput::Logprob(r[5]),
            Sampler::Logprobs { tokens } => SampleOutput::Logprobs(r[5..5 + tokens.len()].to_vec()),
            Sampler::Entropy => SampleOutput::Entropy(r[3]),
        });
    }
    Ok(results)
}

/// Out-of-vocabulary ids become -1, which the kernel answers with -inf (as the CPU does).
fn clamp_tok(t: u32, vocab: usize) -> i32 {
    if (t as usize) < vocab { t as i32 } else { -1 }
}
