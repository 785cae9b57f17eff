//! The per-tenant key-value store and the per-process journal (`pied:store`, WIT in
//! `wit/pied/`), in one redb database at `<state_dir>/store.redb`.
//!
//! - KV: `(tenant, key) → bytes`. Keys are non-empty UTF-8 strings; a tenant's usage (the
//!   sum of its keys' and values' lengths) is kept in a table of its own, updated in the same
//!   transaction as the write, and bounded by `[store] max_tenant_bytes`.
//! - Journal: `(tenant, process id, seq) → (unix_ms, kind, payload JSON)`, append-only; seq
//!   starts at 0 and is contiguous; a process' total (kind + payload bytes) is bounded by
//!   `[store] max_journal_bytes_per_process`.
//!
//! Every write is one redb transaction committed with `Durability::Immediate` (fsync'd; redb
//! is crash-safe: a torn commit is rolled back at the next open), so what a call reported done
//! survives a daemon crash or restart.
//!
//! redb calls block: a commit waits for fsync (measured 0.4–4 ms per set on the dev VM with
//! its load, see the `latency` test; more on a busy disk), a get takes about 1 µs but may
//! read the disk when cold. So every call runs on tokio's blocking pool (`spawn_blocking`,
//! 30–50 µs more per call), never on a runtime worker that runs wasm or serves the admin
//! socket, and never on the engine thread; the guest-facing functions are `async` so the
//! process' task yields while it waits.

pub mod admin;
pub mod host;

use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::Context;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::Deserialize;

use crate::util::unix_ms;

/// `[store]` in pied.toml (reloadable: new limits apply to the next call).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Longest KV key, in bytes.
    pub max_key_bytes: u64,
    /// Largest KV value, in bytes.
    pub max_value_bytes: u64,
    /// A tenant's quota: the sum of its keys' and values' lengths.
    pub max_tenant_bytes: u64,
    /// A process' journal: the sum of its records' kind and payload lengths.
    pub max_journal_bytes_per_process: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_key_bytes: 1 << 10,
            max_value_bytes: 1 << 20,
            max_tenant_bytes: 64 << 20,
            max_journal_bytes_per_process: 4 << 20,
        }
    }
}

/// The most a value or a journal may hold: what one admin frame (64 MiB) carries with room.
const MAX_SETTING: u64 = 32 << 20;

impl StoreConfig {
    /// Checks the table; an error names the key and what is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let check = |key: &'static str, v: u64, max: u64| {
            if v == 0 || v > max {
                Err((key, format!("must be 1 to {max} bytes, not {v}")))
            } else {
                Ok(())
            }
        };
        check("max_key_bytes", self.max_key_bytes, 64 << 10)?;
        check("max_value_bytes", self.max_value_bytes, MAX_SETTING)?;
        check("max_tenant_bytes", self.max_tenant_bytes, u64::MAX >> 1)?;
        check(
            "max_journal_bytes_per_process",
            self.max_journal_bytes_per_process,
            MAX_SETTING,
        )?;
        Ok(())
    }
}

/// Why a store call failed; the text is what the caller (guest or pie-ctl) sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// A bad key, kind, payload or argument.
    Invalid(String),
    /// A limit of `[store]` would be exceeded.
    Limit(String),
    NotFound(String),
    /// The database failed (I/O); the write did not happen.
    Storage(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Invalid(m)
            | StoreError::Limit(m)
            | StoreError::NotFound(m)
            | StoreError::Storage(m) => f.write_str(m),
        }
    }
}

impl From<StoreError> for proto::ErrorReply {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::Invalid(_) => proto::ErrorCode::BadRequest,
            StoreError::Limit(_) => proto::ErrorCode::LimitExceeded,
            StoreError::NotFound(_) => proto::ErrorCode::NotFound,
            StoreError::Storage(_) => proto::ErrorCode::Internal,
        };
        proto::ErrorReply {
            code,
            message: e.to_string(),
        }
    }
}

type SResult<T> = Result<T, StoreError>;

fn storage(e: impl std::fmt::Display) -> StoreError {
    StoreError::Storage(format!("store: {e}"))
}

/// (tenant, key) → value.
const KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("kv");
/// tenant → bytes used (keys + values).
const KV_USAGE: TableDefinition<&str, u64> = TableDefinition::new("kv_usage");
/// (tenant, process id, seq) → (unix_ms, kind, payload JSON).
const JOURNAL: TableDefinition<(&str, u64, u64), (u64, &str, &str)> =
    TableDefinition::new("journal");
/// process id → (next seq, bytes used).
const JOURNAL_META: TableDefinition<u64, (u64, u64)> = TableDefinition::new("journal_meta");

/// Most keys one listing returns (`list-keys`, `pie-ctl kv ls`).
pub const MAX_LIST: usize = 10_000;
/// Most records one journal read returns.
pub const MAX_READ: u64 = 10_000;
/// Longest journal record kind.
pub const MAX_KIND_BYTES: usize = 256;

/// One key of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub key: String,
    pub value_bytes: u64,
}

/// One journal record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub unix_ms: u64,
    pub kind: String,
    /// A JSON text (checked on append).
    pub payload_json: String,
}

pub struct Store {
    db: Database,
    config: RwLock<StoreConfig>,
}

impl Store {
    /// Opens (or creates) the database; redb recovers an interrupted commit here.
    pub fn open(path: &Path, config: StoreConfig) -> anyhow::Result<Arc<Store>> {
        let db = Database::create(path).with_context(|| {
            format!(
                "cannot open the store {} (is another pied using this state dir?)",
                path.display()
            )
        })?;
        // Create the tables, so read transactions never meet a missing one.
        let tx = db.begin_write()?;
        tx.open_table(KV)?;
        tx.open_table(KV_USAGE)?;
        tx.open_table(JOURNAL)?;
        tx.open_table(JOURNAL_META)?;
        tx.commit()?;
        Ok(Arc::new(Store {
            db,
            config: RwLock::new(config),
        }))
    }

    /// New limits (a reload); they apply from the next call.
    pub fn set_config(&self, config: StoreConfig) {
        *self.config.write().unwrap() = config;
    }

    pub fn config(&self) -> StoreConfig {
        self.config.read().unwrap().clone()
    }

    /// A write transaction whose commit returns once the data is on disk (redb's default,
    /// stated here because the store's promise depends on it).
    fn write(&self) -> SResult<WriteTransaction> {
        let mut tx = self.db.begin_write().map_err(storage)?;
        tx.set_durability(Durability::Immediate).map_err(storage)?;
        Ok(tx)
    }

    fn check_key(&self, key: &str) -> SResult<()> {
        let max = self.config().max_key_bytes;
        if key.is_empty() {
            return Err(StoreError::Invalid("a key must not be empty".into()));
        }
        if key.len() as u64 > max {
            return Err(StoreError::Limit(format!(
                "key of {} bytes is longer than the limit of {max} bytes ([store] max_key_bytes)",
                key.len()
            )));
        }
        Ok(())
    }

    // ---- KV (blocking) ----

    pub fn kv_get_blocking(&self, tenant: &str, key: &str) -> SResult<Option<Vec<u8>>> {
        self.check_key(key)?;
        let tx = self.db.begin_read().map_err(storage)?;
        let table = tx.open_table(KV).map_err(storage)?;
        let value = table.get((tenant, key)).map_err(storage)?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    pub fn kv_set_blocking(&self, tenant: &str, key: &str, value: &[u8]) -> SResult<()> {
        self.check_key(key)?;
        let config = self.config();
        if value.len() as u64 > config.max_value_bytes {
            return Err(StoreError::Limit(format!(
                "value of {} bytes is larger than the limit of {} bytes ([store] max_value_bytes)",
                value.len(),
                config.max_value_bytes
            )));
        }
        let tx = self.write()?;
        {
            let mut table = tx.open_table(KV).map_err(storage)?;
            let mut usage = tx.open_table(KV_USAGE).map_err(storage)?;
            let used = usage.get(tenant).map_err(storage)?.map_or(0, |v| v.value());
            let old = table
                .get((tenant, key))
                .map_err(storage)?
                .map_or(0, |v| (key.len() + v.value().len()) as u64);
            let new = (key.len() + value.len()) as u64;
            let after = used - old.min(used) + new;
            // A write that does not grow the tenant's usage is always allowed (the quota may
            // have been lowered under it).
            if new > old && after > config.max_tenant_bytes {
                return Err(StoreError::Limit(format!(
                    "tenant {tenant:?} would use {after} bytes, over its quota of {} bytes \
                     ([store] max_tenant_bytes; {used} in use)",
                    config.max_tenant_bytes
                )));
            }
            table.insert((tenant, key), value).map_err(storage)?;
            usage.insert(tenant, after).map_err(storage)?;
        }
        tx.commit().map_err(storage)
    }

    /// Removes a key; whether it existed.
    pub fn kv_delete_blocking(&self, tenant: &str, key: &str) -> SResult<bool> {
        self.check_key(key)?;
        let tx = self.write()?;
        let existed = {
            let mut table = tx.open_table(KV).map_err(storage)?;
            let mut usage = tx.open_table(KV_USAGE).map_err(storage)?;
            let old = table
                .remove((tenant, key))
                .map_err(storage)?
                .map(|v| (key.len() + v.value().len()) as u64);
            if let Some(old) = old {
                let used = usage.get(tenant).map_err(storage)?.map_or(0, |v| v.value());
                match used.saturating_sub(old) {
                    0 => usage.remove(tenant).map(drop),
                    left => usage.insert(tenant, left).map(drop),
                }
                .map_err(storage)?;
            }
            old.is_some()
        };
        tx.commit().map_err(storage)?;
        Ok(existed)
    }

    /// The tenant's keys starting with `prefix`, in order, at most `max`; and whether more
    /// matched.
    pub fn kv_list_blocking(
        &self,
        tenant: &str,
        prefix: &str,
        max: usize,
    ) -> SResult<(Vec<KeyInfo>, bool)> {
        let tx = self.db.begin_read().map_err(storage)?;
        let table = tx.open_table(KV).map_err(storage)?;
        let mut out = Vec::new();
        for item in table.range((tenant, prefix)..).map_err(storage)? {
            let (k, v) = item.map_err(storage)?;
            let (t, key) = k.value();
            if t != tenant || !key.starts_with(prefix) {
                break;
            }
            if out.len() == max {
                return Ok((out, true));
            }
            out.push(KeyInfo {
                key: key.to_string(),
                value_bytes: v.value().len() as u64,
            });
        }
        Ok((out, false))
    }

    /// Bytes the tenant's keys and values take (what the quota counts).
    pub fn kv_usage_blocking(&self, tenant: &str) -> SResult<u64> {
        let tx = self.db.begin_read().map_err(storage)?;
        let usage = tx.open_table(KV_USAGE).map_err(storage)?;
        Ok(usage.get(tenant).map_err(storage)?.map_or(0, |v| v.value()))
    }

    // ---- journal (blocking) ----

    /// Appends a record to a process' journal; its sequence number.
    pub fn journal_append_blocking(
        &self,
        tenant: &str,
        process: u64,
        kind: &str,
        payload_json: &str,
    ) -> SResult<u64> {
        if kind.is_empty() || kind.len() > MAX_KIND_BYTES {
            return Err(StoreError::Invalid(format!(
                "a journal record's kind must be 1 to {MAX_KIND_BYTES} bytes, not {}",
                kind.len()
            )));
        }
        if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(payload_json) {
            return Err(StoreError::Invalid(format!(
                "the journal payload is not JSON: {e}"
            )));
        }
        let max = self.config().max_journal_bytes_per_process;
        let tx = self.write()?;
        let seq = {
            let mut meta = tx.open_table(JOURNAL_META).map_err(storage)?;
            let mut journal = tx.open_table(JOURNAL).map_err(storage)?;
            let (seq, used) = meta
                .get(process)
                .map_err(storage)?
                .map_or((0, 0), |v| v.value());
            let after = used + (kind.len() + payload_json.len()) as u64;
            if after > max {
                return Err(StoreError::Limit(format!(
                    "process {process}'s journal would hold {after} bytes, over the limit of \
                     {max} bytes ([store] max_journal_bytes_per_process; {seq} records, {used} \
                     bytes so far)"
                )));
            }
            journal
                .insert((tenant, process, seq), (unix_ms(), kind, payload_json))
                .map_err(storage)?;
            meta.insert(process, (seq + 1, after)).map_err(storage)?;
            seq
        };
        tx.commit().map_err(storage)?;
        Ok(seq)
    }

    /// A process' records from `from_seq` on, at most `max`.
    pub fn journal_read_blocking(
        &self,
        tenant: &str,
        process: u64,
        from_seq: u64,
        max: u64,
    ) -> SResult<Vec<Record>> {
        let tx = self.db.begin_read().map_err(storage)?;
        let journal = tx.open_table(JOURNAL).map_err(storage)?;
        let mut out = Vec::new();
        let range = (tenant, process, from_seq)..=(tenant, process, u64::MAX);
        for item in journal.range(range).map_err(storage)? {
            if out.len() as u64 >= max {
                break;
            }
            let (k, v) = item.map_err(storage)?;
            let (_, _, seq) = k.value();
            let (unix_ms, kind, payload) = v.value();
            out.push(Record {
                seq,
                unix_ms,
                kind: kind.to_string(),
                payload_json: payload.to_string(),
            });
        }
        Ok(out)
    }

    // ---- async: the same on the blocking pool ----

    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> SResult<T> + Send + 'static,
    ) -> SResult<T> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Storage(format!("store: {e}")))?
    }

    pub async fn kv_get(self: &Arc<Self>, tenant: &str, key: &str) -> SResult<Option<Vec<u8>>> {
        let (t, k) = (tenant.to_string(), key.to_string());
        self.blocking(move |s| s.kv_get_blocking(&t, &k)).await
    }

    pub async fn kv_set(self: &Arc<Self>, tenant: &str, key: &str, value: Vec<u8>) -> SResult<()> {
        let (t, k) = (tenant.to_string(), key.to_string());
        self.blocking(move |s| s.kv_set_blocking(&t, &k, &value))
            .await
    }

    pub async fn kv_delete(self: &Arc<Self>, tenant: &str, key: &str) -> SResult<bool> {
        let (t, k) = (tenant.to_string(), key.to_string());
        self.blocking(move |s| s.kv_delete_blocking(&t, &k)).await
    }

    pub async fn kv_list(
        self: &Arc<Self>,
        tenant: &str,
        prefix: &str,
        max: usize,
    ) -> SResult<(Vec<KeyInfo>, bool)> {
        let (t, p) = (tenant.to_string(), prefix.to_string());
        self.blocking(move |s| s.kv_list_blocking(&t, &p, max))
            .await
    }

    pub async fn kv_usage(self: &Arc<Self>, tenant: &str) -> SResult<u64> {
        let t = tenant.to_string();
        self.blocking(move |s| s.kv_usage_blocking(&t)).await
    }

    pub async fn journal_append(
        self: &Arc<Self>,
        tenant: &str,
        process: u64,
        kind: &str,
        payload_json: String,
    ) -> SResult<u64> {
        let (t, k) = (tenant.to_string(), kind.to_string());
        self.blocking(move |s| s.journal_append_blocking(&t, process, &k, &payload_json))
            .await
    }

    pub async fn journal_read(
        self: &Arc<Self>,
        tenant: &str,
        process: u64,
        from_seq: u64,
        max: u64,
    ) -> SResult<Vec<Record>> {
        let t = tenant.to_string();
        self.blocking(move |s| s.journal_read_blocking(&t, process, from_seq, max))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(config: StoreConfig) -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("store.redb"), config).unwrap();
        (dir, store)
    }

    #[test]
    fn kv_is_per_tenant_and_counts_usage() {
        let (_d, s) = open(StoreConfig::default());
        s.kv_set_blocking("alice", "a/1", b"one").unwrap();
        s.kv_set_blocking("alice", "a/2", b"two!").unwrap();
        s.kv_set_blocking("alice", "b", b"x").unwrap();
        s.kv_set_blocking("bob", "a/1", b"bob's").unwrap();
        assert_eq!(
            s.kv_get_blocking("alice", "a/1").unwrap().as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(
            s.kv_get_blocking("bob", "a/1").unwrap().as_deref(),
            Some(&b"bob's"[..])
        );
        assert_eq!(s.kv_get_blocking("carol", "a/1").unwrap(), None);
        let (keys, more) = s.kv_list_blocking("alice", "a/", 100).unwrap();
        assert!(!more);
        let names: Vec<_> = keys.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(names, ["a/1", "a/2"]);
        assert_eq!(keys[1].value_bytes, 4);
        let (keys, more) = s.kv_list_blocking("alice", "", 2).unwrap();
        assert_eq!((keys.len(), more), (2, true));
        assert_eq!(s.kv_usage_blocking("alice").unwrap(), 3 + 3 + 3 + 4 + 1 + 1);
        // Overwrite and delete keep the count right.
        s.kv_set_blocking("alice", "a/1", b"").unwrap();
        assert_eq!(s.kv_usage_blocking("alice").unwrap(), 3 + 3 + 4 + 1 + 1);
        assert!(s.kv_delete_blocking("alice", "a/2").unwrap());
        assert!(!s.kv_delete_blocking("alice", "a/2").unwrap());
        assert_eq!(s.kv_usage_blocking("alice").unwrap(), 3 + 1 + 1);
        assert_eq!(s.kv_usage_blocking("bob").unwrap(), 3 + 5);
    }

    #[test]
    fn limits_are_enforced_with_clear_errors() {
        let (_d, s) = open(StoreConfig {
            max_key_bytes: 8,
            max_value_bytes: 16,
            max_tenant_bytes: 40,
            max_journal_bytes_per_process: 20,
        });
        let e = s.kv_set_blocking("t", "123456789", b"").unwrap_err();
        assert!(e.to_string().contains("max_key_bytes"), "{e}");
        let e = s.kv_set_blocking("t", "k", &[0; 17]).unwrap_err();
        assert!(e.to_string().contains("max_value_bytes"), "{e}");
        assert!(matches!(
            s.kv_set_blocking("t", "", b"").unwrap_err(),
            StoreError::Invalid(_)
        ));
        s.kv_set_blocking("t", "k1", &[0; 16]).unwrap();
        s.kv_set_blocking("t", "k2", &[0; 16]).unwrap();
        let e = s.kv_set_blocking("t", "k3", &[0; 3]).unwrap_err();
        assert!(e.to_string().contains("max_tenant_bytes"), "{e}");
        // Shrinking is allowed; the freed bytes can be used again.
        s.kv_set_blocking("t", "k1", &[0; 1]).unwrap();
        s.kv_set_blocking("t", "k3", &[0; 3]).unwrap();
        // Journal: contiguous seqs, JSON checked, per-process cap.
        assert_eq!(s.journal_append_blocking("t", 7, "a", "{}").unwrap(), 0);
        assert_eq!(s.journal_append_blocking("t", 7, "b", "[1,2]").unwrap(), 1);
        assert_eq!(s.journal_append_blocking("t", 8, "a", "1").unwrap(), 0);
        let e = s.journal_append_blocking("t", 7, "c", "{nope").unwrap_err();
        assert!(e.to_string().contains("not JSON"), "{e}");
        let e = s
            .journal_append_blocking("t", 7, "c", "\"0123456789abc\"")
            .unwrap_err();
        assert!(
            e.to_string().contains("max_journal_bytes_per_process"),
            "{e}"
        );
        let r = s.journal_read_blocking("t", 7, 0, 100).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!((r[1].seq, r[1].kind.as_str()), (1, "b"));
        assert_eq!(r[1].payload_json, "[1,2]");
        assert_eq!(s.journal_read_blocking("t", 7, 1, 100).unwrap().len(), 1);
        assert_eq!(s.journal_read_blocking("t", 7, 0, 1).unwrap().len(), 1);
        assert!(
            s.journal_read_blocking("other", 7, 0, 100)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn writes_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let s = Store::open(&path, StoreConfig::default()).unwrap();
            s.kv_set_blocking("t", "k", b"v").unwrap();
            s.journal_append_blocking("t", 1, "k", "null").unwrap();
        }
        let s = Store::open(&path, StoreConfig::default()).unwrap();
        assert_eq!(
            s.kv_get_blocking("t", "k").unwrap().as_deref(),
            Some(&b"v"[..])
        );
        assert_eq!(s.journal_append_blocking("t", 1, "k", "null").unwrap(), 1);
    }

    /// Prints what a call costs (no assertion on time: the disk decides). `--nocapture`.
    #[test]
    fn latency() {
        let (_d, s) = open(StoreConfig::default());
        let n = 200;
        let value = vec![7u8; 100];
        let t = std::time::Instant::now();
        for i in 0..n {
            s.kv_set_blocking("t", &format!("key/{i}"), &value).unwrap();
        }
        let set = t.elapsed() / n;
        let t = std::time::Instant::now();
        for i in 0..n {
            s.kv_get_blocking("t", &format!("key/{i}"))
                .unwrap()
                .unwrap();
        }
        let get = t.elapsed() / n;
        let t = std::time::Instant::now();
        for _ in 0..n {
            s.journal_append_blocking("t", 1, "step", r#"{"i":1}"#)
                .unwrap();
        }
        let append = t.elapsed() / n;
        let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
        let (aset, aget) = rt.block_on(async {
            let t = std::time::Instant::now();
            for i in 0..n {
                s.kv_set("t", &format!("key/{i}"), value.clone())
                    .await
                    .unwrap();
            }
            let aset = t.elapsed() / n;
            let t = std::time::Instant::now();
            for i in 0..n {
                s.kv_get("t", &format!("key/{i}")).await.unwrap().unwrap();
            }
            (aset, t.elapsed() / n)
        });
        eprintln!(
            "store latency (100-byte values, {n} calls each): set {set:?} (fsync'd commit), \
             get {get:?}, journal append {append:?}; through spawn_blocking: set {aset:?}, \
             get {aget:?}"
        );
    }

    #[test]
    fn config_is_validated() {
        assert!(StoreConfig::default().validate().is_ok());
        let bad = StoreConfig {
            max_value_bytes: 0,
            ..StoreConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "max_value_bytes");
    }
}
