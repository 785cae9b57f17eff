//! Bitset → [`Brle`] conversion for next-token masks.

use engine::Brle;

/// Encodes the first `len` bits of `words` (bit `i % 32` of word `i / 32`; missing words are
/// zero) as runs alternating from a (possibly empty) `false` run. Whole words that continue
/// the current run are taken 32 bits at a time: a JSON-string mask is mostly long runs.
pub(crate) fn bitset_to_brle(words: &[u32], len: usize) -> Brle {
    let mut runs = Vec::new();
    let mut cur = false;
    let mut n: u32 = 0;
    for i in 0..len.div_ceil(32) {
        let w = words.get(i).copied().unwrap_or(0);
        let nbits = (len - 32 * i).min(32);
        if nbits == 32 && w == if cur { u32::MAX } else { 0 } {
            n += 32;
            continue;
        }
        for b in 0..nbits {
            let v = (w >> b) & 1 == 1;
            if v == cur {
                n += 1;
            } else {
                runs.push(n);
                cur = v;
                n = 1;
            }
        }
    }
    runs.push(n);
    Brle { runs }
}

/// Clears the bits at `len` and beyond.
pub(crate) fn clear_past(words: &mut [u32], len: usize) {
    for (i, w) in words.iter_mut().enumerate() {
        let start = 32 * i;
        if start >= len {
            *w = 0;
        } else if len - start < 32 {
            *w &= (1u32 << (len - start)) - 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bits_of(words: &[u32], len: usize) -> Vec<bool> {
        (0..len)
            .map(|i| words.get(i / 32).is_some_and(|w| (w >> (i % 32)) & 1 == 1))
            .collect()
    }

    #[test]
    fn matches_from_bools() {
        let cases: Vec<(Vec<u32>, usize)> = vec![
            (vec![], 0),
            (vec![0], 5),
            (vec![u32::MAX], 32),
            (vec![u32::MAX, u32::MAX, 1], 70),
            (vec![0b1011, 0, 0x8000_0000, u32::MAX], 128),
            (vec![0xdead_beef, 0x1234_5678, 0xffff_0000], 90),
            (vec![1], 1),
        ];
        for (words, len) in cases {
            let b = bitset_to_brle(&words, len);
            assert_eq!(
                b,
                Brle::from_bools(&bits_of(&words, len)),
                "{words:x?} {len}"
            );
            assert_eq!(b.len(), len);
        }
    }

    #[test]
    fn clears_tail() {
        let mut w = vec![u32::MAX, u32::MAX];
        clear_past(&mut w, 35);
        assert_eq!(w, vec![u32::MAX, 0b111]);
        let mut w = vec![u32::MAX, u32::MAX];
        clear_past(&mut w, 32);
        assert_eq!(w, vec![u32::MAX, 0]);
    }
}
