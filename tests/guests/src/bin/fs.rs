//! Filesystem probe. Usage: fs write PATH TEXT | read PATH | ls DIR | fill PATH BYTES |
//! write-and-wait PATH TEXT.
//! Prints "ok: ..." or "error: ..." and exits 0 or 1.
use std::io::Write;
use std::process::exit;
use std::time::Duration;

/// Writes `bytes` zeros in 64 KiB chunks, pausing between chunks (a slow writer, so a
/// quota watcher sees the file grow).
fn fill(path: &str, bytes: u64) -> std::io::Result<String> {
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0u8; 64 << 10];
    let mut written = 0;
    while written < bytes {
        f.write_all(&chunk)?;
        written += chunk.len() as u64;
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(format!("filled {written}"))
}

/// Writes the file, says so, then waits to be killed (files written before a crash).
fn write_and_wait(path: &str, text: &str) -> std::io::Result<String> {
    std::fs::write(path, text)?;
    println!("ok: written");
    std::io::stdout().flush()?;
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("write") => std::fs::write(&args[2], &args[3]).map(|_| "written".to_string()),
        Some("read") => std::fs::read_to_string(&args[2]),
        Some("fill") => fill(&args[2], args[3].parse().expect("BYTES")),
        Some("write-and-wait") => write_and_wait(&args[2], &args[3]),
        Some("ls") => std::fs::read_dir(&args[2]).map(|d| {
            let mut names: Vec<String> = d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            names.join(",")
        }),
        _ => {
            eprintln!(
                "usage: fs write PATH TEXT | read PATH | ls DIR | fill PATH BYTES | write-and-wait PATH TEXT"
            );
            exit(2)
        }
    };
    match result {
        Ok(s) => println!("ok: {s}"),
        Err(e) => {
            println!("error: {e} (kind {:?})", e.kind());
            exit(1)
        }
    }
}
