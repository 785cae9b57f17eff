//! Running one process: build its WASI context from exactly what it was granted, create its
//! store with its limits, run it, and turn however it ended into an [`ExitStatus`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::{ExitStatus, Limits};
use tokio::io::AsyncRead;
use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap};
use wasmtime_wasi::cli::AsyncStdinStream;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::limits::{Control, MemoryCap, Stop};
use super::stdio::{Channel, LogOutput};
use super::{Loaded, Runtime};
use crate::events::EventLog;
use crate::http::HttpHooks;
use crate::inferlet::{InferletCtx, PieView, ProcessMeta, Shared};

pub struct ComponentState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: MemoryCap,
    pie: InferletCtx,
    http: WasiHttpCtx,
    http_hooks: HttpHooks,
}

impl ComponentState {
    /// What the inferlet host interfaces see (src/inferlet).
    pub fn pie_view(&mut self) -> PieView<'_> {
        PieView {
            ctx: &mut self.pie,
            table: &mut self.table,
        }
    }
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ComponentState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

pub struct ModuleState {
    pub(super) wasi: WasiP1Ctx,
    limits: MemoryCap,
}

/// Everything a process gets from the outside world.
pub struct ProcessIo {
    /// argv, starting with the program name.
    pub argv: Vec<String>,
    pub stdin: Box<dyn AsyncRead + Send + Sync>,
    pub log: Arc<EventLog>,
    /// Host directory mounted at `/scratch`, when the launch was granted the filesystem.
    pub scratch: Option<PathBuf>,
    /// Who runs it (inferlet host interfaces scope their state by it).
    pub process: ProcessMeta,
    /// Models, snapshots, topics: what inferlets share.
    pub shared: Arc<Shared>,
}

pub struct RunOutcome {
    pub status: ExitStatus,
    /// Fuel used, when fuel is metered.
    pub fuel_used: Option<u64>,
}

/// Fuel given to processes without a fuel limit: metering is on engine-wide, so they need
/// some; this much is never used up in practice.
const UNMETERED_FUEL: u64 = u64::MAX / 2;

impl Runtime {
    /// Runs a process to its end. Never panics on guest behaviour: every way a guest can
    /// end is an [`ExitStatus`].
    pub async fn run(
        &self,
        program: &Loaded,
        io: ProcessIo,
        limits: Limits,
        control: Arc<Control>,
    ) -> RunOutcome {
        let deadline = (limits.deadline_ms > 0)
            .then(|| Instant::now() + Duration::from_millis(limits.deadline_ms));
        let pie = InferletCtx::new(io.process.clone(), io.log.clone(), io.shared.clone());
        let http_hooks = HttpHooks::new(io.process.grants.http.clone(), io.log.clone());
        let log = io.log.clone();
        let args: Vec<String> = io.argv.iter().skip(1).cloned().collect();
        let wasi = match wasi_builder(io) {
            Ok(b) => b,
            Err(e) => {
                return RunOutcome {
                    status: ExitStatus::Failed(format!("{e:#}")),
                    fuel_used: None,
                };
            }
        };
        let fuel = if limits.fuel == 0 {
            UNMETERED_FUEL
        } else {
            limits.fuel
        };
        let cap = MemoryCap::new(limits.memory_bytes);

        // The wasm call itself checks kill and deadline on every epoch tick; the select
        // also covers a guest blocked in a host call (stdin, sleep), where no tick runs.
        let ctl = control.clone();
        let (result, fuel_left) = match program {
            Loaded::Component(pre) => {
                let mut wasi = wasi;
                let state = ComponentState {
                    wasi: wasi.build(),
                    table: handle_table(),
                    limits: cap,
                    pie,
                    http: WasiHttpCtx::new(),
                    http_hooks,
                };
                let mut store = Store::new(&self.engine, state);
                store.limiter(|s| &mut s.limits);
                setup_store(&mut store, fuel, ctl, deadline);
                let fut = async {
                    let cmd = pre.instantiate_async(&mut store).await?;
                    match cmd.wasi_cli_run().call_run(&mut store).await? {
                        Ok(()) => Ok(0),
                        Err(()) => Ok(1),
                    }
                };
                let r = supervise(fut, &control, deadline).await;
                (r, store.get_fuel().ok())
            }
            Loaded::Inferlet { pre, export, run } => {
                let mut wasi = wasi;
                let state = ComponentState {
                    wasi: wasi.build(),
                    table: handle_table(),
                    limits: cap,
                    pie,
                    http: WasiHttpCtx::new(),
                    http_hooks,
                };
                let mut store = Store::new(&self.engine, state);
                store.limiter(|s| &mut s.limits);
                setup_store(&mut store, fuel, ctl, deadline);
                let fut = async {
                    let input = match crate::inferlet::input::from_args(&args) {
                        Ok(i) => i,
                        Err(e) => {
                            log.append(proto::EventKind::Stderr(format!("{e}\n").into_bytes()));
                            return Ok(2);
                        }
                    };
                    let instance = pre.instantiate_async(&mut store).await?;
                    let func = instance
                        .get_typed_func::<(String,), (Result<String, String>,)>(&mut store, run)
                        .map_err(|e| {
                            e.context(format!(
                                "{export}.run does not have the inferlet signature func(input: string) -> result<string, string>"
                            ))
                        })?;
                    let (result,) = func.call_async(&mut store, (input,)).await?;
                    Ok(match result {
                        Ok(out) => {
                            let mut b = out.into_bytes();
                            if !b.ends_with(b"\n") {
                                b.push(b'\n');
                            }
                            log.append(proto::EventKind::Stdout(b));
                            0
                        }
                        Err(e) => {
                            log.append(proto::EventKind::Stderr(
                                format!("inferlet error: {e}\n").into_bytes(),
                            ));
                            1
                        }
                    })
                };
                let r = supervise(fut, &control, deadline).await;
                (r, store.get_fuel().ok())
            }
            Loaded::Module(pre) => {
                let mut wasi = wasi;
                let state = ModuleState {
                    wasi: wasi.build_p1(),
                    limits: cap,
                };
                let mut store = Store::new(&self.engine, state);
                store.limiter(|s| &mut s.limits);
                setup_store(&mut store, fuel, ctl, deadline);
                let fut = async {
                    let instance = pre.instantiate_async(&mut store).await?;
                    let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                    start.call_async(&mut store, ()).await?;
                    Ok(0)
                };
                let r = supervise(fut, &control, deadline).await;
                (r, store.get_fuel().ok())
            }
        };
        let status = match result {
            Ok(code) => ExitStatus::Code(code),
            Err(e) => classify(e, &limits),
        };
        RunOutcome {
            status,
            fuel_used: (limits.fuel > 0).then(|| fuel.saturating_sub(fuel_left.unwrap_or(0))),
        }
    }
}

/// Most resource handles a component may hold at once (streams, pollables, contexts, forward
/// passes, …): host memory a guest could otherwise grow without bound. A push past it traps.
const MAX_HANDLES: usize = 1 << 16;

fn handle_table() -> ResourceTable {
    let mut t = ResourceTable::new();
    t.set_max_capacity(MAX_HANDLES);
    t
}

fn wasi_builder(io: ProcessIo) -> anyhow::Result<WasiCtxBuilder> {
    let mut b = WasiCtxBuilder::new();
    // Deny by default: no environment, no sockets, no filesystem but granted preopens.
    // Outbound HTTP goes through wasi:http and crate::http's policy, never raw sockets.
    b.args(&io.argv)
        .stdin(AsyncStdinStream::new(Box::into_pin(io.stdin)))
        .stdout(LogOutput::new(io.log.clone(), Channel::Stdout))
        .stderr(LogOutput::new(io.log, Channel::Stderr))
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    if let Some(dir) = io.scratch {
        b.preopened_dir(&dir, "/scratch", FsPerms::ReadWrite)
            .map_err(anyhow::Error::from)?;
    }
    for m in &io.process.grants.mounts {
        let perms = match m.writable {
            true => FsPerms::ReadWrite,
            false => FsPerms::ReadOnly,
        };
        b.preopened_dir(&m.host, &m.guest, perms).map_err(|e| {
            anyhow::Error::from(e).context(format!("cannot open mount {:?}", m.name))
        })?;
    }
    Ok(b)
}

fn setup_store<T: Send + 'static>(
    store: &mut Store<T>,
    fuel: u64,
    control: Arc<Control>,
    deadline: Option<Instant>,
) {
    store
        .set_fuel(fuel)
        .expect("fuel metering is enabled engine-wide");
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| control.on_epoch(deadline));
}

/// Runs `fut` unless the process is killed or its deadline passes first.
async fn supervise<F>(fut: F, control: &Control, deadline: Option<Instant>) -> wasmtime::Result<i32>
where
    F: std::future::Future<Output = wasmtime::Result<i32>>,
{
    let deadline_passed = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = fut => r,
        _ = control.killed() => Err(Stop::Killed(control.reason()).into()),
        _ = deadline_passed => Err(Stop::Deadline.into()),
    }
}

fn classify(e: wasmtime::Error, limits: &Limits) -> ExitStatus {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return ExitStatus::Code(exit.0);
    }
    if let Some(stop) = e.downcast_ref::<Stop>() {
        return match stop {
            Stop::Killed(why) => ExitStatus::Killed(why.clone()),
            Stop::Deadline => ExitStatus::DeadlineExceeded {
                deadline_ms: limits.deadline_ms,
            },
            Stop::Memory { limit_bytes } => ExitStatus::MemoryLimit {
                limit_bytes: *limit_bytes,
            },
        };
    }
    if let Some(trap) = e.downcast_ref::<Trap>() {
        if *trap == Trap::OutOfFuel {
            return ExitStatus::FuelExhausted { fuel: limits.fuel };
        }
        return ExitStatus::Trap(format!("{e:?}"));
    }
    ExitStatus::Failed(format!("{e:?}"))
}
