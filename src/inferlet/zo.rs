//! `pie:zo/zo`: zeroth-order (evolution-strategies) adapter training. Needs adapters, which
//! this engine does not have: every call fails with a clear error.

use wasmtime::component::Resource;

use super::PieView;
use super::adapter::{Adapter, UNSUPPORTED};
use super::inference::ForwardPass;
use super::pie::zo::zo::Host;

const ZO_UNSUPPORTED: &str =
    "pie:zo (zeroth-order adapter training) is not supported by this engine: it has no adapters";

impl Host for PieView<'_> {
    /// There is no adapter to seed: the pass would silently run unadapted, so this traps.
    fn adapter_seed(&mut self, _pass: Resource<ForwardPass>, _seed: i64) -> wasmtime::Result<()> {
        Err(wasmtime::Error::msg(format!(
            "{ZO_UNSUPPORTED} ({UNSUPPORTED})"
        )))
    }

    fn initialize(
        &mut self,
        _adapter: Resource<Adapter>,
        _rank: u32,
        _alpha: f32,
        _population_size: u32,
        _mu_fraction: f32,
        _initial_sigma: f32,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(Err(ZO_UNSUPPORTED.to_string()))
    }

    fn update(
        &mut self,
        _adapter: Resource<Adapter>,
        _scores: Vec<f32>,
        _seeds: Vec<i64>,
        _max_sigma: f32,
    ) -> wasmtime::Result<Result<(), String>> {
        Ok(Err(ZO_UNSUPPORTED.to_string()))
    }
}
