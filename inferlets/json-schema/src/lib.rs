//! json-schema: constrained generation. The model answers a prompt with JSON that matches a
//! JSON Schema; the host's grammar matcher masks every token that would break it, so the
//! output parses and validates whatever the model's preferences.
//!
//! Input (all optional; `pie-ctl launch json-schema.wasm -- --schema '{...}' --prompt "..."`):
//! - `schema`: the JSON Schema, as an object or as a string holding one (default: a country
//!   record with `name`, `capital`, `population_millions`, `languages`).
//! - `prompt` (or the first positional argument): what to describe (default: France).
//! - `system`: the system message.
//! - `max_tokens` (default 256), `temperature` (default 0: greedy), `model` (default: the
//!   first served model).
//!
//! Output: the generated JSON text, exactly as generated. It is an error if generation stops
//! (at `max_tokens`) before the JSON is complete.

use inferlet::model::Model;
use inferlet::sample::Sampler;
use inferlet::{Context, JsonSchema, Result, chat, runtime};
use serde::Deserialize;
use serde_json::Value;

const DEFAULT_SCHEMA: &str = r#"{
  "type": "object",
  "properties": {
    "name": {"type": "string", "maxLength": 40},
    "capital": {"type": "string", "maxLength": 40},
    "population_millions": {"type": "number", "minimum": 0},
    "languages": {"type": "array", "items": {"type": "string", "maxLength": 20}, "maxItems": 4}
  },
  "required": ["name", "capital", "population_millions", "languages"],
  "additionalProperties": false
}"#;

const DEFAULT_PROMPT: &str = "Describe France.";

const DEFAULT_SYSTEM: &str = "You are a helpful assistant. You answer only with JSON.";

#[derive(Deserialize)]
#[serde(default)]
struct Input {
    schema: Option<Value>,
    prompt: Option<String>,
    system: Option<String>,
    max_tokens: usize,
    temperature: f32,
    model: Option<String>,
    #[serde(rename = "_positional")]
    positional: Vec<Value>,
}

impl Default for Input {
    fn default() -> Self {
        Input {
            schema: None,
            prompt: None,
            system: None,
            max_tokens: 256,
            temperature: 0.0,
            model: None,
            positional: Vec::new(),
        }
    }
}

impl Input {
    fn parse(raw: &str) -> Result<Input> {
        if raw.trim().is_empty() {
            return Ok(Input::default());
        }
        serde_json::from_str(raw).map_err(|e| format!("input is not the expected JSON: {e}"))
    }

    /// The schema as compact JSON text: a string argument must itself be JSON.
    fn schema(&self) -> Result<String> {
        let value = match &self.schema {
            None => serde_json::from_str(DEFAULT_SCHEMA).expect("the default schema is JSON"),
            Some(Value::String(s)) => serde_json::from_str::<Value>(s)
                .map_err(|e| format!("--schema is not JSON: {e}"))?,
            Some(v) => v.clone(),
        };
        Ok(value.to_string())
    }

    fn prompt(&self) -> String {
        self.prompt
            .clone()
            .or_else(|| {
                self.positional
                    .first()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            })
            .unwrap_or_else(|| DEFAULT_PROMPT.to_string())
    }
}

#[inferlet::main]
async fn main(input: String) -> Result<String> {
    let input = Input::parse(&input)?;
    let schema = input.schema()?;

    let model_name = match &input.model {
        Some(m) => m.clone(),
        None => runtime::models()
            .into_iter()
            .next()
            .ok_or("no model is served")?,
    };
    let model = Model::load(&model_name)?;

    let mut ctx = Context::new(&model)?;
    ctx.system(input.system.as_deref().unwrap_or(DEFAULT_SYSTEM))
        .user(&format!(
            "{}\n\nReply with JSON that matches this JSON Schema:\n{schema}",
            input.prompt()
        ))
        .cue();

    let sampler = if input.temperature > 0.0 {
        Sampler::top_p(input.temperature, 0.95)
    } else {
        Sampler::Argmax
    };
    // The grammar allows the stop tokens exactly where the JSON is complete, so generation
    // ends on one of them unless max_tokens comes first.
    let tokens = ctx
        .generate(sampler)
        .max_tokens(input.max_tokens)
        .stop(&chat::stop_tokens(&model))
        .constrain_with(JsonSchema(&schema))?
        .collect_tokens()
        .await?;
    let text = model.tokenizer().decode(&tokens)?;

    match serde_json::from_str::<Value>(&text) {
        Ok(_) => Ok(text),
        Err(e) => Err(format!(
            "generation stopped after {} tokens before the JSON was complete ({e}): {text}",
            tokens.len()
        )),
    }
}
