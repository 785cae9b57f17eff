//! `pie:core/context`: KV contexts, their page accounting, forks and named snapshots.
//!
//! A context is an `engine::KvContext` (the pages holding every token forwarded into it)
//! plus the accounting the SDK relies on:
//! - *committed* pages: the first `committed` pages, full, made part of the context's
//!   immutable chain by `commit-working-pages`;
//! - *working* pages: the pages after them that hold tokens not yet committed, plus pages
//!   *reserved* ahead by `reserve-working-pages` (really taken from the engine's KV pool, so
//!   a reservation that succeeds cannot fail later for lack of pages);
//! - `working-page-token-count`: tokens past the committed pages.
//!
//! A forward pass writes its tokens after the context's last token, first into reserved
//! pages. `fork` shares every page copy-on-write (the engine copies a shared partly filled
//! page before writing to it) and reserves as many empty pages as the parent holds.
//! `save`/`snapshot` keep such a fork under a name, `open` forks it again, `take` moves it
//! out; names are scoped per tenant and per model, so other users never see them.
//!
//! Market operations (pied runs no page auction, see scheduling.rs):
//! - `suspend` releases every page (reserved ones included) but keeps the tokens and their
//!   positions; the next forward pass on the context recomputes them first (with plain
//!   causal attention) — restoration happens on use, never behind the inferlet's back.
//! - `bid` records the value (negative values are ignored); the engine schedules callers
//!   round-robin and never evicts pages, so a bid changes nothing yet.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use engine::{KvContext, PageId};
use wasmtime::component::Resource;

use super::model::Model;
use super::pie::core::context::{Host, HostContext};
use super::{PieView, stale};

/// Most snapshots one tenant may keep per model.
pub const MAX_SNAPSHOTS_PER_TENANT: usize = 1024;

/// The guest's handle: the model and the shared state (a forward pass in flight holds the
/// state too, to record its tokens when it completes).
pub struct Context {
    pub model: Model,
    pub state: Arc<Mutex<CtxState>>,
}

pub struct CtxState {
    /// `None` once destroyed.
    pub kv: Option<KvContext>,
    /// Number of committed pages.
    pub committed: usize,
    /// Pages reserved ahead and holding no tokens yet.
    pub reserved: Vec<PageId>,
    /// Tokens (and positions) of the context that follow `kv`'s but have no K/V: all of them
    /// after `suspend`, the last one while it is fed again (a pass with no inputs samples
    /// after it). The next forward pass computes them first.
    pub pending: Vec<u32>,
    pub pending_positions: Vec<u32>,
    /// Positions of every token in `kv` (the engine keeps them privately).
    pub positions: Vec<u32>,
    /// A forward pass on this context has not completed yet.
    pub inflight: bool,
    pub bid: f64,
    pool: Arc<engine::KvPool>,
}

impl CtxState {
    fn new(kv: KvContext, pool: Arc<engine::KvPool>) -> CtxState {
        CtxState {
            kv: Some(kv),
            committed: 0,
            reserved: Vec::new(),
            pending: Vec::new(),
            pending_positions: Vec::new(),
            positions: Vec::new(),
            inflight: false,
            bid: 0.0,
            pool,
        }
    }

    pub fn page_size(&self) -> usize {
        self.pool.page_size()
    }

    pub fn kv(&self) -> Result<&KvContext, String> {
        self.kv
            .as_ref()
            .ok_or_else(|| "the context was destroyed".to_string())
    }

    /// Tokens in the context (pending ones included).
    pub fn len(&self) -> usize {
        self.kv.as_ref().map_or(0, |kv| kv.len()) + self.pending.len()
    }

    pub fn working_tokens(&self) -> usize {
        self.len().saturating_sub(self.committed * self.page_size())
    }

    /// Pages holding tokens past the committed ones, plus reserved pages.
    pub fn working_pages(&self) -> usize {
        // Pending tokens count as held: the next pass gets their pages back.
        let held = self
            .kv
            .as_ref()
            .map_or(0, |kv| kv.pages().len())
            .max(self.len().div_ceil(self.page_size()));
        held.saturating_sub(self.committed) + self.reserved.len()
    }

    fn check_idle(&self) -> Result<(), String> {
        if self.inflight {
            return Err(
                "a forward pass on this context is still running; wait for its output first".into(),
            );
        }
        self.kv().map(|_| ())
    }

    /// A copy sharing every page (copy-on-write), with as many fresh reserved pages.
    fn fork(&self) -> Result<CtxState, String> {
        self.check_idle()?;
        let reserved = self
            .pool
            .alloc(self.reserved.len())
            .map_err(|e| format!("cannot reserve the fork's working pages: {e}"))?;
        Ok(CtxState {
            kv: Some(self.kv()?.fork()),
            committed: self.committed,
            reserved,
            pending: self.pending.clone(),
            pending_positions: self.pending_positions.clone(),
            positions: self.positions.clone(),
            inflight: false,
            bid: self.bid,
            pool: self.pool.clone(),
        })
    }

    /// Releases up to `n` reserved pages (those the next pass's tokens will need), so that
    /// the engine's `plan` can take them.
    pub fn use_reserved(&mut self, new_tokens: usize) {
        let Some(kv) = &self.kv else { return };
        let need = (kv.len() + new_tokens)
            .div_ceil(self.page_size())
            .saturating_sub(kv.pages().len());
        let n = need.min(self.reserved.len());
        if n > 0 {
            let at = self.reserved.len() - n;
            let pages: Vec<PageId> = self.reserved.drain(at..).collect();
            self.pool.release(&pages);
        }
    }

    /// Releases everything (destroy).
    fn destroy(&mut self) {
        self.kv = None;
        self.pending.clear();
        self.pending_positions.clear();
        let r = std::mem::take(&mut self.reserved);
        self.pool.release(&r);
    }
}

impl Drop for CtxState {
    fn drop(&mut self) {
        let r = std::mem::take(&mut self.reserved);
        self.pool.release(&r);
    }
}

/// A saved context: the state and the model it belongs to.
struct Snapshot {
    state: CtxState,
}

/// Named snapshots, by (tenant, model, name).
#[derive(Default)]
pub struct Snapshots {
    map: Mutex<HashMap<(String, String, String), Snapshot>>,
    counter: AtomicU64,
}

impl Snapshots {
    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String, String), Snapshot>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs a KV pool allocation, which blocks when the engine is configured to wait for free
/// pages (`[engine] exhausted_wait_ms`): on the daemon's multi-thread runtime the worker's
/// other tasks move elsewhere meanwhile.
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

fn lock(state: &Mutex<CtxState>) -> MutexGuard<'_, CtxState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 256 {
        return Err("a snapshot name must be 1 to 256 bytes long".into());
    }
    Ok(())
}

impl PieView<'_> {
    pub fn context_of(
        &self,
        c: &Resource<Context>,
    ) -> wasmtime::Result<(Model, Arc<Mutex<CtxState>>)> {
        let c = self.table.get(c).map_err(|_| stale("context"))?;
        Ok((c.model.clone(), c.state.clone()))
    }

    fn push_context(
        &mut self,
        model: Model,
        state: CtxState,
    ) -> wasmtime::Result<Resource<Context>> {
        Ok(self.table.push(Context {
            model,
            state: Arc::new(Mutex::new(state)),
        })?)
    }

    fn snapshot_key(&self, model: &Model, name: &str) -> (String, String, String) {
        (
            self.ctx.process.tenant.clone(),
            model.name.clone(),
            name.to_string(),
        )
    }

    fn save_as(
        &mut self,
        this: &Resource<Context>,
        name: String,
    ) -> wasmtime::Result<Result<(), String>> {
        if let Err(e) = check_name(&name) {
            return Ok(Err(e));
        }
        let (model, state) = self.context_of(this)?;
        let key = self.snapshot_key(&model, &name);
        let snaps = &self.ctx.shared.snapshots;
        let mut map = snaps.lock();
        if map.contains_key(&key) {
            return Ok(Err(format!(
                "a snapshot named {name:?} already exists (delete it first)"
            )));
        }
        if map.keys().filter(|k| k.0 == key.0).count() >= MAX_SNAPSHOTS_PER_TENANT {
            return Ok(Err(format!(
                "too many snapshots ({MAX_SNAPSHOTS_PER_TENANT}); delete some first"
            )));
        }
        let copy = match lock(&state).fork() {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        map.insert(key, Snapshot { state: copy });
        Ok(Ok(()))
    }
}

impl Host for PieView<'_> {}

impl HostContext for PieView<'_> {
    fn create(
        &mut self,
        model: Resource<Model>,
    ) -> wasmtime::Result<Result<Resource<Context>, String>> {
        let model = self.model_of(&model)?;
        let pool = model.engine.kv_pool().clone();
        let state = CtxState::new(model.engine.new_context(), pool);
        Ok(Ok(self.push_context(model, state)?))
    }

    fn open(
        &mut self,
        model: Resource<Model>,
        name: String,
    ) -> wasmtime::Result<Result<Resource<Context>, String>> {
        let model = self.model_of(&model)?;
        let key = self.snapshot_key(&model, &name);
        let copy = {
            let map = self.ctx.shared.snapshots.lock();
            match map.get(&key) {
                Some(s) => s.state.fork(),
                None => Err(format!(
                    "no snapshot named {name:?} (for model {})",
                    model.name
                )),
            }
        };
        Ok(match copy {
            Ok(state) => Ok(self.push_context(model, state)?),
            Err(e) => Err(e),
        })
    }

    fn take(
        &mut self,
        model: Resource<Model>,
        name: String,
    ) -> wasmtime::Result<Result<Resource<Context>, String>> {
        let model = self.model_of(&model)?;
        let key = self.snapshot_key(&model, &name);
        let snap = self.ctx.shared.snapshots.lock().remove(&key);
        Ok(match snap {
            Some(s) => Ok(self.push_context(model, s.state)?),
            None => Err(format!(
                "no snapshot named {name:?} (for model {})",
                model.name
            )),
        })
    }

    fn delete(
        &mut self,
        model: Resource<Model>,
        name: String,
    ) -> wasmtime::Result<Result<(), String>> {
        let model = self.model_of(&model)?;
        let key = self.snapshot_key(&model, &name);
        let snap = self.ctx.shared.snapshots.lock().remove(&key);
        Ok(match snap {
            Some(_) => Ok(()),
            None => Err(format!(
                "no snapshot named {name:?} (for model {})",
                model.name
            )),
        })
    }

    fn fork(
        &mut self,
        this: Resource<Context>,
    ) -> wasmtime::Result<Result<Resource<Context>, String>> {
        let (model, state) = self.context_of(&this)?;
        let copy = lock(&state).fork();
        Ok(match copy {
            Ok(s) => Ok(self.push_context(model, s)?),
            Err(e) => Err(e),
        })
    }

    fn save(
        &mut self,
        this: Resource<Context>,
        name: String,
    ) -> wasmtime::Result<Result<(), String>> {
        self.save_as(&this, name)
    }

    fn snapshot(&mut self, this: Resource<Context>) -> wasmtime::Result<Result<String, String>> {
        let n = self
            .ctx
            .shared
            .snapshots
            .counter
            .fetch_add(1, Ordering::Relaxed);
        let name = format!("snapshot-{}-{n}", self.ctx.process.id);
        Ok(self.save_as(&this, name.clone())?.map(|()| name))
    }

    fn destroy(&mut self, this: Resource<Context>) -> wasmtime::Result<()> {
        let (_, state) = self.context_of(&this)?;
        lock(&state).destroy();
        Ok(())
    }

    fn tokens_per_page(&mut self, this: Resource<Context>) -> wasmtime::Result<u32> {
        let (model, _) = self.context_of(&this)?;
        Ok(model.engine.kv_pool().page_size() as u32)
    }

    fn model(&mut self, this: Resource<Context>) -> wasmtime::Result<Resource<Model>> {
        let (model, _) = self.context_of(&this)?;
        Ok(self.table.push(model)?)
    }

    fn committed_page_count(&mut self, this: Resource<Context>) -> wasmtime::Result<u32> {
        let (_, state) = self.context_of(&this)?;
        Ok(lock(&state).committed as u32)
    }

    fn working_page_count(&mut self, this: Resource<Context>) -> wasmtime::Result<u32> {
        let (_, state) = self.context_of(&this)?;
        Ok(lock(&state).working_pages() as u32)
    }

    fn commit_working_pages(
        &mut self,
        this: Resource<Context>,
        num_pages: u32,
    ) -> wasmtime::Result<Result<(), String>> {
        let (_, state) = self.context_of(&this)?;
        let mut s = lock(&state);
        if let Err(e) = s.check_idle() {
            return Ok(Err(e));
        }
        let full = s.len() / s.page_size();
        let n = num_pages as usize;
        if s.committed + n > full {
            return Ok(Err(format!(
                "cannot commit {n} working pages: only {} are full ({} tokens past the {} committed pages, {} per page)",
                full - s.committed,
                s.working_tokens(),
                s.committed,
                s.page_size()
            )));
        }
        s.committed += n;
        Ok(Ok(()))
    }

    fn reserve_working_pages(
        &mut self,
        this: Resource<Context>,
        num_pages: u32,
    ) -> wasmtime::Result<Result<(), String>> {
        let (_, state) = self.context_of(&this)?;
        let mut s = lock(&state);
        if let Err(e) = s.kv() {
            return Ok(Err(e));
        }
        let pool = s.pool.clone();
        match blocking(|| pool.alloc(num_pages as usize)) {
            Ok(pages) => {
                s.reserved.extend(pages);
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(format!("cannot reserve {num_pages} KV pages: {e}"))),
        }
    }

    /// Releases reserved (empty) pages first, then the last working pages with their tokens;
    /// committed pages are never released this way.
    fn release_working_pages(
        &mut self,
        this: Resource<Context>,
        num_pages: u32,
    ) -> wasmtime::Result<()> {
        let (_, state) = self.context_of(&this)?;
        let mut s = lock(&state);
        if s.inflight {
            return Ok(());
        }
        let mut n = num_pages as usize;
        let k = n.min(s.reserved.len());
        let at = s.reserved.len() - k;
        let pages: Vec<PageId> = s.reserved.drain(at..).collect();
        s.pool.release(&pages);
        n -= k;
        if n > 0 && s.pending.is_empty() {
            let ps = s.page_size();
            let committed = s.committed;
            if let Some(kv) = s.kv.as_mut() {
                let keep_pages = kv.pages().len().saturating_sub(n).max(committed);
                let keep = kv.len().min(keep_pages * ps);
                kv.truncate(keep);
                s.positions.truncate(keep);
            }
        }
        Ok(())
    }

    fn working_page_token_count(&mut self, this: Resource<Context>) -> wasmtime::Result<u32> {
        let (_, state) = self.context_of(&this)?;
        Ok(lock(&state).working_tokens() as u32)
    }

    /// Removes up to `num-tokens` of the working tokens (committed ones are never removed);
    /// pages left empty go back to the pool.
    fn truncate_working_page_tokens(
        &mut self,
        this: Resource<Context>,
        num_tokens: u32,
    ) -> wasmtime::Result<()> {
        let (_, state) = self.context_of(&this)?;
        let mut s = lock(&state);
        if s.inflight {
            return Ok(());
        }
        let n = (num_tokens as usize).min(s.working_tokens());
        let from_pending = n.min(s.pending.len());
        let keep = s.pending.len() - from_pending;
        s.pending.truncate(keep);
        s.pending_positions.truncate(keep);
        let keep = s.kv.as_ref().map_or(0, |kv| kv.len()) - (n - from_pending);
        if let Some(kv) = s.kv.as_mut() {
            kv.truncate(keep);
        }
        s.positions.truncate(keep);
        Ok(())
    }

    fn suspend(&mut self, this: Resource<Context>) -> wasmtime::Result<Result<(), String>> {
        let (model, state) = self.context_of(&this)?;
        let mut s = lock(&state);
        if let Err(e) = s.check_idle() {
            return Ok(Err(e));
        }
        let mut tokens = match s.kv() {
            Ok(kv) => kv.tokens().to_vec(),
            Err(e) => return Ok(Err(e)),
        };
        let mut positions = std::mem::take(&mut s.positions);
        tokens.append(&mut s.pending);
        positions.append(&mut s.pending_positions);
        let r = std::mem::take(&mut s.reserved);
        s.pool.release(&r);
        s.kv = Some(model.engine.new_context());
        s.pending = tokens;
        s.pending_positions = positions;
        Ok(Ok(()))
    }

    fn bid(&mut self, this: Resource<Context>, value: f64) -> wasmtime::Result<()> {
        let (_, state) = self.context_of(&this)?;
        if value.is_finite() && value >= 0.0 {
            lock(&state).bid = value;
        }
        Ok(())
    }

    fn drop(&mut self, this: Resource<Context>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
