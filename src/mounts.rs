//! The mount table: host directories the admin lets tenants map into their programs
//! (`[[mount]]` in pied.toml, granted per launch with `--mount NAME`).
//!
//! WASI preopens (cap-std underneath) confine a guest to the directory it was given: `..`
//! and symlinks that lead outside are refused by the host, whatever the guest tries.

use std::path::PathBuf;

use serde::Deserialize;

/// One `[[mount]]` table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MountConfig {
    /// What a launch names in `--mount`.
    pub name: String,
    /// Absolute host directory; `{tenant}` in it is replaced by the launching tenant's name,
    /// which gives every tenant a directory of its own from one entry.
    pub host: String,
    /// Absolute guest path it appears at (not `/`, not `/scratch`).
    pub guest: String,
    /// `ro` (default) or `rw`.
    #[serde(default)]
    pub mode: MountMode,
    /// Tenants that may be granted it; `"*"` means every tenant.
    pub tenants: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum MountMode {
    #[default]
    #[serde(rename = "ro")]
    ReadOnly,
    #[serde(rename = "rw")]
    ReadWrite,
}

/// A directory granted to one process.
#[derive(Debug, Clone, PartialEq)]
pub struct Mount {
    pub name: String,
    pub host: PathBuf,
    pub guest: String,
    pub writable: bool,
}

/// Checks the `[[mount]]` tables; an error names the key and what is wrong.
pub fn validate(mounts: &[MountConfig]) -> Result<(), (&'static str, String)> {
    for (i, m) in mounts.iter().enumerate() {
        if m.name.is_empty() || m.name.len() > 128 {
            return Err(("name", "must be 1 to 128 bytes long".into()));
        }
        if mounts[..i].iter().any(|o| o.name == m.name) {
            return Err(("name", format!("{:?} is listed twice", m.name)));
        }
        if !m.host.starts_with('/') {
            return Err(("host", format!("{:?} must be an absolute path", m.host)));
        }
        let g = m.guest.trim_end_matches('/');
        if !m.guest.starts_with('/') || g.is_empty() || g.split('/').any(|c| c == "..") {
            return Err((
                "guest",
                format!("{:?} must be an absolute path other than /", m.guest),
            ));
        }
        if g == "/scratch"
            || mounts[..i]
                .iter()
                .any(|o| o.guest.trim_end_matches('/') == g)
        {
            return Err(("guest", format!("{:?} is already taken", m.guest)));
        }
        if m.tenants.is_empty() {
            return Err((
                "tenants",
                format!(
                    "mount {:?} lists no tenant (use [\"*\"] for every tenant)",
                    m.name
                ),
            ));
        }
    }
    Ok(())
}

/// The mounts a launch by `tenant` asked for, or why it may not have them.
pub fn resolve(
    table: &[MountConfig],
    tenant: &str,
    requested: &[String],
) -> Result<Vec<Mount>, String> {
    let mut out: Vec<Mount> = Vec::new();
    for name in requested {
        let Some(m) = table.iter().find(|m| &m.name == name) else {
            return Err(format!(
                "no mount named {name:?} in the daemon's config (mounts: {})",
                crate::util::names_or_none(table.iter().map(|m| &m.name))
            ));
        };
        if !m.tenants.iter().any(|t| t == "*" || t == tenant) {
            return Err(format!("tenant {tenant:?} may not use mount {name:?}"));
        }
        if out.iter().any(|o| &o.name == name) {
            continue;
        }
        let host = PathBuf::from(m.host.replace("{tenant}", tenant));
        if !host.is_dir() {
            return Err(format!(
                "mount {name:?}: host directory {} does not exist",
                host.display()
            ));
        }
        out.push(Mount {
            name: name.clone(),
            host,
            guest: m.guest.trim_end_matches('/').to_string(),
            writable: m.mode == MountMode::ReadWrite,
        });
    }
    Ok(out)
}
