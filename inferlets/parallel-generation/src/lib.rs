//! Parallel generation: the prompt is prefilled once into a context, which is then forked
//! (copy-on-write KV pages); every fork gets its own suffix and generates concurrently, so
//! the engine batches the forks' decode steps together.
//!
//! Output: JSON `{"forks": [{"suffix", "prompt_ids", "token_ids", "text"}, ...]}` where
//! `prompt_ids` are all tokens the fork saw before generating (prompt + suffix).

use inferlet::model::Model;
use inferlet::sample::Sampler;
use inferlet::{Context, Result, runtime};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    prompt: Option<String>,
    suffixes: Option<Vec<String>>,
    n: Option<usize>,
    max_tokens: Option<usize>,
    temperature: Option<f32>,
    _positional: Vec<String>,
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
    let prompt_ids = tok.encode(&prompt);
    let suffixes = input
        .suffixes
        .unwrap_or_else(|| vec![String::new(); input.n.unwrap_or(2)]);
    if suffixes.is_empty() || suffixes.len() > 64 {
        return Err("between 1 and 64 forks".into());
    }
    let max_tokens = input.max_tokens.unwrap_or(24);
    let sampler = match input.temperature.unwrap_or(0.0) {
        t if t <= 0.0 => Sampler::Argmax,
        t => Sampler::top_p(t, 1.0),
    };

    // Prefill the shared prompt once.
    let mut base = Context::new(&model)?;
    base.append(&prompt_ids);
    base.flush().await?;

    let mut forks = Vec::new();
    for s in &suffixes {
        let mut ctx = base.fork()?;
        let suffix_ids = tok.encode(s);
        ctx.append(&suffix_ids);
        let mut seen = prompt_ids.clone();
        seen.extend(&suffix_ids);
        forks.push((s.clone(), seen, ctx));
    }
    let runs = forks.into_iter().map(|(suffix, seen, mut ctx)| {
        let sampler = sampler.clone();
        async move {
            let ids = ctx
                .generate(sampler)
                .max_tokens(max_tokens)
                .collect_tokens()
                .await?;
            Ok::<_, String>((suffix, seen, ids))
        }
    });
    let results = futures::future::join_all(runs).await;
    let mut out = Vec::new();
    for r in results {
        let (suffix, seen, ids) = r?;
        out.push(serde_json::json!({
            "suffix": suffix,
            "prompt_ids": seen,
            "token_ids": ids,
            "text": tok.decode(&ids)?,
        }));
    }
    Ok(serde_json::json!({ "forks": out }).to_string())
}
