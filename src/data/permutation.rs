//! Seeded permutations of `0..n` computed index by index, in O(1) memory.
//!
//! A 4-round Feistel network over the smallest even number of bits covering `n`, with
//! cycle-walking to stay inside `0..n`. Used for shuffling windows each epoch, choosing the
//! validation documents and ordering documents when merging; any position can be computed
//! directly, which makes resuming exact and cheap.

/// Stream ids that keep the different random choices of one seed independent.
pub mod streams {
    /// Which documents are held out for validation.
    pub const SPLIT: u64 = 1;
    /// The order of windows within an epoch, and random-chunk positions.
    pub const WINDOWS: u64 = 2;
    /// Which input a merge draws its next document from.
    pub const MERGE_DRAW: u64 = 3;
    /// The order of an input's documents in a merge pass.
    pub const MERGE_ORDER: u64 = 4;
}

/// SplitMix64 finalizer: a fast, well-mixed 64-bit hash.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Hash of a seed and a sequence of words (order matters).
pub fn mix_all(seed: u64, words: &[u64]) -> u64 {
    words.iter().fold(mix64(seed), |h, &w| mix64(h ^ mix64(w)))
}

/// A uniform float in [0, 1) from a hash.
pub fn unit_float(hash: u64) -> f64 {
    (hash >> 11) as f64 / (1u64 << 53) as f64
}

/// A bijection of `0..n` chosen by `key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permutation {
    n: u64,
    half_bits: u32,
    keys: [u64; 4],
}

impl Permutation {
    /// The permutation of `0..n` for `key`.
    pub fn new(n: u64, key: u64) -> Self {
        let bits = 64 - n.saturating_sub(1).leading_zeros();
        let half_bits = bits.div_ceil(2).max(1);
        let keys = [0u64, 1, 2, 3].map(|round| mix_all(key, &[round]));
        Permutation { n, half_bits, keys }
    }

    /// Size of the domain.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Whether the domain is empty.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn feistel(&self, x: u64) -> u64 {
        let mask = (1u64 << self.half_bits) - 1;
        let (mut left, mut right) = (x >> self.half_bits, x & mask);
        for key in self.keys {
            let next = left ^ (mix64(right ^ key) & mask);
            left = right;
            right = next;
        }
        (left << self.half_bits) | right
    }

    /// The image of `i` (`i < n`).
    pub fn apply(&self, i: u64) -> u64 {
        debug_assert!(i < self.n);
        let mut x = i;
        loop {
            x = self.feistel(x);
            if x < self.n {
                return x;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_a_bijection_for_many_sizes() {
        for n in [1u64, 2, 3, 5, 16, 17, 1000, 4097] {
            let p = Permutation::new(n, 42 + n);
            let mut seen = vec![false; n as usize];
            for i in 0..n {
                let j = p.apply(i);
                assert!(!seen[j as usize], "n={n}: {j} twice");
                seen[j as usize] = true;
            }
        }
    }

    #[test]
    fn keys_give_different_orders() {
        let a: Vec<u64> = (0..100)
            .map(|i| Permutation::new(100, 1).apply(i))
            .collect();
        let b: Vec<u64> = (0..100)
            .map(|i| Permutation::new(100, 2).apply(i))
            .collect();
        assert_ne!(a, b);
        let fixed_points = a
            .iter()
            .enumerate()
            .filter(|(i, &v)| *i as u64 == v)
            .count();
        assert!(
            fixed_points < 10,
            "{fixed_points} fixed points: barely shuffled"
        );
    }
}
