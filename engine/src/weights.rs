//! Safetensors reader: memory-maps `model.safetensors` or every shard named by
//! `model.safetensors.index.json`, validates the headers, and hands out tensors converted to
//! bf16 (the compute format of the weights). The header is parsed by hand: the format is a
//! little-endian u64 length, a JSON table, then raw little-endian data.

use crate::error::{Error, Result};
use memmap2::Mmap;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    BF16,
    F16,
    F32,
}

struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// All tensors of a model directory, memory-mapped. Dropping it unmaps the files.
pub struct SafeTensors {
    maps: Vec<Mmap>,
    entries: HashMap<String, Entry>,
}

/// Converts an f32 to bf16 with round-to-nearest-even (NaN stays NaN).
#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    let round = 0x7fff + ((b >> 16) & 1);
    (b.wrapping_add(round) >> 16) as u16
}

#[inline]
pub fn bf16_to_f32(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = if exp == 0 {
        if man == 0 {
            sign
        } else {
            // Subnormal half: scale it exactly into a normal f32.
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
    } else if exp == 31 {
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | ((exp + 112) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

impl SafeTensors {
    /// Opens the weights of a Hugging Face model directory (single file or sharded).
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let files: Vec<std::path::PathBuf> = if single.exists() {
            vec![single]
        } else if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::Weights(format!("{}: {e}", index.display())))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::Weights(format!("{}: no `weight_map`", index.display())))?;
            let mut names: Vec<&str> = map.values().filter_map(|f| f.as_str()).collect();
            names.sort();
            names.dedup();
            if names.iter().any(|n| n.contains('/') || n.contains("..")) {
                return Err(Error::Weights(
                    "shard names must be plain file names".into(),
                ));
            }
            names.into_iter().map(|n| dir.join(n)).collect()
        } else {
            return Err(Error::Weights(format!(
                "{}: neither model.safetensors nor model.safetensors.index.json",
                dir.display()
            )));
        };
        let mut st = SafeTensors {
            maps: Vec::new(),
            entries: HashMap::new(),
        };
        for path in files {
            st.add_file(&path)?;
        }
        Ok(st)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the file is opened read-only; like every mmap-based loader we assume nobody
        // truncates the model file while it is being read (the data is copied out at load).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let bad = |m: String| Error::Weights(format!("{}: {m}", path.display()));
        if map.len() < 8 {
            return Err(bad("file too short for a safetensors header".into()));
        }
        let hlen = u64::from_le_bytes(map[..8].try_into().unwrap()) as usize;
        if hlen > map.len() - 8 || hlen > 100 << 20 {
            return Err(bad(format!("header length {hlen} exceeds the file")));
        }
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&map[8..8 + hlen]).map_err(|e| bad(format!("header: {e}")))?;
        let data_start = 8 + hlen;
        let file_idx = self.maps.len();
        for (name, v) in header {
            if name == "__metadata__" {
                continue;
            }
            let dtype = match v.get("dtype").and_then(|d| d.as_str()) {
                Some("BF16") => Dtype::BF16,
                Some("F16") => Dtype::F16,
                Some("F32") => Dtype::F32,
                other => return Err(bad(format!("tensor `{name}`: unsupported dtype {other:?}"))),
            };
            let shape: Vec<usize> = v
                .get("shape")
                .and_then(|s| s.as_array())
                .ok_or_else(|| bad(format!("tensor `{name}`: no shape")))?
                .iter()
                .map(|x| x.as_u64().map(|x| x as usize))
                .collect::<Option<_>>()
                .ok_or_else(|| bad(format!("tensor `{name}`: bad shape")))?;
            let offs = v
                .get("data_offsets")
                .and_then(|s| s.as_array())
                .filter(|a| a.len() == 2)
                .and_then(|a| Some((a[0].as_u64()? as usize, a[1].as_u64()? as usize)))
                .ok_or_else(|| bad(format!("tensor `{name}`: bad data_offsets")))?;
            let elem = if dtype == Dtype::F32 { 4 } else { 2 };
            let numel: usize = shape.iter().product();
            if offs.1 < offs.0 || offs.1 - offs.0 != numel * elem || data_start + offs.1 > map.len()
            {
                return Err(bad(format!(
                    "tensor `{name}`: data_offsets do not match shape {shape:?}"
                )));
            }
            self.entries.insert(
                name,
                Entry {
                    file: file_idx,
                    dtype,
                    shape,
                    start: data_start + offs.0,
                    end: data_start + offs.1,
                },
            );
        }
        self.maps.push(map);
        Ok(())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.entries.get(name).map(|e| e.shape.as_slice())
    }

    /// The tensor `name` as bf16 bits, after checking that its shape is `shape`.
    pub fn bf16(&self, name: &str, shape: &[usize]) -> Result<Vec<u16>> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| Error::Weights(format!("missing tensor `{name}`")))?;
        if e.shape != shape {
            return Err(Error::Weights(format!(
                "tensor `{name}` has shape {:?}, expected {shape:?}",
                e.shape
            )));
        }
        let bytes = &self.maps[e.file][e.start..e.end];
        Ok(match e.dtype {
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| f32_to_bf16(f16_to_f32(u16::from_le_bytes([c[0], c[1]]))))
                .collect(),
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32_to_bf16(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        })
    }

    /// The tensor as f32 (norm weights and biases, which are small and precision-sensitive).
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let e = self
            .entries
            .get(name)
            .ok_or_else(|| Error::Weights(format!("missing tensor `{name}`")))?;
        if e.dtype == Dtype::F32 && e.shape == shape {
            let bytes = &self.maps[e.file][e.start..e.end];
            return Ok(bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect());
        }
        Ok(self
            .bf16(name, shape)?
            .into_iter()
            .map(bf16_to_f32)
            .collect())
    }
}
