//! The models pied serves: each `[[model]]` of the config loaded from the model store into
//! its own engine (one engine thread per model) when the daemon starts.
//!
//! A model that cannot load (not imported, corrupt) does not stop the daemon: it is reported
//! with its reason by `pie-ctl status`, and WASI programs keep running.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use engine::{Engine, EngineOptions, OnExhausted};
use proto::ModelStatus;

use crate::config::Config;
use crate::models;

pub struct Served {
    pub default: bool,
    pub engine: Result<Arc<Engine>, String>,
}

pub struct Llm {
    models: BTreeMap<String, Served>,
}

impl Llm {
    /// Loads every configured model. Slow for big models; called once at start.
    pub fn load(config: &Config, state_dir: &Path) -> Llm {
        let opts = engine_options(config);
        let default = config.default_model().map(str::to_owned);
        let mut models = BTreeMap::new();
        for m in &config.models {
            let engine = load_one(state_dir, &m.name, &opts);
            match &engine {
                Ok(e) => tracing::info!(
                    model = %m.name,
                    kv_pages = e.kv_pool().stats().total,
                    "model loaded"
                ),
                Err(why) => tracing::error!(model = %m.name, "model not loaded: {why}"),
            }
            models.insert(
                m.name.clone(),
                Served {
                    default: default.as_deref() == Some(m.name.as_str()),
                    engine,
                },
            );
        }
        Llm { models }
    }

    /// The models that loaded, by name.
    pub fn engines(&self) -> BTreeMap<String, Arc<Engine>> {
        self.models
            .iter()
            .filter_map(|(n, s)| Some((n.clone(), s.engine.as_ref().ok()?.clone())))
            .collect()
    }

    pub fn status(&self) -> Vec<ModelStatus> {
        self.models
            .iter()
            .map(|(name, served)| {
                let mut s = ModelStatus {
                    name: name.clone(),
                    default: served.default,
                    error: served.engine.as_ref().err().cloned(),
                    page_size: 0,
                    kv_pages_total: 0,
                    kv_pages_in_use: 0,
                    kv_pages_cached: 0,
                    batches: 0,
                    mean_batch_size: 0.0,
                    tokens_processed: 0,
                };
                if let Ok(engine) = &served.engine {
                    let kv = engine.kv_pool().stats();
                    let stats = engine.stats();
                    s.page_size = engine.kv_pool().page_size() as u64;
                    s.kv_pages_total = kv.total as u64;
                    s.kv_pages_in_use = kv.in_use as u64;
                    s.kv_pages_cached = kv.cached as u64;
                    s.batches = stats.batches;
                    s.mean_batch_size = stats.mean_batch_size;
                    s.tokens_processed = stats.tokens_processed;
                }
                s
            })
            .collect()
    }
}

fn engine_options(config: &Config) -> EngineOptions {
    let e = &config.engine;
    EngineOptions {
        threads: e.threads,
        kv_memory_bytes: (e.kv_memory_mib << 20) as usize,
        page_size: e.page_size,
        on_exhausted: match e.exhausted_wait_ms {
            0 => OnExhausted::Fail,
            ms => OnExhausted::Wait(Duration::from_millis(ms)),
        },
        max_batch_tokens: e.max_batch_tokens,
        // Validated with the config.
        device: e.device.parse().unwrap_or_default(),
        ..EngineOptions::default()
    }
}

fn load_one(state_dir: &Path, name: &str, opts: &EngineOptions) -> Result<Arc<Engine>, String> {
    let store = models::open(state_dir).map_err(|e| format!("{e:#}"))?;
    let entry = store.get(name).map_err(|e| {
        format!("{e:#} (import it with `pie-ctl model import FILE --name {name}` and restart pied)")
    })?;
    Engine::load(&entry.dir, opts)
        .map(Arc::new)
        .map_err(|e| format!("cannot load {}: {e}", entry.dir.display()))
}
