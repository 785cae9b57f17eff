//! Episodic memory: facts kept in the tenant's scratch tree (`/scratch/episodic-memory.jsonl`,
//! one JSON string per line), so a later run of any of the tenant's processes remembers them.
//! `--ask` puts the stored facts in a system turn and lets the model answer. `--import` waits
//! for a text file through the session (`pie-ctl send-file ID FILE`, one fact a line);
//! `--export` sends the facts back as a file (`session.send-file`). Needs the
//! filesystem grant: `pie-ctl launch --fs episodic-memory.wasm -- --remember "..."`.

use std::io::Write;

use inferlet::model::Model;
use inferlet::pie::core::session;
use inferlet::sample::Sampler;
use inferlet::{Context, FutureBlobExt, Result, chat, runtime};
use serde::Deserialize;

const FILE: &str = "/scratch/episodic-memory.jsonl";

#[derive(Deserialize, Default)]
#[serde(default)]
struct Input {
    remember: Option<String>,
    ask: Option<String>,
    recall: bool,
    forget: bool,
    export: bool,
    import: bool,
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

fn remember(facts: &[String]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(FILE)
        .map_err(|e| format!("cannot open {FILE}: {e}"))?;
    for fact in facts {
        writeln!(f, "{}", serde_json::to_string(fact).unwrap())
            .map_err(|e| format!("cannot write {FILE}: {e}"))?;
    }
    Ok(())
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
        remember(&[fact])?;
        return Ok(format!("remembered ({} facts)", memories()?.len()));
    }
    if input.import {
        // One fact per line of a file the user sends (`pie-ctl send-file ID FILE`).
        let data = session::receive_file()
            .wait_async()
            .await
            .ok_or("the session ended before a file came")?;
        let text = String::from_utf8(data).map_err(|_| "the file is not UTF-8 text")?;
        let facts: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        remember(&facts)?;
        return Ok(format!(
            "imported {} facts ({} in all)",
            facts.len(),
            memories()?.len()
        ));
    }
    let facts = memories()?;
    if input.export {
        // The facts as a text file, one a line, to the user (`--files DIR` saves it).
        session::send_file(facts.join("\n").as_bytes());
        return Ok(format!("exported {} facts", facts.len()));
    }
    if input.recall {
        return Ok(facts.join("\n"));
    }
    let question = input
        .ask
        .ok_or("give --remember, --recall, --ask, --import, --export or --forget")?;
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
