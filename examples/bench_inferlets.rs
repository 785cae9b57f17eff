//! Helper of `scripts/bench-inferlets` (the engine side of its comparisons).
//!
//! - `bench_inferlets write-tiny DIR`: writes the engine tests' tiny random Llama (a model
//!   whose forward pass costs microseconds, so per-step overheads show) as a Hugging Face
//!   directory that `pied model import` accepts.
//! - `bench_inferlets engine-step DIR STEPS`: the same single-token decode loop as the
//!   `step-loop` inferlet, through `Engine::step` directly (1 engine thread, 32-token pages);
//!   prints `{"us_per_step": …}`.

#[path = "../engine/tests/common/tiny.rs"]
mod tiny;

use engine::{Engine, EngineOptions, Sampler};
use std::path::Path;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["write-tiny", dir] => {
            std::fs::create_dir_all(dir).unwrap();
            tiny::write_model(Path::new(dir), &tiny::TinySpec::default());
        }
        ["engine-step", dir, steps] => {
            let steps: usize = steps.parse().unwrap();
            let opts = EngineOptions {
                kv_pages: 1024,
                page_size: 32,
                threads: 1,
                ..Default::default()
            };
            let engine = Engine::load(Path::new(dir), &opts).unwrap();
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
            let us = t.elapsed().as_secs_f64() * 1e6 / steps as f64;
            println!(
                "{}",
                serde_json::json!({ "steps": steps, "us_per_step": us })
            );
        }
        _ => {
            eprintln!("usage: bench_inferlets write-tiny DIR | engine-step DIR STEPS");
            std::process::exit(2);
        }
    }
}
