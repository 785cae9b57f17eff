//! Engine behaviour on a tiny random Llama that the test writes itself: forward pass against
//! a naive reference, batching, paging, forking, prefix sharing, masks, chunked prefill, pool
//! exhaustion and malformed model directories.

mod common;

use common::tiny::{Tensors, TinySpec, reference_logits, write_model};
use engine::{
    Brle, Engine, EngineOptions, Error, ForwardRequest, KvContext, OnExhausted, SampleOutput,
    Sampler,
};
use std::time::Duration;

fn setup(spec: &TinySpec, opts: EngineOptions) -> (tempfile::TempDir, Tensors, Engine) {
    let dir = tempfile::tempdir().unwrap();
    let t = write_model(dir.path(), spec);
    let e = Engine::load(dir.path(), &opts).unwrap();
    (dir, t, e)
}

fn opts(page_size: usize) -> EngineOptions {
    EngineOptions {
        kv_pages: 256,
        page_size,
        ..Default::default()
    }
}

fn logits(o: &SampleOutput) -> &[f32] {
    match o {
        SampleOutput::Logits(l) => l,
        other => panic!("expected logits, got {other:?}"),
    }
}

fn all_logits(n: usize) -> Vec<(usize, Sampler)> {
    (0..n).map(|i| (i, Sampler::RawLogits)).collect()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "{what}: logit {i}: {x} vs {y}");
    }
}

fn seq(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| 3 + (i * 7 + salt * 13) % 70)
        .collect()
}

#[test]
fn forward_matches_reference_for_each_variant() {
    let variants = [
        TinySpec::default(),
        TinySpec {
            qkv_bias: true,
            seed: 2,
            ..Default::default()
        },
        TinySpec {
            tied: false,
            llama3_rope: true,
            kv_heads: 1,
            seed: 3,
            ..Default::default()
        },
        TinySpec {
            window: Some(4),
            seed: 4,
            ..Default::default()
        },
    ];
    for spec in variants {
        let (_d, t, e) = setup(&spec, opts(4));
        let toks = seq(11, spec.seed as u32);
        let want = reference_logits(&spec, &t, &toks, &|_, _| true);
        let mut ctx = e.new_context();
        // Prefill 7 tokens, then 4 more one at a time: paged cache across several pages.
        let out = e.step(0, &mut ctx, &toks[..7], all_logits(7)).unwrap();
        for i in 0..7 {
            assert_close(logits(&out[i]), &want[i], 2e-3, "prefill");
        }
        for i in 7..11 {
            let out = e.step(0, &mut ctx, &toks[i..i + 1], all_logits(1)).unwrap();
            assert_close(logits(&out[0]), &want[i], 2e-3, "decode");
        }
    }
}

#[test]
fn paged_equals_contiguous_and_batched_equals_unbatched() {
    let spec = TinySpec::default();
    let prompts: Vec<Vec<u32>> = (0..4).map(|i| seq(5 + 6 * i, i as u32)).collect();
    // Contiguous: one page holds a whole sequence.
    let (_d, _t, big) = setup(&spec, opts(64));
    let alone: Vec<Vec<SampleOutput>> = prompts
        .iter()
        .map(|p| {
            let mut c = big.new_context();
            big.step(0, &mut c, p, all_logits(p.len())).unwrap()
        })
        .collect();
    // Paged (1-token and 3-token pages, allocated interleaved so pages are not contiguous),
    // all prompts in flight at once.
    for ps in [1usize, 3] {
        let (_d, _t, e) = setup(&spec, opts(ps));
        let mut ctxs: Vec<KvContext> = prompts.iter().map(|_| e.new_context()).collect();
        let mut plans = Vec::new();
        for (c, p) in ctxs.iter_mut().zip(&prompts) {
            plans.push(c.plan(p.len()).unwrap());
        }
        let reqs: Vec<ForwardRequest> = prompts
            .iter()
            .zip(plans)
            .enumerate()
            .map(|(i, (p, plan))| {
                let mut r = ForwardRequest::new(i as u64, p.clone(), 0, plan);
                for j in 0..p.len() {
                    r = r.output(j, Sampler::RawLogits);
                }
                r
            })
            .collect();
        let waits = e.submit_all(reqs).unwrap();
        for (i, w) in waits.into_iter().enumerate() {
            let out = w.wait().unwrap().outputs;
            for (a, b) in out.iter().zip(&alone[i]) {
                // Same kernels and accumulation order regardless of batch and paging.
                assert_eq!(logits(a), logits(b), "page size {ps}, prompt {i}");
            }
        }
        let st = e.stats();
        assert_eq!(st.batches, 1, "all four prompts in one batch: {st:?}");
    }
}

#[test]
fn chunked_prefill_equals_whole_prefill() {
    let spec = TinySpec::default();
    let p = seq(23, 5);
    let (_d, t, e) = setup(
        &spec,
        EngineOptions {
            max_batch_tokens: 4,
            ..opts(4)
        },
    );
    let want = reference_logits(&spec, &t, &p, &|_, _| true);
    let mut c = e.new_context();
    let out = e
        .step(
            0,
            &mut c,
            &p,
            vec![(5, Sampler::RawLogits), (22, Sampler::RawLogits)],
        )
        .unwrap();
    assert_close(logits(&out[0]), &want[5], 2e-3, "chunk 2");
    assert_close(logits(&out[1]), &want[22], 2e-3, "last chunk");
    assert!(
        e.stats().batches >= 6,
        "prefill was not chunked: {:?}",
        e.stats()
    );
}

#[test]
fn fork_and_prefix_sharing_match_recomputation() {
    let spec = TinySpec::default();
    let (_d, t, e) = setup(&spec, opts(4));
    let prefix = seq(10, 1); // 2 full pages + a partial one
    let mut a = e.new_context();
    e.step(0, &mut a, &prefix, vec![]).unwrap();
    let mut b = a.fork();
    assert_eq!(a.pages(), b.pages());
    let (xa, xb) = (vec![5u32, 6, 7], vec![40u32, 41]);
    let oa = e.step(0, &mut a, &xa, all_logits(3)).unwrap();
    let ob = e.step(1, &mut b, &xb, all_logits(2)).unwrap();
    // Full pages stay shared; the partial page was copied before the first write.
    assert_eq!(a.pages()[..2], b.pages()[..2]);
    assert_ne!(a.pages()[2], b.pages()[2]);
    let ra = reference_logits(&spec, &t, &[prefix.clone(), xa].concat(), &|_, _| true);
    let rb = reference_logits(&spec, &t, &[prefix.clone(), xb].concat(), &|_, _| true);
    assert_close(logits(&oa[2]), &ra[12], 2e-3, "fork a");
    assert_close(logits(&ob[1]), &rb[11], 2e-3, "fork b");

    // Prefix sharing: a new context over the same first 8 tokens reuses a's two full pages.
    let stats_before = e.kv_pool().stats();
    let full = [prefix[..8].to_vec(), vec![9, 9, 9]].concat();
    let (mut c, cached) = KvContext::with_prefix(e.kv_pool().clone(), &full);
    assert_eq!(cached, 8);
    assert_eq!(c.pages(), &a.pages()[..2]);
    let oc = e.step(2, &mut c, &full[8..], all_logits(3)).unwrap();
    let rc = reference_logits(&spec, &t, &full, &|_, _| true);
    assert_close(logits(&oc[2]), &rc[10], 2e-3, "prefix-shared");
    assert!(e.kv_pool().stats().shared >= stats_before.shared);

    // Truncating into a committed page and writing a different suffix must not change what
    // the prefix cache serves for the original tokens (d is the pages' only owner).
    let p2 = seq(8, 7);
    let mut d = e.new_context();
    e.step(3, &mut d, &p2, vec![]).unwrap();
    d.truncate(6);
    e.step(3, &mut d, &[50, 51], vec![]).unwrap();
    let full2 = [p2.clone(), vec![9, 9, 9]].concat();
    let (mut f, cached) = KvContext::with_prefix(e.kv_pool().clone(), &full2);
    assert_eq!(cached, 8);
    let of = e.step(4, &mut f, &full2[8..], all_logits(3)).unwrap();
    let rf = reference_logits(&spec, &t, &full2, &|_, _| true);
    assert_close(logits(&of[2]), &rf[10], 2e-3, "prefix cache after truncate");
    drop((d, f));

    // Dropping every context frees all pages except the cached, hash-indexed ones.
    drop((a, b, c));
    let s = e.kv_pool().stats();
    assert_eq!(s.in_use, 0, "{s:?}");
    assert_eq!(s.free + s.cached, s.total);
}

#[test]
fn attention_and_logit_masks() {
    let spec = TinySpec::default();
    let (_d, t, e) = setup(&spec, opts(4));
    let p = seq(9, 3);
    // Token i may not attend to token 2 (except itself): a custom mask.
    let allowed = |i: usize, j: usize| j != 2 || i == 2;
    let want = reference_logits(&spec, &t, &p, &allowed);
    let mut c = e.new_context();
    let plan = c.plan(p.len()).unwrap();
    let mut r = ForwardRequest::new(0, p.clone(), 0, plan);
    r.attention_mask = Some(
        (0..p.len())
            .map(|i| Brle::from_bools(&(0..=i).map(|j| allowed(i, j)).collect::<Vec<_>>()))
            .collect(),
    );
    r = r.output(8, Sampler::RawLogits).output(8, Sampler::Greedy);
    // Only tokens 10..20 allowed for the greedy slot.
    let mut lm = vec![false; spec.vocab];
    lm[10..20].fill(true);
    r.logit_mask = Some(Brle::from_bools(&lm));
    let out = e.forward(r).unwrap().outputs;
    assert_close(logits(&out[0]), &want[8], 2e-3, "masked attention");
    let best = (10..20)
        .max_by(|&a, &b| want[8][a].total_cmp(&want[8][b]))
        .unwrap() as u32;
    assert_eq!(out[1], SampleOutput::Token(best));
}

#[test]
fn pool_exhaustion_errors_then_recovers() {
    let spec = TinySpec::default();
    let (_d, _t, e) = setup(
        &spec,
        EngineOptions {
            kv_pages: 4,
            ..opts(4)
        },
    );
    let mut a = e.new_context();
    e.step(0, &mut a, &seq(12, 0), vec![]).unwrap(); // 3 pages
    let mut b = e.new_context();
    let err = e
        .step(1, &mut b, &seq(8, 1), vec![(7, Sampler::Greedy)])
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::KvExhausted {
                requested: 2,
                free: 1,
                total: 4
            }
        ),
        "{err}"
    );
    assert!(b.is_empty(), "a failed step must not change the context");
    drop(a);
    let out = e
        .step(1, &mut b, &seq(8, 1), vec![(7, Sampler::Greedy)])
        .unwrap();
    assert!(matches!(out[0], SampleOutput::Token(_)));

    // Wait policy: an allocation blocks until another context releases its pages.
    let (_d, _t, e) = setup(
        &spec,
        EngineOptions {
            kv_pages: 2,
            on_exhausted: OnExhausted::Wait(Duration::from_secs(20)),
            ..opts(4)
        },
    );
    let mut a = e.new_context();
    e.step(0, &mut a, &seq(8, 0), vec![]).unwrap();
    let pool = e.kv_pool().clone();
    let h = std::thread::spawn(move || KvContext::new(pool).plan(4).map(|p| p.pages.len()));
    std::thread::sleep(Duration::from_millis(100));
    drop(a);
    assert_eq!(h.join().unwrap().unwrap(), 1);
}

#[test]
fn decode_steps_are_not_starved_by_a_long_prefill() {
    let spec = TinySpec::default();
    let (_d, _t, e) = setup(
        &spec,
        EngineOptions {
            max_batch_tokens: 8,
            ..opts(4)
        },
    );
    let mut long = e.new_context();
    let mut short = e.new_context();
    let mut other = e.new_context();
    e.step(2, &mut short, &seq(5, 1), vec![]).unwrap();
    let base = e.stats().batches;
    let reqs = vec![
        ForwardRequest::new(1, seq(64, 2), 0, long.plan(64).unwrap()).output(63, Sampler::Greedy),
        ForwardRequest::new(2, vec![7], 5, short.plan(1).unwrap()).output(0, Sampler::Greedy),
        ForwardRequest::new(3, seq(20, 3), 0, other.plan(20).unwrap()).output(19, Sampler::Greedy),
    ];
    let mut out: Vec<u64> = e
        .submit_all(reqs)
        .unwrap()
        .into_iter()
        .map(|c| c.wait().unwrap().batch - base)
        .collect();
    // The decode step goes in the first batch; the two prefills share the budget fairly, so
    // the shorter one finishes long before the 64-token one.
    assert_eq!(out[1], 1, "decode step in the first batch");
    assert!(
        out[2] <= 6,
        "the 20-token prefill got its fair share: {out:?}"
    );
    out.sort();
    assert_eq!(out[2], e.stats().batches - base);
}

#[test]
fn concurrent_callers_get_the_same_results_as_a_lone_caller() {
    // Eight threads generate greedily at once, so batch composition, chunking and pipelining
    // vary from run to run; every thread must get exactly what it gets alone.
    let spec = TinySpec::default();
    let (_d, _t, e) = setup(
        &spec,
        EngineOptions {
            max_batch_tokens: 16,
            ..opts(4)
        },
    );
    let prompts: Vec<Vec<u32>> = (0..8).map(|i| seq(3 + 5 * i, i as u32)).collect();
    let alone: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| e.generate_greedy(0, p, 12).unwrap())
        .collect();
    let together: Vec<Vec<u32>> = std::thread::scope(|s| {
        let hs: Vec<_> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let e = &e;
                s.spawn(move || e.generate_greedy(i as u64 + 1, p, 12).unwrap())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(alone, together);
}

#[test]
fn invalid_requests_are_rejected() {
    let spec = TinySpec::default();
    let (_d, _t, e) = setup(&spec, opts(4));
    let mut c = e.new_context();
    let plan = c.plan(2).unwrap();
    let bad_token = ForwardRequest::new(0, vec![1, 999], 0, plan.clone());
    assert!(matches!(e.submit(bad_token), Err(Error::InvalidRequest(_))));
    let bad_out = ForwardRequest::new(0, vec![1, 2], 0, plan.clone()).output(2, Sampler::Greedy);
    assert!(matches!(e.submit(bad_out), Err(Error::InvalidRequest(_))));
    let mut few_pages = ForwardRequest::new(0, vec![1; 9], 0, plan);
    few_pages.kv_pages.truncate(1);
    assert!(matches!(e.submit(few_pages), Err(Error::InvalidRequest(_))));
}

#[test]
fn tokenizer_and_template_of_tiny_model() {
    let (_d, _t, e) = setup(&TinySpec::default(), opts(4));
    let tok = e.tokenizer().unwrap();
    assert_eq!(tok.encode("w3 w4 w5", false).unwrap(), vec![3, 4, 5]);
    let t = e.chat_template().unwrap();
    let s = t
        .render(&[engine::Message::new("user", " hi ")], true, None)
        .unwrap();
    assert_eq!(s, "<user> hi <assistant>");
}

#[test]
fn malformed_model_dirs_fail_cleanly() {
    let spec = TinySpec::default();
    let load = |f: &dyn Fn(&std::path::Path)| -> String {
        let d = tempfile::tempdir().unwrap();
        write_model(d.path(), &spec);
        f(d.path());
        match Engine::load(d.path(), &opts(4)) {
            Ok(_) => panic!("loaded a malformed model"),
            Err(e) => e.to_string(),
        }
    };
    let set_cfg = |p: &std::path::Path, k: &str, v: serde_json::Value| {
        let mut c = common::tiny::config_json(&spec);
        c[k] = v;
        std::fs::write(p.join("config.json"), c.to_string()).unwrap();
    };
    let msg = load(&|p| std::fs::remove_file(p.join("config.json")).unwrap());
    assert!(msg.contains("config.json"), "{msg}");
    let msg = load(&|p| set_cfg(p, "architectures", serde_json::json!(["GPT2LMHeadModel"])));
    assert!(msg.contains("unsupported architecture"), "{msg}");
    let msg = load(&|p| set_cfg(p, "hidden_size", serde_json::json!(48)));
    assert!(msg.contains("shape"), "{msg}");
    let msg = load(&|p| set_cfg(p, "num_hidden_layers", serde_json::json!(3)));
    assert!(msg.contains("missing tensor"), "{msg}");
    let msg = load(&|p| std::fs::write(p.join("config.json"), "{ not json").unwrap());
    assert!(msg.starts_with("config:"), "{msg}");
    let msg = load(&|p| {
        let f = p.join("model.safetensors");
        let b = std::fs::read(&f).unwrap();
        std::fs::write(&f, &b[..b.len() / 2]).unwrap();
    });
    assert!(msg.contains("data_offsets"), "{msg}");
    let msg = load(&|p| std::fs::write(p.join("model.safetensors"), [255u8; 16]).unwrap());
    assert!(msg.contains("header"), "{msg}");
    let msg = load(&|p| std::fs::remove_file(p.join("model.safetensors")).unwrap());
    assert!(msg.contains("model.safetensors"), "{msg}");
    let msg = load(&|p| std::fs::remove_file(p.join("tokenizer.json")).unwrap());
    assert!(msg.contains("tokenizer"), "{msg}");
    let msg = load(&|p| std::fs::write(p.join("tokenizer.json"), "[]").unwrap());
    assert!(msg.contains("tokenizer"), "{msg}");
}

#[test]
fn sharded_checkpoint_loads() {
    let spec = TinySpec::default();
    let d = tempfile::tempdir().unwrap();
    let t = write_model(d.path(), &spec);
    std::fs::remove_file(d.path().join("model.safetensors")).unwrap();
    let (mut a, mut b) = (Tensors::new(), Tensors::new());
    let mut map = serde_json::Map::new();
    for (i, (k, v)) in t.iter().enumerate() {
        let (dst, file) = if i % 2 == 0 {
            (&mut a, "model-00001-of-00002.safetensors")
        } else {
            (&mut b, "model-00002-of-00002.safetensors")
        };
        dst.insert(k.clone(), v.clone());
        map.insert(k.clone(), file.into());
    }
    common::tiny::write_safetensors(&d.path().join("model-00001-of-00002.safetensors"), &a);
    common::tiny::write_safetensors(&d.path().join("model-00002-of-00002.safetensors"), &b);
    std::fs::write(
        d.path().join("model.safetensors.index.json"),
        serde_json::json!({"weight_map": map}).to_string(),
    )
    .unwrap();
    let e = Engine::load(d.path(), &opts(4)).unwrap();
    let p = seq(6, 0);
    let want = reference_logits(&spec, &t, &p, &|_, _| true);
    let mut c = e.new_context();
    let out = e
        .step(0, &mut c, &p, vec![(5, Sampler::RawLogits)])
        .unwrap();
    assert_close(logits(&out[0]), &want[5], 2e-3, "sharded");
}
