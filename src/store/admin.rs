//! The admin requests of the store: `pie-ctl kv get|ls` and `pie-ctl journal ID`.
//!
//! Who may read what: a tenant's KV store is read by that tenant (the caller's own by
//! default) and by admins (`--tenant T`); a process' journal by the process' owner and
//! admins, as its log (`pie-ctl logs`).

use std::sync::Arc;

use proto::{ErrorCode, JournalRecord, KvKey, RequestBody, ResponseBody};

use super::{MAX_LIST, Store};
use crate::daemon::{Daemon, OpResult, err};
use crate::tenancy::Caller;

fn store(daemon: &Daemon) -> OpResult<Arc<Store>> {
    daemon
        .pie
        .store
        .get()
        .cloned()
        .ok_or_else(|| err(ErrorCode::Internal, "the store is not open"))
}

/// The tenant a KV request reads: the caller's own, or another's for admins.
fn tenant_for(caller: &Caller, asked: Option<String>) -> OpResult<String> {
    match asked {
        None => Ok(caller.tenant.clone()),
        Some(t) if t == caller.tenant => Ok(t),
        Some(t) if caller.admin => Ok(t),
        Some(t) => Err(err(
            ErrorCode::PermissionDenied,
            format!(
                "only root or the admin group may read another tenant's store ({t:?}; you are {:?})",
                caller.tenant
            ),
        )),
    }
}

/// Handles `KvGet`, `KvList` and `Journal`.
pub async fn handle(daemon: &Daemon, caller: &Caller, body: RequestBody) -> OpResult<ResponseBody> {
    let store = store(daemon)?;
    Ok(match body {
        RequestBody::KvGet { tenant, key } => {
            let tenant = tenant_for(caller, tenant)?;
            match store.kv_get(&tenant, &key).await? {
                Some(v) => ResponseBody::KvValue(v),
                None => {
                    return Err(err(
                        ErrorCode::NotFound,
                        format!("no key {key:?} in tenant {tenant:?}'s store"),
                    ));
                }
            }
        }
        RequestBody::KvList { tenant, prefix } => {
            let tenant = tenant_for(caller, tenant)?;
            let (keys, truncated) = store.kv_list(&tenant, &prefix, MAX_LIST).await?;
            let used_bytes = store.kv_usage(&tenant).await?;
            ResponseBody::KvKeys {
                tenant,
                keys: keys
                    .into_iter()
                    .map(|k| KvKey {
                        key: k.key,
                        value_bytes: k.value_bytes,
                    })
                    .collect(),
                used_bytes,
                truncated,
            }
        }
        RequestBody::Journal { id, from_seq } => {
            // The same check as logs/inspect: owner or admin; others' ids look absent.
            let tenant = daemon.process(caller, id)?.info().tenant;
            // All of it: a journal is bounded by max_journal_bytes_per_process (at most
            // 32 MiB), so one reply holds it.
            let records = store.journal_read(&tenant, id, from_seq, u64::MAX).await?;
            ResponseBody::Journal(
                records
                    .into_iter()
                    .map(|r| JournalRecord {
                        seq: r.seq,
                        unix_ms: r.unix_ms,
                        kind: r.kind,
                        payload_json: r.payload_json,
                    })
                    .collect(),
            )
        }
        _ => return Err(err(ErrorCode::BadRequest, "not a store request")),
    })
}
