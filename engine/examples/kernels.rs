//! Kernel micro-benchmark: GEMV bandwidth and GEMM throughput of the CPU backend's bf16
//! matmul on SmolLM2-135M shapes. Usage: kernels [THREADS]
use engine::backend::cpu::gemm::{ActPrecision, GemmScratch, PackedMatrix, matmul};
use engine::backend::cpu::pool::ThreadPool;
use engine::backend::cpu::simd::Isa;
use std::time::Instant;

fn main() {
    let threads: usize = std::env::args().nth(1).map_or(2, |s| s.parse().unwrap());
    let pool = ThreadPool::new(threads);
    let isa = Isa::detect();
    println!("isa {isa:?}, {threads} threads");
    for &(n, k) in &[(960usize, 576usize), (3072, 576), (576, 1536), (49152, 576)] {
        let w: Vec<u16> = (0..n * k).map(|i| 0x3c00 + (i % 97) as u16).collect();
        let pm = PackedMatrix::pack(&w, n, k);
        let mut sc = GemmScratch::default();
        for &m in &[1usize, 16, 128] {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1).collect();
            let mut out = vec![0f32; m * n];
            for prec in [ActPrecision::F32, ActPrecision::Bf16] {
                let iters = (2_000_000_000 / (n * k * m.max(8))).clamp(3, 2000);
                matmul(&pool, isa, &a, m, &pm, &mut out, false, prec, &mut sc);
                let t = Instant::now();
                for _ in 0..iters {
                    matmul(&pool, isa, &a, m, &pm, &mut out, false, prec, &mut sc);
                }
                let dt = t.elapsed().as_secs_f64() / iters as f64;
                println!(
                    "n={n:6} k={k:5} m={m:4} {prec:?}: {:8.1} us  {:6.1} GB/s  {:6.1} GFLOP/s",
                    dt * 1e6,
                    (n * k * 2) as f64 / dt / 1e9,
                    (2 * n * k * m) as f64 / dt / 1e9
                );
            }
        }
    }
}
