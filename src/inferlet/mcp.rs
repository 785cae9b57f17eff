//! `pie:mcp`: MCP servers registered by the admin in the config (`[[mcp]] name = …`).
//!
//! `available-servers` lists the registered names; `connect` fails clearly for any other
//! name. pied does not speak the MCP transport yet, so the session calls of a registered
//! server fail with a JSON-RPC "internal error" saying so.

use wasmtime::component::Resource;

use super::pie::mcp::client::{Host, HostSession};
use super::pie::mcp::types::{Error as McpError, Host as TypesHost};
use super::{PieView, stale};

pub struct Session {
    pub server: String,
}

impl TypesHost for PieView<'_> {}

fn err(code: i32, message: String) -> McpError {
    McpError {
        code,
        message,
        data: None,
    }
}

/// JSON-RPC "internal error".
const INTERNAL: i32 = -32603;

impl PieView<'_> {
    fn no_transport(&self, s: &Resource<Session>) -> wasmtime::Result<Result<String, McpError>> {
        let server = &self.table.get(s).map_err(|_| stale("mcp session"))?.server;
        Ok(Err(err(
            INTERNAL,
            format!("MCP server {server:?} is registered but pied has no MCP transport yet"),
        )))
    }
}

impl Host for PieView<'_> {
    fn available_servers(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.ctx.shared.mcp_servers.clone())
    }

    fn connect(
        &mut self,
        server_name: String,
    ) -> wasmtime::Result<Result<Resource<Session>, McpError>> {
        if !self.ctx.shared.mcp_servers.contains(&server_name) {
            let known = &self.ctx.shared.mcp_servers;
            return Ok(Err(err(
                -32601,
                format!(
                    "no MCP server named {server_name:?} is registered (registered: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            )));
        }
        Ok(Ok(self.table.push(Session {
            server: server_name,
        })?))
    }
}

impl HostSession for PieView<'_> {
    fn list_tools(
        &mut self,
        this: Resource<Session>,
    ) -> wasmtime::Result<Result<String, McpError>> {
        self.no_transport(&this)
    }

    fn call_tool(
        &mut self,
        this: Resource<Session>,
        _name: String,
        _args: String,
    ) -> wasmtime::Result<Result<String, McpError>> {
        self.no_transport(&this)
    }

    fn list_resources(
        &mut self,
        this: Resource<Session>,
    ) -> wasmtime::Result<Result<String, McpError>> {
        self.no_transport(&this)
    }

    fn read_resource(
        &mut self,
        this: Resource<Session>,
        _uri: String,
    ) -> wasmtime::Result<Result<String, McpError>> {
        self.no_transport(&this)
    }

    fn list_prompts(
        &mut self,
        this: Resource<Session>,
    ) -> wasmtime::Result<Result<String, McpError>> {
        self.no_transport(&this)
    }

    fn get_prompt(
        &mut self,
        this: Resource<Session>,
        _name: String,
        _args: String,
    ) -> wasmtime::Result<Result<String, McpError>> {
        self.no_transport(&this)
    }

    fn drop(&mut self, this: Resource<Session>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
