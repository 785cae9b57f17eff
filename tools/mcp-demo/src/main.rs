//! `mcp-demo`: a tiny MCP server speaking stdio, for pied's tests and the `mcp-tool` example.
//!
//! - tool `add` (`{a: number, b: number}` → their sum, as text and as `structuredContent`);
//! - with `--test-tools` only: tool `crash` (the process exits at once with status 3: the
//!   supervision test uses it) and tool `sleep` (`{ms}`: answers after that long);
//! - resource `demo://greeting` (text);
//! - prompt `greet` (argument `name`).
//!
//! `mcp-demo --http 127.0.0.1:PORT` serves streamable HTTP at `/mcp` instead of stdio.
//! `mcp-demo --marker FILE` appends one line to FILE at each start (so a test can count
//! restarts). Everything it logs goes to stderr (pied forwards it to its own log).

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, ErrorData, GetPromptRequestParams, GetPromptResponse,
    ListPromptsResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

struct Demo {
    test_tools: bool,
}

fn from<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("demo JSON matches the MCP schema")
}

const GREETING: &str = "Hello from the mcp-demo server!";

impl ServerHandler for Demo {
    fn get_info(&self) -> ServerConfig {
        from(json!({
            "protocolVersion": "2025-06-18",
            "capabilities": { "tools": {}, "resources": {}, "prompts": {} },
            "serverInfo": { "name": "mcp-demo", "version": env!("CARGO_PKG_VERSION") },
            "instructions": "A demo server: add numbers, read a greeting, render a prompt."
        }))
    }

    async fn list_tools(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let mut tools = vec![json!(
        {
            "name": "add",
            "description": "Add two numbers and return their sum.",
            "inputSchema": {
                "type": "object",
                "properties": {
                    "a": { "type": "number", "description": "first addend" },
                    "b": { "type": "number", "description": "second addend" }
                },
                "required": ["a", "b"],
                "additionalProperties": false
            }
        })];
        if self.test_tools {
            tools.push(json!({
                "name": "crash",
                "description": "Make the server exit at once (for testing supervision).",
                "inputSchema": { "type": "object", "properties": {}, "additionalProperties": false }
            }));
            tools.push(json!({
                "name": "sleep",
                "description": "Answer after `ms` milliseconds.",
                "inputSchema": {
                    "type": "object",
                    "properties": { "ms": { "type": "integer", "minimum": 0 } },
                    "required": ["ms"]
                }
            }));
        }
        Ok(from(json!({ "tools": tools })))
    }

    async fn call_tool(
        &self,
        req: CallToolRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = req.arguments.unwrap_or_default();
        match &*req.name {
            "add" => {
                let num = |k: &str| args.get(k).and_then(Value::as_f64);
                let (Some(a), Some(b)) = (num("a"), num("b")) else {
                    return Ok(CallToolResponse::Complete(from(json!({
                        "content": [{ "type": "text", "text": "add needs numbers a and b" }],
                        "isError": true
                    }))));
                };
                let sum = a + b;
                Ok(CallToolResponse::Complete(from(json!({
                    "content": [{ "type": "text", "text": format!("{sum}") }],
                    "structuredContent": { "sum": sum },
                    "isError": false
                }))))
            }
            "sleep" if self.test_tools => {
                let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(0);
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                Ok(CallToolResponse::Complete(from(json!({
                    "content": [{ "type": "text", "text": format!("slept {ms} ms") }]
                }))))
            }
            "crash" if self.test_tools => {
                eprintln!("mcp-demo: crash requested, exiting");
                std::process::exit(3);
            }
            other => Err(ErrorData::invalid_params(
                format!("no tool named {other:?}"),
                None,
            )),
        }
    }

    async fn list_resources(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(from(json!({ "resources": [{
            "uri": "demo://greeting",
            "name": "greeting",
            "description": "A friendly greeting",
            "mimeType": "text/plain"
        }]})))
    }

    async fn read_resource(
        &self,
        req: ReadResourceRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        if req.uri != "demo://greeting" {
            return Err(ErrorData::resource_not_found(
                format!("no resource {:?}", req.uri),
                None,
            ));
        }
        Ok(ReadResourceResponse::Complete(from(json!({ "contents": [{
            "uri": "demo://greeting",
            "mimeType": "text/plain",
            "text": GREETING
        }]}))))
    }

    async fn list_prompts(
        &self,
        _: Option<PaginatedRequestParams>,
        _: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(from(json!({ "prompts": [{
            "name": "greet",
            "description": "Ask the model to greet someone",
            "arguments": [{ "name": "name", "description": "who to greet", "required": true }]
        }]})))
    }

    async fn get_prompt(
        &self,
        req: GetPromptRequestParams,
        _: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if req.name != "greet" {
            return Err(ErrorData::invalid_params(
                format!("no prompt named {:?}", req.name),
                None,
            ));
        }
        let name = req
            .arguments
            .as_ref()
            .and_then(|a| a.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("world")
            .to_string();
        Ok(GetPromptResponse::Complete(from(json!({
            "description": "A greeting",
            "messages": [{
                "role": "user",
                "content": { "type": "text", "text": format!("Please greet {name} warmly.") }
            }]
        }))))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut test_tools = false;
    let mut http = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--http" {
            http = Some(args.next().expect("--http needs an address"));
        } else if a == "--test-tools" {
            test_tools = true;
        } else if a == "--marker" {
            let path = args.next().expect("--marker needs a file");
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("cannot open the marker file");
            writeln!(f, "start {}", std::process::id()).unwrap();
        }
    }
    if let Some(addr) = http {
        serve_http(&addr, test_tools).await;
        return;
    }
    eprintln!("mcp-demo: serving on stdio");
    let service = match (Demo { test_tools }).serve(rmcp::transport::stdio()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mcp-demo: initialize failed: {e}");
            std::process::exit(1);
        }
    };
    let _ = service.waiting().await;
}

/// Streamable HTTP at `http://ADDR/mcp` (every path answers), one task per connection.
async fn serve_http(addr: &str, test_tools: bool) {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
    let service = StreamableHttpService::new(
        move || Ok(Demo { test_tools }),
        LocalSessionManager::default().into(),
        StreamableHttpServerConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("cannot bind the --http address");
    eprintln!(
        "mcp-demo: serving streamable HTTP on http://{}/mcp",
        listener.local_addr().unwrap()
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}
