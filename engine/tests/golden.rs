//! SmolLM2-135M-Instruct against outputs of an independent implementation (HF transformers,
//! f32): tokenizer ids, chat template, greedy continuations and top-5 logits at the last
//! prompt position, run as a batch of different prompts and through chunked prefill.

mod common;

use common::{Case, golden_cases, model_dir, run_lockstep};
use engine::{Engine, EngineOptions, Message};

fn check(cases: &[Case], got: &[(Vec<u32>, Vec<f32>)], what: &str) {
    for (c, (ids, logits)) in cases.iter().zip(got) {
        if c.name != "chat_capital" {
            // The chat case's top two logits are 0.1 apart: not a stable greedy check.
            assert_eq!(ids, &c.greedy_ids, "{what}: greedy ids of `{}`", c.name);
        }
        for (&id, &want) in c.top5_ids.iter().zip(&c.top5_logits) {
            let g = logits[id as usize];
            assert!(
                (g - want).abs() < 0.05,
                "{what}: `{}` logit of token {id}: {g} vs golden {want}",
                c.name
            );
        }
    }
}

#[test]
fn tokenizer_and_chat_template_match_golden() {
    let dir = model_dir();
    let tok = engine::Tokenizer::from_dir(&dir).unwrap();
    for c in golden_cases() {
        assert_eq!(
            tok.encode(&c.prompt, false).unwrap(),
            c.prompt_ids,
            "ids of `{}`",
            c.name
        );
        assert_eq!(tok.decode(&c.prompt_ids, false).unwrap(), c.prompt);
    }
    let t = engine::ChatTemplate::from_dir(&dir)
        .unwrap()
        .expect("SmolLM2 has a chat template");
    let rendered = t
        .render(
            &[Message::new("user", "What is the capital of France?")],
            true,
            None,
        )
        .unwrap();
    let chat = golden_cases()
        .into_iter()
        .find(|c| c.name == "chat_capital")
        .unwrap();
    assert_eq!(rendered, chat.prompt);
}

#[test]
fn greedy_matches_golden_batched_and_chunked() {
    let dir = model_dir();
    let cases = golden_cases();
    let engine = Engine::load(
        &dir,
        &EngineOptions {
            kv_pages: 64,
            ..Default::default()
        },
    )
    .unwrap();
    let got = run_lockstep(&engine, &cases);
    check(&cases, &got, "batched");
    let s = engine.stats();
    assert!(s.mean_batch_size > 2.0, "requests were not batched: {s:?}");
    drop(engine);

    // Chunked prefill: at most 5 tokens per batch, so every prompt but `fox` is split.
    let engine = Engine::load(
        &dir,
        &EngineOptions {
            kv_pages: 64,
            page_size: 4,
            max_batch_tokens: 5,
            ..Default::default()
        },
    )
    .unwrap();
    let got = run_lockstep(&engine, &cases);
    check(&cases, &got, "chunked");
}
