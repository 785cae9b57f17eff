//! Constrained generation on the real model: SmolLM2-135M-Instruct through the engine, the
//! matcher's mask as the request's `logit_mask`, greedy sampling. The output must parse and
//! match its schema, and every sampled token must be one the matcher accepts (which it would
//! not be if the engine read the mask with the opposite truth convention).

use engine::{ChatTemplate, Engine, EngineOptions, ForwardRequest, Message, SampleOutput, Sampler};
use grammar::{Grammar, Matcher, TokEnv};
use serde_json::Value;
use std::path::PathBuf;

fn model_dir() -> PathBuf {
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

const COUNTRY: &str = r#"{
  "type": "object",
  "properties": {
    "name": {"type": "string", "maxLength": 40},
    "capital": {"type": "string", "maxLength": 40},
    "population_millions": {"type": "number", "minimum": 0},
    "languages": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 4}
  },
  "required": ["name", "capital", "population_millions", "languages"],
  "additionalProperties": false
}"#;

fn prompt(template: &ChatTemplate, user: &str) -> String {
    template
        .render(
            &[
                Message::new(
                    "system",
                    "You are a helpful assistant. You answer only with JSON.",
                ),
                Message::new("user", user),
            ],
            true,
            None,
        )
        .unwrap()
}

/// Greedy generation under `matcher`, at most `max` tokens; returns the generated ids (EOS
/// excluded) and whether an EOS token ended it.
fn generate(
    engine: &Engine,
    prompt: &[u32],
    matcher: &mut Matcher,
    max: usize,
) -> (Vec<u32>, bool) {
    let eos = matcher.tok_env().eos_ids().to_vec();
    let mut ctx = engine.new_context();
    let mut next = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..max {
        let plan = ctx.plan(next.len()).unwrap();
        let mut req = ForwardRequest::new(7, next.clone(), ctx.next_position(), plan)
            .output(next.len() - 1, Sampler::Greedy);
        req.logit_mask = Some(matcher.next_token_mask());
        let positions = req.positions.clone();
        let result = engine.submit(req).unwrap().wait().unwrap();
        ctx.commit(&next, &positions);
        let SampleOutput::Token(t) = result.outputs[0] else {
            panic!("greedy yields a token")
        };
        matcher
            .accept_tokens(&[t])
            .unwrap_or_else(|e| panic!("the engine sampled a masked token: {e}"));
        if eos.contains(&t) {
            return (out, true);
        }
        out.push(t);
        next = vec![t];
    }
    (out, false)
}

#[test]
fn greedy_json_schema_generation_validates() {
    let dir = model_dir();
    let engine = Engine::load(&dir, &EngineOptions::default()).unwrap();
    let tok = engine.tokenizer().unwrap();
    let vocab = engine.config().vocab_size;
    let env = TokEnv::from_tokenizer(tok.inner().clone(), &[2, 0], Some(vocab)).unwrap();

    let text = prompt(
        engine.chat_template().unwrap(),
        &format!("Describe France.\n\nReply with JSON that matches this JSON Schema:\n{COUNTRY}"),
    );
    let ids = tok.encode(&text, false).unwrap();
    let mut m = Matcher::new(&env, &Grammar::json_schema(COUNTRY).unwrap()).unwrap();
    let (out, ended) = generate(&engine, &ids, &mut m, 160);
    let json = tok.decode(&out, false).unwrap();
    eprintln!("{json}");
    assert!(ended, "no EOS within 160 tokens: {json}");
    assert!(m.is_terminated());

    let v: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
    let o = v.as_object().unwrap();
    assert_eq!(o.len(), 4, "{json}");
    for key in ["name", "capital"] {
        let s = o[key].as_str().unwrap_or_else(|| panic!("{key}: {json}"));
        assert!(s.chars().count() <= 40, "{json}");
    }
    assert!(o["population_millions"].as_f64().unwrap() >= 0.0, "{json}");
    let langs = o["languages"].as_array().unwrap();
    assert!(langs.len() <= 4, "{json}");
    assert!(
        langs
            .iter()
            .all(|l| l.as_str().is_some_and(|s| s.chars().count() <= 20))
    );
    // The model knows this one.
    assert!(o["capital"].as_str().unwrap().contains("Paris"), "{json}");
}

#[test]
fn greedy_regex_generation_matches() {
    let dir = model_dir();
    let engine = Engine::load(&dir, &EngineOptions::default()).unwrap();
    let tok = engine.tokenizer().unwrap();
    let env = TokEnv::from_tokenizer(tok.inner().clone(), &[2, 0], None).unwrap();
    let text = prompt(
        engine.chat_template().unwrap(),
        "Make up a phone number in the form 555-0134.",
    );
    let ids = tok.encode(&text, false).unwrap();
    let mut m = Matcher::new(&env, &Grammar::regex("[0-9]{3}-[0-9]{4}").unwrap()).unwrap();
    let (out, ended) = generate(&engine, &ids, &mut m, 20);
    let s = tok.decode(&out, false).unwrap();
    eprintln!("{s}");
    assert!(ended, "{s}");
    let b = s.as_bytes();
    assert!(
        b.len() == 8
            && b[3] == b'-'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 3 || c.is_ascii_digit()),
        "{s:?}"
    );
}
