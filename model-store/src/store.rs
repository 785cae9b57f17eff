//! The store directory: naming, atomic import, listing and removal of entries.
//!
//! # Invariants
//! - A directory `<root>/<name>/` with a `pie-model.json` is a complete entry; the manifest is
//!   the last file written before the rename that publishes it.
//! - Names starting with `.` are never entries: the store uses them for in-flight imports
//!   (`.import-*`) and removals (`.remove-*`), and `list` skips them.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::gguf::dequant::OutDtype;
use crate::gguf::reader::GGUF_MAGIC;
use crate::{Converted, ModelEntry, Progress, gguf, hf};

/// File name of the manifest inside each entry.
pub const MANIFEST: &str = "pie-model.json";

/// Options of [`ModelStore::import_with`].
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// Output dtype of a GGUF import (HF imports keep the source's dtype).
    pub dtype: OutDtype,
}

/// The models directory, `<state>/models`.
#[derive(Clone, Debug)]
pub struct ModelStore {
    root: PathBuf,
}

/// Entry names become directory names and appear in CLIs and logs: keep them to a safe,
/// portable alphabet rather than blacklisting path tricks one by one.
pub fn validate_name(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "-_.+".contains(c);
    if name.is_empty() {
        bail!("model name is empty");
    }
    if name.len() > 128 {
        bail!("model name `{name}` is longer than 128 bytes");
    }
    if name.starts_with('.') {
        bail!("model name `{name}` must not start with `.`");
    }
    if let Some(c) = name.chars().find(|&c| !ok_char(c)) {
        bail!("model name `{name}` contains {c:?}; use letters, digits and `-_.+`");
    }
    Ok(())
}

/// Removes a temp directory on drop unless disarmed, so every error path (and a panic in an
/// importer) leaves nothing half-written behind.
struct TempDir {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// fsync every file in `dir` and `dir` itself (for hard-linked HF files this also flushes the
/// source, which is harmless).
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            fs::File::open(e.path())?.sync_all()?;
        }
    }
    fs::File::open(dir)?.sync_all()
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}

impl ModelStore {
    /// Open (creating if missing) the models directory.
    pub fn open(models_dir: &Path) -> Result<Self> {
        fs::create_dir_all(models_dir)
            .with_context(|| format!("create model store {}", models_dir.display()))?;
        let store = ModelStore {
            root: models_dir.to_path_buf(),
        };
        store.remove_stale_temp_dirs();
        Ok(store)
    }

    /// Delete `.import-*` / `.remove-*` directories left by a process that died mid-way (their
    /// name carries its pid). Directories of live processes are in use and left alone; a pid
    /// reused since only delays the cleanup to a later open.
    fn remove_stale_temp_dirs(&self) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with(".import-") || name.starts_with(".remove-")) {
                continue;
            }
            // .import-<name>-<pid>-<counter>-<nanos>: the pid is third from the end
            let pid = name.rsplit('-').nth(2).and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if pid.is_some() && !alive {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Import a GGUF file or a Hugging Face directory as `name`, converting GGUF to bf16.
    pub fn import(
        &self,
        src: &Path,
        name: &str,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ModelEntry> {
        self.import_with(src, name, &ImportOptions::default(), progress)
    }

    pub fn import_with(
        &self,
        src: &Path,
        name: &str,
        opts: &ImportOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ModelEntry> {
        validate_name(name)?;
        let dest = self.root.join(name);
        if dest.symlink_metadata().is_ok() {
            bail!(
                "model `{name}` already exists in {}: remove it first",
                self.root.display()
            );
        }
        let src = src
            .canonicalize()
            .with_context(|| format!("import source {}", src.display()))?;
        let is_dir = src.is_dir();

        let tmp = TempDir {
            path: self
                .root
                .join(format!(".import-{name}-{}", unique_suffix())),
            armed: true,
        };
        fs::create_dir(&tmp.path).with_context(|| format!("create {}", tmp.path.display()))?;

        let (converted, source): (Converted, String) = if is_dir {
            let c = hf::import(&src, &tmp.path, progress)
                .with_context(|| format!("import of Hugging Face directory {}", src.display()))?;
            (c, format!("hf:{}", src.display()))
        } else {
            check_gguf_magic(&src)?;
            let c = gguf::convert::convert(&src, &tmp.path, opts.dtype, progress)
                .with_context(|| format!("import of GGUF file {}", src.display()))?;
            (c, format!("gguf:{}", src.display()))
        };

        let s = &converted.shape;
        let mut entry = ModelEntry {
            name: name.to_string(),
            dir: dest.clone(),
            architecture: converted.architecture,
            source,
            dtype: converted.dtype,
            params: converted.params,
            bytes: 0,
            created_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            layers: s.layers,
            hidden: s.hidden,
            intermediate: s.intermediate,
            heads: s.heads,
            kv_heads: s.kv_heads,
            head_dim: s.head_dim,
            vocab: s.vocab,
            max_position_embeddings: converted.max_position_embeddings,
            tie_word_embeddings: s.tie_word_embeddings,
        };
        // The manifest counts itself only approximately (its size depends on `bytes`); the
        // weights dominate, so count everything else.
        entry.bytes = dir_size(&tmp.path)?;
        let manifest = tmp.path.join(MANIFEST);
        fs::write(&manifest, serde_json::to_string_pretty(&entry)? + "\n")
            .with_context(|| format!("write {}", manifest.display()))?;
        // Everything durable before the rename publishes it: after a crash the entry is either
        // absent or complete, never a manifest next to unwritten data.
        sync_tree(&tmp.path).with_context(|| format!("sync {}", tmp.path.display()))?;

        // rename(2) fails if another import published the same name meanwhile (a non-empty
        // directory), so two concurrent imports cannot interleave their files.
        fs::rename(&tmp.path, &dest).with_context(|| {
            format!(
                "publish {} as {} (imported concurrently?)",
                tmp.path.display(),
                dest.display()
            )
        })?;
        let mut tmp = tmp;
        tmp.armed = false;
        // Persist the rename itself. Best effort: the entry is published already, and failing
        // the import now would report an error for a model that is in fact there.
        let _ = fs::File::open(&self.root).and_then(|d| d.sync_all());
        Ok(entry)
    }

    /// All complete entries, sorted by name.
    pub fn list(&self) -> Result<Vec<ModelEntry>> {
        let mut out = Vec::new();
        for e in
            fs::read_dir(&self.root).with_context(|| format!("read {}", self.root.display()))?
        {
            let e = e?;
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if validate_name(name).is_err() || !e.path().join(MANIFEST).is_file() {
                continue;
            }
            out.push(self.read_manifest(name)?);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The entry called `name`.
    pub fn get(&self, name: &str) -> Result<ModelEntry> {
        validate_name(name)?;
        if !self.root.join(name).join(MANIFEST).is_file() {
            let names: Vec<String> = self.list()?.into_iter().map(|e| e.name).collect();
            let known = if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            };
            bail!(
                "no model named `{name}` in {} (imported: {known}); import one with \
                 `pied model import`",
                self.root.display()
            );
        }
        self.read_manifest(name)
    }

    /// Delete the entry called `name`. It disappears from `list` at once (renamed away)
    /// even if deleting its files takes a while. A directory without a manifest (put there by
    /// hand, or damaged) can be removed too, since it blocks importing under its name.
    pub fn remove(&self, name: &str) -> Result<()> {
        validate_name(name)?;
        if !self.root.join(name).is_dir() {
            self.get(name)?; // the "no model named" error, with the list of names
        }
        let doomed = self
            .root
            .join(format!(".remove-{name}-{}", unique_suffix()));
        fs::rename(self.root.join(name), &doomed)
            .with_context(|| format!("remove model `{name}`"))?;
        fs::remove_dir_all(&doomed).with_context(|| format!("delete {}", doomed.display()))
    }

    fn read_manifest(&self, name: &str) -> Result<ModelEntry> {
        let path = self.root.join(name).join(MANIFEST);
        let text = fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let mut entry: ModelEntry = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is corrupt: remove the model and import it again",
                path.display()
            )
        })?;
        entry.name = name.to_string();
        entry.dir = self.root.join(name);
        Ok(entry)
    }
}

fn check_gguf_magic(path: &Path) -> Result<()> {
    let mut magic = [0u8; 4];
    let mut f = fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let n = f
        .read(&mut magic)
        .with_context(|| format!("read {}", path.display()))?;
    if n < 4 || magic != GGUF_MAGIC {
        bail!(
            "{} is neither a GGUF file (bad magic {:02x?}) nor a Hugging Face directory",
            path.display(),
            &magic[..n]
        );
    }
    Ok(())
}
