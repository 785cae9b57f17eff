//! `--manifest FILE`: puts a declared-capability manifest into a program before it is
//! hashed and uploaded, as a custom section named `pied-manifest` (see the daemon's
//! src/manifest.rs for what it means). The section goes at the end of the binary, where a
//! custom section is valid in both core modules and components.

use std::path::Path;

use anyhow::{Context, Result, bail};

const SECTION: &str = "pied-manifest";

/// Reads a program and, when `manifest` is given, appends it as a custom section.
pub fn read_program(path: &Path, manifest: Option<&Path>) -> Result<Vec<u8>> {
    let mut wasm =
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if let Some(m) = manifest {
        let text =
            std::fs::read_to_string(m).with_context(|| format!("cannot read {}", m.display()))?;
        if !wasm.starts_with(b"\0asm") {
            bail!("{} is not a WebAssembly binary", path.display());
        }
        append_custom_section(&mut wasm, SECTION, text.as_bytes());
    }
    Ok(wasm)
}

fn append_custom_section(wasm: &mut Vec<u8>, name: &str, data: &[u8]) {
    let mut payload = Vec::with_capacity(name.len() + data.len() + 5);
    leb128(&mut payload, name.len() as u64);
    payload.extend_from_slice(name.as_bytes());
    payload.extend_from_slice(data);
    wasm.push(0); // custom section id
    leb128(wasm, payload.len() as u64);
    wasm.extend_from_slice(&payload);
}

fn leb128(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leb128_encodes_multi_byte_lengths() {
        let mut v = Vec::new();
        leb128(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
        let mut w = b"\0asm\x01\0\0\0".to_vec();
        append_custom_section(&mut w, "n", &[7u8; 200]);
        // id, size (2 bytes: 1 + 1 + 200 = 202), name length, name, data
        assert_eq!(&w[8..13], &[0, 0xca, 0x01, 1, b'n']);
        assert_eq!(w.len(), 8 + 3 + 2 + 200);
    }
}
