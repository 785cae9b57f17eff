//! Declared-capability manifests: a program may ship a list of what it needs, and then an
//! import outside that list fails at link time, before any of its code runs.
//!
//! The manifest is TOML in a custom section named [`SECTION`] anywhere in the binary (the
//! component's own sections or a nested core module's). `pie-ctl install/launch --manifest
//! FILE` appends one; any tool that writes custom sections works too. Being part of the
//! bytes, it is covered by the program's sha256: the same code with another manifest is
//! another program.
//!
//! ```toml
//! [capabilities]
//! requires = ["inference", "http", "kv"]
//! ```
//!
//! A manifest says what a program may *import*; what it may *reach* is still decided per
//! launch by grants (`--allow-http`, `--kv`, …). Without a manifest, every import pied
//! offers links (the grants alone decide).

use serde::Deserialize;
use wasmtime::wasmparser::{Parser, Payload};

/// Name of the custom section that holds the manifest.
pub const SECTION: &str = "pied-manifest";

/// Interfaces every program may import whatever its manifest says: the WASI base that the
/// standard libraries import on their own. Filesystem and sockets are here because the
/// runtime already denies them unless granted (preopens, no network).
const BASE: &[&str] = &[
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
    "wasi:sockets/",
];

/// Capability names and the interface prefixes each one lets a program import.
const CAPABILITIES: &[(&str, &[&str])] = &[
    // The `inferlet` SDK links pie:zo (adapters) into every inferlet; it goes with inference.
    ("inference", &["pie:core/", "pie:zo/"]),
    ("instruct", &["pie:instruct/"]),
    ("mcp", &["pie:mcp/"]),
    ("http", &["wasi:http/"]),
    ("kv", &["pied:store/kv"]),
    ("journal", &["pied:store/journal"]),
];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    capabilities: Capabilities,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub capabilities: Capabilities,
    /// The text it was parsed from (kept with the program in the store).
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Capability names (see [`CAPABILITIES`]) or interface names (`ns:pkg/iface`, an
    /// exact import without its `@version`).
    pub requires: Vec<String>,
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Manifest, String> {
        let file: ManifestFile =
            toml::from_str(text).map_err(|e| format!("invalid manifest: {e}"))?;
        let m = Manifest {
            capabilities: file.capabilities,
            text: text.to_string(),
        };
        for r in &m.capabilities.requires {
            if !r.contains(':') && !CAPABILITIES.iter().any(|(name, _)| name == r) {
                return Err(format!(
                    "invalid manifest: unknown capability {r:?} (known: {}, or an interface \
                     name like \"wasi:http/outgoing-handler\")",
                    CAPABILITIES
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        Ok(m)
    }

    /// Finds and parses the manifest of a wasm binary; `Ok(None)` when it has none.
    pub fn find(wasm: &[u8]) -> Result<Option<Manifest>, String> {
        let mut found: Option<&[u8]> = None;
        for payload in Parser::new(0).parse_all(wasm) {
            // Malformed binaries are the compiler's to report; stop looking.
            let Ok(payload) = payload else { break };
            if let Payload::CustomSection(c) = payload
                && c.name() == SECTION
            {
                if found.is_some() {
                    return Err(format!("the program has more than one {SECTION:?} section"));
                }
                found = Some(c.data());
            }
        }
        let Some(bytes) = found else { return Ok(None) };
        let text = std::str::from_utf8(bytes)
            .map_err(|_| format!("the {SECTION:?} section is not UTF-8 text"))?;
        Manifest::parse(text).map(Some)
    }

    /// Whether the program may import `import` (e.g. `wasi:http/outgoing-handler@0.2.4`);
    /// `Err` is the link error to show.
    pub fn check_import(&self, import: &str) -> Result<(), String> {
        let name = import.split('@').next().unwrap_or(import);
        if BASE.iter().any(|p| name.starts_with(p)) {
            return Ok(());
        }
        let declared = &self.capabilities.requires;
        let allowed = declared
            .iter()
            .any(|r| match CAPABILITIES.iter().find(|(n, _)| n == r) {
                Some((_, prefixes)) => prefixes.iter().any(|p| name.starts_with(p)),
                None => r == name,
            });
        if allowed {
            return Ok(());
        }
        let hint = match CAPABILITIES
            .iter()
            .find(|(_, prefixes)| prefixes.iter().any(|p| name.starts_with(p)))
        {
            Some((cap, _)) => format!("add \"{cap}\" to [capabilities] requires"),
            None => format!("add \"{name}\" to [capabilities] requires"),
        };
        Err(format!(
            "the program imports {import}, which its manifest does not declare \
             (declared: [{}]); {hint}",
            declared.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(requires: &[&str]) -> Manifest {
        Manifest {
            capabilities: Capabilities {
                requires: requires.iter().map(|s| s.to_string()).collect(),
            },
            text: String::new(),
        }
    }

    #[test]
    fn base_wasi_always_links_and_undeclared_imports_do_not() {
        let m = manifest(&["inference", "pied:store/journal"]);
        assert!(m.check_import("wasi:cli/stdout@0.2.4").is_ok());
        assert!(m.check_import("wasi:filesystem/preopens@0.2.4").is_ok());
        assert!(m.check_import("pie:core/context").is_ok());
        assert!(m.check_import("pied:store/journal@0.1.0").is_ok());
        let e = m
            .check_import("wasi:http/outgoing-handler@0.2.4")
            .unwrap_err();
        assert!(e.contains("add \"http\""), "{e}");
        let e = m.check_import("pied:store/kv@0.1.0").unwrap_err();
        assert!(e.contains("add \"kv\""), "{e}");
        assert!(m.check_import("pie:mcp/client").is_err());
    }

    #[test]
    fn manifests_parse_strictly() {
        assert!(Manifest::parse("[capabilities]\nrequires = [\"http\"]\n").is_ok());
        let e = Manifest::parse("[capabilities]\nrequires = [\"htp\"]\n").unwrap_err();
        assert!(e.contains("unknown capability \"htp\""), "{e}");
        assert!(Manifest::parse("[capabilities]\nwants = []\n").is_err());
    }

    #[test]
    fn the_section_is_found_in_a_binary() {
        // A core module header plus one custom section.
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        let text = b"[capabilities]\nrequires = [\"kv\"]\n";
        let mut payload = vec![SECTION.len() as u8];
        payload.extend_from_slice(SECTION.as_bytes());
        payload.extend_from_slice(text);
        wasm.push(0);
        wasm.push(payload.len() as u8);
        wasm.extend_from_slice(&payload);
        let m = Manifest::find(&wasm).unwrap().unwrap();
        assert_eq!(m.capabilities, manifest(&["kv"]).capabilities);
        assert_eq!(Manifest::find(b"\0asm\x01\0\0\0").unwrap(), None);
    }
}
