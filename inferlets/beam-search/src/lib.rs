//! Beam search: every step, each beam's context runs one forward pass with a top-k
//! distribution probe; the `beam_size` best extensions by summed log-probability survive,
//! each continuing in a fork of its parent's context (copy-on-write KV pages).
//!
//! Output: JSON `{"beams": [{"text", "token_ids", "logprob"}, ...]}`, best first.

use inferlet::model::Model;
use inferlet::sample::Distribution;
use inferlet::{Context, Result, runtime};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    prompt: Option<String>,
    beam_size: Option<usize>,
    max_tokens: Option<usize>,
    _positional: Vec<String>,
}

struct Beam {
    ctx: Context,
    ids: Vec<u32>,
    logprob: f64,
    /// Token to feed before the next probe (the last chosen one).
    pending: Vec<u32>,
}

#[inferlet::main]
async fn main(input: Input) -> Result<String> {
    let name = runtime::models()
        .first()
        .cloned()
        .ok_or("no models are served")?;
    let model = Model::load(&name)?;
    let tok = model.tokenizer();
    let prompt = input
        .prompt
        .or_else(|| input._positional.first().cloned())
        .ok_or("give --prompt TEXT")?;
    let k = input.beam_size.unwrap_or(3).clamp(1, 16);
    let steps = input.max_tokens.unwrap_or(16);

    let mut beams = vec![Beam {
        ctx: Context::new(&model)?,
        ids: Vec::new(),
        logprob: 0.0,
        pending: tok.encode(&prompt),
    }];
    for _ in 0..steps {
        // Score every beam's next-token candidates.
        let mut candidates: Vec<(usize, u32, f64)> = Vec::new();
        for (b, beam) in beams.iter_mut().enumerate() {
            let pending = std::mem::take(&mut beam.pending);
            let mut fwd = beam.ctx.forward();
            fwd.input(&pending);
            let probe = fwd.probe(
                pending.len() as u32 - 1,
                Distribution {
                    temperature: 1.0,
                    k: k as u32,
                },
            );
            let out = fwd.execute().await?;
            let (ids, probs) = out
                .distribution(probe)
                .ok_or("no distribution in the output")?;
            for (&id, &p) in ids.iter().zip(probs) {
                candidates.push((b, id, beam.logprob + (p.max(1e-30) as f64).ln()));
            }
        }
        candidates.sort_by(|a, c| c.2.total_cmp(&a.2));
        candidates.truncate(k);
        let mut next = Vec::with_capacity(k);
        for (b, id, lp) in candidates {
            let parent = &beams[b];
            let ctx = parent.ctx.fork()?;
            let mut ids = parent.ids.clone();
            ids.push(id);
            next.push(Beam {
                ctx,
                ids,
                logprob: lp,
                pending: vec![id],
            });
        }
        beams = next;
    }
    let mut out = Vec::new();
    for b in &beams {
        out.push(serde_json::json!({
            "text": tok.decode(&b.ids)?,
            "token_ids": b.ids,
            "logprob": b.logprob,
        }));
    }
    Ok(serde_json::json!({ "beams": out }).to_string())
}
