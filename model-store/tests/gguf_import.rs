//! GGUF import end to end on a synthetic tiny Llama, and the errors bad files must give.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use model_store::gguf::reader::{GgufFile, Value};
use model_store::{ImportOptions, ModelStore, OutDtype, Progress};
use serde_json::Value as Json;

fn read_json(p: &Path) -> Json {
    serde_json::from_str(&fs::read_to_string(p).unwrap()).unwrap()
}

fn import_err(store: &ModelStore, src: &Path) -> String {
    let e = store.import(src, "m", &mut |_| {}).unwrap_err();
    // nothing half-written: no entry, no hidden temp dir
    assert_eq!(
        dir_names(store.root()),
        Vec::<String>::new(),
        "leftovers after: {e:#}"
    );
    format!("{e:#}")
}

#[test]
fn tiny_llama_end_to_end() {
    let tmp = TempDir::new("e2e");
    let tiny = tiny_llama(false);
    let src = tmp.path().join("tiny.gguf");
    tiny.gguf.write(&src);
    let store = ModelStore::open(&tmp.path().join("state/models")).unwrap();

    let mut events: Vec<Progress> = Vec::new();
    let entry = store.import(&src, "tiny", &mut |p| events.push(p)).unwrap();

    // progress: per tensor, monotonic, ending at the total byte count of the weights
    let n_tensors = tiny.expected.len();
    assert_eq!(events.len(), n_tensors + 1);
    assert!(events.windows(2).all(|w| w[0].done <= w[1].done));
    let last = events.last().unwrap();
    let weight_elems: u64 = tiny
        .expected
        .values()
        .map(|(s, _)| s.iter().product::<u64>())
        .sum();
    assert_eq!(
        (last.stage, last.done, last.total),
        ("convert", weight_elems * 2, weight_elems * 2)
    );

    let dir = store.root().join("tiny");
    assert_eq!(entry.dir, dir);
    assert_eq!(entry.architecture, "LlamaForCausalLM");
    assert_eq!(entry.dtype, "bf16");
    assert_eq!(entry.params, weight_elems);
    assert_eq!(
        entry.source,
        format!("gguf:{}", src.canonicalize().unwrap().display())
    );
    assert_eq!(
        (entry.layers, entry.hidden, entry.vocab),
        (LAYERS, HIDDEN, tiny.tokens.len() as u64)
    );
    assert!(entry.tie_word_embeddings);
    let files = dir_names(&dir);
    assert_eq!(
        files,
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "pie-model.json",
            "tokenizer.json",
            "tokenizer_config.json"
        ]
    );
    let on_disk: u64 = files
        .iter()
        .map(|f| fs::metadata(dir.join(f)).unwrap().len())
        .sum();
    assert!(
        entry.bytes <= on_disk && on_disk - entry.bytes < 1024,
        "{} vs {on_disk}",
        entry.bytes
    );
    assert_eq!(store.get("tiny").unwrap(), entry);
    assert_eq!(store.list().unwrap(), vec![entry.clone()]);

    // weights: names, shapes, dtype, values (including unpermuted Q/K), no lm_head (tied)
    let buf = fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&buf).unwrap();
    let mut names = st.names().into_iter().cloned().collect::<Vec<_>>();
    names.sort();
    assert_eq!(names, tiny.expected.keys().cloned().collect::<Vec<_>>());
    for (name, (shape, vals)) in &tiny.expected {
        assert_eq!(st.tensor(name).unwrap().dtype(), safetensors::Dtype::BF16);
        let (s, v) = tensor_f32(&st, name);
        assert_eq!(&s, shape, "{name}");
        assert!(v == *vals, "{name}: values differ");
    }
    // The Q/K permutation concretely: with head_dim 16, HF row 1 (head 0, first half, index
    // 1) is GGUF row 2, and HF row 8 (head 0, second half, index 0) is GGUF row 1.
    let gq = &tiny
        .gguf
        .tensors
        .iter()
        .find(|t| t.name == "blk.0.attn_q.weight")
        .unwrap();
    let (_, gvals) = encode_again(gq);
    let (_, hq) = tensor_f32(&st, "model.layers.0.self_attn.q_proj.weight");
    let row = |v: &[f32], r: usize| v[r * HIDDEN as usize..][..HIDDEN as usize].to_vec();
    assert_eq!(row(&hq, 1), row(&gvals, 2));
    assert_eq!(row(&hq, 8), row(&gvals, 1));
    assert_ne!(row(&hq, 1), row(&gvals, 1));

    // config.json
    let c = read_json(&dir.join("config.json"));
    assert_eq!(c["architectures"][0], "LlamaForCausalLM");
    assert_eq!(c["hidden_size"], HIDDEN);
    assert_eq!(c["intermediate_size"], INTER);
    assert_eq!(c["num_hidden_layers"], LAYERS);
    assert_eq!(c["num_attention_heads"], HEADS);
    assert_eq!(c["num_key_value_heads"], KV_HEADS);
    assert_eq!(c["head_dim"], HEAD_DIM);
    assert_eq!(c["vocab_size"], tiny.tokens.len());
    assert_eq!(c["max_position_embeddings"], 256);
    assert_eq!(c["rms_norm_eps"].as_f64(), Some(1e-5));
    assert_eq!(c["rope_theta"].as_f64(), Some(10000.0));
    assert_eq!(c["rope_scaling"], Json::Null);
    assert_eq!(c["tie_word_embeddings"], true);
    assert_eq!(
        (c["bos_token_id"].as_u64(), c["eos_token_id"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(c["torch_dtype"], "bfloat16");
    let gc = read_json(&dir.join("generation_config.json"));
    assert_eq!(gc["eos_token_id"], 2);

    // tokenizer_config.json carries the chat template and the special tokens
    let tc = read_json(&dir.join("tokenizer_config.json"));
    assert_eq!(tc["chat_template"], CHAT_TEMPLATE);
    assert_eq!(tc["bos_token"], "<|im_start|>");
    assert_eq!(tc["eos_token"], "<|im_end|>");
    assert_eq!(tc["unk_token"], "<|endoftext|>");
    assert_eq!(tc["add_bos_token"], false);

    // tokenizer.json loads with the tokenizers crate and encodes with merges, specials and
    // the smollm pre-tokenizer (digits split one by one, so the "1 2" merge never applies)
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let enc = tok
        .encode("<|im_start|>the the 12<|im_end|>", false)
        .unwrap();
    let id = |t: &str| token_id(&tiny.tokens, t);
    assert_eq!(
        enc.get_ids(),
        [
            1,
            id("t"),
            id("he"),
            id("Ġthe"),
            id("Ġ"),
            id("1"),
            id("2"),
            2
        ]
        .as_slice()
    );
    let enc = tok.encode("é", false).unwrap();
    assert_eq!(
        enc.get_ids(),
        [id("Ã"), id("©")].as_slice(),
        "byte-level: é is two bytes"
    );
    assert_eq!(
        tok.decode(&[1, id("t"), id("he"), id("Ġthe"), 2], false)
            .unwrap(),
        "<|im_start|>the the<|im_end|>"
    );
    assert_eq!(tok.decode(&[1, id("Ġthe"), 2], true).unwrap(), " the");

    // the same name again is refused; removing frees it
    let e = store.import(&src, "tiny", &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    store.remove("tiny").unwrap();
    assert_eq!(dir_names(store.root()), Vec::<String>::new());
    assert!(
        store
            .get("tiny")
            .unwrap_err()
            .to_string()
            .contains("no model named `tiny`")
    );
}

/// Decode a GGUF tensor's data with the test's own formulas (by re-deriving from the builder's
/// RNG would couple tests to order; instead decode the bytes directly).
fn encode_again(t: &RawTensor) -> (Vec<u64>, Vec<f32>) {
    assert_eq!(t.ty, Q4_0);
    let mut vals = Vec::new();
    for b in t.data.chunks(18) {
        let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
        let lo: Vec<f32> = b[2..].iter().map(|q| ((q & 15) as f32 - 8.0) * d).collect();
        let hi: Vec<f32> = b[2..].iter().map(|q| ((q >> 4) as f32 - 8.0) * d).collect();
        vals.extend(lo);
        vals.extend(hi);
    }
    (t.dims.iter().rev().copied().collect(), vals)
}

#[test]
fn untied_f32_output_and_alignment() {
    let tmp = TempDir::new("untied");
    let mut tiny = tiny_llama(true);
    tiny.gguf.alignment = 64;
    tiny.gguf.kv("general.alignment", Kv::U32(64));
    let src = tmp.path().join("tiny.gguf");
    tiny.gguf.write(&src);
    let store = ModelStore::open(&tmp.path().join("models")).unwrap();
    let entry = store
        .import_with(
            &src,
            "tiny-f32",
            &ImportOptions {
                dtype: OutDtype::F32,
            },
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(entry.dtype, "f32");
    assert!(!entry.tie_word_embeddings);
    let dir = store.root().join("tiny-f32");
    let buf = fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&buf).unwrap();
    assert_eq!(
        st.tensor("lm_head.weight").unwrap().dtype(),
        safetensors::Dtype::F32
    );
    for (name, (shape, vals)) in &tiny.expected {
        assert_eq!(
            tensor_f32(&st, name),
            (shape.clone(), vals.clone()),
            "{name}"
        );
    }
    let c = read_json(&dir.join("config.json"));
    assert_eq!(c["tie_word_embeddings"], false);
    assert_eq!(c["torch_dtype"], "float32");
}

#[test]
fn reader_parses_every_value_type() {
    let tmp = TempDir::new("kv");
    let mut g = GgufBuilder::new();
    g.version = 2;
    g.kv("u8", Kv::U8(200))
        .kv("i8", Kv::I8(-5))
        .kv("u16", Kv::U16(65000))
        .kv("i16", Kv::I16(-300))
        .kv("u32", Kv::U32(4_000_000_000))
        .kv("i32", Kv::I32(-70000))
        .kv("f32", Kv::F32(0.5))
        .kv("bool", Kv::Bool(true))
        .kv("str", Kv::Str("héllo".into()))
        .kv("u64", Kv::U64(1 << 40))
        .kv("i64", Kv::I64(-(1 << 40)))
        .kv("f64", Kv::F64(-2.25))
        .kv("strs", strs(&["a", "", "ç"]))
        .kv(
            "nested",
            Kv::Arr(
                9,
                vec![Kv::Arr(4, vec![Kv::U32(1), Kv::U32(2)]), Kv::Arr(4, vec![])],
            ),
        );
    g.tensors.push(RawTensor {
        name: "x".into(),
        dims: vec![32, 2],
        ty: Q8_0,
        data: vec![0; 68],
    });
    let p = tmp.path().join("kv.gguf");
    g.write(&p);
    let f = GgufFile::open(&p).unwrap();
    assert_eq!(f.version, 2);
    let m = &f.metadata;
    assert_eq!(m["u8"], Value::U8(200));
    assert_eq!(m["i8"], Value::I8(-5));
    assert_eq!(m["u16"], Value::U16(65000));
    assert_eq!(m["i16"], Value::I16(-300));
    assert_eq!(m["u32"], Value::U32(4_000_000_000));
    assert_eq!(m["i32"], Value::I32(-70000));
    assert_eq!(m["f32"], Value::F32(0.5));
    assert_eq!(m["bool"], Value::Bool(true));
    assert_eq!(m["str"], Value::String("héllo".into()));
    assert_eq!(m["u64"], Value::U64(1 << 40));
    assert_eq!(m["i64"], Value::I64(-(1 << 40)));
    assert_eq!(m["f64"], Value::F64(-2.25));
    assert_eq!(f.req_str_array("strs").unwrap(), ["a", "", "ç"]);
    assert_eq!(
        m["nested"],
        Value::Array(vec![
            Value::Array(vec![Value::U32(1), Value::U32(2)]),
            Value::Array(vec![])
        ])
    );
    assert_eq!(f.tensors.len(), 1);
    assert_eq!(
        (f.tensors[0].dims.clone(), f.tensors[0].hf_shape()),
        (vec![32, 2], vec![2, 32])
    );
    assert_eq!(f.data(&f.tensors[0]).len(), 68);
    let e = f.req_u64("str").unwrap_err().to_string();
    assert!(
        e.contains("`str` should be an unsigned integer, found string"),
        "{e}"
    );
    assert!(
        f.req_u64("nope")
            .unwrap_err()
            .to_string()
            .contains("missing metadata key `nope`")
    );
}

#[test]
fn truncated_files_give_errors_not_panics() {
    let tmp = TempDir::new("trunc");
    let bytes = tiny_llama(false).gguf.bytes();
    let p = tmp.path().join("cut.gguf");
    // every cut inside the header, then a sample through the tensor data
    let cuts = (0..4096.min(bytes.len())).chain((4096..bytes.len()).step_by(997));
    for cut in cuts {
        // A fresh file each time: rewriting one file in place makes ext4 flush it on close
        // (auto_da_alloc), which turns this loop from milliseconds into seconds.
        let p = tmp.path().join(format!("cut-{cut}.gguf"));
        fs::write(&p, &bytes[..cut]).unwrap();
        let e = match GgufFile::open(&p) {
            Ok(_) => panic!("cut at {cut} of {} parsed", bytes.len()),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            e.contains(&format!("cut-{cut}.gguf")),
            "cut {cut}: error does not name the file: {e}"
        );
        fs::remove_file(&p).unwrap();
    }
    let store = ModelStore::open(&tmp.path().join("models")).unwrap();
    fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
    let e = import_err(&store, &p);
    assert!(
        e.contains("extends past the end of the file") && e.contains("truncated"),
        "{e}"
    );
    fs::write(&p, &bytes[..1000]).unwrap();
    let e = import_err(&store, &p);
    assert!(e.contains("truncated file"), "{e}");
}

#[test]
fn bad_magic_version_and_types() {
    let tmp = TempDir::new("bad");
    let store = ModelStore::open(&tmp.path().join("models")).unwrap();
    let p = tmp.path().join("bad.gguf");

    let mut bytes = tiny_llama(false).gguf.bytes();
    bytes[3] = b'X';
    fs::write(&p, &bytes).unwrap();
    let e = import_err(&store, &p);
    assert!(e.contains("bad.gguf") && e.contains("bad magic"), "{e}");
    assert!(format!("{:#}", GgufFile::open(&p).err().unwrap()).contains("not a GGUF file"));

    let mut g = tiny_llama(false).gguf;
    g.version = 1;
    g.write(&p);
    assert!(import_err(&store, &p).contains("unsupported GGUF version 1"));

    // a k-quant the importer does not dequantize: named, with the tensor
    let mut g = tiny_llama(false).gguf;
    let t = g
        .tensors
        .iter_mut()
        .find(|t| t.name == "blk.1.ffn_up.weight")
        .unwrap();
    (t.ty, t.dims, t.data) = (12, vec![256, 24], vec![0; 24 * 144]);
    g.write(&p);
    let e = import_err(&store, &p);
    assert!(
        e.contains("`blk.1.ffn_up.weight` has type Q4_K") && e.contains("supported: F32"),
        "{e}"
    );

    let mut g = tiny_llama(false).gguf;
    g.tensors[3].ty = 99;
    g.write(&p);
    assert!(import_err(&store, &p).contains("unknown ggml type id 99"));

    // wrong shape for the metadata
    let mut g = tiny_llama(false).gguf;
    g.kv("llama.feed_forward_length", Kv::U32(128));
    g.write(&p);
    let e = import_err(&store, &p);
    assert!(
        e.contains("mlp.up_proj.weight` has shape [96, 64], config implies [128, 64]"),
        "{e}"
    );

    // unknown tensor name, wrong architecture, unsupported tokenizer
    let mut g = tiny_llama(false).gguf;
    g.tensors[2].name = "blk.0.attn_qkv.weight".into();
    g.write(&p);
    assert!(import_err(&store, &p).contains("unknown tensor `blk.0.attn_qkv.weight`"));
    let mut g = tiny_llama(false).gguf;
    g.kv("general.architecture", Kv::Str("gemma".into()));
    g.write(&p);
    assert!(import_err(&store, &p).contains("architecture `gemma` is not supported"));
    let mut g = tiny_llama(false).gguf;
    g.kv("tokenizer.ggml.pre", Kv::Str("llama-bpe".into()));
    g.write(&p);
    assert!(import_err(&store, &p).contains("pre-tokenizer `llama-bpe`"));
    let mut g = tiny_llama(false).gguf;
    g.kv("tokenizer.ggml.model", Kv::Str("llama".into()));
    g.write(&p);
    assert!(import_err(&store, &p).contains("tokenizer model `llama` is not supported"));
}

#[test]
fn hostile_counts_and_sizes() {
    let tmp = TempDir::new("hostile");
    let p = tmp.path().join("h.gguf");
    let header = |n_tensors: u64, n_kv: u64| {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(n_tensors.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b
    };
    let check = |bytes: &[u8], want: &str| {
        fs::write(&p, bytes).unwrap();
        let e = format!(
            "{:#}",
            GgufFile::open(&p).err().expect("hostile file parsed")
        );
        assert!(e.contains(want), "want `{want}` in: {e}");
    };
    check(&header(0, u64::MAX), "truncated");
    check(&header(u64::MAX, 0), "cannot fit");
    // a string claiming 2^63 bytes
    let mut b = header(0, 1);
    b.extend((1u64 << 63).to_le_bytes());
    check(&b, "string length past the end");
    // an array claiming 2^62 u32 elements
    let mut b = header(0, 1);
    b.extend(1u64.to_le_bytes());
    b.push(b'a');
    b.extend(9u32.to_le_bytes());
    b.extend(4u32.to_le_bytes());
    b.extend((1u64 << 62).to_le_bytes());
    check(&b, "cannot fit");
    // arrays nested without end
    let mut b = header(0, 1);
    b.extend(1u64.to_le_bytes());
    b.push(b'a');
    b.extend(9u32.to_le_bytes());
    for _ in 0..100 {
        b.extend(9u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
    }
    b.extend([0; 64]);
    check(&b, "nested deeper");
    // tensors: too many dims, an element count that overflows, data past the end
    let tensor = |dims: &[u64], ty: u32, offset: u64| {
        let mut b = header(1, 0);
        b.extend(1u64.to_le_bytes());
        b.push(b't');
        b.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| b.extend(d.to_le_bytes()));
        b.extend(ty.to_le_bytes());
        b.extend(offset.to_le_bytes());
        b.extend([0; 64]);
        b
    };
    check(&tensor(&[1, 1, 1, 1, 1], F32, 0), "5 dimensions");
    check(&tensor(&[1 << 32, 1 << 32], F32, 0), "overflows");
    check(
        &tensor(&[1 << 40], F32, 0),
        "extends past the end of the file",
    );
    check(&tensor(&[8], F32, u64::MAX - 31), "overflows");
    check(
        &tensor(&[33], Q8_0, 0),
        "not a multiple of the Q8_0 block size 32",
    );
    check(&tensor(&[8], F32, 3), "not aligned");
}

#[test]
fn names_are_validated() {
    let tmp = TempDir::new("names");
    let store = ModelStore::open(&tmp.path().join("models")).unwrap();
    let src = tmp.path().join("tiny.gguf");
    tiny_llama(false).gguf.write(&src);
    for bad in ["", "..", ".", "a/b", "../x", ".hidden", "a b", "x\0y"] {
        let e = store
            .import(&src, bad, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("model name"), "{bad:?}: {e}");
        assert!(store.get(bad).is_err());
        assert!(store.remove(bad).is_err());
    }
    assert_eq!(dir_names(store.root()), Vec::<String>::new());
    // missing source
    let e = store
        .import(&tmp.path().join("nope.gguf"), "m", &mut |_| {})
        .unwrap_err();
    assert!(format!("{e:#}").contains("nope.gguf"), "{e:#}");
    assert!(
        store
            .remove("m")
            .unwrap_err()
            .to_string()
            .contains("no model named `m`")
    );
}

#[test]
fn stale_temp_dirs_and_manifestless_dirs() {
    let tmp = TempDir::new("stale");
    let root = tmp.path().join("models");
    fs::create_dir_all(root.join(".import-x-999999999-0-1/sub")).unwrap();
    fs::create_dir_all(root.join(format!(".import-y-{}-0-1", std::process::id()))).unwrap();
    fs::create_dir_all(root.join("by-hand")).unwrap();
    let store = ModelStore::open(&root).unwrap();
    // the dead process's temp dir is gone, the live one's stays (it may be importing)
    assert_eq!(
        dir_names(&root),
        [
            format!(".import-y-{}-0-1", std::process::id()),
            "by-hand".to_string()
        ]
    );
    assert_eq!(store.list().unwrap(), vec![]);
    let src = tmp.path().join("tiny.gguf");
    tiny_llama(false).gguf.write(&src);
    let e = store.import(&src, "by-hand", &mut |_| {}).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    store.remove("by-hand").unwrap();
    store.import(&src, "by-hand", &mut |_| {}).unwrap();
    assert_eq!(store.list().unwrap().len(), 1);
}
