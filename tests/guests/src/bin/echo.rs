//! Echoes each stdin line back as "echo: <line>" until end-of-file (for attach tests).
use std::io::BufRead;

fn main() {
    println!("ready");
    for line in std::io::stdin().lock().lines() {
        println!("echo: {}", line.unwrap());
    }
    println!("bye");
}
