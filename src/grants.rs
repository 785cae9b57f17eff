//! What a launch is granted beyond compute, resolved once against the config at launch:
//! a running process keeps its grants across reloads.

use proto::{ErrorCode, ErrorReply, Grants};

use crate::config::Config;
use crate::http::HttpPolicy;
use crate::mounts::Mount;
use crate::util::names_or_none;

/// A process' resolved grants.
#[derive(Debug, Clone, Default)]
pub struct ProcessGrants {
    /// Outbound HTTP; `None` = none at all.
    pub http: Option<HttpPolicy>,
    /// MCP servers by name.
    pub mcp: Vec<String>,
    /// Host directories and where they appear.
    pub mounts: Vec<Mount>,
    /// The tenant's key-value store.
    pub kv: bool,
}

impl ProcessGrants {
    pub fn resolve(config: &Config, tenant: &str, asked: &Grants) -> Result<Self, ErrorReply> {
        let denied = |message: String| ErrorReply {
            code: ErrorCode::PermissionDenied,
            message,
        };
        let http = HttpPolicy::resolve(&config.http, &asked.http).map_err(denied)?;
        for name in &asked.mcp {
            if !config.mcp_servers.iter().any(|m| &m.name == name) {
                return Err(denied(format!(
                    "no MCP server named {name:?} in the daemon's config (servers: {})",
                    names_or_none(config.mcp_servers.iter().map(|m| &m.name))
                )));
            }
        }
        let mounts =
            crate::mounts::resolve(&config.mounts, tenant, &asked.mounts).map_err(denied)?;
        Ok(ProcessGrants {
            http,
            mcp: asked.mcp.clone(),
            mounts,
            kv: asked.kv,
        })
    }
}
