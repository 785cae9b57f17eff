//! `out[M, N] (+)= A[M, K] · W[N, K]ᵀ` with bf16 weights and f32 accumulation.
//!
//! Weights are repacked once at load into blocks of 16 output rows: for every pair of K
//! columns a 64-byte chunk holds the 16 rows' two values interleaved. That is exactly the
//! operand layout of AVX512-BF16 `vdpbf16ps` (16 f32 lanes, each += a0·w0 + a1·w1), and it
//! streams weights sequentially, which is what matters for decode (memory-bound).
//!
//! Activations are f32 by default (`ActPrecision::F32`): bf16 weights are widened with a shift
//! or a mask and multiplied with FMA, which matches an f32 reference. For M = 1 (decode) the
//! GEMV reads the packed blocks directly; for M > 1 each block is widened once into a small
//! aligned buffer and a 6×16 tile runs over K-major activation panels. `ActPrecision::Bf16`
//! rounds activations to bf16 (as llama.cpp does for bf16 weights) to use `vdpbf16ps`.
//!
//! Every kernel accumulates each output in K order, in one chain, independent of M and of the
//! tiling, so a row gives the same bits whether it is computed alone or in a batch.

// Kernels take the operands, strides and tile position explicitly.
#![allow(clippy::too_many_arguments)]

use super::pool::{SyncPtr, ThreadPool};
use super::simd::Isa;
use crate::weights::{bf16_to_f32, f32_to_bf16};

/// 16 output rows × 2 consecutive K values, bf16.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct Chunk(pub [u16; 32]);

/// A weight matrix `[n, k]` in the blocked layout above.
pub struct PackedMatrix {
    pub n: usize,
    pub k: usize,
    /// K pairs (K rounded up to even, halved).
    kp: usize,
    /// Blocks of 16 rows.
    nb: usize,
    data: Vec<Chunk>,
}

impl PackedMatrix {
    /// Packs row-major bf16 `w` of shape `[n, k]`.
    pub fn pack(w: &[u16], n: usize, k: usize) -> Self {
        assert_eq!(w.len(), n * k, "weight length does not match its shape");
        let kp = k.div_ceil(2);
        let nb = n.div_ceil(16);
        let mut data = vec![Chunk([0; 32]); nb * kp];
        for (row, src) in w.chunks_exact(k).enumerate() {
            let (b, lane) = (row / 16, row % 16);
            let blk = &mut data[b * kp..(b + 1) * kp];
            for (j, &v) in src.iter().enumerate() {
                blk[j / 2].0[lane * 2 + (j & 1)] = v;
            }
        }
        PackedMatrix { n, k, kp, nb, data }
    }

    /// Row `r` as f32 (an embedding lookup from a tied LM head).
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let (b, lane) = (r / 16, r % 16);
        let blk = &self.data[b * self.kp..(b + 1) * self.kp];
        for (j, o) in out.iter_mut().enumerate().take(self.k) {
            *o = bf16_to_f32(blk[j / 2].0[lane * 2 + (j & 1)]);
        }
    }

    /// Bytes held.
    pub fn size_bytes(&self) -> usize {
        self.data.len() * 64
    }
}

/// Activations rounded to bf16, two per u32 (low half = even column), rows padded to `kp`.
pub fn pack_activations(a: &[f32], m: usize, k: usize, out: &mut Vec<u32>) {
    let kp = k.div_ceil(2);
    out.clear();
    out.resize(m * kp, 0);
    for r in 0..m {
        let row = &a[r * k..(r + 1) * k];
        let dst = &mut out[r * kp..(r + 1) * kp];
        for (p, d) in dst.iter_mut().enumerate() {
            let lo = f32_to_bf16(row[2 * p]) as u32;
            let hi = if 2 * p + 1 < k {
                f32_to_bf16(row[2 * p + 1]) as u32
            } else {
                0
            };
            *d = lo | (hi << 16);
        }
    }
}

/// Reusable activation buffers of `matmul`.
#[derive(Default)]
pub struct GemmScratch {
    pairs: Vec<u32>,
    f32s: Vec<f32>,
}

/// How activations enter the GEMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActPrecision {
    /// f32 activations times bf16 weights widened to f32 (FMA): matches an f32 reference.
    F32,
    /// Activations rounded to bf16, `vdpbf16ps` where available: about twice the compute
    /// throughput, with ~0.1 logit error on a 135M model.
    Bf16,
}

/// Activations as f32 with rows padded to an even length (`2 * kp`).
pub fn pad_activations(a: &[f32], m: usize, k: usize, out: &mut Vec<f32>) {
    let k2 = k.div_ceil(2) * 2;
    out.clear();
    out.resize(m * k2, 0.0);
    for r in 0..m {
        out[r * k2..r * k2 + k].copy_from_slice(&a[r * k..(r + 1) * k]);
    }
}

/// Rows per activation panel of the AVX2 GEMM tile.
const PANEL: usize = 6;

/// Activations as panels of `PANEL` rows, K-major inside a panel (`[m/6][k2][6]`, zero
/// padded), so the GEMM tile broadcasts from one sequential stream with fixed offsets.
pub fn pack_panels(a: &[f32], m: usize, k: usize, out: &mut Vec<f32>) {
    let k2 = k.div_ceil(2) * 2;
    let panels = m.div_ceil(PANEL);
    out.clear();
    out.resize(panels * k2 * PANEL, 0.0);
    for r in 0..m {
        let (q, rr) = (r / PANEL, r % PANEL);
        let base = q * k2 * PANEL + rr;
        for (kk, &v) in a[r * k..(r + 1) * k].iter().enumerate() {
            out[base + kk * PANEL] = v;
        }
    }
}

/// Computes `out = a · wᵀ` (or `out += …` when `accumulate`) for `m` rows.
/// `a` is `[m, k]` f32, `out` is `[m, w.n]`. `scratch` holds the packed activations.
pub fn matmul(
    pool: &ThreadPool,
    isa: Isa,
    a: &[f32],
    m: usize,
    w: &PackedMatrix,
    out: &mut [f32],
    accumulate: bool,
    prec: ActPrecision,
    scratch: &mut GemmScratch,
) {
    assert!(a.len() >= m * w.k && out.len() >= m * w.n);
    if m == 0 {
        return;
    }
    // Activations as bf16 pairs (vdpbf16ps / portable), K-major panels (AVX2 tile) or padded
    // f32 rows (GEMV and the AVX-512 f32 tile).
    let f32_mode = prec == ActPrecision::F32 && isa != Isa::Portable;
    if f32_mode && isa == Isa::Avx2 && m > 1 {
        pack_panels(a, m, w.k, &mut scratch.f32s);
    } else if f32_mode {
        pad_activations(a, m, w.k, &mut scratch.f32s);
    } else {
        pack_activations(a, m, w.k, &mut scratch.pairs);
    }
    let (ap, af) = (&scratch.pairs[..], &scratch.f32s[..]);
    // Work units are four 16-row blocks (the GEMV kernel's width); a few units per thread
    // balance threads that run at uneven speeds on a shared machine.
    const UNIT: usize = 4;
    let units = w.nb.div_ceil(UNIT);
    let n_tasks = units.min(pool.n_threads() * 8).max(1);
    let per = units.div_ceil(n_tasks);
    let n_tasks = units.div_ceil(per);
    let outp = SyncPtr(out.as_mut_ptr());
    pool.run(n_tasks, &|t| {
        let b0 = t * per * UNIT;
        let b1 = ((t + 1) * per * UNIT).min(w.nb);
        // SAFETY: tasks write disjoint column ranges [b0*16, b1*16) of `out`.
        unsafe {
            if f32_mode {
                run_blocks_f32(isa, af, m, w, b0, b1, outp.ptr(), accumulate)
            } else {
                run_blocks(isa, ap, m, w, b0, b1, outp.ptr(), accumulate)
            }
        };
    });
}

/// Blocks `[b0, b1)` for all `m` rows.
unsafe fn run_blocks(
    isa: Isa,
    a: &[u32],
    m: usize,
    w: &PackedMatrix,
    b0: usize,
    b1: usize,
    out: *mut f32,
    acc: bool,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 => unsafe { x86::blocks_bf16(a, m, w, b0, b1, out, acc) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::blocks_avx2(a, m, w, b0, b1, out, acc) },
        _ => unsafe { blocks_portable(a, m, w, b0, b1, out, acc) },
    }
}

/// Blocks `[b0, b1)` with f32 activations (`a` rows are `2 * kp` long).
#[allow(clippy::too_many_arguments)]
unsafe fn run_blocks_f32(
    isa: Isa,
    a: &[f32],
    m: usize,
    w: &PackedMatrix,
    b0: usize,
    b1: usize,
    out: *mut f32,
    acc: bool,
) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 => unsafe { x86::blocks_f32_512(a, m, w, b0, b1, out, acc) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::blocks_f32_avx2(a, m, w, b0, b1, out, acc) },
        _ => unreachable!("portable GEMM uses bf16 activations"),
    }
}

/// Writes one 16-lane block result row, clipped to the matrix width.
#[inline(always)]
unsafe fn store_lanes(vals: &[f32; 16], out: *mut f32, col0: usize, n: usize, acc: bool) {
    let valid = n.saturating_sub(col0).min(16);
    for (l, &v) in vals.iter().enumerate().take(valid) {
        unsafe {
            let p = out.add(col0 + l);
            *p = if acc { *p + v } else { v };
        }
    }
}

unsafe fn blocks_portable(
    a: &[u32],
    m: usize,
    w: &PackedMatrix,
    b0: usize,
    b1: usize,
    out: *mut f32,
    acc: bool,
) {
    let kp = w.kp;
    for b in b0..b1 {
        let blk = &w.data[b * kp..(b + 1) * kp];
        for r in 0..m {
            let arow = &a[r * kp..(r + 1) * kp];
            let mut s = [0f32; 16];
            for (c, &pair) in blk.iter().zip(arow) {
                let a0 = bf16_to_f32(pair as u16);
                let a1 = bf16_to_f32((pair >> 16) as u16);
                for (l, sl) in s.iter_mut().enumerate() {
                    *sl = a1.mul_add(
                        bf16_to_f32(c.0[2 * l + 1]),
                        a0.mul_add(bf16_to_f32(c.0[2 * l]), *sl),
                    );
                }
            }
            unsafe { store_lanes(&s, out.add(r * w.n), b * 16, w.n, acc) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// Stores 16 lanes at `out[col0..]`, masked at the matrix edge.
    #[inline(always)]
    unsafe fn store16(v: __m512, out: *mut f32, col0: usize, n: usize, acc: bool) {
        let valid = n.saturating_sub(col0).min(16);
        let mask: __mmask16 = if valid == 16 {
            0xffff
        } else {
            ((1u32 << valid) - 1) as u16
        };
        unsafe {
            let p = out.add(col0);
            let v = if acc {
                _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, p))
            } else {
                v
            };
            _mm512_mask_storeu_ps(p, mask, v);
        }
    }

    /// MR rows × NB blocks of 16 columns, full K.
    #[inline(always)]
    unsafe fn tile_bf16<const MR: usize, const NB: usize>(
        a: *const u32,
        kp: usize,
        w: *const Chunk,
        out: *mut f32,
        ldo: usize,
        col0: usize,
        n: usize,
        acc: bool,
    ) {
        unsafe {
            let mut c = [[_mm512_setzero_ps(); NB]; MR];
            for p in 0..kp {
                let mut wv = [_mm512_setzero_si512(); NB];
                for (j, wj) in wv.iter_mut().enumerate() {
                    *wj = _mm512_load_si512(w.add(j * kp + p) as *const __m512i);
                }
                for (r, cr) in c.iter_mut().enumerate() {
                    let av: __m512bh =
                        std::mem::transmute(_mm512_set1_epi32(*a.add(r * kp + p) as i32));
                    for (j, crj) in cr.iter_mut().enumerate() {
                        *crj = _mm512_dpbf16_ps(
                            *crj,
                            std::mem::transmute::<__m512i, __m512bh>(wv[j]),
                            av,
                        );
                    }
                }
            }
            for (r, cr) in c.iter().enumerate() {
                for (j, &v) in cr.iter().enumerate() {
                    store16(v, out.add(r * ldo), col0 + j * 16, n, acc);
                }
            }
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn blocks_bf16(
        a: &[u32],
        m: usize,
        w: &PackedMatrix,
        b0: usize,
        b1: usize,
        out: *mut f32,
        acc: bool,
    ) {
        const MR: usize = 8;
        let kp = w.kp;
        let mut b = b0;
        while b < b1 {
            let nb2 = b + 1 < b1;
            let wp = unsafe { w.data.as_ptr().add(b * kp) };
            let mut r = 0;
            while r < m {
                let ap = unsafe { a.as_ptr().add(r * kp) };
                let op = unsafe { out.add(r * w.n) };
                let rows = (m - r).min(MR);
                macro_rules! go {
                    ($mr:literal) => {
                        unsafe {
                            if nb2 {
                                tile_bf16::<$mr, 2>(ap, kp, wp, op, w.n, b * 16, w.n, acc)
                            } else {
                                tile_bf16::<$mr, 1>(ap, kp, wp, op, w.n, b * 16, w.n, acc)
                            }
                        }
                    };
                }
                match rows {
                    8 => go!(8),
                    7 => go!(7),
                    6 => go!(6),
                    5 => go!(5),
                    4 => go!(4),
                    3 => go!(3),
                    2 => go!(2),
                    _ => go!(1),
                }
                r += rows;
            }
            b += if nb2 { 2 } else { 1 };
        }
    }

    /// f32-activation tile: MR rows × NB blocks; weights widened from bf16 by shifts.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_f32<const MR: usize, const NB: usize>(
        a: *const f32,
        kp: usize,
        w: *const Chunk,
        out: *mut f32,
        ldo: usize,
        col0: usize,
        n: usize,
        acc: bool,
    ) {
        unsafe {
            let hi_mask = _mm512_set1_epi32(0xffff_0000u32 as i32);
            let mut c = [[_mm512_setzero_ps(); NB]; MR];
            for p in 0..kp {
                let mut even = [_mm512_setzero_ps(); NB];
                let mut odd = [_mm512_setzero_ps(); NB];
                for j in 0..NB {
                    let wv = _mm512_load_si512(w.add(j * kp + p) as *const __m512i);
                    even[j] = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(wv));
                    odd[j] = _mm512_castsi512_ps(_mm512_and_si512(wv, hi_mask));
                }
                for (r, cr) in c.iter_mut().enumerate() {
                    let a0 = _mm512_set1_ps(*a.add(r * 2 * kp + 2 * p));
                    let a1 = _mm512_set1_ps(*a.add(r * 2 * kp + 2 * p + 1));
                    for j in 0..NB {
                        cr[j] = _mm512_fmadd_ps(odd[j], a1, _mm512_fmadd_ps(even[j], a0, cr[j]));
                    }
                }
            }
            for (r, cr) in c.iter().enumerate() {
                for (j, &v) in cr.iter().enumerate() {
                    store16(v, out.add(r * ldo), col0 + j * 16, n, acc);
                }
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn blocks_f32_512(
        a: &[f32],
        m: usize,
        w: &PackedMatrix,
        b0: usize,
        b1: usize,
        out: *mut f32,
        acc: bool,
    ) {
        const MR: usize = 6;
        let kp = w.kp;
        let mut b = b0;
        while b < b1 {
            let nb2 = b + 1 < b1;
            let wp = unsafe { w.data.as_ptr().add(b * kp) };
            let mut r = 0;
            while r < m {
                let ap = unsafe { a.as_ptr().add(r * 2 * kp) };
                let op = unsafe { out.add(r * w.n) };
                let rows = (m - r).min(MR);
                macro_rules! go {
                    ($mr:literal) => {
                        unsafe {
                            if nb2 {
                                tile_f32::<$mr, 2>(ap, kp, wp, op, w.n, b * 16, w.n, acc)
                            } else {
                                tile_f32::<$mr, 1>(ap, kp, wp, op, w.n, b * 16, w.n, acc)
                            }
                        }
                    };
                }
                match rows {
                    6 => go!(6),
                    5 => go!(5),
                    4 => go!(4),
                    3 => go!(3),
                    2 => go!(2),
                    _ => go!(1),
                }
                r += rows;
            }
            b += if nb2 { 2 } else { 1 };
        }
    }

    /// Splits 16 lanes × 2 bf16 (one 64-byte chunk) into even/odd f32 halves:
    /// returns (even lanes 0-7, odd lanes 0-7, even lanes 8-15, odd lanes 8-15).
    #[inline(always)]
    unsafe fn widen_avx2(c: *const Chunk) -> [__m256; 4] {
        unsafe {
            let hi_mask = _mm256_set1_epi32(0xffff_0000u32 as i32);
            let base = c as *const __m256i;
            let h0 = _mm256_load_si256(base);
            let h1 = _mm256_load_si256(base.add(1));
            [
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h0)),
                _mm256_castsi256_ps(_mm256_and_si256(h0, hi_mask)),
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h1)),
                _mm256_castsi256_ps(_mm256_and_si256(h1, hi_mask)),
            ]
        }
    }

    #[inline(always)]
    unsafe fn store_avx2(lo: __m256, hi: __m256, out: *mut f32, col0: usize, n: usize, acc: bool) {
        unsafe {
            if col0 + 16 <= n {
                let p = out.add(col0);
                let (lo, hi) = if acc {
                    (
                        _mm256_add_ps(lo, _mm256_loadu_ps(p)),
                        _mm256_add_ps(hi, _mm256_loadu_ps(p.add(8))),
                    )
                } else {
                    (lo, hi)
                };
                _mm256_storeu_ps(p, lo);
                _mm256_storeu_ps(p.add(8), hi);
            } else {
                let mut vals = [0f32; 16];
                _mm256_storeu_ps(vals.as_mut_ptr(), lo);
                _mm256_storeu_ps(vals.as_mut_ptr().add(8), hi);
                store_lanes(&vals, out, col0, n, acc);
            }
        }
    }

    /// One row × four blocks (GEMV, the decode case). Each accumulator adds the even then the
    /// odd K column, i.e. K in natural order, exactly as `tile6` does, so a row gives the same
    /// bits alone or in a batch. Eight independent chains of two FMAs per step match the FMA
    /// latency, so the kernel is limited by memory bandwidth, as a GEMV should be.
    #[inline(always)]
    unsafe fn gemv_f32_avx2<const NB: usize>(
        a: *const f32,
        kp: usize,
        w: *const Chunk,
        out: *mut f32,
        col0: usize,
        n: usize,
        acc: bool,
    ) {
        unsafe {
            let mut c = [[_mm256_setzero_ps(); 2]; NB];
            for p in 0..kp {
                let a0 = _mm256_set1_ps(*a.add(2 * p));
                let a1 = _mm256_set1_ps(*a.add(2 * p + 1));
                for (j, cj) in c.iter_mut().enumerate() {
                    let x = widen_avx2(w.add(j * kp + p));
                    cj[0] = _mm256_fmadd_ps(x[1], a1, _mm256_fmadd_ps(x[0], a0, cj[0]));
                    cj[1] = _mm256_fmadd_ps(x[3], a1, _mm256_fmadd_ps(x[2], a0, cj[1]));
                }
            }
            for (j, cj) in c.iter().enumerate() {
                store_avx2(cj[0], cj[1], out, col0 + 16 * j, n, acc);
            }
        }
    }

    /// Widens one packed block into `buf` as `[k][16]` f32 (K padded to even).
    #[inline(always)]
    unsafe fn widen_block(w: *const Chunk, kp: usize, buf: *mut f32) {
        unsafe {
            for p in 0..kp {
                let x = widen_avx2(w.add(p));
                let d = buf.add(32 * p);
                _mm256_storeu_ps(d, x[0]);
                _mm256_storeu_ps(d.add(8), x[2]);
                _mm256_storeu_ps(d.add(16), x[1]);
                _mm256_storeu_ps(d.add(24), x[3]);
            }
        }
    }

    /// MR (≤ 6) rows × 16 columns from a widened block: the classic 6×16 AVX2 SGEMM tile
    /// (12 accumulators, 2 weight loads and MR broadcasts per K step). `a` is one activation
    /// panel (`[k2][PANEL]`). A non-null `prefetch` (the next packed block) is pulled into L2
    /// meanwhile, so that its widening does not wait for DRAM (batched decode streams every
    /// weight from DRAM once per step).
    #[inline(always)]
    unsafe fn tile6<const MR: usize>(
        a: *const f32,
        wb: *const f32,
        k2: usize,
        out: *mut f32,
        ldo: usize,
        col0: usize,
        n: usize,
        acc: bool,
        prefetch: *const u8,
    ) {
        unsafe {
            let mut c = [[_mm256_setzero_ps(); 2]; MR];
            for k in 0..k2 {
                if !prefetch.is_null() && k % 2 == 0 {
                    // One 64-byte chunk of the next packed block per K pair.
                    _mm_prefetch::<_MM_HINT_T1>(prefetch.add(32 * k) as *const i8);
                }
                let w0 = _mm256_loadu_ps(wb.add(16 * k));
                let w1 = _mm256_loadu_ps(wb.add(16 * k + 8));
                for (r, cr) in c.iter_mut().enumerate() {
                    let av = _mm256_set1_ps(*a.add(k * PANEL + r));
                    cr[0] = _mm256_fmadd_ps(w0, av, cr[0]);
                    cr[1] = _mm256_fmadd_ps(w1, av, cr[1]);
                }
            }
            for (r, cr) in c.iter().enumerate() {
                store_avx2(cr[0], cr[1], out.add(r * ldo), col0, n, acc);
            }
        }
    }

    thread_local! {
        // 64-byte aligned (one `Chunk` = one K row of 16 f32): unaligned rows would make every
        // other 32-byte weight load straddle two cache lines.
        static WIDE: std::cell::RefCell<Vec<Chunk>> = const { std::cell::RefCell::new(Vec::new()) };
    }

    /// Rows per M chunk (a multiple of PANEL): a chunk of activations (48 × K f32) stays in
    /// L2 while every block of the task's column range passes over it.
    const MC: usize = 8 * PANEL;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn blocks_f32_avx2(
        a: &[f32],
        m: usize,
        w: &PackedMatrix,
        b0: usize,
        b1: usize,
        out: *mut f32,
        acc: bool,
    ) {
        let kp = w.kp;
        let ap = a.as_ptr();
        unsafe {
            if m == 1 {
                let mut b = b0;
                while b + 4 <= b1 {
                    gemv_f32_avx2::<4>(ap, kp, w.data.as_ptr().add(b * kp), out, b * 16, w.n, acc);
                    b += 4;
                }
                while b < b1 {
                    gemv_f32_avx2::<1>(ap, kp, w.data.as_ptr().add(b * kp), out, b * 16, w.n, acc);
                    b += 1;
                }
                return;
            }
            WIDE.with(|wide| {
                let mut wide = wide.borrow_mut();
                wide.resize(2 * kp, Chunk([0; 32]));
                let wb = wide.as_mut_ptr() as *mut f32;
                let k2 = 2 * kp;
                for m0 in (0..m).step_by(MC) {
                    let m1 = (m0 + MC).min(m);
                    for b in b0..b1 {
                        widen_block(w.data.as_ptr().add(b * kp), kp, wb);
                        let next = if b + 1 < b1 {
                            w.data.as_ptr().add((b + 1) * kp) as *const u8
                        } else {
                            std::ptr::null()
                        };
                        let mut r = m0;
                        while r < m1 {
                            let pf = if r == m0 { next } else { std::ptr::null() };
                            // `r` is a multiple of PANEL: MC is.
                            let (a_r, o_r) = (ap.add(r * k2), out.add(r * w.n));
                            let rows = (m1 - r).min(PANEL);
                            match rows {
                                6 => tile6::<6>(a_r, wb, k2, o_r, w.n, b * 16, w.n, acc, pf),
                                5 => tile6::<5>(a_r, wb, k2, o_r, w.n, b * 16, w.n, acc, pf),
                                4 => tile6::<4>(a_r, wb, k2, o_r, w.n, b * 16, w.n, acc, pf),
                                3 => tile6::<3>(a_r, wb, k2, o_r, w.n, b * 16, w.n, acc, pf),
                                2 => tile6::<2>(a_r, wb, k2, o_r, w.n, b * 16, w.n, acc, pf),
                                _ => tile6::<1>(a_r, wb, k2, o_r, w.n, b * 16, w.n, acc, pf),
                            }
                            r += rows;
                        }
                    }
                }
            });
        }
    }

    /// AVX2 tile: MR rows × one block (two 8-lane halves).
    #[inline(always)]
    unsafe fn tile_avx2<const MR: usize>(
        a: *const u32,
        kp: usize,
        w: *const Chunk,
        out: *mut f32,
        ldo: usize,
        col0: usize,
        n: usize,
        acc: bool,
    ) {
        unsafe {
            let hi_mask = _mm256_set1_epi32(0xffff_0000u32 as i32);
            let mut c = [[_mm256_setzero_ps(); 2]; MR];
            for p in 0..kp {
                let base = w.add(p) as *const __m256i;
                let h = [_mm256_load_si256(base), _mm256_load_si256(base.add(1))];
                let even = [
                    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h[0])),
                    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(h[1])),
                ];
                let odd = [
                    _mm256_castsi256_ps(_mm256_and_si256(h[0], hi_mask)),
                    _mm256_castsi256_ps(_mm256_and_si256(h[1], hi_mask)),
                ];
                for (r, cr) in c.iter_mut().enumerate() {
                    let pair = *a.add(r * kp + p);
                    let a0 = _mm256_set1_ps(f32::from_bits(pair << 16));
                    let a1 = _mm256_set1_ps(f32::from_bits(pair & 0xffff_0000));
                    for hh in 0..2 {
                        cr[hh] =
                            _mm256_fmadd_ps(odd[hh], a1, _mm256_fmadd_ps(even[hh], a0, cr[hh]));
                    }
                }
            }
            for (r, cr) in c.iter().enumerate() {
                let mut vals = [0f32; 16];
                _mm256_storeu_ps(vals.as_mut_ptr(), cr[0]);
                _mm256_storeu_ps(vals.as_mut_ptr().add(8), cr[1]);
                store_lanes(&vals, out.add(r * ldo), col0, n, acc);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn blocks_avx2(
        a: &[u32],
        m: usize,
        w: &PackedMatrix,
        b0: usize,
        b1: usize,
        out: *mut f32,
        acc: bool,
    ) {
        let kp = w.kp;
        for b in b0..b1 {
            let wp = unsafe { w.data.as_ptr().add(b * kp) };
            let mut r = 0;
            while r < m {
                let ap = unsafe { a.as_ptr().add(r * kp) };
                let op = unsafe { out.add(r * w.n) };
                let rows = (m - r).min(4);
                unsafe {
                    match rows {
                        4 => tile_avx2::<4>(ap, kp, wp, op, w.n, b * 16, w.n, acc),
                        3 => tile_avx2::<3>(ap, kp, wp, op, w.n, b * 16, w.n, acc),
                        2 => tile_avx2::<2>(ap, kp, wp, op, w.n, b * 16, w.n, acc),
                        _ => tile_avx2::<1>(ap, kp, wp, op, w.n, b * 16, w.n, acc),
                    }
                }
                r += rows;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(a: &[f32], m: usize, w: &[u16], n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                let mut s = 0f64;
                for j in 0..k {
                    let av = bf16_to_f32(f32_to_bf16(a[r * k + j]));
                    s += av as f64 * bf16_to_f32(w[c * k + j]) as f64;
                }
                out[r * n + c] = s as f32;
            }
        }
        out
    }

    fn reference_f32(a: &[f32], m: usize, w: &[u16], n: usize, k: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for c in 0..n {
                let s: f64 = (0..k)
                    .map(|j| a[r * k + j] as f64 * bf16_to_f32(w[c * k + j]) as f64)
                    .sum();
                out[r * n + c] = s as f32;
            }
        }
        out
    }

    #[test]
    fn all_isas_match_reference() {
        let pool = ThreadPool::new(2);
        for &(m, n, k) in &[
            (1usize, 16usize, 8usize),
            (3, 33, 7),
            (9, 50, 64),
            (17, 70, 130),
        ] {
            let w: Vec<u16> = (0..n * k)
                .map(|i| f32_to_bf16(((i * 7919) % 997) as f32 / 500.0 - 1.0))
                .collect();
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 104729) % 991) as f32 / 400.0 - 1.2)
                .collect();
            let pm = PackedMatrix::pack(&w, n, k);
            let want = reference(&a, m, &w, n, k);
            let mut scratch = GemmScratch::default();
            let want_f32 = reference_f32(&a, m, &w, n, k);
            // `best` includes the opt-in AVX-512 kernels where the CPU has them.
            for (isa, prec) in [
                (Isa::best(), ActPrecision::Bf16),
                (Isa::best(), ActPrecision::F32),
                (Isa::Avx2, ActPrecision::Bf16),
                (Isa::Avx2, ActPrecision::F32),
                (Isa::Portable, ActPrecision::Bf16),
            ] {
                if isa == Isa::Avx2 && Isa::detect() == Isa::Portable {
                    continue;
                }
                let want = if prec == ActPrecision::F32 && isa != Isa::Portable {
                    &want_f32
                } else {
                    &want
                };
                let mut out = vec![1f32; m * n];
                matmul(&pool, isa, &a, m, &pm, &mut out, true, prec, &mut scratch);
                for (o, r) in out.iter().zip(want) {
                    assert!(
                        (o - 1.0 - r).abs() < 1e-3 * (1.0 + r.abs()),
                        "{isa:?} {m}x{n}x{k}: {o} vs {r}+1"
                    );
                }
                // A row alone gives the same bits as in the batch.
                if m < 2 {
                    continue;
                }
                let mut one = vec![0f32; n];
                matmul(
                    &pool,
                    isa,
                    &a[k..2 * k],
                    1,
                    &pm,
                    &mut one,
                    false,
                    prec,
                    &mut scratch,
                );
                if m > 1 {
                    for c in 0..n {
                        assert_eq!(one[c] + 1.0, out[n + c], "{isa:?} batch invariance");
                    }
                }
            }
        }
    }
}
