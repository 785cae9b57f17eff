//! Engine benchmark (run by `scripts/bench-engine`): prefill and decode throughput of a model
//! directory on the CPU backend, single-stream and with concurrent sequences, plus peak RSS.
//!
//! Usage: bench [MODEL_DIR] [--prompt N] [--gen N] [--streams 4,16,64]

use engine::{Engine, EngineOptions, KvContext, SampleOutput, Sampler};
use std::sync::{Arc, Barrier};
use std::time::Instant;

fn peak_rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU seconds this process has used (user + system), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesized command name; utime and stime are fields 14 and 15.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn prompt_tokens(engine: &Engine, n: usize) -> Vec<u32> {
    let text = "Once upon a time, there was a little girl named Lily. She loved to play in the park \
                with her friends and watch the birds sing in the tall green trees. ";
    let tok = engine.tokenizer().expect("tokenizer");
    let mut ids = Vec::new();
    while ids.len() < n {
        ids.extend(tok.encode(text, false).expect("encode"));
    }
    ids.truncate(n);
    ids
}

fn token(o: &SampleOutput) -> u32 {
    match o {
        SampleOutput::Token(t) => *t,
        _ => unreachable!(),
    }
}

/// Prefills `prompt` in a fresh context and returns it with the first generated token.
fn prefill(engine: &Engine, caller: u64, prompt: &[u32]) -> (KvContext, u32) {
    let mut ctx = engine.new_context();
    let out = engine
        .step(
            caller,
            &mut ctx,
            prompt,
            vec![(prompt.len() - 1, Sampler::Greedy)],
        )
        .expect("prefill");
    (ctx, token(&out[0]))
}

fn decode(engine: &Engine, caller: u64, ctx: &mut KvContext, mut t: u32, n: usize) {
    for _ in 0..n {
        let out = engine
            .step(caller, ctx, &[t], vec![(0, Sampler::Greedy)])
            .expect("decode");
        t = token(&out[0]);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir = String::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../state/models/smollm2-135m"
    ));
    let (mut n_prompt, mut n_gen) = (128usize, 128usize);
    let mut streams = vec![4usize, 16, 64];
    let mut threads = 0usize;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--prompt" => n_prompt = args.next().unwrap().parse().unwrap(),
            "--gen" => n_gen = args.next().unwrap().parse().unwrap(),
            "--threads" => threads = args.next().unwrap().parse().unwrap(),
            "--streams" => {
                streams = args
                    .next()
                    .unwrap()
                    .split(',')
                    .map(|s| s.parse().unwrap())
                    .collect()
            }
            _ => dir = a,
        }
    }
    let max_streams = streams.iter().copied().max().unwrap_or(1);
    let page_size = 32;
    let pages = max_streams * (n_prompt + n_gen + 1).div_ceil(page_size) + 8;
    let t0 = Instant::now();
    let engine = Arc::new(
        Engine::load(
            std::path::Path::new(&dir),
            &EngineOptions {
                kv_pages: pages,
                page_size,
                threads,
                ..Default::default()
            },
        )
        .expect("load model"),
    );
    eprintln!(
        "loaded {} in {:.2}s on {}",
        dir,
        t0.elapsed().as_secs_f64(),
        engine.backend_name()
    );
    let prompt = prompt_tokens(&engine, n_prompt);
    let (cpu0, wall0) = (cpu_seconds(), Instant::now());

    // Prefill: best of 3 after a warm-up.
    let _ = prefill(&engine, 0, &prompt);
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let _ = prefill(&engine, 0, &prompt);
        best = best.min(t.elapsed().as_secs_f64());
    }
    let prefill_tps = n_prompt as f64 / best;

    // Single-stream decode: best of 2 (other processes on the machine skew single runs).
    let mut decode_tps: f64 = 0.0;
    for _ in 0..2 {
        let (mut ctx, t) = prefill(&engine, 0, &prompt);
        let t1 = Instant::now();
        decode(&engine, 0, &mut ctx, t, n_gen);
        decode_tps = decode_tps.max(n_gen as f64 / t1.elapsed().as_secs_f64());
    }

    println!("| metric | value |");
    println!("|---|---|");
    println!("| backend | {} |", engine.backend_name());
    println!("| prefill ({n_prompt} tokens) | {prefill_tps:.0} tok/s |");
    println!("| decode, 1 stream | {decode_tps:.1} tok/s |");
    for &n in &streams {
        let barrier = Arc::new(Barrier::new(n + 1));
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (engine, barrier, prompt) = (engine.clone(), barrier.clone(), prompt.clone());
                std::thread::spawn(move || {
                    let (mut ctx, t) = prefill(&engine, i as u64 + 1, &prompt);
                    barrier.wait();
                    decode(&engine, i as u64 + 1, &mut ctx, t, n_gen);
                })
            })
            .collect();
        barrier.wait();
        let before = engine.stats();
        let t = Instant::now();
        for h in handles {
            h.join().unwrap();
        }
        let dt = t.elapsed().as_secs_f64();
        let after = engine.stats();
        let agg = (n * n_gen) as f64 / dt;
        let batch = (after.tokens_processed - before.tokens_processed) as f64
            / (after.batches - before.batches).max(1) as f64;
        println!(
            "| decode, {n} streams (aggregate) | {agg:.1} tok/s ({:.1}x single, mean batch {batch:.1}) |",
            agg / decode_tps
        );
    }
    println!("| peak RSS | {:.0} MiB |", peak_rss_mib());
    let threads_used = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    // How much of the machine this run actually got: other processes (builds) lower it, and
    // every throughput above scales with it.
    println!(
        "| CPU share obtained | {:.0}% of {threads_used} cores (load average {}) |",
        100.0 * (cpu_seconds() - cpu0) / (wall0.elapsed().as_secs_f64() * threads_used as f64),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
    );
    let s = engine.stats();
    eprintln!("stats: {s:?}");
}
