//! Host side of `pied:store` (`wit/pied/store.wit`): `kv` and `journal` on [`PieView`]
//! (the same per-call view as the `pie:` interfaces), scoped by the process' tenant and id.
//!
//! The functions are `async` host functions: each clones what it needs out of the view and
//! awaits the store's `spawn_blocking` call, so the process' tokio task yields while redb
//! reads or fsyncs, and no runtime worker blocks.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker};

use super::{MAX_LIST, MAX_READ, Store};
use crate::inferlet::PieView;

wasmtime::component::bindgen!({
    path: "wit/pied",
    world: "pied:store/imports",
    imports: { default: async },
    require_store_data_send: true,
});

use pied::store::{journal, kv};

/// `HasData` marker for the linker.
struct StoreData;

impl HasData for StoreData {
    type Data<'a> = PieView<'a>;
}

/// Adds `pied:store/kv` and `pied:store/journal` to a component linker.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> PieView<'_>,
) -> wasmtime::Result<()> {
    kv::add_to_linker::<T, StoreData>(linker, get)?;
    journal::add_to_linker::<T, StoreData>(linker, get)?;
    Ok(())
}

fn store(view: &PieView<'_>) -> Result<Arc<Store>, String> {
    view.ctx
        .shared
        .store
        .get()
        .cloned()
        .ok_or_else(|| "the store is not open in this daemon".to_string())
}

/// The store and the tenant, when the process was granted the KV store.
fn kv_scope(view: &PieView<'_>) -> Result<(Arc<Store>, String), String> {
    if !view.ctx.process.grants.kv {
        return Err("not granted: launch with --kv for the tenant's key-value store".into());
    }
    Ok((store(view)?, view.ctx.process.tenant.clone()))
}

impl kv::Host for PieView<'_> {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        let (store, tenant) = kv_scope(self)?;
        store.kv_get(&tenant, &key).await.map_err(|e| e.to_string())
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        let (store, tenant) = kv_scope(self)?;
        store
            .kv_set(&tenant, &key, value)
            .await
            .map_err(|e| e.to_string())
    }

    async fn delete(&mut self, key: String) -> Result<bool, String> {
        let (store, tenant) = kv_scope(self)?;
        store
            .kv_delete(&tenant, &key)
            .await
            .map_err(|e| e.to_string())
    }

    async fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, String> {
        let (store, tenant) = kv_scope(self)?;
        let (keys, more) = store
            .kv_list(&tenant, &prefix, MAX_LIST)
            .await
            .map_err(|e| e.to_string())?;
        if more {
            return Err(format!(
                "more than {MAX_LIST} keys start with {prefix:?}: list with a longer prefix"
            ));
        }
        Ok(keys.into_iter().map(|k| k.key).collect())
    }
}

impl journal::Host for PieView<'_> {
    async fn append(&mut self, kind: String, payload_json: String) -> Result<u64, String> {
        let store = store(self)?;
        let (tenant, id) = (self.ctx.process.tenant.clone(), self.ctx.process.id);
        store
            .journal_append(&tenant, id, &kind, payload_json)
            .await
            .map_err(|e| e.to_string())
    }

    async fn read(&mut self, from_seq: u64, max: u32) -> Result<Vec<journal::Entry>, String> {
        let store = store(self)?;
        let (tenant, id) = (self.ctx.process.tenant.clone(), self.ctx.process.id);
        let records = store
            .journal_read(&tenant, id, from_seq, u64::from(max).min(MAX_READ))
            .await
            .map_err(|e| e.to_string())?;
        Ok(records
            .into_iter()
            .map(|r| journal::Entry {
                seq: r.seq,
                unix_ms: r.unix_ms,
                kind: r.kind,
                payload_json: r.payload_json,
            })
            .collect())
    }
}
