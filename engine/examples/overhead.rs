//! Per-step engine overhead: a decode step through `Engine::step` (channel, scheduler,
//! completion, sampling, KV bookkeeping) against the bare `CpuBackend::forward` of the same
//! batch, on a tiny random model where the forward pass itself is cheap. Usage: overhead
#[path = "../tests/common/tiny.rs"]
mod tiny;

use engine::backend::cpu::{ActPrecision, CpuBackend, CpuOptions};
use engine::backend::{Backend, BatchInput, SeqInput};
use engine::{Engine, EngineOptions, Sampler};
use std::time::Instant;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny::TinySpec::default();
    tiny::write_model(dir.path(), &spec);
    let steps: usize = 3000;
    let opts = EngineOptions {
        kv_pages: 1024,
        page_size: 32,
        threads: 1,
        ..Default::default()
    };

    let engine = Engine::load(dir.path(), &opts).unwrap();
    let mut ctx = engine.new_context();
    engine.step(0, &mut ctx, &[3, 4, 5], vec![]).unwrap();
    let t = Instant::now();
    for i in 0..steps {
        engine
            .step(
                0,
                &mut ctx,
                &[3 + (i % 50) as u32],
                vec![(0, Sampler::Greedy)],
            )
            .unwrap();
    }
    let via_engine = t.elapsed().as_secs_f64() / steps as f64;
    drop(ctx);
    drop(engine);

    let mut be = CpuBackend::load(
        dir.path(),
        &CpuOptions {
            threads: 1,
            num_pages: 1024,
            page_size: 32,
            act_precision: ActPrecision::F32,
        },
    )
    .unwrap();
    let pages: std::sync::Arc<[u32]> = (0..(steps + 4).div_ceil(32) as u32).collect();
    let t = Instant::now();
    for i in 0..steps {
        let b = BatchInput {
            tokens: vec![3 + (i % 50) as u32],
            positions: vec![3 + i as u32],
            seqs: vec![SeqInput {
                start: 0,
                len: 1,
                kv_pages: pages.clone(),
                kv_len: 3 + i,
                mask: None,
                mask_row0: 0,
            }],
            outputs: vec![0],
        };
        be.forward(&b).unwrap();
    }
    let bare = t.elapsed().as_secs_f64() / steps as f64;
    println!(
        "decode step: engine {:.1} us, bare forward {:.1} us, engine overhead {:.1} us",
        via_engine * 1e6,
        bare * 1e6,
        (via_engine - bare) * 1e6
    );
}
