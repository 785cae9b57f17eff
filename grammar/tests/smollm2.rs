//! The grammar crate against the real SmolLM2-135M tokenizer (`$PIE_TEST_MODEL_DIR` or
//! `state/models/smollm2-135m`, made by `scripts/fetch-model`): random and teacher-forced
//! walks through JSON Schema, JSON, regex and Lark grammars, masks checked at every step.

use engine::Brle;
use grammar::{Error, Grammar, Matcher, TokEnv};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;

/// `<|im_end|>` (the instruct model's end of turn) and `<|endoftext|>`.
const EOS: [u32; 2] = [2, 0];
const VOCAB: usize = 49152;

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
        dir.join("tokenizer.json").exists(),
        "test model missing at {}: run scripts/fetch-model (or set PIE_TEST_MODEL_DIR)",
        dir.display()
    );
    dir
}

fn env() -> &'static TokEnv {
    static ENV: OnceLock<TokEnv> = OnceLock::new();
    ENV.get_or_init(|| {
        TokEnv::from_tokenizer_json(model_dir().join("tokenizer.json").as_path(), &EOS)
            .expect("tokenizer env")
    })
}

fn hf() -> &'static engine::Tokenizer {
    static TOK: OnceLock<engine::Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| engine::Tokenizer::from_dir(&model_dir()).expect("tokenizer"))
}

/// SplitMix64: a reproducible walk without a rand dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn allowed_ids(mask: &Brle) -> Vec<u32> {
    mask.to_bools()
        .iter()
        .enumerate()
        .filter_map(|(i, &b)| b.then_some(i as u32))
        .collect()
}

fn is_eos(t: u32) -> bool {
    EOS.contains(&t)
}

/// Masks every step, checks the BRLE against the bitset and that EOS is allowed exactly when
/// `complete(text so far)`, picks a token with `pick` (EOS as soon as it is allowed, if
/// `stop_early`), and returns the generated text once EOS is chosen.
fn walk(
    m: &mut Matcher,
    max_steps: usize,
    complete: impl Fn(&str) -> bool,
    mut pick: impl FnMut(&[u32]) -> u32,
) -> String {
    let mut ids = Vec::new();
    for _ in 0..max_steps {
        let text = env().decode(&ids);
        let mask = m.next_token_mask();
        assert_eq!(mask.len(), VOCAB);
        assert_eq!(
            mask,
            Brle::from_bools(&bits(&m.next_token_bitset())),
            "BRLE and bitset disagree"
        );
        let allowed = allowed_ids(&mask);
        assert!(!allowed.is_empty(), "empty mask after {text:?}");
        let eos_ok = allowed.iter().any(|&t| is_eos(t));
        assert_eq!(
            eos_ok,
            complete(&text),
            "EOS allowed = {eos_ok} after {text:?}"
        );
        assert_eq!(eos_ok, m.is_accepting(), "is_accepting after {text:?}");
        // Both EOS tokens or neither.
        assert_eq!(allowed.contains(&EOS[0]), allowed.contains(&EOS[1]));
        let t = if eos_ok { EOS[0] } else { pick(&allowed) };
        m.accept_tokens(&[t])
            .unwrap_or_else(|e| panic!("allowed token {t} refused after {text:?}: {e}"));
        if is_eos(t) {
            assert!(m.is_terminated());
            // The engine tokenizer agrees with the trie's bytes.
            assert_eq!(hf().decode(&ids, true).unwrap(), text);
            return text;
        }
        ids.push(t);
    }
    panic!("no EOS after {max_steps} steps: {:?}", env().decode(&ids));
}

fn bits(words: &[u32]) -> Vec<bool> {
    (0..VOCAB)
        .map(|i| (words[i / 32] >> (i % 32)) & 1 == 1)
        .collect()
}

const PERSON: &str = r#"{
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "ok": {"type": "boolean"}
    },
    "required": ["name", "age", "tags", "ok"],
    "additionalProperties": false
}"#;

/// PERSON's constraints, checked by hand.
fn check_person(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let o = v.as_object().expect("object");
    let mut keys: Vec<_> = o.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["age", "name", "ok", "tags"], "{text}");
    let name = o["name"].as_str().expect("name is a string");
    assert!((1..=12).contains(&name.chars().count()), "{text}");
    let age = o["age"].as_i64().expect("age is an integer");
    assert!((0..=150).contains(&age), "{text}");
    let tags = o["tags"].as_array().expect("tags is an array");
    assert!(tags.len() <= 3, "{text}");
    for t in tags {
        assert!(
            t.as_str().expect("tag is a string").chars().count() <= 6,
            "{text}"
        );
    }
    assert!(o["ok"].is_boolean(), "{text}");
}

fn person_complete(text: &str) -> bool {
    serde_json::from_str::<Value>(text).is_ok()
}

#[test]
fn json_schema_random_walks_validate() {
    let g = Grammar::json_schema(PERSON).unwrap();
    for seed in 0..12 {
        let mut rng = Rng(seed);
        let mut m = Matcher::new(env(), &g).unwrap();
        let text = walk(&mut m, 400, person_complete, |allowed| {
            allowed[rng.below(allowed.len())]
        });
        check_person(&text);
    }
}

#[test]
fn json_schema_preference_walk_validates() {
    // A fixed preference: the longest allowed token (ties: lowest id), as a greedy model
    // that likes long tokens would pick.
    let g = Grammar::json_schema(PERSON).unwrap();
    let mut m = Matcher::new(env(), &g).unwrap();
    let text = walk(&mut m, 400, person_complete, |allowed| {
        *allowed
            .iter()
            .max_by_key(|&&t| (env().token_bytes(t).len(), std::cmp::Reverse(t)))
            .unwrap()
    });
    check_person(&text);
    // Compact layout, properties in schema order.
    assert!(text.starts_with(r#"{"name": ""#), "{text}");
}

#[test]
fn json_schema_document_tokens_accepted() {
    let g = Grammar::json_schema(PERSON).unwrap();
    let mut m = Matcher::new(env(), &g).unwrap();
    let doc = r#"{"name": "Ada", "age": 36, "tags": ["math", "x"], "ok": true}"#;
    let ids = hf().encode(doc, false).unwrap();
    for (i, &t) in ids.iter().enumerate() {
        let mask = m.next_token_mask().to_bools();
        assert!(
            mask[t as usize],
            "token {i} ({t}) of the document not allowed"
        );
        assert!(
            !mask[EOS[0] as usize],
            "EOS allowed before the end (token {i})"
        );
        m.accept_tokens(&[t]).unwrap();
    }
    assert!(m.is_accepting());
    assert!(m.next_token_mask().to_bools()[EOS[0] as usize]);
    m.accept_tokens(&[EOS[0]]).unwrap();
    assert!(m.is_terminated());
}

#[test]
fn json_schema_refuses_violations() {
    let g = Grammar::json_schema(PERSON).unwrap();
    let mut m = Matcher::new(env(), &g).unwrap();
    // "age" before "name": properties come in schema order, and name is required first.
    let ids = hf().encode(r#"{"age": 3"#, false).unwrap();
    let err = m.accept_tokens(&ids).unwrap_err();
    let Error::Rejected { index, .. } = err else {
        panic!("{err:?}")
    };
    assert!(index > 0 && index < ids.len(), "{index} of {ids:?}");
    // Nothing was consumed: the valid prefix is still accepted from the start.
    m.accept_tokens(&ids[..index]).unwrap();
    // A string where an integer must be.
    let mut m = Matcher::new(env(), &g).unwrap();
    let prefix = hf().encode(r#"{"name": "A", "age": "#, false).unwrap();
    m.accept_tokens(&prefix).unwrap();
    let quote = hf().encode("\"", false).unwrap();
    assert!(matches!(
        m.accept_tokens(&quote),
        Err(Error::Rejected { index: 0, .. })
    ));
    let digits = hf().encode("151", false).unwrap();
    assert!(
        m.accept_tokens(&digits).is_err(),
        "151 is above the maximum"
    );
    m.accept_tokens(&hf().encode("150", false).unwrap())
        .unwrap();
}

#[test]
fn any_json_accepts_documents_and_ends_only_at_their_end() {
    let docs = [
        r#"{"a": [1, 2.5, -3e2], "b": {"c": null, "d": "x\"y"}, "e": false}"#,
        r#"[true, "héllo 日本", {}]"#,
        r#""just a string""#,
        "42",
    ];
    let g = Grammar::json();
    for doc in docs {
        let mut m = Matcher::new(env(), &g).unwrap();
        let ids = hf().encode(doc, false).unwrap();
        for (i, &t) in ids.iter().enumerate() {
            let mask = m.next_token_mask().to_bools();
            assert!(mask[t as usize], "{doc}: token {i} not allowed");
            let text = env().decode(&ids[..i]);
            // A prefix that is itself a whole value (the "4" of "42") may end.
            let whole = serde_json::from_str::<Value>(&text).is_ok();
            assert_eq!(mask[EOS[0] as usize], whole, "{doc}: EOS after {text:?}");
            m.accept_tokens(&[t]).unwrap();
        }
        assert!(m.next_token_mask().to_bools()[EOS[0] as usize], "{doc}");
        m.accept_tokens(&[EOS[1]]).unwrap();
        assert!(m.is_terminated(), "{doc}");
        assert!(
            m.accept_tokens(&ids[..1]).is_err(),
            "{doc}: tokens after EOS"
        );
    }
    // Not JSON.
    let mut m = Matcher::new(env(), &g).unwrap();
    let bad = hf().encode("{'a': 1}", false).unwrap();
    assert!(m.accept_tokens(&bad).is_err());
}

fn phone_complete(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 8
        && b[3] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 3 || c.is_ascii_digit())
}

#[test]
fn regex_walks_match() {
    let g = Grammar::regex("[0-9]{3}-[0-9]{4}").unwrap();
    for seed in 0..20 {
        let mut rng = Rng(seed);
        let mut m = Matcher::new(env(), &g).unwrap();
        let text = walk(&mut m, 20, phone_complete, |allowed| {
            allowed[rng.below(allowed.len())]
        });
        assert!(phone_complete(&text), "{text:?}");
    }
}

#[test]
fn regex_mask_is_brle_with_true_allowed() {
    let g = Grammar::regex("[0-9]{3}-[0-9]{4}").unwrap();
    let mut m = Matcher::new(env(), &g).unwrap();
    let mask = m.next_token_mask();
    let bools = mask.to_bools();
    let one = hf().token_to_id("1").unwrap();
    let a = hf().token_to_id("a").unwrap();
    let dash = hf().token_to_id("-").unwrap();
    assert!(bools[one as usize]);
    assert!(!bools[a as usize] && !bools[dash as usize]);
    assert!(!bools[EOS[0] as usize]);
    // Runs alternate starting with a false run; tokens 0.. are special, so it is non-empty.
    assert!(mask.runs[0] > 0);
    assert_eq!(
        allowed_ids(&mask).len(),
        bools.iter().filter(|&&b| b).count()
    );
    // The complete match: nothing but EOS, and the matcher knows it is done.
    let ids = hf().encode("555-0134", false).unwrap();
    m.accept_tokens(&ids).unwrap();
    assert!(m.is_accepting());
    assert_eq!(allowed_ids(&m.next_token_mask()), {
        let mut e = EOS.to_vec();
        e.sort();
        e
    });
    m.accept_tokens(&[EOS[1]]).unwrap();
    assert!(m.is_terminated());
    assert!(matches!(
        m.accept_tokens(&[one]),
        Err(Error::Rejected { .. })
    ));
}

#[test]
fn rejected_tokens_leave_the_matcher_usable() {
    let g = Grammar::regex("[0-9]{3}-[0-9]{4}").unwrap();
    let mut m = Matcher::new(env(), &g).unwrap();
    let one = hf().token_to_id("1").unwrap();
    let a = hf().token_to_id("a").unwrap();
    let err = m.accept_tokens(&[a]).unwrap_err();
    assert_eq!(
        err,
        Error::Rejected {
            index: 0,
            token: a,
            text: "a".into()
        }
    );
    assert!(err.to_string().contains("not allowed"), "{err}");
    // A valid token then an invalid one: refused as a whole, at index 1.
    assert!(matches!(
        m.accept_tokens(&[one, a]),
        Err(Error::Rejected { index: 1, .. })
    ));
    // EOS before the end.
    assert!(matches!(
        m.accept_tokens(&[EOS[0]]),
        Err(Error::Rejected {
            index: 0,
            token: 2,
            ..
        })
    ));
    // Out of the vocabulary.
    assert!(matches!(
        m.accept_tokens(&[VOCAB as u32 + 7]),
        Err(Error::Rejected { index: 0, .. })
    ));
    assert!(m.error().is_none());
    // Still at the start: three digits, a dash, four digits.
    m.accept_tokens(&hf().encode("123-4567", false).unwrap())
        .unwrap();
    assert!(m.is_accepting());
}

#[test]
fn reset_returns_to_the_start() {
    let g = Grammar::regex("[0-9]{3}-[0-9]{4}").unwrap();
    let mut m = Matcher::new(env(), &g).unwrap();
    let start = m.next_token_mask();
    m.accept_tokens(&hf().encode("123", false).unwrap())
        .unwrap();
    assert_ne!(m.next_token_mask(), start);
    m.reset();
    assert_eq!(m.next_token_mask(), start);
    m.accept_tokens(&hf().encode("999-0000", false).unwrap())
        .unwrap();
    m.accept_tokens(&[EOS[0]]).unwrap();
    assert!(m.is_terminated());
    m.reset();
    assert!(!m.is_terminated());
    assert_eq!(m.next_token_mask(), start);
}

#[test]
fn lark_grammar_walks() {
    let g = Grammar::ebnf(
        r#"
        start: answer " because " reason
        answer: "yes" | "no"
        reason: /[a-z]{1,8}/
        "#,
    )
    .unwrap();
    for seed in 0..10 {
        let mut rng = Rng(seed);
        let mut m = Matcher::new(env(), &g).unwrap();
        let complete = |t: &str| {
            let Some((a, r)) = t.split_once(" because ") else {
                return false;
            };
            (a == "yes" || a == "no")
                && (1..=8).contains(&r.len())
                && r.bytes().all(|c| c.is_ascii_lowercase())
        };
        let text = walk(&mut m, 40, complete, |allowed| {
            allowed[rng.below(allowed.len())]
        });
        assert!(complete(&text), "{text:?}");
    }
}

#[test]
fn bad_inputs_are_errors() {
    let schema_errors = [
        "{not json",
        "[1, 2]",
        "\"string\"",
        r#"{"type": "strin"}"#,
        r##"{"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}, "required": ["a"]}"##,
    ];
    for s in schema_errors {
        match Grammar::json_schema(s) {
            Err(Error::JsonSchema(msg)) => assert!(!msg.is_empty()),
            other => panic!("{s}: {other:?}"),
        }
    }
    for p in ["[0-9", "(a", "a{3,2}", "*"] {
        match Grammar::regex(p) {
            Err(Error::Regex(msg)) => assert!(!msg.is_empty()),
            other => panic!("{p}: {other:?}"),
        }
    }
    for g in ["", "   ", "start: foo", "start: \"a\" )", "start ::= \"a\""] {
        match Grammar::ebnf(g) {
            Err(Error::Ebnf(msg)) => assert!(!msg.is_empty()),
            other => panic!("{g:?}: {other:?}"),
        }
    }
    let err = Grammar::regex("[0-9").unwrap_err().to_string();
    assert!(err.starts_with("invalid regex: "), "{err}");
}

#[test]
fn describe_names_kind_and_source() {
    assert_eq!(
        Grammar::regex("[a-z]+").unwrap().describe(),
        "regex: [a-z]+"
    );
    assert_eq!(Grammar::json().describe(), "json: any JSON value");
    let s = r#"{"type":"integer"}"#;
    assert_eq!(
        Grammar::json_schema(s).unwrap().to_string(),
        format!("json-schema: {s}")
    );
    assert!(
        Grammar::ebnf("start: \"a\"")
            .unwrap()
            .describe()
            .starts_with("ebnf: ")
    );
}

#[test]
fn compiled_grammars_are_cached() {
    let env = TokEnv::from_tokenizer_json(
        std::fs::read(model_dir().join("tokenizer.json"))
            .unwrap()
            .as_slice(),
        &EOS,
    )
    .unwrap();
    assert_eq!(env.cached_grammars(), 0);
    let g = Grammar::json_schema(PERSON).unwrap();
    let t0 = std::time::Instant::now();
    let mut a = Matcher::new(&env, &g).unwrap();
    let first = t0.elapsed();
    let t1 = std::time::Instant::now();
    let mut b = Matcher::new(&env, &g.clone()).unwrap();
    let second = t1.elapsed();
    assert_eq!(env.cached_grammars(), 1);
    eprintln!("compile {first:?}, cached {second:?}");
    // Matchers from the cache are independent.
    a.accept_tokens(&hf().encode(r#"{"name": "#, false).unwrap())
        .unwrap();
    assert_ne!(a.next_token_mask(), b.next_token_mask());
    b.accept_tokens(&hf().encode(r#"{"name": "#, false).unwrap())
        .unwrap();
    assert_eq!(a.next_token_mask(), b.next_token_mask());
    Matcher::new(&env, &Grammar::regex("x+").unwrap()).unwrap();
    assert_eq!(env.cached_grammars(), 2);
}

#[test]
fn tokenizer_errors_and_padding() {
    assert!(matches!(
        TokEnv::from_tokenizer_json(&b"not json"[..], &EOS),
        Err(Error::Tokenizer(_))
    ));
    let path = model_dir().join("tokenizer.json");
    assert!(matches!(
        TokEnv::from_tokenizer_json(path.as_path(), &[]),
        Err(Error::Tokenizer(_))
    ));
    assert!(matches!(
        TokEnv::from_tokenizer_json(path.as_path(), &[VOCAB as u32]),
        Err(Error::Tokenizer(_))
    ));
    assert!(matches!(
        TokEnv::from_tokenizer_json(std::path::Path::new("/nonexistent/tokenizer.json"), &EOS),
        Err(Error::Tokenizer(_))
    ));
    // Logits wider than the tokenizer: masks cover them, the padding is never allowed.
    let padded = TokEnv::from_tokenizer(hf().inner().clone(), &EOS, Some(VOCAB + 64)).unwrap();
    assert_eq!(padded.vocab_size(), VOCAB + 64);
    let mut m = Matcher::new(&padded, &Grammar::json()).unwrap();
    let mask = m.next_token_mask().to_bools();
    assert_eq!(mask.len(), VOCAB + 64);
    assert!(mask[VOCAB..].iter().all(|&b| !b));
    assert!(mask[..VOCAB].iter().any(|&b| b));
}

#[test]
fn token_bytes_match_the_tokenizer() {
    for text in [
        "Hello, world!",
        " {\"a\": [1, 2]}\n",
        "héllo 日本 🦀",
        "\t\\u00e9",
    ] {
        let ids = hf().encode(text, false).unwrap();
        assert_eq!(env().decode(&ids), text);
        assert_eq!(env().decode(&env().tokenize(text)), text);
    }
    assert_eq!(env().token_bytes(EOS[0])[1..], *b"<|im_end|>");
    assert_eq!(env().vocab_size(), VOCAB);
    assert_eq!(env().eos_ids(), EOS);
}

#[test]
fn a_grammar_that_does_not_compile_gives_a_failed_matcher() {
    // Valid Lark, but this vocabulary has no such special token.
    let g = Grammar::ebnf("start: <|no_such_token|> \"x\"").unwrap();
    let err = Matcher::new(env(), &g).err().expect("compile error");
    assert!(matches!(err, Error::Compile(_)), "{err:?}");
    let mut m = Matcher::new_or_failed(env(), &g);
    let why = m.error().expect("failed");
    assert!(why.contains("no_such_token"), "{why}");
    assert!(m.is_terminated());
    assert!(matches!(m.accept_tokens(&[5]), Err(Error::Matcher(_))));
    assert_eq!(allowed_ids(&m.next_token_mask()), [0, 2]);
    m.reset();
    assert!(m.error().is_some());
}

#[test]
fn lark_with_embedded_json_schema_for_tool_calls() {
    // The shape of the host's tool-call grammar (src/instruct/tools.rs).
    let g = Grammar::ebnf(
        r#"start: "<tool_call>\n" call "\n</tool_call>"
call: %json {"type": "object", "properties": {"name": {"const": "get_weather"}, "arguments": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}, "required": ["name", "arguments"], "additionalProperties": false}
"#,
    )
    .unwrap();
    let mut m = Matcher::new(env(), &g).unwrap();
    let doc = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    let ids = hf().encode(doc, false).unwrap();
    m.accept_tokens(&ids).unwrap();
    assert!(m.is_accepting());
    let mut m = Matcher::new(env(), &g).unwrap();
    let bad = hf()
        .encode("<tool_call>\n{\"name\": \"get_time\"", false)
        .unwrap();
    assert!(matches!(m.accept_tokens(&bad), Err(Error::Rejected { .. })));
}

#[test]
fn shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<TokEnv>();
    send_sync::<Grammar>();
    send::<Matcher>();
    let g = Grammar::json_schema(PERSON).unwrap();
    let handles: Vec<_> = (0..4)
        .map(|seed| {
            let g = g.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(100 + seed);
                let mut m = Matcher::new(env(), &g).unwrap();
                walk(&mut m, 400, person_complete, |a| a[rng.below(a.len())])
            })
        })
        .collect();
    for h in handles {
        check_person(&h.join().unwrap());
    }
}

#[test]
fn timings() {
    let t0 = std::time::Instant::now();
    let env =
        TokEnv::from_tokenizer_json(model_dir().join("tokenizer.json").as_path(), &EOS).unwrap();
    let build = t0.elapsed();
    let g = Grammar::json_schema(PERSON).unwrap();
    let mut m = Matcher::new(&env, &g).unwrap();
    let doc = r#"{"name": "Ada Lovelace", "age": 36, "tags": ["math", "x"], "ok": true}"#;
    let ids = hf().encode(doc, false).unwrap();
    let t1 = std::time::Instant::now();
    for &t in &ids {
        let _ = m.next_token_mask();
        m.accept_tokens(&[t]).unwrap();
    }
    let per_step = t1.elapsed() / ids.len() as u32;
    eprintln!("TokEnv build {build:?}; mask + accept {per_step:?} per token (cold lexer)");
}

#[test]
fn gbnf_grammars_as_pie_takes_them() {
    // XGrammar/llama.cpp style, start rule `root`, rules over several lines.
    let g = Grammar::ebnf(
        r#"# a yes/no answer and a short reason
root ::= answer " because " reason "."?
answer ::= "yes"
         | "no"
reason ::= [a-z] [a-z ]{0,11}
"#,
    )
    .unwrap();
    let complete = |t: &str| {
        let Some((a, r)) = t.split_once(" because ") else {
            return false;
        };
        let r = r.strip_suffix('.').unwrap_or(r);
        (a == "yes" || a == "no")
            && (1..=12).contains(&r.len())
            && r.starts_with(|c: char| c.is_ascii_lowercase())
            && r.bytes().all(|c| c.is_ascii_lowercase() || c == b' ')
    };
    for seed in 0..8 {
        let mut rng = Rng(seed);
        let mut m = Matcher::new(env(), &g).unwrap();
        // EOS may come before the optional "." and before 12 characters: check the text, not
        // the EOS timing, for this grammar.
        let mut ids = Vec::new();
        loop {
            let allowed = allowed_ids(&m.next_token_mask());
            let t = if allowed.contains(&EOS[0]) && rng.below(3) == 0 {
                EOS[0]
            } else {
                let non_eos: Vec<u32> = allowed.iter().copied().filter(|&t| !is_eos(t)).collect();
                if non_eos.is_empty() {
                    EOS[0]
                } else {
                    non_eos[rng.below(non_eos.len())]
                }
            };
            m.accept_tokens(&[t]).unwrap();
            if is_eos(t) {
                break;
            }
            ids.push(t);
            assert!(ids.len() < 40);
        }
        let text = env().decode(&ids);
        assert!(complete(&text), "{text:?}");
    }
    // Empty strings, `.`, escapes and classes with punctuation.
    let g = Grammar::ebnf("root ::= \"\" ( \"\\x41\" | . ) [\\]\\-/] \"\\n\"").unwrap();
    let mut m = Matcher::new(env(), &g).unwrap();
    m.accept_tokens(&hf().encode("é/\n", false).unwrap())
        .unwrap();
    assert!(m.is_accepting());
    let mut m = Matcher::new(env(), &g).unwrap();
    m.accept_tokens(&hf().encode("A]\n", false).unwrap())
        .unwrap();
    assert!(m.is_accepting());
    // Errors say GBNF and the line.
    let e = Grammar::ebnf("root ::= \"a\"\nb ::= c")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("GBNF") && e.contains("line 2") && e.contains("`c`"),
        "{e}"
    );
    assert_eq!(
        Grammar::ebnf("root ::= \"a\"").unwrap().describe(),
        "ebnf: root ::= \"a\""
    );
}
