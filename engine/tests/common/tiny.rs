//! A tiny random Llama written to a temporary directory (safetensors + config + a word-level
//! tokenizer), and a plain contiguous f64 reference forward pass over the same weights.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

pub struct TinySpec {
    pub hidden: usize,
    pub inter: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab: usize,
    pub qkv_bias: bool,
    pub tied: bool,
    pub llama3_rope: bool,
    /// Mistral sliding window (architecture MistralForCausalLM when set).
    pub window: Option<usize>,
    pub seed: u64,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            hidden: 64,
            inter: 96,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            vocab: 80,
            qkv_bias: false,
            tied: true,
            llama3_rope: false,
            window: None,
            seed: 1,
        }
    }
}

impl TinySpec {
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }
}

struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

fn f(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

/// The model's tensors (bf16-rounded, as f32) by HF name, with shapes.
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

pub fn make_tensors(s: &TinySpec) -> Tensors {
    let mut rng = Lcg(s.seed);
    let (h, hd) = (s.hidden, s.head_dim());
    let mut t = Tensors::new();
    let mut add = |name: String, shape: Vec<usize>, scale: f32, offset: f32, rng: &mut Lcg| {
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|_| f(bf16(offset + scale * rng.next())))
            .collect();
        t.insert(name, (shape, v));
    };
    add(
        "model.embed_tokens.weight".into(),
        vec![s.vocab, h],
        1.0,
        0.0,
        &mut rng,
    );
    for l in 0..s.layers {
        let p = |x: &str| format!("model.layers.{l}.{x}");
        add(p("input_layernorm.weight"), vec![h], 0.2, 1.0, &mut rng);
        add(
            p("self_attn.q_proj.weight"),
            vec![s.heads * hd, h],
            0.3,
            0.0,
            &mut rng,
        );
        add(
            p("self_attn.k_proj.weight"),
            vec![s.kv_heads * hd, h],
            0.3,
            0.0,
            &mut rng,
        );
        add(
            p("self_attn.v_proj.weight"),
            vec![s.kv_heads * hd, h],
            0.3,
            0.0,
            &mut rng,
        );
        if s.qkv_bias {
            add(
                p("self_attn.q_proj.bias"),
                vec![s.heads * hd],
                0.2,
                0.0,
                &mut rng,
            );
            add(
                p("self_attn.k_proj.bias"),
                vec![s.kv_heads * hd],
                0.2,
                0.0,
                &mut rng,
            );
            add(
                p("self_attn.v_proj.bias"),
                vec![s.kv_heads * hd],
                0.2,
                0.0,
                &mut rng,
            );
        }
        add(
            p("self_attn.o_proj.weight"),
            vec![h, s.heads * hd],
            0.2,
            0.0,
            &mut rng,
        );
        add(
            p("post_attention_layernorm.weight"),
            vec![h],
            0.2,
            1.0,
            &mut rng,
        );
        add(
            p("mlp.gate_proj.weight"),
            vec![s.inter, h],
            0.3,
            0.0,
            &mut rng,
        );
        add(
            p("mlp.up_proj.weight"),
            vec![s.inter, h],
            0.3,
            0.0,
            &mut rng,
        );
        add(
            p("mlp.down_proj.weight"),
            vec![h, s.inter],
            0.2,
            0.0,
            &mut rng,
        );
    }
    add("model.norm.weight".into(), vec![h], 0.2, 1.0, &mut rng);
    if !s.tied {
        add(
            "lm_head.weight".into(),
            vec![s.vocab, h],
            0.5,
            0.0,
            &mut rng,
        );
    }
    t
}

pub fn write_safetensors(path: &Path, t: &Tensors) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, (shape, v)) in t {
        let start = data.len();
        for &x in v {
            data.extend_from_slice(&bf16(x).to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "BF16", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    std::fs::write(path, out).unwrap();
}

pub fn config_json(s: &TinySpec) -> serde_json::Value {
    let mut c = serde_json::json!({
        "architectures": [if s.qkv_bias { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" }],
        "hidden_size": s.hidden,
        "intermediate_size": s.inter,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads,
        "vocab_size": s.vocab,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": s.tied,
        "hidden_act": "silu",
        "bos_token_id": 1,
        "eos_token_id": 2,
    });
    if let Some(w) = s.window {
        c["architectures"] = serde_json::json!(["MistralForCausalLM"]);
        c["sliding_window"] = w.into();
    }
    if s.llama3_rope {
        c["rope_scaling"] = serde_json::json!({
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 16
        });
    }
    c
}

pub fn tokenizer_json(vocab: usize) -> serde_json::Value {
    let mut v = serde_json::Map::new();
    v.insert("<unk>".into(), 0.into());
    for i in 1..vocab {
        v.insert(format!("w{i}"), i.into());
    }
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": false},
        "model": {"type": "WordLevel", "vocab": v, "unk_token": "<unk>"}
    })
}

/// Writes a complete model directory; returns the tensors for the reference.
pub fn write_model(dir: &Path, s: &TinySpec) -> Tensors {
    let t = make_tensors(s);
    write_safetensors(&dir.join("model.safetensors"), &t);
    std::fs::write(dir.join("config.json"), config_json(s).to_string()).unwrap();
    std::fs::write(
        dir.join("tokenizer.json"),
        tokenizer_json(s.vocab).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::json!({
            "bos_token": "w1", "eos_token": "w2",
            "chat_template": "{% for m in messages %}<{{ m.role }}> {{ m.content | trim }} {% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
        })
        .to_string(),
    )
    .unwrap();
    t
}

fn matvec(w: &[f32], x: &[f64], n: usize) -> Vec<f64> {
    let k = x.len();
    (0..n)
        .map(|r| (0..k).map(|j| w[r * k + j] as f64 * x[j]).sum())
        .collect()
}

fn rms(x: &[f64], w: &[f32]) -> Vec<f64> {
    let ss = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ss + 1e-5).sqrt();
    x.iter().zip(w).map(|(a, b)| a * r * *b as f64).collect()
}

/// Logits at every position of `tokens` (positions 0..), computed naively with contiguous
/// f64 K/V. `allowed(i, j)`: may token i attend to token j (j <= i), for custom masks.
pub fn reference_logits(
    s: &TinySpec,
    t: &Tensors,
    tokens: &[u32],
    allowed: &dyn Fn(usize, usize) -> bool,
) -> Vec<Vec<f32>> {
    let cfg = engine::ModelConfig::from_json(&config_json(s).to_string()).unwrap();
    let inv_freq = cfg.rope_inv_freq();
    let (h, hd, nh, nkv) = (s.hidden, s.head_dim(), s.heads, s.kv_heads);
    let g = |n: &str| &t[n].1;
    let emb = g("model.embed_tokens.weight");
    let mut xs: Vec<Vec<f64>> = tokens
        .iter()
        .map(|&tk| {
            emb[tk as usize * h..(tk as usize + 1) * h]
                .iter()
                .map(|&v| v as f64)
                .collect()
        })
        .collect();
    let rope = |v: &mut [f64], pos: usize| {
        for head in v.chunks_mut(hd) {
            for i in 0..hd / 2 {
                let a = pos as f64 * inv_freq[i] as f64;
                let (sn, cs) = a.sin_cos();
                let (x, y) = (head[i], head[i + hd / 2]);
                head[i] = x * cs - y * sn;
                head[i + hd / 2] = y * cs + x * sn;
            }
        }
    };
    for l in 0..s.layers {
        let p = |x: &str| format!("model.layers.{l}.{x}");
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        let mut qs = Vec::new();
        for (i, x) in xs.iter().enumerate() {
            let hn = rms(x, g(&p("input_layernorm.weight")));
            let mut q = matvec(g(&p("self_attn.q_proj.weight")), &hn, nh * hd);
            let mut k = matvec(g(&p("self_attn.k_proj.weight")), &hn, nkv * hd);
            let mut v = matvec(g(&p("self_attn.v_proj.weight")), &hn, nkv * hd);
            if s.qkv_bias {
                for (a, b) in q.iter_mut().zip(g(&p("self_attn.q_proj.bias"))) {
                    *a += *b as f64;
                }
                for (a, b) in k.iter_mut().zip(g(&p("self_attn.k_proj.bias"))) {
                    *a += *b as f64;
                }
                for (a, b) in v.iter_mut().zip(g(&p("self_attn.v_proj.bias"))) {
                    *a += *b as f64;
                }
            }
            rope(&mut q, i);
            rope(&mut k, i);
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        for i in 0..xs.len() {
            let mut attn = vec![0f64; nh * hd];
            for hh in 0..nh {
                let kvh = hh / (nh / nkv);
                let q = &qs[i][hh * hd..(hh + 1) * hd];
                let sc: Vec<Option<f64>> = (0..=i)
                    .map(|j| {
                        (allowed(i, j) && s.window.is_none_or(|w| i - j < w)).then(|| {
                            q.iter()
                                .zip(&ks[j][kvh * hd..(kvh + 1) * hd])
                                .map(|(a, b)| a * b)
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                    })
                    .collect();
                let max = sc
                    .iter()
                    .flatten()
                    .cloned()
                    .fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = sc
                    .iter()
                    .map(|x| x.map_or(0.0, |v| (v - max).exp()))
                    .collect();
                let sum: f64 = w.iter().sum();
                for j in 0..=i {
                    for d in 0..hd {
                        attn[hh * hd + d] += w[j] / sum * vs[j][kvh * hd + d];
                    }
                }
            }
            let o = matvec(g(&p("self_attn.o_proj.weight")), &attn, h);
            for (a, b) in xs[i].iter_mut().zip(o) {
                *a += b;
            }
            let hn = rms(&xs[i], g(&p("post_attention_layernorm.weight")));
            let gt = matvec(g(&p("mlp.gate_proj.weight")), &hn, s.inter);
            let up = matvec(g(&p("mlp.up_proj.weight")), &hn, s.inter);
            let act: Vec<f64> = gt
                .iter()
                .zip(&up)
                .map(|(a, b)| a / (1.0 + (-a).exp()) * b)
                .collect();
            let d = matvec(g(&p("mlp.down_proj.weight")), &act, h);
            for (a, b) in xs[i].iter_mut().zip(d) {
                *a += b;
            }
        }
    }
    let head = if s.tied {
        g("model.embed_tokens.weight")
    } else {
        g("lm_head.weight")
    };
    xs.iter()
        .map(|x| {
            matvec(head, &rms(x, g("model.norm.weight")), s.vocab)
                .into_iter()
                .map(|v| v as f32)
                .collect()
        })
        .collect()
}
