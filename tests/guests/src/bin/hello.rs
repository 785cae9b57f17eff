//! Prints a greeting and its arguments; `--exit N` exits with N; reports its environment
//! size so tests can check that nothing leaks in.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    println!("hello from pied");
    println!("args: {:?}", &args[1..]);
    println!("env vars: {}", std::env::vars().count());
    eprintln!("this line goes to stderr");
    if let Some(i) = args.iter().position(|a| a == "--exit") {
        let code: i32 = args[i + 1].parse().unwrap();
        std::process::exit(code);
    }
}
