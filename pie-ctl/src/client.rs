//! A blocking connection to pied: handshake, request/response, event streams.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use proto::{
    ClientHello, ErrorReply, Event, HANDSHAKE_FRAME_LIMIT, HelloReply, MAX_FRAME, Request,
    RequestBody, Response, ResponseBody, SessionOutput,
};

/// An error the daemon answered with; kept typed so callers can react to its code.
#[derive(Debug)]
pub struct DaemonError(pub ErrorReply);

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.message)
    }
}

impl std::error::Error for DaemonError {}

pub struct Client {
    reader: UnixStream,
    /// Shared so a stdin-forwarding thread can send while the main thread reads a stream.
    writer: Arc<Mutex<UnixStream>>,
    next_id: Arc<Mutex<u64>>,
}

/// A handle that sends requests on the client's connection from another thread.
#[derive(Clone)]
pub struct Sender {
    writer: Arc<Mutex<UnixStream>>,
    next_id: Arc<Mutex<u64>>,
}

impl Sender {
    pub fn send(&self, body: RequestBody) -> Result<u64> {
        let id = {
            let mut next = self.next_id.lock().unwrap();
            *next += 1;
            *next
        };
        let frame = proto::encode_frame(&Request { id, body });
        let mut w = self.writer.lock().unwrap();
        w.write_all(&frame).context("connection to pied lost")?;
        Ok(id)
    }
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client> {
        let stream = UnixStream::connect(path).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                    "is pied running? pick the socket with --socket or PIE_SOCKET"
                }
                std::io::ErrorKind::PermissionDenied => "are you in the pie-admin group (or root)?",
                _ => "is pied running?",
            };
            anyhow!("cannot connect to pied at {}: {e} ({hint})", path.display())
        })?;
        let mut reader = stream.try_clone()?;
        let mut writer = stream;
        proto::write_frame(
            &mut writer,
            &ClientHello {
                magic: proto::MAGIC,
                min_version: proto::MIN_PROTOCOL_VERSION,
                max_version: proto::PROTOCOL_VERSION,
                client_version: env!("CARGO_PKG_VERSION").to_string(),
            },
        )
        .context("handshake with pied failed")?;
        let payload = proto::read_frame(&mut reader, HANDSHAKE_FRAME_LIMIT)
            .map_err(|e| anyhow!("handshake with pied failed: {e}"))?;
        match proto::decode_payload::<HelloReply>(&payload)
            .map_err(|e| anyhow!("handshake with pied failed: {e}"))?
        {
            HelloReply::Accepted(_) => {}
            HelloReply::Rejected(e) => bail!("pied refused the connection: {}", e.message),
        }
        Ok(Client {
            reader,
            writer: Arc::new(Mutex::new(writer)),
            next_id: Arc::new(Mutex::new(0)),
        })
    }

    pub fn sender(&self) -> Sender {
        Sender {
            writer: self.writer.clone(),
            next_id: self.next_id.clone(),
        }
    }

    fn read(&mut self) -> Result<Response> {
        let payload = proto::read_frame(&mut self.reader, MAX_FRAME)
            .map_err(|e| anyhow!("connection to pied lost: {e}"))?;
        proto::decode_payload(&payload).map_err(|e| anyhow!("bad reply from pied: {e}"))
    }

    /// Sends a request and waits for its single reply. Replies to other requests (e.g. the
    /// stdin writes of an attach) are skipped.
    pub fn call(&mut self, body: RequestBody) -> Result<ResponseBody> {
        let id = self.sender().send(body)?;
        loop {
            let r = self.read()?;
            if r.id == id {
                return match r.body {
                    ResponseBody::Error(e) => Err(DaemonError(e).into()),
                    body => Ok(body),
                };
            }
            if r.id == 0
                && let ResponseBody::Error(e) = r.body
            {
                return Err(DaemonError(e).into());
            }
        }
    }

    /// Sends a request whose reply is preceded by `Progress` updates.
    pub fn call_with_progress(
        &mut self,
        body: RequestBody,
        mut on_progress: impl FnMut(&str, u64, u64),
    ) -> Result<ResponseBody> {
        let id = self.sender().send(body)?;
        loop {
            let r = self.read()?;
            if r.id != id && r.id != 0 {
                continue;
            }
            match r.body {
                ResponseBody::Progress { stage, done, total } => on_progress(&stage, done, total),
                ResponseBody::Error(e) => return Err(DaemonError(e).into()),
                body => return Ok(body),
            }
        }
    }

    /// Sends a streaming request and calls `on_event` for each event until the stream
    /// ends, and `on_session` for what the process sends its user (inferlet sessions).
    /// `on_other` sees replies to other requests sent meanwhile (stdin writes, signals).
    pub fn stream(
        &mut self,
        body: RequestBody,
        mut on_event: impl FnMut(Event) -> Result<()>,
        mut on_session: impl FnMut(SessionOutput) -> Result<()>,
        mut on_other: impl FnMut(ResponseBody),
    ) -> Result<()> {
        let id = self.sender().send(body)?;
        loop {
            let r = self.read()?;
            if r.id != id && r.id != 0 {
                on_other(r.body);
                continue;
            }
            match r.body {
                ResponseBody::Event(e) => on_event(e)?,
                ResponseBody::Session(s) => on_session(s)?,
                ResponseBody::End => return Ok(()),
                ResponseBody::Error(e) => return Err(DaemonError(e).into()),
                other => bail!("unexpected reply from pied: {other:?}"),
            }
        }
    }
}
