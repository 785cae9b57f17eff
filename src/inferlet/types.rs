//! `pie:core/types`: `future-string` and `future-blob`, host futures the guest polls.
//!
//! Either is made from any Rust future (`FutureString::new(async { … })`). `pollable` resolves when the value is there; `get`
//! then returns it once (later calls return `none`, as the SDK reads it once).

use std::future::Future;
use std::pin::Pin;

use wasmtime::component::Resource;
use wasmtime_wasi::p2::{DynPollable, Pollable};

use super::pie::core::types::{Host, HostFutureBlob, HostFutureString};
use super::{PieView, stale};

type BoxFut<T> = Pin<Box<dyn Future<Output = Option<T>> + Send>>;

/// A value that arrives later. `None` from the future means "never" (e.g. the sender is
/// gone); `get` then keeps returning `none` and `pollable` is ready.
pub struct HostFuture<T: Send + 'static> {
    state: State<T>,
}

enum State<T> {
    Pending(BoxFut<T>),
    Ready(Option<T>),
    Taken,
}

impl<T: Send + 'static> HostFuture<T> {
    pub fn new(fut: impl Future<Output = Option<T>> + Send + 'static) -> Self {
        HostFuture {
            state: State::Pending(Box::pin(fut)),
        }
    }

    /// Polls once without waiting (so `get` without a prior `pollable` wait still sees a
    /// value that is already there).
    fn try_now(&mut self) {
        if let State::Pending(fut) = &mut self.state {
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                self.state = State::Ready(v);
            }
        }
    }

    pub fn take(&mut self) -> Option<T> {
        self.try_now();
        match std::mem::replace(&mut self.state, State::Taken) {
            State::Ready(v) => v,
            State::Pending(f) => {
                self.state = State::Pending(f);
                None
            }
            State::Taken => None,
        }
    }
}

#[wasmtime_wasi::async_trait]
impl<T: Send + 'static> Pollable for HostFuture<T> {
    async fn ready(&mut self) {
        if let State::Pending(fut) = &mut self.state {
            let v = fut.await;
            self.state = State::Ready(v);
        }
    }
}

pub type FutureString = HostFuture<String>;
pub type FutureBlob = HostFuture<Vec<u8>>;

impl Host for PieView<'_> {}

impl HostFutureString for PieView<'_> {
    fn pollable(
        &mut self,
        this: Resource<FutureString>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let borrowed = Resource::<FutureString>::new_borrow(this.rep());
        wasmtime_wasi::p2::subscribe(self.table, borrowed)
    }

    fn get(&mut self, this: Resource<FutureString>) -> wasmtime::Result<Option<String>> {
        let f = self
            .table
            .get_mut(&this)
            .map_err(|_| stale("future-string"))?;
        Ok(f.take())
    }

    fn drop(&mut self, this: Resource<FutureString>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}

impl HostFutureBlob for PieView<'_> {
    fn pollable(&mut self, this: Resource<FutureBlob>) -> wasmtime::Result<Resource<DynPollable>> {
        let borrowed = Resource::<FutureBlob>::new_borrow(this.rep());
        wasmtime_wasi::p2::subscribe(self.table, borrowed)
    }

    fn get(&mut self, this: Resource<FutureBlob>) -> wasmtime::Result<Option<Vec<u8>>> {
        let f = self
            .table
            .get_mut(&this)
            .map_err(|_| stale("future-blob"))?;
        Ok(f.take())
    }

    fn drop(&mut self, this: Resource<FutureBlob>) -> wasmtime::Result<()> {
        self.table.delete(this)?;
        Ok(())
    }
}
