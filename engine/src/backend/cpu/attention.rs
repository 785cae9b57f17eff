//! Paged attention on the CPU: each (row, head) task reads its sequence's keys and values page
//! by page, so contexts that share prefix pages read the same memory.

use super::pool::{SyncPtr, ThreadPool};
use super::simd::{self, Isa};
use crate::backend::SeqInput;
use std::cell::RefCell;

/// K/V storage for every page and layer, f32, laid out `[layer][page][kv_head][slot][head_dim]`
/// so that one head's keys within a page are contiguous.
pub struct KvStore {
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub num_pages: usize,
    pub page_size: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl KvStore {
    pub fn new(
        layers: usize,
        num_pages: usize,
        page_size: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> Self {
        let n = layers * num_pages * page_size * kv_heads * head_dim;
        KvStore {
            k: vec![0.0; n],
            v: vec![0.0; n],
            num_pages,
            page_size,
            kv_heads,
            head_dim,
        }
    }

    fn page_stride(&self) -> usize {
        self.page_size * self.kv_heads * self.head_dim
    }

    /// Offset of (layer, page, kv head, slot-in-page).
    #[inline]
    pub fn offset(&self, layer: usize, page: usize, head: usize, off: usize) -> usize {
        ((layer * self.num_pages + page) * self.kv_heads + head) * self.page_size * self.head_dim
            + off * self.head_dim
    }

    pub fn copy_page(&mut self, layers: usize, src: usize, dst: usize) {
        let ps = self.page_stride();
        for l in 0..layers {
            let s = (l * self.num_pages + src) * ps;
            let d = (l * self.num_pages + dst) * ps;
            self.k.copy_within(s..s + ps, d);
            self.v.copy_within(s..s + ps, d);
        }
    }
}

thread_local! {
    static SCRATCH: RefCell<(Vec<f32>, Vec<bool>, Vec<usize>)> =
        const { RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// Writes the rows' K and V (`qkv` rows hold q | k | v) into their slots for `layer`.
pub fn write_kv(kv: &mut KvStore, layer: usize, seqs: &[SeqInput], qkv: &[f32], q_dim: usize) {
    let (hd, kvh, ps) = (kv.head_dim, kv.kv_heads, kv.page_size);
    let kv_dim = kvh * hd;
    let row_w = q_dim + 2 * kv_dim;
    for s in seqs {
        for i in 0..s.len {
            let slot = s.kv_len + i;
            let page = s.kv_pages[slot / ps] as usize;
            let row = &qkv[(s.start + i) * row_w..(s.start + i + 1) * row_w];
            for h in 0..kvh {
                let o = kv.offset(layer, page, h, slot % ps);
                kv.k[o..o + hd].copy_from_slice(&row[q_dim + h * hd..q_dim + (h + 1) * hd]);
                kv.v[o..o + hd]
                    .copy_from_slice(&row[q_dim + kv_dim + h * hd..q_dim + kv_dim + (h + 1) * hd]);
            }
        }
    }
}

/// `out[row, head*hd..]` = softmax(q·Kᵀ/√d + mask) · V for every row and head. One task
/// per (row, KV head) serves the whole group of query heads that share that KV head (GQA), so
/// each key and value is read once per group.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    pool: &ThreadPool,
    isa: Isa,
    kv: &KvStore,
    layer: usize,
    seqs: &[SeqInput],
    row_seq: &[u32],
    qkv: &[f32],
    n_heads: usize,
    window: Option<usize>,
    out: &mut [f32],
) {
    let a = Args {
        window,
        isa,
        kv,
        layer,
        seqs,
        row_seq,
        qkv,
        n_heads,
        out: SyncPtr(out.as_mut_ptr()),
    };
    let rows = row_seq.len();
    pool.run(rows * kv.kv_heads, &|task| {
        #[cfg(target_arch = "x86_64")]
        if isa != Isa::Portable {
            // SAFETY: AVX2 and FMA checked by `Isa::detect`.
            return unsafe { attend_avx2(&a, task) };
        }
        attend(&a, task)
    });
}

struct Args<'a> {
    window: Option<usize>,
    isa: Isa,
    kv: &'a KvStore,
    layer: usize,
    seqs: &'a [SeqInput],
    row_seq: &'a [u32],
    qkv: &'a [f32],
    n_heads: usize,
    out: SyncPtr<f32>,
}

/// `attend` compiled for AVX2, so that the `simd` helpers inline into it (a `target_feature`
/// function is not inlined into a caller without the feature, and a call per 64-element dot
/// product costs as much as the dot product).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn attend_avx2(a: &Args, task: usize) {
    attend(a, task)
}

/// One (row, KV head) task.
#[inline(always)]
fn attend(a: &Args, task: usize) {
    let (kv, isa) = (a.kv, a.isa);
    let (hd, kvh, ps) = (kv.head_dim, kv.kv_heads, kv.page_size);
    let q_dim = a.n_heads * hd;
    let row_w = q_dim + 2 * kvh * hd;
    let group = a.n_heads / kvh;
    let scale = 1.0 / (hd as f32).sqrt();
    let (r, g) = (task / kvh, task % kvh);
    let s = &a.seqs[a.row_seq[r] as usize];
    let i = r - s.start;
    let ctx = s.kv_len + i + 1;
    // Sliding window: slots before `first` are out of reach (treated as masked).
    let first = a.window.map_or(0, |w| ctx.saturating_sub(w));
    let q = &a.qkv[r * row_w + g * group * hd..r * row_w + (g + 1) * group * hd];
    // SAFETY: each task owns out[r, g*group*hd..(g+1)*group*hd].
    let o = unsafe {
        std::slice::from_raw_parts_mut(a.out.ptr().add(r * q_dim + g * group * hd), group * hd)
    };
    // The scratch is used outside a `with` closure: the closure would be compiled without the
    // caller's target features, and the SIMD helpers would not inline into it.
    // SAFETY: thread-local and not re-entered (attention tasks do not nest).
    let (scores, allowed, offs) = unsafe { &mut *SCRATCH.with(|sc| sc.as_ptr()) };
    {
        scores.clear();
        scores.resize(group * ctx + 2 * group, f32::NEG_INFINITY);
        let (scores, stats) = scores.split_at_mut(group * ctx);
        let (max, inv) = stats.split_at_mut(group);
        let masked = if let Some(m) = &s.mask {
            allowed.clear();
            allowed.resize(ctx, true);
            m[s.mask_row0 + i].decode_into(allowed, true);
            true
        } else {
            false
        };
        let vec_path = cfg!(target_arch = "x86_64") && isa != Isa::Portable && hd.is_multiple_of(8);
        #[cfg(target_arch = "x86_64")]
        if vec_path {
            // Offsets of slots `first..ctx` (the same for keys and values).
            offs.clear();
            for pi in first / ps..ctx.div_ceil(ps) {
                let base = kv.offset(a.layer, s.kv_pages[pi] as usize, g, 0);
                let j0 = pi * ps;
                offs.extend((j0.max(first)..(j0 + ps).min(ctx)).map(|j| base + (j - j0) * hd));
            }
            for h in 0..group {
                let row = &mut scores[h * ctx + first..(h + 1) * ctx];
                // SAFETY: AVX2 and FMA checked by `Isa::detect`.
                unsafe { qk_avx2(&kv.k, offs, &q[h * hd..(h + 1) * hd], scale, row) };
                if masked {
                    for (v, &ok) in row.iter_mut().zip(&allowed[first..ctx]) {
                        if !ok {
                            *v = f32::NEG_INFINITY;
                        }
                    }
                }
                max[h] = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            }
        }
        // Page by page: a head's keys within a page are contiguous.
        let pages = if vec_path {
            0..0
        } else {
            first / ps..ctx.div_ceil(ps)
        };
        for pi in pages {
            let base = kv.offset(a.layer, s.kv_pages[pi] as usize, g, 0);
            let j0 = pi * ps;
            for j in j0.max(first)..(j0 + ps).min(ctx) {
                if masked && !allowed[j] {
                    continue;
                }
                let off = base + (j - j0) * hd;
                let k = &kv.k[off..off + hd];
                for h in 0..group {
                    let sc = simd::dot(isa, &q[h * hd..(h + 1) * hd], k) * scale;
                    scores[h * ctx + j] = sc;
                    max[h] = max[h].max(sc);
                }
            }
        }
        o.fill(0.0);
        for h in 0..group {
            inv[h] = 0.0;
            if max[h] == f32::NEG_INFINITY {
                // Every slot masked: the output is zero rather than NaN.
                continue;
            }
            let sum = simd::exp_sub_sum(isa, &mut scores[h * ctx..(h + 1) * ctx], max[h]);
            inv[h] = 1.0 / sum;
        }
        #[cfg(target_arch = "x86_64")]
        if vec_path {
            // Masked slots have probability 0 and are skipped like below.
            for h in 0..group {
                let oh = &mut o[h * hd..(h + 1) * hd];
                if inv[h] != 0.0 {
                    // SAFETY: AVX2 and FMA checked by `Isa::detect`; offsets are in bounds.
                    unsafe {
                        pv_avx2(
                            &kv.v,
                            offs,
                            &scores[h * ctx + first..(h + 1) * ctx],
                            inv[h],
                            oh,
                        )
                    };
                }
            }
            return;
        }
        for pi in first / ps..ctx.div_ceil(ps) {
            let base = kv.offset(a.layer, s.kv_pages[pi] as usize, g, 0);
            let j0 = pi * ps;
            for j in j0.max(first)..(j0 + ps).min(ctx) {
                if masked && !allowed[j] {
                    continue;
                }
                let off = base + (j - j0) * hd;
                let v = &kv.v[off..off + hd];
                for h in 0..group {
                    let p = scores[h * ctx + j] * inv[h];
                    if p != 0.0 {
                        simd::axpy(isa, p, v, &mut o[h * hd..(h + 1) * hd]);
                    }
                }
            }
        }
    }
}

/// `o = Σ_j (p[j] · inv) · v[offs[j]..][..hd]` with `o` held in registers (64 columns at a
/// time), skipping zero probabilities. Per column the FMAs run in slot order starting from
/// zero, exactly as the `axpy` loop does, so both paths give the same bits.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn pv_avx2(v: &[f32], offs: &[usize], p: &[f32], inv: f32, o: &mut [f32]) {
    use std::arch::x86_64::*;
    let hd = o.len();
    debug_assert!(hd.is_multiple_of(8) && offs.len() == p.len());
    let mut d0 = 0;
    while d0 < hd {
        let w = (hd - d0).min(64) / 8;
        let mut acc = [_mm256_setzero_ps(); 8];
        for (&off, &sc) in offs.iter().zip(p) {
            let pj = sc * inv;
            if pj != 0.0 {
                assert!(off + d0 + 8 * w <= v.len());
                let pv = _mm256_set1_ps(pj);
                // SAFETY: asserted in bounds.
                let src = unsafe { v.as_ptr().add(off + d0) };
                for (i, ai) in acc.iter_mut().enumerate().take(w) {
                    *ai = _mm256_fmadd_ps(pv, unsafe { _mm256_loadu_ps(src.add(8 * i)) }, *ai);
                }
            }
        }
        for (i, ai) in acc.iter().enumerate().take(w) {
            // SAFETY: d0 + 8 * w <= hd = o.len().
            unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(d0 + 8 * i), *ai) };
        }
        d0 += 64;
    }
}

/// `out[j] = scale · (q · k[offs[j]..][..hd])`, eight keys at a time: one accumulator per key,
/// then a transposing horizontal-add tree. Each key's sum has the same shape whatever keys
/// share its group (a short group repeats its last key), so a row's scores do not depend on
/// paging or batching.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn qk_avx2(k: &[f32], offs: &[usize], q: &[f32], scale: f32, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let hd = q.len();
    debug_assert!(hd.is_multiple_of(8) && offs.len() == out.len());
    let sc = _mm256_set1_ps(scale);
    for (oc, dst) in offs.chunks(8).zip(out.chunks_mut(8)) {
        let mut p = [0usize; 8];
        for (j, pj) in p.iter_mut().enumerate() {
            *pj = oc[j.min(oc.len() - 1)];
            assert!(*pj + hd <= k.len());
        }
        let mut acc = [_mm256_setzero_ps(); 8];
        let mut d = 0;
        // SAFETY: every key row is asserted in bounds; d + 8 <= hd = q.len().
        unsafe {
            while d < hd {
                let qv = _mm256_loadu_ps(q.as_ptr().add(d));
                for (j, aj) in acc.iter_mut().enumerate() {
                    *aj = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k.as_ptr().add(p[j] + d)), *aj);
                }
                d += 8;
            }
        }
        let t0 = _mm256_hadd_ps(acc[0], acc[1]);
        let t1 = _mm256_hadd_ps(acc[2], acc[3]);
        let t2 = _mm256_hadd_ps(acc[4], acc[5]);
        let t3 = _mm256_hadd_ps(acc[6], acc[7]);
        let u0 = _mm256_hadd_ps(t0, t1);
        let u1 = _mm256_hadd_ps(t2, t3);
        let lo = _mm256_permute2f128_ps::<0x20>(u0, u1);
        let hi = _mm256_permute2f128_ps::<0x31>(u0, u1);
        let mut res = [0f32; 8];
        // SAFETY: `res` holds 8 floats.
        unsafe { _mm256_storeu_ps(res.as_mut_ptr(), _mm256_mul_ps(_mm256_add_ps(lo, hi), sc)) };
        dst.copy_from_slice(&res[..dst.len()]);
    }
}
