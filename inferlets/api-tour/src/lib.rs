//! A tour of the host interfaces on the prompt "The quick brown fox": tokenizer, runtime,
//! every sampler kind in one pass, logit and attention masks, speculative verification,
//! page accounting, suspend, scheduling, adapter, MCP. Returns a JSON report of what the
//! host answered (the tests check it against the golden outputs).

use inferlet::adapter::Adapter;
use inferlet::inference::{ForwardPass, Sampler as WitSampler, SlotOutput};
use inferlet::model::Model;
use inferlet::sample::{Distribution, Entropy, Logits, Logprob, Logprobs, Sampler};
use inferlet::{Context, ForwardPassExt, Result, mcp, runtime, scheduling};
use serde_json::{Value, json};

const FOX: [u32; 4] = [504, 2365, 6354, 16438];

fn slot_tokens(slots: &[SlotOutput]) -> Vec<u32> {
    slots
        .iter()
        .filter_map(|s| match s {
            SlotOutput::Token(t) => Some(*t),
            _ => None,
        })
        .collect()
}

/// Prompt + `inputs` as inputs, `drafts` as speculative tokens, a greedy slot at the last
/// input; returns the accepted run.
async fn speculate(model: &Model, inputs: &[u32], drafts: &[u32]) -> Result<Vec<u32>> {
    let ctx = Context::new(model)?;
    let raw = ctx.inner();
    raw.reserve_working_pages(1)?;
    let pass = ForwardPass::new(model);
    pass.context(raw);
    let n = inputs.len() as u32;
    pass.input_tokens(inputs, &(0..n).collect::<Vec<_>>());
    pass.input_speculative_tokens(drafts, &(n..n + drafts.len() as u32).collect::<Vec<_>>());
    pass.sampler(&[n - 1], &WitSampler::TopP((0.0, 1.0)));
    let out = pass.execute_async().await?;
    Ok(slot_tokens(&out.slots))
}

#[inferlet::main]
async fn main(_input: String) -> Result<String> {
    let mut r = serde_json::Map::new();
    let models = runtime::models();
    r.insert("models".into(), json!(models));
    r.insert("version".into(), json!(runtime::version()));
    r.insert("username".into(), json!(runtime::username()));
    r.insert("instance_id".into(), json!(runtime::instance_id()));
    let model = Model::load(models.first().ok_or("no models")?)?;
    r.insert(
        "unknown_model".into(),
        json!(Model::load("no-such-model").err()),
    );

    let tok = model.tokenizer();
    let (ids, bytes) = tok.vocabs();
    let with = ids.iter().position(|&i| i == 351).map(|i| bytes[i].clone());
    r.insert("vocab_len".into(), json!(ids.len()));
    r.insert(
        "token_351_bytes".into(),
        json!(with.map(|b| String::from_utf8_lossy(&b).into_owned())),
    );
    r.insert("split_regex".into(), json!(tok.split_regex()));
    let (sids, sbytes) = tok.special_tokens();
    r.insert(
        "specials".into(),
        json!(
            sids.iter()
                .zip(&sbytes)
                .map(|(i, b)| (i, String::from_utf8_lossy(b).into_owned()))
                .collect::<Vec<_>>()
        ),
    );
    r.insert("encode".into(), json!(tok.encode("The quick brown fox")));
    r.insert("decode".into(), json!(tok.decode(&FOX)?));
    r.insert("decode_bad".into(), json!(tok.decode(&[4_000_000]).err()));

    // Every sampler kind on one pass, at the last prompt token.
    let mut ctx = Context::new(&model)?;
    let mut f = ctx.forward();
    f.input(&FOX);
    let greedy = f.sample(&[3], Sampler::Argmax);
    let every = f.sample(&[0, 1, 2, 3], Sampler::Argmax);
    let dist = f.probe(
        3,
        Distribution {
            temperature: 1.0,
            k: 5,
        },
    );
    let logits = f.probe(3, Logits);
    let lp = f.probe(3, Logprob(351));
    let lps = f.probe(3, Logprobs(vec![351, 284]));
    let ent = f.probe(3, Entropy);
    let topk = f.sample(&[3], Sampler::top_k(0.8, 5));
    let minp = f.sample(&[3], Sampler::min_p(0.8, 0.1));
    let multi = f.sample(&[3], Sampler::multinomial(1.0, 1));
    let topkp = f.sample(&[3], Sampler::top_k_top_p(0.7, 10, 0.9));
    let out = f.execute().await?;
    let raw_logits: Vec<f32> = out
        .logits(logits)
        .ok_or("no logits")?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let argmax = raw_logits
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i);
    let (dids, dps) = out.distribution(dist).ok_or("no distribution")?;
    r.insert(
        "samplers".into(),
        json!({
            "greedy": out.token(greedy),
            "every": out.tokens_at(every),
            "dist_ids": dids,
            "dist_probs": dps,
            "logits_len": raw_logits.len(),
            "logits_argmax": argmax,
            "logit_351": raw_logits.get(351),
            "logprob_351": out.logprobs(lp),
            "logprobs": out.logprobs(lps),
            "entropy": out.entropy(ent),
            "top_k": out.token(topk),
            "min_p": out.token(minp),
            "multinomial": out.token(multi),
            "top_k_top_p": out.token(topkp),
        }),
    );

    // Page accounting after the prompt (4 tokens): nothing committed, one working page.
    let raw = ctx.inner();
    r.insert(
        "pages".into(),
        json!({
            "page_size": raw.tokens_per_page(),
            "committed": raw.committed_page_count(),
            "working": raw.working_page_count(),
            "working_tokens": raw.working_page_token_count(),
            "commit_too_many": raw.commit_working_pages(1).err(),
        }),
    );

    // A logit mask allowing only token 284 (BRLE: 284 false, 1 true, the rest false).
    let vocab = raw_logits.len() as u32;
    let mut masked = ctx.fork()?;
    let mut f = masked.forward();
    f.input(&[351]);
    let h = f.sample(&[0], Sampler::Argmax);
    f.mask(&[284, 1, vocab - 285]);
    r.insert("masked".into(), json!(f.execute().await?.token(h)));

    // An attention mask with the wrong number of rows is refused; a valid one that hides the
    // prompt changes the prediction.
    let mut a = ctx.fork()?;
    let mut f = a.forward();
    f.input(&[351]);
    f.sample(&[0], Sampler::Argmax);
    f.attention_mask(&[vec![0, 5], vec![0, 5]]);
    r.insert("attention_bad_rows".into(), json!(f.execute().await.err()));
    let mut b = ctx.fork()?;
    let mut f = b.forward();
    f.input(&[351]);
    let h = f.sample(&[0], Sampler::Argmax);
    f.attention_mask(&[vec![4, 1]]);
    r.insert(
        "attention_self_only".into(),
        json!(f.execute().await?.token(h)),
    );

    // Speculation: right drafts are all accepted, a wrong one stops the run.
    let mut inputs = FOX.to_vec();
    inputs.push(351);
    r.insert(
        "spec_right".into(),
        json!(speculate(&model, &inputs, &[253, 2365, 6354]).await?),
    );
    r.insert(
        "spec_wrong".into(),
        json!(speculate(&model, &inputs, &[253, 999, 6354]).await?),
    );

    // Suspend releases the pages (the forks sharing them are gone first); the next pass
    // recomputes them.
    drop((masked, a, b));
    let before = scheduling::balance(&model);
    ctx.suspend()?;
    let after = scheduling::balance(&model);
    let cont = ctx
        .generate(Sampler::Argmax)
        .max_tokens(8)
        .collect_tokens()
        .await?;
    r.insert(
        "suspend".into(),
        json!({ "balance_before": before, "balance_after": after, "continuation": cont }),
    );

    r.insert(
        "scheduling".into(),
        json!({
            "price": scheduling::price(),
            "rent": scheduling::rent(ctx.inner()),
            "dividend": scheduling::dividend(&model),
            "latency": scheduling::latency(ctx.inner()),
            "balance": scheduling::balance(&model),
        }),
    );
    r.insert(
        "adapter".into(),
        json!(Adapter::create(&model, "lora").err()),
    );
    let unknown = mcp::client::connect("no-such-server")
        .err()
        .map(|e| e.message);
    let servers = mcp::client::available_servers();
    let known = match servers.first() {
        Some(s) => Some(match mcp::client::connect(s) {
            Ok(sess) => sess.list_tools().err().map(|e| e.message),
            Err(e) => Some(format!("connect failed: {}", e.message)),
        }),
        None => None,
    };
    r.insert(
        "mcp".into(),
        json!({ "servers": servers, "unknown": unknown, "known_list_tools": known }),
    );
    Ok(Value::Object(r).to_string())
}
