//! Per-step cost of the inferlet API (used by `scripts/bench-inferlets`): after a 3-token
//! prefill, `steps` forward passes of one token each (token `3 + i % 50`, like the engine's
//! own overhead loop), each with a greedy sampler slot, through the SDK's `Forward` (page
//! reservation and commit included). Timed with the sandbox's monotonic clock.
//!
//! Output: JSON `{"steps", "us_per_step", "last_token"}`.

use inferlet::model::Model;
use inferlet::sample::Sampler;
use inferlet::{Context, Result, runtime};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    steps: Option<usize>,
    model: Option<String>,
}

#[inferlet::main]
async fn main(input: Input) -> Result<String> {
    let name = match input.model {
        Some(m) => m,
        None => runtime::models()
            .first()
            .cloned()
            .ok_or("no models are served")?,
    };
    let model = Model::load(&name)?;
    let steps = input.steps.unwrap_or(2000);
    let mut ctx = Context::new(&model)?;
    ctx.append(&[3, 4, 5]);
    ctx.flush().await?;
    let mut last = 0;
    let t = std::time::Instant::now();
    for i in 0..steps {
        let mut f = ctx.forward();
        f.input(&[3 + (i % 50) as u32]);
        let h = f.sample(&[0], Sampler::Argmax);
        let out = f.execute().await?;
        last = out.token(h).ok_or("no token in the output")?;
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / steps.max(1) as f64;
    Ok(serde_json::json!({ "steps": steps, "us_per_step": us, "last_token": last }).to_string())
}
