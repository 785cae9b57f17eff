//! Counts the lines, words and bytes of its stdin, like `wc`.
use std::io::Read;

fn main() {
    let mut input = Vec::new();
    std::io::stdin().read_to_end(&mut input).unwrap();
    let text = String::from_utf8_lossy(&input);
    println!(
        "{} {} {}",
        text.lines().count(),
        text.split_whitespace().count(),
        input.len()
    );
}
