//! Inferlets end to end: real pied serving SmolLM2-135M-Instruct, real pie-ctl, example
//! inferlets built from `inferlets/` with the published `inferlet` 0.3.0 SDK.

mod common;

use common::*;
use serde_json::Value;

fn golden(case: &str) -> (Vec<u32>, Vec<u32>) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/smollm2-135m.json");
    let v: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let c = &v["models"]["smollm2-135m-instruct-bf16"][case];
    let ids = |k: &str| -> Vec<u32> {
        c[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    (ids("prompt_ids"), ids("greedy_ids"))
}

/// Runs a program in the foreground; returns (success, stdout, stderr).
fn run(pied: &Pied, args: &[&str]) -> (bool, String, String) {
    let out = pied.ctl(args);
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn json_out(pied: &Pied, args: &[&str]) -> Value {
    let (ok, out, err) = run(pied, args);
    assert!(ok, "{args:?} failed: {err}\n{out}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn completion(pied: &Pied, prompt_ids: &[u32], n: usize) -> Vec<u32> {
    let tc = inferlet("text-completion");
    let input = serde_json::json!({ "prompt_ids": prompt_ids, "max_tokens": n, "json": true });
    let v = json_out(
        pied,
        &["launch", path_str(&tc), "--", "--input", &input.to_string()],
    );
    ids(&v["token_ids"])
}

#[test]
fn text_completion_greedy_equals_golden_ids() {
    let pied = pied_with_model("");
    for case in ["story", "fox"] {
        let (prompt, want) = golden(case);
        assert_eq!(completion(&pied, &prompt, 32), want, "case {case}");
    }
    // Flags become the JSON input the way `pie run` makes it (--max-tokens → max_tokens).
    let tc = inferlet("text-completion");
    let v = json_out(
        &pied,
        &[
            "launch",
            path_str(&tc),
            "--",
            "--prompt",
            "The quick brown fox",
            "--max-tokens",
            "32",
            "--json",
        ],
    );
    assert_eq!(ids(&v["token_ids"]), golden("fox").1);
    // Plain output is the text, and an inferlet's error is its exit status and message.
    let (ok, out, _) = run(
        &pied,
        &[
            "launch",
            path_str(&tc),
            "--",
            "--prompt",
            "The quick brown fox",
            "--max-tokens",
            "4",
        ],
    );
    assert!(ok);
    assert_eq!(out, " with a quick brown\n");
    let (ok, _, err) = run(&pied, &["launch", path_str(&tc)]);
    assert!(!ok);
    assert!(err.contains("give --prompt"), "{err}");
    let (ok, _, err) = run(&pied, &["launch", path_str(&tc), "--", "--input", "{nope"]);
    assert!(!ok);
    assert!(err.contains("not valid JSON"), "{err}");
}

#[test]
fn eight_inferlets_are_batched_and_each_gets_its_tokens_alone() {
    let pied = pied_with_model("");
    let (story, _) = golden("story");
    let (fox, _) = golden("fox");
    let prompts: Vec<Vec<u32>> = (0..8)
        .map(|i| {
            let mut p = if i % 2 == 0 {
                story.clone()
            } else {
                fox.clone()
            };
            p.truncate(p.len() - (i / 2) % 3);
            p
        })
        .collect();
    // Alone, one after the other.
    let alone: Vec<Vec<u32>> = prompts.iter().map(|p| completion(&pied, p, 24)).collect();
    let before = pied_stats(&pied);
    // Together.
    let tc = inferlet("text-completion");
    let pids: Vec<u64> = prompts
        .iter()
        .map(|p| {
            let input = serde_json::json!({ "prompt_ids": p, "max_tokens": 24, "json": true });
            pied.launch_detached(&[path_str(&tc), "--", "--input", &input.to_string()])
        })
        .collect();
    for (pid, want) in pids.iter().zip(&alone) {
        let end = pied.wait_exit(*pid);
        assert_eq!(
            end["state"],
            serde_json::json!({"Exited": {"Code": 0}}),
            "{end}"
        );
        let out = pied.ctl(&["logs", &pid.to_string()]);
        let v: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
        assert_eq!(&ids(&v["token_ids"]), want, "process {pid}");
    }
    let after = pied_stats(&pied);
    let batches = after["batches"].as_u64().unwrap() - before["batches"].as_u64().unwrap();
    let tokens =
        after["tokens_processed"].as_u64().unwrap() - before["tokens_processed"].as_u64().unwrap();
    let requests_per_batch = {
        // Mean batch size over the concurrent phase, from the running means.
        let (b0, m0) = (
            before["batches"].as_f64().unwrap(),
            before["mean_batch_size"].as_f64().unwrap(),
        );
        let (b1, m1) = (
            after["batches"].as_f64().unwrap(),
            after["mean_batch_size"].as_f64().unwrap(),
        );
        (b1 * m1 - b0 * m0) / (b1 - b0)
    };
    assert!(
        requests_per_batch > 1.5,
        "8 concurrent inferlets ran {batches} batches ({tokens} tokens) with {requests_per_batch:.2} requests per batch"
    );
}

fn pied_stats(pied: &Pied) -> Value {
    let s: Value = serde_json::from_slice(&pied.ctl(&["status", "--json"]).stdout).unwrap();
    s["models"][0].clone()
}

#[test]
fn forks_continue_independently() {
    let pied = pied_with_model("");
    let pg = inferlet("parallel-generation");
    let input = serde_json::json!({
        "prompt": "The quick brown fox",
        "suffixes": [" jumps", " sleeps", ""],
        "max_tokens": 16,
    });
    let v = json_out(
        &pied,
        &["launch", path_str(&pg), "--", "--input", &input.to_string()],
    );
    let forks = v["forks"].as_array().unwrap();
    assert_eq!(forks.len(), 3);
    let mut outs = Vec::new();
    for f in forks {
        // Each fork continues exactly as a fresh context holding the same tokens would.
        let got = ids(&f["token_ids"]);
        assert_eq!(got, completion(&pied, &ids(&f["prompt_ids"]), 16), "{f}");
        outs.push(got);
    }
    assert_ne!(outs[0], outs[1]);
    assert_eq!(outs[2], golden("fox").1[..16]);
    // Beam search forks a context per surviving candidate.
    let bs = inferlet("beam-search");
    let v = json_out(
        &pied,
        &[
            "launch",
            path_str(&bs),
            "--",
            "--prompt",
            "The capital of France is",
            "--max-tokens",
            "4",
        ],
    );
    let beams = v["beams"].as_array().unwrap();
    assert_eq!(beams.len(), 3);
    assert!(beams[0]["text"].as_str().unwrap().contains("Paris"), "{v}");
    assert!(beams[0]["logprob"].as_f64().unwrap() >= beams[2]["logprob"].as_f64().unwrap());
}

#[test]
fn snapshots_are_scoped_per_tenant() {
    let pied = pied_with_model("");
    let ks = inferlet("kv-snapshot");
    let k = path_str(&ks);
    let v = json_out(
        &pied,
        &[
            "launch",
            k,
            "--",
            "--save",
            "fox",
            "--prompt",
            "The quick brown fox",
        ],
    );
    assert_eq!(v["seq_len"], 4);
    // The owner continues from it (twice: open keeps it) and gets the golden continuation.
    let want = golden("fox").1[..8].to_vec();
    for _ in 0..2 {
        let v = json_out(
            &pied,
            &["launch", k, "--", "--open", "fox", "--max-tokens", "8"],
        );
        assert_eq!(v["seq_len"], 4);
        assert_eq!(ids(&v["token_ids"]), want);
    }
    let (ok, _, err) = run(
        &pied,
        &["launch", k, "--", "--save", "fox", "--prompt", "x"],
    );
    assert!(!ok && err.contains("already exists"), "{err}");
    if nix::unistd::Uid::effective().is_root() {
        // Another user does not see it, and can use the same name for their own.
        let out = pied.ctl_as(65534, &["launch", k, "--", "--open", "fox"]);
        assert!(!out.status.success());
        assert!(
            text(&out.stderr).contains("no snapshot named \"fox\""),
            "{}",
            text(&out.stderr)
        );
        let out = pied.ctl_as(
            65534,
            &["launch", k, "--", "--save", "fox", "--prompt", "Hello"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = pied.ctl_as(
            65534,
            &["launch", k, "--", "--take", "fox", "--max-tokens", "2"],
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    // Take removes it; afterwards it is gone.
    let v = json_out(
        &pied,
        &["launch", k, "--", "--take", "fox", "--max-tokens", "8"],
    );
    assert_eq!(ids(&v["token_ids"]), want);
    let (ok, _, err) = run(&pied, &["launch", k, "--", "--delete", "fox"]);
    assert!(!ok && err.contains("no snapshot named"), "{err}");
}

#[test]
fn missing_import_is_a_link_error_naming_it() {
    let pied = pied_with_model("");
    let (ok, _, err) = run(&pied, &["launch", path_str(&guest("missing_import"))]);
    assert!(!ok);
    assert!(err.contains("pie:telepathy/mind"), "{err}");
    // The daemon keeps serving.
    assert_eq!(completion(&pied, &golden("fox").0, 2), golden("fox").1[..2]);
}

#[test]
fn every_core_interface_answers_for_real() {
    let pied =
        pied_with_model("[[mcp]]\nname = \"files\"\ncommand = \"/nonexistent/files-server\"\n");
    let tour = inferlet("api-tour");
    let id = pied.launch_detached(&["--mcp", "files", path_str(&tour)]);
    assert_eq!(
        pied.wait_exit(id)["state"],
        serde_json::json!({"Exited": {"Code": 0}})
    );
    let out = pied.ctl(&["logs", &id.to_string()]);
    let r: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    let (fox, greedy) = golden("fox");
    // runtime, model, tokenizer
    assert_eq!(r["models"], serde_json::json!(["smollm2-135m"]));
    assert!(r["version"].as_str().unwrap().starts_with("pied "));
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap()
        .name;
    assert_eq!(r["username"], me);
    assert_eq!(r["instance_id"], id.to_string());
    assert!(
        r["unknown_model"]
            .as_str()
            .unwrap()
            .contains("no model named")
    );
    assert_eq!(ids(&r["encode"]), fox);
    assert_eq!(r["decode"], "The quick brown fox");
    assert!(
        r["decode_bad"]
            .as_str()
            .unwrap()
            .contains("outside the vocabulary")
    );
    assert_eq!(r["vocab_len"], 49152);
    assert_eq!(r["token_351_bytes"], " with");
    assert!(r["split_regex"].as_str().unwrap().contains(r"\p{L}"));
    assert_eq!(r["specials"].as_array().unwrap().len(), 17);
    assert_eq!(r["specials"][2], serde_json::json!([2, "<|im_end|>"]));
    // every sampler kind on one pass
    let s = &r["samplers"];
    assert_eq!(s["greedy"], greedy[0]);
    assert_eq!(ids(&s["every"])[3], greedy[0]);
    assert_eq!(ids(&s["dist_ids"]), vec![351, 284, 28, 365, 3365]); // golden top 5
    assert_eq!(s["logits_len"], 49152);
    assert_eq!(s["logits_argmax"], 351);
    assert!(
        (s["logit_351"].as_f64().unwrap() - 18.1388).abs() < 0.05,
        "{s}"
    );
    let lp = s["logprob_351"][0].as_f64().unwrap();
    assert!(
        (lp - s["dist_probs"][0].as_f64().unwrap().ln()).abs() < 1e-3,
        "{s}"
    );
    assert_eq!(s["logprobs"][0], s["logprob_351"][0]);
    assert!(s["entropy"].as_f64().unwrap() > 0.0);
    for k in ["top_k", "min_p", "multinomial", "top_k_top_p"] {
        assert!(s[k].is_u64(), "{k}: {s}");
    }
    // masks, speculation, pages, suspend
    assert_eq!(r["masked"], 284);
    assert!(
        r["attention_bad_rows"]
            .as_str()
            .unwrap()
            .contains("2 rows for 1 tokens")
    );
    assert_ne!(r["attention_self_only"], greedy[1]);
    assert_eq!(ids(&r["spec_right"]), greedy[1..5]);
    assert_eq!(ids(&r["spec_wrong"]), greedy[1..3]);
    let p = &r["pages"];
    assert_eq!(
        (p["page_size"].as_u64(), p["committed"].as_u64()),
        (Some(32), Some(0))
    );
    assert_eq!(
        (p["working"].as_u64(), p["working_tokens"].as_u64()),
        (Some(1), Some(4))
    );
    assert!(
        p["commit_too_many"]
            .as_str()
            .unwrap()
            .contains("only 0 are full")
    );
    let sus = &r["suspend"];
    assert_eq!(ids(&sus["continuation"]), greedy[..8]);
    assert_eq!(
        sus["balance_after"].as_f64().unwrap(),
        sus["balance_before"].as_f64().unwrap() + 1.0,
        "{sus}"
    );
    // scheduling, adapter, mcp
    let sc = &r["scheduling"];
    assert_eq!(
        (sc["price"].as_f64(), sc["dividend"].as_f64()),
        (Some(1.0), Some(0.0))
    );
    assert_eq!(sc["rent"].as_f64(), Some(0.0));
    assert!(sc["latency"].as_f64().unwrap() > 0.0 && sc["balance"].as_f64().unwrap() > 0.0);
    assert!(
        r["adapter"]
            .as_str()
            .unwrap()
            .contains("not supported by this engine")
    );
    assert_eq!(r["mcp"]["servers"], serde_json::json!(["files"]));
    assert!(
        r["mcp"]["unknown"]
            .as_str()
            .unwrap()
            .contains("no MCP server named")
    );
    assert!(
        r["mcp"]["known_list_tools"]
            .as_str()
            .unwrap()
            .contains("\"files\" is not running: it could not be started")
    );
}

#[test]
fn killing_a_generating_inferlet_frees_its_pages() {
    let pied = pied_with_model("");
    let tc = inferlet("text-completion");
    let id = pied.launch_detached(&[
        path_str(&tc),
        "--",
        "--prompt",
        "Once upon a time",
        "--max-tokens",
        "100000",
    ]);
    // Wait until it holds pages, then kill it mid-generation.
    let start = std::time::Instant::now();
    while pied_stats(&pied)["kv_pages_in_use"].as_u64().unwrap() == 0 {
        assert!(
            start.elapsed().as_secs() < 30,
            "the inferlet never took pages"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(pied.ctl(&["kill", &id.to_string()]).status.success());
    let end = pied.wait_exit(id);
    assert!(end["state"]["Exited"]["Killed"].is_string(), "{end}");
    let start = std::time::Instant::now();
    while pied_stats(&pied)["kv_pages_in_use"].as_u64().unwrap() != 0 {
        assert!(
            start.elapsed().as_secs() < 30,
            "pages still in use after the kill: {}",
            pied_stats(&pied)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The daemon keeps serving.
    assert_eq!(completion(&pied, &golden("fox").0, 4), golden("fox").1[..4]);
}

/// Checks `v` against the small schema below by hand (types, required keys, enum, bounds,
/// no other keys).
fn matches_city_schema(v: &Value) -> Result<(), String> {
    let o = v.as_object().ok_or("not an object")?;
    for k in o.keys() {
        if !["city", "country", "population", "coastal", "kind"].contains(&k.as_str()) {
            return Err(format!("undeclared key {k}"));
        }
    }
    for k in ["city", "country", "population", "coastal", "kind"] {
        if !o.contains_key(k) {
            return Err(format!("missing required key {k}"));
        }
    }
    if !o["city"].is_string() || !o["country"].is_string() {
        return Err("city/country not strings".into());
    }
    let pop = o["population"]
        .as_i64()
        .ok_or("population not an integer")?;
    if !(0..=100_000_000).contains(&pop) {
        return Err(format!("population {pop} out of bounds"));
    }
    if !o["coastal"].is_boolean() {
        return Err("coastal not a boolean".into());
    }
    if !["capital", "port", "other"].contains(&o["kind"].as_str().unwrap_or("")) {
        return Err(format!("kind {} not in the enum", o["kind"]));
    }
    Ok(())
}

#[test]
fn json_schema_output_parses_and_matches_its_schema() {
    let pied = pied_with_model("");
    let js = inferlet("json-schema");
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 40},
            "country": {"type": "string", "maxLength": 40},
            "population": {"type": "integer", "minimum": 0, "maximum": 100000000},
            "coastal": {"type": "boolean"},
            "kind": {"enum": ["capital", "port", "other"]}
        },
        "required": ["city", "country", "population", "coastal", "kind"],
        "additionalProperties": false
    });
    for prompt in ["Paris", "Describe the city of Lyon"] {
        let (ok, out, err) = run(
            &pied,
            &[
                "launch",
                path_str(&js),
                "--",
                "--schema",
                &schema.to_string(),
                "--prompt",
                prompt,
                "--max-tokens",
                "160",
            ],
        );
        assert!(ok, "{prompt}: {err}\n{out}");
        let v: Value = serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("{prompt}: output is not JSON ({e}): {out:?}"));
        matches_city_schema(&v).unwrap_or_else(|e| panic!("{prompt}: {e}: {v}"));
    }
    // A schema that is not JSON is refused with a clear error, and the daemon keeps serving.
    let (ok, _, err) = run(
        &pied,
        &["launch", path_str(&js), "--", "--schema", "{not json"],
    );
    assert!(!ok && err.contains("schema"), "{err}");
    assert!(pied.ctl(&["status"]).status.success());
}
