//! `pie:core/runtime`: who and where the inferlet runs.

use super::PieView;
use super::pie::core::runtime::Host;

impl Host for PieView<'_> {
    /// `pied <version>`.
    fn version(&mut self) -> wasmtime::Result<String> {
        Ok(format!("pied {}", env!("CARGO_PKG_VERSION")))
    }

    /// The process id (as `pie-ctl ps` shows it), as a string.
    fn instance_id(&mut self) -> wasmtime::Result<String> {
        Ok(self.ctx.process.id.to_string())
    }

    /// The tenant: the user name of the uid that launched the process.
    fn username(&mut self) -> wasmtime::Result<String> {
        Ok(self.ctx.process.tenant.clone())
    }

    /// The names of the served models, the default model first.
    fn models(&mut self) -> wasmtime::Result<Vec<String>> {
        let shared = &self.ctx.shared;
        let mut names: Vec<String> = Vec::new();
        if let Some(d) = &shared.default_model
            && shared.models.contains_key(d)
        {
            names.push(d.clone());
        }
        names.extend(
            shared
                .models
                .keys()
                .filter(|n| Some(*n) != shared.default_model.as_ref())
                .cloned(),
        );
        Ok(names)
    }
}
