//! Llama-family decoder (Llama 2/3, SmolLM2, Mistral, Qwen2): names and shapes of its tensors
//! in a Hugging Face checkpoint. Reference: `transformers/models/llama/modeling_llama.py`.
//! Tensors are read one layer at a time so that a backend can convert them into its own layout
//! without holding two full copies of the model.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::weights::SafeTensors;

/// One decoder layer's tensors, bf16 row-major `[out, in]` for matrices, f32 for vectors.
pub struct LayerTensors {
    pub input_norm: Vec<f32>,
    pub q: Vec<u16>,
    pub k: Vec<u16>,
    pub v: Vec<u16>,
    /// q, k, v biases (Qwen2); zeros otherwise are not materialized.
    pub qkv_bias: Option<(Vec<f32>, Vec<f32>, Vec<f32>)>,
    pub o: Vec<u16>,
    pub post_norm: Vec<f32>,
    pub gate: Vec<u16>,
    pub up: Vec<u16>,
    pub down: Vec<u16>,
}

/// Reads a Llama checkpoint, checking every tensor's shape against the config.
pub struct LlamaLoader<'a> {
    pub cfg: &'a ModelConfig,
    pub st: &'a SafeTensors,
}

impl<'a> LlamaLoader<'a> {
    pub fn new(cfg: &'a ModelConfig, st: &'a SafeTensors) -> Result<Self> {
        let emb = "model.embed_tokens.weight";
        match st.shape(emb) {
            None => return Err(Error::Weights(format!("missing tensor `{emb}`"))),
            Some(s) if s != [cfg.vocab_size, cfg.hidden_size] => {
                return Err(Error::Weights(format!(
                    "tensor `{emb}` has shape {s:?}, expected [{}, {}] (vocab_size, hidden_size)",
                    cfg.vocab_size, cfg.hidden_size
                )));
            }
            _ => {}
        }
        let last = format!("model.layers.{}.mlp.down_proj.weight", cfg.num_layers - 1);
        if !st.contains(&last) {
            return Err(Error::Weights(format!(
                "missing tensor `{last}` (config says {} layers)",
                cfg.num_layers
            )));
        }
        Ok(LlamaLoader { cfg, st })
    }

    pub fn embedding(&self) -> Result<Vec<u16>> {
        self.st.bf16(
            "model.embed_tokens.weight",
            &[self.cfg.vocab_size, self.cfg.hidden_size],
        )
    }

    /// The output projection; `None` when embeddings are tied (no `lm_head.weight`).
    pub fn lm_head(&self) -> Result<Option<Vec<u16>>> {
        if self.st.contains("lm_head.weight") {
            Ok(Some(self.st.bf16(
                "lm_head.weight",
                &[self.cfg.vocab_size, self.cfg.hidden_size],
            )?))
        } else {
            Ok(None)
        }
    }

    pub fn final_norm(&self) -> Result<Vec<f32>> {
        self.st.f32("model.norm.weight", &[self.cfg.hidden_size])
    }

    pub fn layer(&self, i: usize) -> Result<LayerTensors> {
        let c = self.cfg;
        let (h, q, kv, inter) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size);
        let p = |s: &str| format!("model.layers.{i}.{s}");
        let qkv_bias = if c.qkv_bias {
            Some((
                self.st.f32(&p("self_attn.q_proj.bias"), &[q])?,
                self.st.f32(&p("self_attn.k_proj.bias"), &[kv])?,
                self.st.f32(&p("self_attn.v_proj.bias"), &[kv])?,
            ))
        } else {
            None
        };
        Ok(LayerTensors {
            input_norm: self.st.f32(&p("input_layernorm.weight"), &[h])?,
            q: self.st.bf16(&p("self_attn.q_proj.weight"), &[q, h])?,
            k: self.st.bf16(&p("self_attn.k_proj.weight"), &[kv, h])?,
            v: self.st.bf16(&p("self_attn.v_proj.weight"), &[kv, h])?,
            qkv_bias,
            o: self.st.bf16(&p("self_attn.o_proj.weight"), &[h, q])?,
            post_norm: self.st.f32(&p("post_attention_layernorm.weight"), &[h])?,
            gate: self.st.bf16(&p("mlp.gate_proj.weight"), &[inter, h])?,
            up: self.st.bf16(&p("mlp.up_proj.weight"), &[inter, h])?,
            down: self.st.bf16(&p("mlp.down_proj.weight"), &[h, inter])?,
        })
    }
}
