//! `Engine`: the handle the daemon holds. It owns the scheduler thread (which owns the
//! backend), the KV page pool, the tokenizer and the chat template.

use crate::backend::Backend;
use crate::backend::cpu::{CpuBackend, CpuOptions};
use crate::chat_template::ChatTemplate;
use crate::completion::{Completion, completion};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::kv::{KvContext, KvPool, OnExhausted};
use crate::sampling::{SampleOutput, Sampler};
use crate::scheduler::{self, EngineStats, ForwardOutput, ForwardRequest, Pending, StatsSnapshot};
use crate::tokenizer::Tokenizer;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// CPU threads for the forward pass (0 = all cores).
    pub threads: usize,
    /// KV pages in the pool (0 = as many as fit in `kv_memory_bytes`).
    pub kv_pages: usize,
    pub kv_memory_bytes: usize,
    /// Tokens per KV page.
    pub page_size: usize,
    pub on_exhausted: OnExhausted,
    /// Most tokens in one batch (prefill chunks are cut to fit).
    pub max_batch_tokens: usize,
    /// How long the engine thread waits, after completing requests, for those callers to
    /// submit their next step before firing a smaller batch (0 = fire at once).
    pub batch_wait: std::time::Duration,
    /// GEMM activation precision on the CPU backend.
    pub act_precision: crate::backend::cpu::ActPrecision,
    /// Which device runs the model.
    pub device: Device,
}

/// Where the forward pass runs: `cpu`, `cuda` (= `cuda:0`), `cuda:N`, or `auto` (the first
/// GPU when one is usable, else the CPU, saying why on stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    #[default]
    Cpu,
    Cuda(usize),
    Auto,
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "auto" => Ok(Device::Auto),
            "cuda" => Ok(Device::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("unknown device `{s}`: expected cpu, cuda, cuda:N or auto")),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Auto => f.write_str("auto"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Whether this build can use CUDA at all (the `cuda` feature).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

/// Number of usable CUDA devices (0 without the `cuda` feature or without a driver).
pub fn cuda_device_count() -> usize {
    #[cfg(feature = "cuda")]
    {
        crate::backend::cuda::device_count()
    }
    #[cfg(not(feature = "cuda"))]
    {
        0
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            threads: 0,
            kv_pages: 0,
            kv_memory_bytes: 1 << 30,
            page_size: 32,
            on_exhausted: OnExhausted::Fail,
            max_batch_tokens: 512,
            batch_wait: std::time::Duration::from_micros(500),
            act_precision: crate::backend::cpu::ActPrecision::F32,
            device: Device::Cpu,
        }
    }
}

pub struct Engine {
    tx: Option<Sender<Vec<Pending>>>,
    thread: Option<JoinHandle<()>>,
    pool: Arc<KvPool>,
    tokenizer: Option<Arc<Tokenizer>>,
    template: Option<Arc<ChatTemplate>>,
    config: ModelConfig,
    stats: Arc<EngineStats>,
    backend_name: String,
}

impl Engine {
    /// Loads a Hugging Face model directory onto the CPU backend and starts the engine thread.
    pub fn load(dir: &Path, opts: &EngineOptions) -> Result<Engine> {
        let config = ModelConfig::from_dir(dir)?;
        let tokenizer = Tokenizer::from_dir(dir)?;
        let template = ChatTemplate::from_dir(dir)?;
        let device = match opts.device {
            Device::Auto if cuda_device_count() > 0 => Device::Cuda(0),
            Device::Auto => {
                eprintln!(
                    "engine: device auto: {}; using the CPU",
                    if CUDA_BUILT {
                        "no usable CUDA device (no libcuda or no GPU)"
                    } else {
                        "built without CUDA support"
                    }
                );
                Device::Cpu
            }
            d => d,
        };
        // KV bytes per page: K and V, every layer; f32 on the CPU, bf16 on a GPU.
        let elem = if device == Device::Cpu { 4 } else { 2 };
        let kv_pages = if opts.kv_pages > 0 {
            opts.kv_pages
        } else {
            let per_page = 2 * elem * config.num_layers * config.kv_dim() * opts.page_size.max(1);
            (opts.kv_memory_bytes / per_page).max(1)
        };
        let backend: Box<dyn Backend> = match device {
            Device::Cuda(n) => Self::cuda_backend(dir, n, kv_pages, opts.page_size)?,
            _ => Box::new(CpuBackend::load(
                dir,
                &CpuOptions {
                    threads: opts.threads,
                    num_pages: kv_pages,
                    page_size: opts.page_size,
                    act_precision: opts.act_precision,
                },
            )?),
        };
        Ok(Engine::with_backend(
            backend,
            Some(tokenizer),
            template,
            opts,
        ))
    }

    #[cfg(feature = "cuda")]
    fn cuda_backend(
        dir: &Path,
        ordinal: usize,
        num_pages: usize,
        page_size: usize,
    ) -> Result<Box<dyn Backend>> {
        use crate::backend::cuda::{CudaBackend, CudaOptions};
        Ok(Box::new(CudaBackend::load(
            dir,
            &CudaOptions::new(ordinal, num_pages, page_size),
        )?))
    }

    #[cfg(not(feature = "cuda"))]
    fn cuda_backend(_: &Path, _: usize, _: usize, _: usize) -> Result<Box<dyn Backend>> {
        Err(Error::Config(
            "this build has no CUDA support (engine feature `cuda`)".into(),
        ))
    }

    /// Starts an engine over any backend (the CUDA backend, or a test double).
    pub fn with_backend(
        backend: Box<dyn Backend>,
        tokenizer: Option<Tokenizer>,
        template: Option<ChatTemplate>,
        opts: &EngineOptions,
    ) -> Engine {
        let (num_pages, page_size) = backend.kv_geometry();
        let config = backend.config().clone();
        let backend_name = backend.name();
        let pool = Arc::new(KvPool::new(num_pages, page_size, opts.on_exhausted));
        let stats = Arc::new(EngineStats::default());
        let (tx, rx) = channel();
        let st = stats.clone();
        let max_tokens = opts.max_batch_tokens.max(1);
        let batch_wait = opts.batch_wait;
        let thread = std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || scheduler::run(backend, rx, max_tokens, batch_wait, st))
            .expect("spawn engine thread");
        Engine {
            tx: Some(tx),
            thread: Some(thread),
            pool,
            tokenizer: tokenizer.map(Arc::new),
            template: template.map(Arc::new),
            config,
            stats,
            backend_name,
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn backend_name(&self) -> &str {
        &self.backend_name
    }

    pub fn tokenizer(&self) -> Option<&Arc<Tokenizer>> {
        self.tokenizer.as_ref()
    }

    pub fn chat_template(&self) -> Option<&Arc<ChatTemplate>> {
        self.template.as_ref()
    }

    pub fn kv_pool(&self) -> &Arc<KvPool> {
        &self.pool
    }

    /// An empty sequence context on this engine's pool.
    pub fn new_context(&self) -> KvContext {
        KvContext::new(self.pool.clone())
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Queues a forward pass. Invalid requests fail here; the completion yields the outputs
    /// once the batch that finishes the request has run.
    pub fn submit(&self, req: ForwardRequest) -> Result<Completion<ForwardOutput>> {
        Ok(self.submit_all(vec![req])?.pop().expect("one request"))
    }

    /// Queues several forward passes at once: the scheduler sees them together, so they share
    /// a batch as far as the token budget allows. All are validated before any is queued.
    pub fn submit_all(&self, reqs: Vec<ForwardRequest>) -> Result<Vec<Completion<ForwardOutput>>> {
        for r in &reqs {
            r.validate(
                self.pool.num_pages(),
                self.pool.page_size(),
                self.config.vocab_size,
            )?;
        }
        let mut pending = Vec::with_capacity(reqs.len());
        let mut completions = Vec::with_capacity(reqs.len());
        for req in reqs {
            let (done, c) = completion();
            pending.push(Pending { req, done });
            completions.push(c);
        }
        self.tx
            .as_ref()
            .ok_or(Error::Shutdown)?
            .send(pending)
            .map_err(|_| Error::Shutdown)?;
        Ok(completions)
    }

    /// `submit` and wait.
    pub fn forward(&self, req: ForwardRequest) -> Result<ForwardOutput> {
        self.submit(req)?.wait()
    }

    /// Appends `tokens` to `ctx` and runs them; returns the outputs of `outputs` (indices into
    /// `tokens`). The context is updated only on success.
    pub fn step(
        &self,
        caller: u64,
        ctx: &mut KvContext,
        tokens: &[u32],
        outputs: Vec<(usize, Sampler)>,
    ) -> Result<Vec<SampleOutput>> {
        let plan = ctx.plan(tokens.len())?;
        let first = ctx.next_position();
        let mut req = ForwardRequest::new(caller, tokens.to_vec(), first, plan);
        for (i, s) in outputs {
            req = req.output(i, s);
        }
        let positions = req.positions.clone();
        let out = self.forward(req)?;
        ctx.commit(tokens, &positions);
        Ok(out.outputs)
    }

    /// Greedy generation of `n` tokens after `prompt` in a fresh context (stops early at none
    /// of the EOS ids: callers decide). Convenience for tests and benchmarks.
    pub fn generate_greedy(&self, caller: u64, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        let mut ctx = self.new_context();
        let mut out = Vec::with_capacity(n);
        let mut next = prompt.to_vec();
        for _ in 0..n {
            let last = next.len() - 1;
            let r = self.step(caller, &mut ctx, &next, vec![(last, Sampler::Greedy)])?;
            let SampleOutput::Token(t) = r[0] else {
                unreachable!("greedy yields a token")
            };
            out.push(t);
            next = vec![t];
        }
        Ok(out)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // Closing the channel ends the engine thread after it drains its queue.
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    /// The daemon shares one `Engine` between its async tasks and threads.
    #[test]
    fn engine_handles_are_thread_safe() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<super::Engine>();
        send_sync::<crate::KvPool>();
        send::<crate::KvContext>();
        send::<crate::Completion<crate::ForwardOutput>>();
    }
}
