//! The admin protocol spoken between `pie-ctl` and `pied` over a Unix socket.
//!
//! A connection starts with a handshake: the client sends a [`ClientHello`] frame (magic,
//! the protocol version range it speaks, its own version) and the server answers with a
//! [`HelloReply`] that picks a version or says why it cannot. After that the client sends
//! [`Request`] frames and the server answers with [`Response`] frames carrying the same
//! request id; streaming requests (`Logs`, `Attach`) get many responses and end with
//! [`ResponseBody::End`].
//!
//! Every frame is a little-endian `u32` payload length followed by a bincode 2 payload.
//! Lengths are checked against a hard limit *before* anything is allocated, and payloads are
//! decoded with the same limit, so a hostile peer can neither crash the reader nor make it
//! allocate more than the limit.
//!
//! This crate is deliberately small (no tokio, no wasmtime): the daemon and the CLI share it.

#[cfg(feature = "cli")]
pub mod cli;
mod frame;
mod messages;

pub use frame::{
    FrameError, HANDSHAKE_FRAME_LIMIT, MAX_FRAME, check_len, decode_payload, encode_frame,
    read_frame, write_frame,
};
pub use messages::*;

/// Bytes that open every [`ClientHello`]: tells pied that the peer is a pie-ctl, not a stray
/// program that connected to the socket.
pub const MAGIC: [u8; 8] = *b"PIEDCTL\x01";

/// Oldest protocol version this build can speak.
/// 3 changed `LaunchSpec` (grants), so older clients cannot be understood.
pub const MIN_PROTOCOL_VERSION: u32 = 3;
/// Newest protocol version this build can speak.
/// 2: `Signal`, `SendFile` requests and `Session` responses (inferlet sessions).
/// 3: `LaunchSpec::grants` (HTTP, MCP, mounts, KV store); `KvGet`, `KvList`, `Journal`
///    requests and `KvValue`, `KvKeys`, `Journal` responses (the store).
pub const PROTOCOL_VERSION: u32 = 3;

/// Picks the protocol version for a client that speaks `[min, max]`, or `None` when the two
/// ranges do not overlap.
pub fn negotiate(min: u32, max: u32) -> Option<u32> {
    let hi = max.min(PROTOCOL_VERSION);
    (hi >= min.max(MIN_PROTOCOL_VERSION)).then_some(hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiate_picks_highest_common_version() {
        assert_eq!(
            negotiate(MIN_PROTOCOL_VERSION, MIN_PROTOCOL_VERSION),
            Some(MIN_PROTOCOL_VERSION)
        );
        assert_eq!(negotiate(1, 9), Some(PROTOCOL_VERSION));
        assert_eq!(negotiate(1, MIN_PROTOCOL_VERSION - 1), None);
        assert_eq!(negotiate(PROTOCOL_VERSION + 1, PROTOCOL_VERSION + 5), None);
        assert_eq!(negotiate(0, 0), None);
    }
}
