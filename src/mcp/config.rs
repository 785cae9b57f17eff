//! `[[mcp]]` tables of pied.toml: one MCP server each, reached over stdio (a `command` pied
//! starts and supervises) or streamable HTTP (a `url`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// Default time one MCP request (and the `initialize` handshake) may take.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// The name inferlets connect to and launches are granted (`pie-ctl launch --mcp NAME`).
    pub name: String,
    /// A stdio server: the program pied starts (looked up in PATH when it has no slash).
    #[serde(default)]
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment for the command, on top of PATH, HOME, LANG and TZ taken from pied's own
    /// environment (nothing else of pied's environment reaches it).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory of the command (absolute); default: pied's.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// A streamable-HTTP server: its endpoint, `http://host:port/path`.
    #[serde(default)]
    pub url: Option<String>,
    /// How long one request may take, in milliseconds (default 30 000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

/// Checks the `[[mcp]]` tables; errors name the table, the key and its line in `text`.
pub fn validate(servers: &[McpConfig], text: &str) -> anyhow::Result<()> {
    for (i, m) in servers.iter().enumerate() {
        let err = |key: &str, what: String| -> anyhow::Error {
            let at = match table_key_line(text, "mcp", i, key) {
                Some(line) => format!("line {line}: "),
                None => String::new(),
            };
            anyhow::anyhow!("{at}[[mcp]] {key} (server {:?}): {what}", m.name)
        };
        if m.name.is_empty() || m.name.len() > 128 {
            return Err(err("name", "must be 1 to 128 bytes long".into()));
        }
        if m.name.chars().any(|c| c.is_control()) {
            return Err(err("name", "must not contain control characters".into()));
        }
        if servers[..i].iter().any(|o| o.name == m.name) {
            return Err(err("name", format!("{:?} is listed twice", m.name)));
        }
        match (&m.command, &m.url) {
            (None, None) => {
                return Err(err(
                    "name",
                    "needs either `command` (a stdio server pied starts) or `url` (a \
                     streamable-HTTP server)"
                        .into(),
                ));
            }
            (Some(_), Some(_)) => {
                return Err(err(
                    "url",
                    "give either `command` or `url`, not both".into(),
                ));
            }
            (Some(cmd), None) => {
                if cmd.is_empty() || cmd.contains('\0') {
                    return Err(err("command", "must be a non-empty program path".into()));
                }
                if let Some(cwd) = &m.cwd
                    && !cwd.is_absolute()
                {
                    return Err(err("cwd", "must be an absolute path".into()));
                }
                for k in m.env.keys() {
                    if k.is_empty() || k.contains('=') || k.contains('\0') {
                        return Err(err(
                            "env",
                            format!("{k:?} is not a valid environment variable name"),
                        ));
                    }
                }
            }
            (None, Some(url)) => {
                for (key, set) in [
                    ("args", !m.args.is_empty()),
                    ("env", !m.env.is_empty()),
                    ("cwd", m.cwd.is_some()),
                ] {
                    if set {
                        return Err(err(
                            key,
                            "applies only to a `command` server, not a `url` one".into(),
                        ));
                    }
                }
                check_url(url).map_err(|e| err("url", e))?;
            }
        }
        if !(1..=3_600_000).contains(&m.timeout_ms) {
            return Err(err(
                "timeout_ms",
                "must be between 1 and 3600000 (one hour)".into(),
            ));
        }
    }
    Ok(())
}

/// An `http://` endpoint with a host (https is not supported yet: no TLS in this client).
fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") {
        return Err(format!(
            "{url:?}: https is not supported yet; use an http:// endpoint (e.g. on \
             localhost or behind a TLS-terminating proxy)"
        ));
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!("{url:?} must start with http://"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("{url:?} has no host"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} contains spaces or control characters"));
    }
    Ok(())
}

/// The 1-based line of `key = …` in the `index`-th `[[section]]` table of `text`.
fn table_key_line(text: &str, section: &str, index: usize, key: &str) -> Option<usize> {
    let header = format!("[[{section}]]");
    let mut seen: Option<usize> = None;
    let mut in_table = false;
    let mut header_line = None;
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
            let compact = compact.split('#').next().unwrap_or("").to_string();
            if compact == header {
                let i = seen.map_or(0, |s| s + 1);
                seen = Some(i);
                in_table = i == index;
                if in_table {
                    header_line = Some(n + 1);
                }
            } else {
                in_table = false;
            }
        } else if in_table && t.split('=').next().map(str::trim) == Some(key) && t.contains('=') {
            return Some(n + 1);
        }
    }
    header_line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> anyhow::Result<crate::config::Config> {
        crate::config::Config::parse(text)
    }

    #[test]
    fn stdio_and_url_servers() {
        let c = parse(
            "[[mcp]]\nname = \"demo\"\ncommand = \"/usr/bin/demo\"\nargs = [\"-v\"]\n\
             cwd = \"/tmp\"\ntimeout_ms = 500\n[mcp.env]\nA = \"1\"\n\
             [[mcp]]\nname = \"web\"\nurl = \"http://127.0.0.1:9/mcp\"\n",
        )
        .unwrap();
        let d = &c.mcp_servers[0];
        assert_eq!(d.command.as_deref(), Some("/usr/bin/demo"));
        assert_eq!(d.args, ["-v"]);
        assert_eq!(d.env["A"], "1");
        assert_eq!(d.timeout_ms, 500);
        assert_eq!(c.mcp_servers[1].timeout_ms, DEFAULT_TIMEOUT_MS);
    }

    #[test]
    fn errors_name_key_and_line() {
        let e = format!("{:#}", parse("[[mcp]]\nname = \"a\"\n").unwrap_err());
        assert!(e.contains("line 2") && e.contains("`command`"), "{e}");
        let e = format!(
            "{:#}",
            parse("[[mcp]]\nname = \"a\"\ncommand = \"x\"\n[[mcp]]\nname = \"b\"\ncommand = \"x\"\nurl = \"http://h/\"\n")
                .unwrap_err()
        );
        assert!(e.contains("line 7") && e.contains("not both"), "{e}");
        let e = format!(
            "{:#}",
            parse(
                "[[mcp]]\nname = \"a\"\ncommand = \"x\"\n[[mcp]]\nname = \"a\"\ncommand = \"y\"\n"
            )
            .unwrap_err()
        );
        assert!(e.contains("line 5") && e.contains("listed twice"), "{e}");
        let e = format!(
            "{:#}",
            parse("[[mcp]]\nname = \"a\"\nurl = \"ftp://h/\"\n").unwrap_err()
        );
        assert!(e.contains("line 3") && e.contains("http://"), "{e}");
        let e = format!(
            "{:#}",
            parse("[[mcp]]\nname = \"a\"\nurl = \"http://h/\"\nargs = [\"x\"]\n").unwrap_err()
        );
        assert!(
            e.contains("line 4") && e.contains("only to a `command`"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            parse("[[mcp]]\nname = \"a\"\ncommand = \"x\"\ncwd = \"rel\"\n").unwrap_err()
        );
        assert!(e.contains("line 4") && e.contains("absolute"), "{e}");
        let e = format!(
            "{:#}",
            parse("[[mcp]]\nname = \"a\"\ncommand = \"x\"\ntimeout_ms = 0\n").unwrap_err()
        );
        assert!(e.contains("line 4") && e.contains("timeout_ms"), "{e}");
        let e = format!(
            "{:#}",
            parse("[[mcp]]\nname = \"a\"\ncommand = \"x\"\nargz = []\n").unwrap_err()
        );
        assert!(e.contains("line 4") && e.contains("argz"), "{e}");
    }
}
