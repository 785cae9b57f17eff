//! Import a model into a state dir's store: `import STATE_DIR SRC NAME [bf16|f16|f32]`.
//! Stands in for `pied model import` when testing scripts/fetch-model.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use model_store::{ImportOptions, ModelStore};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [state, src, name, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: import STATE_DIR SRC NAME [bf16|f16|f32]");
    };
    let dtype = rest.first().map_or(Ok(Default::default()), |d| d.parse())?;
    let store = ModelStore::open(&Path::new(state).join("models"))?;
    let start = Instant::now();
    let mut last = 0;
    let entry = store
        .import_with(Path::new(src), name, &ImportOptions { dtype }, &mut |p| {
            let pct = (p.done * 100).checked_div(p.total).unwrap_or(100);
            if pct / 10 != last / 10 || p.done == p.total {
                eprint!("\r{} {pct:3}%", p.stage);
                let _ = std::io::stderr().flush();
                last = pct;
            }
        })
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    eprintln!();
    println!("{}", serde_json::to_string_pretty(&entry)?);
    eprintln!("imported in {:.2}s", start.elapsed().as_secs_f64());
    Ok(())
}
