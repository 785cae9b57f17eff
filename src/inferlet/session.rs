//! `pie:core/session`: messages between an inferlet and its user, glue over
//! [`crate::bus::Session`] (which says where messages go and how they are bounded).
//!
//! `send`/`send-file` have no error in the WIT: an item above the size limit traps the guest
//! with the reason (losing it silently is not an option). `receive`/`receive-file` return
//! futures that resolve with the next message (`pie-ctl signal`, attach's stdin lines) or
//! file (`pie-ctl send-file`).

use std::sync::Arc;

use wasmtime::component::Resource;

use super::pie::core::session::Host;
use super::types::{FutureBlob, FutureString};
use super::{PieView, ProcessMeta};
use crate::bus::Session;
use crate::events::EventLog;

/// Per-process session state (stored in `InferletCtx::session`).
pub struct SessionState {
    pub session: Arc<Session>,
}

impl SessionState {
    pub fn new(process: &ProcessMeta, _log: &Arc<EventLog>) -> SessionState {
        SessionState {
            session: process.session.clone(),
        }
    }
}

fn trap(what: &str, e: crate::bus::SessionError) -> wasmtime::Error {
    wasmtime::Error::msg(format!("session.{what}: {e}"))
}

impl Host for PieView<'_> {
    fn send(&mut self, message: String) -> wasmtime::Result<()> {
        self.ctx
            .session
            .session
            .send(message)
            .map_err(|e| trap("send", e))
    }

    fn receive(&mut self) -> wasmtime::Result<Resource<FutureString>> {
        let fut = self.ctx.session.session.receive();
        Ok(self.table.push(FutureString::new(fut))?)
    }

    fn send_file(&mut self, data: Vec<u8>) -> wasmtime::Result<()> {
        self.ctx
            .session
            .session
            .send_file(data)
            .map_err(|e| trap("send-file", e))
    }

    fn receive_file(&mut self) -> wasmtime::Result<Resource<FutureBlob>> {
        let fut = self.ctx.session.session.receive_file();
        Ok(self.table.push(FutureBlob::new(fut))?)
    }
}
