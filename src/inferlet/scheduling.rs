//! `pie:core/scheduling` (placeholder in the skeleton commit).

use wasmtime::component::Resource;

use super::context::Context;
use super::model::Model;
use super::pie::core::scheduling::Host;
use super::{PieView, not_yet};

/// Per-process scheduling account.
#[derive(Default)]
pub struct Account {}

fn nyi(what: &str) -> wasmtime::Error {
    wasmtime::Error::msg(not_yet(what))
}

impl Host for PieView<'_> {
    fn price(&mut self) -> wasmtime::Result<f64> {
        Err(nyi("scheduling.price"))
    }
    fn rent(&mut self, _ctx: Resource<Context>) -> wasmtime::Result<f64> {
        Err(nyi("scheduling.rent"))
    }
    fn dividend(&mut self, _model: Resource<Model>) -> wasmtime::Result<f64> {
        Err(nyi("scheduling.dividend"))
    }
    fn latency(&mut self, _ctx: Resource<Context>) -> wasmtime::Result<f64> {
        Err(nyi("scheduling.latency"))
    }
    fn balance(&mut self, _model: Resource<Model>) -> wasmtime::Result<f64> {
        Err(nyi("scheduling.balance"))
    }
}
