//! The per-tenant key-value store and the per-process journal (`pied:store`).
//!
//! (Scaffold: the config table. The store lands with #5.)

use serde::Deserialize;

/// `[store]` in pied.toml.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {}

impl StoreConfig {
    /// Checks the table; an error names the key and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        Ok(())
    }
}
