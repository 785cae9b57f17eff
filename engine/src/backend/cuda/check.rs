//! Kernel-by-kernel checks against f64 host references, run by `scripts/gpu-check` (through
//! `examples/gpu_check.rs`) on a machine with a GPU. Every check draws fresh random inputs,
//! uses odd sizes, poisons its outputs with NaN first (so an element the kernel failed to
//! write fails the check), and reports ‖out − ref‖ / ‖ref‖.

use super::{CudaBackend, CudaOptions, cuda_err, dptr, push_bits};
use crate::backend::OutputSlot;
use crate::config::ModelConfig;
use crate::error::Result;
use crate::sampling::{SampleOutput, SampleParams, Sampler, sample_slot};
use crate::weights::{bf16_to_f32, f32_to_bf16};
use crate::{Brle, sampling::Rng};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    /// Relative error (or, for exact checks, the fraction of mismatches).
    pub error: f64,
    pub tolerance: f64,
    pub detail: String,
}

impl Check {
    pub fn passed(&self) -> bool {
        self.error.is_finite() && self.error <= self.tolerance
    }
}

struct Rand(Rng);

impl Rand {
    fn f(&mut self) -> f32 {
        (self.0.next_f64() * 2.0 - 1.0) as f32
    }
    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.f() * scale).collect()
    }
    fn bf(&mut self, n: usize, scale: f32) -> Vec<u16> {
        (0..n).map(|_| f32_to_bf16(self.f() * scale)).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }
}

/// ‖a − b‖ / ‖b‖ (NaN anywhere gives NaN).
fn rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut num, mut den) = (0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        if !x.is_finite() {
            return f64::NAN;
        }
        num += (x - y) * (x - y);
        den += y * y;
    }
    (num / den.max(1e-300)).sqrt()
}

fn check(name: &str, error: f64, tolerance: f64, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        error,
        tolerance,
        detail: detail.into(),
    }
}

/// Test bench: a tiny backend for its stream, kernels and cuBLAS handle.
struct Bench {
    be: CudaBackend,
    r: Rand,
}

impl Bench {
    fn up<T: DeviceRepr>(&self, v: &[T]) -> Result<CudaSlice<T>> {
        self.be
            .stream
            .clone_htod(v)
            .map_err(|e| cuda_err("upload", e))
    }
    /// A buffer of n elements filled with 0xFF bytes: NaN as f32 and as bf16.
    fn poisoned<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
        &self,
        n: usize,
    ) -> Result<CudaSlice<T>> {
        let mut s = self
            .be
            .stream
            .alloc_zeros::<T>(n)
            .map_err(|e| cuda_err("alloc", e))?;
        let p = dptr(&s, &self.be.stream);
        // SAFETY: s holds n elements of T.
        unsafe {
            cudarc::driver::result::memset_d8_async(
                p,
                0xff,
                n * std::mem::size_of::<T>(),
                self.be.stream.cu_stream(),
            )
        }
        .map_err(|e| cuda_err("memset", e))?;
        let _ = &mut s;
        Ok(s)
    }
    fn down<T: DeviceRepr + Default + Clone>(&self, s: &CudaSlice<T>) -> Result<Vec<T>> {
        let mut v = vec![T::default(); s.len()];
        self.be
            .stream
            .memcpy_dtoh(s, &mut v)
            .map_err(|e| cuda_err("download", e))?;
        Ok(v)
    }
    fn p<T>(&self, s: &CudaSlice<T>) -> u64 {
        dptr(s, &self.be.stream)
    }
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// hi + lo of a split bf16 matrix `[2·rows, width]` (or just hi when split = 1).
fn unsplit(v: &[u16], rows: usize, width: usize, split: usize) -> Vec<f64> {
    (0..rows * width)
        .map(|i| {
            let hi = bf16_to_f32(v[i]) as f64;
            if split == 2 {
                hi + bf16_to_f32(v[rows * width + i]) as f64
            } else {
                hi
            }
        })
        .collect()
}

/// Runs every kernel check on device `ordinal`.
pub fn run_kernel_checks(ordinal: usize, seed: u64) -> Result<Vec<Check>> {
    let cfg = ModelConfig::from_json(
        r#"{"architectures":["LlamaForCausalLM"],"hidden_size":48,"intermediate_size":64,
            "num_hidden_layers":1,"num_attention_heads":6,"num_key_value_heads":2,
            "vocab_size":97,"rms_norm_eps":1e-5,"tie_word_embeddings":true}"#,
    )?;
    let be = CudaBackend::random(cfg, &CudaOptions::new(ordinal, 4, 4), seed, 0.1)?;
    let mut b = Bench {
        be,
        r: Rand(Rng::new(seed)),
    };
    let mut out = Vec::new();
    out.push(check_embed(&mut b)?);
    for split in [1, 2] {
        out.push(check_residual_norm(&mut b, split)?);
    }
    out.push(check_qkv_rope(&mut b)?);
    for (window, masked) in [(None, false), (None, true), (Some(7), false)] {
        for nsplit in [1, 3] {
            out.push(check_attention(&mut b, 24, window, masked, nsplit)?);
        }
    }
    out.push(check_attention(&mut b, 64, None, false, 1)?);
    out.push(check_attention(&mut b, 64, None, true, 5)?);
    out.push(check_silu(&mut b)?);
    out.push(check_gemm(&mut b, false)?);
    out.push(check_gemm(&mut b, true)?);
    out.push(check_copy_page(&mut b)?);
    out.extend(check_sampling(&mut b)?);
    b.be.stream
        .synchronize()
        .map_err(|e| cuda_err("kernel checks", e))?;
    Ok(out)
}

fn check_embed(b: &mut Bench) -> Result<Check> {
    let (vocab, hidden, rows) = (37usize, 203usize, 7usize);
    let table = b.r.bf(vocab * hidden, 1.0);
    let toks: Vec<i32> = (0..rows).map(|_| b.r.below(vocab) as i32).collect();
    let (dt, dtab) = (b.up(&toks)?, b.up(&table)?);
    let x = b.poisoned::<f32>(rows * hidden)?;
    let (pt, ptab, px, h) = (b.p(&dt), b.p(&dtab), b.p(&x), hidden as i32);
    let mut l = b.be.stream.launch_builder(&b.be.k.embed);
    l.arg(&pt).arg(&ptab).arg(&px).arg(&h);
    // SAFETY: sizes as allocated.
    unsafe { l.launch(super::cols_cfg(rows, hidden, 256)) }.map_err(|e| cuda_err("embed", e))?;
    let got = b.down(&x)?;
    let want: Vec<f64> = toks
        .iter()
        .flat_map(|&t| table[t as usize * hidden..(t as usize + 1) * hidden].iter())
        .map(|&v| bf16_to_f32(v) as f64)
        .collect();
    Ok(check("embed", rel(&f64s(&got), &want), 0.0, "exact"))
}

fn check_residual_norm(b: &mut Bench, split: usize) -> Result<Check> {
    let (rows, hidden) = (5usize, 203usize);
    let x0 = b.r.vec(rows * hidden, 2.0);
    let delta = b.r.vec(split * rows * hidden, 1.0);
    let w = b.r.vec(hidden, 1.0);
    let eps = 1e-5f32;
    let (dx, dd, dw) = (b.up(&x0)?, b.up(&delta)?, b.up(&w)?);
    let out = b.poisoned::<u16>(split * rows * hidden)?;
    // Gathered variant: output rows 3, 0, 3 read x after the update.
    let gather = [3i32, 0, 3];
    let dg = b.up(&gather)?;
    let out_g = b.poisoned::<u16>(split * gather.len() * hidden)?;
    let (px, pd, pw, po, pg, pog) = (
        b.p(&dx),
        b.p(&dd),
        b.p(&dw),
        b.p(&out),
        b.p(&dg),
        b.p(&out_g),
    );
    let (r32, h32, s32, null, zero) = (rows as i32, hidden as i32, split as i32, 0u64, 0i32);
    let g32 = gather.len() as i32;
    {
        let mut l = b.be.stream.launch_builder(&b.be.k.residual_norm);
        l.arg(&px)
            .arg(&pd)
            .arg(&s32)
            .arg(&pw)
            .arg(&eps)
            .arg(&po)
            .arg(&null);
        l.arg(&r32).arg(&h32).arg(&s32);
        // SAFETY: sizes as allocated.
        unsafe { l.launch(super::rows_cfg(rows, super::NORM_THREADS, 0)) }
            .map_err(|e| cuda_err("norm", e))?;
    }
    {
        let mut l = b.be.stream.launch_builder(&b.be.k.residual_norm);
        l.arg(&px)
            .arg(&null)
            .arg(&zero)
            .arg(&pw)
            .arg(&eps)
            .arg(&pog)
            .arg(&pg);
        l.arg(&g32).arg(&h32).arg(&s32);
        // SAFETY: sizes as allocated.
        unsafe { l.launch(super::rows_cfg(gather.len(), super::NORM_THREADS, 0)) }
            .map_err(|e| cuda_err("norm", e))?;
    }
    let mut xr = vec![0f64; rows * hidden];
    let mut want = vec![0f64; rows * hidden];
    for r in 0..rows {
        let mut ss = 0f64;
        for i in 0..hidden {
            let mut v = x0[r * hidden + i] as f64 + delta[r * hidden + i] as f64;
            if split == 2 {
                v += delta[(rows + r) * hidden + i] as f64;
            }
            xr[r * hidden + i] = v;
            ss += v * v;
        }
        let inv = 1.0 / (ss / hidden as f64 + eps as f64).sqrt();
        for i in 0..hidden {
            want[r * hidden + i] = xr[r * hidden + i] * inv * w[i] as f64;
        }
    }
    let got_x = f64s(&b.down(&dx)?);
    let got = unsplit(&b.down(&out)?, rows, hidden, split);
    let got_g = unsplit(&b.down(&out_g)?, gather.len(), hidden, split);
    let want_g: Vec<f64> = gather
        .iter()
        .flat_map(|&r| want[r as usize * hidden..(r as usize + 1) * hidden].to_vec())
        .collect();
    let tol = if split == 2 { 2e-5 } else { 8e-3 };
    let e = rel(&got, &want)
        .max(rel(&got_g, &want_g))
        .max(rel(&got_x, &xr) * 100.0);
    Ok(check(
        &format!("residual_norm split={split} (+gather)"),
        e,
        tol,
        "f64 reference",
    ))
}

fn check_qkv_rope(b: &mut Bench) -> Result<Check> {
    let (nh, nkv, hd, ps, pages, rows) = (6usize, 2usize, 24usize, 3usize, 5usize, 7usize);
    let (qd, kvd) = (nh * hd, nkv * hd);
    let width = qd + 2 * kvd;
    let qkv = b.r.vec(2 * rows * width, 1.0);
    let bias = b.r.vec(width, 0.5);
    let pos: Vec<i32> = (0..rows).map(|_| b.r.below(5000) as i32).collect();
    let inv: Vec<f32> = (0..hd / 2)
        .map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / hd as f32))
        .collect();
    // Distinct (page, slot) per row.
    let mut cells: Vec<(i32, i32)> = (0..pages as i32)
        .flat_map(|p| (0..ps as i32).map(move |s| (p, s)))
        .collect();
    for i in (1..cells.len()).rev() {
        let j = b.r.below(i + 1);
        cells.swap(i, j);
    }
    cells.truncate(rows);
    let rp: Vec<i32> = cells.iter().map(|c| c.0).collect();
    let rs: Vec<i32> = cells.iter().map(|c| c.1).collect();
    let (dq, db, dp, di, drp, drs) = (
        b.up(&qkv)?,
        b.up(&bias)?,
        b.up(&pos)?,
        b.up(&inv)?,
        b.up(&rp)?,
        b.up(&rs)?,
    );
    let qo = b.poisoned::<f32>(rows * qd)?;
    let kc = b.poisoned::<u16>(pages * ps * kvd)?;
    let vc = b.poisoned::<u16>(pages * ps * kvd)?;
    let a = [
        b.p(&dq),
        b.p(&db),
        b.p(&dp),
        b.p(&di),
        b.p(&qo),
        b.p(&kc),
        b.p(&vc),
        b.p(&drp),
        b.p(&drs),
    ];
    let (two, r32, nh32, nkv32, hd32, ps32) = (
        2i32,
        rows as i32,
        nh as i32,
        nkv as i32,
        hd as i32,
        ps as i32,
    );
    {
        let mut l = b.be.stream.launch_builder(&b.be.k.qkv_rope_store);
        l.arg(&a[0])
            .arg(&two)
            .arg(&r32)
            .arg(&a[1])
            .arg(&a[2])
            .arg(&a[3])
            .arg(&a[4]);
        l.arg(&a[5])
            .arg(&a[6])
            .arg(&a[7])
            .arg(&a[8])
            .arg(&nh32)
            .arg(&nkv32)
            .arg(&hd32);
        l.arg(&ps32);
        // SAFETY: sizes as allocated.
        unsafe { l.launch(super::cols_cfg(rows, super::rope_items(nh, nkv, hd), 128)) }
            .map_err(|e| cuda_err("rope", e))?;
    }
    let (gq, gk, gv) = (b.down(&qo)?, b.down(&kc)?, b.down(&vc)?);
    let (mut got, mut want) = (Vec::new(), Vec::new());
    let val = |r: usize, j: usize| {
        qkv[r * width + j] as f64 + qkv[(rows + r) * width + j] as f64 + bias[j] as f64
    };
    let half = hd / 2;
    for r in 0..rows {
        for head in 0..nh + nkv {
            for i in 0..half {
                let ang = (pos[r] as f32 * inv[i]) as f64;
                let (x, y) = (val(r, head * hd + i), val(r, head * hd + i + half));
                let (o1, o2) = (x * ang.cos() - y * ang.sin(), y * ang.cos() + x * ang.sin());
                want.extend([o1, o2]);
                if head < nh {
                    got.extend(
                        [
                            gq[r * qd + head * hd + i],
                            gq[r * qd + head * hd + i + half],
                        ]
                        .map(|v| v as f64),
                    );
                } else {
                    let off = ((rp[r] as usize * nkv + head - nh) * ps + rs[r] as usize) * hd;
                    got.extend([gk[off + i], gk[off + i + half]].map(|v| bf16_to_f32(v) as f64));
                }
            }
        }
        for t in 0..kvd {
            let off = ((rp[r] as usize * nkv + t / hd) * ps + rs[r] as usize) * hd + t % hd;
            got.push(bf16_to_f32(gv[off]) as f64);
            want.push(val(r, qd + kvd + t));
        }
    }
    Ok(check(
        "qkv_rope_store (bias, split, paged bf16 K/V)",
        rel(&got, &want),
        4e-3,
        "f64 reference; K/V rounded to bf16",
    ))
}

/// Ragged batch over scattered pages; GQA group of 3; optional masks and sliding window.
fn check_attention(
    b: &mut Bench,
    hd: usize,
    window: Option<usize>,
    masked: bool,
    nsplit: usize,
) -> Result<Check> {
    let (nh, nkv, ps, pages) = (6usize, 2usize, 5usize, 40usize);
    let (qd, kvd, g) = (nh * hd, nkv * hd, nh / nkv);
    // (kv_len before, rows) per sequence.
    let seqs = [(0usize, 9usize), (23, 1), (130, 3), (4, 1)];
    let mut perm: Vec<i32> = (0..pages as i32).collect();
    for i in (1..perm.len()).rev() {
        let j = b.r.below(i + 1);
        perm.swap(i, j);
    }
    let kc_h = b.r.bf(pages * ps * kvd, 1.0);
    let vc_h = b.r.bf(pages * ps * kvd, 1.0);
    let rows: usize = seqs.iter().map(|s| s.1).sum();
    let q = b.r.vec(rows * qd, 1.0);
    let (mut pt, mut row_pt, mut row_ctx, mut row_first, mut row_mask) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut bits = Vec::new();
    let mut allowed_rows = Vec::new();
    let mut next = 0;
    for &(kv_len, n) in &seqs {
        let np = (kv_len + n).div_ceil(ps);
        let off = pt.len() as i32;
        pt.extend_from_slice(&perm[next..next + np]);
        next += np;
        for i in 0..n {
            let ctx = kv_len + i + 1;
            row_pt.push(off);
            row_ctx.push(ctx as i32);
            row_first.push(window.map_or(0, |w| ctx.saturating_sub(w)) as i32);
            let allowed: Vec<bool> = (0..ctx)
                .map(|j| !masked || j == 0 || b.r.below(3) != 0)
                .collect();
            if masked {
                row_mask.push((bits.len() * 32) as i32);
                push_bits(&mut bits, &allowed);
            } else {
                row_mask.push(-1);
            }
            allowed_rows.push((pt[off as usize..].to_vec(), allowed));
        }
    }
    bits.push(0);
    let scale = 1.0 / (hd as f32).sqrt();
    let dq = b.up(&q)?;
    let (dk, dv, dpt) = (b.up(&kc_h)?, b.up(&vc_h)?, b.up(&pt)?);
    let (drp, drc, drf, drm, dbits) = (
        b.up(&row_pt)?,
        b.up(&row_ctx)?,
        b.up(&row_first)?,
        b.up(&row_mask)?,
        b.up(&bits)?,
    );
    let split = 2usize;
    let out = b.poisoned::<u16>(split * rows * qd)?;
    let partial = b.poisoned::<f32>(rows * nkv * nsplit * (2 * g + g * hd))?;
    let pp = if nsplit > 1 { b.p(&partial) } else { 0u64 };
    let a = [
        b.p(&dq),
        b.p(&dk),
        b.p(&dv),
        b.p(&dpt),
        b.p(&drp),
        b.p(&drc),
        b.p(&drf),
        b.p(&drm),
        b.p(&dbits),
        b.p(&out),
    ];
    let (r32, s32, nh32, nkv32, hd32, ps32) = (
        rows as i32,
        split as i32,
        nh as i32,
        nkv as i32,
        hd as i32,
        ps as i32,
    );
    {
        let mut l = b.be.stream.launch_builder(&b.be.k.attention);
        for p in &a {
            l.arg(p);
        }
        l.arg(&r32)
            .arg(&s32)
            .arg(&nh32)
            .arg(&nkv32)
            .arg(&hd32)
            .arg(&ps32)
            .arg(&scale)
            .arg(&pp);
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, nkv as u32, nsplit as u32),
            block_dim: (128, 1, 1),
            shared_mem_bytes: super::attention_smem(g, hd) as u32,
        };
        // SAFETY: sizes as allocated; shared memory as the kernel lays it out.
        unsafe { l.launch(cfg) }.map_err(|e| cuda_err("attention", e))?;
    }
    if nsplit > 1 {
        let (ns32, po) = (nsplit as i32, b.p(&out));
        let mut l = b.be.stream.launch_builder(&b.be.k.attention_combine);
        l.arg(&pp)
            .arg(&po)
            .arg(&r32)
            .arg(&s32)
            .arg(&nh32)
            .arg(&nkv32)
            .arg(&hd32)
            .arg(&ns32);
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, nkv as u32, 1),
            block_dim: (128, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: reads the partial records written above.
        unsafe { l.launch(cfg) }.map_err(|e| cuda_err("attention_combine", e))?;
    }
    let got = unsplit(&b.down(&out)?, rows, qd, split);
    let mut want = vec![0f64; rows * qd];
    for (r, (pages_r, allowed)) in allowed_rows.iter().enumerate() {
        let ctx = row_ctx[r] as usize;
        let first = row_first[r] as usize;
        for h in 0..nh {
            let kvh = h / g;
            let at = |j: usize| ((pages_r[j / ps] as usize * nkv + kvh) * ps + j % ps) * hd;
            let mut sc = vec![f64::NEG_INFINITY; ctx];
            for j in first..ctx {
                if allowed[j] {
                    let o = at(j);
                    sc[j] = (0..hd)
                        .map(|d| q[r * qd + h * hd + d] as f64 * bf16_to_f32(kc_h[o + d]) as f64)
                        .sum::<f64>()
                        * scale as f64;
                }
            }
            let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if m == f64::NEG_INFINITY {
                continue;
            }
            let z: f64 = sc.iter().map(|s| (s - m).exp()).sum();
            for (j, s) in sc.iter().enumerate() {
                let p = (s - m).exp() / z;
                if p > 0.0 {
                    let o = at(j);
                    for d in 0..hd {
                        want[r * qd + h * hd + d] += p * bf16_to_f32(vc_h[o + d]) as f64;
                    }
                }
            }
        }
    }
    Ok(check(
        &format!(
            "attention hd={hd} window={window:?} mask={masked} splits={nsplit} (GQA 3, ragged, paged)"
        ),
        rel(&got, &want),
        1e-5,
        "f64 reference over the same bf16 K/V",
    ))
}

fn check_silu(b: &mut Bench) -> Result<Check> {
    let (rows, inter) = (3usize, 333usize);
    let gu = b.r.vec(2 * rows * 2 * inter, 3.0);
    let dg = b.up(&gu)?;
    let out = b.poisoned::<u16>(2 * rows * inter)?;
    let (pg, po, two, r32, i32_) = (b.p(&dg), b.p(&out), 2i32, rows as i32, inter as i32);
    let mut l = b.be.stream.launch_builder(&b.be.k.silu_mul);
    l.arg(&pg).arg(&two).arg(&po).arg(&r32).arg(&i32_).arg(&two);
    // SAFETY: sizes as allocated.
    unsafe { l.launch(super::cols_cfg(rows, inter, 256)) }.map_err(|e| cuda_err("silu", e))?;
    let got = unsplit(&b.down(&out)?, rows, inter, 2);
    let w = 2 * inter;
    let want: Vec<f64> = (0..rows * inter)
        .map(|k| {
            let (r, i) = (k / inter, k % inter);
            let g = gu[r * w + i] as f64 + gu[(rows + r) * w + i] as f64;
            let u = gu[r * w + inter + i] as f64 + gu[(rows + r) * w + inter + i] as f64;
            g / (1.0 + (-g).exp()) * u
        })
        .collect();
    Ok(check(
        "silu_mul split",
        rel(&got, &want),
        2e-5,
        "f64 reference",
    ))
}

fn check_gemm(b: &mut Bench, gemv: bool) -> Result<Check> {
    let (rows, n, k) = if gemv {
        (5usize, 1029usize, 2056usize)
    } else {
        (37, 129, 72)
    };
    let w = b.r.bf(n * k, 1.0);
    let x = b.r.bf(rows * k, 1.0);
    let (dw, dx) = (b.up(&w)?, b.up(&x)?);
    let y = b.poisoned::<f32>(rows * n)?;
    if gemv {
        b.be.gemm(b.p(&dw), b.p(&dx), b.p(&y), rows, n, k)?;
    } else {
        b.be.cublas_gemm(b.p(&dw), b.p(&dx), b.p(&y), rows, n, k)?;
    }
    let got = f64s(&b.down(&y)?);
    let want: Vec<f64> = (0..rows * n)
        .map(|i| {
            let (r, c) = (i / n, i % n);
            (0..k)
                .map(|j| bf16_to_f32(x[r * k + j]) as f64 * bf16_to_f32(w[c * k + j]) as f64)
                .sum()
        })
        .collect();
    Ok(check(
        if gemv {
            "gemv_bf16 (5 rows, k 2056)"
        } else {
            "cuBLAS bf16 GEMM (f32 out)"
        },
        rel(&got, &want),
        1e-5,
        "exact bf16 products, f64 sum",
    ))
}

fn check_copy_page(b: &mut Bench) -> Result<Check> {
    let be = &mut b.be;
    let n = be.kc.len();
    let kv: Vec<u16> = (0..n).map(|i| (i % 60000) as u16).collect();
    let vv: Vec<u16> = (0..n).map(|i| ((i * 7) % 60000) as u16).collect();
    be.stream
        .memcpy_htod(&kv, &mut be.kc)
        .map_err(|e| cuda_err("upload", e))?;
    be.stream
        .memcpy_htod(&vv, &mut be.vc)
        .map_err(|e| cuda_err("upload", e))?;
    crate::backend::Backend::copy_page(be, 1, 3);
    let (mut gk, mut gv) = (vec![0u16; n], vec![0u16; n]);
    be.stream
        .memcpy_dtoh(&be.kc, &mut gk)
        .map_err(|e| cuda_err("download", e))?;
    be.stream
        .memcpy_dtoh(&be.vc, &mut gv)
        .map_err(|e| cuda_err("download", e))?;
    let page = be.page_size * be.cfg.kv_dim();
    let layers = be.cfg.num_layers;
    let stride = be.num_pages * page;
    let mut wk = kv.clone();
    let mut wv = vv.clone();
    for l in 0..layers {
        let (s, d) = (l * stride + page, l * stride + 3 * page);
        wk.copy_within(s..s + page, d);
        wv.copy_within(s..s + page, d);
    }
    let bad = gk.iter().zip(&wk).filter(|(a, b)| a != b).count()
        + gv.iter().zip(&wv).filter(|(a, b)| a != b).count();
    Ok(check(
        "copy_page (all layers, K and V)",
        bad as f64,
        0.0,
        "mismatching elements",
    ))
}

/// Device sampling against the CPU sampler on the same logits.
fn check_sampling(b: &mut Bench) -> Result<Vec<Check>> {
    let mut out = Vec::new();
    for vocab in [1000usize, 49152, 128_256] {
        let n_rows = 6;
        let mut logits = Vec::with_capacity(n_rows * vocab);
        for r in 0..n_rows {
            let scale = [1.0f32, 4.0, 8.0, 2.0, 6.0, 3.0][r];
            logits.extend(b.r.vec(vocab, scale));
        }
        // A tie at the maximum in row 0: the lower id wins on both backends.
        let (m, _) = logits[..vocab]
            .iter()
            .enumerate()
            .fold((f32::MIN, 0), |a, (i, &x)| if x > a.0 { (x, i) } else { a });
        logits[vocab / 2] = m;
        logits[vocab - 1] = m;
        let mask = Brle::from_bools(&(0..vocab).map(|i| i % 5 != 1).collect::<Vec<_>>());
        let samplers = [
            Sampler::Greedy,
            Sampler::TopKDistribution {
                k: 20,
                temperature: 0.7,
            },
            Sampler::Logprobs {
                tokens: vec![0, 3, (vocab - 1) as u32, vocab as u32 + 5],
            },
            Sampler::Entropy,
            Sampler::Logprob { token: 7 },
            Sampler::Greedy,
        ];
        let masks: Vec<Option<&Brle>> =
            vec![None, None, None, Some(&mask), Some(&mask), Some(&mask)];
        let slots: Vec<OutputSlot> = samplers
            .iter()
            .zip(&masks)
            .map(|(s, m)| OutputSlot {
                sampler: s,
                logit_mask: *m,
            })
            .collect();
        let dl = b.up(&logits)?;
        let pl = b.p(&dl);
        let got = super::sample::run(&mut b.be, pl, vocab, &slots)?;
        let mut worst = 0f64;
        let mut detail = Vec::new();
        for (i, s) in slots.iter().enumerate() {
            let want = sample_slot(s.sampler, s.logit_mask, &logits[i * vocab..(i + 1) * vocab]);
            let e = compare_output(&got[i], &want);
            if e > 1e-4 {
                detail.push(format!("slot {i} {:?}: err {e:.2e}", s.sampler));
            }
            worst = worst.max(e);
        }
        out.push(check(
            &format!(
                "sample_slots vocab={vocab}: greedy (tie, mask), top-k dist, logprobs, entropy"
            ),
            worst,
            1e-4,
            if detail.is_empty() {
                "vs CPU sampler".to_string()
            } else {
                detail.join("; ")
            },
        ));
        // Sampling: the device draws by inverse CDF in id order, the CPU in probability order,
        // so compare distributions: N draws on a uniform grid give each token's mass to 1/N.
        for params in [
            (0.8f32, None, None, None),
            (1.0, Some(40usize), None, None),
            (0.9, None, Some(0.8f32), None),
            (1.2, Some(200), Some(0.95), Some(0.05f32)),
        ] {
            let row = 1;
            let sp = SampleParams {
                temperature: params.0,
                top_k: params.1,
                top_p: params.2,
                min_p: params.3,
                seed: 0,
            };
            let n = 2000;
            let row_logits = &logits[row * vocab..(row + 1) * vocab];
            let dl1 = b.up(row_logits)?;
            // Draws on a uniform grid instead of seeded ones: launch the kernel directly.
            let toks = sample_grid(b, b.p(&dl1), vocab, &sp, n)?;
            // The device inverts the CDF of the kept tokens in id order; the reference does the
            // same over the CPU sampler's kept set and probabilities. Only draws within
            // rounding of a token boundary may differ.
            let want = cpu_distribution(row_logits, &sp);
            let mut kept: Vec<(u32, f64)> = want.iter().map(|(&t, &p)| (t, p)).collect();
            kept.sort_by_key(|k| k.0);
            let mut mismatches = 0;
            for (i, &g) in toks.iter().enumerate() {
                let u = (i as f64 + 0.5) / n as f64;
                let mut acc = 0.0;
                let mut pick = kept[kept.len() - 1].0;
                for &(t, p) in &kept {
                    acc += p;
                    if u < acc {
                        pick = t;
                        break;
                    }
                }
                mismatches += (pick != g) as usize;
            }
            out.push(check(
                &format!(
                    "sample_slots vocab={vocab} T={} top_k={:?} top_p={:?} min_p={:?}",
                    sp.temperature, sp.top_k, sp.top_p, sp.min_p
                ),
                mismatches as f64 / n as f64,
                0.01,
                format!(
                    "share of {n} grid draws off the CPU distribution's inverse CDF, {} tokens kept",
                    want.len()
                ),
            ));
        }
    }
    Ok(out)
}

/// Runs `sample_slots` for one logits row with n draws at u = (i + 0.5) / n.
fn sample_grid(
    b: &mut Bench,
    logits: u64,
    vocab: usize,
    sp: &SampleParams,
    n: usize,
) -> Result<Vec<u32>> {
    let z = vec![0i32; n];
    let kind = vec![1i32; n];
    let temp = vec![sp.temperature; n];
    let top_k = vec![sp.top_k.map_or(0, |k| k as i32); n];
    let top_p = vec![sp.top_p.unwrap_or(2.0); n];
    let min_p = vec![sp.min_p.unwrap_or(0.0); n];
    let unif: Vec<f32> = (0..n).map(|i| (i as f32 + 0.5) / n as f32).collect();
    let moff = vec![-1i32; n];
    let bits = vec![0u32; 1];
    let res_off: Vec<i32> = (0..n).map(|i| 5 * i as i32).collect();
    let d = [
        b.up(&z)?,
        b.up(&kind)?,
        b.up(&top_k)?,
        b.up(&moff)?,
        b.up(&res_off)?,
        b.up(&z)?,
        b.up(&z)?,
        b.up(&z)?,
        b.up(&z)?,
    ];
    let (dt, dp, dm, du, db) = (
        b.up(&temp)?,
        b.up(&top_p)?,
        b.up(&min_p)?,
        b.up(&unif)?,
        b.up(&bits)?,
    );
    let res = b.poisoned::<f32>(5 * n)?;
    let v32 = vocab as i32;
    let a = [
        b.p(&d[0]),
        b.p(&d[1]),
        b.p(&dt),
        b.p(&d[2]),
        b.p(&dp),
        b.p(&dm),
        b.p(&du),
        b.p(&d[3]),
        b.p(&db),
        b.p(&d[4]),
        b.p(&d[5]),
        b.p(&d[6]),
        b.p(&d[7]),
        b.p(&d[8]),
        b.p(&res),
    ];
    {
        let mut l = b.be.stream.launch_builder(&b.be.k.sample_slots);
        l.arg(&logits).arg(&v32);
        for p in &a {
            l.arg(p);
        }
        let cfg = LaunchConfig {
            grid_dim: (n as u32, 1, 1),
            block_dim: (1024, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: every array holds n entries (slot_row all 0: one logits row).
        unsafe { l.launch(cfg) }.map_err(|e| cuda_err("sample_slots", e))?;
    }
    let r = b.down(&res)?;
    Ok((0..n).map(|i| r[5 * i].to_bits()).collect())
}

/// The CPU sampler's distribution over tokens (the same filters, in the same order).
fn cpu_distribution(logits: &[f32], p: &SampleParams) -> std::collections::HashMap<u32, f64> {
    let mut v: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &x)| (i as u32, x))
        .collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(p.top_k.unwrap_or(v.len()).max(1));
    let max = v[0].1;
    let mut probs: Vec<f64> = v
        .iter()
        .map(|c| (((c.1 - max) / p.temperature) as f64).exp())
        .collect();
    let tot: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|x| *x /= tot);
    let mut keep = probs.len();
    if let Some(tp) = p.top_p {
        let mut acc = 0.0;
        for (i, &x) in probs.iter().enumerate() {
            acc += x;
            if acc >= tp as f64 {
                keep = i + 1;
                break;
            }
        }
    }
    if let Some(mp) = p.min_p {
        let th = probs[0] * mp as f64;
        keep = keep.min(probs.iter().take_while(|&&x| x >= th).count().max(1));
    }
    let tot: f64 = probs[..keep].iter().sum();
    v[..keep]
        .iter()
        .zip(&probs)
        .map(|(c, &x)| (c.0, x / tot))
        .collect()
}

/// Largest relative difference between two outputs of the same sampler (1 if they differ in
/// kind or in token ids).
pub fn compare_output(a: &SampleOutput, b: &SampleOutput) -> f64 {
    let close = |x: f32, y: f32| {
        if x == y || (x.is_infinite() && y.is_infinite() && x.signum() == y.signum()) {
            0.0
        } else {
            ((x - y).abs() / y.abs().max(1.0)) as f64
        }
    };
    match (a, b) {
        (SampleOutput::Token(x), SampleOutput::Token(y)) => (x != y) as u8 as f64,
        (
            SampleOutput::Distribution { ids: i1, probs: p1 },
            SampleOutput::Distribution { ids: i2, probs: p2 },
        ) => {
            if i1 != i2 {
                return 1.0;
            }
            p1.iter()
                .zip(p2)
                .map(|(x, y)| close(*x, *y))
                .fold(0.0, f64::max)
        }
        (SampleOutput::Logprob(x), SampleOutput::Logprob(y))
        | (SampleOutput::Entropy(x), SampleOutput::Entropy(y)) => close(*x, *y),
        (SampleOutput::Logprobs(x), SampleOutput::Logprobs(y)) => {
            if x.len() != y.len() {
                return 1.0;
            }
            x.iter()
                .zip(y)
                .map(|(a, b)| close(*a, *b))
                .fold(0.0, f64::max)
        }
        (SampleOutput::Logits(x), SampleOutput::Logits(y)) => rel(&f64s(x), &f64s(y)),
        _ => 1.0,
    }
}
