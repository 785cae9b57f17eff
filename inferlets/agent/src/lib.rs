//! A tool-using agent on `pie:instruct/tool-use`: it equips a `get_weather` tool (its JSON
//! schema goes into the prompt in the model's tool format), lets the model call it (the first
//! turn is constrained by the host's call grammar, so even a small model writes a
//! well-formed call), finds the call with the tool-call decoder, runs the tool, hands the
//! result back with `answer`, and lets the model answer in plain text. Returns a JSON record
//! of the call, the result and the answer.
//!
//! `pie-ctl launch agent.wasm -- --prompt "What is the weather in Paris?"`

use inferlet::model::Model;
use inferlet::sample::Sampler;
use inferlet::{Context, GrammarConstraint, Result, Tool, chat, runtime, tools};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    prompt: Option<String>,
    max_tokens: Option<usize>,
}

struct Weather;

impl Tool for Weather {
    fn name(&self) -> &'static str {
        "get_weather"
    }
    fn description(&self) -> &'static str {
        "Current weather of a city"
    }
    fn schema(&self) -> &'static str {
        r#"{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}"#
    }
}

/// The tool itself: a fixed table, so runs are reproducible.
fn get_weather(args: &str) -> Result<String> {
    let v: serde_json::Value =
        serde_json::from_str(args).map_err(|e| format!("bad arguments {args}: {e}"))?;
    let city = v["city"].as_str().ok_or("arguments lack a city")?;
    let report = match city.to_ascii_lowercase().as_str() {
        "paris" => "18 degrees Celsius and sunny",
        "london" => "12 degrees Celsius and raining",
        _ => "20 degrees Celsius and cloudy",
    };
    Ok(serde_json::json!({ "city": city, "weather": report }).to_string())
}

#[inferlet::main]
async fn main(input: Input) -> Result<String> {
    let name = runtime::models()
        .first()
        .cloned()
        .ok_or("no models are served")?;
    let model = Model::load(&name)?;
    let prompt = input
        .prompt
        .unwrap_or_else(|| "What is the weather in Paris?".into());
    let tool = Weather;
    let schemas = vec![
        serde_json::json!({
            "name": tool.name(),
            "description": tool.description(),
            "parameters": serde_json::from_str::<serde_json::Value>(tool.schema()).unwrap(),
        })
        .to_string(),
    ];

    let mut ctx = Context::new(&model)?;
    ctx.equip(&[&tool])?;
    ctx.user(&prompt).cue();

    // Turn 1: the call, constrained to the tool-call grammar.
    let matcher = tools::native_matcher(&model, &schemas).ok_or("the model has no tool format")?;
    let call_ids = ctx
        .generate(Sampler::Argmax)
        .max_tokens(96)
        .stop(&chat::stop_tokens(&model))
        .constrain(GrammarConstraint::new(matcher))
        .collect_tokens()
        .await?;
    let mut decoder = tools::Decoder::new(&model);
    let (tool_name, args) = match decoder.feed(&call_ids)? {
        tools::Event::Call(n, a) => (n, a),
        tools::Event::Start => {
            return Err(format!(
                "the model made no complete call: {:?}",
                model.tokenizer().decode(&call_ids)?
            ));
        }
    };
    if tool_name != tool.name() {
        return Err(format!("the model called an unknown tool {tool_name:?}"));
    }
    let result = get_weather(&args)?;
    ctx.seal();

    // Turn 2: the tool's result, then the model's answer.
    ctx.append(&tools::answer_prefix(&model, &tool_name, &result));
    ctx.cue();
    let answer = ctx
        .generate(Sampler::Argmax)
        .max_tokens(input.max_tokens.unwrap_or(64))
        .stop(&chat::stop_tokens(&model))
        .collect_text()
        .await?;
    Ok(serde_json::json!({
        "call": { "name": tool_name, "arguments": serde_json::from_str::<serde_json::Value>(&args).map_err(|e| e.to_string())? },
        "result": serde_json::from_str::<serde_json::Value>(&result).map_err(|e| e.to_string())?,
        "answer": answer,
    })
    .to_string())
}
