//! Command-line pieces shared by pied and pie-ctl: the `model` subcommands, and the man
//! pages and shell completions their hidden `generate-docs DIR` subcommands write.

use std::path::{Path, PathBuf};

use clap_complete::Shell;

/// `model` subcommands: the same words for `pied model …` (offline, on the state dir) and
/// `pie-ctl model …` (through the daemon).
#[derive(clap::Subcommand)]
pub enum ModelCommand {
    /// Import a GGUF file or a Hugging Face directory into the store
    Import {
        path: PathBuf,
        #[arg(long)]
        name: String,
    },
    /// List the models in the store
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Remove a model from the store
    Rm { name: String },
}

/// Writes `DIR/man/<name>.1` (plus `<name>-<sub>.1` per subcommand) and
/// `DIR/completions/{<name>.bash,_<name>,<name>.fish}`.
pub fn generate(mut cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    let name = cmd.get_name().to_string();
    let man = dir.join("man");
    let completions = dir.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    cmd.build();
    clap_mangen::generate_to(cmd.clone(), &man)?;
    // clap's implicit `help` subcommands get pages too; they say nothing the others don't.
    for entry in std::fs::read_dir(&man)? {
        let path = entry?.path();
        let file = path.file_name().unwrap_or_default().to_string_lossy();
        if file.starts_with(&format!("{name}-")) && file.contains("help") {
            std::fs::remove_file(&path)?;
        }
    }
    for (shell, file) in [
        (Shell::Bash, format!("{name}.bash")),
        (Shell::Zsh, format!("_{name}")),
        (Shell::Fish, format!("{name}.fish")),
    ] {
        let mut out = std::fs::File::create(completions.join(file))?;
        clap_complete::generate(shell, &mut cmd, &name, &mut out);
    }
    Ok(())
}
