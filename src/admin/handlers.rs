//! One function per request: translate between protocol messages and [`Daemon`]
//! operations, enforcing who may do what.

use std::sync::Arc;

use proto::{
    DaemonStatus, ErrorCode, EventKind, Request, RequestBody, ResponseBody, SessionOutput,
    VersionInfo,
};
use tokio::sync::watch;

use super::{FEATURES, Replies};
use crate::bus::{Following, Outgoing, SessionError};
use crate::daemon::{Daemon, OpResult, err};
use crate::models;
use crate::procs::Process;
use crate::systemd;
use crate::tenancy::Caller;

/// Handles one request. Returns an error only when the client is gone.
pub async fn dispatch(
    daemon: &Arc<Daemon>,
    caller: &Caller,
    request: Request,
    replies: &Replies,
    closed: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let id = request.id;
    let body = match request.body {
        RequestBody::Logs {
            id: pid,
            follow,
            tail,
        } => {
            return start_stream(
                daemon, caller, id, pid, follow, tail, false, replies, closed,
            )
            .await;
        }
        RequestBody::Attach { id: pid } => {
            return start_stream(daemon, caller, id, pid, true, None, true, replies, closed).await;
        }
        RequestBody::ModelImport { path, name } => {
            return model_import(daemon, caller, id, path, name, replies).await;
        }
        other => handle(daemon, caller, other).await,
    };
    let body = body.unwrap_or_else(ResponseBody::Error);
    replies.reply(id, body).await
}

async fn handle(
    daemon: &Arc<Daemon>,
    caller: &Caller,
    body: RequestBody,
) -> OpResult<ResponseBody> {
    Ok(match body {
        RequestBody::Status => ResponseBody::Status(status(daemon, caller)),
        RequestBody::Version => ResponseBody::Version(VersionInfo {
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            protocol_version: proto::PROTOCOL_VERSION,
            min_protocol_version: proto::MIN_PROTOCOL_VERSION,
            max_protocol_version: proto::PROTOCOL_VERSION,
            wasmtime_version: "48.0.8".to_string(),
            features: FEATURES.iter().map(|f| f.to_string()).collect(),
        }),
        RequestBody::Upload { name, wasm } => {
            let limit = daemon.config().runtime.max_program_bytes;
            ResponseBody::Uploaded(daemon.programs.add(&name, wasm, caller.uid, limit).await?)
        }
        RequestBody::Launch(spec) => ResponseBody::Launched {
            id: daemon.launch(caller, spec).await?,
        },
        RequestBody::Ps { all } => {
            let list = daemon
                .procs
                .all()
                .into_iter()
                .filter(|p| caller.may_access(p.owner))
                .map(|p| p.info())
                .filter(|i| all || i.state.is_running())
                .collect();
            ResponseBody::Processes(list)
        }
        RequestBody::Inspect { id } => ResponseBody::Process(daemon.process(caller, id)?.info()),
        RequestBody::Stdin { id, data } if daemon.process(caller, id)?.session.accepts() => {
            // Inferlets read their user's input through session.receive, a line a message.
            let p = daemon.process(caller, id)?;
            p.session
                .deliver_lines(&data, false)
                .map_err(|e| session_error(id, e))?;
            ResponseBody::Ok
        }
        RequestBody::Stdin { id, data } => {
            let p = daemon.process(caller, id)?;
            p.write_stdin(&data)
                .await
                .map_err(|m| err(ErrorCode::BadRequest, m))?;
            ResponseBody::Ok
        }
        RequestBody::Signal { id, message } => {
            let p = daemon.process(caller, id)?;
            p.session
                .signal(message)
                .map_err(|e| session_error(id, e))?;
            ResponseBody::Ok
        }
        RequestBody::SendFile { id, data } => {
            let p = daemon.process(caller, id)?;
            p.session
                .deliver_file(data)
                .map_err(|e| session_error(id, e))?;
            ResponseBody::Ok
        }
        RequestBody::CloseStdin { id } => {
            let p = daemon.process(caller, id)?;
            if p.session.accepts() {
                p.session
                    .deliver_lines(&[], true)
                    .map_err(|e| session_error(id, e))?;
            }
            p.close_stdin().await;
            ResponseBody::Ok
        }
        RequestBody::Kill { id } => {
            daemon.kill(caller, id)?;
            ResponseBody::Ok
        }
        RequestBody::ProgramsList => {
            ResponseBody::Programs(daemon.programs.list(caller.uid, caller.admin))
        }
        RequestBody::ProgramRemove { program } => {
            let info = daemon
                .programs
                .remove(&program, caller.uid, caller.admin)
                .await?;
            ResponseBody::Programs(vec![info])
        }
        RequestBody::Reload => {
            require_admin(caller, "reload the daemon")?;
            systemd::reloading();
            let result = daemon.reload();
            systemd::ready(daemon);
            result?;
            ResponseBody::Ok
        }
        RequestBody::ModelList => {
            let config = daemon.config();
            let store = models::open(&daemon.state_dir).map_err(internal)?;
            let list = store.list().map_err(internal)?;
            ResponseBody::Models(
                list.iter()
                    .map(|e| models::info(e, config.default_model()))
                    .collect(),
            )
        }
        RequestBody::ModelRemove { name } => {
            require_admin(caller, "remove models")?;
            if daemon.config().models.iter().any(|m| m.name == name) {
                return Err(err(
                    ErrorCode::BadRequest,
                    format!(
                        "model {name:?} is named in pied.toml's [[model]] tables; remove it there first"
                    ),
                ));
            }
            let store = models::open(&daemon.state_dir).map_err(internal)?;
            let entry = store
                .get(&name)
                .map_err(|e| err(ErrorCode::NotFound, format!("{e:#}")))?;
            store.remove(&name).map_err(internal)?;
            ResponseBody::Models(vec![models::info(&entry, None)])
        }
        req @ (RequestBody::KvGet { .. }
        | RequestBody::KvList { .. }
        | RequestBody::Journal { .. }) => crate::store::admin::handle(daemon, caller, req).await?,
        RequestBody::Logs { .. } | RequestBody::Attach { .. } | RequestBody::ModelImport { .. } => {
            unreachable!("streaming requests are dispatched before")
        }
    })
}

fn session_error(id: u64, e: SessionError) -> proto::ErrorReply {
    let code = match e {
        SessionError::NoReceiver | SessionError::Ended => ErrorCode::BadRequest,
        SessionError::InboxFull { .. } => ErrorCode::LimitExceeded,
        SessionError::TooLarge { .. } => ErrorCode::TooLarge,
    };
    err(code, format!("process {id}: {e}"))
}

fn session_output(o: Outgoing) -> SessionOutput {
    match o {
        Outgoing::Message(m) => SessionOutput::Message(m),
        Outgoing::File(b) => SessionOutput::File(b),
        Outgoing::Dropped { items, bytes } => SessionOutput::Dropped { items, bytes },
    }
}

fn require_admin(caller: &Caller, what: &str) -> OpResult<()> {
    if caller.admin {
        Ok(())
    } else {
        Err(err(
            ErrorCode::PermissionDenied,
            format!("only root or the admin group may {what}"),
        ))
    }
}

fn internal(e: anyhow::Error) -> proto::ErrorReply {
    err(ErrorCode::Internal, format!("{e:#}"))
}

/// Imports a model on a blocking thread, streaming progress to the client. The path is
/// read with the daemon's rights, so only admins may ask.
async fn model_import(
    daemon: &Arc<Daemon>,
    caller: &Caller,
    request: u64,
    path: String,
    name: String,
    replies: &Replies,
) -> std::io::Result<()> {
    if let Err(e) = require_admin(caller, "import models") {
        return replies.reply(request, ResponseBody::Error(e)).await;
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let state_dir = daemon.state_dir.clone();
    let job = tokio::task::spawn_blocking(move || {
        let store = models::open(&state_dir)?;
        let mut throttle = models::Throttle::new();
        store.import(std::path::Path::new(&path), &name, &mut |p| {
            if throttle.pass(p.stage, p.done, p.total) {
                let _ = tx.send(ResponseBody::Progress {
                    stage: p.stage.to_string(),
                    done: p.done,
                    total: p.total,
                });
            }
        })
    });
    while let Some(progress) = rx.recv().await {
        replies.reply(request, progress).await?;
    }
    let body = match job.await {
        Ok(Ok(entry)) => {
            ResponseBody::Models(vec![models::info(&entry, daemon.config().default_model())])
        }
        Ok(Err(e)) => ResponseBody::Error(err(ErrorCode::BadRequest, format!("{e:#}"))),
        Err(e) => ResponseBody::Error(err(ErrorCode::Internal, format!("import task failed: {e}"))),
    };
    replies.reply(request, body).await
}

fn status(daemon: &Daemon, caller: &Caller) -> DaemonStatus {
    let config = daemon.config();
    let all = daemon.procs.all();
    let running = all.iter().filter(|p| p.is_running()).count() as u64;
    DaemonStatus {
        server_version: env!("CARGO_PKG_VERSION").to_string(),
        protocol_version: proto::PROTOCOL_VERSION,
        pid: std::process::id(),
        uptime_ms: daemon.uptime().as_millis() as u64,
        socket: daemon.socket_path.display().to_string(),
        state_dir: daemon.state_dir.display().to_string(),
        config: daemon.config_path.as_ref().map(|p| p.display().to_string()),
        running,
        exited: all.len() as u64 - running,
        max_processes: config.runtime.max_processes as u64,
        programs: daemon.programs.count() as u64,
        draining: daemon.is_draining(),
        allow_fs: config.runtime.allow_fs,
        default_limits: config.limits.default_limits(),
        max_limits: config.limits.max_limits(),
        you: caller.to_proto(),
        models: daemon.llm.status(),
        mcp: daemon.pie.mcp.status(),
    }
}

/// Starts a stream of a process's events on its own task, so the connection keeps
/// taking requests (an attached client sends stdin while output streams back).
#[allow(clippy::too_many_arguments)]
async fn start_stream(
    daemon: &Arc<Daemon>,
    caller: &Caller,
    request: u64,
    pid: u64,
    follow: bool,
    tail: Option<u64>,
    attach: bool,
    replies: &Replies,
    closed: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let process = match daemon.process(caller, pid) {
        Ok(p) => p,
        Err(e) => return replies.reply(request, ResponseBody::Error(e)).await,
    };
    let from = match (attach, tail) {
        // Attaching to an ended process still reports how it ended.
        (true, _) if !process.is_running() => process.log.tail_start(1),
        (true, _) => process.log.next_seq(),
        (false, Some(n)) => process.log.tail_start(n),
        (false, None) => 0,
    };
    // Followers get what the inferlet sends its user: the buffered backlog first (also
    // after the process ended: a foreground launch of a quick inferlet may start following
    // only after its end), then live items.
    let session = (attach || follow).then(|| process.session.follow());
    let replies = replies.clone();
    tokio::spawn(async move {
        let _ = stream_events(&process, from, follow, session, request, &replies, closed).await;
    });
    Ok(())
}

async fn stream_events(
    process: &Process,
    mut next: u64,
    follow: bool,
    session: Option<Following>,
    request: u64,
    replies: &Replies,
    mut closed: watch::Receiver<bool>,
) -> std::io::Result<()> {
    // Subscribe before reading, so nothing appended in between is missed.
    let mut appended = process.log.subscribe();
    let mut session_rx = match session {
        Some(Following { backlog, rx }) => {
            for item in backlog {
                replies
                    .reply(request, ResponseBody::Session(session_output(item)))
                    .await?;
            }
            Some(rx)
        }
        None => None,
    };
    loop {
        for event in process.log.since(next) {
            next = event.seq + 1;
            let ended = matches!(event.kind, EventKind::Exit(_));
            if ended && let Some(rx) = session_rx.as_mut() {
                // What the process sent before it ended goes out before its end.
                while let Ok(item) = rx.try_recv() {
                    replies
                        .reply(request, ResponseBody::Session(session_output(item)))
                        .await?;
                }
            }
            replies.reply(request, ResponseBody::Event(event)).await?;
            if ended {
                return replies.reply(request, ResponseBody::End).await;
            }
        }
        if !follow {
            return replies.reply(request, ResponseBody::End).await;
        }
        let item = async {
            match session_rx.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = appended.changed() => if changed.is_err() {
                return replies.reply(request, ResponseBody::End).await;
            },
            Some(item) = item => {
                replies.reply(request, ResponseBody::Session(session_output(item))).await?;
            }
            _ = closed.changed() => return Ok(()),
        }
    }
}
