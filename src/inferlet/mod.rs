//! The inferlet API: the host side of the `pie:core`, `pie:instruct`, `pie:mcp` and `pie:zo`
//! interfaces (the WIT of the published `inferlet` crate 0.3.0, kept in `wit/`), one file per
//! WIT interface.
//!
//! # How a host impl gets at the process' state
//! `bindgen!` below generates one `Host…` trait per interface and resource. Every one of them
//! is implemented for [`PieView`], a short-lived view the linker builds for each host call
//! from the process' store data (`runtime::run::ComponentState::pie_view`):
//! - `view.table`: the process' `ResourceTable` (the same one WASI uses, so a `pollable`
//!   made with `wasmtime_wasi::p2::subscribe` works with `wasi:io/poll`);
//! - `view.ctx`: the process' [`InferletCtx`]:
//!   - `ctx.process`: [`ProcessMeta`] — `id` (process id), `tenant` (the owner's user name,
//!     used to scope snapshots, messaging topics, …), `session` (its session channel);
//!   - `ctx.log`: the process' `EventLog` (append `EventKind::Stdout(bytes)` to print);
//!   - `ctx.shared`: the daemon-wide [`Shared`] (`Arc`): `models` (name → `Arc<engine::Engine>`),
//!     `default_model`, `snapshots` (tenant-scoped named KV snapshots), `messaging`
//!     (`messaging::Hub`), `mcp` (the MCP clients of the config's `[[mcp]]` servers);
//!   - `ctx.session`: `session::SessionState`, per-process session plumbing (session.rs).
//!
//! Host functions are synchronous (`trappable`: `Err` traps the guest, used only for host
//! bugs such as a stale resource handle); anything that waits is a resource with a
//! `pollable` (see `types::FutureString` and `inference::FutureOutput`), which the guest
//! waits on through `wasi:io/poll`, so the wasm task yields to tokio while it waits. The
//! exception is `pie:mcp/client`, whose WIT functions block the guest while pied talks to an
//! MCP server: they are `async` host functions, so the wasm task yields there too.

pub mod adapter;
pub mod context;
pub mod inference;
pub mod input;
pub mod instruct;
pub mod mcp;
pub mod messaging;
pub mod model;
pub mod runtime;
pub mod scheduling;
pub mod session;
pub mod types;
pub mod zo;

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, ResourceTable};

use crate::events::EventLog;

wasmtime::component::bindgen!({
    path: "wit",
    world: "pie:inferlet/pied-host",
    // pie:mcp waits on MCP servers: its functions are async so a wasm task awaiting one
    // yields its tokio worker (other inferlets keep running).
    imports: { "pie:mcp/client": async | trappable, default: trappable },
    require_store_data_send: true,
    with: {
        "wasi:io/poll": wasmtime_wasi::p2::bindings::io::poll,
        "pie:core/types.future-string": types::FutureString,
        "pie:core/types.future-blob": types::FutureBlob,
        "pie:core/model.model": model::Model,
        "pie:core/model.tokenizer": model::Tokenizer,
        "pie:core/context.context": context::Context,
        "pie:core/adapter.adapter": adapter::Adapter,
        "pie:core/inference.forward-pass": inference::ForwardPass,
        "pie:core/inference.future-output": inference::FutureOutput,
        "pie:core/inference.grammar": inference::Grammar,
        "pie:core/inference.matcher": inference::Matcher,
        "pie:core/messaging.subscription": messaging::Subscription,
        "pie:mcp/client.session": mcp::Session,
        "pie:instruct/chat.decoder": instruct::chat::Decoder,
        "pie:instruct/reasoning.decoder": instruct::reasoning::Decoder,
        "pie:instruct/tool-use.decoder": instruct::tool_use::Decoder,
    },
});

/// Who a process is (what host impls scope their state by).
#[derive(Debug, Clone)]
pub struct ProcessMeta {
    pub id: u64,
    pub tenant: String,
    /// The process' session channel (shared with the admin server, which feeds and drains it).
    pub session: Arc<crate::bus::Session>,
    /// What the launch was granted (HTTP, MCP servers, mounts, KV store).
    pub grants: Arc<crate::grants::ProcessGrants>,
}

/// Daemon-wide state shared by every inferlet.
pub struct Shared {
    /// Loaded models by name (models that failed to load are absent).
    pub models: BTreeMap<String, Arc<engine::Engine>>,
    pub default_model: Option<String>,
    pub snapshots: context::Snapshots,
    pub messaging: messaging::Hub,
    /// The MCP clients of the config's `[[mcp]]` servers (`crate::mcp`).
    pub mcp: Arc<crate::mcp::Mcp>,
    /// The KV store and journals (`pied:store`), set once when the daemon opens it.
    pub store: std::sync::OnceLock<Arc<crate::store::Store>>,
}

impl Shared {
    pub fn new(
        models: BTreeMap<String, Arc<engine::Engine>>,
        default_model: Option<String>,
        mcp: Arc<crate::mcp::Mcp>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            models,
            default_model,
            snapshots: context::Snapshots::default(),
            messaging: messaging::Hub::default(),
            mcp,
            store: std::sync::OnceLock::new(),
        })
    }
}

/// Per-process host state, kept in the process' store.
pub struct InferletCtx {
    pub process: ProcessMeta,
    pub log: Arc<EventLog>,
    pub shared: Arc<Shared>,
    pub session: session::SessionState,
    /// Per-process counters and settings of the scheduling interface.
    pub sched: scheduling::Account,
}

impl InferletCtx {
    pub fn new(process: ProcessMeta, log: Arc<EventLog>, shared: Arc<Shared>) -> InferletCtx {
        let session = session::SessionState::new(&process, &log);
        InferletCtx {
            process,
            log,
            shared,
            session,
            sched: scheduling::Account::default(),
        }
    }
}

/// What a host call sees: the process' state and its resource table.
pub struct PieView<'a> {
    pub ctx: &'a mut InferletCtx,
    pub table: &'a mut ResourceTable,
}

/// `HasData` marker for the linker.
pub struct Pie;

impl HasData for Pie {
    type Data<'a> = PieView<'a>;
}

/// Adds every pie interface to a component linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> PieView<'_>,
) -> wasmtime::Result<()> {
    // Interface by interface: the world's own add_to_linker would also add wasi:io/poll,
    // which wasmtime-wasi already provides.
    use pie::{core, instruct, mcp as pie_mcp, zo as pie_zo};
    core::types::add_to_linker::<T, Pie>(linker, get)?;
    core::model::add_to_linker::<T, Pie>(linker, get)?;
    core::runtime::add_to_linker::<T, Pie>(linker, get)?;
    core::adapter::add_to_linker::<T, Pie>(linker, get)?;
    core::context::add_to_linker::<T, Pie>(linker, get)?;
    core::inference::add_to_linker::<T, Pie>(linker, get)?;
    core::scheduling::add_to_linker::<T, Pie>(linker, get)?;
    core::session::add_to_linker::<T, Pie>(linker, get)?;
    core::messaging::add_to_linker::<T, Pie>(linker, get)?;
    instruct::chat::add_to_linker::<T, Pie>(linker, get)?;
    instruct::reasoning::add_to_linker::<T, Pie>(linker, get)?;
    instruct::tool_use::add_to_linker::<T, Pie>(linker, get)?;
    pie_mcp::types::add_to_linker::<T, Pie>(linker, get)?;
    pie_mcp::client::add_to_linker::<T, Pie>(linker, get)?;
    pie_zo::zo::add_to_linker::<T, Pie>(linker, get)?;
    Ok(())
}

/// A handle the guest passed that is not (or no longer) in the table: a host-side bug or a
/// guest misusing a dropped handle; traps the guest.
pub(crate) fn stale(what: &str) -> wasmtime::Error {
    wasmtime::Error::msg(format!("invalid {what} handle"))
}
