//! Test support: a GGUF writer and a tiny synthetic Llama whose exact dequantized weights the
//! test knows independently of the crate (every value is exactly representable in bf16, so
//! the expected output needs no rounding model).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};

/// A metadata value to write.
#[derive(Clone)]
pub enum Kv {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    U64(u64),
    I64(i64),
    F64(f64),
    /// (element type id, elements)
    Arr(u32, Vec<Kv>),
}

impl Kv {
    fn type_id(&self) -> u32 {
        match self {
            Kv::U8(_) => 0,
            Kv::I8(_) => 1,
            Kv::U16(_) => 2,
            Kv::I16(_) => 3,
            Kv::U32(_) => 4,
            Kv::I32(_) => 5,
            Kv::F32(_) => 6,
            Kv::Bool(_) => 7,
            Kv::Str(_) => 8,
            Kv::Arr(..) => 9,
            Kv::U64(_) => 10,
            Kv::I64(_) => 11,
            Kv::F64(_) => 12,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Kv::U8(v) => out.push(*v),
            Kv::I8(v) => out.push(*v as u8),
            Kv::U16(v) => out.extend(v.to_le_bytes()),
            Kv::I16(v) => out.extend(v.to_le_bytes()),
            Kv::U32(v) => out.extend(v.to_le_bytes()),
            Kv::I32(v) => out.extend(v.to_le_bytes()),
            Kv::F32(v) => out.extend(v.to_le_bytes()),
            Kv::Bool(v) => out.push(*v as u8),
            Kv::Str(s) => put_str(out, s),
            Kv::U64(v) => out.extend(v.to_le_bytes()),
            Kv::I64(v) => out.extend(v.to_le_bytes()),
            Kv::F64(v) => out.extend(v.to_le_bytes()),
            Kv::Arr(ty, items) => {
                out.extend(ty.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for i in items {
                    i.write(out);
                }
            }
        }
    }
}

pub fn strs(v: &[&str]) -> Kv {
    Kv::Arr(8, v.iter().map(|s| Kv::Str(s.to_string())).collect())
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

pub struct RawTensor {
    pub name: String,
    /// ggml order (row length first)
    pub dims: Vec<u64>,
    pub ty: u32,
    pub data: Vec<u8>,
}

pub struct GgufBuilder {
    pub version: u32,
    pub alignment: u64,
    pub kv: Vec<(String, Kv)>,
    pub tensors: Vec<RawTensor>,
}

impl GgufBuilder {
    pub fn new() -> Self {
        GgufBuilder {
            version: 3,
            alignment: 32,
            kv: Vec::new(),
            tensors: Vec::new(),
        }
    }

    pub fn kv(&mut self, k: &str, v: Kv) -> &mut Self {
        self.kv.retain(|(key, _)| key != k);
        self.kv.push((k.to_string(), v));
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut out, k);
            out.extend(v.type_id().to_le_bytes());
            v.write(&mut out);
        }
        let align = |x: u64| x.div_ceil(self.alignment) * self.alignment;
        let mut offset = 0u64;
        let mut offsets = Vec::new();
        for t in &self.tensors {
            put_str(&mut out, &t.name);
            out.extend((t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offsets.push(offset);
            offset = align(offset + t.data.len() as u64);
        }
        let data_start = align(out.len() as u64);
        out.resize(data_start as usize, 0);
        for (t, off) in self.tensors.iter().zip(offsets) {
            out.resize((data_start + off) as usize, 0);
            out.extend(&t.data);
        }
        out
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).unwrap();
    }
}

/// Small deterministic PRNG (xorshift), so tests need no rand crate.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

pub const F32: u32 = 0;
pub const F16: u32 = 1;
pub const Q4_0: u32 = 2;
pub const Q4_1: u32 = 3;
pub const Q8_0: u32 = 8;
pub const BF16: u32 = 30;

/// Random data of `n` elements (a multiple of the block size) in ggml type `ty`, and the exact
/// values it decodes to, computed from the block formulas in ggml-common.h. The scales are
/// powers of two and the integers small, so every value is exact in f16 and bf16.
pub fn encode(ty: u32, n: usize, rng: &mut Rng) -> (Vec<u8>, Vec<f32>) {
    let mut bytes = Vec::new();
    let mut vals = Vec::with_capacity(n);
    match ty {
        F32 | F16 | BF16 => {
            for _ in 0..n {
                let v = (rng.below(256) as f32 - 128.0) / 64.0;
                match ty {
                    F32 => bytes.extend(v.to_le_bytes()),
                    F16 => bytes.extend(f16::from_f32(v).to_le_bytes()),
                    _ => bytes.extend(bf16::from_f32(v).to_le_bytes()),
                }
                vals.push(v);
            }
        }
        Q8_0 => {
            for _ in 0..n / 32 {
                let d = 1.0 / 128.0;
                bytes.extend(f16::from_f32(d).to_le_bytes());
                for _ in 0..32 {
                    let q = rng.below(255) as i32 - 127;
                    bytes.push(q as i8 as u8);
                    vals.push(q as f32 * d);
                }
            }
        }
        Q4_0 | Q4_1 => {
            for _ in 0..n / 32 {
                let d = if ty == Q4_0 { 1.0 / 16.0 } else { 1.0 / 32.0 };
                let m = if ty == Q4_0 {
                    0.0
                } else {
                    -(rng.below(8) as f32) / 32.0
                };
                bytes.extend(f16::from_f32(d).to_le_bytes());
                if ty == Q4_1 {
                    bytes.extend(f16::from_f32(m).to_le_bytes());
                }
                let nib: Vec<u8> = (0..32).map(|_| rng.below(16) as u8).collect();
                // byte j: element j in the low nibble, element j + 16 in the high nibble
                bytes.extend((0..16).map(|j| nib[j] | (nib[j + 16] << 4)));
                vals.extend(nib.iter().map(|&q| match ty {
                    Q4_0 => (q as f32 - 8.0) * d,
                    _ => q as f32 * d + m,
                }));
            }
        }
        _ => panic!("encode: type {ty}"),
    }
    (bytes, vals)
}

pub const HIDDEN: u64 = 64;
pub const INTER: u64 = 96;
pub const LAYERS: u64 = 2;
pub const HEADS: u64 = 4;
pub const KV_HEADS: u64 = 2;
pub const HEAD_DIM: u64 = 16;
pub const CHAT_TEMPLATE: &str =
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}";

/// GPT-2's byte → unicode alphabet (printable bytes map to themselves, the rest to U+0100..).
pub fn byte_chars() -> Vec<char> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut next = 256;
    (0..256u32)
        .map(|b| {
            if printable.contains(&b) {
                char::from_u32(b).unwrap()
            } else {
                next += 1;
                char::from_u32(next - 1).unwrap()
            }
        })
        .collect()
}

/// Specials, then the 256 byte tokens, then merged tokens.
pub fn tiny_vocab() -> (Vec<String>, Vec<String>) {
    let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        .map(String::from)
        .to_vec();
    tokens.extend(byte_chars().into_iter().map(String::from));
    let merges = ["Ġ t", "h e", "Ġt he", "1 2"];
    tokens.extend(["Ġt", "he", "Ġthe", "12"].map(String::from));
    (tokens, merges.map(String::from).to_vec())
}

pub fn token_id(tokens: &[String], t: &str) -> u32 {
    tokens.iter().position(|x| x == t).unwrap() as u32
}

/// The tiny model: its GGUF, and the HF tensors (row-major f32 values) it must convert to.
pub struct Tiny {
    pub gguf: GgufBuilder,
    pub expected: BTreeMap<String, (Vec<u64>, Vec<f32>)>,
    pub tokens: Vec<String>,
}

/// (GGUF kind, HF module, ggml type, ggml dims, heads to unpermute by)
type LayerTensor = (&'static str, &'static str, u32, Vec<u64>, Option<u64>);

/// A 2-layer Llama using every supported block type. `untied` adds an `output.weight`.
pub fn tiny_llama(untied: bool) -> Tiny {
    let (tokens, merges) = tiny_vocab();
    let vocab = tokens.len() as u64;
    let mut g = GgufBuilder::new();
    g.kv("general.architecture", Kv::Str("llama".into()))
        .kv("general.name", Kv::Str("tiny".into()))
        .kv("llama.block_count", Kv::U32(LAYERS as u32))
        .kv("llama.context_length", Kv::U32(256))
        .kv("llama.embedding_length", Kv::U32(HIDDEN as u32))
        .kv("llama.feed_forward_length", Kv::U32(INTER as u32))
        .kv("llama.attention.head_count", Kv::U32(HEADS as u32))
        .kv("llama.attention.head_count_kv", Kv::U32(KV_HEADS as u32))
        .kv("llama.rope.freq_base", Kv::F32(10000.0))
        .kv("llama.attention.layer_norm_rms_epsilon", Kv::F32(1e-5))
        .kv("tokenizer.ggml.model", Kv::Str("gpt2".into()))
        .kv("tokenizer.ggml.pre", Kv::Str("smollm".into()))
        .kv(
            "tokenizer.ggml.tokens",
            Kv::Arr(8, tokens.iter().map(|t| Kv::Str(t.clone())).collect()),
        )
        .kv(
            "tokenizer.ggml.token_type",
            Kv::Arr(
                5,
                (0..vocab)
                    .map(|i| Kv::I32(if i < 3 { 3 } else { 1 }))
                    .collect(),
            ),
        )
        .kv(
            "tokenizer.ggml.merges",
            Kv::Arr(8, merges.iter().map(|m| Kv::Str(m.clone())).collect()),
        )
        .kv("tokenizer.ggml.bos_token_id", Kv::U32(1))
        .kv("tokenizer.ggml.eos_token_id", Kv::U32(2))
        .kv("tokenizer.ggml.unknown_token_id", Kv::U32(0))
        .kv("tokenizer.ggml.padding_token_id", Kv::U32(2))
        .kv("tokenizer.ggml.add_bos_token", Kv::Bool(false))
        .kv("tokenizer.chat_template", Kv::Str(CHAT_TEMPLATE.into()));

    let mut rng = Rng::new(42);
    let mut expected = BTreeMap::new();
    let mut add =
        |g: &mut GgufBuilder, gguf: &str, hf: &str, ty: u32, dims: Vec<u64>, heads: Option<u64>| {
            let n = dims.iter().product::<u64>() as usize;
            let (data, vals) = encode(ty, n, &mut rng);
            let shape: Vec<u64> = dims.iter().rev().copied().collect();
            let vals = match heads {
                Some(h) => unpermute_rows(&vals, shape[0], shape[1], h),
                None => vals,
            };
            expected.insert(hf.to_string(), (shape, vals));
            g.tensors.push(RawTensor {
                name: gguf.into(),
                dims,
                ty,
                data,
            });
        };
    add(
        &mut g,
        "token_embd.weight",
        "model.embed_tokens.weight",
        Q8_0,
        vec![HIDDEN, vocab],
        None,
    );
    add(
        &mut g,
        "output_norm.weight",
        "model.norm.weight",
        F32,
        vec![HIDDEN],
        None,
    );
    if untied {
        add(
            &mut g,
            "output.weight",
            "lm_head.weight",
            F16,
            vec![HIDDEN, vocab],
            None,
        );
    }
    let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
    for l in 0..LAYERS {
        let v_ty = if l == 0 { F16 } else { BF16 };
        let layer: [LayerTensor; 9] = [
            ("attn_norm", "input_layernorm", F32, vec![HIDDEN], None),
            (
                "ffn_norm",
                "post_attention_layernorm",
                F32,
                vec![HIDDEN],
                None,
            ),
            (
                "attn_q",
                "self_attn.q_proj",
                Q4_0,
                vec![HIDDEN, q],
                Some(HEADS),
            ),
            (
                "attn_k",
                "self_attn.k_proj",
                Q4_1,
                vec![HIDDEN, kv],
                Some(KV_HEADS),
            ),
            ("attn_v", "self_attn.v_proj", v_ty, vec![HIDDEN, kv], None),
            (
                "attn_output",
                "self_attn.o_proj",
                Q8_0,
                vec![q, HIDDEN],
                None,
            ),
            ("ffn_gate", "mlp.gate_proj", Q4_1, vec![HIDDEN, INTER], None),
            ("ffn_up", "mlp.up_proj", F16, vec![HIDDEN, INTER], None),
            ("ffn_down", "mlp.down_proj", Q4_0, vec![INTER, HIDDEN], None),
        ];
        for (gk, hk, ty, dims, heads) in layer {
            add(
                &mut g,
                &format!("blk.{l}.{gk}.weight"),
                &format!("model.layers.{l}.{hk}.weight"),
                ty,
                dims,
                heads,
            );
        }
    }
    Tiny {
        gguf: g,
        expected,
        tokens,
    }
}

/// HF rows from llama.cpp's permuted rows, written out independently of the crate: llama.cpp
/// stores HF row (head h, half a, index d) at GGUF row (h, d, a).
pub fn unpermute_rows(gguf: &[f32], rows: u64, cols: u64, heads: u64) -> Vec<f32> {
    let half = rows / heads / 2;
    let mut hf = vec![0.0; gguf.len()];
    for h in 0..heads {
        for a in 0..2 {
            for d in 0..half {
                let hf_row = (h * 2 * half + a * half + d) as usize;
                let gguf_row = (h * 2 * half + d * 2 + a) as usize;
                let c = cols as usize;
                hf[hf_row * c..][..c].copy_from_slice(&gguf[gguf_row * c..][..c]);
            }
        }
    }
    hf
}

pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p =
            std::env::temp_dir().join(format!("model-store-test-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Names in the models dir: checks that failed imports leave nothing (not even hidden temp
/// directories) behind.
pub fn dir_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Decode a safetensors tensor to f32.
pub fn tensor_f32(st: &safetensors::SafeTensors, name: &str) -> (Vec<u64>, Vec<f32>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("tensor {name}: {e:?}"));
    let shape = t.shape().iter().map(|&d| d as u64).collect();
    let d = t.data();
    let vals = match t.dtype() {
        safetensors::Dtype::BF16 => d
            .chunks(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        safetensors::Dtype::F16 => d
            .chunks(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        safetensors::Dtype::F32 => d
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        other => panic!("dtype {other:?}"),
    };
    (shape, vals)
}
