//! The program store: uploaded wasm, content-addressed by sha256, with the compiled artifact
//! cached beside it so that a program is compiled once, not once per launch.
//!
//! Layout under `<state>/programs/`: `<sha>.wasm` (the upload), `<sha>.cwasm` (wasmtime's
//! compiled artifact), `<sha>.json` (name, kind, owners). Loaded programs are also kept in
//! memory, pre-linked, for the life of the daemon.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use proto::{ProgramInfo, ProgramKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::Manifest;
use crate::runtime::{Loaded, Runtime, Undeclared};
use crate::util::{Durability, unix_ms, write_atomic};

/// Shortest sha256 prefix accepted as a program reference.
const MIN_PREFIX: usize = 6;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    name: String,
    kind: ProgramKind,
    size: u64,
    added_unix_ms: u64,
    /// Uids that uploaded it: they (and admins) see and may remove it.
    owners: Vec<u32>,
    /// Its declared-capability manifest (TOML text of its `pied-manifest` section), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    manifest: Option<String>,
}

pub struct ProgramStore {
    dir: PathBuf,
    runtime: Arc<Runtime>,
    loaded: Mutex<HashMap<String, Arc<Loaded>>>,
    /// Serializes uploads and removals so two uploads of one program compile it once.
    write_lock: tokio::sync::Mutex<()>,
}

/// Errors the admin server maps to protocol error codes.
#[derive(Debug)]
pub enum StoreError {
    NotFound(String),
    Ambiguous(String),
    Invalid(String),
    TooLarge { size: u64, limit: u64 },
    Io(anyhow::Error),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NotFound(r) => write!(
                f,
                "no program {r:?} is installed (give a .wasm file path, an installed name or a sha256 prefix; see `pie-ctl programs ls`)"
            ),
            StoreError::Ambiguous(r) => {
                write!(f, "{r:?} matches several programs; give more of the sha256")
            }
            StoreError::Invalid(why) => write!(f, "invalid program: {why}"),
            StoreError::TooLarge { size, limit } => write!(
                f,
                "program is {size} bytes, above the daemon's limit of {limit} bytes ([runtime] max_program_bytes)"
            ),
            StoreError::Io(e) => write!(f, "{e:#}"),
        }
    }
}

impl ProgramStore {
    pub fn open(dir: &Path, runtime: Arc<Runtime>) -> Result<ProgramStore> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create program store {}", dir.display()))?;
        Ok(ProgramStore {
            dir: dir.to_owned(),
            runtime,
            loaded: Mutex::new(HashMap::new()),
            write_lock: tokio::sync::Mutex::new(()),
        })
    }

    fn path(&self, sha: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{sha}.{ext}"))
    }

    /// Stores (and compiles) a program. Uploading an existing program only adds the owner.
    pub async fn add(
        &self,
        name: &str,
        wasm: Vec<u8>,
        owner: u32,
        limit: u64,
    ) -> Result<ProgramInfo, StoreError> {
        if wasm.len() as u64 > limit {
            return Err(StoreError::TooLarge {
                size: wasm.len() as u64,
                limit,
            });
        }
        let kind = Runtime::detect_kind(&wasm).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let manifest = Manifest::find(&wasm).map_err(StoreError::Invalid)?;
        let sha = hex::encode(Sha256::digest(&wasm));
        let _guard = self.write_lock.lock().await;
        if let Ok(mut meta) = self.meta(&sha) {
            if !meta.owners.contains(&owner) {
                meta.owners.push(owner);
                self.write_meta(&sha, &meta).map_err(StoreError::Io)?;
            }
            return Ok(self.info(&sha, &meta));
        }
        let runtime = self.runtime.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            let compiled = runtime.precompile(kind, &wasm);
            (wasm, compiled)
        })
        .await
        .map_err(|e| StoreError::Io(anyhow::anyhow!("compiler task failed: {e}")))?;
        let (wasm, compiled) = compiled;
        let compiled = compiled.map_err(|e| StoreError::Invalid(format!("{e:#}")))?;
        let meta = Meta {
            name: sanitize_name(name),
            kind,
            size: wasm.len() as u64,
            added_unix_ms: unix_ms(),
            owners: vec![owner],
            manifest: manifest.map(|m| m.text),
        };
        // The .json is written last: it is what makes a program exist.
        let write = || -> Result<()> {
            write_atomic(&self.path(&sha, "wasm"), &wasm, Durability::Synced)?;
            write_atomic(&self.path(&sha, "cwasm"), &compiled, Durability::Synced)?;
            self.write_meta(&sha, &meta)
        };
        if let Err(e) = write() {
            for ext in ["wasm", "cwasm", "json"] {
                let _ = std::fs::remove_file(self.path(&sha, ext));
            }
            return Err(StoreError::Io(
                e.context("cannot write to the program store"),
            ));
        }
        Ok(self.info(&sha, &meta))
    }

    fn meta(&self, sha: &str) -> Result<Meta> {
        let text = std::fs::read(self.path(sha, "json"))?;
        Ok(serde_json::from_slice(&text)?)
    }

    fn write_meta(&self, sha: &str, meta: &Meta) -> Result<()> {
        write_atomic(
            &self.path(sha, "json"),
            &serde_json::to_vec_pretty(meta)?,
            Durability::Synced,
        )
        .context("cannot write program metadata")
    }

    fn info(&self, sha: &str, meta: &Meta) -> ProgramInfo {
        ProgramInfo {
            sha256: sha.to_string(),
            name: meta.name.clone(),
            kind: meta.kind,
            size: meta.size,
            compiled: self.path(sha, "cwasm").exists(),
            added_unix_ms: meta.added_unix_ms,
        }
    }

    fn all(&self) -> Vec<(String, Meta)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut all: Vec<(String, Meta)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let sha = name.strip_suffix(".json")?.to_string();
                let meta = self.meta(&sha).ok()?;
                Some((sha, meta))
            })
            .collect();
        all.sort_by_key(|(_, m)| m.added_unix_ms);
        all
    }

    /// Programs visible to a caller: all for admins, else those it uploaded.
    pub fn list(&self, uid: u32, admin: bool) -> Vec<ProgramInfo> {
        self.all()
            .into_iter()
            .filter(|(_, m)| admin || m.owners.contains(&uid))
            .map(|(sha, m)| self.info(&sha, &m))
            .collect()
    }

    pub fn count(&self) -> usize {
        self.all().len()
    }

    /// Resolves a full sha256, a unique prefix of one, or a name (the newest upload with
    /// that name wins) among the programs the caller may use.
    pub fn resolve(
        &self,
        reference: &str,
        uid: u32,
        admin: bool,
    ) -> Result<ProgramInfo, StoreError> {
        let is_hex =
            reference.len() >= MIN_PREFIX && reference.bytes().all(|b| b.is_ascii_hexdigit());
        if reference.len() == 64 && is_hex {
            if let Ok(meta) = self.meta(reference)
                && (admin || meta.owners.contains(&uid))
            {
                return Ok(self.info(reference, &meta));
            }
            return Err(StoreError::NotFound(reference.into()));
        }
        let visible: Vec<(String, Meta)> = self
            .all()
            .into_iter()
            .filter(|(_, m)| admin || m.owners.contains(&uid))
            .collect();
        if let Some((sha, meta)) = visible.iter().rev().find(|(_, m)| m.name == reference) {
            return Ok(self.info(sha, meta));
        }
        if is_hex {
            let lower = reference.to_ascii_lowercase();
            let hits: Vec<&(String, Meta)> = visible
                .iter()
                .filter(|(s, _)| s.starts_with(&lower))
                .collect();
            match hits.as_slice() {
                [(sha, meta)] => return Ok(self.info(sha, meta)),
                [] => {}
                _ => return Err(StoreError::Ambiguous(reference.into())),
            }
        }
        Err(StoreError::NotFound(reference.into()))
    }

    /// The pre-linked program, from memory, else from its cached artifact, else compiled
    /// again (after a wasmtime upgrade the old artifact no longer loads).
    pub async fn load(&self, info: &ProgramInfo) -> Result<Arc<Loaded>, StoreError> {
        if let Some(l) = self.loaded.lock().unwrap().get(&info.sha256) {
            return Ok(l.clone());
        }
        let cwasm = self.path(&info.sha256, "cwasm");
        let manifest = match self.meta(&info.sha256).ok().and_then(|m| m.manifest) {
            Some(text) => Some(Manifest::parse(&text).map_err(StoreError::Invalid)?),
            None => None,
        };
        let manifest = manifest.as_ref();
        let loaded = match self.runtime.load(info.kind, &cwasm, manifest) {
            Ok(l) => l,
            Err(e) if e.downcast_ref::<Undeclared>().is_some() => {
                return Err(StoreError::Invalid(e.to_string()));
            }
            Err(first) => {
                tracing::info!(sha = %info.sha256, "cached artifact unusable ({first:#}); recompiling");
                let wasm = std::fs::read(self.path(&info.sha256, "wasm"))
                    .map_err(|e| StoreError::Io(anyhow::anyhow!("cannot read program: {e}")))?;
                let compiled = self
                    .runtime
                    .precompile(info.kind, &wasm)
                    .map_err(|e| StoreError::Invalid(format!("{e:#}")))?;
                write_atomic(&cwasm, &compiled, Durability::Synced)
                    .map_err(|e| StoreError::Io(anyhow::anyhow!("cannot write artifact: {e}")))?;
                self.runtime
                    .load(info.kind, &cwasm, manifest)
                    .map_err(|e| StoreError::Invalid(format!("{e:#}")))?
            }
        };
        let loaded = Arc::new(loaded);
        self.loaded
            .lock()
            .unwrap()
            .insert(info.sha256.clone(), loaded.clone());
        Ok(loaded)
    }

    /// Removes a program for a caller: its owners lose it; the files go when no owner is
    /// left (admins remove it outright). Running processes keep their loaded copy.
    pub async fn remove(
        &self,
        reference: &str,
        uid: u32,
        admin: bool,
    ) -> Result<ProgramInfo, StoreError> {
        let _guard = self.write_lock.lock().await;
        let info = self.resolve(reference, uid, admin)?;
        let mut meta = self
            .meta(&info.sha256)
            .map_err(|_| StoreError::NotFound(reference.into()))?;
        meta.owners.retain(|o| *o != uid);
        if admin || meta.owners.is_empty() {
            self.loaded.lock().unwrap().remove(&info.sha256);
            // Metadata first: a crash half-way leaves unreferenced files, never a program
            // whose files are missing.
            for ext in ["json", "cwasm", "wasm"] {
                let path = self.path(&info.sha256, ext);
                if let Err(e) = std::fs::remove_file(&path)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    return Err(StoreError::Io(anyhow::anyhow!(
                        "cannot remove {}: {e}",
                        path.display()
                    )));
                }
            }
        } else {
            self.write_meta(&info.sha256, &meta)
                .map_err(StoreError::Io)?;
        }
        Ok(info)
    }
}

/// Program names are labels for humans: keep them short and printable.
fn sanitize_name(name: &str) -> String {
    let base = name.rsplit('/').next().unwrap_or(name);
    let base = base.strip_suffix(".wasm").unwrap_or(base);
    let clean: String = base
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(64)
        .collect();
    if clean.is_empty() {
        "program".into()
    } else {
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sanitized() {
        assert_eq!(sanitize_name("/tmp/x/hello.wasm"), "hello");
        assert_eq!(sanitize_name("a b$c"), "abc");
        assert_eq!(sanitize_name(""), "program");
    }

    #[test]
    fn not_wasm_is_refused() {
        assert!(Runtime::detect_kind(b"hello world").is_err());
        assert!(Runtime::detect_kind(b"\0asm\x01\0\0\0").is_ok());
    }
}
