//! The Llama-family tensor layout the engine loads: which tensors a config implies and with
//! which shapes. Both importers check their output against it, so a store entry always has
//! exactly what the engine expects.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

/// HF architectures the engine implements (all Llama-shaped decoders).
pub const SUPPORTED_ARCHITECTURES: &[&str] =
    &["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"];

/// The hyper-parameters that determine tensor names and shapes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LlamaShape {
    pub hidden: u64,
    pub intermediate: u64,
    pub layers: u64,
    pub heads: u64,
    pub kv_heads: u64,
    pub head_dim: u64,
    pub vocab: u64,
    pub tie_word_embeddings: bool,
    /// q/k/v projections have a bias (Qwen2, Llama with `attention_bias`).
    pub qkv_bias: bool,
    /// o_proj has a bias (Llama with `attention_bias`; Qwen2 has none).
    pub o_bias: bool,
    /// gate/up/down have biases (Llama with `mlp_bias`).
    pub mlp_bias: bool,
}

impl LlamaShape {
    /// Every tensor the engine needs, with its row-major shape. `lm_head.weight` is listed only
    /// for untied models.
    pub fn expected_tensors(&self) -> BTreeMap<String, Vec<u64>> {
        let (h, i, hd) = (self.hidden, self.intermediate, self.head_dim);
        let (q, kv) = (self.heads * hd, self.kv_heads * hd);
        let mut t = BTreeMap::new();
        t.insert("model.embed_tokens.weight".to_string(), vec![self.vocab, h]);
        t.insert("model.norm.weight".to_string(), vec![h]);
        if !self.tie_word_embeddings {
            t.insert("lm_head.weight".to_string(), vec![self.vocab, h]);
        }
        for l in 0..self.layers {
            let p = format!("model.layers.{l}");
            let mut add = |name: &str, shape: Vec<u64>| {
                t.insert(format!("{p}.{name}"), shape);
            };
            add("input_layernorm.weight", vec![h]);
            add("post_attention_layernorm.weight", vec![h]);
            add("self_attn.q_proj.weight", vec![q, h]);
            add("self_attn.k_proj.weight", vec![kv, h]);
            add("self_attn.v_proj.weight", vec![kv, h]);
            add("self_attn.o_proj.weight", vec![h, q]);
            add("mlp.gate_proj.weight", vec![i, h]);
            add("mlp.up_proj.weight", vec![i, h]);
            add("mlp.down_proj.weight", vec![h, i]);
            if self.qkv_bias {
                add("self_attn.q_proj.bias", vec![q]);
                add("self_attn.k_proj.bias", vec![kv]);
                add("self_attn.v_proj.bias", vec![kv]);
            }
            if self.o_bias {
                add("self_attn.o_proj.bias", vec![h]);
            }
            if self.mlp_bias {
                add("mlp.gate_proj.bias", vec![i]);
                add("mlp.up_proj.bias", vec![i]);
                add("mlp.down_proj.bias", vec![h]);
            }
        }
        t
    }

    /// Compare the tensors found (name → shape) with [`expected_tensors`]. A tied model may
    /// still carry an `lm_head.weight` (some exports do); rotary `inv_freq` buffers that old
    /// checkpoints saved are ignored. Anything else missing, misshapen or unknown is an error
    /// listing the first few problems.
    pub fn check(&self, found: &BTreeMap<String, Vec<u64>>) -> Result<()> {
        let expected = self.expected_tensors();
        let mut problems = Vec::new();
        for (name, shape) in &expected {
            match found.get(name) {
                None => problems.push(format!("missing tensor `{name}` {shape:?}")),
                Some(s) if s != shape => problems.push(format!(
                    "tensor `{name}` has shape {s:?}, config implies {shape:?}"
                )),
                Some(_) => {}
            }
        }
        for (name, shape) in found {
            if expected.contains_key(name) || name.ends_with(".rotary_emb.inv_freq") {
                continue;
            }
            if name == "lm_head.weight" && self.tie_word_embeddings {
                if shape != &vec![self.vocab, self.hidden] {
                    problems.push(format!(
                        "tensor `lm_head.weight` has shape {shape:?}, config implies {:?}",
                        [self.vocab, self.hidden]
                    ));
                }
                continue;
            }
            problems.push(format!("unexpected tensor `{name}` {shape:?}"));
        }
        if problems.is_empty() {
            return Ok(());
        }
        let n = problems.len();
        problems.truncate(5);
        let more = if n > 5 {
            format!(" (and {} more)", n - 5)
        } else {
            String::new()
        };
        bail!(
            "tensors do not match the config: {}{more}",
            problems.join("; ")
        )
    }

    /// Parameter count as the engine will hold it (a tied lm_head counts once).
    pub fn params(&self) -> u64 {
        self.expected_tensors()
            .values()
            .map(|s| s.iter().product::<u64>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> LlamaShape {
        LlamaShape {
            hidden: 8,
            intermediate: 16,
            layers: 2,
            heads: 2,
            kv_heads: 1,
            head_dim: 4,
            vocab: 10,
            tie_word_embeddings: true,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
        }
    }

    #[test]
    fn counts_and_checks() {
        let s = tiny();
        let t = s.expected_tensors();
        assert_eq!(t.len(), 2 + 2 * 9);
        assert_eq!(t["model.layers.1.self_attn.k_proj.weight"], vec![4, 8]);
        // 80 embed + 8 norm + per layer: norms 8+8, q 64, k 32, v 32, o 64, mlp 3 * 128
        assert_eq!(s.params(), 80 + 8 + 2 * 592);
        assert!(s.check(&t).is_ok());

        let mut bad = t.clone();
        bad.insert("model.layers.0.mlp.up_proj.weight".into(), vec![8, 16]);
        bad.remove("model.norm.weight");
        bad.insert("foo".into(), vec![1]);
        let e = s.check(&bad).unwrap_err().to_string();
        assert!(e.contains("missing tensor `model.norm.weight`"), "{e}");
        assert!(e.contains("up_proj.weight` has shape [8, 16]"), "{e}");
        assert!(e.contains("unexpected tensor `foo`"), "{e}");

        let untied = LlamaShape {
            tie_word_embeddings: false,
            ..tiny()
        };
        let e = untied.check(&t).unwrap_err().to_string();
        assert!(e.contains("missing tensor `lm_head.weight`"), "{e}");
    }
}
