//! Runtime ISA detection and the small vector helpers of the attention and elementwise code.
//! Each helper has an AVX-512 body (compiled with `target_feature` so the default x86-64
//! build still runs everywhere) and a portable body that the tests compare against.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F + AVX512-BF16: `vdpbf16ps` GEMM.
    Avx512Bf16,
    /// AVX2 + FMA: bf16 widened to f32 with shifts, then FMA.
    Avx2,
    /// Plain Rust.
    Portable,
}

impl Isa {
    /// The ISA the CPU backend uses: AVX2+FMA where present, else portable Rust.
    /// `PIE_ENGINE_ISA=avx512|avx2|portable` overrides it. The AVX-512 (incl. AVX512-BF16
    /// `vdpbf16ps`) kernels are opt-in because the machines this was developed and tested on
    /// have no AVX-512; they are selected only when asked for and the CPU has the features.
    pub fn detect() -> Isa {
        let best = Self::best();
        match std::env::var("PIE_ENGINE_ISA").as_deref() {
            Ok("portable") => Isa::Portable,
            Ok("avx512") => best,
            _ if best == Isa::Avx512Bf16 && Self::has_avx2() => Isa::Avx2,
            _ => best,
        }
    }

    fn has_avx2() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    pub(crate) fn best() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bf16")
                && Self::has_avx2()
            {
                return Isa::Avx512Bf16;
            }
            if Self::has_avx2() {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    fn has_avx512(self) -> bool {
        self == Isa::Avx512Bf16
    }
}

/// Dot product of two equal-length f32 slices.
#[inline]
pub fn dot(isa: Isa, a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx512() {
        // SAFETY: the CPU supports AVX-512F (checked by `Isa::detect`).
        return unsafe { x86::dot512(a, b) };
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY: AVX2 and FMA checked by `Isa::detect`.
        return unsafe { x86::dot256(a, b) };
    }
    let _ = isa;
    dot_portable(a, b)
}

pub fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums let LLVM vectorize without reassociating a single sum.
    let mut s = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            s[i] += x[i] * y[i];
        }
    }
    let mut t: f32 = s.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        t += x * y;
    }
    t
}

/// `y += alpha * x`.
#[inline]
pub fn axpy(isa: Isa, alpha: f32, x: &[f32], y: &mut [f32]) {
    debug_assert_eq!(x.len(), y.len());
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx512() {
        // SAFETY: AVX-512F checked by `Isa::detect`.
        return unsafe { x86::axpy512(alpha, x, y) };
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY: AVX2 and FMA checked by `Isa::detect`.
        return unsafe { x86::axpy256(alpha, x, y) };
    }
    let _ = isa;
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `x[i] = exp(x[i] - max)`; returns the sum (softmax numerator and denominator).
pub fn exp_sub_sum(isa: Isa, x: &mut [f32], max: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if isa != Isa::Portable {
        // SAFETY: AVX2 and FMA checked by `Isa::detect` (AVX-512 CPUs have both).
        return unsafe { x86::exp_sub_sum256(x, max) };
    }
    let _ = isa;
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    sum
}

/// `g[i] = silu(g[i]) * u[i]`, the SwiGLU activation.
pub fn silu_mul(isa: Isa, g: &mut [f32], u: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa.has_avx512() {
        // SAFETY: AVX-512F checked by `Isa::detect`.
        return unsafe { x86::silu_mul512(g, u) };
    }
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx2 {
        // SAFETY: AVX2 and FMA checked by `Isa::detect`.
        return unsafe { x86::silu_mul256(g, u) };
    }
    let _ = isa;
    for (gi, ui) in g.iter_mut().zip(u) {
        *gi = *gi / (1.0 + (-*gi).exp()) * ui;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f")]
    pub unsafe fn dot512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len();
        let mut acc0 = _mm512_setzero_ps();
        let mut acc1 = _mm512_setzero_ps();
        let mut i = 0;
        unsafe {
            while i + 32 <= n {
                acc0 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(a.as_ptr().add(i)),
                    _mm512_loadu_ps(b.as_ptr().add(i)),
                    acc0,
                );
                acc1 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(a.as_ptr().add(i + 16)),
                    _mm512_loadu_ps(b.as_ptr().add(i + 16)),
                    acc1,
                );
                i += 32;
            }
            while i + 16 <= n {
                acc0 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(a.as_ptr().add(i)),
                    _mm512_loadu_ps(b.as_ptr().add(i)),
                    acc0,
                );
                i += 16;
            }
            if i < n {
                let m: __mmask16 = (1u32 << (n - i)) as u16 - 1;
                let m = if n - i == 16 { 0xffff } else { m };
                acc1 = _mm512_fmadd_ps(
                    _mm512_maskz_loadu_ps(m, a.as_ptr().add(i)),
                    _mm512_maskz_loadu_ps(m, b.as_ptr().add(i)),
                    acc1,
                );
            }
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn axpy512(alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len();
        let a = _mm512_set1_ps(alpha);
        let mut i = 0;
        unsafe {
            while i + 16 <= n {
                let yp = y.as_mut_ptr().add(i);
                _mm512_storeu_ps(
                    yp,
                    _mm512_fmadd_ps(a, _mm512_loadu_ps(x.as_ptr().add(i)), _mm512_loadu_ps(yp)),
                );
                i += 16;
            }
        }
        for j in i..n {
            y[j] += alpha * x[j];
        }
    }

    /// exp(x) for x in a sane range: 2^(x log2 e) split into integer and fraction, the
    /// fraction through a degree-6 polynomial (relative error ~1e-7, like libm for our use).
    #[target_feature(enable = "avx512f")]
    pub unsafe fn exp512(x: __m512) -> __m512 {
        let x = _mm512_max_ps(
            _mm512_min_ps(x, _mm512_set1_ps(88.0)),
            _mm512_set1_ps(-87.0),
        );
        let t = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E));
        let fi = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(t);
        let f = _mm512_sub_ps(t, fi);
        // 2^f on [0, 1): minimax polynomial.
        let mut p = _mm512_set1_ps(1.535_336_2e-4);
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.339_887_4e-3));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618_437e-3));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550_332_5e-2));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402_264_8e-1));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931_472e-1));
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0));
        _mm512_scalef_ps(p, fi)
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dot256(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        unsafe {
            while i + 32 <= n {
                for (j, c) in acc.iter_mut().enumerate() {
                    *c = _mm256_fmadd_ps(
                        _mm256_loadu_ps(pa.add(i + 8 * j)),
                        _mm256_loadu_ps(pb.add(i + 8 * j)),
                        *c,
                    );
                }
                i += 32;
            }
            while i + 8 <= n {
                acc[0] = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i)),
                    _mm256_loadu_ps(pb.add(i)),
                    acc[0],
                );
                i += 8;
            }
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_shuffle_ps::<1>(h, h));
        let mut t = _mm_cvtss_f32(h);
        for j in i..n {
            t += a[j] * b[j];
        }
        t
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn axpy256(alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        let a = _mm256_set1_ps(alpha);
        let mut i = 0;
        unsafe {
            while i + 8 <= n {
                let yp = y.as_mut_ptr().add(i);
                _mm256_storeu_ps(
                    yp,
                    _mm256_fmadd_ps(a, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(yp)),
                );
                i += 8;
            }
        }
        for j in i..n {
            y[j] += alpha * x[j];
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_sub_sum256(x: &mut [f32], max: f32) -> f32 {
        let n = x.len();
        let m = _mm256_set1_ps(max);
        let mut acc = _mm256_setzero_ps();
        let mut i = 0;
        unsafe {
            while i + 8 <= n {
                let p = x.as_mut_ptr().add(i);
                let e = exp256(_mm256_sub_ps(_mm256_loadu_ps(p), m));
                _mm256_storeu_ps(p, e);
                acc = _mm256_add_ps(acc, e);
                i += 8;
            }
            let mut buf = [0f32; 8];
            _mm256_storeu_ps(buf.as_mut_ptr(), acc);
            let mut sum: f32 = buf.iter().sum();
            for v in &mut x[i..] {
                *v = (*v - max).exp();
                sum += *v;
            }
            sum
        }
    }

    /// AVX2 version of `exp512`: 2^integer part built directly in the exponent bits.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp256(x0: __m256) -> __m256 {
        let x = _mm256_max_ps(
            _mm256_min_ps(x0, _mm256_set1_ps(88.0)),
            _mm256_set1_ps(-87.0),
        );
        let t = _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E));
        let fi = _mm256_floor_ps(t);
        let f = _mm256_sub_ps(t, fi);
        let mut p = _mm256_set1_ps(1.535_336_2e-4);
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.339_887_4e-3));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(9.618_437e-3));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(5.550_332_5e-2));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(2.402_264_8e-1));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(6.931_472e-1));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0));
        let e = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(fi),
            _mm256_set1_epi32(127),
        ));
        // Inputs below the clamp (masked scores are -inf) give exactly 0.
        let under = _mm256_cmp_ps::<_CMP_LT_OQ>(x0, _mm256_set1_ps(-87.0));
        _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn silu_mul256(g: &mut [f32], u: &[f32]) {
        let n = g.len().min(u.len());
        let one = _mm256_set1_ps(1.0);
        let mut i = 0;
        unsafe {
            while i + 8 <= n {
                let gp = g.as_mut_ptr().add(i);
                let x = _mm256_loadu_ps(gp);
                let e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), x));
                let s = _mm256_div_ps(x, _mm256_add_ps(one, e));
                _mm256_storeu_ps(gp, _mm256_mul_ps(s, _mm256_loadu_ps(u.as_ptr().add(i))));
                i += 8;
            }
        }
        for j in i..n {
            g[j] = g[j] / (1.0 + (-g[j]).exp()) * u[j];
        }
    }

    #[target_feature(enable = "avx512f")]
    pub unsafe fn silu_mul512(g: &mut [f32], u: &[f32]) {
        let n = g.len().min(u.len());
        let one = _mm512_set1_ps(1.0);
        let mut i = 0;
        unsafe {
            while i + 16 <= n {
                let gp = g.as_mut_ptr().add(i);
                let x = _mm512_loadu_ps(gp);
                let e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), x));
                let s = _mm512_div_ps(x, _mm512_add_ps(one, e));
                _mm512_storeu_ps(gp, _mm512_mul_ps(s, _mm512_loadu_ps(u.as_ptr().add(i))));
                i += 16;
            }
        }
        for j in i..n {
            g[j] = g[j] / (1.0 + (-g[j]).exp()) * u[j];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_matches_portable() {
        let isa = Isa::best();
        for n in [1usize, 15, 16, 17, 64, 100] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            assert!((dot(isa, &a, &b) - dot_portable(&a, &b)).abs() < 1e-4);
            let mut g = a.iter().map(|x| x * 8.0).collect::<Vec<_>>();
            let mut g2 = g.clone();
            silu_mul(isa, &mut g, &b);
            silu_mul(Isa::Portable, &mut g2, &b);
            if isa != Isa::Portable {
                let mut g3 = a.iter().map(|x| x * 8.0).collect::<Vec<_>>();
                silu_mul(Isa::Avx2, &mut g3, &b);
                for (x, y) in g3.iter().zip(&g2) {
                    assert!((x - y).abs() < 1e-5 * (1.0 + y.abs()), "avx2 {x} vs {y}");
                }
            }
            for (x, y) in g.iter().zip(&g2) {
                assert!((x - y).abs() < 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
            }
        }
    }
}
