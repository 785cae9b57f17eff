//! Raw text completion: the prompt (text or token ids) goes into a fresh context, the
//! continuation is generated greedily (or sampled with `temperature`/`top_p`).
//!
//! `pie-ctl launch text-completion.wasm -- --prompt "Once upon a time" --max-tokens 32`
//!
//! `--json` prints `{text, token_ids, first_token_unix_us, end_unix_us}`.

use inferlet::model::Model;
use inferlet::sample::Sampler;
use inferlet::{Context, Result, runtime};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    prompt: Option<String>,
    prompt_ids: Option<Vec<u32>>,
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    json: bool,
    model: Option<String>,
    _positional: Vec<String>,
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
    let tokenizer = model.tokenizer();
    let prompt_ids = match (input.prompt_ids, input.prompt, input._positional.first()) {
        (Some(ids), _, _) => ids,
        (None, Some(p), _) => tokenizer.encode(&p),
        (None, None, Some(p)) => tokenizer.encode(p),
        _ => return Err("give --prompt TEXT (or --prompt-ids)".into()),
    };
    if prompt_ids.is_empty() {
        return Err("the prompt is empty".into());
    }
    let sampler = match input.temperature.unwrap_or(0.0) {
        t if t <= 0.0 => Sampler::Argmax,
        t => Sampler::top_p(t, input.top_p.unwrap_or(1.0)),
    };
    let mut ctx = Context::new(&model)?;
    ctx.append(&prompt_ids);
    let mut generator = ctx
        .generate(sampler)
        .max_tokens(input.max_tokens.unwrap_or(32));
    let mut ids = Vec::new();
    // Wall-clock times (µs since the epoch) of the first token and of the end: the decode
    // window, for benchmarks that aggregate several processes.
    let mut first_token_us = None;
    while let Some(step) = generator.next()? {
        ids.extend(step.execute().await?.tokens);
        first_token_us.get_or_insert_with(unix_us);
    }
    let end_us = unix_us();
    let text = tokenizer.decode(&ids)?;
    if input.json {
        Ok(serde_json::json!({
            "text": text,
            "token_ids": ids,
            "first_token_unix_us": first_token_us,
            "end_unix_us": end_us,
        })
        .to_string())
    } else {
        Ok(text)
    }
}

fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
