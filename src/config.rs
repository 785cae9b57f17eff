//! `pied.toml`: parsing, defaults and validation.
//!
//! Unknown keys are errors (a typo must not silently fall back to a default), and every
//! error names the key and the line it is on, so `pied --config x.toml` and `pie-ctl reload`
//! tell the admin exactly what to fix.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use proto::Limits;
use serde::Deserialize;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/pie/pied.toml";
pub const DEFAULT_SOCKET: &str = "/run/pied.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/pie";

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub daemon: DaemonConfig,
    pub runtime: RuntimeConfig,
    pub limits: LimitsConfig,
    pub engine: EngineConfig,
    /// `[[model]]` tables: the models of the store that load, and which is the default.
    #[serde(rename = "model")]
    pub models: Vec<ModelConfig>,
    /// `[[mcp]]` tables: MCP servers (a stdio `command` pied supervises, or a streamable-HTTP
    /// `url`) that launches may be granted by name (`--mcp NAME`, `pie:mcp`); see `mcp/`.
    #[serde(rename = "mcp")]
    pub mcp_servers: Vec<McpConfig>,
    /// `[http]`: outbound HTTP destinations inferlets may be granted (`--allow-http`).
    pub http: crate::http::HttpConfig,
    /// `[[mount]]` tables: host directories tenants may be granted (`--mount NAME`).
    #[serde(rename = "mount")]
    pub mounts: Vec<crate::mounts::MountConfig>,
    /// `[store]`: the per-tenant key-value store and the journal.
    pub store: crate::store::StoreConfig,
}

pub use crate::mcp::McpConfig;

/// How each loaded model's engine runs (fixed at start).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// CPU threads for forward passes; 0 = all cores.
    pub threads: usize,
    /// Memory for each model's KV page pool.
    pub kv_memory_mib: u64,
    /// Tokens per KV page.
    pub page_size: usize,
    /// When the KV pool is full: 0 = fail the request at once; else wait this long for
    /// pages to be released, then fail.
    pub exhausted_wait_ms: u64,
    /// Most tokens in one batch (long prefills are cut into chunks of this size).
    pub max_batch_tokens: usize,
    /// Where forward passes run: "cpu", "cuda" (= "cuda:0"), "cuda:N", or "auto" (the first
    /// GPU when CUDA and a GPU are usable, else the CPU, with a log line saying why).
    pub device: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            threads: 0,
            kv_memory_mib: 512,
            page_size: 32,
            exhausted_wait_ms: 0,
            max_batch_tokens: 512,
            device: "cpu".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name of an entry in `<state_dir>/models` (see `pie-ctl model ls`).
    pub name: String,
    #[serde(default)]
    pub default: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    pub socket: PathBuf,
    /// Permission bits of the socket file pied binds (ignored under socket activation,
    /// where the .socket unit decides). A string of octal digits, e.g. "0660".
    pub socket_mode: String,
    pub state_dir: PathBuf,
    /// Members of this group (and root) see and act on every tenant's processes.
    pub admin_group: String,
    /// On SIGTERM, how long running processes get to finish before they are killed.
    pub shutdown_grace_ms: u64,
    /// Bytes of recent events kept in memory per process for followers.
    pub event_ring_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Processes that may run at once, across all tenants.
    pub max_processes: u32,
    /// Whether launches may ask for the tenant's scratch tree (`--fs`).
    pub allow_fs: bool,
    /// Most bytes a tenant's scratch tree may hold, in MiB; 0 = no quota. A launch is refused
    /// while the tree is over it, and a running process that grows it past it is killed.
    pub scratch_quota_mib: u64,
    pub max_program_bytes: u64,
    /// Use wasmtime's pooling allocator (fast instantiation, memory reserved up front).
    pub pooling: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Limits a launch gets when it asks for none.
    pub default: LimitValues,
    /// The most a launch may ask for.
    pub max: LimitValues,
}

/// One `[limits.*]` table; keys left out take the built-in value of that table.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitValues {
    /// Wasm fuel units; 0 = unmetered.
    pub fuel: Option<u64>,
    /// Wall-clock deadline in milliseconds; 0 = none.
    pub deadline_ms: Option<u64>,
    pub memory_mib: Option<u64>,
}

impl LimitValues {
    fn resolve(self, builtin: Limits) -> Limits {
        Limits {
            fuel: self.fuel.unwrap_or(builtin.fuel),
            deadline_ms: self.deadline_ms.unwrap_or(builtin.deadline_ms),
            memory_bytes: self.memory_mib.map_or(builtin.memory_bytes, |m| m << 20),
        }
    }
}

const BUILTIN_DEFAULT_LIMITS: Limits = Limits {
    fuel: 0,
    deadline_ms: 3_600_000,
    memory_bytes: 256 << 20,
};

const BUILTIN_MAX_LIMITS: Limits = Limits {
    fuel: 0,
    deadline_ms: 24 * 3_600_000,
    memory_bytes: 1 << 30,
};

impl LimitsConfig {
    pub fn default_limits(&self) -> Limits {
        self.default.resolve(BUILTIN_DEFAULT_LIMITS)
    }

    pub fn max_limits(&self) -> Limits {
        self.max.resolve(BUILTIN_MAX_LIMITS)
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            socket: DEFAULT_SOCKET.into(),
            socket_mode: "0660".into(),
            state_dir: DEFAULT_STATE_DIR.into(),
            admin_group: "pie-admin".into(),
            shutdown_grace_ms: 10_000,
            event_ring_bytes: 256 << 10,
        }
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_processes: 1024,
            allow_fs: false,
            scratch_quota_mib: 0,
            max_program_bytes: 32 << 20,
            pooling: true,
        }
    }
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Config::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses and validates config text. Errors name the key and its line.
    pub fn parse(text: &str) -> Result<Config> {
        let config: Config = toml::from_str(text).map_err(|e| {
            // toml's message already names the key; add the line explicitly since its
            // span-based rendering is easy to miss in a journal line.
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            match line {
                Some(line) => anyhow::anyhow!("line {line}: {}", e.message()),
                None => anyhow::anyhow!("{}", e.message()),
            }
        })?;
        config.validate(text)?;
        Ok(config)
    }

    fn validate(&self, text: &str) -> Result<()> {
        let err = |section: &str, key: &str, what: String| -> anyhow::Error {
            match key_line(text, section, key) {
                Some(line) => anyhow::anyhow!("line {line}: [{section}] {key}: {what}"),
                None => anyhow::anyhow!("[{section}] {key}: {what}"),
            }
        };
        parse_mode(&self.daemon.socket_mode)
            .map_err(|e| err("daemon", "socket_mode", e.to_string()))?;
        if self.daemon.state_dir.as_os_str().is_empty() {
            return Err(err("daemon", "state_dir", "must not be empty".into()));
        }
        if self.runtime.max_processes == 0 {
            return Err(err("runtime", "max_processes", "must be at least 1".into()));
        }
        if self.runtime.max_program_bytes == 0
            || self.runtime.max_program_bytes > proto::MAX_FRAME as u64 - 4096
        {
            return Err(err(
                "runtime",
                "max_program_bytes",
                format!("must be between 1 and {}", proto::MAX_FRAME - 4096),
            ));
        }
        for m in &self.models {
            model_store::validate_name(&m.name)
                .map_err(|e| err("model", "name", format!("{e:#}")))?;
        }
        if !(1..=1024).contains(&self.engine.page_size) {
            return Err(err(
                "engine",
                "page_size",
                "must be between 1 and 1024".into(),
            ));
        }
        self.engine
            .device
            .parse::<engine::Device>()
            .map_err(|e| err("engine", "device", e))?;
        if self.engine.kv_memory_mib == 0 {
            return Err(err("engine", "kv_memory_mib", "must be at least 1".into()));
        }
        if self.engine.max_batch_tokens == 0 {
            return Err(err(
                "engine",
                "max_batch_tokens",
                "must be at least 1".into(),
            ));
        }
        crate::mcp::config::validate(&self.mcp_servers, text)?;
        self.http
            .validate()
            .map_err(|(key, what)| err("http", key, what))?;
        crate::mounts::validate(&self.mounts).map_err(|(key, what)| err("mount", key, what))?;
        self.store
            .validate()
            .map_err(|(key, what)| err("store", key, what))?;
        if self.models.iter().filter(|m| m.default).count() > 1 {
            return Err(err(
                "model",
                "default",
                "only one [[model]] may be the default".into(),
            ));
        }
        let (d, m) = (self.limits.default_limits(), self.limits.max_limits());
        if m.memory_bytes == 0 {
            return Err(err("limits.max", "memory_mib", "must be at least 1".into()));
        }
        if d.memory_bytes == 0 || d.memory_bytes > m.memory_bytes {
            return Err(err(
                "limits.default",
                "memory_mib",
                format!(
                    "must be between 1 and [limits.max] memory_mib = {}",
                    m.memory_bytes >> 20
                ),
            ));
        }
        if !within(d.fuel, m.fuel) {
            return Err(err(
                "limits.default",
                "fuel",
                format!("must be within [limits.max] fuel = {}", m.fuel),
            ));
        }
        if !within(d.deadline_ms, m.deadline_ms) {
            return Err(err(
                "limits.default",
                "deadline_ms",
                format!(
                    "must be within [limits.max] deadline_ms = {}",
                    m.deadline_ms
                ),
            ));
        }
        Ok(())
    }

    /// The default model: the one marked `default = true`, else the first listed.
    pub fn default_model(&self) -> Option<&str> {
        self.models
            .iter()
            .find(|m| m.default)
            .or(self.models.first())
            .map(|m| m.name.as_str())
    }

    pub fn socket_mode(&self) -> u32 {
        parse_mode(&self.daemon.socket_mode).expect("validated at load")
    }
}

/// Whether `value` respects a maximum where 0 means "unlimited" for both.
pub fn within(value: u64, max: u64) -> bool {
    max == 0 || (value != 0 && value <= max)
}

fn parse_mode(s: &str) -> Result<u32> {
    let mode = u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .with_context(|| format!("{s:?} is not an octal permission mode like \"0660\""))?;
    if mode > 0o777 {
        bail!("{s:?} is larger than 0777");
    }
    Ok(mode)
}

/// Finds the 1-based line of `key = ...` inside `[section]`, for error messages.
fn key_line(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            // `[section]` or `[[array-of-tables]]`
            current = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        } else if current == section
            && t.split('=').next().map(str::trim) == Some(key)
            && t.contains('=')
        {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.daemon.socket, PathBuf::from(DEFAULT_SOCKET));
        assert!(!c.runtime.allow_fs);
        assert_eq!(c.socket_mode(), 0o660);
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let e = Config::parse("[daemon]\nsocket = \"/tmp/x\"\nsokcet_mode = \"0600\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("sokcet_mode"), "{e}");
    }

    #[test]
    fn wrong_type_names_line() {
        let e = Config::parse("[runtime]\nallow_fs = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn default_above_max_is_refused_with_line() {
        let text = "[limits.default]\nfuel = 0\ndeadline_ms = 1000\nmemory_mib = 4096\n\n[limits.max]\nfuel = 0\ndeadline_ms = 0\nmemory_mib = 512\n";
        let e = Config::parse(text).unwrap_err().to_string();
        assert!(e.contains("line 4"), "{e}");
        assert!(e.contains("memory_mib"), "{e}");
    }

    #[test]
    fn engine_device_is_validated() {
        for ok in ["cpu", "cuda", "cuda:1", "auto"] {
            let c = Config::parse(&format!("[engine]\ndevice = \"{ok}\"\n")).unwrap();
            assert_eq!(c.engine.device, ok);
        }
        let e = Config::parse("[engine]\ndevice = \"tpu\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("device") && e.contains("cuda:N"), "{e}");
    }

    #[test]
    fn bad_socket_mode() {
        let e = Config::parse("[daemon]\nsocket_mode = \"rw\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("socket_mode"), "{e}");
    }

    #[test]
    fn mcp_tables() {
        let c = Config::parse("[[mcp]]\nname = \"files\"\ncommand = \"x\"\n").unwrap();
        assert_eq!(c.mcp_servers[0].name, "files");
        let e = Config::parse("[[mcp]]\nname = \"a\"\nurl = \"http://h/\"\n[[mcp]]\nname = \"a\"\nurl = \"http://h/\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("listed twice"), "{e:#}");
    }

    #[test]
    fn model_tables() {
        let c = Config::parse("[[model]]\nname = \"a\"\n[[model]]\nname = \"b\"\ndefault = true\n")
            .unwrap();
        assert_eq!(c.default_model(), Some("b"));
        let e = Config::parse("[[model]]\nname = \"a/../b\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("name"), "{e}");
        let e = Config::parse(
            "[[model]]\nname = \"a\"\ndefault = true\n[[model]]\nname = \"b\"\ndefault = true\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("only one"), "{e}");
    }

    #[test]
    fn zero_means_unlimited() {
        assert!(within(0, 0));
        assert!(within(5, 0));
        assert!(!within(0, 5));
        assert!(within(5, 5));
        assert!(!within(6, 5));
    }
}
