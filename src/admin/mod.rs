//! The admin socket: accepts pie-ctl connections, runs the handshake, reads request frames
//! and hands them to [`handlers`]. A bad frame ends only its own connection, after an error
//! frame that says what was wrong.

mod handlers;

use std::sync::Arc;
use std::time::Duration;

use proto::{
    ClientHello, ErrorCode, FrameError, HANDSHAKE_FRAME_LIMIT, HelloReply, MAGIC, MAX_FRAME,
    Request, Response, ResponseBody, ServerHello,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, watch};

use crate::daemon::{Daemon, err};
use crate::tenancy::Caller;

/// A client that connects and says nothing is dropped after this long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

pub const FEATURES: &[&str] = &[
    "wasip1",
    "wasip2",
    "fs",
    "attach",
    "socket-activation",
    "mounts",
    "http",
    "mcp",
    "kv",
    "manifest",
];

/// The write half of a connection, shared by the request loop and streaming tasks.
#[derive(Clone)]
pub struct Replies {
    writer: Arc<Mutex<OwnedWriteHalf>>,
}

impl Replies {
    /// Sends one frame; an error means the client is gone.
    pub async fn send<T: serde::Serialize>(&self, msg: &T) -> std::io::Result<()> {
        let frame = proto::encode_frame(msg);
        let mut w = self.writer.lock().await;
        w.write_all(&frame).await
    }

    pub async fn reply(&self, id: u64, body: ResponseBody) -> std::io::Result<()> {
        self.send(&Response { id, body }).await
    }
}

pub async fn serve(listener: UnixListener, daemon: Arc<Daemon>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let daemon = daemon.clone();
                tokio::spawn(async move {
                    if let Err(e) = connection(stream, daemon).await {
                        tracing::debug!("connection ended: {e}");
                    }
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads one frame, growing the buffer only as bytes arrive.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, limit: usize) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut prefix[got..]).await?;
        if n == 0 {
            return Err(if got == 0 {
                FrameError::Closed
            } else {
                FrameError::Truncated { expected: 4, got }
            });
        }
        got += n;
    }
    let len = proto::check_len(prefix, limit)?;
    let mut payload = Vec::with_capacity(len.min(64 << 10));
    r.take(len as u64).read_to_end(&mut payload).await?;
    if payload.len() != len {
        return Err(FrameError::Truncated {
            expected: len,
            got: payload.len(),
        });
    }
    Ok(payload)
}

async fn connection(stream: UnixStream, daemon: Arc<Daemon>) -> std::io::Result<()> {
    let cred = stream.peer_cred()?;
    let admin_group = daemon.config().daemon.admin_group.clone();
    let caller = Caller::resolve(cred.uid(), cred.gid(), &admin_group);
    let (mut reader, writer) = stream.into_split();
    let replies = Replies {
        writer: Arc::new(Mutex::new(writer)),
    };

    let hello = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        read_frame(&mut reader, HANDSHAKE_FRAME_LIMIT),
    )
    .await
    {
        Err(_) | Ok(Err(FrameError::Closed)) => return Ok(()),
        Ok(Err(e)) => {
            let why = format!("bad handshake ({e}); is this a pie-ctl talking to pied?");
            return reject(&replies, &mut reader, ErrorCode::MalformedFrame, why).await;
        }
        Ok(Ok(payload)) => payload,
    };
    let hello: ClientHello = match proto::decode_payload(&hello) {
        Ok(h) => h,
        Err(e) => {
            let why = format!("bad handshake ({e}); is this a pie-ctl talking to pied?");
            return reject(&replies, &mut reader, ErrorCode::MalformedFrame, why).await;
        }
    };
    if hello.magic != MAGIC {
        let why = "bad handshake (wrong magic); is this a pie-ctl talking to pied?".to_string();
        return reject(&replies, &mut reader, ErrorCode::MalformedFrame, why).await;
    }
    let Some(version) = proto::negotiate(hello.min_version, hello.max_version) else {
        let why = format!(
            "protocol version mismatch: pie-ctl {} speaks {}..={}, pied {} speaks {}..={}; upgrade the older one",
            hello.client_version,
            hello.min_version,
            hello.max_version,
            env!("CARGO_PKG_VERSION"),
            proto::MIN_PROTOCOL_VERSION,
            proto::PROTOCOL_VERSION
        );
        return reject(&replies, &mut reader, ErrorCode::VersionMismatch, why).await;
    };
    replies
        .send(&HelloReply::Accepted(ServerHello {
            version,
            server_version: env!("CARGO_PKG_VERSION").to_string(),
            features: FEATURES.iter().map(|f| f.to_string()).collect(),
        }))
        .await?;

    // Streaming handlers stop when the connection closes.
    let (closed_tx, closed_rx) = watch::channel(false);
    let result = loop {
        let payload = match read_frame(&mut reader, MAX_FRAME).await {
            Ok(p) => p,
            Err(FrameError::Closed) => break Ok(()),
            Err(e) => {
                let _ = replies
                    .reply(
                        0,
                        ResponseBody::Error(err(ErrorCode::MalformedFrame, e.to_string())),
                    )
                    .await;
                linger(&mut reader).await;
                break Ok(());
            }
        };
        let request: Request = match proto::decode_payload(&payload) {
            Ok(r) => r,
            Err(e) => {
                let _ = replies
                    .reply(
                        0,
                        ResponseBody::Error(err(ErrorCode::MalformedFrame, e.to_string())),
                    )
                    .await;
                break Ok(());
            }
        };
        if let Err(e) =
            handlers::dispatch(&daemon, &caller, request, &replies, closed_rx.clone()).await
        {
            break Err(e);
        }
    };
    let _ = closed_tx.send(true);
    result
}

async fn reject(
    replies: &Replies,
    reader: &mut OwnedReadHalf,
    code: ErrorCode,
    message: String,
) -> std::io::Result<()> {
    tracing::debug!("handshake rejected: {message}");
    replies
        .send(&HelloReply::Rejected(err(code, message)))
        .await?;
    replies.writer.lock().await.shutdown().await?;
    linger(reader).await;
    Ok(())
}

/// Reads and drops what the peer still sends, briefly, before the connection is closed:
/// closing a Unix socket with unread input resets it, and the peer would then lose the
/// error frame it was just sent.
async fn linger(reader: &mut OwnedReadHalf) {
    let drain = async {
        let mut buf = [0u8; 8192];
        let mut total = 0;
        while total < (1 << 20) {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
}
