//! `pie:core/session`: messages between an inferlet and the `pie-ctl` attached to it.
//!
//! Placeholder until the session plumbing lands: every call fails with a clear error.

use std::sync::Arc;

use wasmtime::component::Resource;

use super::pie::core::session::Host;
use super::types::{FutureBlob, FutureString};
use super::{PieView, ProcessMeta, not_yet};
use crate::events::EventLog;

/// Per-process session state (stored in `InferletCtx::session`).
pub struct SessionState {}

impl SessionState {
    pub fn new(_process: &ProcessMeta, _log: &Arc<EventLog>) -> SessionState {
        SessionState {}
    }
}

impl Host for PieView<'_> {
    fn send(&mut self, _message: String) -> wasmtime::Result<()> {
        Err(wasmtime::Error::msg(not_yet("session.send")))
    }

    fn receive(&mut self) -> wasmtime::Result<Resource<FutureString>> {
        Err(wasmtime::Error::msg(not_yet("session.receive")))
    }

    fn send_file(&mut self, _data: Vec<u8>) -> wasmtime::Result<()> {
        Err(wasmtime::Error::msg(not_yet("session.send-file")))
    }

    fn receive_file(&mut self) -> wasmtime::Result<Resource<FutureBlob>> {
        Err(wasmtime::Error::msg(not_yet("session.receive-file")))
    }
}
