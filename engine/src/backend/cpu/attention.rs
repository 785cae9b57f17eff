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
    static SCRATCH: RefCell<(Vec<f32>, Vec<bool>)> = const { RefCell::new((Vec::new(), Vec::new())) };
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
    let (scores, allowed) = unsafe { &mut *SCRATCH.with(|sc| sc.as_ptr()) };
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
        // Page by page: a head's keys within a page are contiguous.
        for pi in first / ps..ctx.div_ceil(ps) {
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
