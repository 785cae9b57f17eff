//! Length-prefixed bincode frames with a hard size limit.

use std::fmt;
use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest payload either side accepts (program uploads are the biggest messages).
pub const MAX_FRAME: usize = 64 << 20;

/// Largest payload accepted before the handshake is done: a hello is a few dozen bytes, so
/// a stray client that sends text is told off after four bytes instead of 64 MiB.
pub const HANDSHAKE_FRAME_LIMIT: usize = 4096;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

/// Why a frame could not be read or decoded.
#[derive(Debug)]
pub enum FrameError {
    /// The peer closed the connection cleanly between two frames.
    Closed,
    /// The length prefix announces more than the limit allows.
    TooLarge {
        len: usize,
        limit: usize,
    },
    /// The connection ended in the middle of a frame.
    Truncated {
        expected: usize,
        got: usize,
    },
    /// The payload is not a valid encoding of the expected message.
    Malformed(String),
    Io(io::Error),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Closed => write!(f, "connection closed"),
            FrameError::TooLarge { len, limit } => {
                write!(f, "frame of {len} bytes exceeds the limit of {limit} bytes")
            }
            FrameError::Truncated { expected, got } => {
                write!(f, "truncated frame: expected {expected} bytes, got {got}")
            }
            FrameError::Malformed(why) => write!(f, "malformed frame: {why}"),
            FrameError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Encodes `msg` as one frame: length prefix followed by the payload.
pub fn encode_frame<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = vec![0u8; 4];
    // Encoding into a Vec only fails for types serde cannot represent, which none of the
    // protocol's messages are.
    bincode::serde::encode_into_std_write(msg, &mut out, config())
        .expect("protocol messages always encode");
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_le_bytes());
    out
}

/// Decodes one payload (without its length prefix). Trailing bytes are an error: a frame
/// holds exactly one message.
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (msg, used) = bincode::serde::decode_from_slice(payload, config())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after the message",
            payload.len() - used
        )));
    }
    Ok(msg)
}

/// Checks a length prefix against `limit`.
pub fn check_len(prefix: [u8; 4], limit: usize) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(prefix) as usize;
    if len > limit {
        return Err(FrameError::TooLarge { len, limit });
    }
    Ok(len)
}

/// Reads one frame's payload from a blocking reader. The buffer grows only as bytes
/// actually arrive, so a lying length prefix costs nothing.
pub fn read_frame<R: Read>(r: &mut R, limit: usize) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated { expected: 4, got }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = check_len(prefix, limit)?;
    let mut payload = Vec::with_capacity(len.min(64 << 10));
    r.take(len as u64).read_to_end(&mut payload)?;
    if payload.len() != len {
        return Err(FrameError::Truncated {
            expected: len,
            got: payload.len(),
        });
    }
    Ok(payload)
}

/// Writes one message as a frame to a blocking writer.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    w.write_all(&encode_frame(msg))?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Request, RequestBody};

    #[test]
    fn round_trip() {
        let req = Request {
            id: 7,
            body: RequestBody::Kill { id: 42 },
        };
        let bytes = encode_frame(&req);
        let payload = read_frame(&mut &bytes[..], MAX_FRAME).unwrap();
        let back: Request = decode_payload(&payload).unwrap();
        assert_eq!(back.id, 7);
        assert!(matches!(back.body, RequestBody::Kill { id: 42 }));
    }

    #[test]
    fn oversized_prefix_is_refused_before_reading() {
        let bytes = (u32::MAX).to_le_bytes();
        match read_frame(&mut &bytes[..], MAX_FRAME) {
            Err(FrameError::TooLarge { len, limit }) => {
                assert_eq!(len, u32::MAX as usize);
                assert_eq!(limit, MAX_FRAME);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn truncated_frames_are_reported() {
        let mut bytes = encode_frame(&Request {
            id: 1,
            body: RequestBody::Status,
        });
        bytes.pop();
        assert!(matches!(
            read_frame(&mut &bytes[..], MAX_FRAME),
            Err(FrameError::Truncated { .. })
        ));
        assert!(matches!(
            read_frame(&mut &[1u8, 0][..], MAX_FRAME),
            Err(FrameError::Truncated {
                expected: 4,
                got: 2
            })
        ));
        assert!(matches!(
            read_frame(&mut &[][..], MAX_FRAME),
            Err(FrameError::Closed)
        ));
    }

    #[test]
    fn garbage_payload_is_malformed() {
        let garbage = [0xffu8; 16];
        assert!(matches!(
            decode_payload::<Request>(&garbage),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn trailing_bytes_are_malformed() {
        let mut bytes = encode_frame(&Request {
            id: 1,
            body: RequestBody::Status,
        });
        bytes.push(0);
        assert!(matches!(
            decode_payload::<Request>(&bytes[4..]),
            Err(FrameError::Malformed(_))
        ));
    }
}
