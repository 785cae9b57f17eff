//! GPU benchmark (run by `scripts/bench-gpu` on a machine with a CUDA GPU): prefill tok/s and
//! decode tok/s at several concurrencies through the engine (scheduler, paged KV, sampling on
//! the device), on SmolLM2-135M (`--model DIR`) and on a randomly initialised 1B-class Llama
//! shape, with the single-stream memory-bandwidth floor (weight bytes per token over the
//! measured device-to-device copy bandwidth) printed beside the measured step time.
//!
//! Usage: bench_gpu [--model DIR] [--skip-random] [--prompt N] [--gen N] [--streams 1,16,64,256]

use engine::backend::Backend;
use engine::backend::cuda::{CudaBackend, CudaOptions};
use engine::{Engine, EngineOptions, ForwardRequest, KvContext, ModelConfig, Sampler};
use std::time::Instant;

fn arg(name: &str) -> Option<String> {
    let a: Vec<String> = std::env::args().collect();
    a.iter()
        .position(|x| x == name)
        .and_then(|i| a.get(i + 1).cloned())
}

/// Device-to-device copy bandwidth in bytes/s (bytes read + bytes written), median of 10.
fn copy_bandwidth(be: &CudaBackend) -> f64 {
    let st = be.stream();
    let n = 1usize << 29; // 1 GiB of u16
    let a = st.alloc_zeros::<u16>(n).expect("alloc");
    let mut b = st.alloc_zeros::<u16>(n).expect("alloc");
    st.memcpy_dtod(&a, &mut b).expect("copy");
    st.synchronize().expect("sync");
    let mut t = Vec::new();
    for _ in 0..10 {
        let s = Instant::now();
        st.memcpy_dtod(&a, &mut b).expect("copy");
        st.synchronize().expect("sync");
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    (4 * n) as f64 / t[t.len() / 2]
}

fn ids(n: usize, seed: usize, vocab: usize) -> Vec<u32> {
    (0..n)
        .map(|i| ((i * 2_654_435_761 + seed * 97 + 13) % vocab) as u32)
        .collect()
}

/// Prefill `seqs` prompts of `len` tokens at once; tok/s.
fn prefill(e: &Engine, seqs: usize, len: usize) -> f64 {
    let vocab = e.config().vocab_size;
    let mut ctxs: Vec<KvContext> = (0..seqs).map(|_| e.new_context()).collect();
    let reqs: Vec<ForwardRequest> = ctxs
        .iter_mut()
        .enumerate()
        .map(|(i, c)| {
            let toks = ids(len, 1000 + i, vocab);
            let plan = c.plan(len).expect("KV pages");
            ForwardRequest::new(i as u64, toks, 0, plan).output(len - 1, Sampler::Greedy)
        })
        .collect();
    let s = Instant::now();
    for c in e.submit_all(reqs).expect("submit") {
        c.wait().expect("prefill");
    }
    (seqs * len) as f64 / s.elapsed().as_secs_f64()
}

/// `streams` sequences with `prompt`-token prompts, then `gen` greedy decode steps in
/// lockstep; aggregate decode tok/s.
fn decode(e: &Engine, streams: usize, prompt: usize, gen_steps: usize) -> f64 {
    let vocab = e.config().vocab_size;
    let mut ctxs: Vec<KvContext> = (0..streams).map(|_| e.new_context()).collect();
    let mut pending: Vec<Vec<u32>> = (0..streams).map(|i| ids(prompt, i, vocab)).collect();
    let mut start = Instant::now();
    for step in 0..=gen_steps {
        if step == 1 {
            start = Instant::now(); // step 0 is the prefill
        }
        let mut reqs = Vec::with_capacity(streams);
        let mut pos = Vec::with_capacity(streams);
        for (i, c) in ctxs.iter_mut().enumerate() {
            let plan = c.plan(pending[i].len()).expect("KV pages");
            let r = ForwardRequest::new(i as u64, pending[i].clone(), c.next_position(), plan)
                .output(pending[i].len() - 1, Sampler::Greedy);
            pos.push(r.positions.clone());
            reqs.push(r);
        }
        for (i, c) in e.submit_all(reqs).expect("submit").into_iter().enumerate() {
            let out = c.wait().expect("decode");
            ctxs[i].commit(&pending[i], &pos[i]);
            let engine::SampleOutput::Token(t) = out.outputs[0] else {
                panic!("not a token")
            };
            pending[i] = vec![t];
        }
    }
    (streams * gen_steps) as f64 / start.elapsed().as_secs_f64()
}

fn run(label: &str, be: CudaBackend, bw: f64, prompt: usize, gen_steps: usize, streams: &[usize]) {
    let bytes = be.decode_bytes() as f64;
    let floor_ms = 1e3 * bytes / bw;
    let name = be.name();
    let opts = EngineOptions {
        max_batch_tokens: 4096,
        batch_wait: std::time::Duration::ZERO,
        ..Default::default()
    };
    let e = Engine::with_backend(Box::new(be), None, None, &opts);
    println!(
        "\n## {label} ({name}), weights read per decode step {:.1} MB",
        bytes / 1e6
    );
    if std::env::args().any(|a| a == "--decode-only") {
        // For profilers: nothing but `streams` decode runs.
        for &s in streams {
            decode(&e, s, prompt, gen_steps);
        }
        return;
    }
    // Warm up (kernel load, cuBLAS heuristics, allocations).
    prefill(&e, 2, 64);
    decode(&e, 4, 16, 4);
    println!("prefill 1×512: {:>9.0} tok/s", prefill(&e, 1, 512));
    println!("prefill 8×512: {:>9.0} tok/s", prefill(&e, 8, 512));
    println!("| streams | decode tok/s (aggregate) | ms per step | floor ms (single stream) |");
    println!("|---|---|---|---|");
    for &s in streams {
        let tps = decode(&e, s, prompt, gen_steps);
        let ms = 1e3 * s as f64 / tps;
        let floor = if s == 1 {
            format!("{floor_ms:.3} ({:.2}× floor)", ms / floor_ms)
        } else {
            String::new()
        };
        println!("| {s} | {tps:.0} | {ms:.3} | {floor} |");
    }
}

fn main() {
    let prompt: usize = arg("--prompt").map_or(128, |v| v.parse().expect("--prompt N"));
    let gen_steps: usize = arg("--gen").map_or(64, |v| v.parse().expect("--gen N"));
    let streams: Vec<usize> = arg("--streams")
        .unwrap_or_else(|| "1,16,64,256".into())
        .split(',')
        .map(|s| s.parse().expect("--streams list"))
        .collect();
    let max_s = *streams.iter().max().unwrap_or(&1);
    let page = 16;
    let pages = (max_s * (prompt + gen_steps + 1)).div_ceil(page) + 8 * 512 / page + 64;
    let opts = CudaOptions::new(0, pages, page);
    if let Some(dir) = arg("--model") {
        let be = CudaBackend::load(std::path::Path::new(&dir), &opts).expect("load model");
        let bw = copy_bandwidth(&be);
        println!("device-to-device copy: {:.0} GB/s (read + write)", bw / 1e9);
        run("SmolLM2-135M", be, bw, prompt, gen_steps, &streams);
    }
    if std::env::args().any(|a| a == "--skip-random") {
        return;
    }
    let cfg = ModelConfig::from_json(
        r#"{"architectures":["LlamaForCausalLM"],"hidden_size":2048,"intermediate_size":8192,
            "num_hidden_layers":16,"num_attention_heads":32,"num_key_value_heads":8,
            "vocab_size":128256,"rms_norm_eps":1e-5,"rope_theta":500000.0,
            "tie_word_embeddings":true}"#,
    )
    .expect("1B config");
    let be = CudaBackend::random(cfg, &opts, 42, 0.02).expect("random 1B model");
    let bw = copy_bandwidth(&be);
    println!("device-to-device copy: {:.0} GB/s (read + write)", bw / 1e9);
    run(
        "random 1B Llama (16 layers, hidden 2048, 32/8 heads, vocab 128256)",
        be,
        bw,
        prompt,
        gen_steps,
        &streams,
    );
}
