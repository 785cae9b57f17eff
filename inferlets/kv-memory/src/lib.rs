//! KV memory: facts kept in the tenant's key-value store (`pied:store/kv`, one key per fact
//! under `kv-memory/fact/`), so a later run of any of the tenant's processes remembers them,
//! across daemon restarts too. `--ask` puts the stored facts in a system turn and lets the
//! model answer. Every run writes what it did to its journal (`pied:store/journal`; see it
//! with `pie-ctl journal ID`). Needs the KV grant:
//! `pie-ctl launch --kv kv-memory.wasm -- --remember "..."`.

use inferlet::model::Model;
use inferlet::sample::Sampler;
use inferlet::{Context, Result, chat, runtime};
use serde::Deserialize;
use serde_json::json;

// pied's own WIT (wit/pied/store.wit): imports `pied:store/kv` and `pied:store/journal`.
wit_bindgen::generate!({
    path: "../../wit/pied",
    world: "pied:store/imports",
});

use pied::store::{journal, kv};

const PREFIX: &str = "kv-memory/fact/";

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    remember: Option<String>,
    ask: Option<String>,
    recall: bool,
    forget: bool,
    max_tokens: Option<usize>,
    /// Time N sets, gets, deletes and journal appends of 100-byte values (in the sandbox).
    bench: Option<u32>,
}

/// The stored facts, oldest first (keys sort by time).
fn facts() -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for key in kv::list_keys(PREFIX)? {
        if let Some(value) = kv::get(&key)? {
            out.push((key, String::from_utf8_lossy(&value).into_owned()));
        }
    }
    Ok(out)
}

/// A key that sorts by time: milliseconds since the epoch, then a hash of the fact.
fn key_for(fact: &str) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let hash = fact.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("{PREFIX}{ms:013}-{:08x}", hash as u32)
}

fn log(kind: &str, payload: serde_json::Value) -> Result<()> {
    journal::append(kind, &payload.to_string())?;
    Ok(())
}

#[inferlet::main]
async fn main(input: Input) -> Result<String> {
    let result = run(input).await;
    if let Err(e) = &result {
        // The journal is the process' own: it works without the KV grant.
        let _ = log("error", json!({ "error": e }));
    }
    result
}

async fn run(input: Input) -> Result<String> {
    if let Some(n) = input.bench {
        return bench(n.max(1));
    }
    if input.forget {
        let all = facts()?;
        for (key, _) in &all {
            kv::delete(key)?;
        }
        log("forget", json!({ "removed": all.len() }))?;
        return Ok(format!("forgot {} facts", all.len()));
    }
    if let Some(fact) = input.remember {
        let key = key_for(&fact);
        kv::set(&key, fact.as_bytes())?;
        let count = kv::list_keys(PREFIX)?.len();
        log(
            "remember",
            json!({ "key": key, "fact": fact, "facts": count }),
        )?;
        return Ok(format!("remembered ({count} facts)"));
    }
    let facts = facts()?;
    if input.recall {
        log("recall", json!({ "facts": facts.len() }))?;
        return Ok(facts
            .into_iter()
            .map(|(_, f)| f)
            .collect::<Vec<_>>()
            .join("\n"));
    }
    let question = input
        .ask
        .ok_or("give --remember, --recall, --ask or --forget")?;
    let name = runtime::models()
        .first()
        .cloned()
        .ok_or("no models are served")?;
    let model = Model::load(&name)?;
    let system = format!(
        "You remember these facts:\n{}\nAnswer using them.",
        facts
            .iter()
            .map(|(_, f)| format!("- {f}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut ctx = Context::new(&model)?;
    ctx.system(&system);
    ctx.user(&question).cue();
    let answer = ctx
        .generate(Sampler::Argmax)
        .max_tokens(input.max_tokens.unwrap_or(48))
        .stop(&chat::stop_tokens(&model))
        .collect_text()
        .await?;
    log(
        "ask",
        json!({
            "question": question,
            "facts": facts.len(),
            "system": system,
            "answer": answer,
        }),
    )?;
    Ok(answer)
}

/// Mean microseconds per call of each store function, measured inside the sandbox (host
/// call + the daemon's blocking pool + redb; a set and an append include the fsync).
fn bench(n: u32) -> Result<String> {
    use std::time::Instant;
    let value = vec![b'x'; 100];
    let key = |i: u32| format!("kv-memory/bench/{i:06}");
    let per_call = |t: Instant| t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    let t = Instant::now();
    for i in 0..n {
        kv::set(&key(i), &value)?;
    }
    let set = per_call(t);
    let t = Instant::now();
    for i in 0..n {
        kv::get(&key(i))?.ok_or("a benchmark key vanished")?;
    }
    let get = per_call(t);
    let t = Instant::now();
    for i in 0..n {
        journal::append("bench", &format!("{{\"i\":{i}}}"))?;
    }
    let append = per_call(t);
    let t = Instant::now();
    for i in 0..n {
        kv::delete(&key(i))?;
    }
    let delete = per_call(t);
    let result = json!({
        "n": n,
        "set_us": set.round(),
        "get_us": get.round(),
        "delete_us": delete.round(),
        "journal_append_us": append.round(),
    });
    Ok(result.to_string())
}
