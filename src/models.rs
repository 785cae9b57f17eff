//! The model store as pied exposes it: offline `pied model ...` subcommands (used by
//! scripts/fetch-model before any daemon runs) and the admin requests behind
//! `pie-ctl model ...`. The store itself lives in the `model-store` crate.

use std::io::Write;
use std::path::Path;

use anyhow::Result;
use model_store::{ModelEntry, ModelStore};
use proto::ModelInfo;

pub fn open(state_dir: &Path) -> Result<ModelStore> {
    ModelStore::open(&state_dir.join("models"))
}

pub fn info(entry: &ModelEntry, default_model: Option<&str>) -> ModelInfo {
    ModelInfo {
        name: entry.name.clone(),
        architecture: entry.architecture.clone(),
        source: entry.source.clone(),
        dtype: entry.dtype.clone(),
        params: entry.params,
        bytes: entry.bytes,
        layers: entry.layers,
        hidden: entry.hidden,
        vocab: entry.vocab,
        created_unix: entry.created_unix,
        default: default_model == Some(entry.name.as_str()),
    }
}

/// Calls `report` with a progress update whenever the shown percentage changes, so a
/// multi-gigabyte import sends a hundred updates, not one per tensor.
pub struct Throttle {
    last: Option<(&'static str, u64)>,
}

impl Throttle {
    pub fn new() -> Throttle {
        Throttle { last: None }
    }

    pub fn pass(&mut self, stage: &'static str, done: u64, total: u64) -> bool {
        let pct = done.saturating_mul(100) / total.max(1);
        if self.last == Some((stage, pct)) {
            return false;
        }
        self.last = Some((stage, pct));
        true
    }
}

/// `pied model import PATH --name NAME` without a daemon: a progress bar on stderr.
pub fn import_offline(state_dir: &Path, path: &Path, name: &str) -> Result<ModelInfo> {
    let store = open(state_dir)?;
    let mut throttle = Throttle::new();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let entry = store.import(path, name, &mut |p| {
        if throttle.pass(p.stage, p.done, p.total) && tty {
            eprint!("\r{}", proto::progress_line(p.stage, p.done, p.total));
            let _ = std::io::stderr().flush();
        }
    })?;
    if tty {
        eprintln!();
    }
    Ok(info(&entry, None))
}
