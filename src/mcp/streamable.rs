//! Streamable-HTTP servers (`[[mcp]] url = …`).

use rmcp::model::ClientConfig;
use rmcp::service::{RoleClient, RunningService};

pub async fn connect(
    _info: ClientConfig,
    url: &str,
) -> anyhow::Result<RunningService<RoleClient, ClientConfig>> {
    anyhow::bail!("streamable HTTP ({url}) is not supported yet")
}
