//! Streaming safetensors writer.
//!
//! The `safetensors` crate's serializer wants every tensor in memory at once; converting a
//! model that way would hold the whole f32/bf16 model in RAM. Here the header is computed from
//! the shapes alone and each tensor's bytes are streamed to disk one after the other.
//! The header layout (keys in the caller's order, `__metadata__` last, padded with spaces to a
//! multiple of 8) matches the reference converter's hand-written one, so the files are
//! byte-identical to it.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};

/// One tensor to be written: its data must be exactly `n_elements * elem_size` bytes.
pub struct TensorSpec {
    pub name: String,
    pub dtype_tag: &'static str,
    pub shape: Vec<u64>,
    pub elem_size: u64,
}

impl TensorSpec {
    pub fn n_bytes(&self) -> u64 {
        self.shape.iter().product::<u64>() * self.elem_size
    }
}

/// Write `specs` in order; `fill(i, out)` must write the data of `specs[i]` to `out`.
pub fn write(
    path: &Path,
    specs: &[TensorSpec],
    mut fill: impl FnMut(usize, &mut dyn Write) -> Result<()>,
) -> Result<()> {
    let mut header = String::from("{");
    let mut offset = 0u64;
    for s in specs {
        let end = offset + s.n_bytes();
        let shape: Vec<String> = s.shape.iter().map(u64::to_string).collect();
        header.push_str(&format!(
            "{}:{{\"dtype\":\"{}\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}},",
            serde_json::to_string(&s.name)?,
            s.dtype_tag,
            shape.join(","),
        ));
        offset = end;
    }
    header.push_str("\"__metadata__\":{\"format\":\"pt\"}}");
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }

    let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    out.write_all(&(header.len() as u64).to_le_bytes())?;
    out.write_all(header.as_bytes())?;
    for (i, s) in specs.iter().enumerate() {
        let mut counted = Counting {
            inner: &mut out,
            n: 0,
        };
        fill(i, &mut counted)?;
        if counted.n != s.n_bytes() {
            // A bug in the caller, but a wrong size would silently shift every later tensor.
            bail!(
                "tensor `{}`: wrote {} bytes, header says {}",
                s.name,
                counted.n,
                s.n_bytes()
            );
        }
    }
    // Durability is the store's job: it syncs the whole entry before publishing it.
    out.flush()
        .with_context(|| format!("write {}", path.display()))?;
    Ok(())
}

struct Counting<'a, W: Write> {
    inner: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrips_through_safetensors_crate() {
        let dir = std::env::temp_dir().join(format!("st-write-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let specs = vec![
            TensorSpec {
                name: "a\"b".into(),
                dtype_tag: "F32",
                shape: vec![2, 3],
                elem_size: 4,
            },
            TensorSpec {
                name: "z".into(),
                dtype_tag: "BF16",
                shape: vec![5],
                elem_size: 2,
            },
        ];
        write(&path, &specs, |i, w| {
            let n = specs[i].n_bytes() as usize;
            w.write_all(&vec![i as u8 + 1; n])?;
            Ok(())
        })
        .unwrap();
        let buf = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&buf).unwrap();
        let a = st.tensor("a\"b").unwrap();
        assert_eq!(a.shape(), &[2, 3]);
        assert_eq!(a.dtype(), safetensors::Dtype::F32);
        assert!(a.data().iter().all(|&b| b == 1));
        let z = st.tensor("z").unwrap();
        assert_eq!(z.dtype(), safetensors::Dtype::BF16);
        assert_eq!(z.data(), &[2; 10]);
        let header_len = u64::from_le_bytes(buf[..8].try_into().unwrap());
        assert_eq!(header_len % 8, 0);

        let err = write(&path, &specs, |_, w| {
            w.write_all(&[0; 3])?;
            Ok(())
        })
        .unwrap_err();
        assert!(err.to_string().contains("wrote 3 bytes"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
