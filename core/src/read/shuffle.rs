//! Shuffling: a small seedable generator ([`SplitMix`]), Fisher–Yates [`shuffle`], and
//! [`ShardwiseIter`], a group's rows shard by shard (optionally shards in random order and
//! rows shuffled within each) — the access pattern that keeps reads local while
//! decorrelating samples.

use crate::index::Loc;

/// Iterates a group's rows shard by shard, optionally shuffled. Yields [`Loc`]s; read them
/// with [`FieldReader::read_at`](crate::FieldReader::read_at) / [`FieldReader::ragged_at`](crate::FieldReader::ragged_at).
pub struct ShardwiseIter {
    order: Vec<(usize, u64)>,
    next_shard: usize,
    rows: Vec<u64>,
    pos: usize,
    rng: Option<SplitMix>,
}

impl ShardwiseIter {
    /// Iterates `(shard, rows)` in order, or with a seed shards in a random order and rows
    /// shuffled within each.
    pub(crate) fn new(mut order: Vec<(usize, u64)>, seed: Option<u64>) -> ShardwiseIter {
        let mut rng = seed.map(SplitMix::new);
        if let Some(r) = rng.as_mut() {
            shuffle(&mut order, r);
        }
        ShardwiseIter { order, next_shard: 0, rows: Vec::new(), pos: 0, rng }
    }
}

impl Iterator for ShardwiseIter {
    type Item = Loc;
    fn next(&mut self) -> Option<Loc> {
        loop {
            if self.pos < self.rows.len() {
                let (shard, _) = self.order[self.next_shard - 1];
                self.pos += 1;
                return Some(Loc { shard, row: self.rows[self.pos - 1] });
            }
            let &(_, n) = self.order.get(self.next_shard)?;
            self.next_shard += 1;
            self.rows.clear();
            self.rows.extend(0..n);
            if let Some(r) = self.rng.as_mut() {
                shuffle(&mut self.rows, r);
            }
            self.pos = 0;
        }
    }
}

/// splitmix64: a small, fast, seedable generator for shuffling.
#[derive(Clone, Debug)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from a seed.
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Fisher–Yates shuffle.
pub fn shuffle<T>(v: &mut [T], rng: &mut SplitMix) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}
