//! GGUF (llama architecture) → Hugging Face directory: `model.safetensors`, `config.json`,
//! `generation_config.json`, `tokenizer.json`, `tokenizer_config.json`.
//!
//! A Rust port of `shared/reference/gguf_to_hf.py`; the output is byte-identical to it for the
//! safetensors file. Weights are streamed one row at a time (dequantize → undo the Q/K
//! permutation by picking the source row → convert to the output dtype → write), so memory
//! stays at a few rows however large the model is.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::dequant::{self, OutDtype, SUPPORTED_NAMES};
use super::reader::{GgufFile, TensorInfo};
use super::tokenizer::{self, Vocab};
use crate::arch::LlamaShape;
use crate::safetensors_write::{self, TensorSpec};
use crate::{Converted, Progress};

/// Per-layer GGUF tensor kinds and their HF module names.
const LAYER_NAMES: [(&str, &str); 9] = [
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];

/// Where an output tensor comes from.
struct Plan<'a> {
    src: &'a TensorInfo,
    /// `Some(n_head)`: rows were permuted by llama.cpp for its RoPE layout and must be put back.
    unpermute: Option<u64>,
}

/// Convert the GGUF at `src` into `out_dir` (which must exist and be empty).
pub(crate) fn convert(
    src: &Path,
    out_dir: &Path,
    dtype: OutDtype,
    progress: &mut dyn FnMut(Progress),
) -> Result<Converted> {
    let g = GgufFile::open(src)?;
    let file = src.display();
    let arch = g.req_str("general.architecture")?;
    if arch != "llama" {
        bail!("{file}: GGUF architecture `{arch}` is not supported (only `llama`)");
    }
    let key = |k: &str| format!("{arch}.{k}");
    let hidden = g.req_u64(&key("embedding_length"))?;
    let heads = g.req_u64(&key("attention.head_count"))?;
    let kv_heads = g.opt_u64(&key("attention.head_count_kv"))?.unwrap_or(heads);
    if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        bail!("{file}: {heads} attention heads cannot share {kv_heads} key/value heads");
    }
    let head_dim = match g.opt_u64(&key("attention.key_length"))? {
        Some(d) => d,
        None if hidden.is_multiple_of(heads) => hidden / heads,
        None => bail!("{file}: hidden size {hidden} is not a multiple of {heads} heads"),
    };
    let eps = g
        .opt_f32(&key("attention.layer_norm_rms_epsilon"))?
        .with_context(|| {
            format!(
                "{file}: missing `{}`",
                key("attention.layer_norm_rms_epsilon")
            )
        })?;
    let theta = g.opt_f32(&key("rope.freq_base"))?.unwrap_or(10000.0);
    let ctx = g.req_u64(&key("context_length"))?;
    let vocab = Vocab::read(&g)?;

    let mut plans: BTreeMap<String, Plan> = BTreeMap::new();
    let mut tied = true;
    for t in &g.tensors {
        if !t.ty.supported() {
            bail!(
                "{file}: tensor `{}` has type {}, which the importer cannot dequantize \
                 (supported: {SUPPORTED_NAMES})",
                t.name,
                t.ty.name()
            );
        }
        let (hf, unpermute) = match t.name.as_str() {
            "token_embd.weight" => ("model.embed_tokens.weight".to_string(), None),
            "output_norm.weight" => ("model.norm.weight".to_string(), None),
            "output.weight" => {
                tied = false;
                ("lm_head.weight".to_string(), None)
            }
            // llama.cpp stores Llama 3.1-style RoPE scaling as precomputed frequency factors;
            // config.json cannot express them faithfully from the tensor alone.
            "rope_freqs.weight" => bail!(
                "{file}: `rope_freqs.weight` (Llama 3 RoPE frequency scaling) is not supported"
            ),
            name => layer_name(name, heads, kv_heads)
                .with_context(|| format!("{file}: unknown tensor `{name}`"))?,
        };
        if let Some(n) = unpermute {
            let rows: u64 = t.dims[1..].iter().product();
            if t.dims.len() != 2 || !rows.is_multiple_of(2 * n) {
                bail!(
                    "{file}: tensor `{}` {:?} cannot be split into {n} heads",
                    t.name,
                    t.dims
                );
            }
        }
        if plans
            .insert(hf.clone(), Plan { src: t, unpermute })
            .is_some()
        {
            bail!("{file}: tensor `{}` appears twice", t.name);
        }
    }

    let shape = LlamaShape {
        hidden,
        intermediate: g.req_u64(&key("feed_forward_length"))?,
        layers: g.req_u64(&key("block_count"))?,
        heads,
        kv_heads,
        head_dim,
        vocab: vocab.tokens.len() as u64,
        tie_word_embeddings: tied,
        qkv_bias: false,
        o_bias: false,
        mlp_bias: false,
    };
    let found = plans
        .iter()
        .map(|(n, p)| (n.clone(), p.src.hf_shape()))
        .collect();
    shape
        .check(&found)
        .with_context(|| format!("{file}: tensors do not match its metadata"))?;

    // Tokenizer and configs first: they are cheap and fail fast on bad metadata, before
    // minutes of tensor conversion on a large model.
    let tok = tokenizer::tokenizer_json(&g, &vocab)?;
    let tok_cfg = tokenizer::tokenizer_config_json(&g, &vocab, ctx)?;
    let config = config_json(&g, arch, &shape, &vocab, eps, theta, ctx, dtype)?;
    let gen_cfg = json!({"bos_token_id": vocab.bos, "eos_token_id": vocab.eos,
                         "pad_token_id": vocab.pad});
    write_json(&out_dir.join("config.json"), &config)?;
    write_json(&out_dir.join("generation_config.json"), &gen_cfg)?;
    write_json(&out_dir.join("tokenizer.json"), &tok)?;
    write_json(&out_dir.join("tokenizer_config.json"), &tok_cfg)?;

    let specs: Vec<TensorSpec> = plans
        .iter()
        .map(|(name, p)| TensorSpec {
            name: name.clone(),
            dtype_tag: dtype.safetensors_tag(),
            shape: p.src.hf_shape(),
            elem_size: dtype.size() as u64,
        })
        .collect();
    let total: u64 = specs.iter().map(TensorSpec::n_bytes).sum();
    let plans: Vec<&Plan> = plans.values().collect();
    let mut done = 0;
    progress(Progress {
        stage: "convert",
        done,
        total,
    });
    let (mut row, mut bytes) = (Vec::new(), Vec::new());
    safetensors_write::write(&out_dir.join("model.safetensors"), &specs, |i, out| {
        let p = plans[i];
        write_tensor(&g, p, dtype, &mut row, &mut bytes, out)
            .with_context(|| format!("{file}: converting tensor `{}`", p.src.name))?;
        done += specs[i].n_bytes();
        progress(Progress {
            stage: "convert",
            done,
            total,
        });
        Ok(())
    })?;

    Ok(Converted {
        architecture: "LlamaForCausalLM".to_string(),
        dtype: dtype.name().to_string(),
        params: specs.iter().map(|s| s.shape.iter().product::<u64>()).sum(),
        max_position_embeddings: ctx,
        shape,
    })
}

/// `blk.N.kind.suffix` → HF name, and whether its rows need unpermuting (with how many heads).
fn layer_name(name: &str, heads: u64, kv_heads: u64) -> Option<(String, Option<u64>)> {
    let mut parts = name.split('.');
    let (blk, layer, kind, suffix) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if blk != "blk" || parts.next().is_some() || layer.parse::<u64>().is_err() {
        return None;
    }
    let hf = LAYER_NAMES.iter().find(|(k, _)| *k == kind)?.1;
    let unpermute = match kind {
        "attn_q" => Some(heads),
        "attn_k" => Some(kv_heads),
        _ => None,
    };
    Some((format!("model.layers.{layer}.{hf}.{suffix}"), unpermute))
}

/// Index of the GGUF row that holds output row `r` once llama.cpp's permutation is undone.
///
/// llama.cpp's converter reorders each head's rows from HF's "first half / second half" RoPE
/// layout to interleaved pairs: gguf[h][d][a] = hf[h][a][d] over (head, dim/2, 2). The inverse
/// (the reference's `unpermute`) is hf[h][a][d] = gguf[h][d][a].
fn unpermuted_source_row(r: u64, rows: u64, n_head: u64) -> u64 {
    let half = rows / n_head / 2;
    let (h, rem) = (r / (2 * half), r % (2 * half));
    let (a, d) = (rem / half, rem % half);
    h * 2 * half + d * 2 + a
}

fn write_tensor(
    g: &GgufFile,
    p: &Plan,
    dtype: OutDtype,
    row: &mut Vec<f32>,
    bytes: &mut Vec<u8>,
    out: &mut dyn Write,
) -> Result<()> {
    let t = p.src;
    let data = g.data(t);
    let row_len = t.dims[0];
    let rows = t.n_elements() / row_len;
    let (block, block_bytes) = t.ty.block();
    let row_bytes = (row_len / block * block_bytes) as usize;
    row.resize(row_len as usize, 0.0);
    for r in 0..rows {
        let src_row = match p.unpermute {
            Some(n) => unpermuted_source_row(r, rows, n),
            None => r,
        } as usize;
        dequant::dequantize(t.ty, &data[src_row * row_bytes..][..row_bytes], row)?;
        bytes.clear();
        dtype.encode(row, bytes);
        out.write_all(bytes)?;
    }
    Ok(())
}

/// Round-trip an f32 through its shortest decimal form, so that 1e-5 stored as f32
/// (9.99999974e-6) is written as 1e-5, as the reference does with "%.7g".
fn f32_decimal(x: f32) -> f64 {
    x.to_string()
        .parse()
        .expect("f32 Display output parses as f64")
}

#[allow(clippy::too_many_arguments)]
fn config_json(
    g: &GgufFile,
    arch: &str,
    s: &LlamaShape,
    v: &Vocab,
    eps: f32,
    theta: f32,
    ctx: u64,
    dtype: OutDtype,
) -> Result<Value> {
    Ok(json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": false,
        "attention_dropout": 0.0,
        "mlp_bias": false,
        "bos_token_id": v.bos,
        "eos_token_id": v.eos,
        "pad_token_id": v.pad,
        "hidden_act": "silu",
        "hidden_size": s.hidden,
        "intermediate_size": s.intermediate,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.kv_heads,
        "head_dim": s.head_dim,
        "max_position_embeddings": ctx,
        "rms_norm_eps": f32_decimal(eps),
        "rope_theta": f32_decimal(theta),
        "rope_scaling": rope_scaling(g, arch)?,
        "tie_word_embeddings": s.tie_word_embeddings,
        "vocab_size": s.vocab,
        "torch_dtype": dtype.torch_name(),
        "use_cache": true,
    }))
}

/// `rope_scaling` from `{arch}.rope.scaling.*`, or null when the model has none.
fn rope_scaling(g: &GgufFile, arch: &str) -> Result<Value> {
    let ty = g.opt_str(&format!("{arch}.rope.scaling.type"))?;
    let Some(ty) = ty.filter(|t| *t != "none") else {
        return Ok(Value::Null);
    };
    let factor = g
        .opt_f32(&format!("{arch}.rope.scaling.factor"))?
        .with_context(|| format!("{}: rope scaling `{ty}` without a factor", g.path.display()))?;
    let mut v = json!({"type": ty, "rope_type": ty, "factor": f32_decimal(factor)});
    if let Some(n) = g.opt_u64(&format!("{arch}.rope.scaling.original_context_length"))? {
        v["original_max_position_embeddings"] = json!(n);
    }
    Ok(v)
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    let mut s = serde_json::to_string_pretty(v)?;
    s.push('\n');
    fs::write(path, s).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: gguf row (h, d, a) holds hf row (h, a, d); check for 2 heads of dim 6.
        let (n_head, rows) = (2u64, 12u64);
        let half = rows / n_head / 2;
        let mut gguf_from_hf = vec![0; rows as usize];
        for h in 0..n_head {
            for a in 0..2 {
                for d in 0..half {
                    gguf_from_hf[(h * 2 * half + d * 2 + a) as usize] = h * 2 * half + a * half + d;
                }
            }
        }
        for r in 0..rows {
            assert_eq!(
                gguf_from_hf[unpermuted_source_row(r, rows, n_head) as usize],
                r
            );
        }
        // Concretely for head 0: hf rows 0,1,2 (first half) come from gguf rows 0,2,4.
        let src: Vec<u64> = (0..6)
            .map(|r| unpermuted_source_row(r, rows, n_head))
            .collect();
        assert_eq!(src, [0, 2, 4, 1, 3, 5]);
    }

    #[test]
    fn layer_names() {
        assert_eq!(
            layer_name("blk.3.attn_k.weight", 9, 3),
            Some(("model.layers.3.self_attn.k_proj.weight".into(), Some(3)))
        );
        assert_eq!(
            layer_name("blk.0.ffn_norm.weight", 9, 3),
            Some((
                "model.layers.0.post_attention_layernorm.weight".into(),
                None
            ))
        );
        assert_eq!(layer_name("blk.x.attn_q.weight", 9, 3), None);
        assert_eq!(layer_name("blk.0.attn_qq.weight", 9, 3), None);
        assert_eq!(layer_name("blk.0.attn_q.weight.extra", 9, 3), None);
    }

    #[test]
    fn decimal_eps() {
        assert_eq!(f32_decimal(1e-5), 1e-5);
        assert_eq!(f32_decimal(100000.0), 100000.0);
    }
}
