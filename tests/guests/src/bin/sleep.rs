//! Sleeps for the given number of milliseconds (default: a day), then prints "woke".
fn main() {
    let ms: u64 = std::env::args().nth(1).map_or(86_400_000, |a| a.parse().unwrap());
    println!("sleeping {ms} ms");
    std::thread::sleep(std::time::Duration::from_millis(ms));
    println!("woke");
}
