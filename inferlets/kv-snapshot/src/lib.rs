//! Named KV snapshots: `--save NAME --prompt TEXT` prefills the prompt and saves the context;
//! `--open NAME [--prompt MORE]` continues from the snapshot (which stays) and generates
//! greedily; `--take NAME` does the same and removes it; `--delete NAME` removes it.
//! Snapshots belong to the launching user: other users' runs do not see them.
//!
//! Output: JSON `{"saved"|"deleted": NAME}` or `{"seq_len", "token_ids", "text"}`.

use inferlet::model::Model;
use inferlet::sample::Sampler;
use inferlet::{Context, Result, runtime};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    save: Option<String>,
    open: Option<String>,
    take: Option<String>,
    delete: Option<String>,
    prompt: Option<String>,
    max_tokens: Option<usize>,
}

#[inferlet::main]
async fn main(input: Input) -> Result<String> {
    let name = runtime::models()
        .first()
        .cloned()
        .ok_or("no models are served")?;
    let model = Model::load(&name)?;
    let tok = model.tokenizer();
    if let Some(name) = input.delete {
        Context::delete(&model, &name)?;
        return Ok(serde_json::json!({ "deleted": name }).to_string());
    }
    if let Some(name) = input.save {
        let prompt = input.prompt.ok_or("--save needs --prompt")?;
        let mut ctx = Context::new(&model)?;
        ctx.append(&tok.encode(&prompt));
        ctx.flush().await?;
        ctx.save(&name)?;
        return Ok(serde_json::json!({ "saved": name, "seq_len": ctx.seq_len() }).to_string());
    }
    let mut ctx = match (input.open, input.take) {
        (Some(n), None) => Context::open(&model, &n)?,
        (None, Some(n)) => Context::take(&model, &n)?,
        _ => return Err("give one of --save, --open, --take, --delete".into()),
    };
    let seq_len = ctx.seq_len();
    if let Some(p) = input.prompt {
        ctx.append(&tok.encode(&p));
    }
    let ids = ctx
        .generate(Sampler::Argmax)
        .max_tokens(input.max_tokens.unwrap_or(16))
        .collect_tokens()
        .await?;
    Ok(
        serde_json::json!({ "seq_len": seq_len, "token_ids": ids, "text": tok.decode(&ids)? })
            .to_string(),
    )
}
