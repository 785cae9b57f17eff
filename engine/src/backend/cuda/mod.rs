//! The CUDA backend: our own kernels (`kernels.cu`, compiled at start by NVRTC, PTX cached on
//! disk) launched through cudarc, dense products through cuBLAS (bf16 weights, f32
//! accumulation), KV pages in device memory in the CPU backend's layout (bf16), and sampling
//! on the device so that only the sampled tokens cross PCIe.
//!
//! cudarc is built with `dynamic-loading`: nothing CUDA is linked, and [`device_count`]
//! checks for the driver library before any call, so the daemon runs where CUDA is absent.
//!
//! Precision: by default ([`CudaPrecision::Split`]) every GEMM input row is stored as two bf16
//! rows (value and rounding error) and the consumer adds the two partial products, so the
//! activations keep ~16 mantissa bits for the price of twice the (cheap) activation rows; the
//! weights are read once either way. [`CudaPrecision::Bf16`] rounds activations to bf16.

pub mod check;
pub mod compile;
mod sample;

use crate::backend::{Backend, BatchInput, OutputSlot, validate_batch};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::kv::PageId;
use crate::model::llama::LlamaLoader;
use crate::sampling::SampleOutput;
use crate::weights::SafeTensors;
use cudarc::cublas::{CudaBlas, result as blas, sys as bsys};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DeviceRepr, LaunchConfig,
    PushKernelArg, ValidAsZeroBits,
};
use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How GEMM inputs are rounded (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CudaPrecision {
    Split,
    Bf16,
}

#[derive(Debug, Clone)]
pub struct CudaOptions {
    pub ordinal: usize,
    pub num_pages: usize,
    pub page_size: usize,
    pub precision: CudaPrecision,
    /// Where compiled PTX is cached (`None`: compile at every start).
    pub cache_dir: Option<PathBuf>,
}

impl CudaOptions {
    pub fn new(ordinal: usize, num_pages: usize, page_size: usize) -> Self {
        CudaOptions {
            ordinal,
            num_pages,
            page_size,
            precision: CudaPrecision::Split,
            cache_dir: compile::default_cache_dir(),
        }
    }
}

/// Number of CUDA devices; 0 when the driver library is missing or fails to initialise.
/// Never panics (cudarc panics on a call into a library it could not load).
pub fn device_count() -> usize {
    // SAFETY: only tries to dlopen libcuda by its candidate names.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return 0;
    }
    if cudarc::driver::result::init().is_err() {
        return 0;
    }
    CudaContext::device_count().map_or(0, |n| n.max(0) as usize)
}

fn cuda_err(what: &str, e: impl std::fmt::Debug) -> Error {
    Error::Config(format!("CUDA: {what}: {e:?}"))
}

/// A device buffer that grows on demand (activations, per-batch metadata).
struct Scratch<T> {
    buf: Option<CudaSlice<T>>,
}

impl<T: DeviceRepr + ValidAsZeroBits> Scratch<T> {
    fn new() -> Self {
        Scratch { buf: None }
    }

    /// Device address of a buffer of at least `n` elements.
    fn get(&mut self, stream: &Arc<CudaStream>, n: usize) -> Result<u64> {
        let n = n.max(1);
        if self.buf.as_ref().is_none_or(|b| b.len() < n) {
            self.buf = None; // free first: peak memory stays one buffer
            let cap = n + n / 4;
            self.buf = Some(
                stream
                    .alloc_zeros::<T>(cap)
                    .map_err(|e| cuda_err("allocating scratch", e))?,
            );
        }
        Ok(dptr(self.buf.as_ref().expect("allocated"), stream))
    }
}

fn dptr<T>(s: &CudaSlice<T>, stream: &Arc<CudaStream>) -> u64 {
    s.device_ptr(stream).0
}

struct Kernels {
    embed: CudaFunction,
    residual_norm: CudaFunction,
    qkv_rope_store: CudaFunction,
    attention: CudaFunction,
    silu_mul: CudaFunction,
    combine_rows: CudaFunction,
    copy_page: CudaFunction,
    fill_random: CudaFunction,
    sample_slots: CudaFunction,
    gemv_bf16: CudaFunction,
    attention_combine: CudaFunction,
}

struct Layer {
    input_norm: CudaSlice<f32>,
    wqkv: CudaSlice<u16>,
    bqkv: Option<CudaSlice<f32>>,
    wo: CudaSlice<u16>,
    post_norm: CudaSlice<f32>,
    wgu: CudaSlice<u16>,
    wdown: CudaSlice<u16>,
}

/// Activation and metadata buffers, reused across steps.
struct Bufs {
    meta: Scratch<i32>,
    mask: Scratch<u32>,
    x: Scratch<f32>,
    hb: Scratch<u16>,
    y: Scratch<f32>,
    q: Scratch<f32>,
    hout: Scratch<u16>,
    lg: Scratch<f32>,
    logits: Scratch<f32>,
    apart: Scratch<f32>,
    sparams: Scratch<i32>,
    sres: Scratch<f32>,
}

pub struct CudaBackend {
    cfg: ModelConfig,
    name: String,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    k: Kernels,
    split: usize,
    embedding: CudaSlice<u16>,
    lm_head: Option<CudaSlice<u16>>,
    final_norm: CudaSlice<f32>,
    layers: Vec<Layer>,
    inv_freq: CudaSlice<f32>,
    kc: CudaSlice<u16>,
    vc: CudaSlice<u16>,
    num_pages: usize,
    page_size: usize,
    bufs: Bufs,
    /// Captured step graphs by shape and buffer addresses (see `run`).
    graphs: std::collections::HashMap<GraphKey, StepGraph>,
    last_key: Option<GraphKey>,
    /// `PIE_CUDA_GRAPHS=0` turns capture off (debugging, or comparing timings).
    use_graphs: bool,
    /// `PIE_CUDA_GEMV=1` sends decode-sized products (<= 8 rows) to our GEMV kernel instead of
    /// cuBLAS (measured slower on an H200: kept for comparison, see engine/README.md).
    use_gemv: bool,
    prof: Profile,
    /// cuBLAS workspace, set explicitly so that captured GEMMs never allocate.
    _blas_ws: CudaSlice<u8>,
    // Kept last: dropped after everything allocated in it.
    _ctx: Arc<CudaContext>,
}

/// Offsets (in i32 elements) of the per-batch metadata packed into one upload.
struct Meta {
    tokens: usize,
    positions: usize,
    row_page: usize,
    row_slot: usize,
    row_pt: usize,
    row_ctx: usize,
    row_first: usize,
    row_mask: usize,
    out_rows: usize,
    pages: usize,
}

/// Device addresses of one step's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Ptrs {
    meta: u64,
    mask: u64,
    x: u64,
    hb: u64,
    y: u64,
    q: u64,
    hout: u64,
    lg: u64,
    logits: u64,
    apart: u64,
}

/// Per-kernel GPU time (`PIE_CUDA_PROFILE=1`, which also turns graph capture off): an event
/// is recorded after every launch, the time between consecutive events is charged to the
/// launch, and the totals are printed to stderr when the backend is dropped.
#[derive(Default)]
struct Profile {
    on: bool,
    marks: std::cell::RefCell<Vec<(&'static str, cudarc::driver::CudaEvent)>>,
    totals: std::cell::RefCell<std::collections::BTreeMap<&'static str, (f64, u64)>>,
    steps: std::cell::Cell<u64>,
}

/// A captured forward pass. cudarc's graph holds raw driver handles, so it is not `Send`;
/// the backend (and with it every graph) moves to the engine thread once and is only used
/// there, with its context bound by each cudarc call.
struct StepGraph(cudarc::driver::CudaGraph);
// SAFETY: see above; driver graph handles are not tied to the creating thread.
unsafe impl Send for StepGraph {}

/// What a captured step graph is valid for: the batch shape and every buffer address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct GraphKey {
    t: usize,
    n_out: usize,
    p: Ptrs,
}

/// Copies `v` into the start of a scratch buffer already sized by `Scratch::get`.
fn upload<T: DeviceRepr + ValidAsZeroBits>(
    st: &Arc<CudaStream>,
    buf: &mut Scratch<T>,
    v: &[T],
    what: &str,
) -> Result<()> {
    let b = buf.buf.as_mut().expect("sized by get");
    let mut dst = b.slice_mut(0..v.len());
    st.memcpy_htod(v, &mut dst)
        .map_err(|e| cuda_err(&format!("uploading {what}"), e))
}

impl CudaBackend {
    /// Loads a Hugging Face model directory onto device `opts.ordinal`.
    pub fn load(dir: &Path, opts: &CudaOptions) -> Result<Self> {
        let cfg = ModelConfig::from_dir(dir)?;
        let st = SafeTensors::open_dir(dir)?;
        Self::from_tensors(cfg, &st, opts)
    }

    /// Sets up the device, kernels and KV cache; weights are uploaded by the caller.
    fn init(cfg: ModelConfig, opts: &CudaOptions) -> Result<(Self, Vec<f32>)> {
        let n = device_count();
        if n == 0 {
            return Err(Error::Config(
                "no CUDA device: libcuda is missing or no GPU is visible".into(),
            ));
        }
        if opts.ordinal >= n {
            return Err(Error::Config(format!(
                "CUDA device {} requested but {n} present",
                opts.ordinal
            )));
        }
        if opts.page_size == 0 || opts.num_pages == 0 {
            return Err(Error::Config(
                "KV page_size and num_pages must be positive".into(),
            ));
        }
        let (hd, nh, nkv) = (cfg.head_dim, cfg.num_heads, cfg.num_kv_heads);
        let g = nh / nkv.max(1);
        if !hd.is_multiple_of(8) || g > 8 || g * hd > 1024 || nh % nkv != 0 {
            return Err(Error::Config(format!(
                "model shape not supported by the CUDA kernels: head_dim {hd} (needs a \
                 multiple of 8), {nh} heads over {nkv} KV heads (at most 8 per group, group \
                 × head_dim <= 1024)"
            )));
        }
        let ctx = CudaContext::new(opts.ordinal).map_err(|e| cuda_err("creating context", e))?;
        // One stream, no cross-stream hazards: skip cudarc's per-buffer event bookkeeping.
        // SAFETY: every buffer is used on `stream` only.
        unsafe { ctx.disable_event_tracking() };
        // A stream of our own: the legacy default stream cannot be captured into graphs.
        let stream = ctx
            .new_stream()
            .map_err(|e| cuda_err("creating a stream", e))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| cuda_err("reading compute capability", e))?;
        let arch = (major * 10 + minor) as u32;
        let ptx = compile::cached_ptx(arch, opts.cache_dir.as_deref())?;
        let module = ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(ptx))
            .map_err(|e| cuda_err("loading the kernels' PTX", e))?;
        let f = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| cuda_err(&format!("kernel {name}"), e))
        };
        let k = Kernels {
            embed: f("embed")?,
            residual_norm: f("residual_norm")?,
            qkv_rope_store: f("qkv_rope_store")?,
            attention: f("attention")?,
            silu_mul: f("silu_mul")?,
            combine_rows: f("combine_rows")?,
            copy_page: f("copy_page")?,
            fill_random: f("fill_random")?,
            sample_slots: f("sample_slots")?,
            gemv_bf16: f("gemv_bf16")?,
            attention_combine: f("attention_combine")?,
        };
        let blas = CudaBlas::new(stream.clone()).map_err(|e| cuda_err("creating cuBLAS", e))?;
        let blas_ws = stream
            .alloc_zeros::<u8>(32 << 20)
            .map_err(|e| cuda_err("allocating the cuBLAS workspace", e))?;
        // SAFETY: the workspace outlives the handle (both are fields; the handle is dropped
        // first as it is declared first).
        let rc = unsafe {
            bsys::cublasSetWorkspace_v2(
                *blas.handle(),
                dptr(&blas_ws, &stream) as *mut c_void,
                32 << 20,
            )
        };
        if rc != bsys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Err(cuda_err("setting the cuBLAS workspace", rc));
        }
        let kv_elems = cfg.num_layers * opts.num_pages * opts.page_size * cfg.kv_dim();
        let alloc16 = |n: usize| {
            stream
                .alloc_zeros::<u16>(n)
                .map_err(|e| cuda_err(&format!("allocating {} MiB", (n * 2) >> 20), e))
        };
        let kc = alloc16(kv_elems)?;
        let vc = alloc16(kv_elems)?;
        let inv = cfg.rope_inv_freq();
        let inv_freq = stream.clone_htod(&inv).map_err(|e| cuda_err("upload", e))?;
        let dev_name = ctx.name().unwrap_or_else(|_| "?".into());
        let empty16 = alloc16(1)?;
        let empty32 = stream
            .alloc_zeros::<f32>(1)
            .map_err(|e| cuda_err("alloc", e))?;
        let b = CudaBackend {
            name: format!(
                "cuda:{}/{dev_name}/sm{arch}/{}",
                opts.ordinal,
                match opts.precision {
                    CudaPrecision::Split => "split-bf16",
                    CudaPrecision::Bf16 => "bf16",
                }
            ),
            split: if opts.precision == CudaPrecision::Split {
                2
            } else {
                1
            },
            stream,
            blas,
            k,
            embedding: empty16.clone(),
            lm_head: None,
            final_norm: empty32,
            layers: Vec::new(),
            inv_freq,
            kc,
            vc,
            num_pages: opts.num_pages,
            page_size: opts.page_size,
            bufs: Bufs {
                meta: Scratch::new(),
                mask: Scratch::new(),
                x: Scratch::new(),
                hb: Scratch::new(),
                y: Scratch::new(),
                q: Scratch::new(),
                hout: Scratch::new(),
                lg: Scratch::new(),
                logits: Scratch::new(),
                apart: Scratch::new(),
                sparams: Scratch::new(),
                sres: Scratch::new(),
            },
            graphs: Default::default(),
            last_key: None,
            prof: Profile {
                on: std::env::var_os("PIE_CUDA_PROFILE").is_some(),
                ..Default::default()
            },
            use_graphs: std::env::var("PIE_CUDA_GRAPHS").as_deref() != Ok("0")
                && std::env::var_os("PIE_CUDA_PROFILE").is_none(),
            use_gemv: std::env::var("PIE_CUDA_GEMV").as_deref() == Ok("1"),
            _blas_ws: blas_ws,
            cfg,
            _ctx: ctx,
        };
        Ok((b, inv))
    }

    pub fn from_tensors(cfg: ModelConfig, st: &SafeTensors, opts: &CudaOptions) -> Result<Self> {
        let loader = LlamaLoader::new(&cfg, st)?;
        let (mut b, _) = Self::init(cfg.clone(), opts)?;
        let up16 = |b: &CudaBackend, v: &[u16]| {
            b.stream
                .clone_htod(v)
                .map_err(|e| cuda_err("uploading weights", e))
        };
        let up32 = |b: &CudaBackend, v: &[f32]| {
            b.stream
                .clone_htod(v)
                .map_err(|e| cuda_err("uploading weights", e))
        };
        for i in 0..cfg.num_layers {
            let t = loader.layer(i)?;
            let layer = Layer {
                input_norm: up32(&b, &t.input_norm)?,
                wqkv: up16(&b, &[t.q, t.k, t.v].concat())?,
                bqkv: match t.qkv_bias {
                    Some((q, k, v)) => Some(up32(&b, &[q, k, v].concat())?),
                    None => None,
                },
                wo: up16(&b, &t.o)?,
                post_norm: up32(&b, &t.post_norm)?,
                wgu: up16(&b, &[t.gate, t.up].concat())?,
                wdown: up16(&b, &t.down)?,
            };
            b.layers.push(layer);
        }
        b.embedding = up16(&b, &loader.embedding()?)?;
        b.lm_head = match loader.lm_head()? {
            Some(w) => Some(up16(&b, &w)?),
            None => None,
        };
        b.final_norm = up32(&b, &loader.final_norm()?)?;
        b.stream
            .synchronize()
            .map_err(|e| cuda_err("uploading weights", e))?;
        Ok(b)
    }

    /// A model of `cfg`'s shape with pseudo-random weights generated on the device (for
    /// benchmarks of shapes no checkpoint is at hand for). Weights are uniform in
    /// ±`scale`, norms are 1.
    pub fn random(cfg: ModelConfig, opts: &CudaOptions, seed: u64, scale: f32) -> Result<Self> {
        let (mut b, _) = Self::init(cfg.clone(), opts)?;
        let (h, qd, kvd, inter) = (
            cfg.hidden_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
        );
        let mut seed = seed;
        let mut rnd16 = |b: &CudaBackend, n: usize| -> Result<CudaSlice<u16>> {
            let s = b
                .stream
                .alloc_zeros::<u16>(n)
                .map_err(|e| cuda_err("alloc", e))?;
            seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            b.fill(&s, n, seed, scale, false)?;
            Ok(s)
        };
        let ones = |b: &CudaBackend, n: usize| {
            b.stream
                .clone_htod(&vec![1f32; n])
                .map_err(|e| cuda_err("upload", e))
        };
        for _ in 0..cfg.num_layers {
            let layer = Layer {
                input_norm: ones(&b, h)?,
                wqkv: rnd16(&b, (qd + 2 * kvd) * h)?,
                bqkv: None,
                wo: rnd16(&b, h * qd)?,
                post_norm: ones(&b, h)?,
                wgu: rnd16(&b, 2 * inter * h)?,
                wdown: rnd16(&b, h * inter)?,
            };
            b.layers.push(layer);
        }
        b.embedding = rnd16(&b, cfg.vocab_size * h)?;
        b.lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(rnd16(&b, cfg.vocab_size * h)?)
        };
        b.final_norm = ones(&b, h)?;
        b.stream.synchronize().map_err(|e| cuda_err("init", e))?;
        Ok(b)
    }

    fn fill(
        &self,
        s: &CudaSlice<u16>,
        n: usize,
        seed: u64,
        scale: f32,
        constant: bool,
    ) -> Result<()> {
        let p = dptr(s, &self.stream);
        let n64 = n as u64;
        let c = constant as i32;
        let mut l = self.stream.launch_builder(&self.k.fill_random);
        l.arg(&p).arg(&n64).arg(&seed).arg(&scale).arg(&c);
        // SAFETY: arguments match the kernel's signature; `s` holds n elements.
        unsafe { l.launch(grid1(n, 256)) }.map_err(|e| cuda_err("fill_random", e))?;
        Ok(())
    }

    /// Bytes of weights on the device.
    pub fn weight_bytes(&self) -> usize {
        let l: usize = self
            .layers
            .iter()
            .map(|l| l.wqkv.len() + l.wo.len() + l.wgu.len() + l.wdown.len())
            .sum();
        2 * (l + self.embedding.len() + self.lm_head.as_ref().map_or(0, |w| w.len()))
    }

    /// Bytes a single-stream decode step must read at least (every weight matrix once, the
    /// LM head once, one embedding row): the memory-bandwidth floor's numerator.
    pub fn decode_bytes(&self) -> usize {
        let l: usize = self
            .layers
            .iter()
            .map(|l| l.wqkv.len() + l.wo.len() + l.wgu.len() + l.wdown.len())
            .sum();
        let head = self.lm_head.as_ref().unwrap_or(&self.embedding).len();
        2 * (l + head + self.cfg.hidden_size)
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// `y[rows, n] = x[rows, k] · w[n, k]ᵀ` (bf16 inputs, f32 output and accumulation):
    /// our GEMV kernel for decode-sized row counts, cuBLAS otherwise.
    fn gemm(&self, w: u64, x: u64, y: u64, rows: usize, n: usize, k: usize) -> Result<()> {
        if self.use_gemv && rows <= 8 && k.is_multiple_of(8) {
            let (r32, n32, k32) = (rows as i32, n as i32, k as i32);
            let mut l = self.stream.launch_builder(&self.k.gemv_bf16);
            l.arg(&w).arg(&x).arg(&y).arg(&r32).arg(&n32).arg(&k32);
            let cfg = LaunchConfig {
                grid_dim: (n.div_ceil(8) as u32, 1, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: w holds n×k, x rows×k bf16, y rows×n f32; k % 8 == 0 keeps the 16-byte
            // loads aligned.
            unsafe { l.launch(cfg) }.map_err(|e| cuda_err("launching gemv_bf16", e))?;
            return Ok(());
        }
        self.cublas_gemm(w, x, y, rows, n, k)
    }

    /// `gemm` through cuBLAS.
    fn cublas_gemm(&self, w: u64, x: u64, y: u64, rows: usize, n: usize, k: usize) -> Result<()> {
        let (alpha, beta) = (1f32, 0f32);
        // SAFETY: w holds n×k, x rows×k bf16 values, y rows×n f32 (checked by the callers'
        // buffer sizing); column-major view: yᵀ[n, rows] = w[k, n]ᵀ · xᵀ[k, rows].
        unsafe {
            blas::gemm_ex(
                *self.blas.handle(),
                bsys::cublasOperation_t::CUBLAS_OP_T,
                bsys::cublasOperation_t::CUBLAS_OP_N,
                n as i32,
                rows as i32,
                k as i32,
                &alpha as *const f32 as *const c_void,
                w as *const c_void,
                bsys::cudaDataType::CUDA_R_16BF,
                k as i32,
                x as *const c_void,
                bsys::cudaDataType::CUDA_R_16BF,
                k as i32,
                &beta as *const f32 as *const c_void,
                y as *mut c_void,
                bsys::cudaDataType::CUDA_R_32F,
                n as i32,
                bsys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                bsys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| cuda_err("cublasGemmEx", e))
    }

    /// Packs the batch's metadata (tokens, positions, per-row KV slots, page tables) into one
    /// i32 vector, uploaded with a single copy; attention-mask bits go to a second vector.
    /// Offsets depend only on (rows, outputs), so a captured graph's arguments stay valid.
    fn pack_meta(&self, b: &BatchInput) -> (Vec<i32>, Vec<u32>, Meta) {
        let t = b.tokens.len();
        let ps = self.page_size;
        let m = Meta {
            tokens: 0,
            positions: t,
            row_page: 2 * t,
            row_slot: 3 * t,
            row_pt: 4 * t,
            row_ctx: 5 * t,
            row_first: 6 * t,
            row_mask: 7 * t,
            out_rows: 8 * t,
            pages: 8 * t + b.outputs.len(),
        };
        let mut v = vec![0i32; m.pages];
        for (r, (&tok, &pos)) in b.tokens.iter().zip(&b.positions).enumerate() {
            v[m.tokens + r] = tok as i32;
            v[m.positions + r] = pos as i32;
        }
        for (o, &r) in b.outputs.iter().enumerate() {
            v[m.out_rows + o] = r as i32;
        }
        let mut pt_off = Vec::with_capacity(b.seqs.len());
        for s in &b.seqs {
            pt_off.push((v.len() - m.pages) as i32);
            v.extend(s.kv_pages.iter().map(|&p| p as i32));
        }
        let mut bits: Vec<u32> = Vec::new();
        let mut allowed = Vec::new();
        for (si, s) in b.seqs.iter().enumerate() {
            for i in 0..s.len {
                let r = s.start + i;
                let slot = s.kv_len + i;
                let ctx = slot + 1;
                v[m.row_page + r] = s.kv_pages[slot / ps] as i32;
                v[m.row_slot + r] = (slot % ps) as i32;
                v[m.row_pt + r] = pt_off[si];
                v[m.row_ctx + r] = ctx as i32;
                v[m.row_first + r] =
                    self.cfg.sliding_window.map_or(0, |w| ctx.saturating_sub(w)) as i32;
                v[m.row_mask + r] = match &s.mask {
                    Some(masks) => {
                        allowed.clear();
                        allowed.resize(ctx, true);
                        masks[s.mask_row0 + i].decode_into(&mut allowed, true);
                        let off = bits.len() * 32;
                        push_bits(&mut bits, &allowed);
                        off as i32
                    }
                    None => -1,
                };
            }
        }
        (v, bits, m)
    }

    /// Runs the layers and the LM head; leaves the logits of `b.outputs` on the device,
    /// row-major `[outputs, vocab]`, and returns their address.
    ///
    /// The launches after the metadata upload depend only on the buffer addresses and the
    /// (rows, outputs) shape, so a shape seen twice in a row (decode steps at a steady
    /// concurrency) is captured into a CUDA graph and replayed: one launch per step instead of
    /// ~9 per layer.
    fn run(&mut self, b: &BatchInput) -> Result<u64> {
        validate_batch(b, self.cfg.vocab_size, self.num_pages, self.page_size)?;
        let st = self.stream.clone();
        let cfg = &self.cfg;
        let (t, h, qd, kvd, inter) = (
            b.tokens.len(),
            cfg.hidden_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
        );
        let s = self.split;
        let wq = qd + 2 * kvd;
        let n_out = b.outputs.len();
        let vocab = cfg.vocab_size;
        let (meta, bits, mo) = self.pack_meta(b);
        let bm = &mut self.bufs;
        let meta_p = bm.meta.get(&st, meta.len())?;
        upload(&st, &mut bm.meta, &meta, "batch metadata")?;
        let mask_p = bm.mask.get(&st, bits.len())?;
        if !bits.is_empty() {
            upload(&st, &mut bm.mask, &bits, "attention masks")?;
        }
        let p = Ptrs {
            meta: meta_p,
            mask: mask_p,
            x: bm.x.get(&st, t * h)?,
            hb: bm.hb.get(&st, s * t * h.max(inter).max(qd))?,
            y: bm.y.get(&st, s * t * wq.max(h).max(2 * inter))?,
            q: bm.q.get(&st, t * qd)?,
            hout: bm.hout.get(&st, s * n_out.max(1) * h)?,
            lg: bm.lg.get(&st, s * n_out.max(1) * vocab)?,
            logits: bm.logits.get(&st, n_out.max(1) * vocab)?,
            apart: bm.apart.get(
                &st,
                t * cfg.num_kv_heads
                    * attention_splits(t, cfg.num_kv_heads)
                    * (2 * qd / cfg.num_kv_heads + 2 * cfg.num_heads),
            )?,
        };
        let key = GraphKey { t, n_out, p };
        if let Some(g) = self.graphs.get(&key) {
            g.0.launch()
                .map_err(|e| cuda_err("launching the step graph", e))?;
            return Ok(p.logits);
        }
        let capture = self.use_graphs && self.last_key == Some(key);
        self.last_key = Some(key);
        if !capture {
            self.encode(t, n_out, &mo, &p)?;
            return Ok(p.logits);
        }
        st.begin_capture(
            cudarc::driver::sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL,
        )
        .map_err(|e| cuda_err("beginning graph capture", e))?;
        let encoded = self.encode(t, n_out, &mo, &p);
        let graph = st.end_capture(cudarc::driver::sys::CUgraphInstantiate_flags(0));
        encoded?;
        match graph {
            Ok(Some(g)) => {
                g.launch()
                    .map_err(|e| cuda_err("launching the step graph", e))?;
                if self.graphs.len() >= 32 {
                    self.graphs.clear(); // shapes churn (prefill chunks): start over
                }
                self.graphs.insert(key, StepGraph(g));
            }
            // Capture refused (driver limits): run the launches directly from now on.
            _ => {
                self.use_graphs = false;
                self.encode(t, n_out, &mo, &p)?;
            }
        }
        Ok(p.logits)
    }

    /// Records a profiling event charged to `name` (no-op unless profiling).
    fn mark(&self, name: &'static str) {
        if !self.prof.on {
            return;
        }
        if let Ok(e) = self
            ._ctx
            .new_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))
            && e.record(&self.stream).is_ok()
        {
            self.prof.marks.borrow_mut().push((name, e));
        }
    }

    /// After a synchronisation: adds the time between consecutive marks to their kernels.
    fn collect_profile(&self) {
        if !self.prof.on {
            return;
        }
        let marks = std::mem::take(&mut *self.prof.marks.borrow_mut());
        let mut totals = self.prof.totals.borrow_mut();
        for w in marks.windows(2) {
            if let Ok(ms) = w[0].1.elapsed_ms(&w[1].1) {
                let e = totals.entry(w[1].0).or_default();
                e.0 += ms as f64;
                e.1 += 1;
            }
        }
        self.prof.steps.set(self.prof.steps.get() + 1);
    }

    /// Enqueues `residual_norm` (kernels.cu) over `rows` output rows: `x[src] += delta` when
    /// `delta` is non-null (its split halves when `dsplit == 2`), then `out[o] = rmsnorm(x[src])
    /// · w` as split bf16; `src` is `gather[o]`, or `o` when `gather` is null.
    #[allow(clippy::too_many_arguments)]
    fn residual_norm(
        &self,
        x: u64,
        delta: u64,
        dsplit: i32,
        w: u64,
        out: u64,
        gather: u64,
        rows: usize,
    ) -> Result<()> {
        let eps = self.cfg.rms_norm_eps;
        let (r32, h32, s32) = (rows as i32, self.cfg.hidden_size as i32, self.split as i32);
        let mut l = self.stream.launch_builder(&self.k.residual_norm);
        l.arg(&x)
            .arg(&delta)
            .arg(&dsplit)
            .arg(&w)
            .arg(&eps)
            .arg(&out)
            .arg(&gather);
        l.arg(&r32).arg(&h32).arg(&s32);
        // SAFETY: callers size x, delta and out for `rows` rows of the batch; gathered rows
        // were validated against the batch.
        unsafe { l.launch(rows_cfg(rows, NORM_THREADS, 0)) }
            .map_err(|e| cuda_err("launching residual_norm", e))?;
        Ok(())
    }

    /// Enqueues the forward pass's launches (embedding through the LM head) on the stream.
    fn encode(&self, t: usize, n_out: usize, mo: &Meta, p: &Ptrs) -> Result<()> {
        let cfg = &self.cfg;
        let st = &self.stream;
        let (h, qd, kvd, inter, hd) = (
            cfg.hidden_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
            cfg.head_dim,
        );
        let (nh, nkv, s) = (cfg.num_heads, cfg.num_kv_heads, self.split);
        let wq = qd + 2 * kvd;
        let (x, hb, y, q, hout, lg, logits) = (p.x, p.hb, p.y, p.q, p.hout, p.lg, p.logits);
        let mp = |off: usize| p.meta + 4 * off as u64;
        let (m_tokens, m_positions, m_row_page, m_row_slot) = (
            mp(mo.tokens),
            mp(mo.positions),
            mp(mo.row_page),
            mp(mo.row_slot),
        );
        let (m_row_pt, m_row_ctx, m_row_first, m_row_mask) = (
            mp(mo.row_pt),
            mp(mo.row_ctx),
            mp(mo.row_first),
            mp(mo.row_mask),
        );
        let (m_out_rows, m_pages, m_mask_bits) = (mp(mo.out_rows), mp(mo.pages), p.mask);
        let k = &self.k;
        let (t32, h32, s32) = (t as i32, h as i32, s as i32);
        let null = 0u64;
        let launch_err = |name: &str, e| cuda_err(&format!("launching {name}"), e);
        self.mark("start");

        let emb = dptr(&self.embedding, st);
        {
            let mut l = st.launch_builder(&k.embed);
            l.arg(&m_tokens).arg(&emb).arg(&x).arg(&h32);
            // SAFETY: token ids were validated against the vocabulary; x holds t×h.
            unsafe { l.launch(cols_cfg(t, h, 256)) }.map_err(|e| launch_err("embed", e))?;
        }
        self.mark("embed");
        let layer_stride = (self.num_pages * self.page_size * kvd) as u64;
        let kc0 = dptr(&self.kc, st);
        let vc0 = dptr(&self.vc, st);
        let invf = dptr(&self.inv_freq, st);
        let g = nh / nkv;
        let att_smem = attention_smem(g, hd);
        let nsplit = attention_splits(t, nkv);
        let scale = 1.0 / (hd as f32).sqrt();
        let (nh32, nkv32, hd32, ps32) = (nh as i32, nkv as i32, hd as i32, self.page_size as i32);
        let (inter32, zero) = (inter as i32, 0i32);
        for (li, layer) in self.layers.iter().enumerate() {
            // Residual add of the previous layer's down projection (none before layer 0)
            // fused with this layer's input norm.
            let (delta, dsplit) = if li == 0 { (null, 0i32) } else { (y, s32) };
            let w = dptr(&layer.input_norm, st);
            self.residual_norm(x, delta, dsplit, w, hb, null, t)?;
            self.mark("residual_norm");
            self.gemm(dptr(&layer.wqkv, st), hb, y, s * t, wq, h)?;
            self.mark("gemm qkv");
            let bias = layer.bqkv.as_ref().map_or(0, |bq| dptr(bq, st));
            let kcl = kc0 + 2 * li as u64 * layer_stride;
            let vcl = vc0 + 2 * li as u64 * layer_stride;
            {
                let mut l = st.launch_builder(&k.qkv_rope_store);
                l.arg(&y)
                    .arg(&s32)
                    .arg(&t32)
                    .arg(&bias)
                    .arg(&m_positions)
                    .arg(&invf);
                l.arg(&q)
                    .arg(&kcl)
                    .arg(&vcl)
                    .arg(&m_row_page)
                    .arg(&m_row_slot);
                l.arg(&nh32).arg(&nkv32).arg(&hd32).arg(&ps32);
                // SAFETY: pages were validated against the pool; buffers sized for t rows.
                unsafe { l.launch(cols_cfg(t, rope_items(nh, nkv, hd), 128)) }
                    .map_err(|e| launch_err("qkv_rope_store", e))?;
            }
            self.mark("qkv_rope_store");
            {
                let mut l = st.launch_builder(&k.attention);
                l.arg(&q).arg(&kcl).arg(&vcl).arg(&m_pages).arg(&m_row_pt);
                l.arg(&m_row_ctx).arg(&m_row_first).arg(&m_row_mask);
                l.arg(&m_mask_bits)
                    .arg(&hb)
                    .arg(&t32)
                    .arg(&s32)
                    .arg(&nh32)
                    .arg(&nkv32);
                l.arg(&hd32).arg(&ps32).arg(&scale).arg(&p.apart);
                let cfg = LaunchConfig {
                    grid_dim: (t as u32, nkv as u32, nsplit as u32),
                    block_dim: (128, 1, 1),
                    shared_mem_bytes: att_smem as u32,
                };
                // SAFETY: shared memory sized as the kernel lays it out; shapes checked at init;
                // `apart` holds t × nkv × nsplit partial records.
                unsafe { l.launch(cfg) }.map_err(|e| launch_err("attention", e))?;
            }
            if nsplit > 1 {
                let ns32 = nsplit as i32;
                let mut l = st.launch_builder(&k.attention_combine);
                l.arg(&p.apart)
                    .arg(&hb)
                    .arg(&t32)
                    .arg(&s32)
                    .arg(&nh32)
                    .arg(&nkv32)
                    .arg(&hd32);
                l.arg(&ns32);
                let cfg = LaunchConfig {
                    grid_dim: (t as u32, nkv as u32, 1),
                    block_dim: (128, 1, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: reads what `attention` wrote for the same shape.
                unsafe { l.launch(cfg) }.map_err(|e| launch_err("attention_combine", e))?;
            }
            self.mark("attention");
            self.gemm(dptr(&layer.wo, st), hb, y, s * t, h, qd)?;
            self.mark("gemm o");
            let w = dptr(&layer.post_norm, st);
            self.residual_norm(x, y, s32, w, hb, null, t)?;
            self.mark("residual_norm");
            self.gemm(dptr(&layer.wgu, st), hb, y, s * t, 2 * inter, h)?;
            self.mark("gemm gate_up");
            {
                let mut l = st.launch_builder(&k.silu_mul);
                l.arg(&y)
                    .arg(&s32)
                    .arg(&hb)
                    .arg(&t32)
                    .arg(&inter32)
                    .arg(&s32);
                // SAFETY: as above.
                unsafe { l.launch(cols_cfg(t, inter, 256)) }
                    .map_err(|e| launch_err("silu_mul", e))?;
            }
            self.mark("silu_mul");
            self.gemm(dptr(&layer.wdown, st), hb, y, s * t, h, inter)?;
            self.mark("gemm down");
        }
        // Last residual add for every row (its norm output is unused), then the final norm of
        // the output rows only, the LM head, and the sum of the split halves.
        let fw = dptr(&self.final_norm, st);
        let (delta, dsplit) = if self.layers.is_empty() {
            (null, zero)
        } else {
            (y, s32)
        };
        self.residual_norm(x, delta, dsplit, fw, hb, null, t)?;
        if n_out == 0 {
            return Ok(());
        }
        let o32 = n_out as i32;
        self.residual_norm(x, null, zero, fw, hout, m_out_rows, n_out)?;
        let head = dptr(self.lm_head.as_ref().unwrap_or(&self.embedding), st);
        let vocab = cfg.vocab_size;
        self.mark("final norm");
        self.gemm(head, hout, lg, s * n_out, vocab, h)?;
        self.mark("gemm lm_head");
        {
            let v32 = vocab as i32;
            let mut l = st.launch_builder(&k.combine_rows);
            l.arg(&lg).arg(&s32).arg(&logits).arg(&o32).arg(&v32);
            let cfg = LaunchConfig {
                grid_dim: (vocab.div_ceil(256).min(256) as u32, n_out as u32, 1),
                block_dim: (256, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: lg holds s×n_out×vocab, logits n_out×vocab.
            unsafe { l.launch(cfg) }.map_err(|e| launch_err("combine_rows", e))?;
        }
        self.mark("combine_rows");
        Ok(())
    }

    /// Copies `n` f32 from device address `src` to the host.
    fn download(&self, src: u64, n: usize) -> Result<Vec<f32>> {
        let mut out = vec![0f32; n];
        // SAFETY: `src` addresses at least n f32 written on this stream; the stream is
        // synchronised before the host reads.
        unsafe {
            cudarc::driver::result::memcpy_dtoh_async(&mut out, src, self.stream.cu_stream())
        }
        .map_err(|e| cuda_err("copying to the host", e))?;
        self.stream
            .synchronize()
            .map_err(|e| cuda_err("forward pass", e))?;
        self.collect_profile();
        Ok(out)
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        if !self.prof.on {
            return;
        }
        let totals = self.prof.totals.borrow();
        let sum: f64 = totals.values().map(|v| v.0).sum();
        let mut rows: Vec<_> = totals.iter().collect();
        rows.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
        eprintln!(
            "cuda profile: {:.3} ms GPU time over {} forward passes",
            sum,
            self.prof.steps.get()
        );
        for (name, (ms, n)) in rows {
            eprintln!(
                "  {name:<16} {ms:>9.3} ms {:>5.1}%  {n} launches, {:.1} us each",
                100.0 * ms / sum.max(1e-9),
                1e3 * ms / *n as f64
            );
        }
    }
}

/// Key splits of `attention` for a batch of `rows` rows (flash-decoding): enough blocks to
/// cover the GPU twice when rows × KV heads alone would not. A function of the shape only, so
/// a captured graph stays valid as contexts grow.
pub(crate) fn attention_splits(rows: usize, kv_heads: usize) -> usize {
    let blocks = rows * kv_heads;
    if blocks >= 132 {
        1
    } else {
        (264 / blocks.max(1)).clamp(1, 32)
    }
}

/// Dynamic shared memory of the `attention` kernel (its layout, in kernels.cu).
pub(crate) fn attention_smem(group: usize, hd: usize) -> usize {
    let gw = group * hd;
    4 * (gw + 128 * group + 56) + 8 * 128 + 4 * 4 * gw
}

/// Threads of a `residual_norm` block (one block per row: the whole row is reduced).
pub(crate) const NORM_THREADS: u32 = 1024;

/// Work items of `qkv_rope_store` per row: rotated q/k pairs plus v elements.
pub(crate) fn rope_items(nh: usize, nkv: usize, hd: usize) -> usize {
    (nh + nkv) * hd / 2 + nkv * hd
}

/// One thread per element of `cols` columns, for each of `rows` rows.
pub(crate) fn cols_cfg(rows: usize, cols: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (
            cols.div_ceil(threads as usize).max(1) as u32,
            rows.max(1) as u32,
            1,
        ),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// One block per row.
fn rows_cfg(rows: usize, threads: u32, smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.max(1) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: smem,
    }
}

/// A grid-stride launch over n elements.
fn grid1(n: usize, threads: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (n.div_ceil(threads as usize).clamp(1, 65535) as u32, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Appends `bits` (LSB first) to `words`, starting at a word boundary.
fn push_bits(words: &mut Vec<u32>, bits: &[bool]) {
    for chunk in bits.chunks(32) {
        let mut w = 0u32;
        for (i, &b) in chunk.iter().enumerate() {
            w |= (b as u32) << i;
        }
        words.push(w);
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn kv_geometry(&self) -> (usize, usize) {
        (self.num_pages, self.page_size)
    }

    fn copy_page(&mut self, src: PageId, dst: PageId) {
        let st = &self.stream;
        let page_elems = (self.page_size * self.cfg.kv_dim()) as u64;
        let layer_stride = self.num_pages as u64 * page_elems;
        let (kc, vc) = (dptr(&self.kc, st), dptr(&self.vc, st));
        let (s, d) = (src as i32, dst as i32);
        let mut l = st.launch_builder(&self.k.copy_page);
        l.arg(&kc)
            .arg(&vc)
            .arg(&layer_stride)
            .arg(&page_elems)
            .arg(&s)
            .arg(&d);
        let cfg = LaunchConfig {
            grid_dim: (
                (page_elems as usize).div_ceil(256).min(64) as u32,
                self.cfg.num_layers as u32,
                1,
            ),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: the pool hands out page ids below num_pages. A launch failure surfaces at the
        // next forward pass's synchronisation.
        let _ = unsafe { l.launch(cfg) };
    }

    fn forward(&mut self, b: &BatchInput) -> Result<Vec<f32>> {
        let logits = self.run(b)?;
        self.download(logits, b.outputs.len() * self.cfg.vocab_size)
    }

    fn forward_sample(
        &mut self,
        b: &BatchInput,
        slots: &[OutputSlot<'_>],
    ) -> Result<Vec<SampleOutput>> {
        if slots.len() != b.outputs.len() {
            return Err(Error::InvalidRequest(
                "one output slot per output row is required".into(),
            ));
        }
        let logits = self.run(b)?;
        let vocab = self.cfg.vocab_size;
        sample::run(self, logits, vocab, slots)
    }
}
