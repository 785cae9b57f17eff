//! ggml tensor types and block dequantization to f32, plus the f32 → output dtype step.
//!
//! Block layouts follow ggml-common.h. Scales are f16 and the arithmetic is plain f32
//! (`d * q + m`, no fused multiply-add) so that results are bit-identical to gguf-py's numpy
//! `dequantize`, which the reference converter uses.

use anyhow::{Result, bail};
use half::{bf16, f16};

/// ggml tensor types whose storage size we know (so that a file using them can at least be
/// parsed and bounds-checked). Only some of them can be dequantized; see [`GgmlType::supported`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
    I8,
    I16,
    I32,
    I64,
    F64,
    BF16,
}

impl GgmlType {
    pub fn from_id(id: u32) -> Option<Self> {
        use GgmlType::*;
        Some(match id {
            0 => F32,
            1 => F16,
            2 => Q4_0,
            3 => Q4_1,
            6 => Q5_0,
            7 => Q5_1,
            8 => Q8_0,
            9 => Q8_1,
            10 => Q2_K,
            11 => Q3_K,
            12 => Q4_K,
            13 => Q5_K,
            14 => Q6_K,
            15 => Q8_K,
            24 => I8,
            25 => I16,
            26 => I32,
            27 => I64,
            28 => F64,
            30 => BF16,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use GgmlType::*;
        match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2_K => "Q2_K",
            Q3_K => "Q3_K",
            Q4_K => "Q4_K",
            Q5_K => "Q5_K",
            Q6_K => "Q6_K",
            Q8_K => "Q8_K",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            BF16 => "BF16",
        }
    }

    /// (elements per block, bytes per block).
    pub fn block(self) -> (u64, u64) {
        use GgmlType::*;
        match self {
            F32 | I32 => (1, 4),
            F16 | BF16 | I16 => (1, 2),
            I8 => (1, 1),
            F64 | I64 => (1, 8),
            Q4_0 => (32, 18),
            Q4_1 => (32, 20),
            Q5_0 => (32, 22),
            Q5_1 => (32, 24),
            Q8_0 => (32, 34),
            Q8_1 => (32, 36),
            Q2_K => (256, 84),
            Q3_K => (256, 110),
            Q4_K => (256, 144),
            Q5_K => (256, 176),
            Q6_K => (256, 210),
            Q8_K => (256, 292),
        }
    }

    /// Types [`dequantize`] handles.
    pub fn supported(self) -> bool {
        use GgmlType::*;
        matches!(self, F32 | F16 | BF16 | Q8_0 | Q4_0 | Q4_1)
    }
}

pub const SUPPORTED_NAMES: &str = "F32, F16, BF16, Q8_0, Q4_0, Q4_1";

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantize `src` (whole blocks of type `ty`) into `out`, whose length must be the number of
/// elements `src` holds.
pub fn dequantize(ty: GgmlType, src: &[u8], out: &mut [f32]) -> Result<()> {
    let (block, block_bytes) = ty.block();
    let (block, block_bytes) = (block as usize, block_bytes as usize);
    if !src.len().is_multiple_of(block_bytes) || src.len() / block_bytes * block != out.len() {
        bail!(
            "{}: {} bytes do not hold {} elements",
            ty.name(),
            src.len(),
            out.len()
        );
    }
    let blocks = src
        .chunks_exact(block_bytes)
        .zip(out.chunks_exact_mut(block));
    match ty {
        GgmlType::F32 => {
            for (b, o) in blocks {
                o[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        GgmlType::F16 => {
            for (b, o) in blocks {
                o[0] = f16_at(b, 0);
            }
        }
        GgmlType::BF16 => {
            for (b, o) in blocks {
                o[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        // block_q8_0 { f16 d; i8 qs[32]; }  x = d * q
        GgmlType::Q8_0 => {
            for (b, o) in blocks {
                let d = f16_at(b, 0);
                for (x, &q) in o.iter_mut().zip(&b[2..34]) {
                    *x = d * f32::from(q as i8);
                }
            }
        }
        // block_q4_0 { f16 d; u8 qs[16]; }  low nibbles are elements 0..16, high nibbles
        // 16..32; x = d * (nibble - 8)
        GgmlType::Q4_0 => {
            for (b, o) in blocks {
                let d = f16_at(b, 0);
                let (lo, hi) = o.split_at_mut(16);
                for (j, &q) in b[2..18].iter().enumerate() {
                    lo[j] = d * f32::from((q & 0x0f) as i8 - 8);
                    hi[j] = d * f32::from((q >> 4) as i8 - 8);
                }
            }
        }
        // block_q4_1 { f16 d; f16 m; u8 qs[16]; }  x = d * nibble + m, same nibble order
        GgmlType::Q4_1 => {
            for (b, o) in blocks {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                let (lo, hi) = o.split_at_mut(16);
                for (j, &q) in b[4..20].iter().enumerate() {
                    lo[j] = d * f32::from(q & 0x0f) + m;
                    hi[j] = d * f32::from(q >> 4) + m;
                }
            }
        }
        other => bail!(
            "tensor type {} is not supported (supported: {SUPPORTED_NAMES})",
            other.name()
        ),
    }
    Ok(())
}

/// Element type of the converted weights.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutDtype {
    /// What the engine computes in; half the size of f32 and, unlike f16, never overflows.
    #[default]
    Bf16,
    F16,
    F32,
}

impl OutDtype {
    /// Lower-case name used in the manifest (`bf16`, `f16`, `f32`).
    pub fn name(self) -> &'static str {
        match self {
            OutDtype::Bf16 => "bf16",
            OutDtype::F16 => "f16",
            OutDtype::F32 => "f32",
        }
    }

    /// safetensors dtype tag.
    pub fn safetensors_tag(self) -> &'static str {
        match self {
            OutDtype::Bf16 => "BF16",
            OutDtype::F16 => "F16",
            OutDtype::F32 => "F32",
        }
    }

    /// `torch_dtype` in config.json.
    pub fn torch_name(self) -> &'static str {
        match self {
            OutDtype::Bf16 => "bfloat16",
            OutDtype::F16 => "float16",
            OutDtype::F32 => "float32",
        }
    }

    pub fn size(self) -> usize {
        match self {
            OutDtype::Bf16 | OutDtype::F16 => 2,
            OutDtype::F32 => 4,
        }
    }

    /// Append `xs` in this dtype, little endian. bf16/f16 round to nearest even, as the
    /// reference converter does.
    pub fn encode(self, xs: &[f32], out: &mut Vec<u8>) {
        out.reserve(xs.len() * self.size());
        match self {
            OutDtype::Bf16 => out.extend(xs.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes())),
            OutDtype::F16 => out.extend(xs.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes())),
            OutDtype::F32 => out.extend(xs.iter().flat_map(|&x| x.to_le_bytes())),
        }
    }
}

impl std::str::FromStr for OutDtype {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "bf16" => OutDtype::Bf16,
            "f16" => OutDtype::F16,
            "f32" => OutDtype::F32,
            _ => bail!("unknown dtype `{s}` (expected bf16, f16 or f32)"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_le_bytes()
    }

    #[test]
    fn q8_0_block() {
        // d = 0.5, q = -4, 0, 3, 127, -128, then zeros
        let mut b = h(0.5).to_vec();
        let mut qs = [0i8; 32];
        qs[..5].copy_from_slice(&[-4, 0, 3, 127, -128]);
        b.extend(qs.iter().map(|&q| q as u8));
        let mut out = [f32::NAN; 32];
        dequantize(GgmlType::Q8_0, &b, &mut out).unwrap();
        assert_eq!(&out[..5], &[-2.0, 0.0, 1.5, 63.5, -64.0]);
        assert!(out[5..].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn q4_0_block_nibble_order() {
        // byte j holds element j in its low nibble and element j+16 in its high nibble
        let mut b = h(0.25).to_vec();
        let mut qs = [0x88u8; 16]; // 8 - 8 = 0 everywhere
        qs[0] = 0xF0; // elem 0: 0-8 = -8 -> -2.0; elem 16: 15-8 = 7 -> 1.75
        qs[3] = 0x19; // elem 3: 9-8 = 1 -> 0.25; elem 19: 1-8 = -7 -> -1.75
        b.extend(qs);
        let mut out = [f32::NAN; 32];
        dequantize(GgmlType::Q4_0, &b, &mut out).unwrap();
        assert_eq!(out[0], -2.0);
        assert_eq!(out[16], 1.75);
        assert_eq!(out[3], 0.25);
        assert_eq!(out[19], -1.75);
        for (i, &x) in out.iter().enumerate() {
            if ![0, 16, 3, 19].contains(&i) {
                assert_eq!(x, 0.0, "elem {i}");
            }
        }
    }

    #[test]
    fn q4_1_block() {
        // x = d * nibble + m with d = 0.5, m = -3.0
        let mut b = h(0.5).to_vec();
        b.extend(h(-3.0));
        let mut qs = [0u8; 16];
        qs[0] = 0xF0; // elem 0: 0 -> -3.0; elem 16: 15 -> 4.5
        qs[15] = 0x26; // elem 15: 6 -> 0.0; elem 31: 2 -> -2.0
        b.extend(qs);
        let mut out = [f32::NAN; 32];
        dequantize(GgmlType::Q4_1, &b, &mut out).unwrap();
        assert_eq!(out[0], -3.0);
        assert_eq!(out[16], 4.5);
        assert_eq!(out[15], 0.0);
        assert_eq!(out[31], -2.0);
        assert_eq!(out[1], -3.0);
    }

    #[test]
    fn q4_1_uses_f16_scale_precision() {
        // d = 0.1 is not exact in f16 (0.0999755859375); the result must use the f16 value
        let mut b = h(0.1).to_vec();
        b.extend(h(0.0));
        b.extend([0x01u8; 16]);
        let mut out = [0f32; 32];
        dequantize(GgmlType::Q4_1, &b, &mut out).unwrap();
        assert_eq!(out[0], 0.099975586);
        assert_eq!(out[16], 0.0);
    }

    #[test]
    fn float_types() {
        let mut out = [0f32; 3];
        let src: Vec<u8> = [1.5f32, -0.0, 1e-3]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        dequantize(GgmlType::F32, &src, &mut out).unwrap();
        assert_eq!(out, [1.5, -0.0, 1e-3]);
        let src: Vec<u8> = [0x3C00u16, 0xC000, 0x7BFF]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        dequantize(GgmlType::F16, &src, &mut out).unwrap();
        assert_eq!(out, [1.0, -2.0, 65504.0]);
        let src: Vec<u8> = [0x3F80u16, 0xC040, 0x3E20]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        dequantize(GgmlType::BF16, &src, &mut out).unwrap();
        assert_eq!(out, [1.0, -3.0, 0.15625]);
    }

    #[test]
    fn unsupported_and_size_mismatch() {
        let e = dequantize(GgmlType::Q4_K, &[0; 144], &mut [0.0; 256]).unwrap_err();
        assert!(e.to_string().contains("Q4_K"), "{e}");
        let e = dequantize(GgmlType::Q8_0, &[0; 34], &mut [0.0; 31]).unwrap_err();
        assert!(e.to_string().contains("do not hold"), "{e}");
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        let mut v = Vec::new();
        // 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even (1.0).
        // 1 + 3*2^-8 is halfway between 1.0078125 (odd) and 1.015625: ties to even (up).
        // 1 + 2^-8 + 2^-20 is above halfway: rounds up.
        OutDtype::Bf16.encode(
            &[
                1.0 + 1.0 / 256.0,
                1.0 + 3.0 / 256.0,
                1.0 + 1.0 / 256.0 + 1.0 / 1048576.0,
            ],
            &mut v,
        );
        let bits: Vec<u16> = v
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(bits, [0x3F80, 0x3F82, 0x3F81]);
    }
}
