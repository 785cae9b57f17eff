//! Filesystem probe. Usage: fs write PATH TEXT | fs read PATH
//! Prints "ok: ..." or "error: ..." and exits 0 or 1.
use std::process::exit;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("write") => std::fs::write(&args[2], &args[3]).map(|_| "written".to_string()),
        Some("read") => std::fs::read_to_string(&args[2]),
        Some("ls") => std::fs::read_dir(&args[2]).map(|d| {
            let mut names: Vec<String> = d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            names.join(",")
        }),
        _ => {
            eprintln!("usage: fs write PATH TEXT | read PATH | ls DIR");
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
