//! Episodic memory: facts kept in the tenant's scratch tree (`/scratch/episodic-memory.jsonl`,
//! one JSON string per line), so a later run of any of the tenant's processes remembers them.
//! `--ask` puts the stored facts in a system turn and lets the model answer. Needs the
//! filesystem grant: `pie-ctl launch --fs episodic-memory.wasm -- --remember "..."`.

use std::io::Write;

use inferlet::model::Model;
use inferlet::sample::Sampler;
use inferlet::{Context, Result, chat, runtime};
use serde::Deserialize;

const FILE: &str = "/scratch/episodic-memory.jsonl";

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    remember: Option<String>,
    ask: Option<String>,
    recall: bool,
    forget: bool,
    max_tokens: Option<usize>,
}

fn memories() -> Result<Vec<String>> {
    match std::fs::read_to_string(FILE) {
        Ok(text) => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| format!("{FILE}: bad line {l:?}: {e}")))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!(
            "cannot read {FILE}: {e} (launch with --fs for the scratch tree)"
        )),
    }
}

#[inferlet::main]
async fn main(input: Input) -> Result<String> {
    if std::fs::metadata("/scratch").is_err() {
        return Err("no /scratch: launch with --fs (the tenant's scratch tree)".into());
    }
    if input.forget {
        match std::fs::remove_file(FILE) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot remove {FILE}: {e}")),
        }
        return Ok("forgot everything".into());
    }
    if let Some(fact) = input.remember {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(FILE)
            .map_err(|e| format!("cannot open {FILE}: {e} (launch with --fs)"))?;
        writeln!(f, "{}", serde_json::to_string(&fact).unwrap())
            .map_err(|e| format!("cannot write {FILE}: {e}"))?;
        return Ok(format!("remembered ({} facts)", memories()?.len()));
    }
    let facts = memories()?;
    if input.recall {
        return Ok(facts.join("\n"));
    }
    let question = input
        .ask
        .ok_or("give --remember, --recall, --ask or --forget")?;
    let name = runtime::models()
        .first()
        .cloned()
        .ok_or("no models are served")?;
    let model = Model::load(&name)?;
    let mut ctx = Context::new(&model)?;
    ctx.system(&format!(
        "You remember these facts:\n{}\nAnswer using them.",
        facts
            .iter()
            .map(|f| format!("- {f}"))
            .collect::<Vec<_>>()
            .join("\n")
    ));
    ctx.user(&question).cue();
    ctx.generate(Sampler::Argmax)
        .max_tokens(input.max_tokens.unwrap_or(48))
        .stop(&chat::stop_tokens(&model))
        .collect_text()
        .await
}
