//! Allocates memory in 1 MiB chunks, touching each, until something stops it.
fn main() {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        chunk[4095] = 1;
        chunks.push(chunk);
        if chunks.len() % 16 == 0 {
            println!("{} MiB", chunks.len());
        }
    }
}
