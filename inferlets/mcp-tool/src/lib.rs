//! Calls an MCP tool chosen by the model (`pie:mcp` + `pie:instruct/tool-use`).
//!
//! It connects to a server the launch was granted (`pie-ctl launch --mcp NAME`), lists its
//! tools, equips the model with them (their JSON schemas go into the prompt in the model's
//! tool format), lets the model write one call (constrained by the host's tool-call grammar,
//! so even a small model writes a well-formed call to a listed tool), calls that tool through
//! MCP and returns a JSON record: the server, the tools offered, the call and the result.
//!
//! `pie-ctl launch --mcp demo mcp-tool.wasm -- --prompt "What is 2 plus 3?"`
//!
//! Without the model: `--call NAME --args JSON` calls a tool, `--read URI` reads a resource,
//! `--get-prompt NAME --args JSON` renders a prompt (each prints the server's raw result).

use inferlet::mcp::client::{self, Session};
use inferlet::model::Model;
use inferlet::sample::Sampler;
use inferlet::{Context, GrammarConstraint, Result, chat, runtime, tools};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    server: Option<String>,
    prompt: Option<String>,
    tools: Option<String>,
    call: Option<String>,
    args: Option<String>,
    read: Option<String>,
    get_prompt: Option<String>,
}

fn mcp_err(what: &str, e: inferlet::mcp::types::Error) -> String {
    format!("{what}: MCP error {}: {}", e.code, e.message)
}

fn parse(what: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| format!("{what} is not JSON ({e}): {text}"))
}

#[inferlet::main]
async fn main(input: Input) -> Result<String> {
    let servers = client::available_servers();
    let server = match input.server.clone() {
        Some(s) => s,
        None => servers
            .first()
            .cloned()
            .ok_or("no MCP server is granted to this process (launch with --mcp NAME)")?,
    };
    let session = client::connect(&server).map_err(|e| mcp_err("connect", e))?;
    let args = input.args.clone().unwrap_or_else(|| "{}".into());

    if let Some(tool) = &input.call {
        let result = session
            .call_tool(tool, &args)
            .map_err(|e| mcp_err(&format!("calling {tool}"), e))?;
        return Ok(json!({ "server": server, "call": { "name": tool, "arguments": parse("--args", &args)? }, "result": parse("result", &result)? }).to_string());
    }
    if let Some(uri) = &input.read {
        let result = session
            .read_resource(uri)
            .map_err(|e| mcp_err(&format!("reading {uri}"), e))?;
        return Ok(parse("result", &result)?.to_string());
    }
    if let Some(name) = &input.get_prompt {
        let result = session
            .get_prompt(name, &args)
            .map_err(|e| mcp_err(&format!("getting prompt {name}"), e))?;
        return Ok(parse("result", &result)?.to_string());
    }
    model_picks(&session, &server, &input).await
}

/// Lists the tools, lets the model pick one and its arguments, calls it.
async fn model_picks(session: &Session, server: &str, input: &Input) -> Result<String> {
    let listed = parse(
        "tools/list",
        &session
            .list_tools()
            .map_err(|e| mcp_err("listing tools", e))?,
    )?;
    let only: Option<Vec<&str>> = input
        .tools
        .as_deref()
        .map(|t| t.split(',').map(str::trim).collect());
    let offered: Vec<&Value> = listed["tools"]
        .as_array()
        .ok_or("tools/list returned no tools array")?
        .iter()
        .filter(|t| {
            only.as_ref()
                .is_none_or(|o| o.contains(&t["name"].as_str().unwrap_or("")))
        })
        .collect();
    if offered.is_empty() {
        return Err(format!("server {server:?} offers no tools to pick from"));
    }
    // MCP's tool shape (name, description, inputSchema) → the chat template's.
    let schemas: Vec<String> = offered
        .iter()
        .map(|t| {
            json!({
                "name": t["name"],
                "description": t["description"].as_str().unwrap_or(""),
                "parameters": t["inputSchema"],
            })
            .to_string()
        })
        .collect();
    let names: Vec<&str> = offered.iter().filter_map(|t| t["name"].as_str()).collect();

    let model_name = runtime::models()
        .first()
        .cloned()
        .ok_or("no models are served")?;
    let model = Model::load(&model_name)?;
    let prompt = input
        .prompt
        .clone()
        .unwrap_or_else(|| "What is 2 plus 3? Use a tool.".into());
    let mut ctx = Context::new(&model)?;
    ctx.append(&tools::equip_prefix(&model, &schemas)?);
    ctx.user(&prompt).cue();

    // The call, constrained to the tool-call grammar over the offered schemas.
    let matcher = tools::native_matcher(&model, &schemas).ok_or("the model has no tool format")?;
    let call_ids = ctx
        .generate(Sampler::Argmax)
        .max_tokens(128)
        .stop(&chat::stop_tokens(&model))
        .constrain(GrammarConstraint::new(matcher))
        .collect_tokens()
        .await?;
    let mut decoder = tools::Decoder::new(&model);
    let (tool, args) = match decoder.feed(&call_ids)? {
        tools::Event::Call(n, a) => (n, a),
        tools::Event::Start => {
            return Err(format!(
                "the model made no complete call: {:?}",
                model.tokenizer().decode(&call_ids)?
            ));
        }
    };
    if !names.contains(&tool.as_str()) {
        return Err(format!(
            "the model called {tool:?}, which {server:?} does not list"
        ));
    }
    println!("calling {server}/{tool} with {args}");
    let result = session
        .call_tool(&tool, &args)
        .map_err(|e| mcp_err(&format!("calling {tool}"), e))?;
    Ok(json!({
        "server": server,
        "tools": names,
        "call": { "name": tool, "arguments": parse("the model's arguments", &args)? },
        "result": parse("result", &result)?,
    })
    .to_string())
}
