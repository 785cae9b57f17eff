//! Import of a Hugging Face model directory: validate it against what the engine can load,
//! then hard-link (or copy, across filesystems) its files into the store.
//!
//! Validation reads only safetensors headers (through an mmap), never the weights, so it is
//! fast even for large models; the safetensors crate checks that each header's offsets cover
//! the file exactly, which also catches truncated shards.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::arch::{LlamaShape, SUPPORTED_ARCHITECTURES};
use crate::{Converted, Progress};

const INDEX: &str = "model.safetensors.index.json";
const SINGLE: &str = "model.safetensors";
/// Small files copied along when present; the engine reads the first four.
const OPTIONAL_FILES: &[&str] = &[
    "generation_config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// Validate the HF directory `src` and link or copy it into `out_dir`.
pub fn import(src: &Path, out_dir: &Path, progress: &mut dyn FnMut(Progress)) -> Result<Converted> {
    let dir = src.display();
    let config = read_json(&src.join("config.json"))?;
    let (architecture, shape, max_pos) =
        parse_config(&config).with_context(|| format!("{dir}/config.json"))?;

    let weight_files = weight_files(src)?;
    let mut found = BTreeMap::new();
    let mut dtypes = BTreeSet::new();
    let mut by_file: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for f in &weight_files {
        let path = src.join(f);
        let (tensors, file_dtypes) = read_header(&path)
            .with_context(|| format!("invalid safetensors file {}", path.display()))?;
        dtypes.extend(file_dtypes);
        for (name, shape) in tensors {
            if found.insert(name.clone(), shape).is_some() {
                bail!("{dir}: tensor `{name}` appears in more than one shard");
            }
            by_file.entry(f.as_str()).or_default().insert(name);
        }
    }
    if let Some(map) = read_index(src)? {
        for (name, file) in &map {
            if !by_file.get(file.as_str()).is_some_and(|s| s.contains(name)) {
                bail!(
                    "{dir}/{INDEX}: tensor `{name}` is mapped to `{file}`, which does not hold it"
                );
            }
        }
        if let Some(name) = found.keys().find(|n| !map.contains_key(*n)) {
            bail!("{dir}/{INDEX}: tensor `{name}` is in a shard but not in the weight map");
        }
    }
    shape
        .check(&found)
        .with_context(|| format!("{dir}: safetensors do not match config.json"))?;

    check_tokenizer(&src.join("tokenizer.json"), shape.vocab)?;
    for f in OPTIONAL_FILES.iter().filter(|f| f.ends_with(".json")) {
        let p = src.join(f);
        if p.exists() {
            read_json(&p)?;
        }
    }

    let mut files: Vec<String> = ["config.json", "tokenizer.json"].map(String::from).to_vec();
    files.extend(
        OPTIONAL_FILES
            .iter()
            .filter(|f| src.join(f).exists())
            .map(|f| f.to_string()),
    );
    if src.join(INDEX).exists() {
        files.push(INDEX.to_string());
    }
    files.extend(weight_files);
    let sizes: Vec<u64> = files
        .iter()
        .map(|f| Ok(fs::metadata(src.join(f))?.len()))
        .collect::<Result<_>>()?;
    let total = sizes.iter().sum();
    let mut done = 0;
    progress(Progress {
        stage: "copy",
        done,
        total,
    });
    for (f, size) in files.iter().zip(sizes) {
        link_or_copy(&src.join(f), &out_dir.join(f))?;
        done += size;
        progress(Progress {
            stage: "copy",
            done,
            total,
        });
    }

    let dtype = match dtypes.len() {
        1 => dtypes.into_iter().next().expect("one element").to_string(),
        _ => format!(
            "mixed({})",
            dtypes.into_iter().collect::<Vec<_>>().join(",")
        ),
    };
    Ok(Converted {
        architecture,
        dtype,
        params: found
            .iter()
            .filter(|(n, _)| !n.ends_with(".rotary_emb.inv_freq"))
            .filter(|(n, _)| !(shape.tie_word_embeddings && *n == "lm_head.weight"))
            .map(|(_, s)| s.iter().product::<u64>())
            .sum(),
        max_position_embeddings: max_pos,
        shape,
    })
}

fn read_json(path: &Path) -> Result<Value> {
    let text = fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn parse_config(c: &Value) -> Result<(String, LlamaShape, u64)> {
    let arch = c["architectures"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .context("no `architectures` list")?;
    if !SUPPORTED_ARCHITECTURES.contains(&arch) {
        bail!(
            "architecture `{arch}` is not supported (supported: {})",
            SUPPORTED_ARCHITECTURES.join(", ")
        );
    }
    let uint = |k: &str| {
        c[k].as_u64()
            .with_context(|| format!("`{k}` missing or not an integer"))
    };
    let hidden = uint("hidden_size")?;
    let heads = uint("num_attention_heads")?;
    let kv_heads = c["num_key_value_heads"].as_u64().unwrap_or(heads);
    if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        bail!("{heads} attention heads cannot share {kv_heads} key/value heads");
    }
    // head_dim may be absent or null; then it is hidden / heads.
    let head_dim = match c["head_dim"].as_u64() {
        Some(d) => d,
        None if hidden.is_multiple_of(heads) => hidden / heads,
        None => bail!("hidden_size {hidden} is not a multiple of {heads} heads"),
    };
    let flag = |k: &str| c[k].as_bool().unwrap_or(false);
    let qwen2 = arch == "Qwen2ForCausalLM";
    let shape = LlamaShape {
        hidden,
        intermediate: uint("intermediate_size")?,
        layers: uint("num_hidden_layers")?,
        heads,
        kv_heads,
        head_dim,
        vocab: uint("vocab_size")?,
        // transformers' Llama, Mistral and Qwen2 configs all default to untied.
        tie_word_embeddings: flag("tie_word_embeddings"),
        qkv_bias: qwen2 || flag("attention_bias"),
        o_bias: !qwen2 && flag("attention_bias"),
        mlp_bias: !qwen2 && flag("mlp_bias"),
    };
    let max_pos = c["max_position_embeddings"].as_u64().unwrap_or(0);
    Ok((arch.to_string(), shape, max_pos))
}

/// The safetensors files of the model, by name relative to `src`.
fn weight_files(src: &Path) -> Result<Vec<String>> {
    if let Some(map) = read_index(src)? {
        let files: BTreeSet<String> = map.into_values().collect();
        for f in &files {
            if !src.join(f).is_file() {
                bail!(
                    "{}/{INDEX} names shard `{f}`, which is missing",
                    src.display()
                );
            }
        }
        return Ok(files.into_iter().collect());
    }
    if src.join(SINGLE).is_file() {
        return Ok(vec![SINGLE.to_string()]);
    }
    bail!(
        "{}: no {SINGLE} or {INDEX} (only safetensors weights are supported)",
        src.display()
    )
}

/// `weight_map` of the shard index, if there is one. Shard names must be plain file names:
/// an index pointing at `../../somewhere` would otherwise pull arbitrary files into the store.
fn read_index(src: &Path) -> Result<Option<BTreeMap<String, String>>> {
    let path = src.join(INDEX);
    if !path.exists() {
        return Ok(None);
    }
    let v = read_json(&path)?;
    let map = v["weight_map"]
        .as_object()
        .with_context(|| format!("{}: no `weight_map` object", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, file) in map {
        let file = file
            .as_str()
            .with_context(|| format!("{}: shard of `{name}` is not a string", path.display()))?;
        let plain = Path::new(file).file_name().is_some_and(|f| f == file)
            && file.ends_with(".safetensors");
        if !plain {
            bail!(
                "{}: shard name `{file}` is not a plain .safetensors file name",
                path.display()
            );
        }
        out.insert(name.clone(), file.to_string());
    }
    Ok(Some(out))
}

type Shapes = BTreeMap<String, Vec<u64>>;

fn read_header(path: &Path) -> Result<(Shapes, BTreeSet<&'static str>)> {
    let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: read-only map of a file the admin chose to import; only the header is parsed and
    // the map is dropped before returning. See reader.rs for the truncation caveat.
    let map = unsafe { Mmap::map(&file) }?;
    let (_, meta) = SafeTensors::read_metadata(&map).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut shapes = BTreeMap::new();
    let mut dtypes = BTreeSet::new();
    for (name, info) in meta.tensors() {
        let dt = match info.dtype {
            Dtype::BF16 => "bf16",
            Dtype::F16 => "f16",
            Dtype::F32 => "f32",
            other => bail!("tensor `{name}` has dtype {other:?} (supported: BF16, F16, F32)"),
        };
        dtypes.insert(dt);
        shapes.insert(name, info.shape.iter().map(|&d| d as u64).collect());
    }
    Ok((shapes, dtypes))
}

/// tokenizer.json must parse and its ids must fit the embedding table.
fn check_tokenizer(path: &Path, vocab: u64) -> Result<()> {
    if !path.is_file() {
        bail!(
            "{} is missing (the engine needs a tokenizer.json)",
            path.display()
        );
    }
    let t = read_json(path)?;
    let bad = |what: &str| anyhow::anyhow!("{}: {what}", path.display());
    let model = t["model"]
        .as_object()
        .ok_or_else(|| bad("no `model` object"))?;
    let ty = model.get("type").and_then(Value::as_str).unwrap_or("?");
    let ids: Vec<u64> = match model.get("vocab") {
        Some(Value::Object(m)) => m.values().filter_map(Value::as_u64).collect(),
        // Unigram stores [piece, score] pairs: ids are positions.
        Some(Value::Array(a)) => (0..a.len() as u64).collect(),
        _ => return Err(bad(&format!("`{ty}` model has no vocab"))),
    };
    let added = t["added_tokens"].as_array().into_iter().flatten();
    let max = ids
        .into_iter()
        .chain(added.filter_map(|a| a["id"].as_u64()))
        .max();
    match max {
        None => Err(bad("empty vocabulary")),
        Some(m) if m >= vocab => Err(bad(&format!(
            "token id {m} does not fit the config's vocab_size {vocab}"
        ))),
        Some(_) => Ok(()),
    }
}

/// Hard-link `from` to `to`, copying when linking is impossible (another filesystem, or a
/// filesystem without hard links).
fn link_or_copy(from: &Path, to: &PathBuf) -> Result<()> {
    if fs::hard_link(from, to).is_ok() {
        return Ok(());
    }
    fs::copy(from, to).with_context(|| format!("copy {} to {}", from.display(), to.display()))?;
    Ok(())
}
