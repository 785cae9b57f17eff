//! Outbound HTTP for inferlets (`wasi:http/outgoing-handler`): the config's allow-list, a
//! launch's narrowing of it, and the per-process caps.
//!
//! (Scaffold: the policy type the daemon passes to a process. The transport lands with #5.)

use serde::Deserialize;

/// `[http]` in pied.toml.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Destinations inferlets may be granted; empty = no outbound HTTP at all.
    pub allow: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { allow: Vec::new() }
    }
}

impl HttpConfig {
    /// Checks the table; an error names the key and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        Ok(())
    }
}

/// What one process may reach over HTTP (resolved at launch; never changes while it runs).
#[derive(Debug, Clone, Default)]
pub struct HttpPolicy {
    pub allow: Vec<String>,
}

impl HttpPolicy {
    /// The policy of a launch that asked for `requested` (`--allow-http`), or why not.
    pub fn resolve(
        config: &HttpConfig,
        requested: &[String],
    ) -> Result<Option<HttpPolicy>, String> {
        if requested.is_empty() {
            return Ok(None);
        }
        if config.allow.is_empty() {
            return Err(
                "outbound HTTP is disabled by the daemon's config ([http] allow is empty)".into(),
            );
        }
        Err("outbound HTTP is not implemented yet".into())
    }
}
