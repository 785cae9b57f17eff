//! Helpers shared by the integration tests: the SmolLM2 model directory, the golden file, and
//! the tiny random model (`tiny`).
#![allow(dead_code)]

pub mod tiny;

use engine::{Engine, ForwardRequest, KvContext, SampleOutput, Sampler};
use std::path::PathBuf;

pub const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/golden/smollm2-135m.json"
);

/// `$PIE_TEST_MODEL_DIR`, or `<workspace>/state/models/smollm2-135m`. Panics with a message
/// naming the script that creates it when missing.
pub fn model_dir() -> PathBuf {
    let dir = std::env::var_os("PIE_TEST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../state/models/smollm2-135m"
            ))
        });
    assert!(
        dir.join("config.json").exists() && dir.join("tokenizer.json").exists(),
        "test model missing at {}: run scripts/fetch-model (or set PIE_TEST_MODEL_DIR)",
        dir.display()
    );
    dir
}

pub struct Case {
    pub name: String,
    pub prompt: String,
    pub prompt_ids: Vec<u32>,
    pub greedy_ids: Vec<u32>,
    pub top5_ids: Vec<u32>,
    pub top5_logits: Vec<f32>,
}

pub fn golden_cases() -> Vec<Case> {
    // PIE_GOLDEN: the file's path where the repository's sibling `shared/` is absent (the
    // GPU machine of scripts/gpu-check).
    let path = std::env::var("PIE_GOLDEN").unwrap_or_else(|_| GOLDEN.to_string());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let m = &v["models"]["smollm2-135m-instruct-bf16"];
    let ids = |x: &serde_json::Value| {
        x.as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_u64().unwrap() as u32)
            .collect::<Vec<_>>()
    };
    ["story", "fox", "chat_capital"]
        .iter()
        .map(|&name| {
            let c = &m[name];
            Case {
                name: name.into(),
                prompt: c["prompt"].as_str().unwrap().into(),
                prompt_ids: ids(&c["prompt_ids"]),
                greedy_ids: ids(&c["greedy_ids"]),
                top5_ids: ids(&c["last_pos_top5_ids"]),
                top5_logits: c["last_pos_top5_logits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap() as f32)
                    .collect(),
            }
        })
        .collect()
}

/// Runs all cases in lockstep: every prefill submitted before waiting, then every decode step.
/// Returns, per case, the greedy ids and the last-prompt-position logits.
pub fn run_lockstep(engine: &Engine, cases: &[Case]) -> Vec<(Vec<u32>, Vec<f32>)> {
    let mut ctxs: Vec<KvContext> = cases.iter().map(|_| engine.new_context()).collect();
    let mut pending: Vec<Vec<u32>> = cases.iter().map(|c| c.prompt_ids.clone()).collect();
    let mut out: Vec<(Vec<u32>, Vec<f32>)> =
        cases.iter().map(|_| (Vec::new(), Vec::new())).collect();
    for step in 0..32 {
        let mut reqs = Vec::new();
        let mut meta = Vec::new();
        for (i, c) in cases.iter().enumerate() {
            if step >= c.greedy_ids.len() {
                continue;
            }
            let toks = pending[i].clone();
            let plan = ctxs[i].plan(toks.len()).unwrap();
            let mut req =
                ForwardRequest::new(i as u64, toks.clone(), ctxs[i].next_position(), plan)
                    .output(toks.len() - 1, Sampler::Greedy);
            if step == 0 {
                req = req.output(toks.len() - 1, Sampler::RawLogits);
            }
            meta.push((i, toks, req.positions.clone()));
            reqs.push(req);
        }
        // One submission: the scheduler batches the prompts together.
        let waits = engine.submit_all(reqs).unwrap().into_iter().zip(meta);
        for (c, (i, toks, pos)) in waits {
            let r = c.wait().unwrap();
            ctxs[i].commit(&toks, &pos);
            let SampleOutput::Token(t) = r.outputs[0] else {
                panic!("not a token")
            };
            if let Some(SampleOutput::Logits(l)) = r.outputs.get(1) {
                out[i].1 = l.clone();
            }
            out[i].0.push(t);
            pending[i] = vec![t];
        }
    }
    out
}
