// pied's CUDA kernels, compiled at start with NVRTC (see compile.rs). Plain CUDA C with no
// includes, so NVRTC needs no header search path.
//
// Conventions shared with mod.rs:
// - bf16 values are `unsigned short` (the top half of an f32), converted by hand.
// - Activations that feed a cuBLAS GEMM are bf16. In "split" mode (split = 2) a row of f32
//   activations is stored as two bf16 rows: the rounded value (row r) and its rounding error
//   (row r + rows). One GEMM over the 2·rows rows then gives both partial products, and the
//   consumer adds them: f32-accurate activations at bf16 weight traffic.
// - GEMM outputs are f32 `[split · rows, width]`; consumers read row r (+ row r + rows).
// - KV cache: bf16 `[layer][page][kv_head][slot][head_dim]`, the CPU backend's layout; the
//   host passes the layer's base pointer.

#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float bf2f(unsigned short h) {
    return __uint_as_float(((unsigned)h) << 16);
}

__device__ __forceinline__ unsigned short f2bf(float f) {
    unsigned u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0; // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);                       // round to nearest even
    return (unsigned short)(u >> 16);
}

// Writes v as bf16: hi at out[row], and in split mode the rounding error at out[row + rows].
__device__ __forceinline__ void store_split(unsigned short* out, size_t row, size_t rows,
                                            size_t width, size_t col, float v, int split) {
    unsigned short hi = f2bf(v);
    out[row * width + col] = hi;
    if (split == 2) out[(row + rows) * width + col] = f2bf(v - bf2f(hi));
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the block; every thread gets the result. `sh` holds >= 32 floats.
__device__ float block_sum(float v, float* sh) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        float t = lane < nw ? sh[lane] : 0.f;
        t = warp_sum(t);
        if (lane == 0) sh[0] = t;
    }
    __syncthreads();
    return sh[0];
}

__device__ float block_max(float v, float* sh) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[wid] = v;
    __syncthreads();
    if (wid == 0) {
        float t = lane < nw ? sh[lane] : NEG_INF;
        t = warp_max(t);
        if (lane == 0) sh[0] = t;
    }
    __syncthreads();
    return sh[0];
}

// ---------------------------------------------------------------------------------------
// Embedding gather: x[r] = table[tokens[r]] (bf16 -> f32). grid = (ceil(hidden / block),
// rows): one element per thread, so a decode step's single row is not one serial block.
extern "C" __global__ void embed(const int* tokens, const unsigned short* table, float* x,
                                 int hidden) {
    size_t r = blockIdx.y;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < hidden) x[r * hidden + i] = bf2f(table[(size_t)tokens[r] * hidden + i]);
}

// Residual add + RMSNorm. For output row o (grid = rows):
//   src = gather ? gather[o] : o
//   if delta: x[src] += delta[src] (+ delta[src + rows] when dsplit == 2)
//   out[o] = x[src] / rms(x[src]) * w, stored bf16 (split).
extern "C" __global__ void residual_norm(float* x, const float* delta, int dsplit,
                                         const float* w, float eps, unsigned short* out,
                                         const int* gather, int rows, int hidden, int split) {
    __shared__ float sh[32];
    size_t o = blockIdx.x;
    size_t src = gather ? (size_t)gather[o] : o;
    float* xr = x + src * hidden;
    float ss = 0.f;
#pragma unroll 4
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        float v = xr[i];
        if (delta) {
            v += delta[src * hidden + i];
            if (dsplit == 2) v += delta[(src + rows) * hidden + i];
            xr[i] = v;
        }
        ss += v * v;
    }
    ss = block_sum(ss, sh);
    float r = rsqrtf(ss / hidden + eps);
#pragma unroll 4
    for (int i = threadIdx.x; i < hidden; i += blockDim.x)
        store_split(out, o, rows, hidden, i, xr[i] * r * w[i], split);
}

// qkv (+ bias) -> RoPE on q and k (HF rotate_half pairs (i, i + d/2)), q to q_out (f32), k and
// v to the paged cache (bf16). grid = (ceil(((nh + nkv) * hd / 2 + nkv * hd) / block), rows):
// one rotated pair or one v element per thread.
extern "C" __global__ void qkv_rope_store(const float* qkv, int qsplit, int rows,
                                          const float* bias, const int* pos,
                                          const float* inv_freq, float* q_out,
                                          unsigned short* kc, unsigned short* vc,
                                          const int* row_page, const int* row_slot, int nh,
                                          int nkv, int hd, int page_size) {
    size_t r = blockIdx.y;
    int qd = nh * hd, kvd = nkv * hd, width = qd + 2 * kvd, half = hd / 2;
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    int pairs = (nh + nkv) * half;
    if (t >= pairs + kvd) return;
    const float* a = qkv + r * width;
    const float* b = qsplit == 2 ? qkv + (r + rows) * width : 0;
    size_t page = (size_t)row_page[r], slot = (size_t)row_slot[r];
#define VAL(j) (a[j] + (b ? b[j] : 0.f) + (bias ? bias[j] : 0.f))
    if (t < pairs) {
        int head = t / half, i = t % half;
        float s, c;
        sincosf((float)pos[r] * inv_freq[i], &s, &c);
        int base = head * hd; // k heads follow the q heads: QD + kh * hd == head * hd
        float x = VAL(base + i), y = VAL(base + i + half);
        float o1 = x * c - y * s, o2 = y * c + x * s;
        if (head < nh) {
            q_out[r * qd + base + i] = o1;
            q_out[r * qd + base + i + half] = o2;
        } else {
            size_t off = ((page * nkv + (head - nh)) * page_size + slot) * hd;
            kc[off + i] = f2bf(o1);
            kc[off + i + half] = f2bf(o2);
        }
    } else {
        int v = t - pairs, kh = v / hd, d = v % hd;
        size_t off = ((page * nkv + kh) * page_size + slot) * hd;
        vc[off + d] = f2bf(VAL(qd + kvd + v));
    }
#undef VAL
}

// Paged attention, prefill and decode alike. grid = (rows, nkv), block = ATT_T threads.
// A block serves the G = nh / nkv query heads of one KV head for one row, so each key and
// value is read once per group. Keys are visited in chunks of ATT_T with an online softmax:
// scores one key per thread; then each of the 4 warps takes every 4th key of the chunk and
// each lane accumulates 8 consecutive output dims per 16-byte load of V (so a warp reads
// whole V rows, coalesced, with many loads in flight); the 4 warps' partial sums are added
// at the end. Row r may attend to slots [first, ctx) where mask bit j (if any mask) is set.
#define ATT_T 128
#define ATT_W (ATT_T / 32)
#define ATT_GMAX 8
#define ATT_GRP 4 // 8-dim groups per lane: G * hd <= 32 * 8 * ATT_GRP = 1024
extern "C" __global__ void __launch_bounds__(ATT_T)
attention(const float* q, const unsigned short* kc, const unsigned short* vc, const int* pages,
          const int* row_pt, const int* row_ctx, const int* row_first, const int* row_mask,
          const unsigned* mask_bits, unsigned short* out, int rows, int split, int nh, int nkv,
          int hd, int page_size, float scale, float* partial) {
    extern __shared__ float smem[];
    const int G = nh / nkv, gw = G * hd, t = threadIdx.x, lane = t & 31, wid = t >> 5;
    const size_t r = blockIdx.x;
    const int g = blockIdx.y, z = blockIdx.z, nsplit = gridDim.z;
    float* qs = smem;                    // [G][hd]
    float* sc = qs + gw;                 // [G][ATT_T] scores, then probabilities
    float* red = sc + G * ATT_T;         // [ATT_W][ATT_GMAX]
    float* m_s = red + 4 * ATT_GMAX;     // running max per head
    float* l_s = m_s + ATT_GMAX;         // running sum per head
    float* al_s = l_s + ATT_GMAX;        // rescale factor of this chunk
    long long* koff = (long long*)(al_s + ATT_GMAX); // [ATT_T] element offset of each key, -1 = skip
    float* part = (float*)(koff + ATT_T); // [ATT_W][gw] per-warp partial outputs

    const int qd = nh * hd, ngrp = gw / 8;
    for (int i = t; i < gw; i += ATT_T) qs[i] = q[r * qd + (size_t)g * gw + i] * scale;
    if (t < ATT_GMAX) { m_s[t] = NEG_INF; l_s[t] = 0.f; }
    float acc[ATT_GRP][8];
#pragma unroll
    for (int gi = 0; gi < ATT_GRP; gi++)
#pragma unroll
        for (int e = 0; e < 8; e++) acc[gi][e] = 0.f;
    const int ctx = row_ctx[r], first = row_first[r], moff = row_mask[r];
    const int* pt = pages + row_pt[r];
    __syncthreads();

    // Split z of nsplit takes every nsplit-th chunk (decode: more blocks than rows × heads).
    for (int c = first + z * ATT_T; c < ctx; c += nsplit * ATT_T) {
        int j = c + t;
        bool ok = j < ctx;
        if (ok && moff >= 0) {
            unsigned bit = (unsigned)moff + (unsigned)j;
            ok = (mask_bits[bit >> 5] >> (bit & 31)) & 1u;
        }
        float dots[ATT_GMAX];
#pragma unroll
        for (int h = 0; h < ATT_GMAX; h++) dots[h] = 0.f;
        if (ok) {
            size_t off = (((size_t)pt[j / page_size] * nkv + g) * page_size + j % page_size) * hd;
            koff[t] = (long long)off;
            const uint4* kp = (const uint4*)(kc + off); // 8 bf16 per load; hd % 8 == 0
#pragma unroll 8
            for (int d8 = 0; d8 < hd / 8; d8++) {
                uint4 kv = kp[d8];
                unsigned w4[4] = {kv.x, kv.y, kv.z, kv.w};
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    float k0 = __uint_as_float(w4[e] << 16);
                    float k1 = __uint_as_float(w4[e] & 0xffff0000u);
                    int d = d8 * 8 + e * 2;
#pragma unroll
                    for (int h = 0; h < ATT_GMAX; h++)
                        if (h < G) dots[h] += qs[h * hd + d] * k0 + qs[h * hd + d + 1] * k1;
                }
            }
        } else {
            koff[t] = -1;
        }
#pragma unroll
        for (int h = 0; h < ATT_GMAX; h++) {
            if (h < G) {
                float s = ok ? dots[h] : NEG_INF;
                sc[h * ATT_T + t] = s;
                s = warp_max(s);
                if (lane == 0) red[wid * ATT_GMAX + h] = s;
            }
        }
        __syncthreads();
        if (t < G) {
            float mc = fmaxf(fmaxf(red[t], red[ATT_GMAX + t]),
                             fmaxf(red[2 * ATT_GMAX + t], red[3 * ATT_GMAX + t]));
            float mo = m_s[t], mn = fmaxf(mo, mc);
            al_s[t] = (mo == NEG_INF) ? 0.f : expf(mo - mn);
            m_s[t] = mn;
        }
        __syncthreads();
#pragma unroll
        for (int h = 0; h < ATT_GMAX; h++) {
            if (h < G) {
                float s = sc[h * ATT_T + t];
                float p = (s == NEG_INF) ? 0.f : expf(s - m_s[h]);
                sc[h * ATT_T + t] = p;
                p = warp_sum(p);
                if (lane == 0) red[wid * ATT_GMAX + h] = p;
            }
        }
        __syncthreads();
        if (t < G)
            l_s[t] = l_s[t] * al_s[t] + red[t] + red[ATT_GMAX + t] + red[2 * ATT_GMAX + t] +
                     red[3 * ATT_GMAX + t];
        // Rescale this lane's partial sums to the new running max, then add this chunk's keys.
#pragma unroll
        for (int gi = 0; gi < ATT_GRP; gi++) {
            int grp = lane + 32 * gi;
            if (grp < ngrp) {
                float a = al_s[(grp * 8) / hd];
#pragma unroll
                for (int e = 0; e < 8; e++) acc[gi][e] *= a;
            }
        }
        int n = min(ATT_T, ctx - c);
        // Batches of 8 keys per warp: all 8 V loads are issued before the first use (a key
        // that is masked or past the end loads a harmless row 0 and weighs 0), so a warp keeps
        // 8 loads in flight instead of waiting on each.
#pragma unroll
        for (int gi = 0; gi < ATT_GRP; gi++) {
            int grp = lane + 32 * gi;
            if (grp >= ngrp) continue;
            int o = grp * 8, h = o / hd, d = o - h * hd;
            const float* ph = sc + h * ATT_T;
            for (int j0 = wid; j0 < n; j0 += 8 * ATT_W) {
                uint4 vv[8];
                float pj[8];
#pragma unroll
                for (int u = 0; u < 8; u++) {
                    int jj = j0 + u * ATT_W;
                    long long ko = jj < n ? koff[jj] : -1;
                    pj[u] = ko >= 0 ? ph[jj] : 0.f;
                    vv[u] = *(const uint4*)(vc + (ko >= 0 ? ko : 0) + d);
                }
#pragma unroll
                for (int u = 0; u < 8; u++) {
                    unsigned w4[4] = {vv[u].x, vv[u].y, vv[u].z, vv[u].w};
#pragma unroll
                    for (int e = 0; e < 4; e++) {
                        acc[gi][2 * e] += pj[u] * __uint_as_float(w4[e] << 16);
                        acc[gi][2 * e + 1] += pj[u] * __uint_as_float(w4[e] & 0xffff0000u);
                    }
                }
            }
        }
        __syncthreads();
    }
    // Sum the warps' partial outputs, normalise, store.
#pragma unroll
    for (int gi = 0; gi < ATT_GRP; gi++) {
        int grp = lane + 32 * gi;
        if (grp < ngrp)
#pragma unroll
            for (int e = 0; e < 8; e++) part[wid * gw + grp * 8 + e] = acc[gi][e];
    }
    __syncthreads();
    // One split: normalise and store. Several: leave (max, sum, unnormalised output) per head
    // for attention_combine.
    float* P = partial + (((size_t)r * nkv + g) * nsplit + z) * (2 * G + gw);
    if (nsplit > 1 && t < G) {
        P[t] = m_s[t];
        P[G + t] = l_s[t];
    }
    for (int o = t; o < gw; o += ATT_T) {
        float v = 0.f;
#pragma unroll
        for (int w = 0; w < ATT_W; w++) v += part[w * gw + o];
        if (nsplit > 1) {
            P[2 * G + o] = v;
        } else {
            float l = l_s[o / hd];
            v = l > 0.f ? v / l : 0.f; // every slot masked: zero, not NaN
            store_split(out, r, rows, qd, (size_t)g * gw + o, v, split);
        }
    }
}

// Merges the nsplit partial results of `attention` (flash-decoding). grid = (rows, nkv).
extern "C" __global__ void attention_combine(const float* partial, unsigned short* out, int rows,
                                             int split, int nh, int nkv, int hd, int nsplit) {
    const int G = nh / nkv, gw = G * hd, qd = nh * hd;
    const size_t r = blockIdx.x;
    const int g = blockIdx.y;
    const float* P0 = partial + ((size_t)r * nkv + g) * nsplit * (2 * G + gw);
    for (int o = threadIdx.x; o < gw; o += blockDim.x) {
        int h = o / hd;
        float M = NEG_INF;
        for (int z = 0; z < nsplit; z++) M = fmaxf(M, P0[z * (2 * G + gw) + h]);
        float L = 0.f, acc = 0.f;
        if (M != NEG_INF) {
            for (int z = 0; z < nsplit; z++) {
                const float* P = P0 + z * (2 * G + gw);
                if (P[h] == NEG_INF) continue;
                float e = expf(P[h] - M);
                L += P[G + h] * e;
                acc += P[2 * G + o] * e;
            }
        }
        store_split(out, r, rows, qd, (size_t)g * gw + o, L > 0.f ? acc / L : 0.f, split);
    }
}

// act = silu(gate) * up, bf16 (split) for the down projection. grid = (ceil(inter / block),
// rows), one element per thread.
extern "C" __global__ void silu_mul(const float* gu, int gsplit, unsigned short* out, int rows,
                                    int inter, int split) {
    size_t r = blockIdx.y;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= inter) return;
    const float* a = gu + r * 2 * inter;
    const float* b = gsplit == 2 ? gu + (r + rows) * 2 * inter : 0;
    float g = a[i] + (b ? b[i] : 0.f);
    float u = a[inter + i] + (b ? b[inter + i] : 0.f);
    store_split(out, r, rows, inter, i, g / (1.f + expf(-g)) * u, split);
}

// Adds the two halves of the LM head's split GEMM: out[r] = lg[r] (+ lg[r + rows]).
extern "C" __global__ void combine_rows(const float* lg, int split, float* out, int rows,
                                        int width) {
    size_t r = blockIdx.y;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (size_t)width;
         i += (size_t)gridDim.x * blockDim.x) {
        float v = lg[r * width + i];
        if (split == 2) v += lg[(r + rows) * width + i];
        out[r * width + i] = v;
    }
}

// Copies one KV page (all layers, K and V) onto another: copy-on-write. grid = (blocks,
// layers); `page_elems` = elements per page per layer.
extern "C" __global__ void copy_page(unsigned short* kc, unsigned short* vc, size_t layer_stride,
                                     size_t page_elems, int src, int dst) {
    size_t l = blockIdx.y;
    size_t s = l * layer_stride + (size_t)src * page_elems;
    size_t d = l * layer_stride + (size_t)dst * page_elems;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < page_elems;
         i += (size_t)gridDim.x * blockDim.x) {
        kc[d + i] = kc[s + i];
        vc[d + i] = vc[s + i];
    }
}

// Deterministic pseudo-random bf16 fill (benchmarks of randomly initialised models):
// uniform in [-scale, scale), or the constant `scale` when constant != 0.
extern "C" __global__ void fill_random(unsigned short* w, size_t n, unsigned long long seed,
                                       float scale, int constant) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        unsigned long long z = seed + i * 0x9e3779b97f4a7c15ull;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        float u = (float)(z >> 40) * (1.0f / 16777216.0f); // [0, 1)
        w[i] = f2bf(constant ? scale : (2.f * u - 1.f) * scale);
    }
}

// y[rows, n] = x[rows, k] · w[n, k]ᵀ for few rows (decode): memory-bound on w, so one warp
// streams one weight row with 16-byte loads and keeps a partial sum per activation row in
// registers; x (a few KB) stays in L1/L2. k % 8 == 0. grid = ceil(n / 8) blocks of 256.
#define GEMV_MAXR 8
__device__ __forceinline__ void unpack8(uint4 v, float* f) {
    unsigned w4[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int e = 0; e < 4; e++) {
        f[2 * e] = __uint_as_float(w4[e] << 16);
        f[2 * e + 1] = __uint_as_float(w4[e] & 0xffff0000u);
    }
}

extern "C" __global__ void __launch_bounds__(256)
gemv_bf16(const unsigned short* __restrict__ w, const unsigned short* __restrict__ x,
          float* __restrict__ y, int rows, int n, int k) {
    int col = (blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (col >= n) return;
    const unsigned short* wr = w + (size_t)col * k;
    float acc[GEMV_MAXR];
#pragma unroll
    for (int r = 0; r < GEMV_MAXR; r++) acc[r] = 0.f;
    // Tiles of 4 × 256 elements: the four 16-byte weight loads of a tile are issued before any
    // is used, so each warp keeps 2 KB in flight.
    for (int k0 = lane * 8; k0 < k; k0 += 1024) {
        uint4 wv[4];
#pragma unroll
        for (int u = 0; u < 4; u++)
            wv[u] = k0 + 256 * u < k ? __ldg((const uint4*)(wr + k0 + 256 * u)) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int kk = k0 + 256 * u;
            if (kk >= k) break;
            float wf[8], xf[8];
            unpack8(wv[u], wf);
#pragma unroll
            for (int r = 0; r < GEMV_MAXR; r++) {
                if (r < rows) {
                    unpack8(*(const uint4*)(x + (size_t)r * k + kk), xf);
#pragma unroll
                    for (int e = 0; e < 8; e++) acc[r] += wf[e] * xf[e];
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < GEMV_MAXR; r++) {
        if (r < rows) {
            float v = warp_sum(acc[r]);
            if (lane == 0) y[(size_t)r * n + col] = v;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sampling on the device. One block (SAMP_T threads) per output slot; the slot's logits row is
// `logits[row]` with the slot's allowed-token mask (bit offset `mask_off`, -1 = none) applied.
//
// Slot parameters (struct of arrays, see cuda/sample.rs):
//   kind: 0 greedy, 1 sample, 2 top-k distribution, 3 logprob(s), 4 entropy
//   temp, top_k (0 = none), top_p (>= 1 = none), min_p (<= 0 = none), u (uniform draw)
// Results go to res[res_off[slot] ...]:
//   [0] token (int bits)  [1] max  [2] log-sum-exp (of logits / temp)  [3] entropy
//   [4] kind 2: candidate count n, then from [5] n (id bits, scaled logit) pairs: every
//       token whose scaled logit is >= the k-th largest (ties included, capped at `cap`)
//   kind 3: from [5] the logprob of each requested token (tok_off/tok_n into `toks`)
#define SAMP_T 1024

// Monotonic map from f32 to u32: a > b  <=>  key(a) > key(b).
__device__ __forceinline__ unsigned fkey(float x) {
    unsigned u = __float_as_uint(x);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ __forceinline__ float masked_logit(const float* row, const unsigned* mask_bits,
                                              int moff, int i, float inv_t) {
    if (moff >= 0) {
        unsigned bit = (unsigned)moff + (unsigned)i;
        if (!((mask_bits[bit >> 5] >> (bit & 31)) & 1u)) return NEG_INF;
    }
    return row[i] * inv_t;
}

// Radix select over the finite values of the row: the key of the threshold such that keys
// >= it hold at least `need` of the weight (count when !weighted, else exp(x - mx) mass).
// Scans 8 bits per pass, most significant first. Returns 0 when everything qualifies.
__device__ unsigned radix_threshold(const float* row, const unsigned* mask_bits, int moff,
                                    int vocab, float inv_t, float mx, unsigned floor_key,
                                    float need, bool weighted, float* hist, float* sh) {
    unsigned prefix = 0, pmask = 0;
    float remaining = need;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) hist[b] = 0.f;
        __syncthreads();
        for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
            float x = masked_logit(row, mask_bits, moff, i, inv_t);
            if (x == NEG_INF) continue;
            unsigned k = fkey(x);
            if (k < floor_key || (k & pmask) != prefix) continue;
            atomicAdd(&hist[(k >> shift) & 255u], weighted ? expf(x - mx) : 1.f);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            float cum = 0.f;
            int b = 255;
            for (; b > 0; b--) {
                if (cum + hist[b] >= remaining) break;
                cum += hist[b];
            }
            sh[0] = __uint_as_float((unsigned)b);
            sh[1] = remaining - cum;
        }
        __syncthreads();
        unsigned b = __float_as_uint(sh[0]);
        remaining = sh[1];
        prefix |= b << shift;
        pmask |= 255u << shift;
        __syncthreads();
    }
    return prefix;
}

extern "C" __global__ void __launch_bounds__(SAMP_T)
sample_slots(const float* logits, int vocab, const int* slot_row, const int* kind,
             const float* temp, const int* top_k, const float* top_p, const float* min_p,
             const float* unif, const int* mask_off, const unsigned* mask_bits,
             const int* res_off, const int* cap, const int* tok_off, const int* tok_n,
             const int* toks, float* res) {
    __shared__ float sh[32];
    __shared__ float hist[256];
    __shared__ float scan[SAMP_T];
    __shared__ int cnt;
    const int s = blockIdx.x, t = threadIdx.x, kd = kind[s], moff = mask_off[s];
    const float* row = logits + (size_t)slot_row[s] * vocab;
    float* out = res + res_off[s];
    float tp = temp[s];
    // Distributions use temp (<= 0 means 1); logprobs and entropy use the raw logits.
    float inv_t = (kd == 2 && tp > 0.f) ? 1.f / tp : 1.f;

    // Max and arg-max (lowest id among equal maxima), count of finite logits.
    float best = NEG_INF;
    int bi = 0x7fffffff;
    float nfin = 0.f;
    for (int i = t; i < vocab; i += SAMP_T) {
        float x = masked_logit(row, mask_bits, moff, i, inv_t);
        if (x != NEG_INF) nfin += 1.f;
        if (x > best || (x == best && i < bi)) { best = x; bi = i; }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ob = __shfl_xor_sync(0xffffffffu, best, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (ob > best || (ob == best && oi < bi)) { best = ob; bi = oi; }
    }
    __shared__ float wb[32];
    __shared__ int wi[32];
    if ((t & 31) == 0) { wb[t >> 5] = best; wi[t >> 5] = bi; }
    __syncthreads();
    if (t == 0) {
        for (int w = 1; w < SAMP_T / 32; w++)
            if (wb[w] > wb[0] || (wb[w] == wb[0] && wi[w] < wi[0])) { wb[0] = wb[w]; wi[0] = wi[w]; }
    }
    __syncthreads();
    const float mx = wb[0];
    const int amax = (mx == NEG_INF) ? 0 : wi[0]; // all masked: token 0, as the CPU does
    nfin = block_sum(nfin, sh);
    if (t == 0) { out[0] = __int_as_float(amax); out[1] = mx; }
    if (kd == 0 || mx == NEG_INF) {
        if (t == 0) { out[2] = 0.f; out[3] = 0.f; if (kd == 2) out[4] = 0.f; }
        if (kd == 3) for (int i = t; i < tok_n[s]; i += SAMP_T) out[5 + i] = NEG_INF;
        return;
    }

    if (kd == 1) {
        float T = tp;
        int k = top_k[s];
        if (T <= 0.f || k == 1) return; // arg-max, written above
        float it = 1.f / T;
        // Work in units of logit/T; threshold keys are over the raw logits (same order).
        unsigned kkey = 0;
        if (k > 0 && (float)k < nfin)
            kkey = radix_threshold(row, mask_bits, moff, vocab, 1.f, mx, 0u, (float)k, false,
                                   hist, sh);
        float zk = 0.f;
        for (int i = t; i < vocab; i += SAMP_T) {
            float x = masked_logit(row, mask_bits, moff, i, 1.f);
            if (x != NEG_INF && fkey(x) >= kkey) zk += expf((x - mx) * it);
        }
        zk = block_sum(zk, sh);
        unsigned pkey = kkey;
        float pp = top_p[s];
        if (pp < 1.f) {
            // Weighted radix select in units of logit/T: mass exp((x - mx) / T).
            unsigned prefix = 0, pmask = 0;
            float remaining = pp * zk;
            for (int shift = 24; shift >= 0; shift -= 8) {
                for (int b = t; b < 256; b += SAMP_T) hist[b] = 0.f;
                __syncthreads();
                for (int i = t; i < vocab; i += SAMP_T) {
                    float x = masked_logit(row, mask_bits, moff, i, 1.f);
                    if (x == NEG_INF) continue;
                    unsigned kk = fkey(x);
                    if (kk < kkey || (kk & pmask) != prefix) continue;
                    atomicAdd(&hist[(kk >> shift) & 255u], expf((x - mx) * it));
                }
                __syncthreads();
                if (t == 0) {
                    float cum = 0.f;
                    int b = 255;
                    for (; b > 0; b--) {
                        if (cum + hist[b] >= remaining) break;
                        cum += hist[b];
                    }
                    sh[0] = __uint_as_float((unsigned)b);
                    sh[1] = remaining - cum;
                }
                __syncthreads();
                prefix |= __float_as_uint(sh[0]) << shift;
                pmask |= 255u << shift;
                remaining = sh[1];
                __syncthreads();
            }
            if (prefix > pkey) pkey = prefix;
        }
        float mp = min_p[s];
        if (mp > 0.f) {
            // p >= min_p * p_max  <=>  x >= mx + T ln(min_p)
            unsigned mkey = fkey(mx + T * logf(mp));
            if (mkey > pkey) pkey = mkey;
        }
        // Inverse CDF over the kept tokens in id order; each thread owns a contiguous range.
        int per = (vocab + SAMP_T - 1) / SAMP_T;
        int lo = min(vocab, t * per), hi = min(vocab, lo + per);
        float local = 0.f;
        for (int i = lo; i < hi; i++) {
            float x = masked_logit(row, mask_bits, moff, i, 1.f);
            if (x != NEG_INF && fkey(x) >= pkey) local += expf((x - mx) * it);
        }
        scan[t] = local;
        __syncthreads();
        for (int o = 1; o < SAMP_T; o <<= 1) { // inclusive Hillis-Steele scan
            float v = t >= o ? scan[t - o] : 0.f;
            __syncthreads();
            scan[t] += v;
            __syncthreads();
        }
        float total = scan[SAMP_T - 1];
        float target = unif[s] * total;
        float before = scan[t] - local;
        if (local > 0.f && target >= before && (target < scan[t] || t == SAMP_T - 1 ||
                                                 scan[t] >= total)) {
            float acc = before;
            int pick = -1, last = -1;
            for (int i = lo; i < hi; i++) {
                float x = masked_logit(row, mask_bits, moff, i, 1.f);
                if (x == NEG_INF || fkey(x) < pkey) continue;
                last = i;
                acc += expf((x - mx) * it);
                if (target < acc) { pick = i; break; }
            }
            if (pick < 0) pick = last;
            if (pick >= 0) out[0] = __int_as_float(pick); // a thread at the boundary wins
        }
        return;
    }

    // Log-sum-exp and entropy of (masked logits) * inv_t.
    float se = 0.f;
    for (int i = t; i < vocab; i += SAMP_T) {
        float x = masked_logit(row, mask_bits, moff, i, inv_t);
        if (x != NEG_INF) se += expf(x - mx);
    }
    se = block_sum(se, sh);
    float lse = logf(se);
    if (kd == 4) {
        float h = 0.f;
        for (int i = t; i < vocab; i += SAMP_T) {
            float x = masked_logit(row, mask_bits, moff, i, inv_t);
            if (x != NEG_INF) {
                float lp = x - mx - lse;
                h -= expf(lp) * lp;
            }
        }
        h = block_sum(h, sh);
        if (t == 0) { out[2] = lse; out[3] = h; }
        return;
    }
    if (t == 0) { out[2] = lse; out[3] = 0.f; }
    if (kd == 3) {
        for (int i = t; i < tok_n[s]; i += SAMP_T) {
            int tok = toks[tok_off[s] + i];
            float x = (tok >= 0 && tok < vocab) ? masked_logit(row, mask_bits, moff, tok, 1.f)
                                                : NEG_INF;
            out[5 + i] = x == NEG_INF ? NEG_INF : x - mx - lse;
        }
        return;
    }
    // kd == 2: top-k candidates (ties at the threshold included, up to cap).
    int k = top_k[s];
    unsigned kkey = 0;
    if (k > 0 && (float)k < nfin)
        kkey = radix_threshold(row, mask_bits, moff, vocab, inv_t, mx, 0u, (float)k, false, hist,
                               sh);
    if (t == 0) cnt = 0;
    __syncthreads();
    int c = cap[s];
    for (int i = t; i < vocab; i += SAMP_T) {
        float x = masked_logit(row, mask_bits, moff, i, inv_t);
        if (x == NEG_INF || fkey(x) < kkey) continue;
        int slot = atomicAdd(&cnt, 1);
        if (slot < c) {
            out[5 + 2 * slot] = __int_as_float(i);
            out[6 + 2 * slot] = x;
        }
    }
    __syncthreads();
    if (t == 0) out[4] = __int_as_float(min(cnt, c));
}
