//! `pie-ctl kv get|ls` and `pie-ctl journal ID`: the daemon's KV store and process journals.

use std::io::Write;

use anyhow::{Result, bail};
use clap::Subcommand;
use proto::{RequestBody, ResponseBody};

use crate::client::Client;

#[derive(Subcommand)]
pub enum KvCommand {
    /// Print the value under KEY (raw bytes)
    Get {
        key: String,
        /// Another tenant's store (root or the admin group only)
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List keys starting with PREFIX (all when absent) with their value sizes
    Ls {
        #[arg(default_value = "")]
        prefix: String,
        /// Another tenant's store (root or the admin group only)
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub fn kv(client: &mut Client, command: KvCommand) -> Result<()> {
    match command {
        KvCommand::Get { key, tenant } => {
            let ResponseBody::KvValue(value) = client.call(RequestBody::KvGet { tenant, key })?
            else {
                bail!("unexpected reply");
            };
            let mut out = std::io::stdout().lock();
            out.write_all(&value)?;
            out.flush()?;
        }
        KvCommand::Ls {
            prefix,
            tenant,
            json,
        } => {
            let ResponseBody::KvKeys {
                tenant,
                keys,
                used_bytes,
                truncated,
            } = client.call(RequestBody::KvList { tenant, prefix })?
            else {
                bail!("unexpected reply");
            };
            let mut out = std::io::stdout().lock();
            if json {
                let v = serde_json::json!({
                    "tenant": tenant,
                    "used_bytes": used_bytes,
                    "truncated": truncated,
                    "keys": keys.iter().map(|k| serde_json::json!({
                        "key": k.key, "value_bytes": k.value_bytes,
                    })).collect::<Vec<_>>(),
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                for k in &keys {
                    writeln!(out, "{:>10}  {}", k.value_bytes, k.key)?;
                }
                eprintln!(
                    "tenant {tenant}: {} keys{}, {used_bytes} bytes used",
                    keys.len(),
                    if truncated { " shown (more match)" } else { "" }
                );
            }
        }
    }
    Ok(())
}

/// One JSON line per record: `{"seq":…,"unix_ms":…,"kind":…,"payload":…}`.
pub fn journal(client: &mut Client, id: u64, from_seq: u64) -> Result<()> {
    let ResponseBody::Journal(records) = client.call(RequestBody::Journal { id, from_seq })? else {
        bail!("unexpected reply");
    };
    let mut out = std::io::stdout().lock();
    for r in records {
        let payload: serde_json::Value = serde_json::from_str(&r.payload_json)
            .unwrap_or(serde_json::Value::String(r.payload_json));
        let line = serde_json::json!({
            "seq": r.seq,
            "unix_ms": r.unix_ms,
            "kind": r.kind,
            "payload": payload,
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
}
