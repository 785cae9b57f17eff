//! pied: the daemon. Parses its command line and config, opens its state, serves the admin
//! socket and handles signals (SIGHUP reloads, SIGTERM/SIGINT drain and exit).

mod admin;
mod bus;
mod config;
mod daemon;
mod events;
mod grants;
mod http;
mod inferlet;
mod instruct;
mod llm;
mod manifest;
mod mcp;
mod models;
mod mounts;
mod procs;
mod programs;
mod runtime;
mod scratch;
mod store;
mod systemd;
mod tenancy;
mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tokio::net::UnixListener;
use tokio::signal::unix::{SignalKind, signal};

use config::{Config, DEFAULT_CONFIG_PATH};
use daemon::Daemon;
use proto::cli::ModelCommand;

#[derive(Parser)]
#[command(
    name = "pied",
    version,
    about = "Programmable LLM inference daemon: runs sandboxed WebAssembly inferlets"
)]
struct Cli {
    /// Config file [default: /etc/pie/pied.toml when it exists, else built-in defaults]
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Admin socket path (overrides [daemon] socket)
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// State directory (overrides [daemon] state_dir)
    #[arg(long, global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the config file and exit (0 when valid)
    CheckConfig,
    /// Manage the model store directly, without a running daemon
    #[command(subcommand)]
    Model(ModelCommand),
    /// Write man pages and shell completions into DIR (for packaging)
    #[command(hide = true)]
    GenerateDocs { dir: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PIED_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pied: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load_config(path: Option<&Path>) -> Result<(Config, Option<PathBuf>)> {
    match path {
        Some(p) => Ok((Config::load(p)?, Some(p.to_owned()))),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            let p = PathBuf::from(DEFAULT_CONFIG_PATH);
            Ok((Config::load(&p)?, Some(p)))
        }
        None => Ok((Config::default(), None)),
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Some(Command::GenerateDocs { dir }) = &cli.command {
        use clap::CommandFactory;
        return Ok(proto::cli::generate(Cli::command(), dir)?);
    }
    let (mut config, config_path) = load_config(cli.config.as_deref())?;
    if let Some(Command::CheckConfig) = cli.command {
        println!(
            "config {} is valid",
            config_path
                .as_deref()
                .map_or("(built-in defaults)".into(), |p| p.display().to_string())
        );
        return Ok(());
    }
    if let Some(s) = cli.socket {
        config.daemon.socket = s;
    }
    if let Some(s) = cli.state_dir {
        config.daemon.state_dir = s;
    }
    if let Some(Command::Model(cmd)) = cli.command {
        return model_command(&config, cmd);
    }
    let socket_path = config.daemon.socket.clone();
    let state_dir = config.daemon.state_dir.clone();
    let socket_mode = config.socket_mode();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("pied-rt")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let activated =
            systemd::activated_listener().context("cannot take the socket passed by systemd")?;
        if activated.is_none() {
            // Before opening the state dir: a second pied must be told about the first, not
            // fail on a lock the first holds (the store).
            refuse_if_served(&socket_path)?;
        }
        let daemon = Daemon::open(config, config_path, socket_path.clone(), state_dir)?;
        let (listener, bound) = match activated {
            Some(l) => (UnixListener::from_std(l)?, false),
            None => (bind(&socket_path, socket_mode)?, true),
        };
        tracing::info!(
            socket = %socket_path.display(),
            activated = !bound,
            pooling = daemon.runtime.pooling(),
            "pied {} serving",
            env!("CARGO_PKG_VERSION")
        );
        tokio::spawn(admin::serve(listener, daemon.clone()));
        systemd::ready(&daemon);
        tokio::spawn(systemd::keepalive(daemon.clone()));
        wait_for_signals(&daemon).await?;

        systemd::stopping();
        daemon.drain().await;
        if bound {
            let _ = std::fs::remove_file(&socket_path);
        }
        tracing::info!("pied stopped");
        Ok(())
    })
}

fn model_command(config: &Config, cmd: ModelCommand) -> Result<()> {
    let state = &config.daemon.state_dir;
    match cmd {
        ModelCommand::Import { path, name } => {
            let info = models::import_offline(state, &path, &name)?;
            println!(
                "imported {} ({}, {} parameters, {}) into {}",
                info.name,
                info.architecture,
                info.params,
                info.dtype,
                state.join("models").join(&info.name).display()
            );
        }
        ModelCommand::Ls { json } => {
            let list: Vec<proto::ModelInfo> = models::open(state)?
                .list()?
                .iter()
                .map(|e| models::info(e, config.default_model()))
                .collect();
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for m in list {
                    println!(
                        "{}\t{}\t{}\t{} params",
                        m.name, m.architecture, m.dtype, m.params
                    );
                }
            }
        }
        ModelCommand::Rm { name } => {
            models::open(state)?.remove(&name)?;
            println!("removed {name}");
        }
    }
    Ok(())
}

/// Fails when a live daemon answers on `path`.
fn refuse_if_served(path: &Path) -> Result<()> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "another daemon is already serving {} (stop it or use --socket)",
            path.display()
        );
    }
    Ok(())
}

/// Binds the admin socket. A stale socket file (no daemon behind it) is replaced; a live
/// one means another pied is running, which is an error.
fn bind(path: &Path, mode: u32) -> Result<UnixListener> {
    if path.exists() {
        refuse_if_served(path)?;
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create socket dir {}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("cannot bind {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set permissions of {}", path.display()))?;
    Ok(listener)
}

/// Serves signals until one asks the daemon to stop.
async fn wait_for_signals(daemon: &Arc<Daemon>) -> Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                systemd::reloading();
                if let Err(e) = daemon.reload() {
                    tracing::error!("reload refused: {}", e.message);
                }
                systemd::ready(daemon);
            }
        }
    }
}
