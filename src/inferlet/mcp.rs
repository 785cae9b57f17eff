//! `pie:mcp`: the MCP servers of the config (`[[mcp]]`) that this process' launch was
//! granted (`pie-ctl launch --mcp NAME`), reached through the shared clients of `crate::mcp`.
//!
//! `available-servers` lists the granted servers; `connect` fails clearly for a server that
//! is not configured or not granted. Session calls are async host functions: while one
//! waits for its server, the process' wasm task yields and other inferlets run. Every call
//! ends within the server's `timeout_ms`; a server that is down fails the call at once with
//! a JSON-RPC error naming it.

use std::sync::Arc;

use serde_json::{Map, Value};
use wasmtime::component::Resource;

use super::pie::mcp::client::{Host, HostSession};
use super::pie::mcp::types::{Error as McpError, Host as TypesHost};
use super::{PieView, stale};
use crate::mcp::{CallError, INVALID_PARAMS, Method, Server};

pub struct Session {
    pub server: Arc<Server>,
}

impl TypesHost for PieView<'_> {}

fn err(code: i32, message: String) -> McpError {
    McpError {
        code,
        message,
        data: None,
    }
}

fn wit(e: CallError) -> McpError {
    McpError {
        code: e.code,
        message: e.message,
        data: e.data,
    }
}

/// JSON-RPC "method not found" (as the pre-transport host answered for unknown servers).
const NOT_FOUND: i32 = -32601;

/// `args` as a JSON object: empty text and `null` are no arguments.
fn object_args(what: &str, args: &str) -> Result<Option<Map<String, Value>>, McpError> {
    if args.trim().is_empty() {
        return Ok(None);
    }
    match serde_json::from_str::<Value>(args) {
        Ok(Value::Null) => Ok(None),
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(err(
            INVALID_PARAMS,
            format!("{what} arguments must be a JSON object"),
        )),
        Err(e) => Err(err(
            INVALID_PARAMS,
            format!("{what} arguments are not valid JSON: {e}"),
        )),
    }
}

impl PieView<'_> {
    fn server(&self, s: &Resource<Session>) -> wasmtime::Result<Arc<Server>> {
        Ok(self
            .table
            .get(s)
            .map_err(|_| stale("mcp session"))?
            .server
            .clone())
    }

    fn granted(&self) -> Vec<String> {
        let granted = &self.ctx.process.grants.mcp;
        self.ctx
            .shared
            .mcp
            .names()
            .into_iter()
            .filter(|n| granted.contains(n))
            .collect()
    }

    async fn call(
        &mut self,
        s: &Resource<Session>,
        method: Method,
        params: Value,
    ) -> wasmtime::Result<Result<String, McpError>> {
        let server = self.server(s)?;
        Ok(server.request(method, params).await.map_err(wit))
    }
}

impl Host for PieView<'_> {
    async fn available_servers(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.granted())
    }

    async fn connect(
        &mut self,
        server_name: String,
    ) -> wasmtime::Result<Result<Resource<Session>, McpError>> {
        let Some(server) = self.ctx.shared.mcp.get(&server_name) else {
            return Ok(Err(err(
                NOT_FOUND,
                format!(
                    "no MCP server named {server_name:?} is registered (granted to this \
                     process: {})",
                    crate::util::names_or_none(self.granted())
                ),
            )));
        };
        if !self.ctx.process.grants.mcp.contains(&server_name) {
            return Ok(Err(err(
                NOT_FOUND,
                format!(
                    "MCP server {server_name:?} is not granted to this process (launch it \
                     with --mcp {server_name})"
                ),
            )));
        }
        Ok(Ok(self.table.push(Session { server })?))
    }
}

impl HostSession for PieView<'_> {
    async fn list_tools(
        &mut self,
        this: Resource<Session>,
    ) -> wasmtime::Result<Result<String, McpError>> {
        self.call(&this, Method::ListTools, Value::Null).await
    }

    async fn call_tool(
        &mut self,
        this: Resource<Session>,
        name: String,
        args: String,
    ) -> wasmtime::Result<Result<String, McpError>> {
        let arguments = match object_args("tool", &args) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let params = serde_json::json!({ "name": name, "arguments": arguments });
        self.call(&this, Method::CallTool, params).await
    }

    async fn list_resources(
        &mut self,
        this: Resource<Session>,
    ) -> wasmtime::Result<Result<String, McpError>> {
        self.call(&this, Method::ListResources, Value::Null).await
    }

    async fn read_resource(
        &mut self,
        this: Resource<Session>,
        uri: String,
    ) -> wasmtime::Result<Result<String, McpError>> {
        self.call(
            &this,
            Method::ReadResource,
            serde_json::json!({ "uri": uri }),
        )
        .await
    }

    async fn list_prompts(
        &mut self,
        this: Resource<Session>,
    ) -> wasmtime::Result<Result<String, McpError>> {
        self.call(&this, Method::ListPrompts, Value::Null).await
    }

    async fn get_prompt(
        &mut self,
        this: Resource<Session>,
        name: String,
        args: String,
    ) -> wasmtime::Result<Result<String, McpError>> {
        let arguments = match object_args("prompt", &args) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let params = serde_json::json!({ "name": name, "arguments": arguments });
        self.call(&this, Method::GetPrompt, params).await
    }

    async fn drop(&mut self, this: Resource<Session>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
