//! GGUF container parser: header, metadata key/values, tensor infos and the data section.
//!
//! Every count, length and offset in the file is checked against the bytes that are actually
//! there before anything is allocated or sliced, so a truncated or hostile file yields an error
//! naming the file and the problem instead of a panic or a multi-gigabyte allocation.
//! Format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md> (versions 2 and 3; version
//! 1 used 32-bit counts and is long obsolete).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use memmap2::Mmap;

use super::dequant::GgmlType;

/// `GGUF` read as a little-endian u32.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";
/// Alignment of the data section when `general.alignment` is absent.
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions (GGML_MAX_DIMS).
const MAX_DIMS: u32 = 4;
/// Arrays may nest; real files nest one level at most. Bounding the depth keeps a hostile file
/// from overflowing the stack with recursion.
const MAX_ARRAY_DEPTH: u32 = 8;

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// Any integer type that fits in a u64 (GGUF writers differ in the width they use).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }

    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::F32(_) => "f32",
            Value::Bool(_) => "bool",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F64(_) => "f64",
        }
    }
}

/// A tensor as described in the GGUF header.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the fastest-varying (row length); HF shape is the reverse.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte range of the tensor's data in the file (already bounds-checked).
    pub start: usize,
    pub len: usize,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }

    /// Row-major shape as safetensors/HF use it.
    pub fn hf_shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A parsed, memory-mapped GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    map: Mmap,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
        // SAFETY: the map is read-only and we never hand out references that outlive `self`.
        // If another process truncates the file while we read it, the kernel raises SIGBUS; that
        // is the accepted limit of mmap (llama.cpp and safetensors take the same stance). Files
        // in the import path are inputs the admin chose, not attacker-writable scratch.
        let map =
            unsafe { Mmap::map(&file) }.with_context(|| format!("mmap {}", path.display()))?;
        Self::parse(path, map).with_context(|| format!("invalid GGUF file {}", path.display()))
    }

    pub fn data(&self, t: &TensorInfo) -> &[u8] {
        &self.map[t.start..t.start + t.len]
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    fn parse(path: &Path, map: Mmap) -> Result<Self> {
        let mut c = Cursor { buf: &map, pos: 0 };
        let magic = c.bytes(4).context("file too short for the GGUF magic")?;
        if magic != GGUF_MAGIC {
            bail!("bad magic {:02x?}: not a GGUF file", magic);
        }
        let version = c.u32().context("reading version")?;
        if !(2..=3).contains(&version) {
            bail!("unsupported GGUF version {version} (supported: 2, 3)");
        }
        let n_tensors = c.u64().context("reading tensor count")?;
        let n_kv = c.u64().context("reading metadata count")?;

        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = c
                .string()
                .with_context(|| format!("reading key of metadata entry {i} of {n_kv}"))?;
            let ty = c
                .u32()
                .with_context(|| format!("reading type of metadata `{key}`"))?;
            let value = c
                .value(ty, 0)
                .with_context(|| format!("reading value of metadata `{key}`"))?;
            metadata.insert(key, value);
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => bail!("general.alignment must be a power of two, got {v:?}"),
            },
        };

        // Each tensor info takes at least 8 (name len) + 4 + 4 + 8 bytes; checking this first
        // turns an absurd count into an error before the Vec is sized from it.
        let min_info = 24u64;
        if n_tensors > c.remaining() as u64 / min_info {
            bail!(
                "tensor count {n_tensors} cannot fit in the {} bytes left after the metadata",
                c.remaining()
            );
        }
        let mut raw = Vec::with_capacity(n_tensors as usize);
        for i in 0..n_tensors {
            let name = c
                .string()
                .with_context(|| format!("reading name of tensor {i} of {n_tensors}"))?;
            let info = c
                .tensor_info()
                .with_context(|| format!("reading info of tensor `{name}`"))?;
            raw.push((name, info));
        }

        let data_start = align_up(c.pos as u64, alignment)
            .filter(|&s| s <= map.len() as u64)
            .context("data section starts past the end of the file (truncated?)")?;

        let mut tensors = Vec::with_capacity(raw.len());
        for (name, (dims, ty_id, offset)) in raw {
            let ty = GgmlType::from_id(ty_id)
                .with_context(|| format!("tensor `{name}` has unknown ggml type id {ty_id}"))?;
            let n_elements = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .with_context(|| format!("tensor `{name}`: element count overflows ({dims:?})"))?;
            let (block, block_bytes) = ty.block();
            if !dims[0].is_multiple_of(block) {
                bail!(
                    "tensor `{name}`: row length {} is not a multiple of the {} block size {block}",
                    dims[0],
                    ty.name()
                );
            }
            let len = (n_elements / block)
                .checked_mul(block_bytes)
                .with_context(|| format!("tensor `{name}`: byte size overflows"))?;
            if !offset.is_multiple_of(alignment) {
                bail!("tensor `{name}`: offset {offset} is not aligned to {alignment}");
            }
            let start = data_start
                .checked_add(offset)
                .with_context(|| format!("tensor `{name}`: offset {offset} overflows"))?;
            let end = start.checked_add(len);
            if end.is_none_or(|e| e > map.len() as u64) {
                bail!(
                    "tensor `{name}` ({} {dims:?}, {len} bytes at file offset {start}) extends past \
                     the end of the file ({} bytes): truncated file?",
                    ty.name(),
                    map.len()
                );
            }
            tensors.push(TensorInfo {
                name,
                dims,
                ty,
                start: start as usize,
                len: len as usize,
            });
        }

        Ok(GgufFile {
            path: path.to_path_buf(),
            version,
            metadata,
            tensors,
            map,
        })
    }
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    Some(x.checked_add(a - 1)? / a * a)
}

/// Bounds-checked little-endian reader over the mapped file.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn bytes(&mut self, n: u64) -> Result<&'a [u8]> {
        if n > self.remaining() as u64 {
            bail!(
                "needs {n} bytes at offset {} but only {} remain (truncated file?)",
                self.pos,
                self.remaining()
            );
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        Ok(self
            .bytes(N as u64)?
            .try_into()
            .expect("length checked by bytes()"))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn string(&mut self) -> Result<String> {
        let len = self.u64()?;
        let at = self.pos;
        let b = self
            .bytes(len)
            .context("string length past the end of the file")?;
        String::from_utf8(b.to_vec())
            .map_err(|e| anyhow::anyhow!("string at offset {at} is not valid UTF-8: {e}"))
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>()?[0]),
            1 => Value::I8(self.array::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array()?)),
            3 => Value::I16(i16::from_le_bytes(self.array()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.array()?)),
            6 => Value::F32(f32::from_le_bytes(self.array()?)),
            7 => match self.array::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => bail!("bool value {b} is neither 0 nor 1"),
            },
            8 => Value::String(self.string()?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    bail!("arrays nested deeper than {MAX_ARRAY_DEPTH}");
                }
                let elem_ty = self.u32()?;
                let n = self.u64()?;
                // Every element takes at least one byte, so a count larger than what is left
                // is a lie; capping the capacity by it bounds the allocation by the file size.
                let min_size = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    _ => bail!("array of unknown value type {elem_ty}"),
                };
                if n > self.remaining() as u64 / min_size {
                    bail!(
                        "array of {n} elements cannot fit in the {} bytes left (truncated file?)",
                        self.remaining()
                    );
                }
                let mut items = Vec::with_capacity(n as usize);
                for i in 0..n {
                    items.push(
                        self.value(elem_ty, depth + 1)
                            .with_context(|| format!("array element {i} of {n}"))?,
                    );
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            _ => bail!("unknown metadata value type {ty}"),
        })
    }

    fn tensor_info(&mut self) -> Result<(Vec<u64>, u32, u64)> {
        let n_dims = self.u32()?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            bail!("{n_dims} dimensions (ggml allows 1 to {MAX_DIMS})");
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = self.u64()?;
            if d == 0 {
                bail!("zero-sized dimension");
            }
            dims.push(d);
        }
        let ty = self.u32()?;
        let offset = self.u64()?;
        Ok((dims, ty, offset))
    }
}

/// Typed metadata accessors with errors that name the key and the file.
impl GgufFile {
    pub fn req(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .with_context(|| format!("{}: missing metadata key `{key}`", self.path.display()))
    }

    pub fn req_u64(&self, key: &str) -> Result<u64> {
        let v = self.req(key)?;
        v.as_u64()
            .with_context(|| self.wrong_type(key, v, "an unsigned integer"))
    }

    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        self.get(key)
            .map(|v| {
                v.as_u64()
                    .with_context(|| self.wrong_type(key, v, "an unsigned integer"))
            })
            .transpose()
    }

    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        self.get(key)
            .map(|v| {
                v.as_f32()
                    .with_context(|| self.wrong_type(key, v, "a float"))
            })
            .transpose()
    }

    pub fn req_str(&self, key: &str) -> Result<&str> {
        let v = self.req(key)?;
        v.as_str()
            .with_context(|| self.wrong_type(key, v, "a string"))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        self.get(key)
            .map(|v| {
                v.as_str()
                    .with_context(|| self.wrong_type(key, v, "a string"))
            })
            .transpose()
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.get(key)
            .map(|v| {
                v.as_bool()
                    .with_context(|| self.wrong_type(key, v, "a bool"))
            })
            .transpose()
    }

    pub fn req_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.req(key)?;
        let a = v
            .as_array()
            .with_context(|| self.wrong_type(key, v, "an array of strings"))?;
        a.iter()
            .map(|e| {
                e.as_str()
                    .with_context(|| self.wrong_type(key, e, "an array of strings"))
            })
            .collect()
    }

    pub fn opt_i64_array(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let a = v
            .as_array()
            .with_context(|| self.wrong_type(key, v, "an array of integers"))?;
        a.iter()
            .map(|e| {
                e.as_i64()
                    .with_context(|| self.wrong_type(key, e, "an array of integers"))
            })
            .collect::<Result<_>>()
            .map(Some)
    }

    fn wrong_type(&self, key: &str, v: &Value, want: &str) -> String {
        format!(
            "{}: metadata `{key}` should be {want}, found {}",
            self.path.display(),
            v.type_name()
        )
    }
}
