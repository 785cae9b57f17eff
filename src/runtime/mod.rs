//! The wasm sandbox: one wasmtime `Engine` for the daemon, one `Store` per process.
//!
//! Programs are compiled once (ahead of time, cached on disk by the program store) and
//! pre-instantiated once per daemon run (`InstancePre`), so a launch costs an instantiation
//! from the pooling allocator and nothing more. Every store meters fuel, has a memory cap
//! and an epoch deadline callback that checks the kill switch and the wall-clock deadline.

mod limits;
mod run;
mod stdio;

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use proto::ProgramKind;
use wasmtime::component::{
    Component, ComponentExportIndex, InstancePre, Linker as ComponentLinker,
};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig,
};
use wasmtime_wasi::p2::bindings::CommandPre;

use crate::manifest::Manifest;

pub use limits::Control;
pub use run::ProcessIo;

use run::{ComponentState, ModuleState};

/// How often the epoch advances: the granularity of deadlines, kills and yields.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// A program ready to instantiate.
pub enum Loaded {
    /// A WASI command component (`wasi:cli/run`).
    Component(CommandPre<ComponentState>),
    /// An inferlet: a component exporting `pie:<name>/run` (`func(input: string) ->
    /// result<string, string>`).
    Inferlet {
        pre: InstancePre<ComponentState>,
        /// The export's full name, e.g. `pie:text-completion/run`.
        export: String,
        /// Index of its `run` function.
        run: ComponentExportIndex,
    },
    Module(wasmtime::InstancePre<ModuleState>),
}

pub struct Runtime {
    engine: Engine,
    component_linker: ComponentLinker<ComponentState>,
    module_linker: Linker<ModuleState>,
    pooling: bool,
}

/// Sizing of the runtime that cannot change without a restart.
pub struct RuntimeSizing {
    pub max_processes: u32,
    pub max_memory_bytes: u64,
    pub pooling: bool,
}

impl Runtime {
    pub fn new(sizing: &RuntimeSizing) -> Result<Arc<Runtime>> {
        let engine = match sizing.pooling {
            true => match Engine::new(&engine_config(Some(sizing))) {
                Ok(engine) => Some(engine),
                Err(e) => {
                    tracing::warn!(
                        "pooling allocator unavailable ({e:#}); falling back to on-demand allocation"
                    );
                    None
                }
            },
            false => None,
        };
        let pooling = engine.is_some();
        let engine = match engine {
            Some(engine) => engine,
            None => Engine::new(&engine_config(None)).map_err(anyhow::Error::from)?,
        };

        let mut component_linker = ComponentLinker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker)
            .map_err(anyhow::Error::from)?;
        crate::inferlet::add_to_linker(&mut component_linker, ComponentState::pie_view)
            .map_err(anyhow::Error::from)?;
        // wasi:http/outgoing-handler + types; every request goes through crate::http.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component_linker)
            .map_err(anyhow::Error::from)?;
        crate::store::host::add_to_linker(&mut component_linker, ComponentState::pie_view)
            .map_err(anyhow::Error::from)?;
        let mut module_linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut module_linker, |s: &mut ModuleState| {
            &mut s.wasi
        })
        .map_err(anyhow::Error::from)?;

        // The ticker holds only a weak handle: it ends with the engine.
        let weak = engine.weak();
        thread::Builder::new()
            .name("pied-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    thread::sleep(EPOCH_TICK);
                }
            })
            .context("cannot start the epoch thread")?;

        Ok(Arc::new(Runtime {
            engine,
            component_linker,
            module_linker,
            pooling,
        }))
    }

    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// Tells a component from a core module by its header.
    pub fn detect_kind(wasm: &[u8]) -> Result<ProgramKind> {
        if wasm.len() < 8 || &wasm[..4] != b"\0asm" {
            bail!("not a WebAssembly binary (missing the \\0asm header)");
        }
        match wasm[4..8] {
            [1, 0, 0, 0] => Ok(ProgramKind::Module),
            [0x0d, 0, 1, 0] => Ok(ProgramKind::Component),
            _ => bail!("unsupported WebAssembly binary version {:?}", &wasm[4..8]),
        }
    }

    /// Compiles a program ahead of time; the result is what `load` takes.
    pub fn precompile(&self, kind: ProgramKind, wasm: &[u8]) -> Result<Vec<u8>> {
        let bytes = match kind {
            ProgramKind::Component => self.engine.precompile_component(wasm),
            ProgramKind::Module => self.engine.precompile_module(wasm),
        };
        bytes.map_err(|e| anyhow::Error::from(e).context("compilation failed"))
    }

    /// Loads a compiled artifact and links it against WASI. Fails (and the caller then
    /// recompiles) when the artifact came from another wasmtime build or configuration, and
    /// when a component imports what its manifest does not declare.
    pub fn load(
        &self,
        kind: ProgramKind,
        compiled: &std::path::Path,
        manifest: Option<&Manifest>,
    ) -> Result<Loaded> {
        // SAFETY: the file is an artifact this daemon wrote itself, in its own state dir
        // (not user-writable), from `precompile`; wasmtime checks its engine compatibility.
        let loaded = match kind {
            ProgramKind::Component => {
                let component = unsafe { Component::deserialize_file(&self.engine, compiled) }
                    .map_err(anyhow::Error::from)?;
                if let Some(manifest) = manifest {
                    for (import, _) in component.component_type().imports(&self.engine) {
                        manifest.check_import(import).map_err(Undeclared)?;
                    }
                }
                let inferlet = inferlet_export(&self.engine, &component);
                let pre = self
                    .component_linker
                    .instantiate_pre(&component)
                    .map_err(|e| anyhow::Error::from(e).context("cannot link the component"))?;
                match inferlet {
                    Some((export, run)) => Loaded::Inferlet { pre, export, run },
                    None => Loaded::Component(CommandPre::new(pre).map_err(|e| {
                        anyhow::Error::from(e).context(
                            "the component exports neither wasi:cli/run nor an inferlet's pie:<name>/run",
                        )
                    })?),
                }
            }
            ProgramKind::Module => {
                let module = unsafe { Module::deserialize_file(&self.engine, compiled) }
                    .map_err(anyhow::Error::from)?;
                if module.get_export("_start").is_none() {
                    bail!("the module does not export `_start` (is it a wasm32-wasip1 command?)");
                }
                let pre = self
                    .module_linker
                    .instantiate_pre(&module)
                    .map_err(|e| anyhow::Error::from(e).context("cannot link the module"))?;
                Loaded::Module(pre)
            }
        };
        Ok(loaded)
    }
}

/// A component imports what its manifest does not declare: recompiling will not help.
#[derive(Debug)]
pub struct Undeclared(pub String);

impl std::fmt::Display for Undeclared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot link the component: {}", self.0)
    }
}

impl std::error::Error for Undeclared {}

/// The inferlet entry point of a component: an exported instance named `pie:<name>/run`
/// (optionally versioned) holding a function `run`.
fn inferlet_export(
    engine: &Engine,
    component: &Component,
) -> Option<(String, ComponentExportIndex)> {
    use wasmtime::component::types::ComponentItem;
    let ty = component.component_type();
    for (name, item) in ty.exports(engine) {
        let base = name.split('@').next().unwrap_or(name);
        if !(base.starts_with("pie:") && base.ends_with("/run")) {
            continue;
        }
        if let ComponentItem::ComponentInstance(inst) = item.ty
            && inst
                .exports(engine)
                .any(|(n, i)| n == "run" && matches!(i.ty, ComponentItem::ComponentFunc(_)))
        {
            let (_, outer) = component.get_export(None, name)?;
            let (_, run) = component.get_export(Some(&outer), "run")?;
            return Some((name.to_string(), run));
        }
    }
    None
}

fn engine_config(pooling: Option<&RuntimeSizing>) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.consume_fuel(true);
    config.epoch_interruption(true);
    config.async_stack_size(1 << 20);
    config.max_wasm_stack(512 << 10);
    if let Some(sizing) = pooling {
        let n = sizing.max_processes;
        let mut pool = PoolingAllocationConfig::default();
        // A Rust wasip2 command is a handful of core instances (main module, adapter,
        // shims) with one or two memories; size the pool with headroom.
        pool.total_component_instances(n + 8)
            .total_core_instances((n + 8) * 8)
            .total_memories((n + 8) * 2)
            .total_tables((n + 8) * 8)
            .total_stacks(n + 8)
            .max_memory_size(sizing.max_memory_bytes as usize);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}
