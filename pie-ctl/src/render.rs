//! Human tables and `--json` output for the read commands.

use anyhow::Result;
use proto::{
    DaemonStatus, Event, EventKind, ExitStatus, Limits, ProcessInfo, ProcessState, ProgramInfo,
    VersionInfo,
};
use serde_json::json;

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn limit(v: u64, unit: &str) -> String {
    if v == 0 {
        "unlimited".into()
    } else {
        format!("{v}{unit}")
    }
}

fn limits(l: &Limits) -> String {
    format!(
        "fuel {}, deadline {}, memory {} MiB",
        limit(l.fuel, ""),
        limit(l.deadline_ms, " ms"),
        l.memory_bytes >> 20
    )
}

pub fn status(s: &DaemonStatus, json: bool) -> Result<()> {
    if json {
        return print_json(s);
    }
    println!(
        "pied {} (protocol {}), pid {}",
        s.server_version, s.protocol_version, s.pid
    );
    println!("uptime:      {}s", s.uptime_ms / 1000);
    println!("socket:      {}", s.socket);
    println!("state dir:   {}", s.state_dir);
    println!(
        "config:      {}",
        s.config.as_deref().unwrap_or("(built-in defaults)")
    );
    println!(
        "processes:   {} running, {} ended, at most {} at once",
        s.running, s.exited, s.max_processes
    );
    println!("programs:    {}", s.programs);
    println!(
        "filesystem:  {}",
        if s.allow_fs {
            "allowed (--fs)"
        } else {
            "disabled"
        }
    );
    println!("defaults:    {}", limits(&s.default_limits));
    println!("maxima:      {}", limits(&s.max_limits));
    println!(
        "you:         uid {} (tenant {}){}",
        s.you.uid,
        s.you.tenant,
        if s.you.admin { ", admin" } else { "" }
    );
    if s.draining {
        println!("state:       draining (shutting down)");
    }
    for m in &s.mcp {
        println!(
            "mcp:         {} ({}): {}, connected {} time{}",
            m.name,
            m.target,
            m.state,
            m.connects,
            if m.connects == 1 { "" } else { "s" }
        );
    }
    for m in &s.models {
        let name = format!("{}{}", m.name, if m.default { " (default)" } else { "" });
        match &m.error {
            Some(e) => println!("model:       {name}: NOT LOADED: {e}"),
            None => println!(
                "model:       {name}: kv pages {}/{} in use ({} cached, {} tokens each); {} batches, mean size {:.1}, {} tokens",
                m.kv_pages_in_use,
                m.kv_pages_total,
                m.kv_pages_cached,
                m.page_size,
                m.batches,
                m.mean_batch_size,
                m.tokens_processed
            ),
        }
    }
    Ok(())
}

pub fn version(daemon: Option<&VersionInfo>, json: bool) -> Result<()> {
    let client = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "protocol": { "min": proto::MIN_PROTOCOL_VERSION, "max": proto::PROTOCOL_VERSION },
    });
    if json {
        return print_json(&json!({ "client": client, "daemon": daemon }));
    }
    println!(
        "pie-ctl {} (protocol {}..={})",
        env!("CARGO_PKG_VERSION"),
        proto::MIN_PROTOCOL_VERSION,
        proto::PROTOCOL_VERSION
    );
    if let Some(d) = daemon {
        println!(
            "pied    {} (protocol {}, speaks {}..={}; wasmtime {})",
            d.server_version,
            d.protocol_version,
            d.min_protocol_version,
            d.max_protocol_version,
            d.wasmtime_version
        );
    }
    Ok(())
}

pub fn state(s: &ProcessState) -> String {
    match s {
        ProcessState::Running => "running".into(),
        ProcessState::Exited(ExitStatus::Code(c)) => format!("exited({c})"),
        ProcessState::Exited(other) => other.to_string(),
    }
}

pub fn processes(list: &[ProcessInfo], json: bool) -> Result<()> {
    if json {
        return print_json(&list);
    }
    println!(
        "{:<8} {:<10} {:<16} {:<24} ARGS",
        "ID", "TENANT", "PROGRAM", "STATE"
    );
    for p in list {
        println!(
            "{:<8} {:<10} {:<16} {:<24} {}",
            p.id,
            p.tenant,
            p.program_name,
            state(&p.state),
            p.args.join(" ")
        );
    }
    Ok(())
}

pub fn process(p: &ProcessInfo, json: bool) -> Result<()> {
    if json {
        return print_json(p);
    }
    println!("id:        {}", p.id);
    println!("owner:     uid {} (tenant {})", p.owner_uid, p.tenant);
    println!("program:   {} ({})", p.program_name, p.program);
    println!("args:      {:?}", p.args);
    println!("state:     {}", state(&p.state));
    println!("started:   {} (unix ms)", p.started_unix_ms);
    if let Some(end) = p.ended_unix_ms {
        println!(
            "ended:     {end} (unix ms, ran {} ms)",
            end.saturating_sub(p.started_unix_ms)
        );
    }
    println!("limits:    {}", limits(&p.limits));
    println!("fs:        {}", if p.fs { "/scratch" } else { "none" });
    let list = |v: &[String]| match v.is_empty() {
        true => "none".to_string(),
        false => v.join(", "),
    };
    println!("mounts:    {}", list(&p.grants.mounts));
    println!("http:      {}", list(&p.grants.http));
    println!("mcp:       {}", list(&p.grants.mcp));
    println!(
        "kv store:  {}",
        if p.grants.kv { "granted" } else { "none" }
    );
    println!(
        "stdin:     {}",
        if p.stdin_open { "open" } else { "closed" }
    );
    if let Some(f) = p.fuel_used {
        println!("fuel used: {f}");
    }
    Ok(())
}

pub fn programs(list: &[ProgramInfo], json: bool) -> Result<()> {
    if json {
        return print_json(&list);
    }
    println!(
        "{:<14} {:<20} {:<10} {:>10}  COMPILED",
        "SHA256", "NAME", "KIND", "SIZE"
    );
    for p in list {
        println!(
            "{:<14} {:<20} {:<10} {:>10}  {}",
            &p.sha256[..12],
            p.name,
            format!("{:?}", p.kind).to_lowercase(),
            p.size,
            if p.compiled { "yes" } else { "no" }
        );
    }
    Ok(())
}

pub fn models(list: &[proto::ModelInfo], json: bool) -> Result<()> {
    if json {
        return print_json(&list);
    }
    println!(
        "{:<24} {:<20} {:<6} {:>12} {:>10}  DEFAULT",
        "NAME", "ARCHITECTURE", "DTYPE", "PARAMS", "SIZE"
    );
    for m in list {
        println!(
            "{:<24} {:<20} {:<6} {:>12} {:>7} MB  {}",
            m.name,
            m.architecture,
            m.dtype,
            m.params,
            m.bytes >> 20,
            if m.default { "yes" } else { "" }
        );
    }
    Ok(())
}

/// One event as a JSON line; output bytes become text (lossy UTF-8).
pub fn event_json(e: &Event) -> serde_json::Value {
    let (kind, data) = match &e.kind {
        EventKind::Stdout(b) => ("stdout", json!(String::from_utf8_lossy(b))),
        EventKind::Stderr(b) => ("stderr", json!(String::from_utf8_lossy(b))),
        EventKind::Notice(n) => ("notice", json!(n)),
        EventKind::Exit(s) => ("exit", serde_json::to_value(s).unwrap_or_default()),
    };
    json!({ "seq": e.seq, "unix_ms": e.unix_ms, "kind": kind, "data": data })
}
