//! Binary run-length encoding of boolean masks, as inferlets send attention and logit masks.
//! Runs alternate starting with a `false` run (which may be empty): `[2, 3, 1]` is
//! `[F, F, T, T, T, F]`. In this engine `true` means *allowed* (attend to that slot, keep that
//! token); `invert` converts from the opposite convention.

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Brle {
    /// Run lengths; even indices are `false` runs, odd indices `true` runs.
    pub runs: Vec<u32>,
}

impl Brle {
    /// `len` values, all `value`.
    pub fn filled(len: usize, value: bool) -> Self {
        Brle {
            runs: if value {
                vec![0, len as u32]
            } else {
                vec![len as u32]
            },
        }
    }

    pub fn from_bools(bits: &[bool]) -> Self {
        let mut runs = Vec::new();
        let mut cur = false;
        let mut n = 0u32;
        for &b in bits {
            if b == cur {
                n += 1;
            } else {
                runs.push(n);
                cur = b;
                n = 1;
            }
        }
        runs.push(n);
        Brle { runs }
    }

    /// Total number of values.
    pub fn len(&self) -> usize {
        self.runs.iter().map(|&r| r as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the first `out.len()` values into `out`; values past the encoded length are
    /// `past_end`.
    pub fn decode_into(&self, out: &mut [bool], past_end: bool) {
        let mut i = 0;
        for (k, &r) in self.runs.iter().enumerate() {
            let v = k % 2 == 1;
            let end = (i + r as usize).min(out.len());
            out[i..end].fill(v);
            i = end;
            if i == out.len() {
                return;
            }
        }
        out[i..].fill(past_end);
    }

    pub fn to_bools(&self) -> Vec<bool> {
        let mut v = vec![false; self.len()];
        self.decode_into(&mut v, false);
        v
    }

    /// The same mask with every value negated.
    pub fn invert(&self) -> Self {
        let mut runs = self.runs.clone();
        if runs.first() == Some(&0) {
            runs.remove(0);
        } else {
            runs.insert(0, 0);
        }
        Brle { runs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bits = [false, false, true, true, true, false];
        let b = Brle::from_bools(&bits);
        assert_eq!(b.runs, vec![2, 3, 1]);
        assert_eq!(b.to_bools(), bits);
        let t = Brle::from_bools(&[true, true, false]);
        assert_eq!(t.runs, vec![0, 2, 1]);
        assert_eq!(t.invert().to_bools(), vec![false, false, true]);
        let mut out = [false; 8];
        t.decode_into(&mut out, true);
        assert_eq!(out, [true, true, false, true, true, true, true, true]);
    }
}
