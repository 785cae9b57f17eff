//! The CPU backend: pure Rust, all cores, runtime-selected SIMD (AVX512-BF16, AVX2+FMA or
//! portable). Weights are bf16 in the blocked layout of `gemm`; activations and the KV cache
//! are f32. The projections of one layer that read the same input are fused into one matrix
//! (q|k|v and gate|up), so each step launches fewer, larger parallel regions.

pub mod attention;
pub mod gemm;
pub mod pool;
pub mod simd;

use crate::backend::{Backend, BatchInput};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::kv::PageId;
use crate::model::llama::LlamaLoader;
use crate::weights::{SafeTensors, bf16_to_f32};
use attention::KvStore;
pub use gemm::ActPrecision;
use gemm::{GemmScratch, PackedMatrix, matmul};
use pool::{SyncPtr, ThreadPool};
use simd::Isa;
use std::path::Path;

/// CPU backend settings.
#[derive(Debug, Clone)]
pub struct CpuOptions {
    /// Threads for the forward pass, the engine thread included; 0 = all cores.
    pub threads: usize,
    pub num_pages: usize,
    pub page_size: usize,
    /// Activation precision of the GEMMs; `PIE_ENGINE_ACT=bf16|f32` overrides it.
    pub act_precision: ActPrecision,
}

struct Layer {
    input_norm: Vec<f32>,
    wqkv: PackedMatrix,
    bqkv: Option<Vec<f32>>,
    wo: PackedMatrix,
    post_norm: Vec<f32>,
    wgu: PackedMatrix,
    wdown: PackedMatrix,
}

/// Reusable activation buffers (grown, never shrunk, to avoid per-step allocation).
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    h: Vec<f32>,
    qkv: Vec<f32>,
    attn: Vec<f32>,
    gu: Vec<f32>,
    act: Vec<f32>,
    packed: GemmScratch,
    cos: Vec<f32>,
    sin: Vec<f32>,
    row_seq: Vec<u32>,
    out_h: Vec<f32>,
}

/// Time per forward-pass phase, collected when `PIE_ENGINE_PROFILE` is set and printed to
/// stderr when the backend is dropped (for tuning; off by default).
#[derive(Default)]
struct Profile {
    on: bool,
    secs: [f64; PHASES.len()],
}

const PHASES: [&str; 7] = [
    "qkv",
    "attention",
    "o_proj",
    "gate_up",
    "silu",
    "down",
    "lm_head+other",
];

impl Profile {
    #[inline]
    fn lap(&mut self, phase: usize, t: &mut std::time::Instant) {
        if self.on {
            let now = std::time::Instant::now();
            self.secs[phase] += (now - *t).as_secs_f64();
            *t = now;
        }
    }
}

impl Drop for CpuBackend {
    fn drop(&mut self) {
        if self.profile.on {
            let total: f64 = self.profile.secs.iter().sum();
            let parts: Vec<String> = PHASES
                .iter()
                .zip(self.profile.secs)
                .map(|(n, s)| format!("{n} {:.1}%", 100.0 * s / total.max(1e-12)))
                .collect();
            eprintln!("cpu backend profile ({total:.2}s): {}", parts.join(", "));
        }
    }
}

pub struct CpuBackend {
    profile: Profile,
    cfg: ModelConfig,
    isa: Isa,
    prec: ActPrecision,
    pool: ThreadPool,
    /// Row-major token embeddings; empty when tied to the LM head, whose packed copy then
    /// serves the lookups (saves vocab × hidden × 2 bytes).
    embedding: Vec<u16>,
    lm_head: PackedMatrix,
    final_norm: Vec<f32>,
    layers: Vec<Layer>,
    inv_freq: Vec<f32>,
    kv: KvStore,
    scratch: Scratch,
}

fn concat(parts: &[&[u16]]) -> Vec<u16> {
    let mut v = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        v.extend_from_slice(p);
    }
    v
}

impl CpuBackend {
    /// Loads the model of a Hugging Face directory (its `config.json` and safetensors).
    pub fn load(dir: &Path, opts: &CpuOptions) -> Result<Self> {
        let cfg = ModelConfig::from_dir(dir)?;
        let st = SafeTensors::open_dir(dir)?;
        Self::from_tensors(cfg, &st, opts)
    }

    pub fn from_tensors(cfg: ModelConfig, st: &SafeTensors, opts: &CpuOptions) -> Result<Self> {
        if opts.page_size == 0 || opts.num_pages == 0 {
            return Err(Error::Config(
                "KV page_size and num_pages must be positive".into(),
            ));
        }
        let loader = LlamaLoader::new(&cfg, st)?;
        let (h, qd, kvd, inter) = (
            cfg.hidden_size,
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
        );
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let t = loader.layer(i)?;
            layers.push(Layer {
                input_norm: t.input_norm,
                wqkv: PackedMatrix::pack(&concat(&[&t.q, &t.k, &t.v]), qd + 2 * kvd, h),
                bqkv: t.qkv_bias.map(|(q, k, v)| [q, k, v].concat()),
                wo: PackedMatrix::pack(&t.o, h, qd),
                post_norm: t.post_norm,
                wgu: PackedMatrix::pack(&concat(&[&t.gate, &t.up]), 2 * inter, h),
                wdown: PackedMatrix::pack(&t.down, h, inter),
            });
        }
        let embedding = loader.embedding()?;
        let (lm_head, embedding) = match loader.lm_head()? {
            Some(w) => (PackedMatrix::pack(&w, cfg.vocab_size, h), embedding),
            None => (
                PackedMatrix::pack(&embedding, cfg.vocab_size, h),
                Vec::new(),
            ),
        };
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            opts.threads
        };
        Ok(CpuBackend {
            profile: Profile {
                on: std::env::var_os("PIE_ENGINE_PROFILE").is_some(),
                ..Default::default()
            },
            isa: Isa::detect(),
            prec: match std::env::var("PIE_ENGINE_ACT").as_deref() {
                Ok("bf16") => ActPrecision::Bf16,
                Ok("f32") => ActPrecision::F32,
                _ => opts.act_precision,
            },
            pool: ThreadPool::new(threads),
            final_norm: loader.final_norm()?,
            inv_freq: cfg.rope_inv_freq(),
            kv: KvStore::new(
                cfg.num_layers,
                opts.num_pages,
                opts.page_size,
                cfg.num_kv_heads,
                cfg.head_dim,
            ),
            embedding,
            lm_head,
            layers,
            cfg,
            scratch: Scratch::default(),
        })
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Bytes of weights held (packed matrices + embedding table).
    pub fn weight_bytes(&self) -> usize {
        let l: usize = self
            .layers
            .iter()
            .map(|l| {
                l.wqkv.size_bytes() + l.wo.size_bytes() + l.wgu.size_bytes() + l.wdown.size_bytes()
            })
            .sum();
        l + self.lm_head.size_bytes() + self.embedding.len() * 2
    }
}

/// Runs `f(r, row_of_out)` for rows `0..t` of `out` (rows `width` long), on the pool when the
/// batch is large enough to pay for a parallel region (prefill), else on the caller (decode).
fn par_rows(
    pool: &ThreadPool,
    t: usize,
    out: &mut [f32],
    width: usize,
    f: &(dyn Fn(usize, &mut [f32]) + Sync),
) {
    const MIN_PAR: usize = 8;
    if t < MIN_PAR {
        for (r, row) in out.chunks_exact_mut(width).take(t).enumerate() {
            f(r, row);
        }
        return;
    }
    let n_tasks = t.min(pool.n_threads() * 4);
    let per = t.div_ceil(n_tasks);
    let n_tasks = t.div_ceil(per);
    let p = SyncPtr(out.as_mut_ptr());
    assert!(out.len() >= t * width);
    pool.run(n_tasks, &|task| {
        for r in task * per..((task + 1) * per).min(t) {
            // SAFETY: tasks own disjoint row ranges of `out`, which holds `t` rows.
            let row = unsafe { std::slice::from_raw_parts_mut(p.ptr().add(r * width), width) };
            f(r, row);
        }
    });
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ss: f32 = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (ss + eps).sqrt();
    for ((o, &xi), &wi) in out.iter_mut().zip(x).zip(w) {
        *o = xi * r * wi;
    }
}

/// Rotates the (i, i + d/2) pairs of each head (HF "rotate_half" convention).
fn rope(v: &mut [f32], head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = head_dim / 2;
    for head in v.chunks_exact_mut(head_dim) {
        let (a, b) = head.split_at_mut(half);
        for i in 0..half {
            let (x, y) = (a[i], b[i]);
            a[i] = x * cos[i] - y * sin[i];
            b[i] = y * cos[i] + x * sin[i];
        }
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> String {
        format!(
            "cpu/{:?}/{:?}/{}t",
            self.isa,
            self.prec,
            self.pool.n_threads()
        )
    }

    fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn kv_geometry(&self) -> (usize, usize) {
        (self.kv.num_pages, self.kv.page_size)
    }

    fn copy_page(&mut self, src: PageId, dst: PageId) {
        self.kv
            .copy_page(self.cfg.num_layers, src as usize, dst as usize);
    }

    fn forward(&mut self, b: &BatchInput) -> Result<Vec<f32>> {
        crate::backend::validate_batch(
            b,
            self.cfg.vocab_size,
            self.kv.num_pages,
            self.kv.page_size,
        )?;
        let cfg = &self.cfg;
        let (t, hsz) = (b.tokens.len(), cfg.hidden_size);
        let (qd, kvd, inter, hd) = (
            cfg.q_dim(),
            cfg.kv_dim(),
            cfg.intermediate_size,
            cfg.head_dim,
        );
        let qkv_w = qd + 2 * kvd;
        let s = &mut self.scratch;
        s.x.resize(t * hsz, 0.0);
        s.h.resize(t * hsz, 0.0);
        s.qkv.resize(t * qkv_w, 0.0);
        s.attn.resize(t * qd, 0.0);
        s.gu.resize(t * 2 * inter, 0.0);
        s.act.resize(t * inter, 0.0);
        s.row_seq.clear();
        for (i, sq) in b.seqs.iter().enumerate() {
            s.row_seq.extend(std::iter::repeat_n(i as u32, sq.len));
        }
        for (r, &tok) in b.tokens.iter().enumerate() {
            let dst = &mut s.x[r * hsz..(r + 1) * hsz];
            if self.embedding.is_empty() {
                self.lm_head.row_f32(tok as usize, dst);
            } else {
                let e = &self.embedding[tok as usize * hsz..(tok as usize + 1) * hsz];
                for (d, &v) in dst.iter_mut().zip(e) {
                    *d = bf16_to_f32(v);
                }
            }
        }
        // RoPE angles once per batch, shared by all layers.
        let half = hd / 2;
        s.cos.resize(t * half, 0.0);
        s.sin.resize(t * half, 0.0);
        for (r, &p) in b.positions.iter().enumerate() {
            for (i, &f) in self.inv_freq.iter().enumerate() {
                let (sn, cs) = (p as f32 * f).sin_cos();
                s.cos[r * half + i] = cs;
                s.sin[r * half + i] = sn;
            }
        }
        let prof = &mut self.profile;
        let mut clock = std::time::Instant::now();
        for (li, layer) in self.layers.iter().enumerate() {
            let x = &s.x;
            par_rows(&self.pool, t, &mut s.h, hsz, &|r, h| {
                rms_norm(
                    &x[r * hsz..(r + 1) * hsz],
                    &layer.input_norm,
                    cfg.rms_norm_eps,
                    h,
                )
            });
            matmul(
                &self.pool,
                self.isa,
                &s.h,
                t,
                &layer.wqkv,
                &mut s.qkv,
                false,
                self.prec,
                &mut s.packed,
            );
            let (cos, sin) = (&s.cos, &s.sin);
            par_rows(&self.pool, t, &mut s.qkv, qkv_w, &|r, row| {
                if let Some(bias) = &layer.bqkv {
                    row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                }
                let (cos, sin) = (
                    &cos[r * half..(r + 1) * half],
                    &sin[r * half..(r + 1) * half],
                );
                rope(&mut row[..qd + kvd], hd, cos, sin);
            });
            prof.lap(0, &mut clock);
            attention::write_kv(&mut self.kv, li, &b.seqs, &s.qkv, qd);
            attention::attention(
                &self.pool,
                self.isa,
                &self.kv,
                li,
                &b.seqs,
                &s.row_seq,
                &s.qkv,
                cfg.num_heads,
                cfg.sliding_window,
                &mut s.attn,
            );
            prof.lap(1, &mut clock);
            matmul(
                &self.pool,
                self.isa,
                &s.attn,
                t,
                &layer.wo,
                &mut s.x,
                true,
                self.prec,
                &mut s.packed,
            );
            prof.lap(2, &mut clock);
            let x = &s.x;
            par_rows(&self.pool, t, &mut s.h, hsz, &|r, h| {
                rms_norm(
                    &x[r * hsz..(r + 1) * hsz],
                    &layer.post_norm,
                    cfg.rms_norm_eps,
                    h,
                )
            });
            matmul(
                &self.pool,
                self.isa,
                &s.h,
                t,
                &layer.wgu,
                &mut s.gu,
                false,
                self.prec,
                &mut s.packed,
            );
            prof.lap(3, &mut clock);
            let (gu, isa) = (&s.gu, self.isa);
            par_rows(&self.pool, t, &mut s.act, inter, &|r, act| {
                let row = &gu[r * 2 * inter..(r + 1) * 2 * inter];
                act.copy_from_slice(&row[..inter]);
                simd::silu_mul(isa, act, &row[inter..]);
            });
            prof.lap(4, &mut clock);
            matmul(
                &self.pool,
                self.isa,
                &s.act,
                t,
                &layer.wdown,
                &mut s.x,
                true,
                self.prec,
                &mut s.packed,
            );
            prof.lap(5, &mut clock);
        }
        // Final norm and LM head only for the rows whose logits are wanted.
        let n_out = b.outputs.len();
        s.out_h.resize(n_out * hsz, 0.0);
        for (o, &r) in b.outputs.iter().enumerate() {
            rms_norm(
                &s.x[r * hsz..(r + 1) * hsz],
                &self.final_norm,
                cfg.rms_norm_eps,
                &mut s.out_h[o * hsz..(o + 1) * hsz],
            );
        }
        let mut logits = vec![0f32; n_out * cfg.vocab_size];
        matmul(
            &self.pool,
            self.isa,
            &s.out_h,
            n_out,
            &self.lm_head,
            &mut logits,
            false,
            self.prec,
            &mut s.packed,
        );
        prof.lap(6, &mut clock);
        Ok(logits)
    }
}
