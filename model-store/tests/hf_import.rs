//! Hugging Face directory import: a valid directory (single file and sharded) is linked into
//! the store; invalid ones are refused with a clear error and leave nothing behind.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use model_store::{ModelStore, Progress};
use safetensors::tensor::TensorView;
use serde_json::{Value, json};

/// An HF directory made by importing the tiny GGUF, minus the store's manifest.
fn hf_dir(tmp: &TempDir, untied: bool) -> PathBuf {
    let gguf = tmp.path().join("tiny.gguf");
    tiny_llama(untied).gguf.write(&gguf);
    let scratch = ModelStore::open(&tmp.path().join("scratch")).unwrap();
    scratch.import(&gguf, "src", &mut |_| {}).unwrap();
    let src = tmp.path().join("hf");
    fs::rename(scratch.root().join("src"), &src).unwrap();
    fs::remove_file(src.join("pie-model.json")).unwrap();
    src
}

fn edit_json(p: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap();
    f(&mut v);
    fs::write(p, serde_json::to_string(&v).unwrap()).unwrap();
}

fn import_err(store: &ModelStore, src: &Path) -> String {
    let e = store.import(src, "m", &mut |_| {}).unwrap_err();
    assert_eq!(
        dir_names(store.root()),
        Vec::<String>::new(),
        "leftovers after: {e:#}"
    );
    format!("{e:#}")
}

#[test]
fn single_file_directory() {
    let tmp = TempDir::new("hf-ok");
    let src = hf_dir(&tmp, true);
    let store = ModelStore::open(&tmp.path().join("models")).unwrap();
    let mut last = None;
    let entry = store
        .import(&src, "tiny-hf", &mut |p: Progress| last = Some(p))
        .unwrap();
    assert_eq!(
        entry.source,
        format!("hf:{}", src.canonicalize().unwrap().display())
    );
    assert_eq!(entry.architecture, "LlamaForCausalLM");
    assert_eq!(entry.dtype, "bf16");
    assert!(!entry.tie_word_embeddings);
    let expected_params: u64 = tiny_llama(true)
        .expected
        .values()
        .map(|(s, _)| s.iter().product::<u64>())
        .sum();
    assert_eq!(entry.params, expected_params);
    let last = last.unwrap();
    assert_eq!((last.stage, last.done), ("copy", last.total));
    let dir = store.root().join("tiny-hf");
    for f in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ] {
        assert_eq!(
            fs::read(dir.join(f)).unwrap(),
            fs::read(src.join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(dir.join("pie-model.json").is_file());
    assert_eq!(store.list().unwrap(), vec![entry]);
    tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
}

#[test]
fn sharded_directory() {
    let tmp = TempDir::new("hf-shard");
    let src = hf_dir(&tmp, false);
    // split model.safetensors into two shards plus an index, as transformers does
    let buf = fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&buf).unwrap();
    let mut shards: [Vec<(String, TensorView)>; 2] = [Vec::new(), Vec::new()];
    let mut map = serde_json::Map::new();
    for (name, view) in st.tensors() {
        let i = usize::from(name.contains("layers.1."));
        let file = format!("model-0000{}-of-00002.safetensors", i + 1);
        map.insert(name.clone(), json!(file));
        shards[i].push((name, view));
    }
    for (i, s) in shards.iter().enumerate() {
        let file = src.join(format!("model-0000{}-of-00002.safetensors", i + 1));
        safetensors::serialize_to_file(s.clone(), &None, &file).unwrap();
    }
    drop(st);
    fs::remove_file(src.join("model.safetensors")).unwrap();
    let index = src.join("model.safetensors.index.json");
    fs::write(
        &index,
        json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();

    let store = ModelStore::open(&tmp.path().join("models")).unwrap();
    let entry = store.import(&src, "sharded", &mut |_| {}).unwrap();
    let files = dir_names(&entry.dir);
    assert!(
        files.contains(&"model-00001-of-00002.safetensors".to_string()),
        "{files:?}"
    );
    assert!(
        files.contains(&"model.safetensors.index.json".to_string()),
        "{files:?}"
    );
    store.remove("sharded").unwrap();

    // the index must agree with the shards, and may only name plain files next to it
    let mut wrong = map.clone();
    wrong.insert(
        "model.norm.weight".into(),
        json!("model-00002-of-00002.safetensors"),
    );
    fs::write(&index, json!({"weight_map": wrong}).to_string()).unwrap();
    assert!(import_err(&store, &src).contains("`model.norm.weight` is mapped to `model-00002"));
    let mut evil = map.clone();
    evil.insert(
        "model.norm.weight".into(),
        json!("../hf/model-00001-of-00002.safetensors"),
    );
    fs::write(&index, json!({"weight_map": evil}).to_string()).unwrap();
    assert!(import_err(&store, &src).contains("not a plain .safetensors file name"));
    let mut missing = map.clone();
    missing.remove("model.norm.weight");
    fs::write(&index, json!({"weight_map": missing}).to_string()).unwrap();
    assert!(
        import_err(&store, &src)
            .contains("`model.norm.weight` is in a shard but not in the weight map")
    );
    fs::remove_file(src.join("model-00002-of-00002.safetensors")).unwrap();
    fs::write(&index, json!({"weight_map": map}).to_string()).unwrap();
    assert!(
        import_err(&store, &src)
            .contains("shard `model-00002-of-00002.safetensors`, which is missing")
    );
}

#[test]
fn invalid_directories() {
    let tmp = TempDir::new("hf-bad");
    let src = hf_dir(&tmp, false);
    let store = ModelStore::open(&tmp.path().join("models")).unwrap();
    let config = src.join("config.json");

    // unknown architecture, named
    edit_json(&config, |c| c["architectures"] = json!(["GPT2LMHeadModel"]));
    let e = import_err(&store, &src);
    assert!(
        e.contains("architecture `GPT2LMHeadModel` is not supported"),
        "{e}"
    );
    assert!(
        e.contains("LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM"),
        "{e}"
    );

    // Qwen2 expects q/k/v biases the tiny Llama does not have
    edit_json(&config, |c| {
        c["architectures"] = json!(["Qwen2ForCausalLM"])
    });
    let e = import_err(&store, &src);
    assert!(
        e.contains("missing tensor `model.layers.0.self_attn.q_proj.bias`"),
        "{e}"
    );

    // shapes that disagree with the config
    edit_json(&config, |c| {
        c["architectures"] = json!(["MistralForCausalLM"]);
        c["intermediate_size"] = json!(128);
    });
    let e = import_err(&store, &src);
    assert!(e.contains("safetensors do not match config.json"), "{e}");
    assert!(
        e.contains("gate_proj.weight` has shape [96, 64], config implies [128, 64]"),
        "{e}"
    );
    edit_json(&config, |c| c["intermediate_size"] = json!(INTER));

    // tied config, lm_head present: accepted (some exports keep it); untied without: refused
    edit_json(&config, |c| c["tie_word_embeddings"] = json!(true));
    store.import(&src, "ok", &mut |_| {}).unwrap();
    store.remove("ok").unwrap();

    // vocab that the tokenizer overflows
    edit_json(&config, |c| c["vocab_size"] = json!(100));
    let e = import_err(&store, &src);
    assert!(
        e.contains("embed_tokens.weight` has shape [263, 64], config implies [100, 64]"),
        "{e}"
    );
    edit_json(&config, |c| c["vocab_size"] = json!(263));

    // tokenizer missing, or not JSON
    let tok = src.join("tokenizer.json");
    let saved = fs::read(&tok).unwrap();
    fs::remove_file(&tok).unwrap();
    let e = import_err(&store, &src);
    assert!(e.contains("tokenizer.json is missing"), "{e}");
    fs::write(&tok, &saved[..saved.len() / 2]).unwrap();
    let e = import_err(&store, &src);
    assert!(e.contains("tokenizer.json is not valid JSON"), "{e}");
    fs::write(&tok, &saved).unwrap();

    // truncated weights
    let w = src.join("model.safetensors");
    let bytes = fs::read(&w).unwrap();
    fs::write(&w, &bytes[..bytes.len() - 2]).unwrap();
    let e = import_err(&store, &src);
    assert!(
        e.contains("invalid safetensors file") && e.contains("model.safetensors"),
        "{e}"
    );
    fs::remove_file(&w).unwrap();
    let e = import_err(&store, &src);
    assert!(
        e.contains("no model.safetensors or model.safetensors.index.json"),
        "{e}"
    );
    fs::write(&w, &bytes).unwrap();

    // and with everything restored it imports
    store.import(&src, "m", &mut |_| {}).unwrap();
    assert_eq!(dir_names(store.root()), ["m"]);
}
