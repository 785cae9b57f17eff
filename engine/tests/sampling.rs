//! Every sampler checked against its definition: empirical token frequencies over many seeds
//! against the exact filtered distribution (fixed seeds, so the test is deterministic), and
//! the closed forms of distributions, log-probabilities and entropy.

mod common;

use engine::sampling::run_sampler;
use engine::{Brle, SampleOutput, SampleParams, Sampler};

/// Logits of a small vocabulary with distinct probabilities.
fn logits() -> Vec<f32> {
    vec![2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -3.0]
}

fn softmax(l: &[f32], t: f32) -> Vec<f64> {
    let m = l.iter().cloned().fold(f32::MIN, f32::max);
    let e: Vec<f64> = l.iter().map(|&x| (((x - m) / t) as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|x| x / s).collect()
}

/// Keeps `keep` (sorted-descending ids) and renormalizes.
fn restrict(p: &[f64], keep: &[usize]) -> Vec<f64> {
    let s: f64 = keep.iter().map(|&i| p[i]).sum();
    (0..p.len())
        .map(|i| if keep.contains(&i) { p[i] / s } else { 0.0 })
        .collect()
}

fn histogram(params: &SampleParams, n: usize) -> Vec<f64> {
    let l = logits();
    let mut h = vec![0f64; l.len()];
    for seed in 0..n as u64 {
        let s = Sampler::Sample(SampleParams {
            seed,
            ..params.clone()
        });
        match run_sampler(&s, &l, &l) {
            SampleOutput::Token(t) => h[t as usize] += 1.0,
            o => panic!("{o:?}"),
        }
    }
    h.iter().map(|c| c / n as f64).collect()
}

/// Each frequency within 4.5 standard deviations of its probability; zero-probability tokens
/// never drawn.
fn check(freq: &[f64], want: &[f64], n: usize, what: &str) {
    for (i, (&f, &p)) in freq.iter().zip(want).enumerate() {
        if p == 0.0 {
            assert_eq!(f, 0.0, "{what}: token {i} must never be drawn");
        } else {
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!(
                (f - p).abs() < 4.5 * sd + 1e-9,
                "{what}: token {i}: {f:.4} vs {p:.4}"
            );
        }
    }
}

#[test]
fn multinomial_with_temperature() {
    let n = 20000;
    for t in [1.0f32, 0.5, 2.0] {
        let f = histogram(&SampleParams::multinomial(t, 0), n);
        check(&f, &softmax(&logits(), t), n, &format!("temperature {t}"));
    }
}

#[test]
fn top_k_top_p_min_p_and_combined() {
    let n = 20000;
    let p = softmax(&logits(), 1.0);
    let base = SampleParams::multinomial(1.0, 0);
    let f = histogram(
        &SampleParams {
            top_k: Some(3),
            ..base.clone()
        },
        n,
    );
    check(&f, &restrict(&p, &[0, 1, 2]), n, "top-k 3");
    // Cumulative probabilities 0.405, 0.650, 0.799, ...: top-p 0.6 keeps two tokens, 0.7 three.
    let f = histogram(
        &SampleParams {
            top_p: Some(0.6),
            ..base.clone()
        },
        n,
    );
    check(&f, &restrict(&p, &[0, 1]), n, "top-p 0.6");
    let f = histogram(
        &SampleParams {
            top_p: Some(0.7),
            ..base.clone()
        },
        n,
    );
    check(&f, &restrict(&p, &[0, 1, 2]), n, "top-p 0.7");
    // min-p 0.3: keep tokens with p >= 0.3 * p_max, i.e. logit >= 2 + ln 0.3 = 0.796.
    let f = histogram(
        &SampleParams {
            min_p: Some(0.3),
            ..base.clone()
        },
        n,
    );
    check(&f, &restrict(&p, &[0, 1, 2]), n, "min-p 0.3");
    // top-k 4 then top-p 0.75 within the renormalized four.
    let p4 = restrict(&p, &[0, 1, 2, 3]);
    let keep = if p4[0] + p4[1] >= 0.75 {
        vec![0, 1]
    } else {
        vec![0, 1, 2]
    };
    let f = histogram(
        &SampleParams {
            top_k: Some(4),
            top_p: Some(0.75),
            ..base
        },
        n,
    );
    check(&f, &restrict(&p, &keep), n, "top-k + top-p");
}

#[test]
fn seeded_sampling_is_reproducible_and_greedy_is_argmax() {
    let l = logits();
    let s = Sampler::Sample(SampleParams::multinomial(1.0, 42));
    let first = run_sampler(&s, &l, &l);
    for _ in 0..10 {
        assert_eq!(run_sampler(&s, &l, &l), first);
    }
    assert_eq!(
        run_sampler(&Sampler::Greedy, &l, &l),
        SampleOutput::Token(0)
    );
    assert_eq!(
        run_sampler(&Sampler::Sample(SampleParams::multinomial(0.0, 7)), &l, &l),
        SampleOutput::Token(0),
        "temperature 0 is greedy"
    );
}

#[test]
fn distribution_logprobs_entropy_and_raw_logits() {
    let l = logits();
    let p = softmax(&l, 1.0);
    match run_sampler(
        &Sampler::TopKDistribution {
            k: 3,
            temperature: 1.0,
        },
        &l,
        &l,
    ) {
        SampleOutput::Distribution { ids, probs } => {
            assert_eq!(ids, vec![0, 1, 2]);
            for (i, pr) in ids.iter().zip(probs) {
                assert!((pr as f64 - p[*i as usize]).abs() < 1e-6);
            }
        }
        o => panic!("{o:?}"),
    }
    match run_sampler(&Sampler::Logprob { token: 3 }, &l, &l) {
        SampleOutput::Logprob(x) => assert!((x as f64 - p[3].ln()).abs() < 1e-5),
        o => panic!("{o:?}"),
    }
    match run_sampler(&Sampler::Logprobs { tokens: vec![0, 7] }, &l, &l) {
        SampleOutput::Logprobs(v) => {
            assert!((v[0] as f64 - p[0].ln()).abs() < 1e-5);
            assert!((v[1] as f64 - p[7].ln()).abs() < 1e-5);
        }
        o => panic!("{o:?}"),
    }
    let h: f64 = -p.iter().map(|x| x * x.ln()).sum::<f64>();
    match run_sampler(&Sampler::Entropy, &l, &l) {
        SampleOutput::Entropy(x) => assert!((x as f64 - h).abs() < 1e-5),
        o => panic!("{o:?}"),
    }
    assert_eq!(
        run_sampler(&Sampler::RawLogits, &l, &l),
        SampleOutput::Logits(l.clone())
    );
}

#[test]
fn logit_mask_restricts_sampling() {
    let mut l = logits();
    // Only tokens 4..6 allowed.
    engine::sampling::apply_logit_mask(
        &mut l,
        &Brle::from_bools(&[false, false, false, false, true, true, false, false]),
    );
    for seed in 0..200 {
        match run_sampler(
            &Sampler::Sample(SampleParams::multinomial(1.0, seed)),
            &l,
            &l,
        ) {
            SampleOutput::Token(t) => assert!(t == 4 || t == 5),
            o => panic!("{o:?}"),
        }
    }
    assert_eq!(
        run_sampler(&Sampler::Greedy, &l, &l),
        SampleOutput::Token(4)
    );
}

#[test]
fn many_output_slots_through_the_engine() {
    use common::tiny::{TinySpec, write_model};
    let d = tempfile::tempdir().unwrap();
    write_model(d.path(), &TinySpec::default());
    let e = engine::Engine::load(
        d.path(),
        &engine::EngineOptions {
            kv_pages: 16,
            page_size: 4,
            ..Default::default()
        },
    )
    .unwrap();
    let run = || {
        let mut c = e.new_context();
        e.step(
            0,
            &mut c,
            &[3, 4, 5, 6],
            vec![
                (3, Sampler::Greedy),
                (
                    3,
                    Sampler::Sample(SampleParams {
                        top_k: Some(5),
                        ..SampleParams::multinomial(0.8, 9)
                    }),
                ),
                (
                    3,
                    Sampler::TopKDistribution {
                        k: 4,
                        temperature: 1.0,
                    },
                ),
                (2, Sampler::Logprobs { tokens: vec![1, 2] }),
                (3, Sampler::Entropy),
                (3, Sampler::RawLogits),
            ],
        )
        .unwrap()
    };
    let a = run();
    assert_eq!(a, run(), "same seeds, same outputs");
    let SampleOutput::Logits(l) = &a[5] else {
        panic!()
    };
    let argmax = (0..l.len()).max_by(|&x, &y| l[x].total_cmp(&l[y])).unwrap() as u32;
    assert_eq!(a[0], SampleOutput::Token(argmax));
    let SampleOutput::Distribution { ids, .. } = &a[2] else {
        panic!()
    };
    assert_eq!(ids[0], argmax);
    assert!(matches!(a[4], SampleOutput::Entropy(h) if h > 0.0));
}
