//! `config.json` of a Hugging Face Llama-family model, parsed into the few numbers the model
//! needs. Unknown architectures and inconsistent shapes are rejected here, before any weight is
//! read, so a bad directory fails fast with a message that names the field.

use crate::error::{Error, Result};
use serde::Deserialize;
use std::path::Path;

/// Architectures that share the Llama decoder layout. Qwen2 differs only by its q/k/v bias.
const SUPPORTED: &[&str] = &["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"];

/// Llama 3.x frequency-dependent RoPE scaling (`rope_type: "llama3"`).
#[derive(Debug, Clone, PartialEq)]
pub struct Llama3RopeScaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: f64,
}

/// The model hyper-parameters, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub architecture: String,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3RopeScaling>,
    /// Whether q/k/v projections carry a bias (Qwen2, or `attention_bias: true`).
    pub qkv_bias: bool,
    pub tie_word_embeddings: bool,
    /// Mistral-style sliding-window attention: a token sees itself and the `w - 1` slots
    /// before it.
    pub sliding_window: Option<usize>,
    pub max_position_embeddings: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Raw {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    attention_bias: Option<bool>,
    tie_word_embeddings: Option<bool>,
    max_position_embeddings: Option<usize>,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
    hidden_act: Option<String>,
    sliding_window: Option<usize>,
    use_sliding_window: Option<bool>,
}

fn ids(v: &Option<serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

fn need(v: Option<usize>, name: &str) -> Result<usize> {
    match v {
        Some(0) => Err(Error::Config(format!("`{name}` must be positive"))),
        Some(x) => Ok(x),
        None => Err(Error::Config(format!("missing `{name}`"))),
    }
}

impl ModelConfig {
    /// Reads and validates `<dir>/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Self::from_json(&text)
    }

    /// Parses and validates the text of a `config.json`.
    pub fn from_json(text: &str) -> Result<Self> {
        let raw: Raw = serde_json::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        let architecture = match (&raw.architectures, &raw.model_type) {
            (Some(a), _) if !a.is_empty() => a[0].clone(),
            (_, Some(t)) => match t.as_str() {
                "llama" => "LlamaForCausalLM".into(),
                "mistral" => "MistralForCausalLM".into(),
                "qwen2" => "Qwen2ForCausalLM".into(),
                other => other.to_string(),
            },
            _ => return Err(Error::Config("missing `architectures`".into())),
        };
        if !SUPPORTED.contains(&architecture.as_str()) {
            return Err(Error::Config(format!(
                "unsupported architecture `{architecture}` (supported: {})",
                SUPPORTED.join(", ")
            )));
        }
        if let Some(act) = &raw.hidden_act
            && act != "silu"
        {
            return Err(Error::Config(format!(
                "unsupported hidden_act `{act}` (only silu)"
            )));
        }
        let hidden_size = need(raw.hidden_size, "hidden_size")?;
        let num_heads = need(raw.num_attention_heads, "num_attention_heads")?;
        let num_kv_heads = need(
            raw.num_key_value_heads.or(Some(num_heads)),
            "num_key_value_heads",
        )?;
        if num_heads % num_kv_heads != 0 {
            return Err(Error::Config(format!(
                "num_attention_heads {num_heads} is not a multiple of num_key_value_heads {num_kv_heads}"
            )));
        }
        let head_dim = match raw.head_dim {
            Some(d) => need(Some(d), "head_dim")?,
            None if hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => {
                return Err(Error::Config(format!(
                    "hidden_size {hidden_size} is not a multiple of num_attention_heads {num_heads}"
                )));
            }
        };
        if head_dim % 2 != 0 {
            return Err(Error::Config(format!(
                "head_dim {head_dim} must be even for RoPE"
            )));
        }
        let rope_scaling = match &raw.rope_scaling {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let kind = v
                    .get("rope_type")
                    .or_else(|| v.get("type"))
                    .and_then(|t| t.as_str());
                let num = |k: &str| v.get(k).and_then(|x| x.as_f64());
                match kind {
                    Some("llama3") => Some(Llama3RopeScaling {
                        factor: num("factor")
                            .ok_or_else(|| Error::Config("rope_scaling.factor missing".into()))?,
                        low_freq_factor: num("low_freq_factor").unwrap_or(1.0),
                        high_freq_factor: num("high_freq_factor").unwrap_or(4.0),
                        original_max_position_embeddings: num("original_max_position_embeddings")
                            .unwrap_or(8192.0),
                    }),
                    Some("default") => None,
                    other => {
                        return Err(Error::Config(format!(
                            "unsupported rope_scaling type {other:?}"
                        )));
                    }
                }
            }
        };
        let qwen = architecture == "Qwen2ForCausalLM";
        Ok(ModelConfig {
            hidden_size,
            intermediate_size: need(raw.intermediate_size, "intermediate_size")?,
            num_layers: need(raw.num_hidden_layers, "num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size: need(raw.vocab_size, "vocab_size")?,
            rms_norm_eps: raw.rms_norm_eps.unwrap_or(1e-6) as f32,
            rope_theta: raw.rope_theta.unwrap_or(10000.0),
            rope_scaling,
            qkv_bias: qwen || raw.attention_bias.unwrap_or(false),
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            // Qwen2 configs carry a window but disable it with `use_sliding_window: false`.
            sliding_window: raw
                .sliding_window
                .filter(|&w| w > 0 && raw.use_sliding_window.unwrap_or(!qwen)),
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(4096),
            bos_token_id: ids(&raw.bos_token_id).first().copied(),
            eos_token_ids: ids(&raw.eos_token_id),
            architecture,
        })
    }

    /// Width of one token's K (or V) across all KV heads.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Width of one token's Q across all heads.
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// RoPE inverse frequencies (one per rotated pair), Llama 3 scaling applied.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let d = self.head_dim as f64;
        (0..self.head_dim / 2)
            .map(|i| {
                let f = 1.0 / self.rope_theta.powf((2 * i) as f64 / d);
                match &self.rope_scaling {
                    None => f as f32,
                    Some(s) => {
                        // Llama 3: keep high frequencies, divide low ones by `factor`, blend between.
                        let low_wavelen = s.original_max_position_embeddings / s.low_freq_factor;
                        let high_wavelen = s.original_max_position_embeddings / s.high_freq_factor;
                        let wavelen = 2.0 * std::f64::consts::PI / f;
                        let out = if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / s.factor
                        } else {
                            let smooth = (s.original_max_position_embeddings / wavelen
                                - s.low_freq_factor)
                                / (s.high_freq_factor - s.low_freq_factor);
                            (1.0 - smooth) * f / s.factor + smooth * f
                        };
                        out as f32
                    }
                }
            })
            .collect()
    }
}
