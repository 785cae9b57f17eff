//! Declared-capability manifests: a program that ships one (`--manifest FILE` embeds it as
//! the `pied-manifest` custom section) links only the imports it declares.

mod common;

use common::*;

fn write_manifest(pied: &Pied, name: &str, requires: &str) -> String {
    let path = pied.dir.join(name);
    std::fs::write(
        &path,
        format!("# what this program needs\n[capabilities]\nrequires = [{requires}]\n"),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

fn launch(pied: &Pied, manifest: &str, program: &std::path::Path) -> (bool, String) {
    let out = pied.ctl(&["launch", "--manifest", manifest, path_str(program)]);
    (out.status.success(), text(&out.stdout) + &text(&out.stderr))
}

#[test]
fn undeclared_imports_fail_at_link_time_and_declared_ones_link() {
    let pied = pied_with_model("");
    let none = write_manifest(&pied, "none.toml", "");
    let infer = write_manifest(&pied, "inference.toml", "\"inference\", \"instruct\"");
    let no_kv = write_manifest(
        &pied,
        "no-kv.toml",
        "\"inference\", \"instruct\", \"journal\"",
    );
    let full = write_manifest(
        &pied,
        "full.toml",
        "\"inference\", \"instruct\", \"kv\", \"pied:store/journal\"",
    );

    // Plain WASI needs no capability.
    let (ok, out) = launch(&pied, &none, &guest("hello"));
    assert!(ok && out.contains("hello"), "{out}");

    // An inferlet that declares nothing cannot link pie:core.
    let completion = inferlet("text-completion");
    let (ok, out) = launch(&pied, &none, &completion);
    assert!(!ok, "{out}");
    assert!(out.contains("cannot link the component"), "{out}");
    assert!(out.contains("pie:core/"), "{out}");
    assert!(out.contains("add \"inference\""), "{out}");

    // Declared: it links and runs (a one-token completion).
    let out = pied.ctl(&[
        "launch",
        "--manifest",
        &infer,
        path_str(&completion),
        "--",
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "1",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // pied's own packages: the KV store is one capability, the journal another.
    let memory = inferlet("kv-memory");
    let (ok, out) = launch(&pied, &no_kv, &memory);
    assert!(!ok && out.contains("pied:store/kv"), "{out}");
    assert!(out.contains("add \"kv\""), "{out}");
    let (_, out) = launch(&pied, &full, &memory);
    assert!(!out.contains("cannot link"), "{out}");

    // The manifest is part of the program: the same code without one is another program,
    // which links everything pied offers.
    let out = pied.ctl(&["programs", "ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let shas: std::collections::BTreeSet<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["name"] == "text_completion")
        .map(|p| p["sha256"].as_str().unwrap())
        .collect();
    assert_eq!(shas.len(), 2, "{list}");
}

#[test]
fn a_malformed_manifest_is_refused_at_upload() {
    let pied = Pied::start("");
    let bad = write_manifest(&pied, "bad.toml", "\"telepathy\"");
    let (ok, out) = launch(&pied, &bad, &guest("hello"));
    assert!(!ok);
    assert!(out.contains("unknown capability \"telepathy\""), "{out}");
    // The daemon keeps serving.
    let out = pied.ctl(&["launch", path_str(&guest("hello"))]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
